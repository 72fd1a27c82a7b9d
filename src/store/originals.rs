//! Rows of the encrypted originals: per account and content hash, the name of its sealed
//! object and its data key wrapped by the KEK (`original_keys`, migration 16).
//!
//! A row exists exactly as long as its object may be read: deleting the row is what shreds
//! the object (every copy of it, wherever it lies, becomes unreadable), so rows go before
//! their objects, and with the account in an erasure's own transaction.

use sqlx::Row;

use super::{Store, StoreError, now_unix};

/// One original's sealed object and wrapped data key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub object: String,
    pub kek_id: String,
    pub wrapped: String,
}

fn stored_key(r: &sqlx::any::AnyRow) -> Result<StoredKey, StoreError> {
    Ok(StoredKey {
        object: r.try_get("object")?,
        kek_id: r.try_get("kek_id")?,
        wrapped: r.try_get("wrapped_key")?,
    })
}

impl Store {
    /// The sealed object and key of `account`'s original `hash`; `None` for an original
    /// stored before encryption (plaintext, named by its hash) or not stored at all.
    pub(crate) async fn original_key(
        &self,
        account: &str,
        hash: &str,
    ) -> Result<Option<StoredKey>, StoreError> {
        sqlx::query(
            "SELECT object, kek_id, wrapped_key FROM original_keys WHERE account = $1 AND hash = $2",
        )
        .bind(account)
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(stored_key)
        .transpose()
    }

    /// Records `key` for `account`'s `hash` unless a row exists, and returns the row in force
    /// (the first writer wins; a loser deletes the object it wrote).
    pub(crate) async fn insert_original_key(
        &self,
        account: &str,
        hash: &str,
        key: &StoredKey,
    ) -> Result<StoredKey, StoreError> {
        sqlx::query(
            "INSERT INTO original_keys (account, hash, object, kek_id, wrapped_key, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (account, hash) DO NOTHING",
        )
        .bind(account)
        .bind(hash)
        .bind(&key.object)
        .bind(&key.kek_id)
        .bind(&key.wrapped)
        .bind(now_unix())
        .execute(&self.pool)
        .await?;
        self.original_key(account, hash)
            .await?
            .ok_or_else(|| StoreError::CorruptRow(format!("original key of {hash} vanished")))
    }

    /// Deletes `account`'s key of `hash` when no image of the account references the hash
    /// any more, and returns the object it opened (now unreadable, to be deleted).
    pub(crate) async fn shred_original_key(
        &self,
        account: &str,
        hash: &str,
    ) -> Result<Option<String>, StoreError> {
        let object: Option<String> = sqlx::query(
            "DELETE FROM original_keys WHERE account = $1 AND hash = $2
             AND NOT EXISTS (SELECT 1 FROM images WHERE account = $1 AND hash = $2)
             RETURNING object",
        )
        .bind(account)
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| r.try_get("object"))
        .transpose()?;
        Ok(object)
    }

    /// Whether a key row names this object.
    pub(crate) async fn object_referenced(&self, object: &str) -> Result<bool, StoreError> {
        Ok(
            sqlx::query("SELECT 1 AS one FROM original_keys WHERE object = $1")
                .bind(object)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// Ids of the KEKs that wrap at least one stored data key.
    pub(crate) async fn kek_ids_in_use(&self) -> Result<Vec<String>, StoreError> {
        sqlx::query("SELECT DISTINCT kek_id FROM original_keys")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.try_get("kek_id").map_err(StoreError::from))
            .collect()
    }

    /// Up to `limit` keys wrapped by another KEK than `kek_id` (rotation's work list).
    pub(crate) async fn keys_wrapped_by_other(
        &self,
        kek_id: &str,
        limit: i64,
    ) -> Result<Vec<(String, String, StoredKey)>, StoreError> {
        sqlx::query(
            "SELECT account, hash, object, kek_id, wrapped_key FROM original_keys
             WHERE kek_id <> $1 ORDER BY account, hash LIMIT $2",
        )
        .bind(kek_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("account")?, r.try_get("hash")?, stored_key(r)?)))
        .collect()
    }

    /// Replaces a wrapped key if it is still `old` (a concurrent rotation may have won).
    pub(crate) async fn rewrap_original_key(
        &self,
        account: &str,
        hash: &str,
        old: &StoredKey,
        kek_id: &str,
        wrapped: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE original_keys SET kek_id = $1, wrapped_key = $2
             WHERE account = $3 AND hash = $4 AND wrapped_key = $5",
        )
        .bind(kek_id)
        .bind(wrapped)
        .bind(account)
        .bind(hash)
        .bind(&old.wrapped)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Up to `limit` originals still stored in plaintext (an image without a key row),
    /// after `(account, hash)` in that order: the encryption pass's next batch.
    pub(crate) async fn plaintext_originals(
        &self,
        after: (&str, &str),
        limit: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        sqlx::query(
            "SELECT DISTINCT i.account, i.hash FROM images i
             WHERE (i.account > $1 OR (i.account = $1 AND i.hash > $2))
             AND NOT EXISTS (SELECT 1 FROM original_keys k
                             WHERE k.account = i.account AND k.hash = i.hash)
             ORDER BY i.account, i.hash LIMIT $3",
        )
        .bind(after.0)
        .bind(after.1)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("account")?, r.try_get("hash")?)))
        .collect()
    }

    /// How many originals are still stored in plaintext.
    pub(crate) async fn plaintext_original_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query(
            "SELECT COUNT(*) AS n FROM (SELECT DISTINCT i.account, i.hash FROM images i
             WHERE NOT EXISTS (SELECT 1 FROM original_keys k
                               WHERE k.account = i.account AND k.hash = i.hash)) AS p",
        )
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?)
    }

    /// Whether some image still reads the plaintext object of `hash` (no key row of its own).
    pub(crate) async fn plaintext_referenced(&self, hash: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "SELECT 1 AS one FROM images i WHERE i.hash = $1
             AND NOT EXISTS (SELECT 1 FROM original_keys k
                             WHERE k.account = i.account AND k.hash = i.hash)
             LIMIT 1",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?
        .is_some())
    }

    /// Key rows no image references any more, written before `before_unix`: what a release
    /// that failed half-way left (the sweep shreds them).
    pub(crate) async fn unreferenced_original_keys(
        &self,
        before_unix: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        sqlx::query(
            "SELECT account, hash FROM original_keys k WHERE created_at < $1
             AND NOT EXISTS (SELECT 1 FROM images i WHERE i.account = k.account AND i.hash = k.hash)",
        )
        .bind(before_unix)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("account")?, r.try_get("hash")?)))
        .collect()
    }
}
