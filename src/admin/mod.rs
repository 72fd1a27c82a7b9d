//! The ops listener: `/metrics`, `/live`, `/ready`, and the operator API under `/admin/v1`.
//!
//! Each route declares its auth level in the route table below. Operator routes need
//! `Authorization: Bearer <operator token>` (read from `admin.token_file`; without one the
//! operator API is off). Must never run on the public listener: it exposes internals and
//! operator powers.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;

use crate::app::AppState;
use crate::error::{ErrorCode, HttpError};
use crate::server::{Body, full, response};

/// Largest operator request body.
const MAX_BODY: usize = 64 * 1024;

/// Routes of the ops listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpsRoute {
    Metrics,
    Live,
    Ready,
    Purge,
    NotFound,
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// Scrapers and probes: the listener is private.
    None,
    Operator,
}

impl OpsRoute {
    pub fn parse(method: &Method, path: &str) -> Result<OpsRoute, HttpError> {
        let (route, allowed) = match path {
            "/metrics" => (OpsRoute::Metrics, Method::GET),
            "/live" => (OpsRoute::Live, Method::GET),
            "/ready" => (OpsRoute::Ready, Method::GET),
            "/admin/v1/purge" => (OpsRoute::Purge, Method::POST),
            _ => return Ok(OpsRoute::NotFound),
        };
        let head_ok = allowed == Method::GET && method == Method::HEAD;
        if method != allowed && !head_ok {
            return Err(HttpError::new(
                ErrorCode::MethodNotAllowed,
                format!("use {allowed}"),
            ));
        }
        Ok(route)
    }

    fn auth(self) -> Auth {
        match self {
            OpsRoute::Metrics | OpsRoute::Live | OpsRoute::Ready | OpsRoute::NotFound => Auth::None,
            OpsRoute::Purge => Auth::Operator,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            OpsRoute::Metrics => "metrics",
            OpsRoute::Live => "live",
            OpsRoute::Ready => "ready",
            OpsRoute::Purge => "admin_purge",
            OpsRoute::NotFound => "ops_not_found",
        }
    }
}

/// Answers one ops request; errors come back for the router to render.
pub async fn handle(
    state: &AppState,
    route: OpsRoute,
    req: Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
    if route.auth() == Auth::Operator {
        authorize_operator(state, req.headers())?;
    }
    match route {
        OpsRoute::Metrics => {
            let mut res = Response::new(full(state.metrics.render_text()));
            res.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(res)
        }
        OpsRoute::Live => Ok(response::json(
            StatusCode::OK,
            &serde_json::json!({"status": "ok"}),
        )),
        OpsRoute::Ready => {
            let ready = state.ready.load(Ordering::Acquire);
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            Ok(response::json(
                status,
                &serde_json::json!({"status": if ready { "ready" } else { "starting" }}),
            ))
        }
        OpsRoute::Purge => purge(state, read_json(req).await?).await,
        OpsRoute::NotFound => Err(HttpError::new(ErrorCode::NotFound, "no such route")),
    }
}

/// `POST /admin/v1/purge`: `{"account": "a", "image_id": "…"}` (one image),
/// `{"account": "a"}` (every image of the account) or `{"all": true}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    account: Option<String>,
    image_id: Option<String>,
    #[serde(default)]
    all: bool,
}

async fn purge(state: &AppState, req: PurgeRequest) -> Result<Response<Body>, HttpError> {
    let caches = &state.caches;
    let purged = match (req.all, req.account, req.image_id) {
        (true, None, None) => {
            caches.purge_all(&state.store).await?;
            serde_json::json!({"scope": "all"})
        }
        (false, Some(account), Some(id)) => {
            let image = state
                .store
                .image(&account, &id)
                .await?
                .ok_or_else(|| HttpError::new(ErrorCode::NotFound, "no such image"))?;
            caches
                .purge_hashes(&state.store, std::slice::from_ref(&image.hash))
                .await?;
            serde_json::json!({"scope": "image", "account": account, "image_id": id})
        }
        (false, Some(account), None) => {
            if state.store.account(&account).await?.is_none() {
                return Err(HttpError::new(ErrorCode::NotFound, "no such account"));
            }
            let images = caches.purge_account(&state.store, &account).await?;
            serde_json::json!({"scope": "account", "account": account, "originals": images})
        }
        _ => {
            return Err(HttpError::validation(
                "give {\"all\": true}, {\"account\"} or {\"account\", \"image_id\"}",
            ));
        }
    };
    tracing::info!(target: "imgnode::audit", action = "purge", %purged, actor = "operator");
    Ok(response::json(
        StatusCode::OK,
        &serde_json::json!({"success": true, "purged": purged}),
    ))
}

fn authorize_operator(state: &AppState, headers: &HeaderMap) -> Result<(), HttpError> {
    let Some(expected) = &state.operator_token else {
        return Err(HttpError::forbidden(
            "the operator API is disabled (set admin.token_file)",
        ));
    };
    let given = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(HttpError::new(
            ErrorCode::Unauthorized,
            "missing or invalid operator token",
        ))
    }
}

/// Compares without an early exit, so timing does not reveal how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, HttpError> {
    let body: Bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| HttpError::new(ErrorCode::PayloadTooLarge, "request body too large"))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| HttpError::validation(format!("invalid JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_declare_methods_and_auth() {
        assert_eq!(
            OpsRoute::parse(&Method::GET, "/metrics").unwrap(),
            OpsRoute::Metrics
        );
        assert_eq!(
            OpsRoute::parse(&Method::HEAD, "/ready").unwrap(),
            OpsRoute::Ready
        );
        assert!(OpsRoute::parse(&Method::GET, "/admin/v1/purge").is_err());
        assert_eq!(OpsRoute::Purge.auth(), Auth::Operator);
        assert_eq!(OpsRoute::Metrics.auth(), Auth::None);
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
