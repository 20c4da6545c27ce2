//! The accept loop of both listeners: HTTP/1.1 keep-alive, `TCP_NODELAY`, a
//! header read timeout (a client that trickles its headers cannot hold a
//! connection forever), a write timeout (a client that stops reading a stream
//! is disconnected, which drops its upstream request), upgrades (WebSocket),
//! and graceful shutdown: on the signal, idle connections close and requests
//! in flight get up to `Limits::drain` to finish.

use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

/// Connection limits of a listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest wait for the request headers of a connection.
    pub header_read_timeout: Duration,
    /// Longest time one write to a client may stay blocked (the client reads nothing).
    pub write_timeout: Duration,
    /// Longest wait for requests in flight at shutdown.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(60),
            drain: Duration::from_secs(30),
        }
    }
}

/// What a listener serves: a clonable tower service of axum requests that
/// always answers (errors are answers).
pub trait HttpService:
    tower::Service<
        axum::extract::Request,
        Response = axum::response::Response,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> HttpService for S where
    S: tower::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// Serves `router` on `listener` until `shutdown` turns true, within `limits`.
pub async fn serve_with<S: HttpService>(
    listener: TcpListener,
    router: S,
    mut shutdown: watch::Receiver<bool>,
    limits: Limits,
) {
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = stopped(&mut shutdown) => break,
            a = listener.accept() => a,
        };
        while conns.try_join_next().is_some() {}
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        conns.spawn(connection(tcp, router.clone(), shutdown.clone(), limits));
    }
    drop(listener);
    let _ = tokio::time::timeout(limits.drain + Duration::from_secs(1), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
}

async fn connection<S: HttpService>(
    tcp: tokio::net::TcpStream,
    router: S,
    mut shutdown: watch::Receiver<bool>,
    limits: Limits,
) {
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        router.clone().oneshot(req.map(Body::new))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        .serve_connection(
            TokioIo::new(with_write_timeout(tcp, limits.write_timeout)),
            svc,
        )
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        biased;
        _ = conn.as_mut() => {}
        () = stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(limits.drain, conn).await;
        }
    }
}

/// Resolves once shutdown was asked for (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|v| *v).await;
}

fn with_write_timeout(
    tcp: tokio::net::TcpStream,
    timeout: Duration,
) -> std::pin::Pin<Box<tokio_io_timeout::TimeoutStream<tokio::net::TcpStream>>> {
    let mut io = tokio_io_timeout::TimeoutStream::new(tcp);
    io.set_write_timeout(Some(timeout));
    Box::pin(io)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use axum::routing::get;
    use axum::Router;
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// Sets its flag when the response body is dropped (the connection is gone).
    struct Dropped(Arc<AtomicBool>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_disconnected() {
        let gone = Arc::new(AtomicBool::new(false));
        let flag = gone.clone();
        let router = Router::new().route(
            "/",
            get(move || {
                let guard = Dropped(flag.clone());
                let chunks = futures_util::stream::repeat_with(move || {
                    let _ = &guard;
                    Ok::<_, std::convert::Infallible>(bytes::Bytes::from(vec![b'x'; 64 * 1024]))
                });
                async move { Body::from_stream(chunks) }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_stop, rx) = watch::channel(false);
        let limits = Limits {
            write_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        tokio::spawn(serve_with(listener, router, rx, limits));
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        // Never read: the server's writes block once the socket buffers are full.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !gone.load(Ordering::SeqCst) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the stalled client was never dropped"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(client);
    }
}
