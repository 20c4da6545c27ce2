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
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderValue, Request, Response, Uri};
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;

use super::body::UpstreamBody;

/// Idle keep-alive connections are closed after this long (providers close theirs at ~60–120 s).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per endpoint: enough for a burst of streams to return to the pool.
pub const MAX_IDLE: usize = 1024;
/// A connection whose response ended but which is not yet ready for the
/// next request gets this long to become ready (then it is closed).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

type Conn = http1::Connection<Socket, UpstreamBody>;
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
        while let Some(link) = self.checkout() {
            match exchange(link, req).await {
                Ok(rsp) => return Ok(rsp),
                // Closed by the server while idle (its EOF read as the
                // request was about to go): the next one, or a new one.
                Err(Failed::Unsent(r, _)) => req = *r,
                Err(Failed::Sent(e)) => return Err(PoolError::Http(e)),
            }
        }
        let io = tower::Service::call(&mut self.connector.clone(), self.target.clone())
            .await
            .map_err(|e| PoolError::Connect(e.into()))?;
        let relay = Arc::new(Relay::default());
        let socket = Socket {
            io,
            waker: Waker::from(relay.clone()),
        };
        let (sender, conn) = http1::Builder::new()
            .handshake(socket)
            .await
            .map_err(PoolError::Http)?;
        let quiet = Arc::new(Quiet::default());
        let link = Box::new(Link {
            sender,
            conn,
            pool: Arc::downgrade(self),
            relay,
            quiet_waker: Waker::from(quiet.clone()),
            quiet,
            loud: false,
        });
        match exchange(link, req).await {
            Ok(rsp) => Ok(rsp),
            Err(Failed::Unsent(_, e) | Failed::Sent(e)) => Err(PoolError::Http(e)),
        }
    }

    /// The most recently used idle connection, if it has not expired. One
    /// the server closed meanwhile reads its EOF when the request is handed
    /// to it, and gives the request back unsent ([`Failed::Unsent`]).
    fn checkout(&self) -> Option<Box<Link>> {
        let mut list = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let idle = list.pop_back()?;
            if idle.since.elapsed() >= IDLE_TIMEOUT {
                // Everything before it is older still.
                list.clear();
                return None;
            }
            if idle.link.sender.is_ready() {
                return Some(idle.link);
            }
        }
    }

    /// Puts a connection whose last response was read to the end back.
    fn checkin(&self, link: Box<Link>) {
        // Nothing wakes a task for an idle connection.
        link.relay.target.take();
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

/// One request on one connection, the connection driven until the head arrives.
async fn exchange(
    mut link: Box<Link>,
    req: Request<UpstreamBody>,
) -> Result<Response<PooledBody>, Failed> {
    // A client's body streamed through arrives by the server connection's
    // wakes: such a request is driven with the task's own waker throughout.
    link.loud = matches!(req.body(), UpstreamBody::Right(_));
    let mut head = pin!(link.sender.try_send_request(req));
    let mut link = Some(link);
    let head = poll_fn(|cx| {
        let Some(l) = link.as_mut() else {
            return head.as_mut().poll(cx);
        };
        if l.drive(cx).is_pending() {
            // Only the connection, just driven, completes the head.
            return l.poll_quietly(cx, |cx| head.as_mut().poll(cx));
        }
        // Done (closed or failed): dropped, it answers the head's future
        // with why (and the request, if it never left).
        link = None;
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
///
/// Wakes: hyper's connection wakes itself for three things, its socket,
/// a request handed to it and a body reader's demand. The last two are
/// always this task's own doing, followed at once by driving the
/// connection, so a wake for them would only poll the whole request (and
/// the server connection around it) once more for nothing, or wake the
/// task that used an idle connection last. So the connection is polled
/// with a waker that only notes a wake ([`Quiet`]), its socket wakes the
/// driving task through [`Relay`], and the head and body channels, filled
/// only while it is driven, are polled without a waker.
struct Link {
    sender: Sender,
    conn: Conn,
    pool: Weak<Pool>,
    relay: Arc<Relay>,
    quiet: Arc<Quiet>,
    quiet_waker: Waker,
    /// This exchange is driven with the task's waker (see [`exchange`]).
    loud: bool,
}

impl Link {
    /// Polls the connection: reads and writes what its socket allows.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        self.relay.target.register(cx.waker());
        if self.loud {
            return Pin::new(&mut self.conn).poll(cx);
        }
        self.quiet.woken.store(false, Ordering::Relaxed);
        let mut quiet = Context::from_waker(&self.quiet_waker);
        let done = Pin::new(&mut self.conn).poll(&mut quiet);
        if done.is_pending() && self.quiet.woken.load(Ordering::Relaxed) {
            // It asked for another turn itself (hyper yields after a
            // long run of work): the task gets one.
            cx.waker().wake_by_ref();
        }
        done
    }

    /// Polls something only [`Link::drive`] advances: without a waker,
    /// unless this exchange is loud.
    fn poll_quietly<T>(
        &self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        if self.loud {
            poll(cx)
        } else {
            poll(&mut Context::from_waker(Waker::noop()))
        }
    }
}

/// Forwards the socket's readiness to the task driving the connection now.
#[derive(Default)]
struct Relay {
    target: AtomicWaker,
}

impl Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.target.wake();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.target.wake();
    }
}

/// Notes that the connection woke itself (see [`Link`]).
#[derive(Default)]
struct Quiet {
    woken: AtomicBool,
}

impl Wake for Quiet {
    fn wake(self: Arc<Self>) {
        self.woken.store(true, Ordering::Relaxed);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Relaxed);
    }
}

/// The upstream socket: readiness always wakes through its [`Relay`],
/// whatever waker hyper polls it with.
struct Socket {
    io: TokioIo<tokio::net::TcpStream>,
    waker: Waker,
}

impl Socket {
    fn io(&mut self) -> (Pin<&mut TokioIo<tokio::net::TcpStream>>, Context<'_>) {
        (Pin::new(&mut self.io), Context::from_waker(&self.waker))
    }
}

impl Read for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let (io, mut cx) = self.get_mut().io();
        io.poll_read(&mut cx, buf)
    }
}

impl Write for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let (io, mut cx) = self.get_mut().io();
        io.poll_write(&mut cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (io, mut cx) = self.get_mut().io();
        io.poll_flush(&mut cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (io, mut cx) = self.get_mut().io();
        io.poll_shutdown(&mut cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let (io, mut cx) = self.get_mut().io();
        io.poll_write_vectored(&mut cx, bufs)
    }
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
        if link.drive(cx).is_ready() {
            return; // `Connection: close`, or the server hung up.
        }
        if link.sender.is_ready() {
            checkin(link);
            return;
        }
        link.loud = true;
        tokio::spawn(async move {
            let ready = poll_fn(|cx| {
                if link.drive(cx).is_ready() {
                    return Poll::Ready(false);
                }
                link.sender.poll_ready(cx).map(|r| r.is_ok())
            });
            if let Ok(true) = tokio::time::timeout(SETTLE_TIMEOUT, ready).await {
                checkin(link);
            }
        });
    }

    fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let body = &mut self.body;
        let frame = match &self.link {
            Some(link) => link.poll_quietly(cx, |cx| Pin::new(body).poll_frame(cx)),
            // The connection is gone: its end is in the channel already.
            None => Pin::new(body).poll_frame(cx),
        };
        match &frame {
            Poll::Ready(None) => self.release(cx),
            Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => self.release(cx),
            Poll::Ready(Some(Err(_))) => self.link = None,
            _ => {}
        }
        frame
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
        if link.drive(cx).is_ready() {
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;

    use super::*;
    use crate::upstream::whole;

    /// A loopback server answering `ok` to `per_connection` requests on
    /// each connection it accepts, then closing it; each close is reported.
    async fn server(per_connection: usize) -> (Uri, Arc<AtomicUsize>, mpsc::UnboundedReceiver<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let (closed, closes) = mpsc::unbounded_channel();
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let closed = closed.clone();
                tokio::spawn(async move {
                    answer(s, per_connection).await;
                    let _ = closed.send(());
                });
            }
        });
        (base.parse().unwrap(), accepted, closes)
    }

    async fn answer(mut s: TcpStream, requests: usize) {
        let mut buf = Vec::new();
        for _ in 0..requests {
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut chunk = [0u8; 1024];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            buf.clear();
            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            if s.write_all(ok).await.is_err() {
                return;
            }
        }
    }

    async fn get(pool: &Arc<Pool>) -> Bytes {
        let req = Request::get("/v1/models")
            .body(whole(Bytes::new()))
            .unwrap();
        let rsp = pool.send(req).await.expect("a response");
        rsp.into_body().collect().await.unwrap().to_bytes()
    }

    fn pool(base: &Uri) -> Arc<Pool> {
        let t = Duration::from_secs(5);
        Arc::new(Pool::new(base, t, t).expect("an http:// pool"))
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_response_is_read() {
        let (base, accepted, _closes) = server(usize::MAX).await;
        let pool = pool(&base);
        for _ in 0..5 {
            assert_eq!(get(&pool).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_while_idle_is_not_used() {
        let (base, accepted, mut closes) = server(1).await;
        let pool = pool(&base);
        for _ in 0..3 {
            assert_eq!(get(&pool).await, "ok");
            // The server has closed it: the pool holds a connection whose
            // EOF is waiting to be read.
            closes.recv().await.unwrap();
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_half_read_response_closes_its_connection() {
        let (base, accepted, _closes) = server(usize::MAX).await;
        let pool = pool(&base);
        let req = Request::get("/v1/models")
            .body(whole(Bytes::new()))
            .unwrap();
        drop(pool.send(req).await.unwrap());
        assert_eq!(get(&pool).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn only_plain_http_has_a_pool() {
        let t = Duration::from_secs(1);
        assert!(Pool::new(&"https://api.example.com/v1".parse().unwrap(), t, t).is_none());
        let p = Pool::new(&"http://127.0.0.1:80/v1".parse().unwrap(), t, t).unwrap();
        assert_eq!(p.host, "127.0.0.1");
        let p = Pool::new(&"http://[::1]:8080/v1".parse().unwrap(), t, t).unwrap();
        assert_eq!(p.host, "[::1]:8080");
    }
}
