//! The sending half of a socket: drains the bounded outbound channel, pings
//! every `websocket.ping_interval`, and closes a peer that missed two pongs
//! or that has not taken a write for two ping periods.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::Bytes;
use futures_util::stream::SplitSink;
use futures_util::SinkExt;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// Pings left unanswered before the peer is considered gone.
const MAX_MISSED: u32 = 2;

/// Longest wait for the closing handshake's last write.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

type Sink = SplitSink<WebSocket, Message>;

/// Writes until the channel closes, a write fails, or the peer stops
/// answering; then cancels `closed` so the reader stops too.
pub(crate) async fn run(
    mut sink: Sink,
    mut rx: mpsc::Receiver<Message>,
    ping: Duration,
    missed: Arc<AtomicU32>,
    closed: CancellationToken,
) {
    let ping = ping.max(Duration::from_millis(10));
    // A peer that takes no write for this long is as gone as one that never pongs.
    let stuck = ping * MAX_MISSED;
    let mut tick = tokio::time::interval_at(Instant::now() + ping, ping);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = rx.recv() => {
                // None: the reader is done and every request task has ended.
                let Some(msg) = msg else { break };
                match timeout(stuck, write_batch(&mut sink, &mut rx, msg)).await {
                    Ok(Ok(Flow::More)) => {}
                    _ => break,
                }
            }
            _ = tick.tick() => {
                if missed.fetch_add(1, Ordering::Relaxed) >= MAX_MISSED {
                    let frame = CloseFrame { code: 1001, reason: "ping timeout".into() };
                    let _ = timeout(ping, sink.feed(Message::Close(Some(frame)))).await;
                    break;
                }
                match timeout(stuck, sink.send(Message::Ping(Bytes::new()))).await {
                    Ok(Ok(())) => {}
                    _ => break,
                }
            }
        }
    }
    closed.cancel();
    // Sends our close frame, or the reply to the peer's, unless the peer is stuck.
    let _ = timeout(CLOSE_WAIT.min(stuck), sink.close()).await;
}

enum Flow {
    More,
    Closed,
}

/// Queues `first` and whatever else is already waiting, then flushes once.
async fn write_batch(
    sink: &mut Sink,
    rx: &mut mpsc::Receiver<Message>,
    first: Message,
) -> Result<Flow, axum::Error> {
    let mut next = Some(first);
    while let Some(msg) = next.take() {
        let is_close = matches!(msg, Message::Close(_));
        sink.feed(msg).await?;
        if is_close {
            sink.flush().await?;
            return Ok(Flow::Closed);
        }
        next = rx.try_recv().ok();
    }
    sink.flush().await?;
    Ok(Flow::More)
}

/// The close frame for a read error: 1009 when a frame or message is over
/// `websocket.max_message_bytes`, 1007 for bad UTF-8, 1002 for other
/// protocol errors, none when the connection itself is gone.
///
/// axum hides tungstenite's error type, so its message is matched; the
/// oversized-frame test pins the wording.
pub(crate) fn close_for(e: &axum::Error) -> Option<CloseFrame> {
    let text = e.to_string();
    let (code, reason) = if text.starts_with("Space limit exceeded") {
        (1009, "message too big")
    } else if text.starts_with("UTF-8 encoding error") {
        (1007, "invalid UTF-8")
    } else if text.starts_with("WebSocket protocol error") {
        (1002, "protocol error")
    } else {
        return None;
    };
    Some(CloseFrame {
        code,
        reason: reason.into(),
    })
}
