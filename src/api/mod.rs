//! The tenant API under `/api/v1` on the public listener, in the img-src shapes.
//!
//! Every route declares the scope it needs in the route table; every call is authenticated
//! with an API key (`auth`). Today: settings and API key management. Must never touch caches
//! except through `cache` purge and invalidation, and never answer anything but JSON.

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
        let segments: Vec<&str> = rest.split('/').collect();
        let route = match (method, segments.as_slice()) {
            (&Method::GET, ["settings"]) => ApiRoute::GetSettings,
            (&Method::PUT, ["settings"]) => ApiRoute::UpdateSettings,
            (_, ["settings"]) => {
                return Err(HttpError::new(
                    ErrorCode::MethodNotAllowed,
                    "method not allowed on this route",
                ));
            }
            (&Method::GET, ["settings", "api-keys"]) => ApiRoute::ListKeys,
            (&Method::POST, ["settings", "api-keys"]) => ApiRoute::CreateKey,
            (&Method::DELETE, ["settings", "api-keys", id]) if !id.is_empty() => {
                ApiRoute::DeleteKey((*id).to_string())
            }
            (_, ["settings", "api-keys"]) | (_, ["settings", "api-keys", _]) => {
                return Err(HttpError::new(
                    ErrorCode::MethodNotAllowed,
                    "method not allowed on this route",
                ));
            }
            _ => ApiRoute::NotFound,
        };
        Ok(route)
    }

    /// The scope a key needs for this route.
    fn scope(&self) -> Scope {
        match self {
            ApiRoute::GetSettings | ApiRoute::ListKeys | ApiRoute::NotFound => Scope::Read,
            ApiRoute::UpdateSettings | ApiRoute::CreateKey | ApiRoute::DeleteKey(_) => Scope::Write,
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
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
    match route {
        ApiRoute::GetSettings => settings::get(state, &principal).await,
        ApiRoute::UpdateSettings => {
            settings::update(state, &principal, read_json(req).await?).await
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
    tracing::info!(
        target: "imgnode::audit",
        action = "api_key.create",
        account = %who.account,
        actor = %who.key_id,
        target_id = %issued.record.id,
    );
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
    tracing::info!(
        target: "imgnode::audit",
        action = "api_key.revoke",
        account = %who.account,
        actor = %who.key_id,
        target_id = %id,
    );
    Ok(response::json(
        StatusCode::OK,
        &serde_json::json!({"success": true, "message": "API key revoked"}),
    ))
}

/// Reads a JSON body of at most 64 KiB.
pub async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, HttpError> {
    let body: Bytes = Limited::new(req.into_body(), MAX_JSON_BODY)
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
