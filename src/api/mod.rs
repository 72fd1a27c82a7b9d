//! The tenant API under `/api/v1` on the public listener, in the img-src shapes.
//!
//! Every route declares the scope it needs in the route table; every call is authenticated
//! with an API key (`auth`). Today: settings and API key management. Must never touch caches
//! except through `cache` purge and invalidation, and never answer anything but JSON.

pub mod images;
pub mod presets;
pub mod settings;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::{AuthError, MAX_EXPIRY_DAYS, Principal, Scope, Scopes};
use crate::error::{ErrorCode, HttpError};
use crate::server::{Body, response};
use crate::store::ApiKeyRecord;

/// Largest JSON request body of the tenant API.
const MAX_JSON_BODY: usize = 64 * 1024;

/// Routes of the tenant API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiRoute {
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
    GetSettings,
    UpdateSettings,
    ListKeys,
    CreateKey,
    DeleteKey(String),
    NotFound,
}

impl ApiRoute {
    /// Matches `path` (which starts with `/api/v1/`) and `method`.
    pub fn parse(method: &Method, path: &str) -> Result<ApiRoute, HttpError> {
        let rest = path.strip_prefix("/api/v1/").unwrap_or("");
        if let Some(tail) = rest.strip_prefix("images/path/") {
            return match *method {
                Method::DELETE if !tail.is_empty() => Ok(ApiRoute::DeletePath(tail.to_string())),
                _ => Err(not_allowed()),
            };
        }
        let segments: Vec<&str> = rest.split('/').collect();
        let id = |s: &str| s.to_string();
        let route = match (method, segments.as_slice()) {
            (&Method::POST, ["images"]) => ApiRoute::Upload,
            (&Method::GET, ["images"]) => ApiRoute::ListImages,
            (&Method::GET, ["images", "search"]) => ApiRoute::SearchImages,
            (&Method::GET, ["images", i]) if !i.is_empty() => ApiRoute::GetImage(id(i)),
            (&Method::DELETE, ["images", i]) if !i.is_empty() => ApiRoute::DeleteImage(id(i)),
            (&Method::POST, ["images", i, "signed-url"]) => ApiRoute::SignedUrl(id(i)),
            (&Method::PATCH, ["images", i, "visibility"]) => ApiRoute::SetVisibility(id(i)),
            (_, ["images"])
            | (_, ["images", _])
            | (_, ["images", _, "signed-url" | "visibility"]) => return Err(not_allowed()),
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
            (_, ["settings", "presets"]) | (_, ["settings", "presets", _]) => {
                return Err(not_allowed());
            }
            (&Method::GET, ["settings"]) => ApiRoute::GetSettings,
            (&Method::PUT, ["settings"]) => ApiRoute::UpdateSettings,
            (_, ["settings"]) => return Err(not_allowed()),
            (&Method::GET, ["settings", "api-keys"]) => ApiRoute::ListKeys,
            (&Method::POST, ["settings", "api-keys"]) => ApiRoute::CreateKey,
            (&Method::DELETE, ["settings", "api-keys", id]) if !id.is_empty() => {
                ApiRoute::DeleteKey((*id).to_string())
            }
            (_, ["settings", "api-keys"]) | (_, ["settings", "api-keys", _]) => {
                return Err(not_allowed());
            }
            _ => ApiRoute::NotFound,
        };
        Ok(route)
    }

    /// The scope a key needs for this route.
    fn scope(&self) -> Scope {
        match self {
            ApiRoute::ListImages
            | ApiRoute::SearchImages
            | ApiRoute::GetImage(_)
            | ApiRoute::ListPresets
            | ApiRoute::GetPreset(_)
            | ApiRoute::GetSettings
            | ApiRoute::ListKeys
            | ApiRoute::NotFound => Scope::Read,
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
        }
    }

    pub fn label(&self) -> &'static str {
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
            ApiRoute::GetSettings => "api_settings_get",
            ApiRoute::UpdateSettings => "api_settings_update",
            ApiRoute::ListKeys => "api_keys_list",
            ApiRoute::CreateKey => "api_keys_create",
            ApiRoute::DeleteKey(_) => "api_keys_delete",
            ApiRoute::NotFound => "api_not_found",
        }
    }
}

/// Authenticates, checks the route's scope, and runs it.
pub async fn handle(
    state: &AppState,
    route: ApiRoute,
    req: Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
    let principal = authenticate(state, &req).await?;
    if route == ApiRoute::NotFound {
        return Err(HttpError::new(ErrorCode::NotFound, "no such route"));
    }
    if !principal.scopes.allows(route.scope()) {
        return Err(HttpError::forbidden(format!(
            "this API key lacks the `{}` scope",
            match route.scope() {
                Scope::Read => "read",
                Scope::Write => "write",
            }
        )));
    }
    let who = &principal;
    let headers = req.headers().clone();
    let query = req.uri().query().unwrap_or("").to_string();
    match route {
        ApiRoute::Upload => images::upload(state, who, req).await,
        ApiRoute::ListImages => images::list(state, who, &headers, &query).await,
        ApiRoute::SearchImages => images::search(state, who, &headers, &query).await,
        ApiRoute::GetImage(id) => images::metadata(state, who, &headers, &id).await,
        ApiRoute::DeleteImage(id) => images::delete(state, who, &id).await,
        ApiRoute::DeletePath(rest) => images::delete_path(state, who, &rest).await,
        ApiRoute::SignedUrl(id) => {
            let body = read_json_opt(req).await?.unwrap_or_default();
            images::signed_url(state, who, &headers, &id, body).await
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
        ApiRoute::GetSettings => settings::get(state, &principal).await,
        ApiRoute::UpdateSettings => {
            let body = read_json_opt(req).await?.unwrap_or_default();
            settings::update(state, &principal, body).await
        }
        ApiRoute::ListKeys => list_keys(state, &principal).await,
        ApiRoute::CreateKey => create_key(state, &principal, read_json(req).await?).await,
        ApiRoute::DeleteKey(id) => delete_key(state, &principal, &id).await,
        ApiRoute::NotFound => Err(HttpError::new(ErrorCode::NotFound, "no such route")),
    }
}

async fn authenticate(state: &AppState, req: &Request<Incoming>) -> Result<Principal, HttpError> {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let principal = state
        .api_keys
        .authenticate(&state.store, header)
        .await
        .map_err(|e| match e {
            AuthError::Missing | AuthError::Invalid => {
                HttpError::new(ErrorCode::Unauthorized, e.to_string())
            }
            other => HttpError::internal(other.to_string()),
        })?;
    // A suspended account's keys stop working with it.
    let account = state
        .caches
        .meta
        .account(&state.store, &principal.account)
        .await?;
    match account {
        Some(a) if a.status == crate::store::AccountStatus::Active => Ok(principal),
        Some(_) => Err(HttpError::forbidden("account suspended")),
        None => Err(HttpError::new(
            ErrorCode::Unauthorized,
            "invalid, expired or revoked API key",
        )),
    }
}

/// The list/create shape of a key (never the secret).
pub fn key_json(k: &ApiKeyRecord) -> serde_json::Value {
    serde_json::json!({
        "id": k.id,
        "name": k.name,
        "key_prefix": k.key_prefix,
        "scopes": k.scopes,
        "created_at": k.created_at,
        "expires_at": k.expires_at,
        "last_used_at": k.last_used_at,
        "total_requests": k.total_requests,
    })
}

async fn list_keys(state: &AppState, who: &Principal) -> Result<Response<Body>, HttpError> {
    let keys = state.store.api_keys(&who.account).await?;
    let items: Vec<_> = keys.iter().map(key_json).collect();
    Ok(response::json(
        StatusCode::OK,
        &serde_json::json!({"api_keys": items, "total": items.len()}),
    ))
}

/// `POST /api/v1/settings/api-keys` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    pub name: String,
    pub scopes: Option<String>,
    pub expires_in_days: Option<u32>,
}

impl CreateKeyRequest {
    /// Checks the body; returns the scopes to grant.
    pub fn validate(&self) -> Result<Scopes, HttpError> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(HttpError::validation(
                "name must be 1 to 100 characters without control characters",
            ));
        }
        if let Some(days) = self.expires_in_days
            && !(1..=MAX_EXPIRY_DAYS).contains(&days)
        {
            return Err(HttpError::validation(format!(
                "expires_in_days must be an integer from 1 to {MAX_EXPIRY_DAYS}"
            )));
        }
        match &self.scopes {
            None => Ok(Scopes::ALL),
            Some(s) => Scopes::parse(s).ok_or_else(|| {
                HttpError::validation("scopes must be \"read\", \"write\" or \"read,write\"")
            }),
        }
    }
}

async fn create_key(
    state: &AppState,
    who: &Principal,
    body: CreateKeyRequest,
) -> Result<Response<Body>, HttpError> {
    let scopes = body.validate()?;
    // A key cannot grant more than the key that creates it.
    if (scopes.read && !who.scopes.read) || (scopes.write && !who.scopes.write) {
        return Err(HttpError::forbidden(
            "a key cannot create a key with scopes it does not have",
        ));
    }
    let issued = state
        .api_keys
        .issue(
            &state.store,
            &who.account,
            body.name.trim(),
            scopes,
            body.expires_in_days,
        )
        .await
        .map_err(|e| HttpError::internal(e.to_string()))?;
    audit(who, "api_key.create", &issued.record.id);
    Ok(response::json(
        StatusCode::CREATED,
        &issued_json(&issued.record, &issued.secret),
    ))
}

/// The one answer that carries a key's secret.
pub fn issued_json(k: &ApiKeyRecord, secret: &str) -> serde_json::Value {
    serde_json::json!({
        "id": k.id,
        "key": secret,
        "key_prefix": k.key_prefix,
        "name": k.name,
        "scopes": k.scopes,
        "created_at": k.created_at,
        "expires_at": k.expires_at,
    })
}

async fn delete_key(
    state: &AppState,
    who: &Principal,
    id: &str,
) -> Result<Response<Body>, HttpError> {
    if !state
        .api_keys
        .revoke(&state.store, &who.account, id)
        .await?
    {
        return Err(HttpError::new(ErrorCode::NotFound, "no such API key"));
    }
    audit(who, "api_key.revoke", id);
    Ok(response::json(
        StatusCode::OK,
        &serde_json::json!({"success": true, "message": "API key revoked"}),
    ))
}

/// The audit line of a mutating tenant call (the `imgnode::audit` log target).
pub(crate) fn audit(who: &Principal, action: &str, target: &str) {
    tracing::info!(
        target: "imgnode::audit",
        action,
        account = %who.account,
        actor = %who.key_id,
        target_id = %target,
    );
}

fn not_allowed() -> HttpError {
    HttpError::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this route",
    )
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
pub async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, HttpError> {
    parse_json(&read_body(req).await?)
}

/// Like [`read_json`] for optional bodies: an empty body or `null` (what the img-src SDKs send
/// for an omitted body) is `None`.
pub async fn read_json_opt<T: serde::de::DeserializeOwned>(
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
            ApiRoute::parse(&Method::GET, "/api/v1/settings/api-keys").unwrap(),
            ApiRoute::ListKeys
        );
        assert_eq!(
            ApiRoute::parse(&Method::DELETE, "/api/v1/settings/api-keys/key_1").unwrap(),
            ApiRoute::DeleteKey("key_1".into())
        );
        assert!(ApiRoute::parse(&Method::PUT, "/api/v1/settings/api-keys").is_err());
        assert_eq!(
            ApiRoute::parse(&Method::GET, "/api/v1/nothing").unwrap(),
            ApiRoute::NotFound
        );
        assert_eq!(ApiRoute::CreateKey.scope(), Scope::Write);
    }

    #[test]
    fn key_requests_are_validated() {
        let ok = |name: &str, scopes: Option<&str>, days: Option<u32>| {
            CreateKeyRequest {
                name: name.into(),
                scopes: scopes.map(String::from),
                expires_in_days: days,
            }
            .validate()
        };
        assert_eq!(ok("ci", None, None).unwrap(), Scopes::ALL);
        assert_eq!(ok("ci", Some("read"), Some(365)).unwrap().as_str(), "read");
        assert!(ok("", None, None).is_err());
        assert!(ok("ci", Some("admin"), None).is_err());
        assert!(ok("ci", None, Some(0)).is_err());
        assert!(ok("ci", None, Some(366)).is_err());
    }
}
