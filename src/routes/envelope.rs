//! The request envelope every route of every listener runs in, written once: the request
//! id, the client address, timing, the error rendering, the rate-limit headers, metrics and
//! the access log line.

use std::net::{IpAddr, SocketAddr};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::header::{CACHE_CONTROL, CONTENT_LENGTH};
use http::{HeaderName, HeaderValue, Method, Request, Response};
use hyper::body::Incoming;

use crate::error::{ErrorCode, HttpError};
use crate::ratelimit::RateState;
use crate::server::{Body, client::client_ip, response};
use crate::state::AppState;

/// What a route answered, with what the envelope needs to know about it.
pub(super) struct Answer {
    pub(crate) result: Result<Response<Body>, HttpError>,
    /// The route's metrics label.
    pub(crate) label: &'static str,
    /// The `X-Cache` outcome of an image answer.
    pub(crate) cache: Option<&'static str>,
    /// The caller's rate-limit state, sent as `X-RateLimit-*` headers.
    pub(crate) rate: Option<RateState>,
    /// Per account and credential: `no-store` on every answer, errors included.
    pub(crate) private: bool,
    /// A console answer: the console's security headers (`console::security_headers`),
    /// errors included.
    pub(crate) console: bool,
}

impl Answer {
    pub(super) fn new(result: Result<Response<Body>, HttpError>, label: &'static str) -> Answer {
        Answer {
            result,
            label,
            cache: None,
            rate: None,
            private: false,
            console: false,
        }
    }
}

/// One request's envelope: opened before the route runs ([`Envelope::open`]), closed with the
/// route's [`Answer`] ([`Envelope::close`]). Two calls rather than a wrapper around the route's
/// future, so the route's (large) future is not moved into another one on the hit path.
pub(super) struct Envelope {
    started: Instant,
    peer: SocketAddr,
    /// The client's address (see [`client_ip`]).
    pub(crate) client: IpAddr,
    request_id: String,
    /// The request's path, owned so the route can borrow it while the request moves on.
    pub(crate) path: String,
    method: Method,
}

impl Envelope {
    pub(super) fn open(state: &AppState, req: &Request<Incoming>, peer: SocketAddr) -> Envelope {
        Envelope {
            started: Instant::now(),
            peer,
            client: client_ip(peer, req.headers(), &state.config.server.trusted_proxies),
            request_id: request_id(req.headers()),
            path: req.uri().path().to_string(),
            method: req.method().clone(),
        }
    }

    /// The response for `answer`: errors rendered, envelope headers added, metrics and the
    /// access log line written.
    pub(super) fn close(self, state: &AppState, answer: Answer) -> Response<Body> {
        let head_only = self.method == Method::HEAD;
        let mut res = finish(state, answer.result, &self.path, head_only);
        let h = res.headers_mut();
        if answer.private {
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        if answer.console {
            crate::console::security_headers(h);
        }
        if let Some(rate) = answer.rate {
            h.insert("x-ratelimit-limit", HeaderValue::from(rate.limit));
            h.insert("x-ratelimit-remaining", HeaderValue::from(rate.remaining));
            h.insert("x-ratelimit-reset", HeaderValue::from(rate.reset));
        }
        if let Ok(v) = HeaderValue::from_str(&self.request_id) {
            h.insert(X_REQUEST_ID, v);
        }
        record(state, &self, answer.label, answer.cache, &res);
        res
    }
}

fn finish(
    state: &AppState,
    res: Result<Response<Body>, HttpError>,
    path: &str,
    head_only: bool,
) -> Response<Body> {
    match res {
        Ok(res) => res,
        Err(e) => {
            // Our faults are logged with their detail; load shedding (503) is expected under
            // overload and counted in metrics: a line per refusal would turn an overload into
            // a logging storm that slows the node further.
            match e.code {
                ErrorCode::Internal => {
                    tracing::error!(path = log_path(path), error = %e, "request failed");
                }
                ErrorCode::OriginUnavailable
                | ErrorCode::OriginTimeout
                | ErrorCode::TransformTimeout => {
                    tracing::warn!(path = log_path(path), error = %e, "request failed");
                }
                _ => {}
            }
            response::error(&e, path, head_only, state.config.cache.not_found_max_age)
        }
    }
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The client's `X-Request-Id` when it is a sane token (1–128 visible ASCII characters, so
/// it cannot forge log lines), else a fresh one.
fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get(X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(fresh_request_id, str::to_string)
}

/// 16 hex digits, unique within the process and not guessable from outside it: a counter
/// through splitmix64 (a bijection on u64) offset by a random seed drawn once. Ids only
/// correlate log lines with answers, so they need no system call per request.
fn fresh_request_id() -> String {
    static SEED: LazyLock<u64> = LazyLock::new(|| {
        crate::auth::random_hex(8)
            .ok()
            .and_then(|h| u64::from_str_radix(&h, 16).ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)
            })
    });
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut z = SEED.wrapping_add(
        COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15),
    );
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    format!("{:016x}", z ^ (z >> 31))
}

/// The longest path an access-log line carries, in bytes: the request head may be 16 KiB.
const LOG_PATH_MAX: usize = 512;

/// `path` cut to at most [`LOG_PATH_MAX`] bytes, on a character boundary.
fn log_path(path: &str) -> &str {
    &path[..path.floor_char_boundary(LOG_PATH_MAX)]
}

/// Metrics and the access log line. The query string is left out of the log: it can carry
/// signatures; the path is cut to [`LOG_PATH_MAX`] bytes. `peer` is the TCP peer, `client`
/// the address it forwards for (the same unless the peer is a trusted proxy).
fn record(
    state: &AppState,
    envelope: &Envelope,
    route: &'static str,
    cache: Option<&'static str>,
    res: &Response<Body>,
) {
    let Envelope {
        started,
        peer,
        client,
        ref request_id,
        ref path,
        ref method,
    } = *envelope;
    let elapsed = started.elapsed();
    let status = res.status();
    let bytes: u64 = if method == Method::HEAD {
        0
    } else {
        res.headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    state
        .metrics
        .http
        .observe(route, status, cache, elapsed.as_secs_f64(), bytes);
    tracing::info!(
        target: "imgnode::access",
        %method,
        path = log_path(path),
        route,
        status = status.as_u16(),
        bytes,
        cache = cache.unwrap_or("-"),
        ms = elapsed.as_secs_f64() * 1000.0,
        %peer,
        %client,
        request_id,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_request_ids_are_distinct_hex() {
        let ids: std::collections::HashSet<String> =
            (0..10_000).map(|_| fresh_request_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(
            ids.iter()
                .all(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        );
    }

    #[test]
    fn access_log_paths_are_cut_to_512_bytes_on_a_char_boundary() {
        assert_eq!(log_path("/i/acme/a.jpg"), "/i/acme/a.jpg");
        let exact = "a".repeat(LOG_PATH_MAX);
        assert_eq!(log_path(&exact), exact);
        let long = "b".repeat(LOG_PATH_MAX + 100);
        assert_eq!(log_path(&long).len(), LOG_PATH_MAX);
        // 511 ASCII bytes then a 3-byte character straddling the limit: cut before it.
        let straddling = format!("{}€€", "c".repeat(LOG_PATH_MAX - 1));
        assert_eq!(log_path(&straddling), &straddling[..LOG_PATH_MAX - 1]);
        let multi = "é".repeat(LOG_PATH_MAX);
        assert_eq!(log_path(&multi).len(), LOG_PATH_MAX);
        assert!(log_path(&multi).chars().all(|c| c == 'é'));
    }
}
