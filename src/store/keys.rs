//! API key rows. Secrets never reach this module: callers pass the SHA-256 of a key.
//!
//! Creations of one account are serialised on the account's row, so the live-key limit
//! holds under concurrency, on every node.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, now_unix};

/// An API key as stored (no secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub account: String,
    pub name: String,
    /// The first characters of the key, shown to its owner to tell keys apart.
    pub key_prefix: String,
    /// Comma-separated scope names in the order `read,write,account` (see `auth::Scopes`).
    pub scopes: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub total_requests: i64,
}

/// What `Store::create_api_key` records.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: String,
    pub account: String,
    pub name: String,
    pub key_hash: String,
    pub key_prefix: String,
    pub scopes: String,
    pub expires_at: Option<i64>,
}

const COLUMNS: &str = "id, account, name, key_prefix, scopes, created_at, expires_at, revoked_at, \
                       last_used_at, total_requests";

impl Store {
    /// Records a key. `Conflict` when the account already has `max_live` live (unrevoked,
    /// unexpired) keys.
    pub async fn create_api_key(
        &self,
        key: &NewApiKey,
        max_live: u32,
    ) -> Result<ApiKeyRecord, StoreError> {
        let now = now_unix();
        let mut tx = self.pool.begin().await?;
        // Serialises this account's creations (see the module doc).
        super::images::lock_account(&mut tx, &key.account).await?;
        let live: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM api_keys WHERE account = $1
             AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(&key.account)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        if live >= i64::from(max_live) {
            return Err(StoreError::Conflict(format!(
                "the account has {live} live API keys, the most it may have \
                 (auth.max_keys_per_account = {max_live}); revoke one first"
            )));
        }
        sqlx::query(
            "INSERT INTO api_keys (id, account, name, key_hash, key_prefix, scopes, created_at,
                                   expires_at, total_requests)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0)",
        )
        .bind(&key.id)
        .bind(&key.account)
        .bind(&key.name)
        .bind(&key.key_hash)
        .bind(&key.key_prefix)
        .bind(&key.scopes)
        .bind(now)
        .bind(key.expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ApiKeyRecord {
            id: key.id.clone(),
            account: key.account.clone(),
            name: key.name.clone(),
            key_prefix: key.key_prefix.clone(),
            scopes: key.scopes.clone(),
            created_at: now,
            expires_at: key.expires_at,
            revoked_at: None,
            last_used_at: None,
            total_requests: 0,
        })
    }

    /// The key with this secret hash, revoked or not (the caller decides).
    pub async fn api_key_by_hash(
        &self,
        key_hash: &str,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE key_hash = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(key_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| key_from_row(&r)).transpose()
    }

    /// An account's keys, newest first, revoked ones left out.
    pub async fn api_keys(&self, account: &str) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM api_keys WHERE account = $1 AND revoked_at IS NULL
             ORDER BY created_at DESC, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(account)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Revokes one of an account's keys; returns its secret hash (to evict it from caches),
    /// or `None` when the account has no such live key.
    pub async fn revoke_api_key(
        &self,
        account: &str,
        id: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1
             WHERE account = $2 AND id = $3 AND revoked_at IS NULL RETURNING key_hash",
        )
        .bind(now_unix())
        .bind(account)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| r.try_get("key_hash").map_err(StoreError::from))
            .transpose()
    }

    /// Adds aggregated usage to a key (called by the periodic flush, not per request).
    pub async fn record_api_key_usage(
        &self,
        id: &str,
        requests: i64,
        last_used_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE api_keys SET total_requests = total_requests + $1,
                    last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < $2
                                        THEN $2 ELSE last_used_at END
             WHERE id = $3",
        )
        .bind(requests)
        .bind(last_used_at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

fn key_from_row(r: &AnyRow) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        id: r.try_get("id")?,
        account: r.try_get("account")?,
        name: r.try_get("name")?,
        key_prefix: r.try_get("key_prefix")?,
        scopes: r.try_get("scopes")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
        last_used_at: r.try_get("last_used_at")?,
        total_requests: r.try_get("total_requests")?,
    })
}
