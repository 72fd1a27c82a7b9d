//! The tenant API under `/api/v1` on the public listener, in the img-src shapes.
//!
//! Every route declares the scope it needs in the route table; every call is authenticated
//! with an API key (`auth`), a JWT, or a console session cookie, which acts as the API key
//! it was made with (`auth::console`; state-changing calls need its CSRF token and Origin).
//! Must never touch caches except through `cache` purge and invalidation, and never answer
//! anything but JSON.

pub mod images;
mod presets;
mod settings;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;

use std::net::IpAddr;

use crate::accounts;
use crate::auth::jwt::{JwtError, JwtVerifier};
use crate::auth::{AuthError, Principal, Scope};
use crate::error::{ErrorCode, HttpError};
use crate::ratelimit::RateState;
use crate::server::{Body, response};
use crate::state::AppState;
use crate::store::AuditRecord;
use crate::usage::{self, Quota};

/// Largest JSON request body of the tenant API.
const MAX_JSON_BODY: usize = 64 * 1024;

/// Routes of the tenant API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ApiRoute {
    Upload,
    ListImages,
    SearchImages,
    GetImage(String),
    DeleteImage(String),
    /// Everything after `images/path/`, still percent-encoded.
    DeletePath(String),
    SignedUrl(String),
    SetVisibility(String),
    ListPresets,
    CreatePreset,
    GetPreset(String),
    UpdatePreset(String),
    DeletePreset(String),
    GetUsage,
    ExportAccount,
    EraseAccount,
    GetSettings,
    UpdateSettings,
    ListKeys,
    CreateKey,
    DeleteKey(String),
    NotFound,
    /// A known path with a method it does not take: the methods it does (`Allow`).
    NotAllowed(&'static str),
}

impl ApiRoute {
    /// Matches `path` (which starts with `/api/v1/`) and `method`; HEAD matches wherever GET
    /// does. A known path with a method it does not take is [`ApiRoute::NotAllowed`], answered
    /// after authentication like every other call (with the rate-limit headers).
    pub(crate) fn parse(method: &Method, path: &str) -> ApiRoute {
        let method = if *method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        let rest = path.strip_prefix("/api/v1/").unwrap_or("");
        if let Some(tail) = rest.strip_prefix("images/path/") {
            return match *method {
                Method::DELETE if !tail.is_empty() => ApiRoute::DeletePath(tail.to_string()),
                _ => ApiRoute::NotAllowed("DELETE"),
            };
        }
        let segments: Vec<&str> = rest.split('/').collect();
        let id = |s: &str| s.to_string();
        match (method, segments.as_slice()) {
            (&Method::POST, ["images"]) => ApiRoute::Upload,
            (&Method::GET, ["images"]) => ApiRoute::ListImages,
            (&Method::GET, ["images", "search"]) => ApiRoute::SearchImages,
            (&Method::GET, ["images", i]) if !i.is_empty() => ApiRoute::GetImage(id(i)),
            (&Method::DELETE, ["images", i]) if !i.is_empty() => ApiRoute::DeleteImage(id(i)),
            (&Method::POST, ["images", i, "signed-url"]) => ApiRoute::SignedUrl(id(i)),
            (&Method::PATCH, ["images", i, "visibility"]) => ApiRoute::SetVisibility(id(i)),
            (_, ["images"]) => ApiRoute::NotAllowed("GET, HEAD, POST"),
            (_, ["images", _]) => ApiRoute::NotAllowed("GET, HEAD, DELETE"),
            (_, ["images", _, "signed-url"]) => ApiRoute::NotAllowed("POST"),
            (_, ["images", _, "visibility"]) => ApiRoute::NotAllowed("PATCH"),
            (&Method::GET, ["settings", "presets"]) => ApiRoute::ListPresets,
            (&Method::POST, ["settings", "presets"]) => ApiRoute::CreatePreset,
            (&Method::GET, ["settings", "presets", p]) if !p.is_empty() => {
                ApiRoute::GetPreset(id(p))
            }
            (&Method::PUT, ["settings", "presets", p]) if !p.is_empty() => {
                ApiRoute::UpdatePreset(id(p))
            }
            (&Method::DELETE, ["settings", "presets", p]) if !p.is_empty() => {
                ApiRoute::DeletePreset(id(p))
            }
            (_, ["settings", "presets"]) => ApiRoute::NotAllowed("GET, HEAD, POST"),
            (_, ["settings", "presets", _]) => ApiRoute::NotAllowed("GET, HEAD, PUT, DELETE"),
            (&Method::GET, ["usage"]) => ApiRoute::GetUsage,
            (&Method::GET, ["account", "export"]) => ApiRoute::ExportAccount,
            (&Method::DELETE, ["account"]) => ApiRoute::EraseAccount,
            (_, ["account"]) => ApiRoute::NotAllowed("DELETE"),
            (_, ["account", "export"] | ["usage"]) => ApiRoute::NotAllowed("GET, HEAD"),
            (&Method::GET, ["settings"]) => ApiRoute::GetSettings,
            (&Method::PUT, ["settings"]) => ApiRoute::UpdateSettings,
            (_, ["settings"]) => ApiRoute::NotAllowed("GET, HEAD, PUT"),
            (&Method::GET, ["settings", "api-keys"]) => ApiRoute::ListKeys,
            (&Method::POST, ["settings", "api-keys"]) => ApiRoute::CreateKey,
            (&Method::DELETE, ["settings", "api-keys", id]) if !id.is_empty() => {
                ApiRoute::DeleteKey((*id).to_string())
            }
            (_, ["settings", "api-keys"]) => ApiRoute::NotAllowed("GET, HEAD, POST"),
            (_, ["settings", "api-keys", _]) => ApiRoute::NotAllowed("DELETE"),
            _ => ApiRoute::NotFound,
        }
    }

    /// The scope a key needs for this route.
    fn scope(&self) -> Scope {
        match self {
            ApiRoute::ListImages
            | ApiRoute::SearchImages
            | ApiRoute::GetImage(_)
            | ApiRoute::ListPresets
            | ApiRoute::GetPreset(_)
            | ApiRoute::GetUsage
            | ApiRoute::GetSettings
            | ApiRoute::ListKeys
            | ApiRoute::NotFound
            | ApiRoute::NotAllowed(_) => Scope::Read,
            // A signed URL grants access to a private image: it is a write.
            ApiRoute::Upload
            | ApiRoute::DeleteImage(_)
            | ApiRoute::DeletePath(_)
            | ApiRoute::SignedUrl(_)
            | ApiRoute::SetVisibility(_)
            | ApiRoute::CreatePreset
            | ApiRoute::UpdatePreset(_)
            | ApiRoute::DeletePreset(_)
            | ApiRoute::UpdateSettings
            | ApiRoute::CreateKey
            | ApiRoute::DeleteKey(_) => Scope::Write,
            // Every private original at once, or everything gone: a scope of its own, never
            // granted by default (a `read` key must not download what signed URLs guard).
            ApiRoute::ExportAccount | ApiRoute::EraseAccount => Scope::Account,
        }
    }

    /// Changes something (audited).
    fn mutates(&self) -> bool {
        self.scope() == Scope::Write || *self == ApiRoute::EraseAccount
    }

    /// The id or name the route acts on, for the audit log.
    fn target(&self) -> Option<&str> {
        match self {
            ApiRoute::GetImage(t)
            | ApiRoute::DeleteImage(t)
            | ApiRoute::DeletePath(t)
            | ApiRoute::SignedUrl(t)
            | ApiRoute::SetVisibility(t)
            | ApiRoute::GetPreset(t)
            | ApiRoute::UpdatePreset(t)
            | ApiRoute::DeletePreset(t)
            | ApiRoute::DeleteKey(t) => Some(t),
            _ => None,
        }
    }

    pub(crate) fn label(&self) -> &'static str {
        match self {
            ApiRoute::Upload => "api_images_upload",
            ApiRoute::ListImages => "api_images_list",
            ApiRoute::SearchImages => "api_images_search",
            ApiRoute::GetImage(_) => "api_images_get",
            ApiRoute::DeleteImage(_) => "api_images_delete",
            ApiRoute::DeletePath(_) => "api_images_path_delete",
            ApiRoute::SignedUrl(_) => "api_images_signed_url",
            ApiRoute::SetVisibility(_) => "api_images_visibility",
            ApiRoute::ListPresets => "api_presets_list",
            ApiRoute::CreatePreset => "api_presets_create",
            ApiRoute::GetPreset(_) => "api_presets_get",
            ApiRoute::UpdatePreset(_) => "api_presets_update",
            ApiRoute::DeletePreset(_) => "api_presets_delete",
            ApiRoute::GetUsage => "api_usage_get",
            ApiRoute::ExportAccount => "api_account_export",
            ApiRoute::EraseAccount => "api_account_erase",
            ApiRoute::GetSettings => "api_settings_get",
            ApiRoute::UpdateSettings => "api_settings_update",
            ApiRoute::ListKeys => "api_keys_list",
            ApiRoute::CreateKey => "api_keys_create",
            ApiRoute::DeleteKey(_) => "api_keys_delete",
            ApiRoute::NotFound => "api_not_found",
            ApiRoute::NotAllowed(_) => "api_bad_method",
        }
    }
}

/// What a tenant API call answered with, and its rate-limit state for the headers.
pub(crate) struct ApiOutcome {
    pub(crate) result: Result<Response<Body>, HttpError>,
    pub(crate) rate: Option<RateState>,
}

/// Authenticates (a failure counts against the client address's allowance), applies the
/// caller's rate limit and monthly API quota, runs the route, counts it, and audits it when it
/// changes anything. `client` is the client's address (`server::client::client_ip`).
pub(crate) async fn handle(
    state: &AppState,
    route: ApiRoute,
    req: Request<Incoming>,
    client: IpAddr,
) -> ApiOutcome {
    // The credential is checked first: a valid one is never refused for its address's failed
    // attempts (behind a NAT or a proxy, someone else's). While an address is blocked, only
    // a credential that could be valid is looked up (one indexed query, and "no such key" is
    // cached); every failure extends the block, and every one is answered 429, so the
    // answers of a blocked address tell nothing about the keys it tries.
    let blocked = state.rate_limits.blocked(client);
    if let Some(rate) = blocked
        && !plausible_credential(state, req.headers())
    {
        drain(req).await;
        return auth_refused(rate);
    }
    let principal = match authenticate(state, &req).await {
        Ok(p) => p,
        Err(e) if e.code != ErrorCode::Unauthorized => {
            // Suspended accounts, store failures: not a guess at a key.
            drain(req).await;
            return ApiOutcome {
                result: Err(e),
                rate: None,
            };
        }
        Err(e) => {
            drain(req).await;
            let rate = state.rate_limits.auth_failure(client);
            if rate.retry_after.is_some() {
                return auth_refused(rate);
            }
            if let Some(rate) = blocked {
                return auth_refused(rate);
            }
            return ApiOutcome {
                result: Err(e),
                rate: Some(rate),
            };
        }
    };
    let plan = state.plan(&principal.plan);
    // Per key and per account: more keys do not buy a higher rate.
    let rate = state.rate_limits.check_key_and_account(
        &principal.key_id,
        &principal.account,
        plan.requests_per_minute,
    );
    if rate.retry_after.is_some() {
        drain(req).await;
        return ApiOutcome {
            result: Err(rate_limited(&rate, "rate limit exceeded")),
            rate: Some(rate),
        };
    }
    let mutating = route.mutates();
    let action = route.label();
    let target = route.target().map(str::to_string);
    // Counted before it runs, so an erasure's own request does not re-create usage after it.
    state
        .usage
        .record(&principal.account, |u| u.api_requests += 1);
    let result = run(state, &principal, route, req).await;
    if mutating {
        let outcome = match &result {
            Ok(res) => res.status().as_u16(),
            Err(e) => e.status().as_u16(),
        };
        let record = AuditRecord {
            id: audit_id(),
            at: crate::store::now_unix(),
            account: Some(principal.account.clone()),
            actor: principal.key_id.clone(),
            action: action.to_string(),
            target,
            client_ip: Some(client.to_string()),
            outcome: i64::from(outcome),
        };
        if let Err(e) = state.store.append_audit(&record).await {
            tracing::error!(error = %e, action, "writing an audit record failed");
        }
    }
    ApiOutcome {
        result,
        rate: Some(rate),
    }
}

/// Refuses a call whose feature the account's plan does not include: 403, naming the plan.
/// Only new uses are refused: what the account made under a plan that had it (private
/// images, issued signed URLs, presets) keeps being served.
pub(crate) fn require(
    state: &AppState,
    who: &Principal,
    feature: crate::config::Feature,
) -> Result<(), HttpError> {
    if state.plan(&who.plan).includes(feature) {
        Ok(())
    } else {
        Err(HttpError::forbidden(format!(
            "the {} plan does not include {}",
            who.plan,
            feature.name()
        )))
    }
}

/// The answer to an address over its failed-authentication allowance.
fn auth_refused(rate: RateState) -> ApiOutcome {
    ApiOutcome {
        result: Err(rate_limited(
            &rate,
            "too many failed authentications from this address",
        )),
        rate: Some(rate),
    }
}

/// Whether the request's credential has the shape of one this node could accept: an API key
/// as issued (`{prefix}{64 hex digits}`, see `auth`), a JWT when JWTs are on, or a console
/// session cookie. Anything else from a blocked address is refused without a lookup.
fn plausible_credential(state: &AppState, headers: &http::HeaderMap) -> bool {
    if !headers.contains_key(AUTHORIZATION)
        && state
            .console_site()
            .is_some_and(|site| site.cookie_secret(headers).is_some())
    {
        return true;
    }
    let Some(token) = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
    else {
        return false;
    };
    if state.jwt.is_some() && JwtVerifier::looks_like_jwt(token) {
        return true;
    }
    token
        .strip_prefix(state.config.auth.key_prefix.as_str())
        .is_some_and(crate::auth::plausible_secret)
}

fn rate_limited(rate: &RateState, message: &str) -> HttpError {
    HttpError {
        retry_after: rate.retry_after,
        ..HttpError::new(ErrorCode::RateLimited, message)
    }
}

/// Unique and ordered: unix microseconds, strictly increasing within this process (two
/// records in one microsecond still sort in the order they were made), then random bits so
/// ids of several nodes never collide.
pub(crate) fn audit_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let prev = LAST
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
            Some(now.max(last + 1))
        })
        .unwrap_or(now);
    let micros = now.max(prev + 1);
    let random = crate::auth::random_hex(4).unwrap_or_default();
    format!("{micros:016}-{random}")
}

/// Scope, monthly quota, then the route.
async fn run(
    state: &AppState,
    principal: &Principal,
    route: ApiRoute,
    req: Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
    if route == ApiRoute::NotFound {
        drain(req).await;
        return Err(HttpError::new(ErrorCode::NotFound, "no such route"));
    }
    if let ApiRoute::NotAllowed(allow) = route {
        drain(req).await;
        return Err(HttpError::method_not_allowed(allow));
    }
    if !principal.scopes.allows(route.scope()) {
        drain(req).await;
        return Err(HttpError::forbidden(format!(
            "this API key lacks the `{}` scope",
            route.scope().as_str()
        )));
    }
    let mut used = state
        .usage
        .current(&state.store, &principal.account)
        .await?;
    // This request is already counted: the quota is about the ones before it.
    used.api_requests = used.api_requests.saturating_sub(1);
    if let Err(e) = usage::check(state.plan(&principal.plan), Quota::ApiRequests, &used) {
        drain(req).await;
        return Err(e.into());
    }
    let who = principal;
    let base = images::base_url(state, req.headers(), req.uri());
    let base = base.as_str();
    let query = req.uri().query().unwrap_or("").to_string();
    match route {
        ApiRoute::Upload => images::upload(state, who, req).await,
        ApiRoute::ListImages => images::list(state, who, base, &query).await,
        ApiRoute::SearchImages => images::search(state, who, base, &query).await,
        ApiRoute::GetImage(id) => images::metadata(state, who, base, &id).await,
        ApiRoute::DeleteImage(id) => images::delete(state, who, &id).await,
        ApiRoute::DeletePath(rest) => images::delete_path(state, who, &rest).await,
        ApiRoute::SignedUrl(id) => {
            let body = read_json_opt(req).await?.unwrap_or_default();
            images::signed_url(state, who, base, &id, body).await
        }
        ApiRoute::SetVisibility(id) => {
            images::set_visibility(state, who, &id, read_json(req).await?).await
        }
        ApiRoute::ListPresets => presets::list(state, who).await,
        ApiRoute::CreatePreset => presets::create(state, who, read_json_opt(req).await?).await,
        ApiRoute::GetPreset(id) => presets::get(state, who, &id).await,
        ApiRoute::UpdatePreset(id) => {
            presets::update(state, who, &id, read_json_opt(req).await?).await
        }
        ApiRoute::DeletePreset(id) => presets::delete(state, who, &id).await,
        ApiRoute::GetUsage => settings::usage(state, who).await,
        ApiRoute::ExportAccount => Ok(response::export(
            accounts::export(state, &who.account).await?,
        )),
        ApiRoute::EraseAccount => {
            let body: EraseRequest = read_json_opt(req).await?.ok_or_else(|| {
                HttpError::validation("send {\"confirm\": \"<account name>\"} to erase the account")
            })?;
            if body.confirm != who.account {
                return Err(HttpError::validation(
                    "confirm must be exactly this account's name",
                ));
            }
            let erased = accounts::erase(state, &who.account).await?;
            Ok(response::json(
                StatusCode::OK,
                &serde_json::json!({
                    "success": true,
                    "message": "account erased",
                    "images_deleted": erased.images,
                    "originals_deleted": erased.originals_deleted,
                    "edge_purge": erased.edge.as_str(),
                    "complete": erased.edge.complete(),
                }),
            ))
        }
        ApiRoute::GetSettings => settings::get(state, principal).await,
        ApiRoute::UpdateSettings => {
            let body = read_json_opt(req).await?.unwrap_or_default();
            settings::update(state, principal, body).await
        }
        ApiRoute::ListKeys => list_keys(state, principal).await,
        ApiRoute::CreateKey => create_key(state, principal, read_json(req).await?).await,
        ApiRoute::DeleteKey(id) => delete_key(state, principal, &id).await,
        ApiRoute::NotFound => Err(HttpError::new(ErrorCode::NotFound, "no such route")),
        ApiRoute::NotAllowed(allow) => Err(HttpError::method_not_allowed(allow)),
    }
}

async fn authenticate(state: &AppState, req: &Request<Incoming>) -> Result<Principal, HttpError> {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = header
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim);
    // No credential header: the console's session cookie, if any (see `auth::console`).
    let session = header
        .is_none()
        .then(|| state.console_site())
        .flatten()
        .and_then(|site| Some((site, site.cookie_secret(req.headers())?)));
    let mut principal = match (&state.jwt, token, session) {
        (_, _, Some((site, secret))) => session_principal(state, site, req, secret).await?,
        (Some(jwt), Some(token), None) if JwtVerifier::looks_like_jwt(token) => {
            let claims = jwt.verify(token).await.map_err(|e| {
                if let JwtError::Unavailable(why) = &e {
                    tracing::warn!(why, "JWT refused: the JWKS is unavailable");
                }
                HttpError::new(ErrorCode::Unauthorized, "invalid or expired token")
            })?;
            Principal {
                account: claims.account,
                key_id: format!("jwt:{}", claims.subject),
                scopes: crate::auth::Scopes {
                    read: claims.read,
                    write: claims.write,
                    account: claims.account_scope,
                },
                plan: String::new(),
                expires_at: Some(claims.expires_at),
            }
        }
        (_, _, None) => state
            .api_keys
            .authenticate(&state.store, header)
            .await
            .map_err(|e| match e {
                AuthError::Missing | AuthError::Invalid => {
                    HttpError::new(ErrorCode::Unauthorized, e.to_string())
                }
                other => HttpError::internal(other.to_string()),
            })?,
    };
    // A suspended account's keys stop working with it.
    let account = state
        .caches
        .meta
        .account(&state.store, &principal.account)
        .await?;
    match account {
        Some(a) if a.status == crate::store::AccountStatus::Active => {
            principal.plan = a.plan.clone();
            Ok(principal)
        }
        Some(a) if a.status == crate::store::AccountStatus::Suspended => {
            Err(HttpError::forbidden("account suspended"))
        }
        // Gone, or being erased: its keys are as good as revoked.
        _ => Err(HttpError::new(
            ErrorCode::Unauthorized,
            "invalid, expired or revoked API key",
        )),
    }
}

/// The principal of a console session: the API key it acts as, once the request passed
/// the CSRF check (a state-changing call needs the session's token and the console's
/// `Origin`).
async fn session_principal(
    state: &AppState,
    site: &crate::auth::console::Site,
    req: &Request<Incoming>,
    secret: &str,
) -> Result<Principal, HttpError> {
    site.check_csrf(req.method(), req.headers(), secret)
        .map_err(HttpError::forbidden)?;
    let idle = i64::try_from(state.config.console.idle_timeout.as_secs()).unwrap_or(i64::MAX);
    let (principal, _) =
        crate::auth::console::authenticate(&state.store, secret, idle, crate::store::now_unix())
            .await
            .map_err(|e| match e {
                AuthError::Missing | AuthError::Invalid => HttpError::new(
                    ErrorCode::Unauthorized,
                    "invalid or expired console session",
                ),
                other => other.into(),
            })?;
    // The session acts as its key: the call counts as the key's use (last use, requests).
    state
        .api_keys
        .note_use(&principal.key_id, crate::store::now_unix());
    Ok(principal)
}

async fn list_keys(state: &AppState, who: &Principal) -> Result<Response<Body>, HttpError> {
    let keys = state.store.api_keys(&who.account).await?;
    let items: Vec<_> = keys.iter().map(accounts::key_document).collect();
    Ok(response::json(
        StatusCode::OK,
        &serde_json::json!({"api_keys": items, "total": items.len()}),
    ))
}

/// `DELETE /api/v1/account` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EraseRequest {
    confirm: String,
}

async fn create_key(
    state: &AppState,
    who: &Principal,
    body: accounts::KeyRequest,
) -> Result<Response<Body>, HttpError> {
    let issued = accounts::issue_key_by(state, who, &body).await?;
    Ok(response::json(
        StatusCode::CREATED,
        &accounts::issued_key_document(&issued),
    ))
}

async fn delete_key(
    state: &AppState,
    who: &Principal,
    id: &str,
) -> Result<Response<Body>, HttpError> {
    accounts::revoke_key(state, &who.account, id).await?;
    Ok(response::json(
        StatusCode::OK,
        &serde_json::json!({"success": true, "message": "API key revoked"}),
    ))
}

/// Reads and drops a small request body that is refused before it was read (bad key, scope,
/// rate, quota), so the client gets the answer instead of a reset while it is still sending.
/// Bodies over 1 MiB, or slower than 5 s, are not waited for: the connection is closed.
pub(crate) async fn drain(req: Request<Incoming>) {
    const LIMIT: usize = 1 << 20;
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > LIMIT) {
        return;
    }
    let body = Limited::new(req.into_body(), LIMIT).collect();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), body).await;
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, HttpError> {
    Ok(Limited::new(req.into_body(), MAX_JSON_BODY)
        .collect()
        .await
        .map_err(|_| HttpError::new(ErrorCode::PayloadTooLarge, "request body too large"))?
        .to_bytes())
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, HttpError> {
    serde_json::from_slice(body).map_err(|e| HttpError::validation(format!("invalid JSON: {e}")))
}

/// Reads a JSON body of at most 64 KiB.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, HttpError> {
    parse_json(&read_body(req).await?)
}

/// Like [`read_json`] for optional bodies: an empty body or `null` (what the img-src SDKs send
/// for an omitted body) is `None`.
async fn read_json_opt<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<Option<T>, HttpError> {
    let body = read_body(req).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    parse_json::<Option<T>>(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_methods() {
        assert_eq!(
            ApiRoute::parse(&Method::GET, "/api/v1/settings/api-keys"),
            ApiRoute::ListKeys
        );
        assert_eq!(
            ApiRoute::parse(&Method::DELETE, "/api/v1/settings/api-keys/key_1"),
            ApiRoute::DeleteKey("key_1".into())
        );
        assert_eq!(
            ApiRoute::parse(&Method::PUT, "/api/v1/settings/api-keys"),
            ApiRoute::NotAllowed("GET, HEAD, POST")
        );
        assert_eq!(
            ApiRoute::parse(&Method::HEAD, "/api/v1/settings/presets/p1"),
            ApiRoute::GetPreset("p1".into())
        );
        assert_eq!(
            ApiRoute::parse(&Method::GET, "/api/v1/images/path/a/b.jpg"),
            ApiRoute::NotAllowed("DELETE")
        );
        assert_eq!(
            ApiRoute::parse(&Method::GET, "/api/v1/nothing"),
            ApiRoute::NotFound
        );
        assert_eq!(ApiRoute::CreateKey.scope(), Scope::Write);
        assert_eq!(ApiRoute::ExportAccount.scope(), Scope::Account);
        assert_eq!(ApiRoute::EraseAccount.scope(), Scope::Account);
        assert!(ApiRoute::EraseAccount.mutates() && !ApiRoute::ExportAccount.mutates());
    }
}
