//! API key rows. Secrets never reach this module: callers pass the SHA-256 of a key.
//!
//! A key created through the tenant API records its creator (`parent`: a key id, or
//! `jwt:{sub}` for a token); revoking a key revokes every key below it, in one transaction.
//! Creations and revocations of one account are serialised on the account's row, so the
//! live-key limit and "no child of a revoked key" hold under concurrency, on every node.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, now_unix};

/// An API key as stored (no secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub(crate) account: String,
    pub(crate) name: String,
    /// The first characters of the key, shown to its owner to tell keys apart.
    pub key_prefix: String,
    /// Comma-separated scope names in the order `read,write,account` (see `auth::Scopes`).
    pub scopes: String,
    pub(crate) created_at: i64,
    pub(crate) expires_at: Option<i64>,
    pub(crate) revoked_at: Option<i64>,
    pub(crate) last_used_at: Option<i64>,
    pub(crate) total_requests: i64,
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
    /// The creating key's id, `jwt:{sub}` for a token, `None` for the operator (and for keys
    /// made before creators were recorded).
    pub parent: Option<String>,
}

const COLUMNS: &str = "id, account, name, key_prefix, scopes, created_at, expires_at, revoked_at, \
                       last_used_at, total_requests";

impl Store {
    /// Records a key. `Conflict` when the account already has `max_live` live (unrevoked,
    /// unexpired) keys; `NotFound` when the parent key is no longer live (revoked or expired
    /// since it authenticated the request).
    pub async fn create_api_key(
        &self,
        key: &NewApiKey,
        max_live: u32,
    ) -> Result<ApiKeyRecord, StoreError> {
        let now = now_unix();
        let mut tx = self.pool.begin().await?;
        // Serialises this account's creations and revocations (see the module doc).
        super::images::lock_account(&mut tx, &key.account).await?;
        if let Some(parent) = key.parent.as_deref().filter(|p| !p.starts_with("jwt:")) {
            let live = sqlx::query(
                "SELECT 1 AS one FROM api_keys WHERE account = $1 AND id = $2
                 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $3)",
            )
            .bind(&key.account)
            .bind(parent)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            if live.is_none() {
                return Err(StoreError::NotFound);
            }
        }
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
                                   expires_at, total_requests, parent)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9)",
        )
        .bind(&key.id)
        .bind(&key.account)
        .bind(&key.name)
        .bind(&key.key_hash)
        .bind(&key.key_prefix)
        .bind(&key.scopes)
        .bind(now)
        .bind(key.expires_at)
        .bind(&key.parent)
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
    pub(crate) async fn api_key_by_hash(
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

    /// Revokes one of an account's keys and every live key it created, transitively, in one
    /// transaction; returns their secret hashes (to evict them from caches), the key's own
    /// first, or `None` when the account has no such live key.
    pub(crate) async fn revoke_api_key(
        &self,
        account: &str,
        id: &str,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let now = now_unix();
        let mut tx = self.pool.begin().await?;
        super::images::lock_account(&mut tx, account).await?;
        let Some(row) = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1
             WHERE account = $2 AND id = $3 AND revoked_at IS NULL RETURNING id, key_hash",
        )
        .bind(now)
        .bind(account)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let mut hashes = vec![row.try_get::<String, _>("key_hash")?];
        let mut ids = vec![row.try_get::<String, _>("id")?];
        // Descendants, by a recursive query (SQLite and PostgreSQL alike). The walk passes
        // through keys revoked earlier, so nothing below them is missed.
        let rows = sqlx::query(
            "WITH RECURSIVE tree (id) AS (
                 SELECT id FROM api_keys WHERE account = $1 AND parent = $2
                 UNION
                 SELECT k.id FROM api_keys k JOIN tree t ON k.parent = t.id
                 WHERE k.account = $1
             )
             UPDATE api_keys SET revoked_at = $3
             WHERE id IN (SELECT id FROM tree) AND revoked_at IS NULL RETURNING id, key_hash",
        )
        .bind(account)
        .bind(id)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        for row in &rows {
            hashes.push(row.try_get("key_hash")?);
            ids.push(row.try_get("id")?);
        }
        // The console sessions acting as these keys, and the passkeys registered under them,
        // go with them (see `store::console`).
        for id in &ids {
            for table in ["console_sessions", "console_passkeys"] {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM {table} WHERE account = $1 AND key_id = $2"
                )))
                .bind(account)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(Some(hashes))
    }

    /// Adds aggregated usage to a key (called by the periodic flush, not per request).
    pub(crate) async fn record_api_key_usage(
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
