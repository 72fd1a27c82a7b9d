//! Listeners: accept loops, HTTP/1.1 + h2 connection handling, timeouts, graceful drain.
//!
//! Owns sockets and connection lifecycles, and the response body type. Must never contain
//! business logic: each listener is handed a `Handler` that turns a request into a response.

pub mod client;
pub mod response;
pub mod routes;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The body of every response: whole buffers (zero-copy `Bytes` from caches) today, streams
/// (exports) later.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// Turns requests into responses; one per listener.
pub trait Handler: Clone + Send + Sync + 'static {
    fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response<Body>> + Send;
}

/// Connection settings of one listener.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// A client must send its whole request head within this (slowloris defence); on HTTP/1.1
    /// it also bounds how long an idle keep-alive connection waits for its next request.
    pub header_read_timeout: Duration,
    /// How long in-flight requests may finish once shutdown begins.
    pub drain_timeout: Duration,
    /// Largest request head (HTTP/1.1 buffer; HTTP/2 header list); larger: 431 / reset.
    pub max_header_bytes: usize,
    /// Open connections beyond this are answered `503` and closed at once.
    pub max_connections: usize,
    /// HTTP/2 streams one connection may have open.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 keep-alive: ping an idle connection this often, close it when a ping is not
    /// answered within the same time.
    pub h2_keep_alive: Duration,
    /// Gauge of open connections and counter of refusals for this listener.
    pub open_connections: prometheus::IntGauge,
    pub refused_connections: prometheus::IntCounter,
    /// TLS on this listener (ALPN h2 and http/1.1); `None` is plain HTTP.
    pub tls: Option<Arc<tls::Tls>>,
    /// Accept HTTP/2 with prior knowledge on plain connections (h2c).
    pub h2c: bool,
}

/// The whole answer to a connection over `max_connections`: a complete HTTP/1.1 response, so
/// a client sees a clean 503 rather than a reset.
const OVERLOADED_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 94\r\n\r\n\
{\"error\":{\"code\":\"OVERLOADED\",\"message\":\"too many open connections\",\"status\":503,\"path\":\"*\"}}\n";

/// Decrements the open-connection gauge when a connection task ends, however it ends.
struct OpenConnection(prometheus::IntGauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// How long a connection accepted just before shutdown, with no request begun yet, gets for
/// its first request to begin: its head may already be in the socket (a client that sent it
/// as the node began draining must get an answer, not a reset).
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// Serves one connection until it ends; when `shutdown` turns true, lets the request in
/// progress finish and closes it (HTTP/2: GOAWAY). A connection whose first request has not
/// begun gets `grace` ([`FIRST_REQUEST_GRACE`], at most half the drain timeout) for it to
/// begin first. `_watcher` is held to the end, so the listener's drain waits for this
/// connection.
async fn drain<C>(
    conn: C,
    mut shutdown: watch::Receiver<bool>,
    started: Arc<tokio::sync::Notify>,
    grace: Duration,
    _watcher: hyper_util::server::graceful::Watcher,
) -> C::Output
where
    C: hyper_util::server::graceful::GracefulConnection,
{
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        out = conn.as_mut() => return out,
        () = async { let _ = shutdown.wait_for(|stop| *stop).await; } => {}
    }
    tokio::select! {
        out = conn.as_mut() => return out,
        () = started.notified() => {}
        () = tokio::time::sleep(grace) => {}
    }
    conn.as_mut().graceful_shutdown();
    conn.await
}

/// Serves `listener` until `shutdown` turns true, then stops accepting, lets open requests
/// finish within `drain_timeout`, and returns.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: H,
    settings: ConnectionSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(settings.h2_keep_alive)
        .keep_alive_timeout(settings.h2_keep_alive);
    let graceful = GracefulShutdown::new();

    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // EMFILE and friends: keep serving the connections we have.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                if settings.open_connections.get() >= settings.max_connections as i64 {
                    settings.refused_connections.inc();
                    if settings.tls.is_some() {
                        // A plaintext answer would be a protocol error to a TLS client.
                        drop(stream);
                        continue;
                    }
                    tokio::spawn(async move {
                        use tokio::io::AsyncWriteExt;
                        let mut stream = stream;
                        let write = stream.write_all(OVERLOADED_RESPONSE);
                        let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
                        let _ = stream.shutdown().await;
                    });
                    continue;
                }
                settings.open_connections.inc();
                let open = OpenConnection(settings.open_connections.clone());
                let handler = handler.clone();
                // Signalled when the connection's first request begins (see `drain`).
                let started = Arc::new(tokio::sync::Notify::new());
                let began = started.clone();
                let service = service_fn(move |req| {
                    let handler = handler.clone();
                    began.notify_one();
                    async move { Ok::<_, Infallible>(handler.handle(req, peer).await) }
                });
                // Held for the connection's life: the drain below waits for every one.
                let watcher = graceful.watcher();
                let stop = shutdown.clone();
                let grace = FIRST_REQUEST_GRACE.min(settings.drain_timeout / 2);
                let builder = builder.clone();
                let acceptor = settings.tls.as_ref().map(|tls| tls.acceptor());
                let handshake_timeout = settings.header_read_timeout;
                let h2c = settings.h2c;
                tokio::spawn(async move {
                    let _open = open;
                    let result = match acceptor {
                        None if h2c => {
                            // Until the first byte arrives hyper has no timer running (it is
                            // still choosing between HTTP/1 and HTTP/2): a silent client is
                            // cut off here.
                            let mut first = [0u8; 1];
                            let peek = stream.peek(&mut first);
                            match tokio::time::timeout(handshake_timeout, peek).await {
                                Ok(Ok(n)) if n > 0 => {}
                                _ => return,
                            }
                            let conn = builder.serve_connection(TokioIo::new(stream), service);
                            drain(conn.into_owned(), stop, started, grace, watcher).await
                        }
                        None => {
                            let http1 = builder.http1_only();
                            let conn = http1.serve_connection(TokioIo::new(stream), service);
                            drain(conn.into_owned(), stop, started, grace, watcher).await
                        }
                        Some(acceptor) => {
                            // A handshake is a request head too: the same deadline.
                            let handshake = acceptor.accept(stream);
                            let handshake = tokio::time::timeout(handshake_timeout, handshake);
                            let tls = match handshake.await {
                                Ok(Ok(tls)) => tls,
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            };
                            let conn = builder.serve_connection(TokioIo::new(tls), service);
                            drain(conn.into_owned(), stop, started, grace, watcher).await
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            // The watch guard is not Send: drop it inside the branch future.
            () = async { let _ = shutdown.wait_for(|stop| *stop).await; } => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(settings.drain_timeout) => {
            tracing::warn!("drain deadline passed; closing remaining connections");
        }
    }
}
