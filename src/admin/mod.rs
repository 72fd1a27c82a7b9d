//! The ops listener: `/metrics`, `/live`, `/ready`, and the operator API under `/admin/v1`.
//!
//! Each route declares its auth level in the route table below. Operator routes need
//! `Authorization: Bearer <operator token>` (read from `admin.token_file`; without one the
//! operator API is off). Must never run on the public listener: it exposes internals and
//! operator powers.

use std::sync::atomic::Ordering;

use crate::api::read_json;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::Scopes;
use crate::error::{ErrorCode, HttpError};
use crate::server::{Body, full, response};
use crate::store::{Account, AccountStatus, StoreError, validate_account_name};

/// Routes of the ops listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpsRoute {
    Metrics,
    Live,
    Ready,
    Purge,
    Accounts,
    CreateAccount,
    Account(String),
    SetStatus(String, AccountStatus),
    CreateKey(String),
    RevokeKey(String, String),
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
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (route, allowed) = match segments.as_slice() {
            ["metrics"] => (OpsRoute::Metrics, Method::GET),
            ["live"] => (OpsRoute::Live, Method::GET),
            ["ready"] => (OpsRoute::Ready, Method::GET),
            ["admin", "v1", "purge"] => (OpsRoute::Purge, Method::POST),
            ["admin", "v1", "accounts"] if method == Method::POST => {
                (OpsRoute::CreateAccount, Method::POST)
            }
            ["admin", "v1", "accounts"] => (OpsRoute::Accounts, Method::GET),
            ["admin", "v1", "accounts", name] => (OpsRoute::Account((*name).into()), Method::GET),
            ["admin", "v1", "accounts", name, "suspend"] => (
                OpsRoute::SetStatus((*name).into(), AccountStatus::Suspended),
                Method::POST,
            ),
            ["admin", "v1", "accounts", name, "resume"] => (
                OpsRoute::SetStatus((*name).into(), AccountStatus::Active),
                Method::POST,
            ),
            ["admin", "v1", "accounts", name, "keys"] => {
                (OpsRoute::CreateKey((*name).into()), Method::POST)
            }
            ["admin", "v1", "accounts", name, "keys", id] => (
                OpsRoute::RevokeKey((*name).into(), (*id).into()),
                Method::DELETE,
            ),
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

    fn auth(&self) -> Auth {
        match self {
            OpsRoute::Metrics | OpsRoute::Live | OpsRoute::Ready | OpsRoute::NotFound => Auth::None,
            OpsRoute::Purge
            | OpsRoute::Accounts
            | OpsRoute::CreateAccount
            | OpsRoute::Account(_)
            | OpsRoute::SetStatus(..)
            | OpsRoute::CreateKey(_)
            | OpsRoute::RevokeKey(..) => Auth::Operator,
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            OpsRoute::Metrics => "metrics",
            OpsRoute::Live => "live",
            OpsRoute::Ready => "ready",
            OpsRoute::Purge => "admin_purge",
            OpsRoute::Accounts => "admin_accounts_list",
            OpsRoute::CreateAccount => "admin_accounts_create",
            OpsRoute::Account(_) => "admin_accounts_get",
            OpsRoute::SetStatus(..) => "admin_accounts_status",
            OpsRoute::CreateKey(_) => "admin_keys_create",
            OpsRoute::RevokeKey(..) => "admin_keys_revoke",
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
            state.caches.variants.refresh_disk_metrics();
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
        OpsRoute::Accounts => {
            let accounts: Vec<_> = state
                .store
                .accounts()
                .await?
                .iter()
                .map(account_json)
                .collect();
            Ok(response::json(
                StatusCode::OK,
                &serde_json::json!({"accounts": accounts, "total": accounts.len()}),
            ))
        }
        OpsRoute::CreateAccount => create_account(state, read_json(req).await?).await,
        OpsRoute::Account(name) => {
            let account = state
                .store
                .account(&name)
                .await?
                .ok_or_else(|| HttpError::new(ErrorCode::NotFound, "no such account"))?;
            Ok(response::json(StatusCode::OK, &account_json(&account)))
        }
        OpsRoute::SetStatus(name, status) => {
            if !state.store.set_account_status(&name, status).await? {
                return Err(HttpError::new(ErrorCode::NotFound, "no such account"));
            }
            state.caches.meta.invalidate_account(&name).await;
            audit("account.status", &name, status.as_str());
            let account = state
                .store
                .account(&name)
                .await?
                .ok_or_else(HttpError::not_found)?;
            Ok(response::json(StatusCode::OK, &account_json(&account)))
        }
        OpsRoute::CreateKey(name) => {
            let body: crate::api::CreateKeyRequest = read_json(req).await?;
            let scopes = body.validate()?;
            if state.store.account(&name).await?.is_none() {
                return Err(HttpError::new(ErrorCode::NotFound, "no such account"));
            }
            let issued = state
                .api_keys
                .issue(
                    &state.store,
                    &name,
                    body.name.trim(),
                    scopes,
                    body.expires_in_days,
                )
                .await
                .map_err(|e| HttpError::internal(e.to_string()))?;
            audit("api_key.create", &name, &issued.record.id);
            Ok(response::json(
                StatusCode::CREATED,
                &crate::api::issued_json(&issued.record, &issued.secret),
            ))
        }
        OpsRoute::RevokeKey(name, id) => {
            if !state.api_keys.revoke(&state.store, &name, &id).await? {
                return Err(HttpError::new(ErrorCode::NotFound, "no such API key"));
            }
            audit("api_key.revoke", &name, &id);
            Ok(response::json(
                StatusCode::OK,
                &serde_json::json!({"success": true, "message": "API key revoked"}),
            ))
        }
        OpsRoute::NotFound => Err(HttpError::new(ErrorCode::NotFound, "no such route")),
    }
}

fn account_json(a: &Account) -> serde_json::Value {
    serde_json::json!({
        "name": a.name,
        "plan": a.plan,
        "status": a.status.as_str(),
        "created_at": a.created_at,
    })
}

fn audit(action: &str, account: &str, target: &str) {
    tracing::info!(target: "imgnode::audit", action, account, target, actor = "operator");
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAccountRequest {
    name: String,
    plan: Option<String>,
}

/// Creates an account and its first API key (shown once).
async fn create_account(
    state: &AppState,
    req: CreateAccountRequest,
) -> Result<Response<Body>, HttpError> {
    validate_account_name(&req.name).map_err(HttpError::validation)?;
    let plan = req.plan.unwrap_or_else(|| "free".to_string());
    let account = match state.store.create_account(&req.name, &plan).await {
        Ok(a) => a,
        Err(StoreError::Conflict(m)) => return Err(HttpError::new(ErrorCode::Conflict, m)),
        Err(e) => return Err(e.into()),
    };
    state.caches.meta.invalidate_account(&account.name).await;
    let issued = state
        .api_keys
        .issue(&state.store, &account.name, "default", Scopes::ALL, None)
        .await
        .map_err(|e| HttpError::internal(e.to_string()))?;
    audit("account.create", &account.name, &account.name);
    Ok(response::json(
        StatusCode::CREATED,
        &serde_json::json!({
            "account": account_json(&account),
            "api_key": crate::api::issued_json(&issued.record, &issued.secret),
        }),
    ))
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
        assert_eq!(
            OpsRoute::parse(&Method::POST, "/admin/v1/accounts/acme/suspend").unwrap(),
            OpsRoute::SetStatus("acme".into(), AccountStatus::Suspended)
        );
        assert_eq!(
            OpsRoute::parse(&Method::DELETE, "/admin/v1/accounts/acme/keys/key_1").unwrap(),
            OpsRoute::RevokeKey("acme".into(), "key_1".into())
        );
        assert_eq!(OpsRoute::Accounts.auth(), Auth::Operator);
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
