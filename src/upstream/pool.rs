//! Keep-alive HTTP/1.1 connections to a plain `http://` upstream (a local
//! model server, a relay inside the cluster), each polled by the request
//! that uses it instead of by a task of its own.
//!
//! Why not hyper-util's pool here: it runs every connection in a spawned
//! task, so each request crossed tasks four times (the request to the
//! connection task, the head back, each body chunk, and a further task
//! spawned per request that waits to put the connection back), and it
//! finds the idle connection by SipHashing the scheme and host. callgrind
//! put that at ~24,000 instructions per proxied request, a third of the
//! whole path (docs/benchmarks.md). Here the connection (hyper's own
//! HTTP/1 state machine, unchanged) is polled inside the request's future
//! and then inside its response body; at the body's end it goes back to
//! this endpoint's idle list. `https://` upstreams keep hyper-util's pool:
//! HTTP/2 to a provider multiplexes streams on one connection, and TLS
//! costs far more than the task hops.
//!
//! Behaviour kept from hyper-util: `Host` set from the URL, origin-form
//! request targets, a request that a reused connection closed before
//! sending is sent again on another (the provider closed an idle
//! keep-alive as the request left), a connection is reused only once its
//! previous response was read to the end. Idle connections are kept at most
//! [`MAX_IDLE`] per endpoint and [`IDLE_TIMEOUT`]; one the server closed
//! while idle is noticed when it is next taken out and is never used.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderValue, Request, Response, Uri};
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;

use super::client::UpstreamBody;

/// Idle keep-alive connections are closed after this long (providers close theirs at ~60–120 s).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per endpoint: enough for a burst of streams to return to the pool.
pub const MAX_IDLE: usize = 1024;
/// A connection whose response ended but which is not yet ready for the
/// next request gets this long to become ready (then it is closed).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

type Io = TokioIo<tokio::net::TcpStream>;
type Conn = http1::Connection<Io, UpstreamBody>;
type Sender = http1::SendRequest<UpstreamBody>;

/// A connection between requests.
struct Idle {
    link: Box<Link>,
    since: Instant,
}

/// The keep-alive connections of one `http://` endpoint.
pub struct Pool {
    /// `http://host:port`, what the connector dials.
    target: Uri,
    /// The `Host` header every request carries.
    host: HeaderValue,
    connector: HttpConnector,
    /// Most recently used last (taken from the back, expired from the front).
    idle: Mutex<VecDeque<Idle>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("target", &self.target)
            .finish()
    }
}

/// Why a request to a pooled endpoint got no response head.
#[derive(Debug)]
pub enum PoolError {
    /// No connection could be made (refused, unreachable, DNS, connect timeout).
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The connection failed while the request was sent or its head read.
    Http(hyper::Error),
}

impl std::fmt::Display for PoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PoolError::Connect(_) => f.write_str("client error (Connect)"),
            PoolError::Http(_) => f.write_str("client error (SendRequest)"),
        }
    }
}

impl std::error::Error for PoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PoolError::Connect(e) => Some(&**e),
            PoolError::Http(e) => Some(e),
        }
    }
}

/// How one exchange on one connection ended without a response.
enum Failed {
    /// The connection closed before the request left: it may go on another.
    Unsent(Box<Request<UpstreamBody>>, hyper::Error),
    /// The request may have reached the upstream: not sent again here.
    Sent(hyper::Error),
}

impl Pool {
    /// The pool of an `http://` base URL; `None` for any other scheme.
    pub fn new(base: &Uri, connect_timeout: Duration, keepalive: Duration) -> Option<Self> {
        if base.scheme_str() != Some("http") {
            return None;
        }
        let authority = base.authority()?;
        let target = Uri::builder()
            .scheme("http")
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .ok()?;
        let host = match authority.port_u16() {
            Some(80) => HeaderValue::from_str(authority.host()),
            _ => HeaderValue::from_str(authority.as_str()),
        }
        .ok()?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_keepalive(Some(keepalive));
        Some(Self {
            target,
            host,
            connector,
            idle: Mutex::new(VecDeque::new()),
        })
    }

    /// Sends `req` (its URI in origin form) on an idle connection, or on a new one.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, PoolError> {
        req.headers_mut()
            .entry(header::HOST)
            .or_insert_with(|| self.host.clone());
        while let Some(link) = self.checkout().await {
            match exchange(link, req).await {
                Ok(rsp) => return Ok(rsp),
                Err(Failed::Unsent(r, _)) => req = *r,
                Err(Failed::Sent(e)) => return Err(PoolError::Http(e)),
            }
        }
        let io = tower::Service::call(&mut self.connector.clone(), self.target.clone())
            .await
            .map_err(|e| PoolError::Connect(e.into()))?;
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(PoolError::Http)?;
        let link = Box::new(Link {
            sender,
            conn,
            pool: Arc::downgrade(self),
        });
        match exchange(link, req).await {
            Ok(rsp) => Ok(rsp),
            Err(Failed::Unsent(_, e) | Failed::Sent(e)) => Err(PoolError::Http(e)),
        }
    }

    /// The most recently used idle connection that is still open.
    async fn checkout(&self) -> Option<Box<Link>> {
        loop {
            let mut idle = {
                let mut list = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                list.pop_back()?
            };
            if idle.since.elapsed() >= IDLE_TIMEOUT {
                // Everything before it is older still.
                self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
                return None;
            }
            // Polled once: a connection the server closed while idle reads
            // its EOF here and ends, and is dropped instead of used.
            let open =
                poll_fn(|cx| Poll::Ready(Pin::new(&mut idle.link.conn).poll(cx).is_pending()))
                    .await;
            if open && idle.link.sender.is_ready() {
                return Some(idle.link);
            }
        }
    }

    /// Puts a connection whose last response was read to the end back.
    fn checkin(&self, link: Box<Link>) {
        let now = Instant::now();
        let mut list = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while list
            .front()
            .is_some_and(|i| now.duration_since(i.since) >= IDLE_TIMEOUT)
        {
            list.pop_front();
        }
        if list.len() < MAX_IDLE {
            list.push_back(Idle { link, since: now });
        }
    }
}

/// One request on one connection, the connection polled alongside
/// until the head arrives.
async fn exchange(
    mut link: Box<Link>,
    req: Request<UpstreamBody>,
) -> Result<Response<PooledBody>, Failed> {
    let mut head = pin!(link.sender.try_send_request(req));
    let mut open = true;
    let head = poll_fn(|cx| {
        if open && Pin::new(&mut link.conn).poll(cx).is_ready() {
            // Done (closed or failed): the head's future says why.
            open = false;
        }
        head.as_mut().poll(cx)
    })
    .await;
    let rsp = match head {
        Ok(rsp) => rsp,
        Err(mut e) => {
            return Err(match e.take_message() {
                Some(req) => Failed::Unsent(Box::new(req), e.into_error()),
                None => Failed::Sent(e.into_error()),
            })
        }
    };
    let link = open.then_some(link);
    let (parts, body) = rsp.into_parts();
    let mut body = PooledBody { body, link };
    if body.body.is_end_stream() {
        // No body to read (204, HEAD): the connection is free already.
        poll_fn(|cx| {
            body.release(cx);
            Poll::Ready(())
        })
        .await;
    }
    Ok(Response::from_parts(parts, body))
}

/// A connection, and the pool it goes back to (weakly held: the pool holds
/// its idle links, and is dropped with its snapshot after a reload).
struct Link {
    sender: Sender,
    conn: Conn,
    pool: Weak<Pool>,
}

/// Puts a connection whose last response was read to the end back into its
/// pool (closed if the pool is gone).
fn checkin(link: Box<Link>) {
    if let Some(pool) = link.pool.upgrade() {
        pool.checkin(link);
    }
}

/// A response body from a pooled connection: reading it drives the
/// connection; read to the end, the connection goes back to the pool;
/// dropped before, the connection is closed (a half-read response cannot
/// be followed by another on the same connection).
pub struct PooledBody {
    body: Incoming,
    link: Option<Box<Link>>,
}

impl PooledBody {
    /// The body has ended: the connection goes back once it is ready for
    /// another request (usually at once; else a small task waits for it).
    fn release(&mut self, cx: &mut Context<'_>) {
        let Some(mut link) = self.link.take() else {
            return;
        };
        if Pin::new(&mut link.conn).poll(cx).is_ready() {
            return; // `Connection: close`, or the server hung up.
        }
        if link.sender.is_ready() {
            checkin(link);
            return;
        }
        tokio::spawn(async move {
            let ready = poll_fn(|cx| {
                if Pin::new(&mut link.conn).poll(cx).is_ready() {
                    return Poll::Ready(false);
                }
                link.sender.poll_ready(cx).map(|r| r.is_ok())
            });
            if let Ok(true) = tokio::time::timeout(SETTLE_TIMEOUT, ready).await {
                checkin(link);
            }
        });
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = this.poll_body(cx) {
            return Poll::Ready(frame);
        }
        let Some(link) = this.link.as_mut() else {
            return Poll::Pending;
        };
        if Pin::new(&mut link.conn).poll(cx).is_ready() {
            // Closed or failed: the body's channel now says how it ended.
            this.link = None;
        }
        // The connection may have just read more of the body.
        this.poll_body(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl PooledBody {
    fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => self.release(cx),
            Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => self.release(cx),
            Poll::Ready(Some(Err(_))) => self.link = None,
            _ => {}
        }
        frame
    }
}
