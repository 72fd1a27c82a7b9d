//! `GET /api/v1/settings` and `PUT /api/v1/settings` (partial update), in img-src's
//! `UserSettings` shape.

use http::{Response, StatusCode};
use serde::Deserialize;

use crate::auth::Principal;
use crate::error::HttpError;
use crate::server::{Body, response};
use crate::state::AppState;
use crate::store::{
    AccountSettings, DELIVERY_FORMATS, FIT_MODES, MAX_ALLOWED_WIDTHS, THEMES, WIDTHS_POLICIES,
};

/// `PUT /api/v1/settings`: every field optional; only those given change. A nullable setting
/// (`email`, `default_max_width`, `default_max_height`, `max_quality`) sent as `null` is
/// cleared; `null` for any other field changes nothing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateSettings {
    #[serde(default, deserialize_with = "present")]
    pub(crate) email: Option<Option<String>>,
    delivery_formats: Option<Vec<String>>,
    default_quality: Option<i64>,
    default_fit_mode: Option<String>,
    #[serde(default, deserialize_with = "present")]
    default_max_width: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    default_max_height: Option<Option<i64>>,
    theme: Option<String>,
    language: Option<String>,
    /// `[]` allows every width again.
    allowed_widths: Option<Vec<i64>>,
    widths_policy: Option<String>,
    /// `null` removes the bound.
    #[serde(default, deserialize_with = "present")]
    max_quality: Option<Option<i64>>,
    serve_originals: Option<bool>,
}

/// Tells a field sent as `null` (`Some(None)`) from one not sent (`None`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

impl UpdateSettings {
    /// Applies the update to `current`, or names the first bad field.
    fn apply(self, mut current: AccountSettings) -> Result<AccountSettings, HttpError> {
        let bad = |m: String| Err(HttpError::validation(m));
        match self.email {
            Some(Some(email)) => {
                let email = email.trim().to_string();
                let plausible = email.len() <= 254
                    && email
                        .split_once('@')
                        .is_some_and(|(u, d)| !u.is_empty() && d.contains('.'))
                    && !email.chars().any(|c| c.is_whitespace() || c.is_control());
                if !plausible {
                    return bad("email must be an address like name@example.com".into());
                }
                current.email = Some(email);
            }
            Some(None) => current.email = None,
            None => {}
        }
        if let Some(formats) = self.delivery_formats {
            let mut chosen: Vec<String> = Vec::new();
            for f in formats {
                if !DELIVERY_FORMATS.contains(&f.as_str()) {
                    return bad(format!(
                        "delivery_formats entries must be among {}",
                        DELIVERY_FORMATS.join(", ")
                    ));
                }
                if !chosen.contains(&f) {
                    chosen.push(f);
                }
            }
            if chosen.is_empty() {
                return bad("delivery_formats must name at least one format".into());
            }
            current.delivery_formats = chosen;
        }
        if let Some(q) = self.default_quality {
            match u8::try_from(q) {
                Ok(q) if (1..=100).contains(&q) => current.default_quality = q,
                _ => return bad("default_quality must be an integer from 1 to 100".into()),
            }
        }
        if let Some(fit) = self.default_fit_mode {
            if !FIT_MODES.contains(&fit.as_str()) {
                return bad(format!(
                    "default_fit_mode must be one of {}",
                    FIT_MODES.join(", ")
                ));
            }
            current.default_fit_mode = fit;
        }
        for (name, value, slot) in [
            (
                "default_max_width",
                self.default_max_width,
                &mut current.default_max_width,
            ),
            (
                "default_max_height",
                self.default_max_height,
                &mut current.default_max_height,
            ),
        ] {
            match value {
                Some(Some(v)) => match u32::try_from(v) {
                    Ok(v) if (1..=10_000).contains(&v) => *slot = Some(v),
                    _ => return bad(format!("{name} must be an integer from 1 to 10000")),
                },
                Some(None) => *slot = None,
                None => {}
            }
        }
        if let Some(theme) = self.theme {
            if !THEMES.contains(&theme.as_str()) {
                return bad(format!("theme must be one of {}", THEMES.join(", ")));
            }
            current.theme = theme;
        }
        if let Some(language) = self.language {
            let ok = (2..=10).contains(&language.len())
                && language
                    .bytes()
                    .all(|b| b.is_ascii_alphabetic() || b == b'-');
            if !ok {
                return bad("language must be a tag like \"en\" or \"pt-BR\"".into());
            }
            current.language = language;
        }
        if let Some(widths) = self.allowed_widths {
            let mut chosen: Vec<u32> = Vec::new();
            for w in widths {
                match u32::try_from(w) {
                    Ok(w) if (1..=10_000).contains(&w) => chosen.push(w),
                    _ => {
                        return bad(
                            "allowed_widths entries must be integers from 1 to 10000".into()
                        );
                    }
                }
            }
            chosen.sort_unstable();
            chosen.dedup();
            if chosen.len() > MAX_ALLOWED_WIDTHS {
                return bad(format!(
                    "allowed_widths may list at most {MAX_ALLOWED_WIDTHS} widths"
                ));
            }
            current.allowed_widths = chosen;
        }
        if let Some(rule) = self.widths_policy {
            if !WIDTHS_POLICIES.contains(&rule.as_str()) {
                return bad(format!(
                    "widths_policy must be one of {}",
                    WIDTHS_POLICIES.join(", ")
                ));
            }
            current.widths_policy = rule;
        }
        if let Some(serve) = self.serve_originals {
            current.serve_originals = serve;
        }
        match self.max_quality {
            None => {}
            Some(None) => current.max_quality = None,
            Some(Some(q)) => match u8::try_from(q) {
                Ok(q) if (1..=100).contains(&q) => current.max_quality = Some(q),
                _ => return bad("max_quality must be an integer from 1 to 100, or null".into()),
            },
        }
        Ok(current)
    }
}

pub(crate) async fn get(state: &AppState, who: &Principal) -> Result<Response<Body>, HttpError> {
    let settings = crate::accounts::settings_document(state, &who.account).await?;
    Ok(response::json(
        StatusCode::OK,
        &serde_json::json!({ "settings": settings }),
    ))
}

pub(crate) async fn update(
    state: &AppState,
    who: &Principal,
    body: UpdateSettings,
) -> Result<Response<Body>, HttpError> {
    let current = state.store.account_settings(&who.account).await?.settings;
    let updated = body.apply(current)?;
    state
        .store
        .put_account_settings(&who.account, &updated)
        .await?;
    // Delivery reads the defaults from the metadata cache: drop them before answering.
    state.caches.meta.invalidate_settings(&who.account).await;
    tracing::info!(
        target: "imgnode::audit",
        action = "settings.update",
        account = %who.account,
        actor = %who.key_id,
    );
    let settings = crate::accounts::settings_document(state, &who.account).await?;
    Ok(response::json(
        StatusCode::OK,
        &serde_json::json!({ "settings": settings, "message": "Settings updated" }),
    ))
}

/// `GET /api/v1/usage`: the plan, its limits (`null` = unlimited) and this month's counts,
/// including what is counted in memory and not flushed yet.
pub(crate) async fn usage(state: &AppState, who: &Principal) -> Result<Response<Body>, HttpError> {
    let plan = state.plan(&who.plan);
    let used = state.usage.current(&state.store, &who.account).await?;
    let (images, bytes) = state.store.account_totals(&who.account).await?;
    let period = crate::usage::period_of(crate::store::now_unix());
    let (start, end) = crate::usage::period_bounds(&period);
    let mut plan_name = who.plan.clone();
    if let Some(first) = plan_name.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    let bytes_f = bytes as f64;
    // (ours) The months before this one, oldest first, then this one as counted now: what
    // the console charts. Rows older than `retention.usage_logs` are gone already.
    let mut history: Vec<serde_json::Value> = state
        .store
        .usage_history(&who.account)
        .await?
        .into_iter()
        .filter(|(p, _)| *p < period)
        .rev()
        .take(USAGE_HISTORY_MONTHS - 1)
        .map(|(p, c)| usage_month(&p, &c))
        .collect();
    history.reverse();
    history.push(usage_month(&period, &used));
    Ok(response::json(
        StatusCode::OK,
        &serde_json::json!({
            "plan": who.plan,
            "plan_name": plan_name,
            "plan_status": "active",
            "subscription_ends_at": null,
            "plan_limits": {
                "max_uploads_per_month": plan.max_uploads_per_month,
                "max_storage_bytes": plan.max_storage_bytes,
                "max_bandwidth_per_month": plan.max_bandwidth_per_month,
                "max_api_requests_per_month": plan.max_api_requests_per_month,
                "max_transformations_per_month": plan.max_transformations_per_month,
            },
            "total_images": images,
            "storage_used_bytes": bytes,
            "storage_used_mb": (bytes_f / 1_048_576.0 * 100.0).round() / 100.0,
            "storage_used_gb": (bytes_f / 1_073_741_824.0 * 1000.0).round() / 1000.0,
            "current_period": {
                "period": period,
                "period_start": start,
                "period_end": end,
                "uploads": used.uploads,
                "bandwidth_bytes": used.bandwidth_bytes,
                "api_requests": used.api_requests,
                "transformations": used.transformations,
            },
            "credits": {"storage_bytes": 0, "api_requests": 0, "transformations": 0},
            "history": history,
        }),
    ))
}

/// Months `GET /usage` lists in `history`, this one included.
const USAGE_HISTORY_MONTHS: usize = 12;

fn usage_month(period: &str, c: &crate::store::UsageCounts) -> serde_json::Value {
    serde_json::json!({
        "period": period,
        "uploads": c.uploads,
        "bandwidth_bytes": c.bandwidth_bytes,
        "api_requests": c.api_requests,
        "transformations": c.transformations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(json: serde_json::Value) -> Result<AccountSettings, HttpError> {
        serde_json::from_value::<UpdateSettings>(json)
            .map_err(|e| HttpError::validation(e.to_string()))?
            .apply(AccountSettings::default())
    }

    #[test]
    fn partial_updates_change_only_what_is_given() {
        let s = update(serde_json::json!({"default_quality": 55, "theme": "dark"})).unwrap();
        assert_eq!(s.default_quality, 55);
        assert_eq!(s.theme, "dark");
        assert_eq!(s.default_fit_mode, "cover");
        assert_eq!(s.language, "en");
    }

    #[test]
    fn null_clears_a_nullable_setting_and_changes_nothing_else() {
        let set = update(serde_json::json!({
            "email": "a@example.com", "default_max_width": 800, "default_max_height": 600,
            "max_quality": 70
        }))
        .unwrap();
        let cleared = serde_json::from_value::<UpdateSettings>(serde_json::json!({
            "email": null, "default_max_width": null, "default_max_height": null,
            "max_quality": null, "theme": null, "default_quality": null
        }))
        .unwrap()
        .apply(set.clone())
        .unwrap();
        assert_eq!(cleared.email, None);
        assert_eq!(cleared.default_max_width, None);
        assert_eq!(cleared.default_max_height, None);
        assert_eq!(cleared.max_quality, None);
        assert_eq!(cleared.theme, set.theme);
        assert_eq!(cleared.default_quality, set.default_quality);
        // Absent fields keep their values.
        let kept = serde_json::from_value::<UpdateSettings>(serde_json::json!({"theme": "dark"}))
            .unwrap()
            .apply(set)
            .unwrap();
        assert_eq!(kept.default_max_width, Some(800));
        assert_eq!(kept.email.as_deref(), Some("a@example.com"));
    }

    #[test]
    fn bad_values_name_their_field() {
        for (body, field) in [
            (serde_json::json!({"default_quality": 0}), "default_quality"),
            (
                serde_json::json!({"default_quality": 101}),
                "default_quality",
            ),
            (
                serde_json::json!({"default_fit_mode": "squash"}),
                "default_fit_mode",
            ),
            (
                serde_json::json!({"default_max_width": 0}),
                "default_max_width",
            ),
            (
                serde_json::json!({"default_max_height": 20000}),
                "default_max_height",
            ),
            (serde_json::json!({"theme": "neon"}), "theme"),
            (serde_json::json!({"language": "x"}), "language"),
            (
                serde_json::json!({"delivery_formats": ["gif"]}),
                "delivery_formats",
            ),
            (
                serde_json::json!({"delivery_formats": []}),
                "delivery_formats",
            ),
            (serde_json::json!({"email": "nope"}), "email"),
        ] {
            let err = update(body.clone()).unwrap_err();
            assert!(err.message.contains(field), "{body}: {}", err.message);
        }
        assert!(update(serde_json::json!({"unknown": 1})).is_err());
    }
}
