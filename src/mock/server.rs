//! Accept loop and handles. Connections are served by hyper directly (not
//! `axum::serve`) so that `kill()` can drop every open connection at once,
//! like a crashed provider.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderName, Request, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tower::ServiceExt;

use super::state::Shared;
use super::{Fault, FaultScope, MockSettings, MockStats, RecordedRequest};

/// Response header naming the instance that answered.
static MOCK_NAME: HeaderName = HeaderName::from_static("x-mock-name");

/// Owns the instance: when the last handle goes, the instance is killed, so
/// tests that forget a mock do not leak its tasks.
struct Owner {
    shared: Arc<Shared>,
    addr: SocketAddr,
    listener: Slot,
}

/// The listening socket, shared with the accept loop so that `kill()` can
/// close it synchronously: connects right after `kill()` are refused.
type Slot = Arc<Mutex<Option<TcpListener>>>;

impl Owner {
    fn kill(&self) {
        drop(
            self.listener
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        self.shared.shutdown.cancel();
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Cheap, cloneable control of a running mock (stats, faults, kill), for
/// code that must not own the server. The mock is killed when the last
/// `MockHandle`/`MockServer` of it is dropped.
#[derive(Clone)]
pub struct MockHandle {
    owner: Arc<Owner>,
}

/// A running simulated provider; see the module docs. Dropping it (and
/// every [`MockHandle`]) kills it.
#[derive(Clone)]
pub struct MockServer {
    handle: MockHandle,
}

impl MockServer {
    /// Serves on `listener` (already bound, so callers choose the address
    /// and know the port before anything runs).
    pub async fn spawn(listener: TcpListener, settings: MockSettings) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(settings));
        let router = super::routes::router(Arc::clone(&shared));
        let listener = Arc::new(Mutex::new(Some(listener)));
        tokio::spawn(accept_loop(
            Arc::clone(&listener),
            router,
            Arc::clone(&shared),
        ));
        let owner = Arc::new(Owner {
            shared,
            addr,
            listener,
        });
        Ok(Self {
            handle: MockHandle { owner },
        })
    }

    /// Serves on a free port of 127.0.0.1; the usual choice in tests.
    pub async fn start(settings: MockSettings) -> std::io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        Self::spawn(listener, settings).await
    }

    /// Listening address.
    pub fn addr(&self) -> SocketAddr {
        self.handle.addr()
    }

    /// `http://ADDR/v1`, ready for an upstream `base_url`.
    pub fn base_url(&self) -> String {
        self.handle.base_url()
    }

    /// See [`MockHandle::set_fault`].
    pub fn set_fault(&self, scope: FaultScope, fault: Option<Fault>) {
        self.handle.set_fault(scope, fault);
    }

    /// See [`MockHandle::set_fault_times`].
    pub fn set_fault_times(&self, scope: FaultScope, fault: Fault, times: u32) {
        self.handle.set_fault_times(scope, fault, times);
    }

    /// See [`MockHandle::stats`].
    pub fn stats(&self) -> MockStats {
        self.handle.stats()
    }

    /// See [`MockHandle::last_request`].
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.handle.last_request()
    }

    /// See [`MockHandle::kill`].
    pub fn kill(&self) {
        self.handle.kill();
    }

    /// A cheap handle sharing this instance.
    pub fn handle(&self) -> MockHandle {
        self.handle.clone()
    }
}

impl MockHandle {
    /// Listening address.
    pub fn addr(&self) -> SocketAddr {
        self.owner.addr
    }

    /// `http://ADDR/v1`, ready for an upstream `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.owner.addr)
    }

    /// Sets (or clears, with `None`) the fault of every later request in
    /// `scope`, instance-wide. A narrower scope wins over `All`; an
    /// `x-mock-fault` request header wins over both.
    pub fn set_fault(&self, scope: FaultScope, fault: Option<Fault>) {
        self.owner.shared.set_fault(scope, fault);
    }

    /// Injects `fault` for the next `times` requests of `scope` only (then
    /// the instance behaves again): "one 500, then success".
    pub fn set_fault_times(&self, scope: FaultScope, fault: Fault, times: u32) {
        self.owner
            .shared
            .set_fault_times(scope, Some(fault), Some(times));
    }

    /// Snapshot of the counters.
    pub fn stats(&self) -> MockStats {
        self.owner.shared.stats()
    }

    /// Path, headers and body of the most recent POST.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.owner.shared.last_request()
    }

    /// Simulates a crash: stops accepting (later connects are refused) and
    /// drops every open connection, mid-response or not. Irreversible.
    pub fn kill(&self) {
        self.owner.kill();
    }
}

/// Accepts until killed; each connection is raced against the kill switch.
async fn accept_loop(listener: Slot, router: Router, shared: Arc<Shared>) {
    let token = shared.shutdown.clone();
    let accept = || {
        std::future::poll_fn(|cx| {
            let slot = listener.lock().unwrap_or_else(|e| e.into_inner());
            match slot.as_ref() {
                Some(l) => l.poll_accept(cx).map(Some),
                None => Poll::Ready(None),
            }
        })
    };
    loop {
        let accepted = tokio::select! {
            biased;
            () = token.cancelled() => break,
            a = accept() => a,
        };
        let Some(accepted) = accepted else { break };
        let Ok((stream, _)) = accepted else {
            // Out of file descriptors and the like: back off, keep serving.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let router = router.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| serve(req, &router, &shared));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                biased;
                () = token.cancelled() => {}
                _ = conn => {}
            }
        });
    }
}

/// Counts the request, routes it and tags the response with the instance name.
fn serve(
    req: Request<Incoming>,
    router: &Router,
    shared: &Arc<Shared>,
) -> impl std::future::Future<Output = Result<Response<Body>, Infallible>> + Send + 'static {
    shared.counters.requests.fetch_add(1, Relaxed);
    let name = shared.name_header.clone();
    let fut = router.clone().oneshot(req);
    async move {
        let mut resp = fut.await?;
        resp.headers_mut().insert(MOCK_NAME.clone(), name);
        Ok(resp)
    }
}
