//! WebSocket chat push, `GET /v1/ws/chat` (PRODUCT.md §3.5), on top of the
//! same split and failover as HTTP.
//!
//! Per socket (see `connection`):
//! - a **reader** (the connection task) parses frames, keeps the table of
//!   running requests (at most `websocket.max_in_flight`) and the bounded
//!   conversation, and spawns one **request task** per chat request;
//! - a **writer** task owns the sending half: it drains a bounded channel
//!   that every request task writes into (a slow reader therefore slows the
//!   request tasks, which stop reading their upstreams: backpressure, not
//!   buffering), pings every `websocket.ping_interval` and closes a peer that
//!   missed two pongs.
//!
//! Auth is checked before the socket reads anything: a bad or missing key
//! (header or `?token=`) gets close code 4001 and is not logged. This router
//! sits outside the HTTP stack (its auth is this one, and nothing records
//! the URI, where `?token=` is a key).
//!
//! Files: `protocol` (frames in, messages out), `conversation` (bounded
//! history), `dialogue` (orders conversation frames), `events` (upstream SSE → pieces), `job` (one request as read from its frame), `request` (one request task),
//! `outcome` (its last message and its accounting).

mod connection;
mod conversation;
mod dialogue;
mod events;
mod job;
mod outcome;
mod protocol;
mod request;
mod writer;

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use crate::auth::ClientIdentity;
use crate::config::WebSocketConfig;
use crate::error::ApiError;
use crate::state::AppState;

/// Close code for a bad or missing key (the seed articles' clients expect it).
pub const CLOSE_INVALID_KEY: u16 = 4001;

/// How long a rejected socket waits for the client's close reply.
const REJECT_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Query parameters of the upgrade request: browsers cannot set headers.
#[derive(Debug, Default, Deserialize)]
pub struct WsParams {
    /// The client key, when no `Authorization` header carries it.
    pub token: Option<String>,
    /// The connection's default model.
    pub model: Option<String>,
    /// The connection's split key (after the `x-user-id` header).
    pub user: Option<String>,
}

/// What every request of one socket shares.
pub(crate) struct Conn {
    pub app: Arc<AppState>,
    pub identity: Option<ClientIdentity>,
    /// Allowlisted handshake headers, sent upstream with every request.
    pub headers: Arc<HeaderMap>,
    /// `x-user-id` header, else `?user=`.
    pub split_key: Option<String>,
    /// `?model=`, else the config's `websocket.default_model`.
    pub default_model: Option<String>,
    /// Connection id, prefix of each request's log id.
    pub id: String,
    /// The socket's limits, as configured when it opened.
    pub limits: WebSocketConfig,
}

impl Conn {
    /// The log id of one request: connection id, then the request's id.
    pub(crate) fn request_id(&self, id: &serde_json::Value) -> String {
        match id {
            serde_json::Value::String(s) => format!("{}/{s}", self.id),
            other => format!("{}/{other}", self.id),
        }
    }
}

/// The `/v1/ws/chat` route, with its state; merged by `app::public_router`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/ws/chat", get(upgrade))
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(state)
}

/// Upgrades, then either closes with 4001 or serves the socket.
pub async fn upgrade(
    State(app): State<Arc<AppState>>,
    params: Result<Query<WsParams>, QueryRejection>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // Not a WebSocket handshake, or a malformed query: an OpenAI-shaped error.
    let (ws, Query(params)) = match (ws, params) {
        (Ok(ws), Ok(q)) => (ws, q),
        (Err(e), _) => {
            let msg = format!("{} Connect with a WebSocket client.", e.body_text());
            let code = "websocket_upgrade_required";
            return ApiError::new(e.status(), "invalid_request_error", code, msg).into_response();
        }
        (_, Err(e)) => return ApiError::bad_request(e.body_text()).into_response(),
    };
    // The socket's limits and its key are read from the snapshot of its
    // upgrade; each chat request loads its own snapshot when it starts.
    let snap = app.live.load();
    let limits = snap.cfg().websocket.clone();
    let limit = limits.max_message_bytes;
    let ws = ws.max_message_size(limit).max_frame_size(limit);
    let identity = if snap.keys().disabled() {
        None
    } else {
        let presented = crate::auth::presented_key(&headers).or(params.token.as_deref());
        match presented.and_then(|k| snap.keys().check(k)) {
            Some(id) => Some(id),
            None => return ws.on_upgrade(move |socket| reject(socket, app)),
        }
    };
    let header_user = headers
        .get("x-user-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty());
    let conn = Conn {
        identity,
        headers: Arc::new(crate::upstream::forward_headers(&headers, true)),
        split_key: header_user
            .map(str::to_owned)
            .or(params.user.filter(|u| !u.is_empty())),
        default_model: params
            .model
            .filter(|m| !m.is_empty())
            .or_else(|| limits.default_model.clone()),
        id: format!("ws-{:016x}", fastrand::u64(..)),
        limits,
        app,
    };
    ws.on_upgrade(move |socket| connection::run(socket, conn))
}

/// Closes at once with 4001; nothing the client sent is looked at.
async fn reject(mut socket: WebSocket, app: Arc<AppState>) {
    crate::request::gate::count_refusal(&app.metrics, "401", "ws");
    let frame = CloseFrame {
        code: CLOSE_INVALID_KEY,
        reason: "invalid api key".into(),
    };
    if socket.send(Message::Close(Some(frame))).await.is_ok() {
        // Wait for the close reply so the client reads our frame, not a reset.
        let _ = tokio::time::timeout(REJECT_LINGER, async {
            while let Some(Ok(_)) = socket.recv().await {}
        })
        .await;
    }
}
