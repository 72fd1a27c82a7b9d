//! The account use cases: create an account with its owner key, change its plan or status,
//! issue and revoke API keys, export and erase it.
//!
//! Each flow exists once, here, and is called alike by the tenant API (`api`), the operator
//! API (`admin`) and the command line (`main`). Owns the order of each flow and the caches it
//! must invalidate; returns [`AccountError`], which `error.rs` maps to HTTP and the command
//! line prints. The documents an account is exported as (its settings object, a key's
//! listing) are shaped here too, because the API answers with the same shapes. Must never
//! build HTTP answers or decide routes or authentication.

mod erase;
mod export;

pub(crate) use erase::resume_erasures;
pub use erase::{Erased, erase};
pub(crate) use export::{Export, export};

use serde::Deserialize;
use serde_json::Value;

use crate::auth::{AuthError, IssuedKey, MAX_EXPIRY_DAYS, Principal, Scopes};
use crate::state::AppState;
use crate::store::{Account, AccountStatus, ApiKeyRecord, StoreError, validate_account_name};

/// Why an account operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("no such account")]
    NoSuchAccount,
    #[error("no such API key")]
    NoSuchKey,
    /// The account is being erased: nothing changes it any more.
    #[error("the account is being erased; nothing can change it any more")]
    Erasing,
    /// The request itself is wrong (a name, a plan, scopes, an expiry).
    #[error("{0}")]
    Invalid(String),
    /// Allowed to nobody in the caller's position (a key asking for more than it holds).
    #[error("{0}")]
    Refused(String),
    /// The name is taken (`Conflict`), the key limit is reached, or the database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Building the export failed before its first byte.
    #[error("export: {0}")]
    Export(String),
}

/// An account and its first key (shown once).
pub struct Created {
    pub account: Account,
    pub key: IssuedKey,
}

/// Creates `name` on `plan` (`free` when `None`) and issues its owner key: every scope,
/// `account` (export, erasure) included, without expiry.
pub async fn create(
    state: &AppState,
    name: &str,
    plan: Option<&str>,
) -> Result<Created, AccountError> {
    validate_account_name(name).map_err(AccountError::Invalid)?;
    let plan = plan.unwrap_or("free");
    check_plan(state, plan)?;
    let account = state.store.create_account(name, plan).await?;
    // This node, and the others through the cluster, may hold a cached "no such account".
    state.caches.meta.invalidate_account(&account.name).await;
    let key = state
        .api_keys
        .issue(&state.store, &account.name, "default", Scopes::OWNER, None)
        .await?;
    Ok(Created { account, key })
}

/// The account named `name`, whatever its status.
pub(crate) async fn get(state: &AppState, name: &str) -> Result<Account, AccountError> {
    state
        .store
        .account(name)
        .await?
        .ok_or(AccountError::NoSuchAccount)
}

/// Moves `name` to `plan`; its cached plan is dropped here and on the other nodes.
pub async fn set_plan(state: &AppState, name: &str, plan: &str) -> Result<Account, AccountError> {
    check_plan(state, plan)?;
    if !state.store.set_account_plan(name, plan).await? {
        return Err(missing_or_erasing(state, name).await);
    }
    state.caches.meta.invalidate_account(name).await;
    get(state, name).await
}

/// Suspends or resumes `name` (erasure is [`erase`], never a status change).
pub(crate) async fn set_status(
    state: &AppState,
    name: &str,
    status: AccountStatus,
) -> Result<Account, AccountError> {
    if status == AccountStatus::Erasing {
        return Err(AccountError::Invalid(
            "erase with DELETE /admin/v1/accounts/{name}".into(),
        ));
    }
    if !state.store.set_account_status(name, status).await? {
        return Err(missing_or_erasing(state, name).await);
    }
    state.caches.meta.invalidate_account(name).await;
    get(state, name).await
}

/// A request for a new API key, as both APIs take it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyRequest {
    pub(crate) name: String,
    /// `"read,write"` or `["read", "write"]`: parsed by [`Scopes::from_names`] either way.
    pub(crate) scopes: Option<Value>,
    expires_in_days: Option<u32>,
}

impl KeyRequest {
    /// Checks the request; returns the scopes to grant.
    fn validate(&self) -> Result<Scopes, AccountError> {
        let invalid = |m: String| Err(AccountError::Invalid(m));
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return invalid("name must be 1 to 100 characters without control characters".into());
        }
        if let Some(days) = self.expires_in_days
            && !(1..=MAX_EXPIRY_DAYS).contains(&days)
        {
            return invalid(format!(
                "expires_in_days must be an integer from 1 to {MAX_EXPIRY_DAYS}"
            ));
        }
        let scopes = match &self.scopes {
            None => return Ok(Scopes::DEFAULT),
            Some(Value::String(text)) => Scopes::parse(text),
            Some(Value::Array(items)) => items
                .iter()
                .map(Value::as_str)
                .collect::<Option<Vec<&str>>>()
                .and_then(Scopes::from_names),
            Some(_) => None,
        };
        scopes.map_or_else(
            || {
                invalid(
                    "scopes must name one or more of \"read\", \"write\", \"account\", \
                     comma-separated (\"read,write\") or as an array ([\"read\", \"write\"])"
                        .into(),
                )
            },
            Ok,
        )
    }
}

/// Issues a key for `account` on the operator's behalf: it stands on its own (no creator
/// key to be revoked with).
pub(crate) async fn issue_key(
    state: &AppState,
    account: &str,
    request: &KeyRequest,
) -> Result<IssuedKey, AccountError> {
    let scopes = request.validate()?;
    match state.store.account(account).await? {
        Some(a) if a.status != AccountStatus::Erasing => {}
        _ => return Err(missing_or_erasing(state, account).await),
    }
    Ok(state
        .api_keys
        .issue(
            &state.store,
            account,
            request.name.trim(),
            scopes,
            request.expires_in_days,
        )
        .await?)
}

/// Issues a key that the tenant `creator` asked for: never more scopes than the creator's,
/// never outliving it (the answer's `expires_at` is the capped one), revoked with it.
pub(crate) async fn issue_key_by(
    state: &AppState,
    creator: &Principal,
    request: &KeyRequest,
) -> Result<IssuedKey, AccountError> {
    let scopes = request.validate()?;
    if !scopes.within(creator.scopes) {
        return Err(AccountError::Refused(
            "a key cannot create a key with scopes it does not have".into(),
        ));
    }
    Ok(state
        .api_keys
        .issue_by(
            &state.store,
            creator,
            request.name.trim(),
            scopes,
            request.expires_in_days,
        )
        .await?)
}

/// Revokes `account`'s key `id` (and the keys it created), here and on the other nodes.
pub(crate) async fn revoke_key(
    state: &AppState,
    account: &str,
    id: &str,
) -> Result<(), AccountError> {
    if state.api_keys.revoke(&state.store, account, id).await? {
        Ok(())
    } else {
        Err(AccountError::NoSuchKey)
    }
}

/// Why a change to `name` was refused: it does not exist, or it is being erased.
async fn missing_or_erasing(state: &AppState, name: &str) -> AccountError {
    match state.store.account(name).await {
        Ok(Some(a)) if a.status == AccountStatus::Erasing => AccountError::Erasing,
        Ok(_) => AccountError::NoSuchAccount,
        Err(e) => e.into(),
    }
}

/// A plan must be defined in the config (`[plans.<name>]` or built in).
fn check_plan(state: &AppState, plan: &str) -> Result<(), AccountError> {
    if state.config.plans.contains_key(plan) {
        return Ok(());
    }
    let known: Vec<&str> = state.config.plans.keys().map(String::as_str).collect();
    Err(AccountError::Invalid(format!(
        "plan must be one of {}",
        known.join(", ")
    )))
}

/// The `UserSettings` object of the img-src API: the API's answer and the export's.
pub(crate) async fn settings_document(
    state: &AppState,
    account: &str,
) -> Result<Value, AccountError> {
    let stored = state.store.account_settings(account).await?;
    let record = get(state, account).await?;
    let (uploads, bytes) = state.store.account_totals(account).await?;
    let s = &stored.settings;
    Ok(serde_json::json!({
        "id": record.name,
        "username": record.name,
        "email": s.email,
        "plan": record.plan,
        "delivery_formats": s.delivery_formats,
        "default_quality": s.default_quality,
        "default_fit_mode": s.default_fit_mode,
        "default_max_width": s.default_max_width,
        "default_max_height": s.default_max_height,
        "theme": s.theme,
        "language": s.language,
        "allowed_widths": s.allowed_widths,
        "widths_policy": s.widths_policy,
        "max_quality": s.max_quality,
        "serve_originals": s.serve_originals,
        "created_at": record.created_at,
        "updated_at": stored.updated_at.unwrap_or(record.created_at),
        "total_uploads": uploads,
        "storage_used_bytes": bytes,
    }))
}

/// The list shape of a key (never the secret).
pub(crate) fn key_document(k: &ApiKeyRecord) -> Value {
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

/// The one shape that carries a key's secret: the answer to its creation.
pub(crate) fn issued_key_document(k: &IssuedKey) -> Value {
    serde_json::json!({
        "id": k.record.id,
        "key": k.secret,
        "key_prefix": k.record.key_prefix,
        "name": k.record.name,
        "scopes": k.record.scopes,
        "created_at": k.record.created_at,
        "expires_at": k.record.expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_requests_are_validated() {
        let ok = |name: &str, scopes: Option<&str>, days: Option<u32>| {
            KeyRequest {
                name: name.into(),
                scopes: scopes.map(Value::from),
                expires_in_days: days,
            }
            .validate()
        };
        assert_eq!(ok("ci", None, None).unwrap(), Scopes::DEFAULT);
        assert_eq!(ok("ci", Some("read"), Some(365)).unwrap().as_str(), "read");
        assert_eq!(
            ok("ci", Some("read, account"), None).unwrap().as_str(),
            "read,account"
        );
        let listed = KeyRequest {
            name: "ci".into(),
            scopes: Some(serde_json::json!(["account", "read"])),
            expires_in_days: None,
        };
        assert_eq!(listed.validate().unwrap().as_str(), "read,account");
        for bad in [
            serde_json::json!([]),
            serde_json::json!(["read", 1]),
            serde_json::json!(["admin"]),
            serde_json::json!(7),
        ] {
            let request = KeyRequest {
                name: "ci".into(),
                scopes: Some(bad.clone()),
                expires_in_days: None,
            };
            assert!(request.validate().is_err(), "{bad}");
        }
        assert!(ok("", None, None).is_err());
        assert!(ok("ci", Some("admin"), None).is_err());
        assert!(ok("ci", None, Some(0)).is_err());
        assert!(ok("ci", None, Some(366)).is_err());
    }
}
