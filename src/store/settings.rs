//! Tenant settings: the img-src `UserSettings` fields a tenant can change, stored as one JSON
//! document per account. Delivery reads `default_quality`, `default_fit_mode` and the default
//! maximum size for URLs that do not set them.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{Store, StoreError, now_unix};

pub(crate) const FIT_MODES: &[&str] = &["cover", "contain", "fill", "scale-down"];
pub(crate) const THEMES: &[&str] = &["light", "dark", "system"];
pub(crate) const DELIVERY_FORMATS: &[&str] = &["webp", "avif", "jpeg", "png", "jxl"];

/// `delivery_formats` of an account that never chose: `format=auto` prefers AVIF, then WebP
/// (the list's order is the preference).
pub(crate) const DEFAULT_DELIVERY_FORMATS: &[&str] = &["avif", "webp", "jpeg", "png"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct AccountSettings {
    pub(crate) email: Option<String>,
    pub(crate) delivery_formats: Vec<String>,
    pub(crate) default_quality: u8,
    pub(crate) default_fit_mode: String,
    pub(crate) default_max_width: Option<u32>,
    pub(crate) default_max_height: Option<u32>,
    pub(crate) theme: String,
    pub(crate) language: String,
    /// Output widths (device pixels) delivery renders; empty: any width.
    pub(crate) allowed_widths: Vec<u32>,
    /// What a width outside `allowed_widths` gets: `snap` (up to the next allowed one) or
    /// `refuse` (400).
    pub(crate) widths_policy: String,
    /// Highest `q` delivery renders; higher requests get this one.
    pub(crate) max_quality: Option<u8>,
    /// Whether the stored extension without parameters answers the original's bytes even when
    /// they exceed `default_max_width`/`height` (otherwise such a URL is rendered within them,
    /// and the full-size original takes a signed URL).
    pub(crate) serve_originals: bool,
}

impl AccountSettings {
    /// Whether some URL answers differently under `other`: every field but the contact
    /// email and the console's theme and language.
    pub(crate) fn renders_differently(&self, other: &AccountSettings) -> bool {
        let rendering = |s: &AccountSettings| AccountSettings {
            email: None,
            theme: String::new(),
            language: String::new(),
            ..s.clone()
        };
        rendering(self) != rendering(other)
    }
}

/// Values of `widths_policy`.
pub(crate) const WIDTHS_POLICIES: &[&str] = &["snap", "refuse"];

/// Most entries `allowed_widths` may have.
pub(crate) const MAX_ALLOWED_WIDTHS: usize = 64;

impl Default for AccountSettings {
    fn default() -> Self {
        AccountSettings {
            email: None,
            delivery_formats: DEFAULT_DELIVERY_FORMATS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            default_quality: 80,
            default_fit_mode: "cover".into(),
            default_max_width: None,
            default_max_height: None,
            theme: "system".into(),
            language: "en".into(),
            allowed_widths: Vec::new(),
            widths_policy: "snap".into(),
            max_quality: None,
            serve_originals: false,
        }
    }
}

/// Settings with their bookkeeping, as the API answers them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredSettings {
    pub(crate) settings: AccountSettings,
    /// Unix seconds of the last change; `None` while the defaults were never changed.
    pub(crate) updated_at: Option<i64>,
}

impl Store {
    pub(crate) async fn account_settings(
        &self,
        account: &str,
    ) -> Result<StoredSettings, StoreError> {
        let row =
            sqlx::query("SELECT settings, updated_at FROM account_settings WHERE account = $1")
                .bind(account)
                .fetch_optional(&self.pool)
                .await?;
        match row {
            None => Ok(StoredSettings {
                settings: AccountSettings::default(),
                updated_at: None,
            }),
            Some(r) => {
                let text: String = r.try_get("settings")?;
                let settings = serde_json::from_str(&text)
                    .map_err(|e| StoreError::CorruptRow(format!("settings of {account}: {e}")))?;
                Ok(StoredSettings {
                    settings,
                    updated_at: Some(r.try_get("updated_at")?),
                })
            }
        }
    }

    pub(crate) async fn put_account_settings(
        &self,
        account: &str,
        settings: &AccountSettings,
    ) -> Result<i64, StoreError> {
        let now = now_unix();
        let text = serde_json::to_string(settings)
            .map_err(|e| StoreError::CorruptRow(format!("settings: {e}")))?;
        let mut tx = self.pool.begin().await?;
        // A write first (SQLite's write lock now, not a failed upgrade of the read below).
        super::images::lock_account(&mut tx, account).await?;
        let before: AccountSettings =
            sqlx::query("SELECT settings FROM account_settings WHERE account = $1")
                .bind(account)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get::<String, _>("settings"))
                .transpose()?
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
        sqlx::query(
            "INSERT INTO account_settings (account, settings, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (account) DO UPDATE SET settings = $2, updated_at = $3",
        )
        .bind(account)
        .bind(text)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let queued = if before.renders_differently(settings) {
            let tags = [crate::edge::tags::account(account)];
            self.enqueue_purge(&mut tx, account, &tags, "settings changed")
                .await?
        } else {
            false
        };
        tx.commit().await?;
        self.purge_committed(queued);
        Ok(now)
    }

    /// Number of images and bytes of originals an account holds.
    pub(crate) async fn account_totals(&self, account: &str) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(size), 0) AS BIGINT) AS bytes
             FROM images WHERE account = $1",
        )
        .bind(account)
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("n")?, row.try_get("bytes")?))
    }
}
