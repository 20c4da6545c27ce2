//! One socket: the reader loop (frames, the table of requests, the
//! conversation) and the writer task (bounded outbound channel, pings).
//! Queued `message` frames (see `dialogue`) count as in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;

use super::dialogue::{Dialogue, Turn};
use super::job::Job;
use super::protocol::{self, error_obj, BadFrame, Frame};
use super::request::{self, Ended};
use super::writer;
use super::Conn;

/// Messages waiting for the writer. Small: its job is smoothing, not storage.
const OUTBOUND: usize = 64;

/// A request the connection knows about.
enum Slot {
    /// Its task runs; cancelling the token stops it.
    Running(CancellationToken),
    /// A `message` waiting for the conversation.
    Queued,
}

/// Serves the socket until either side closes it.
pub(crate) async fn run(socket: WebSocket, conn: Conn) {
    let conn = Arc::new(conn);
    let _gauge = Gauge::new(&conn);
    let (sink, stream) = socket.split();
    let (out, out_rx) = mpsc::channel(OUTBOUND);
    let missed = Arc::new(AtomicU32::new(0));
    let closed = CancellationToken::new();
    let ping = conn.limits.ping_interval;
    let writer = tokio::spawn(writer::run(
        sink,
        out_rx,
        ping,
        missed.clone(),
        closed.clone(),
    ));
    let ws = &conn.limits;
    let mut reader = Reader {
        dialogue: Dialogue::new(ws.max_turns, ws.max_conversation_bytes),
        max_in_flight: ws.max_in_flight.max(1),
        conn: conn.clone(),
        out,
        tasks: JoinSet::new(),
        task_keys: HashMap::new(),
        slots: HashMap::new(),
    };
    let close = reader.read(stream, &closed, &missed).await;
    for slot in reader.slots.values() {
        if let Slot::Running(token) = slot {
            token.cancel();
        }
    }
    if let Some(frame) = close {
        let _ = reader.out.send(Message::Close(Some(frame))).await;
    }
    let Reader { mut tasks, out, .. } = reader;
    drop(out);
    // Cancelled tasks end at once; let them record their accounting.
    while tasks.join_next().await.is_some() {}
    let _ = writer.await;
}

/// The close frame of a server shutting down.
fn going_away() -> CloseFrame {
    CloseFrame {
        code: 1001,
        reason: "server shutting down".into(),
    }
}

struct Reader {
    conn: Arc<Conn>,
    out: mpsc::Sender<Message>,
    tasks: JoinSet<Ended>,
    task_keys: HashMap<Id, String>,
    slots: HashMap<String, Slot>,
    dialogue: Dialogue,
    max_in_flight: usize,
}

impl Reader {
    /// Reads frames until the socket ends; `Some` is the close frame to send.
    async fn read(
        &mut self,
        mut stream: SplitStream<WebSocket>,
        closed: &CancellationToken,
        missed: &AtomicU32,
    ) -> Option<CloseFrame> {
        // Shutdown: no new frames are read; requests in flight finish, then
        // the socket closes with 1001 (going away).
        let mut closing = false;
        let app = self.conn.app.clone();
        loop {
            tokio::select! {
                () = closed.cancelled() => return None,
                () = app.lifecycle.closing(), if !closing => {
                    closing = true;
                    if self.tasks.is_empty() {
                        return Some(going_away());
                    }
                }
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    let (id, answer) = match joined {
                        Ok((id, ended)) => (id, ended.answer),
                        Err(e) => (e.id(), None),
                    };
                    self.ended(id, answer).await;
                    if closing && self.tasks.is_empty() {
                        return Some(going_away());
                    }
                }
                frame = stream.next(), if !closing => {
                    let msg = match frame {
                        None => return None,
                        Some(Err(e)) => return writer::close_for(&e),
                        Some(Ok(m)) => m,
                    };
                    missed.store(0, Ordering::Relaxed);
                    match msg {
                        Message::Text(t) => self.on_text(t.as_str()).await,
                        Message::Binary(_) => {
                            let msg = "Binary frames are not supported; send JSON text frames.";
                            let b = BadFrame { id: None, message: msg.into(), code: "unsupported_frame", param: None };
                            self.bad(b).await;
                        }
                        Message::Close(_) => return None,
                        Message::Ping(_) | Message::Pong(_) => {}
                    }
                }
            }
        }
    }

    async fn on_text(&mut self, text: &str) {
        match protocol::parse(text) {
            Err(b) => self.bad(b).await,
            Ok(Frame::Chat { id, body }) => self.chat(id, body).await,
            Ok(Frame::Message { id, content, model }) => self.message(id, content, model).await,
            Ok(Frame::Clear) => self.dialogue.clear(),
            Ok(Frame::Cancel { id }) => self.cancel(&id).await,
        }
    }

    /// Answers a frame that cannot be served; counted like an HTTP 400.
    async fn bad(&self, b: BadFrame) {
        let id = b.id.unwrap_or_else(protocol::new_id);
        let err = error_obj(&b.message, "invalid_request_error", b.code, b.param);
        self.reject(&id, &err, 400).await;
    }

    /// Refuses a request before it reaches a route; recorded like HTTP's refusals.
    async fn reject(&self, id: &Value, error: &Value, status: u16) {
        super::outcome::refused(&self.conn, id, status);
        self.send(protocol::error(id, error)).await;
    }

    async fn send(&self, msg: String) {
        let _ = self.out.send(Message::Text(msg.into())).await;
    }

    /// Id, key, and whether another request may start; `None` after an error reply.
    async fn admit(&self, id: Option<Value>) -> Option<(Value, String)> {
        let id = id.unwrap_or_else(protocol::new_id);
        let key = id.to_string();
        let refusal = if self.slots.contains_key(&key) {
            let msg = "A request with this `id` is still running.";
            Some((
                error_obj(msg, "invalid_request_error", "duplicate_id", Some("id")),
                400,
            ))
        } else if self.slots.len() >= self.max_in_flight {
            let msg = format!(
                "Too many requests in flight on this socket (limit {}); wait for a `done`.",
                self.max_in_flight
            );
            Some((
                error_obj(&msg, "rate_limit_error", "too_many_in_flight", None),
                429,
            ))
        } else {
            None
        };
        match refusal {
            Some((err, status)) => {
                self.reject(&id, &err, status).await;
                None
            }
            None => Some((id, key)),
        }
    }

    async fn chat(&mut self, id: Option<Value>, mut body: Map<String, Value>) {
        let Some((id, key)) = self.admit(id).await else {
            return;
        };
        if !body.contains_key("model") {
            match &self.conn.default_model {
                Some(m) => {
                    body.insert("model".into(), Value::String(m.clone()));
                }
                None => return self.no_model(id).await,
            }
        }
        self.start(id, key, body, false).await;
    }

    async fn message(&mut self, id: Option<Value>, content: Value, model: Option<String>) {
        let Some((id, key)) = self.admit(id).await else {
            return;
        };
        let Some(model) = model.or_else(|| self.conn.default_model.clone()) else {
            return self.no_model(id).await;
        };
        let turn = Turn {
            id,
            key: key.clone(),
            content,
            model,
        };
        match self.dialogue.offer(turn) {
            Some(turn) => self.ask(turn).await,
            None => {
                self.slots.insert(key, Slot::Queued);
            }
        }
    }

    async fn no_model(&self, id: Value) {
        let msg = "No `model`: name one in the frame or connect with `?model=`.";
        let err = error_obj(
            msg,
            "invalid_request_error",
            "invalid_request",
            Some("model"),
        );
        self.reject(&id, &err, 400).await;
    }

    /// Asks a conversation turn (and the next ones if it cannot start).
    async fn ask(&mut self, turn: Turn) {
        let mut next = Some(turn);
        while let Some(turn) = next.take() {
            let (id, key, body) = self.dialogue.begin(turn);
            if !self.start(id, key.clone(), body, true).await {
                next = self.dialogue.ended(&key, None);
            }
        }
    }

    /// Forces streaming with usage, then spawns the request task; false
    /// when it could not start (and the client was told).
    async fn start(
        &mut self,
        id: Value,
        key: String,
        body: Map<String, Value>,
        collect: bool,
    ) -> bool {
        let job = match Job::new(id, body, collect) {
            Ok(job) => job,
            Err((id, e)) => {
                let err = error_obj(&e.message, e.kind, e.code, None);
                self.slots.remove(&key);
                self.reject(&id, &err, 400).await;
                return false;
            }
        };
        let token = CancellationToken::new();
        let task = request::run(self.conn.clone(), self.out.clone(), job, token.clone());
        let handle = self.tasks.spawn(task);
        self.task_keys.insert(handle.id(), key.clone());
        self.slots.insert(key, Slot::Running(token));
        true
    }

    async fn cancel(&mut self, id: &Value) {
        let key = id.to_string();
        match self.slots.get(&key) {
            Some(Slot::Running(token)) => token.cancel(),
            Some(Slot::Queued) => {
                self.slots.remove(&key);
                self.dialogue.cancel_queued(&key);
                self.send(protocol::done(id, "cancelled", None)).await;
            }
            // Already finished (or never known): cancelling is idempotent.
            None => {}
        }
    }

    /// A task ended: forget it, extend the conversation, start what waited.
    async fn ended(&mut self, task: Id, answer: Option<String>) {
        let Some(key) = self.task_keys.remove(&task) else {
            return;
        };
        self.slots.remove(&key);
        if let Some(turn) = self.dialogue.ended(&key, answer) {
            self.ask(turn).await;
        }
    }
}

/// `turnout_websocket_connections` for as long as the socket lives.
struct Gauge(prometheus::IntGauge);

impl Gauge {
    fn new(conn: &Conn) -> Self {
        let g = conn.app.metrics.ws_connections.clone();
        g.inc();
        Self(g)
    }
}

impl Drop for Gauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}
