//! Presets of the tenant API (`/api/v1/settings/presets`), in img-src's `Preset` shape.
//!
//! A preset's params are validated with the delivery grammar (`delivery::preset`), so a
//! stored preset always resolves. Every write invalidates the account's cached presets before
//! it answers; the cache key of a render carries the preset's resolved content, so an edit
//! changes what new requests get without a purge.

use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Principal;
use crate::config::Feature;
use crate::delivery::preset;
use crate::error::{ErrorCode, HttpError};
use crate::server::{Body, response};
use crate::state::AppState;
use crate::store::{PresetChange, PresetRecord, StoreError};

const MAX_NAME: usize = 50;
const MAX_DESCRIPTION: usize = 200;

fn preset_json(p: &PresetRecord) -> Value {
    let params: Value = serde_json::from_str(&p.params).unwrap_or_else(|_| json!({}));
    json!({
        "id": p.id,
        "name": p.name,
        "description": p.description,
        "params": params,
        "created_at": p.created_at,
        "updated_at": p.updated_at,
        "usage_count": p.usage_count,
    })
}

fn check_name(name: &str) -> Result<(), HttpError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(HttpError::validation(
            "name must be 1 to 50 characters from A-Z, a-z, 0-9, `_` and `-`",
        ))
    }
}

fn check_description(description: Option<&str>) -> Result<(), HttpError> {
    match description {
        Some(d) if d.chars().count() > MAX_DESCRIPTION || d.chars().any(char::is_control) => {
            Err(HttpError::validation(
                "description must be at most 200 characters without control characters, or null",
            ))
        }
        _ => Ok(()),
    }
}

/// The stored form of `params`: validated, then kept as the client wrote it, less the keys
/// it set to `null` (unset).
fn check_params(params: &Value) -> Result<String, HttpError> {
    preset::parse(params).map_err(HttpError::validation)?;
    let mut stored = params.clone();
    if let Value::Object(map) = &mut stored {
        map.retain(|_, v| !v.is_null());
    }
    Ok(stored.to_string())
}

pub(crate) async fn list(state: &AppState, who: &Principal) -> Result<Response<Body>, HttpError> {
    let presets = state.store.presets(&who.account).await?;
    let items: Vec<Value> = presets.iter().map(preset_json).collect();
    Ok(response::json(
        StatusCode::OK,
        &json!({"presets": items, "total": items.len()}),
    ))
}

pub(crate) async fn get(
    state: &AppState,
    who: &Principal,
    id: &str,
) -> Result<Response<Body>, HttpError> {
    let preset = state
        .store
        .preset(&who.account, id)
        .await?
        .ok_or_else(|| HttpError::new(ErrorCode::NotFound, "no such preset"))?;
    Ok(response::json(StatusCode::OK, &preset_json(&preset)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreatePreset {
    pub(crate) name: String,
    #[serde(default)]
    description: Option<String>,
    params: Value,
}

pub(crate) async fn create(
    state: &AppState,
    who: &Principal,
    body: Option<CreatePreset>,
) -> Result<Response<Body>, HttpError> {
    super::require(state, who, Feature::Presets)?;
    let body =
        body.ok_or_else(|| HttpError::validation("a JSON body {name, params} is required"))?;
    check_name(&body.name)?;
    check_description(body.description.as_deref())?;
    let params = check_params(&body.params)?;
    let id = format!("preset_{}", crate::auth::random_hex(8)?);
    let preset = state
        .store
        .create_preset(
            &id,
            &who.account,
            &body.name,
            body.description.as_deref(),
            &params,
            state.plan(&who.plan).max_presets,
        )
        .await
        .map_err(|e| match e {
            StoreError::Limit(_) => HttpError::forbidden(format!(
                "the {} plan allows at most {} presets",
                who.plan,
                state.plan(&who.plan).max_presets
            )),
            other => other.into(),
        })?;
    state.caches.meta.bump(&who.account);
    Ok(response::json(StatusCode::CREATED, &preset_json(&preset)))
}

/// `PUT` body: every field optional; `description: null` clears it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdatePreset {
    pub(crate) name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    description: Option<Option<String>>,
    params: Option<Value>,
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

pub(crate) async fn update(
    state: &AppState,
    who: &Principal,
    id: &str,
    body: Option<UpdatePreset>,
) -> Result<Response<Body>, HttpError> {
    // Presets made under a plan that had them keep working in URLs and can be deleted;
    // changing them is using the feature.
    super::require(state, who, Feature::Presets)?;
    let body = body.unwrap_or_default();
    if let Some(name) = &body.name {
        check_name(name)?;
    }
    if let Some(description) = &body.description {
        check_description(description.as_deref())?;
    }
    let params = body.params.as_ref().map(check_params).transpose()?;
    let preset = state
        .store
        .update_preset(
            &who.account,
            id,
            PresetChange {
                name: body.name,
                description: body.description,
                params,
            },
        )
        .await?
        .ok_or_else(|| HttpError::new(ErrorCode::NotFound, "no such preset"))?;
    state.caches.meta.bump(&who.account);
    Ok(response::json(StatusCode::OK, &preset_json(&preset)))
}

pub(crate) async fn delete(
    state: &AppState,
    who: &Principal,
    id_or_name: &str,
) -> Result<Response<Body>, HttpError> {
    let preset = state
        .store
        .delete_preset(&who.account, id_or_name)
        .await?
        .ok_or_else(|| HttpError::new(ErrorCode::NotFound, "no such preset"))?;
    state.caches.meta.bump(&who.account);
    Ok(response::json(
        StatusCode::OK,
        &json!({"success": true, "message": format!("preset {} deleted", preset.name)}),
    ))
}
