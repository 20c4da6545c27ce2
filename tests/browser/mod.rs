//! A headless Chromium driven over the DevTools protocol, for the operator
//! page's tests: the system browser (Debian's `chromium`, installed by
//! `.ci/run`), no driver download, no network. The browser runs with a
//! fresh profile in a temp dir and is killed by PID when the guard drops,
//! failed test included.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a failed step is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Longest wait for one protocol answer or one page condition; far above
/// what a loaded 2-core machine needs.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// Events kept for inspection (console, exceptions); older ones are dropped.
const MAX_EVENTS: usize = 1000;

/// A running browser: killed by PID, its profile removed, on drop.
pub struct Browser {
    child: Child,
    profile: PathBuf,
    port: u16,
    control: Cdp,
}

/// The browser to use: `$TURNOUT_CHROMIUM`, else the first of the usual
/// names on `PATH`.
fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TURNOUT_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

impl Browser {
    /// Starts headless Chromium; `None` (with a one-line reason printed)
    /// when there is none, unless `TURNOUT_REQUIRE_EXTERNAL=1`.
    pub async fn launch(test: &str) -> Option<Browser> {
        let Some(bin) = find_chromium() else {
            if std::env::var("TURNOUT_REQUIRE_EXTERNAL").as_deref() == Ok("1") {
                panic!("{test}: chromium not found and TURNOUT_REQUIRE_EXTERNAL=1");
            }
            eprintln!("skipped {test}: chromium not found (apt-get install chromium, or set TURNOUT_CHROMIUM)");
            return None;
        };
        let profile = std::env::temp_dir().join(format!(
            "turnout-chromium-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&profile).unwrap();
        let log = std::fs::File::create(profile.join("chromium.log")).unwrap();
        let child = Command::new(&bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-default-apps",
                "--disable-breakpad",
                "--no-proxy-server",
                "--password-store=basic",
                "--hide-scrollbars",
                "--mute-audio",
                "--lang=en-US",
                "--force-device-scale-factor=1",
                "--window-size=1280,900",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{test}: cannot start {}: {e}", bin.display()));
        // The guard exists from here on: a failed start still kills it.
        let mut guard = PartialBrowser {
            child: Some(child),
            profile: profile.clone(),
        };
        let (port, path) = read_devtools_port(&profile).await;
        let control = Cdp::connect(&format!("ws://127.0.0.1:{port}{path}")).await;
        let child = guard.child.take().unwrap();
        Some(Browser {
            child,
            profile,
            port,
            control,
        })
    }

    /// Opens a new tab and connects to it.
    pub async fn page(&mut self) -> Page {
        let r = self
            .control
            .call("Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let id = r["targetId"].as_str().expect("targetId");
        let mut cdp =
            Cdp::connect(&format!("ws://127.0.0.1:{}/devtools/page/{id}", self.port)).await;
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            cdp.call(domain, json!({})).await;
        }
        Page { cdp }
    }
}

impl Browser {
    /// Asks the browser to quit (its helper processes with it) and waits a
    /// little for it; the guard then kills whatever is left, by PID.
    pub async fn close(mut self) {
        let msg = json!({"id": 0, "method": "Browser.close", "params": {}}).to_string();
        let _ = self.control.ws.send(Message::text(msg)).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// The browser between its start and its first protocol connection.
struct PartialBrowser {
    child: Option<Child>,
    profile: PathBuf,
}

impl Drop for PartialBrowser {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            let log =
                std::fs::read_to_string(self.profile.join("chromium.log")).unwrap_or_default();
            eprintln!("chromium's stderr:\n{log}");
            let _ = std::fs::remove_dir_all(&self.profile);
        }
    }
}

/// `DevToolsActivePort` holds the port and the browser target's path.
async fn read_devtools_port(profile: &Path) -> (u16, String) {
    let file = profile.join("DevToolsActivePort");
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Ok(text) = std::fs::read_to_string(&file) {
            let mut lines = text.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                if let Ok(port) = port.trim().parse() {
                    return (port, path.trim().to_owned());
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "chromium did not open its DevTools port"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One DevTools protocol connection: numbered calls, events kept aside.
pub struct Cdp {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next: u64,
    /// Events received so far (console, exceptions, ...), oldest first.
    pub events: Vec<Value>,
}

impl Cdp {
    async fn connect(url: &str) -> Cdp {
        let (ws, _) = tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(url))
            .await
            .expect("DevTools connect in time")
            .expect("DevTools connect");
        Cdp {
            ws,
            next: 0,
            events: Vec::new(),
        }
    }

    /// Sends one command and waits for its answer (events meanwhile are kept).
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(msg)).await.expect("send");
        let deadline = Instant::now() + DEADLINE;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{method}: no answer in time"))
                .expect("DevTools socket open")
                .expect("DevTools message");
            let Message::Text(text) = msg else { continue };
            let v: Value = serde_json::from_str(text.as_str()).expect("DevTools JSON");
            if v["id"] == json!(id) {
                if let Some(e) = v.get("error") {
                    panic!("{method}: {e}");
                }
                return v["result"].clone();
            }
            if v.get("method").is_some() {
                if self.events.len() == MAX_EVENTS {
                    self.events.remove(0);
                }
                self.events.push(v);
            }
        }
    }
}

/// One tab.
pub struct Page {
    /// Its protocol connection.
    pub cdp: Cdp,
}

impl Page {
    /// Loads a URL.
    pub async fn navigate(&mut self, url: &str) {
        let r = self.cdp.call("Page.navigate", json!({"url": url})).await;
        assert!(r.get("errorText").is_none(), "navigate {url}: {r}");
    }

    /// Evaluates JavaScript in the page (promises awaited); its value as JSON.
    pub async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .cdp
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("evaluating {expr}: {e}");
        }
        r["result"].get("value").cloned().unwrap_or(Value::Null)
    }

    /// Polls `expr` until it is `true` (panics with `what` past the deadline);
    /// an exception (the page still loading) counts as not yet.
    pub async fn wait_for(&mut self, expr: &str, what: &str) {
        let deadline = Instant::now() + DEADLINE;
        let guarded =
            format!("(() => {{ try {{ return ({expr}); }} catch (_) {{ return false; }} }})()");
        loop {
            if self.eval(&guarded).await == json!(true) {
                return;
            }
            if Instant::now() > deadline {
                let body = self
                    .eval("document.body ? document.body.innerText : ''")
                    .await;
                panic!(
                    "timed out waiting for: {what}\npage text:\n{}",
                    body.as_str().unwrap_or("")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks an element the way a user would: a mouse press and release at
    /// its centre (so an element covered by another does not get the click).
    pub async fn click(&mut self, selector: &str) {
        let at = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({sel}); if (!e) return null; \
                 e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
                 return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
                sel = json!(selector)
            ))
            .await;
        let (x, y) = (at[0].as_f64(), at[1].as_f64());
        let (Some(x), Some(y)) = (x, y) else {
            panic!("click: no element {selector}");
        };
        for kind in ["mousePressed", "mouseReleased"] {
            self.cdp
                .call(
                    "Input.dispatchMouseEvent",
                    json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
                )
                .await;
        }
    }

    /// Focuses a field, empties it and types text into it.
    pub async fn type_into(&mut self, selector: &str, text: &str) {
        self.click(selector).await;
        self.eval(&format!(
            "document.querySelector({}).select()",
            json!(selector)
        ))
        .await;
        self.cdp
            .call("Input.insertText", json!({"text": text}))
            .await;
    }

    /// The viewport's size in CSS pixels; `mobile` emulates a phone.
    pub async fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.cdp
            .call(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
            )
            .await;
    }

    /// A PNG of the whole page (beyond the viewport) written to `path`.
    pub async fn screenshot(&mut self, path: &Path) {
        let m = self.cdp.call("Page.getLayoutMetrics", json!({})).await;
        let size = &m["cssContentSize"];
        let clip = json!({
            "x": 0, "y": 0, "scale": 1,
            "width": size["width"].as_f64().unwrap_or(1280.0),
            "height": size["height"].as_f64().unwrap_or(900.0),
        });
        let r = self
            .cdp
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true, "clip": clip}),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("base64");
        std::fs::create_dir_all(path.parent().expect("dir")).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Exceptions thrown and Content-Security-Policy violations seen so far.
    pub fn problems(&self) -> Vec<String> {
        self.cdp
            .events
            .iter()
            .filter_map(|e| match e["method"].as_str() {
                Some("Runtime.exceptionThrown") => Some(e["params"].to_string()),
                Some("Log.entryAdded") => {
                    let entry = &e["params"]["entry"];
                    let text = entry["text"].as_str().unwrap_or("");
                    let csp =
                        entry["source"] == "security" || text.contains("Content Security Policy");
                    csp.then(|| text.to_owned())
                }
                _ => None,
            })
            .collect()
    }
}
