//! Listeners: accept loops, HTTP/1.1 + h2 connection handling, timeouts, graceful drain.
//!
//! Owns sockets and connection lifecycles, and the response body type. Must never contain
//! business logic: each listener is handed a `Handler` that turns a request into a response.

pub(crate) mod client;
pub(crate) mod response;
pub mod tls;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
pub(crate) type Body = UnsyncBoxBody<Bytes, std::io::Error>;

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

pub(crate) fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// Turns requests into responses; one per listener.
pub(crate) trait Handler: Clone + Send + Sync + 'static {
    fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response<Body>> + Send;
}

/// Connection settings of one listener.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionSettings {
    /// A client must send its whole request head within this (slowloris defence); on HTTP/1.1
    /// it also bounds how long an idle keep-alive connection waits for its next request.
    pub(crate) header_read_timeout: Duration,
    /// How long in-flight requests may finish once shutdown begins.
    pub(crate) drain_timeout: Duration,
    /// Largest request head (HTTP/1.1 buffer; HTTP/2 header list); larger: 431 / reset.
    pub(crate) max_header_bytes: usize,
    /// Open connections beyond this are answered `503` and closed at once.
    pub(crate) max_connections: usize,
    /// HTTP/2 streams one connection may have open.
    pub(crate) h2_max_concurrent_streams: u32,
    /// HTTP/2 keep-alive: ping an idle connection this often, close it when a ping is not
    /// answered within the same time.
    pub(crate) h2_keep_alive: Duration,
    /// An HTTP/2 connection with no request in flight for this long is shut down gracefully
    /// (GOAWAY); one that is still open another such period later is closed.
    pub(crate) h2_idle_timeout: Duration,
    /// Open connections per client network (`ratelimit::network_of`) beyond which a new one
    /// is refused like one over `max_connections`; 0 is no limit. `trusted_proxies` are
    /// exempt.
    pub(crate) max_connections_per_ip: usize,
    pub(crate) trusted_proxies: client::TrustedProxies,
    /// Gauge of open connections and counters of refusals (at `max_connections`, at
    /// `max_connections_per_ip`) for this listener.
    pub(crate) open_connections: prometheus::IntGauge,
    pub(crate) refused_connections: prometheus::IntCounter,
    pub(crate) refused_per_ip: prometheus::IntCounter,
    /// TLS on this listener (ALPN h2 and http/1.1); `None` is plain HTTP.
    pub(crate) tls: Option<Arc<tls::Tls>>,
    /// Accept HTTP/2 with prior knowledge on plain connections (h2c).
    pub(crate) h2c: bool,
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

/// Open connections per client network on one listener.
#[derive(Default, Clone)]
struct PerIp(Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>);

impl PerIp {
    /// Counts one more connection from `network` unless it already has `max`.
    fn acquire(&self, network: IpAddr, max: usize) -> Option<PerIpSlot> {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(network).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(PerIpSlot {
            counts: self.clone(),
            network,
        })
    }
}

/// One connection counted in [`PerIp`]; uncounted when the connection task ends.
struct PerIpSlot {
    counts: PerIp,
    network: IpAddr,
}

impl Drop for PerIpSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.network) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.network);
            }
        }
    }
}

/// Requests in flight on one connection (from the request's start until its response body
/// is dropped), watched by [`drain`] for the HTTP/2 idle timeout.
struct Activity {
    in_flight: watch::Sender<usize>,
    /// Set once a request shows the connection is HTTP/1, whose idle time
    /// `header_read_timeout` already bounds.
    http1: AtomicBool,
}

impl Activity {
    fn new(http1: bool) -> Arc<Activity> {
        Arc::new(Activity {
            in_flight: watch::Sender::new(0),
            http1: AtomicBool::new(http1),
        })
    }

    /// Counts an HTTP/2 request until its response is done with. HTTP/1 requests are not
    /// counted (the connection never has the HTTP/2 idle timeout, and the hot path pays
    /// nothing for it); the first one tells [`drain`] so.
    fn begin(self: &Arc<Self>, version: http::Version) -> Option<InFlight> {
        if version < http::Version::HTTP_2 {
            if !self.http1.swap(true, Ordering::Relaxed) {
                self.in_flight.send_modify(|_| {});
            }
            return None;
        }
        self.in_flight.send_modify(|n| *n += 1);
        Some(InFlight(self.clone()))
    }
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// The response, with `in_flight` held until its body is done with (sent or dropped).
fn holding(res: Response<Body>, in_flight: InFlight) -> Response<Body> {
    res.map(|body| {
        body.map_frame(move |frame| {
            let _ = &in_flight;
            frame
        })
        .boxed_unsync()
    })
}

/// The whole refusal of a connection over a limit: the 503 on plain HTTP, a close on TLS.
fn refuse(stream: tokio::net::TcpStream, tls: bool) {
    if tls {
        // A plaintext answer would be a protocol error to a TLS client.
        drop(stream);
        return;
    }
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut stream = stream;
        let write = stream.write_all(OVERLOADED_RESPONSE);
        let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
        let _ = stream.shutdown().await;
    });
}

/// How long a connection accepted just before shutdown, with no request begun yet, gets for
/// its first request to begin: its head may already be in the socket (a client that sent it
/// as the node began draining must get an answer, not a reset).
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// Serves one connection until it ends; when `shutdown` turns true, lets the request in
/// progress finish and closes it (HTTP/2: GOAWAY). A connection whose first request has not
/// begun gets `grace` ([`FIRST_REQUEST_GRACE`], at most half the drain timeout) for it to
/// begin first. A connection not known to be HTTP/1 with nothing in flight for `idle` is shut
/// down the same way, and closed if it is still open (and still idle) `idle` later: hyper's
/// HTTP/2 server has no idle timeout of its own, and a client answering its pings would hold
/// the connection forever. `_watcher` is held to the end, so the listener's drain waits for
/// this connection. `None`: closed without waiting for the connection any longer.
async fn drain<C>(
    conn: C,
    mut shutdown: watch::Receiver<bool>,
    started: Arc<tokio::sync::Notify>,
    grace: Duration,
    activity: Arc<Activity>,
    idle: Duration,
    _watcher: hyper_util::server::graceful::Watcher,
) -> Option<C::Output>
where
    C: hyper_util::server::graceful::GracefulConnection,
{
    let mut conn = std::pin::pin!(conn);
    let mut in_flight = activity.in_flight.subscribe();
    let mut idle_shutdown = false;
    loop {
        let is_idle =
            *in_flight.borrow_and_update() == 0 && !activity.http1.load(Ordering::Relaxed);
        tokio::select! {
            out = conn.as_mut() => return Some(out),
            () = async { let _ = shutdown.wait_for(|stop| *stop).await; } => break,
            // The sender lives in `activity`, held here: this never ends in an error.
            _ = in_flight.changed() => {}
            () = tokio::time::sleep(idle), if is_idle => {
                if idle_shutdown {
                    return None;
                }
                conn.as_mut().graceful_shutdown();
                idle_shutdown = true;
            }
        }
    }
    if !idle_shutdown {
        tokio::select! {
            out = conn.as_mut() => return Some(out),
            () = started.notified() => {}
            () = tokio::time::sleep(grace) => {}
        }
        conn.as_mut().graceful_shutdown();
    }
    Some(conn.await)
}

/// Serves `listener` until `shutdown` turns true, then stops accepting, lets open requests
/// finish within `drain_timeout`, and returns.
pub(crate) async fn serve<H: Handler>(
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
    let per_ip = PerIp::default();

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
                    refuse(stream, settings.tls.is_some());
                    continue;
                }
                // Counted per TCP peer: a proxy's addresses carry many clients.
                let per_ip_slot = if settings.max_connections_per_ip == 0
                    || settings.trusted_proxies.contains(peer.ip())
                {
                    None
                } else {
                    let network = crate::ratelimit::network_of(peer.ip());
                    match per_ip.acquire(network, settings.max_connections_per_ip) {
                        Some(slot) => Some(slot),
                        None => {
                            settings.refused_per_ip.inc();
                            refuse(stream, settings.tls.is_some());
                            continue;
                        }
                    }
                };
                settings.open_connections.inc();
                let open = OpenConnection(settings.open_connections.clone());
                let handler = handler.clone();
                // Signalled when the connection's first request begins (see `drain`).
                let started = Arc::new(tokio::sync::Notify::new());
                let began = started.clone();
                // Only HTTP/1 is served without h2c or TLS: no HTTP/2 idle timeout there.
                let activity = Activity::new(settings.tls.is_none() && !settings.h2c);
                let tracked = activity.clone();
                // Only the first request needs to tell (a stored permit stays stored).
                let first = AtomicBool::new(true);
                let service = service_fn(move |req: Request<Incoming>| {
                    let handler = handler.clone();
                    if first.swap(false, Ordering::Relaxed) {
                        began.notify_one();
                    }
                    let in_flight = tracked.begin(req.version());
                    async move {
                        let res = handler.handle(req, peer).await;
                        Ok::<_, Infallible>(match in_flight {
                            Some(in_flight) => holding(res, in_flight),
                            None => res,
                        })
                    }
                });
                // Held for the connection's life: the drain below waits for every one.
                let watcher = graceful.watcher();
                let stop = shutdown.clone();
                let grace = FIRST_REQUEST_GRACE.min(settings.drain_timeout / 2);
                let builder = builder.clone();
                let acceptor = settings.tls.as_ref().map(|tls| tls.acceptor());
                let handshake_timeout = settings.header_read_timeout;
                let h2c = settings.h2c;
                let idle = settings.h2_idle_timeout;
                tokio::spawn(async move {
                    let _open = open;
                    let _per_ip_slot = per_ip_slot;
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
                            drain(conn.into_owned(), stop, started, grace, activity, idle, watcher).await
                        }
                        None => {
                            let http1 = builder.http1_only();
                            let conn = http1.serve_connection(TokioIo::new(stream), service);
                            drain(conn.into_owned(), stop, started, grace, activity, idle, watcher).await
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
                            drain(conn.into_owned(), stop, started, grace, activity, idle, watcher).await
                        }
                    };
                    match result {
                        Some(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                        None => tracing::debug!(%peer, "idle connection closed"),
                        Some(Ok(())) => {}
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
