//! Routing: a request becomes a `Route` before any handler runs; each listener has its own
//! table. Also the one place that records request metrics and writes the access log line.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use http::header::{CACHE_CONTROL, CONTENT_LENGTH, HOST};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{Body, Handler, response};
use crate::delivery::{self, DeliveryRequest};
use crate::error::{ErrorCode, HttpError};
use crate::state::AppState;

/// Routes of the public listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicRoute<'a> {
    Health,
    /// The tenant API under `/api/v1/`.
    Api,
    /// `/i/{account}/{path}.{ext}`, or the bare form on a CDN host; holds what follows the
    /// prefix.
    Image(&'a str),
    NotFound,
}

impl PublicRoute<'_> {
    fn label(self) -> &'static str {
        match self {
            PublicRoute::Health => "health",
            PublicRoute::Api => "api",
            PublicRoute::Image(_) => "image",
            PublicRoute::NotFound => "not_found",
        }
    }
}

pub fn public_route<'a>(path: &'a str, host: Option<&str>, state: &AppState) -> PublicRoute<'a> {
    if path == "/health" {
        return PublicRoute::Health;
    }
    if path.starts_with("/api/v1/") {
        return PublicRoute::Api;
    }
    if let Some(rest) = path.strip_prefix("/i/") {
        return PublicRoute::Image(rest);
    }
    let d = &state.config.delivery;
    let bare = d.bare_paths
        || host.is_some_and(|h| {
            let h = h.split(':').next().unwrap_or(h);
            d.cdn_hosts.iter().any(|c| c.eq_ignore_ascii_case(h))
        });
    if bare {
        // Top-level routes are matched above, and account names that could collide with
        // them are refused at creation (`store::validate_account_name`).
        let rest = path.strip_prefix('/').unwrap_or(path);
        if rest.contains('/') {
            return PublicRoute::Image(rest);
        }
    }
    PublicRoute::NotFound
}

#[derive(Clone)]
pub struct PublicHandler(pub Arc<AppState>);

impl Handler for PublicHandler {
    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let started = Instant::now();
        let state = &self.0;
        let client =
            super::client::client_ip(peer, req.headers(), &state.config.server.trusted_proxies);
        let request_id = request_id(req.headers());
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        let host = req
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().host())
            .map(str::to_string);
        let route = public_route(&path, host.as_deref(), state);
        let head_only = method == Method::HEAD;
        let get_like = method == Method::GET || head_only;

        let mut rate = None;
        let (res, cache, label) = match route {
            PublicRoute::Api => {
                let api = crate::api::ApiRoute::parse(&method, &path);
                let label = api.label();
                let outcome = crate::api::handle(state, api, req, client).await;
                rate = outcome.rate;
                (outcome.result, None, label)
            }
            _ if !get_like => (
                Err(HttpError::new(
                    ErrorCode::MethodNotAllowed,
                    "use GET or HEAD",
                )),
                None,
                route.label(),
            ),
            PublicRoute::Health => (
                Ok(response::json(
                    StatusCode::OK,
                    &serde_json::json!({"status": "ok", "timestamp": rfc3339_now()}),
                )),
                None,
                route.label(),
            ),
            PublicRoute::Image(target) => {
                let r = delivery::handle(
                    &self.0,
                    DeliveryRequest {
                        target,
                        query: req.uri().query().unwrap_or(""),
                        method: req.method(),
                        headers: req.headers(),
                        client,
                    },
                )
                .await;
                match r {
                    Ok((res, cache)) => (Ok(res), Some(cache.as_str()), route.label()),
                    Err(e) => (Err(e), None, route.label()),
                }
            }
            PublicRoute::NotFound => (
                Err(HttpError::new(ErrorCode::NotFound, "no such route")),
                None,
                route.label(),
            ),
        };
        let mut res = finish(state, res, &path, head_only);
        if route == PublicRoute::Api {
            // Tenant API answers are per account and credential: never stored by a shared
            // cache, errors included (the brief public caching of 404s is for image URLs).
            res.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        if let Some(rate) = rate {
            let h = res.headers_mut();
            h.insert("x-ratelimit-limit", HeaderValue::from(rate.limit));
            h.insert("x-ratelimit-remaining", HeaderValue::from(rate.remaining));
            h.insert("x-ratelimit-reset", HeaderValue::from(rate.reset));
        }
        echo_request_id(&mut res, &request_id);
        record(
            state,
            &method,
            &path,
            peer,
            client,
            label,
            cache,
            &res,
            started,
            &request_id,
        );
        res
    }
}

#[derive(Clone)]
pub struct OpsHandler(pub Arc<AppState>);

impl Handler for OpsHandler {
    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let started = Instant::now();
        let state = &self.0;
        let client =
            super::client::client_ip(peer, req.headers(), &state.config.server.trusted_proxies);
        let request_id = request_id(req.headers());
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        let head_only = method == Method::HEAD;
        let (res, label) = match crate::admin::OpsRoute::parse(&method, &path) {
            Ok(route) => {
                let label = route.label();
                (crate::admin::handle(state, route, req, client).await, label)
            }
            Err(e) => (Err(e), "ops_bad_method"),
        };
        let mut res = finish(state, res, &path, head_only);
        echo_request_id(&mut res, &request_id);
        record(
            state,
            &method,
            &path,
            peer,
            client,
            label,
            None,
            &res,
            started,
            &request_id,
        );
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

fn echo_request_id(res: &mut Response<Body>, id: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        res.headers_mut().insert(X_REQUEST_ID, v);
    }
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
#[expect(clippy::too_many_arguments, reason = "one access-log line's fields")]
fn record(
    state: &AppState,
    method: &Method,
    path: &str,
    peer: SocketAddr,
    client: IpAddr,
    route: &'static str,
    cache: Option<&'static str>,
    res: &Response<Body>,
    started: Instant,
    request_id: &str,
) {
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

fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
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
