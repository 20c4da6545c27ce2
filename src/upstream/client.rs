//! The pooled HTTP client that carries requests to an `https://` upstream:
//! hyper-util's connection pool over rustls, nothing else on the path
//! (`http://` upstreams use [`super::pool`]).
//!
//! Why not reqwest here: with redirects and retries turned off, reqwest still
//! runs its redirect and retry layers on each request, turns the `Uri` back
//! into a `Url` twice and clones the header map twice; callgrind put that at
//! ~30,000 instructions per proxied request, a fifth of the whole request
//! (docs/benchmarks.md). Turnout already does the parts that matter itself
//! (timeouts, header allowlist, its own failover), so the proxy path uses the
//! client reqwest is built on. reqwest still sends the alert webhooks, where
//! convenience matters more than microseconds.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::MapOk;
use futures_util::stream::BoxStream;
use futures_util::TryFutureExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::Uri;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::pool::{PoolError, PooledBody};
use crate::outcome::Outcome;

pub use super::body::UpstreamBody;

/// One upstream's keep-alive pool (HTTP/1.1, or HTTP/2 when TLS negotiates it).
pub type HttpClient = Client<Connector, UpstreamBody>;

/// An upstream's response body as a stream of chunks.
pub type BodyStream = BoxStream<'static, Result<Bytes, hyper::Error>>;

/// An upstream's response body, from either pool.
pub enum ResponseBody {
    /// From an `http://` endpoint's own pool ([`super::pool`]).
    Pooled(PooledBody),
    /// From hyper-util's pool (`https://`).
    Shared(Incoming),
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ResponseBody::Pooled(b) => Pin::new(b).poll_frame(cx),
            ResponseBody::Shared(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Pooled(b) => b.is_end_stream(),
            ResponseBody::Shared(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Pooled(b) => b.size_hint(),
            ResponseBody::Shared(b) => b.size_hint(),
        }
    }
}

/// Why a request got no response head (connect, TLS, reset).
#[derive(Debug)]
pub enum SendError {
    /// From an `http://` endpoint's own pool.
    Pooled(PoolError),
    /// From hyper-util's pool.
    Shared(hyper_util::client::legacy::Error),
}

impl SendError {
    /// No connection could be made (as opposed to one that failed).
    pub fn is_connect(&self) -> bool {
        match self {
            SendError::Pooled(e) => matches!(e, PoolError::Connect(_)),
            SendError::Shared(e) => e.is_connect(),
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Pooled(e) => e.fmt(f),
            SendError::Shared(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Pooled(e) => e.source(),
            SendError::Shared(e) => e.source(),
        }
    }
}

/// TCP keep-alive probes on upstream sockets, so a dead peer is noticed on long streams.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

static CRYPTO: std::sync::Once = std::sync::Once::new();

/// Installs rustls' `ring` provider once (neither client brings a provider of its own).
pub fn install_crypto() {
    CRYPTO.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The TLS settings shared by every upstream: the platform's trust store,
/// loaded once rather than once per upstream.
fn tls_config() -> Result<rustls::ClientConfig, String> {
    static TLS: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    TLS.get_or_init(|| {
        install_crypto();
        use rustls_platform_verifier::ConfigVerifierExt;
        rustls::ClientConfig::with_platform_verifier()
            .map(Arc::new)
            .map_err(|e| format!("cannot load the system's TLS trust store: {e}"))
    })
    .as_ref()
    .map(|c| (**c).clone())
    .map_err(Clone::clone)
}

/// A client for one upstream, with its connect timeout.
pub fn build(connect_timeout: Duration) -> Result<HttpClient, String> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(TCP_KEEPALIVE));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config()?)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(super::pool::IDLE_TIMEOUT)
        .pool_max_idle_per_host(super::pool::MAX_IDLE)
        .build(Connector(https)))
}

/// The plain TCP stream of an `http://` upstream.
type Tcp = TokioIo<tokio::net::TcpStream>;

/// hyper-rustls' connector, with its TLS streams boxed ([`UpstreamIo`]).
#[derive(Clone)]
pub struct Connector(HttpsConnector<HttpConnector>);

/// An upstream connection's socket. hyper-rustls' `MaybeHttpsStream` holds
/// a rustls connection inline, so a plain `http://` connection (a
/// self-hosted model server, the benchmark's simulated provider) carried
/// ~1 KB of unused TLS state in its connection task for as long as it lived,
/// a held stream included. Boxed, a TLS connection pays one allocation when
/// it is made and a plain one only the size of its socket.
pub enum UpstreamIo {
    /// `http://`.
    Plain(Tcp),
    /// `https://` (boxed: see the type's doc).
    Tls(Box<MaybeHttpsStream<Tcp>>),
}

impl From<MaybeHttpsStream<Tcp>> for UpstreamIo {
    fn from(s: MaybeHttpsStream<Tcp>) -> Self {
        match s {
            MaybeHttpsStream::Http(tcp) => UpstreamIo::Plain(tcp),
            tls => UpstreamIo::Tls(Box::new(tls)),
        }
    }
}

type Connecting = <HttpsConnector<HttpConnector> as tower::Service<Uri>>::Future;
type ConnectError = <HttpsConnector<HttpConnector> as tower::Service<Uri>>::Error;

impl tower::Service<Uri> for Connector {
    type Response = UpstreamIo;
    type Error = ConnectError;
    type Future = MapOk<Connecting, fn(MaybeHttpsStream<Tcp>) -> UpstreamIo>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        self.0.call(dst).map_ok(UpstreamIo::from as fn(_) -> _)
    }
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        match self {
            UpstreamIo::Plain(s) => s.connected(),
            UpstreamIo::Tls(s) => s.connected(),
        }
    }
}

impl Read for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl Write for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Plain(s) => s.is_write_vectored(),
            UpstreamIo::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamIo::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }
}

/// The word for a failed send, as failover's metrics name it.
pub fn send_error_outcome(e: &SendError) -> Outcome {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return Outcome::Timeout;
            }
        }
        source = s.source();
    }
    if e.is_connect() {
        Outcome::ConnectError
    } else {
        Outcome::ConnectionError
    }
}

/// The whole cause of a failed send (`client error (Connect): invalid peer
/// certificate: UnknownIssuer`), for the debug log of a failed attempt: the
/// reason word alone does not tell a TLS problem from a refused connection.
pub fn describe(e: &SendError) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
