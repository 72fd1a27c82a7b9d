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

use crate::accounts;
use crate::error::{ErrorCode, HttpError};
use crate::server::{Body, full, response};
use crate::state::AppState;
use crate::store::{Account, AccountStatus};

/// Routes of the ops listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OpsRoute {
    Metrics,
    Live,
    Ready,
    Purge,
    Accounts,
    CreateAccount,
    Account(String),
    SetPlan(String),
    EraseAccount(String),
    ExportAccount(String),
    Audit,
    SetStatus(String, AccountStatus),
    CreateKey(String),
    RevokeKey(String, String),
    EdgePurges,
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
    pub(crate) fn parse(method: &Method, path: &str) -> Result<OpsRoute, HttpError> {
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
            ["admin", "v1", "accounts", name] if method == Method::PATCH => {
                (OpsRoute::SetPlan((*name).into()), Method::PATCH)
            }
            ["admin", "v1", "accounts", name] if method == Method::DELETE => {
                (OpsRoute::EraseAccount((*name).into()), Method::DELETE)
            }
            ["admin", "v1", "accounts", name] => (OpsRoute::Account((*name).into()), Method::GET),
            ["admin", "v1", "accounts", name, "export"] => {
                (OpsRoute::ExportAccount((*name).into()), Method::GET)
            }
            ["admin", "v1", "audit"] => (OpsRoute::Audit, Method::GET),
            ["admin", "v1", "edge", "purges"] => (OpsRoute::EdgePurges, Method::GET),
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
            // What the path takes, for `Allow`: several methods on two paths.
            let allow = match segments.as_slice() {
                ["admin", "v1", "accounts"] => "GET, HEAD, POST",
                ["admin", "v1", "accounts", _] => "GET, HEAD, PATCH, DELETE",
                _ if allowed == Method::POST => "POST",
                _ if allowed == Method::DELETE => "DELETE",
                _ => "GET, HEAD",
            };
            return Err(HttpError::method_not_allowed(allow));
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
            | OpsRoute::SetPlan(_)
            | OpsRoute::EraseAccount(_)
            | OpsRoute::ExportAccount(_)
            | OpsRoute::Audit
            | OpsRoute::EdgePurges
            | OpsRoute::SetStatus(..)
            | OpsRoute::CreateKey(_)
            | OpsRoute::RevokeKey(..) => Auth::Operator,
        }
    }

    pub(crate) fn label(&self) -> &'static str {
        match self {
            OpsRoute::Metrics => "metrics",
            OpsRoute::Live => "live",
            OpsRoute::Ready => "ready",
            OpsRoute::Purge => "admin_purge",
            OpsRoute::Accounts => "admin_accounts_list",
            OpsRoute::CreateAccount => "admin_accounts_create",
            OpsRoute::Account(_) => "admin_accounts_get",
            OpsRoute::SetPlan(_) => "admin_accounts_plan",
            OpsRoute::EraseAccount(_) => "admin_accounts_erase",
            OpsRoute::ExportAccount(_) => "admin_accounts_export",
            OpsRoute::Audit => "admin_audit",
            OpsRoute::EdgePurges => "admin_edge_purges",
            OpsRoute::SetStatus(..) => "admin_accounts_status",
            OpsRoute::CreateKey(_) => "admin_keys_create",
            OpsRoute::RevokeKey(..) => "admin_keys_revoke",
            OpsRoute::NotFound => "ops_not_found",
        }
    }
}

impl OpsRoute {
    /// Operator calls that change something, with the account they act on (audit log).
    fn audited(&self) -> Option<Option<&str>> {
        match self {
            OpsRoute::Purge => Some(None),
            OpsRoute::CreateAccount => Some(None),
            OpsRoute::SetPlan(a)
            | OpsRoute::EraseAccount(a)
            | OpsRoute::SetStatus(a, _)
            | OpsRoute::CreateKey(a)
            | OpsRoute::RevokeKey(a, _) => Some(Some(a)),
            _ => None,
        }
    }

    fn target(&self) -> Option<&str> {
        match self {
            OpsRoute::RevokeKey(_, id) => Some(id),
            OpsRoute::SetPlan(a)
            | OpsRoute::EraseAccount(a)
            | OpsRoute::SetStatus(a, _)
            | OpsRoute::CreateKey(a) => Some(a),
            _ => None,
        }
    }
}

/// Answers one ops request; errors come back for the router to render. Every operator call
/// that changes something is written to the audit log with its outcome.
pub(crate) async fn handle(
    state: &AppState,
    route: OpsRoute,
    req: Request<Incoming>,
    client: std::net::IpAddr,
) -> Result<Response<Body>, HttpError> {
    if route.auth() == Auth::Operator {
        authorize_operator(state, req.headers(), client)?;
    }
    let audited = route.audited().map(|account| {
        (
            account.map(str::to_string),
            route.target().map(str::to_string),
        )
    });
    let action = route.label();
    let result = run(state, route, req).await;
    if let Some((account, target)) = audited {
        let outcome = match &result {
            Ok(res) => res.status().as_u16(),
            Err(e) => e.status().as_u16(),
        };
        let record = crate::store::AuditRecord {
            id: crate::api::audit_id(),
            at: crate::store::now_unix(),
            account,
            actor: "operator".into(),
            action: action.to_string(),
            target,
            client_ip: Some(client.to_string()),
            outcome: i64::from(outcome),
        };
        if let Err(e) = state.store.append_audit(&record).await {
            tracing::error!(error = %e, action, "writing an audit record failed");
        }
    }
    result
}

async fn run(
    state: &AppState,
    route: OpsRoute,
    req: Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
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
        OpsRoute::CreateAccount => {
            let body: CreateAccountRequest = read_json(req).await?;
            let created = accounts::create(state, &body.name, body.plan.as_deref()).await?;
            Ok(response::json(
                StatusCode::CREATED,
                &serde_json::json!({
                    "account": account_json(&created.account),
                    "api_key": accounts::issued_key_document(&created.key),
                }),
            ))
        }
        OpsRoute::SetPlan(name) => {
            let body: SetPlanRequest = read_json(req).await?;
            let account = accounts::set_plan(state, &name, &body.plan).await?;
            Ok(response::json(StatusCode::OK, &account_json(&account)))
        }
        OpsRoute::EraseAccount(name) => {
            let erased = accounts::erase(state, &name).await?;
            Ok(response::json(
                StatusCode::OK,
                &serde_json::json!({
                    "success": true,
                    "account": name,
                    "images_deleted": erased.images,
                    "originals_deleted": erased.originals_deleted,
                    "edge_purge": erased.edge.as_str(),
                    "complete": erased.edge.complete(),
                }),
            ))
        }
        OpsRoute::ExportAccount(name) => {
            Ok(response::export(accounts::export(state, &name).await?))
        }
        OpsRoute::Audit => audit_log(state, req.uri().query().unwrap_or("")).await,
        OpsRoute::EdgePurges => edge_purges(state, req.uri().query().unwrap_or("")).await,
        OpsRoute::Account(name) => {
            let account = accounts::get(state, &name).await?;
            Ok(response::json(StatusCode::OK, &account_json(&account)))
        }
        OpsRoute::SetStatus(name, status) => {
            let account = accounts::set_status(state, &name, status).await?;
            Ok(response::json(StatusCode::OK, &account_json(&account)))
        }
        OpsRoute::CreateKey(name) => {
            let body: accounts::KeyRequest = read_json(req).await?;
            let issued = accounts::issue_key(state, &name, &body).await?;
            Ok(response::json(
                StatusCode::CREATED,
                &accounts::issued_key_document(&issued),
            ))
        }
        OpsRoute::RevokeKey(name, id) => {
            accounts::revoke_key(state, &name, &id).await?;
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetPlanRequest {
    plan: String,
}

/// `GET /admin/v1/audit?account=&action=&since=&until=&limit=` (unix seconds; limit 1–1000,
/// default 100), newest first.
/// `GET /admin/v1/edge/purges?account=&limit=`: edge purges not delivered yet, pending
/// (being retried) first, then failed (given up), oldest first.
async fn edge_purges(state: &AppState, query: &str) -> Result<Response<Body>, HttpError> {
    let mut account = None;
    let mut limit = 100;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_encoding::percent_decode_str(v)
            .decode_utf8_lossy()
            .into_owned();
        match k {
            "account" => account = Some(v),
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| HttpError::validation("limit must be 1 to 1000"))?;
            }
            _ => {}
        }
    }
    let purges: Vec<serde_json::Value> = state
        .store
        .purges(account.as_deref(), limit)
        .await?
        .into_iter()
        .map(|p| {
            serde_json::json!({
                "id": p.id,
                "account": p.account,
                "tags": p.tags,
                "reason": p.reason,
                "created_at": p.created_at_ms / 1000,
                "state": if p.failed { "failed" } else { "pending" },
                "targets": p.targets,
                "attempts": p.attempts,
                "last_error": p.last_error,
            })
        })
        .collect();
    Ok(response::json(
        StatusCode::OK,
        &serde_json::json!({"purges": purges, "total": purges.len()}),
    ))
}

async fn audit_log(state: &AppState, query: &str) -> Result<Response<Body>, HttpError> {
    let mut filter = crate::store::AuditFilter {
        limit: 100,
        ..Default::default()
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_encoding::percent_decode_str(v)
            .decode_utf8_lossy()
            .into_owned();
        let int = |v: &str| {
            v.parse::<i64>()
                .map_err(|_| HttpError::validation(format!("{k} must be unix seconds")))
        };
        match k {
            "account" => filter.account = Some(v),
            "action" => filter.action = Some(v),
            "since" => filter.since = Some(int(&v)?),
            "until" => filter.until = Some(int(&v)?),
            "limit" => {
                filter.limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| HttpError::validation("limit must be 1 to 1000"))?;
            }
            _ => {}
        }
    }
    let records: Vec<serde_json::Value> = state
        .store
        .audit(&filter)
        .await?
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "id": r.id, "at": r.at, "account": r.account, "actor": r.actor,
                "action": r.action, "target": r.target, "client_ip": r.client_ip,
                "outcome": r.outcome,
            })
        })
        .collect();
    Ok(response::json(
        StatusCode::OK,
        &serde_json::json!({"records": records, "total": records.len()}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAccountRequest {
    name: String,
    plan: Option<String>,
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
            for account in state.store.accounts().await? {
                let tags = [crate::edge::tags::account(&account.name)];
                state
                    .store
                    .enqueue_edge_purge(&account.name, &tags, "operator purge")
                    .await?;
            }
            serde_json::json!({"scope": "all"})
        }
        (false, Some(account), Some(id)) => {
            let image = state
                .store
                .image(&account, &id)
                .await?
                .ok_or_else(|| HttpError::new(ErrorCode::NotFound, "no such image"))?;
            caches
                .purge_originals(&state.store, &account, std::slice::from_ref(&image.hash))
                .await?;
            let tags = [crate::edge::tags::image(&account, &id)];
            state
                .store
                .enqueue_edge_purge(&account, &tags, "operator purge")
                .await?;
            serde_json::json!({"scope": "image", "account": account, "image_id": id})
        }
        (false, Some(account), None) => {
            if state.store.account(&account).await?.is_none() {
                return Err(HttpError::new(ErrorCode::NotFound, "no such account"));
            }
            let images = caches.purge_account(&state.store, &account).await?;
            let tags = [crate::edge::tags::account(&account)];
            state
                .store
                .enqueue_edge_purge(&account, &tags, "operator purge")
                .await?;
            serde_json::json!({"scope": "account", "account": account, "originals": images})
        }
        _ => {
            return Err(HttpError::validation(
                "give {\"all\": true}, {\"account\"} or {\"account\", \"image_id\"}",
            ));
        }
    };
    Ok(response::json(
        StatusCode::OK,
        &serde_json::json!({"success": true, "purged": purged}),
    ))
}

/// Checks the operator token. Failures count against `client`'s failed-authentication
/// allowance (the tenant API's, in `ratelimit`); over it, 429 with `Retry-After`. The right
/// token is never refused for its address's failures.
fn authorize_operator(
    state: &AppState,
    headers: &HeaderMap,
    client: std::net::IpAddr,
) -> Result<(), HttpError> {
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
    // One comparison, whatever the address's state: nothing to look up, nothing to learn.
    if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        return Ok(());
    }
    let blocked = state.rate_limits.blocked(client);
    let rate = state.rate_limits.auth_failure(client);
    match rate.retry_after.or(blocked.and_then(|b| b.retry_after)) {
        Some(retry_after) => Err(HttpError {
            retry_after: Some(retry_after),
            ..HttpError::new(
                ErrorCode::RateLimited,
                "too many failed authentications from this address",
            )
        }),
        None => Err(HttpError::new(
            ErrorCode::Unauthorized,
            "missing or invalid operator token",
        )),
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
