// Turnout's operator page. Served by the admin listener with a strict
// Content-Security-Policy (`default-src 'self'`): no inline script, no
// external asset. Every read and action goes through the JSON admin API with
// the bearer token, which is asked once and kept in sessionStorage (this tab
// only). Values from the server are written with textContent, never as HTML.
"use strict";

const TOKEN_KEY = "turnout.adminToken";
const POLL_MS = 2000;
const SPARK_POINTS = 30; // one minute at one poll every 2 s

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem(TOKEN_KEY) || "";
let timer = null;
let prevTraffic = null; // { t, body }
const spark = [];

// --- small DOM helpers ---------------------------------------------------

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function fmtNum(v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  return Number(v).toLocaleString(undefined, { maximumFractionDigits: digits });
}

function fmtPct(v) {
  return v === null || v === undefined ? "–" : fmtNum(v, 2) + "%";
}

function fmtMs(v) {
  return v === null || v === undefined ? "–" : fmtNum(v, 1) + " ms";
}

function fmtWhen(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  const secs = Math.round((d.getTime() - Date.now()) / 1000);
  return d.toLocaleTimeString() + (secs > 0 ? " (in " + secs + " s)" : "");
}

function humanKey(k) {
  return k.replace(/_/g, " ");
}

/// A value of unknown shape (keys other engineers may add to the status
/// JSON later: ramp, gates, shadow, endpoints) as readable text.
function summary(v) {
  if (v === null || v === undefined) return "–";
  if (Array.isArray(v)) return v.map(summary).join(", ") || "none";
  if (typeof v === "object") {
    return Object.entries(v)
      .map(([k, x]) => humanKey(k) + ": " + summary(x))
      .join(" · ");
  }
  if (typeof v === "boolean") return v ? "yes" : "no";
  return String(v);
}

function kv(label, value, field) {
  const row = el("div", { class: "kv" }, el("dt", { text: label }), el("dd", { text: value }));
  if (field) row.lastChild.setAttribute("data-field", field);
  return row;
}

function toast(text, bad) {
  const t = $("toast");
  t.textContent = text;
  t.className = bad ? "show bad" : "show";
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.className = ""), 4000);
}

function setConn(state, text) {
  const c = $("conn");
  c.dataset.state = state;
  c.textContent = text;
}

// --- the admin API -------------------------------------------------------

class Unauthorized extends Error {}

async function api(method, path, body) {
  const init = { method, headers: { authorization: "Bearer " + token }, cache: "no-store" };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const rsp = await fetch(path, init);
  let json = null;
  try {
    json = await rsp.json();
  } catch (_) {
    json = null;
  }
  if (rsp.status === 401 || rsp.status === 403) {
    const msg = (json && json.error && json.error.message) || "HTTP " + rsp.status;
    throw new Unauthorized(msg);
  }
  if (!rsp.ok) {
    const msg = (json && json.error && json.error.message) || "HTTP " + rsp.status;
    throw new Error(msg);
  }
  return json;
}

// --- sign in / out -------------------------------------------------------

function showLogin(message) {
  clearTimeout(timer);
  timer = null;
  $("dash").hidden = true;
  $("logout").hidden = true;
  $("login-view").hidden = false;
  $("login-error").textContent = message || "";
  setConn("idle", "not signed in");
  $("token").focus();
  $("token").select();
}

function signOut(message) {
  token = "";
  sessionStorage.removeItem(TOKEN_KEY);
  prevTraffic = null;
  spark.length = 0;
  $("routes").replaceChildren();
  $("upstreams").replaceChildren();
  showLogin(message);
}

async function signIn(candidate) {
  token = candidate;
  try {
    await api("GET", "status");
  } catch (e) {
    token = "";
    showLogin(e instanceof Unauthorized ? "Token refused: " + e.message : "Cannot reach Turnout: " + e.message);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token").value = "";
  $("login-view").hidden = true;
  $("dash").hidden = false;
  $("logout").hidden = false;
  poll();
}

// --- polling -------------------------------------------------------------

let polling = false;
let pollAgain = false;

// One poll at a time; a poll asked for meanwhile (after an action) runs
// right after the current one.
async function poll() {
  clearTimeout(timer);
  timer = null;
  if (polling) {
    pollAgain = true;
    return;
  }
  polling = true;
  try {
    const [status, traffic] = await Promise.all([api("GET", "status"), api("GET", "traffic")]);
    const prev = prevTraffic;
    const now = { t: performance.now(), body: traffic };
    prevTraffic = now;
    renderRates(now, prev);
    renderUpstreams(status.upstreams || [], now, prev);
    renderRoutes(status.routes || []);
    $("updated").textContent = new Date().toLocaleTimeString();
    setConn("ok", "live");
    document.body.dataset.loaded = "true";
  } catch (e) {
    if (e instanceof Unauthorized) {
      signOut("Signed out: " + e.message);
      return;
    }
    setConn("bad", "offline: " + e.message);
  } finally {
    polling = false;
  }
  if (!token) return;
  if (pollAgain) {
    pollAgain = false;
    poll();
  } else {
    timer = setTimeout(poll, POLL_MS);
  }
}

function rate(now, before, dt) {
  return before === undefined || dt <= 0 ? null : Math.max(0, now - before) / dt;
}

function renderRates(now, prev) {
  if (!prev) return;
  const dt = (now.t - prev.t) / 1000;
  const req = rate(now.body.requests, prev.body.requests, dt);
  const err = rate(now.body.errors, prev.body.errors, dt);
  $("rate-requests").textContent = fmtNum(req, 1);
  $("rate-errors").textContent = fmtNum(err, 2);
  $("rate-share").textContent = req > 0 ? fmtPct((100 * err) / req) : "–";
  spark.push(req || 0);
  if (spark.length > SPARK_POINTS) spark.shift();
  // Fills from the left, then scrolls: the last SPARK_POINTS polls.
  const max = Math.max(1, ...spark);
  const step = 120 / (SPARK_POINTS - 1);
  $("spark-line").setAttribute(
    "points",
    spark.map((v, i) => (i * step).toFixed(1) + "," + (23 - (v / max) * 22).toFixed(1)).join(" ")
  );
}

function upstreamRate(now, prev, name, key) {
  const a = now.body.upstreams && now.body.upstreams[name];
  const b = prev && prev.body.upstreams && prev.body.upstreams[name];
  return a && b ? rate(a[key], b[key], (now.t - prev.t) / 1000) : null;
}

const KNOWN_UPSTREAM_KEYS = new Set([
  "name", "state", "probe_latency_ms", "error_rate", "ejected_until", "in_flight",
  "models", "ttfb_ewma_ms", "endpoints",
]);

function renderUpstreams(list, now, prev) {
  const cards = list.map((u) => {
    const card = el(
      "article",
      { class: "card upstream", "data-upstream": u.name },
      el("header", {},
        el("h3", { text: u.name }),
        el("span", { class: "badge", "data-state": u.state, "data-field": "state", text: u.state })),
    );
    const dl = el("dl", {},
      kv("probe latency", fmtMs(u.probe_latency_ms), "probe_latency_ms"),
      kv("error rate", fmtPct(u.error_rate * 100), "error_rate"),
      kv("ejected until", fmtWhen(u.ejected_until), "ejected_until"),
      kv("in flight", fmtNum(u.in_flight, 0), "in_flight"),
      kv("time to first byte", fmtMs(u.ttfb_ewma_ms), "ttfb_ewma_ms"),
      kv("models listed", fmtNum(u.models, 0), "models"),
      kv("requests / s", fmtNum(upstreamRate(now, prev, u.name, "requests"), 1), "requests_rate"),
      kv("failed attempts / s", fmtNum(upstreamRate(now, prev, u.name, "failed_attempts"), 2), "failed_rate"),
    );
    for (const [k, v] of Object.entries(u)) {
      if (!KNOWN_UPSTREAM_KEYS.has(k)) dl.append(kv(humanKey(k), summary(v)));
    }
    card.append(dl);
    if (Array.isArray(u.endpoints) && u.endpoints.length) {
      const ul = el("ul", { class: "endpoints" });
      for (const ep of u.endpoints) ul.append(el("li", { text: summary(ep) }));
      card.append(el("h4", { text: "endpoints" }), ul);
    }
    return card;
  });
  $("upstreams").replaceChildren(...cards);
}

// --- routes: built once per route, then updated in place (so a share
// being typed is not wiped by the next poll) ------------------------------

const EXTRA_ROUTE_KEYS = ["ramp", "gates", "shadow"];

function routeCard(r) {
  const card = el("article", { class: "card route", "data-route": r.name });
  const share = el("span", { class: "share", "data-field": "percentage" });
  const configured = el("span", { class: "configured", "data-field": "configured_percentage" });
  const bar = el("div", { class: "bar" }, el("div", { class: "fill" }));
  const input = el("input", {
    class: "share-input", type: "number", min: 0, max: 100, step: "0.01",
    inputMode: "decimal", ariaLabel: "New share for " + r.name + " (percent)",
  });
  const set = el("button", { class: "set-share", type: "button", text: "Set share" });
  const back = el("button", { class: "rollback danger", type: "button", text: "Roll back to 0%" });
  set.addEventListener("click", () => changeShare(card, input));
  back.addEventListener("click", () => rollback(card));
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") changeShare(card, input);
  });
  card.append(
    el("header", {}, el("h3", { text: r.name }), el("span", { class: "chain", "data-field": "chain" })),
    el("div", { class: "split" },
      el("div", { class: "share-line" },
        el("span", { class: "label", "data-field": "target" }), share, configured),
      bar,
      el("div", { class: "controls" }, input, set, back)),
    el("p", { class: "nosplit", text: "No split on this route." }),
    el("dl", { class: "extras" }),
  );
  return card;
}

function updateRoute(card, r) {
  card.dataset.name = r.name;
  const q = (f) => card.querySelector('[data-field="' + f + '"]');
  q("chain").textContent = [r.primary, ...(r.fallbacks || [])].join(" → ");
  const s = r.split;
  card.querySelector(".split").hidden = !s;
  card.querySelector(".nosplit").hidden = !!s;
  if (s) {
    card.dataset.hasSplit = "true";
    q("target").textContent = "share to " + s.target;
    q("percentage").textContent = fmtPct(s.percentage);
    q("configured_percentage").textContent = "configured " + fmtPct(s.configured_percentage);
    card.querySelector(".fill").style.width = Math.max(0, Math.min(100, s.percentage)) + "%";
    card.dataset.percentage = String(s.percentage);
  }
  const extras = card.querySelector(".extras");
  const rows = [];
  for (const k of EXTRA_ROUTE_KEYS) {
    const v = r[k] !== undefined ? r[k] : s && s[k];
    if (v !== undefined && v !== null) rows.push(kv(humanKey(k), summary(v), k));
  }
  extras.replaceChildren(...rows);
  extras.hidden = rows.length === 0;
}

function renderRoutes(list) {
  const box = $("routes");
  const seen = new Set();
  for (const r of list) {
    seen.add(r.name);
    let card = [...box.children].find((c) => c.dataset.route === r.name);
    if (!card) {
      card = routeCard(r);
      box.append(card);
    }
    updateRoute(card, r);
  }
  for (const c of [...box.children]) if (!seen.has(c.dataset.route)) c.remove();
}

// --- actions, each confirmed first ----------------------------------------

// One question at a time, answered by its buttons (synchronously: the
// dialog's `close` event comes later, possibly after the next question).
let answer = null;

function confirmAction(text, okLabel) {
  if (answer) answer(false); // a newer question replaces an unanswered one
  const d = $("confirm");
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = okLabel;
  return new Promise((resolve) => {
    answer = resolve;
    if (!d.open) d.showModal();
    $("confirm-cancel").focus();
  });
}

function answered(ok) {
  const resolve = answer;
  answer = null;
  $("confirm").close();
  if (resolve) resolve(ok);
}

function reportChange(route, rsp) {
  const kept = rsp.persisted === false ? " (in force, but NOT persisted: it will not survive a restart)" : "";
  toast(route + ": " + fmtPct(rsp.previous_percentage) + " → " + fmtPct(rsp.percentage) + kept, rsp.persisted === false);
}

async function changeShare(card, input) {
  const route = card.dataset.route;
  const raw = input.value.trim();
  const pct = Number(raw);
  if (raw === "" || !Number.isFinite(pct) || pct < 0 || pct > 100) {
    toast("The share must be a number from 0 to 100.", true);
    return;
  }
  const now = card.dataset.percentage;
  const ok = await confirmAction(
    "Move route “" + route + "” from " + fmtPct(Number(now)) + " to " + fmtPct(pct) + "?", "Set " + fmtPct(pct));
  if (!ok) return;
  try {
    reportChange(route, await api("PUT", "routes/" + encodeURIComponent(route) + "/split", { percentage: pct }));
    input.value = "";
  } catch (e) {
    if (e instanceof Unauthorized) return signOut("Signed out: " + e.message);
    toast(route + ": " + e.message, true);
  }
  poll();
}

async function rollback(card) {
  const route = card.dataset.route;
  const ok = await confirmAction("Roll route “" + route + "” back to 0% at once?", "Roll back");
  if (!ok) return;
  try {
    reportChange(route, await api("POST", "routes/" + encodeURIComponent(route) + "/rollback"));
  } catch (e) {
    if (e instanceof Unauthorized) return signOut("Signed out: " + e.message);
    toast(route + ": " + e.message, true);
  }
  poll();
}

// --- start ----------------------------------------------------------------

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  signIn($("token").value);
});
$("logout").addEventListener("click", () => signOut(""));
$("confirm-ok").addEventListener("click", () => answered(true));
$("confirm-cancel").addEventListener("click", () => answered(false));
// Escape closes the dialog: a "no".
$("confirm").addEventListener("cancel", () => answered(false));
document.body.dataset.ready = "true";
if (token) signIn(token);
else showLogin("");
