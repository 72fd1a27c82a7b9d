//! The purge outbox: edge purges written in the same transaction as the change that needs
//! them, so a committed delete always reaches the CDN and a rolled-back one never does.
//!
//! A row owes its tags to the targets listed in `targets`; the edge worker claims due rows
//! with a lease (`claimed_until`), delivers them, and deletes a row once every target has
//! it, or records the targets still owed with the next attempt's time. A row whose attempts
//! run out stays, marked `failed`, for the operator API until retention removes it. With
//! several nodes the lease makes one node deliver each row; a node that dies mid-delivery
//! leaves the lease to expire and another node delivers again (purges are idempotent).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::{Any, Row, Transaction};
use tokio::sync::Notify;

use super::{Store, StoreError};

/// What a store needs to fill the outbox: the configured targets (none: nothing is written)
/// and the worker to wake after a commit.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    targets: Vec<String>,
    wake: Notify,
    queued: AtomicU64,
}

impl Outbox {
    pub(crate) fn new(targets: Vec<String>) -> Outbox {
        Outbox {
            targets,
            ..Outbox::default()
        }
    }

    /// Resolves when a purge was committed since the last call (or at once if one was).
    pub(crate) async fn committed(&self) {
        self.wake.notified().await;
    }

    /// Purges written by this process so far.
    pub(crate) fn queued_total(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }
}

/// One purge as the worker delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingPurge {
    pub(crate) id: String,
    pub(crate) account: String,
    pub(crate) tags: Vec<String>,
    pub(crate) reason: String,
    pub(crate) created_at_ms: i64,
    /// Targets that have not acknowledged it yet.
    pub(crate) targets: Vec<String>,
    pub(crate) attempts: u32,
    pub(crate) last_error: Option<String>,
    pub(crate) failed: bool,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

const COLUMNS: &str = "id, account, tags, reason, created_at, targets, attempts, last_error, state";

fn pending_from_row(r: &sqlx::any::AnyRow) -> Result<PendingPurge, StoreError> {
    let words = |s: String| -> Vec<String> {
        s.split(' ')
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect()
    };
    let attempts: i64 = r.try_get("attempts")?;
    let state: String = r.try_get("state")?;
    Ok(PendingPurge {
        id: r.try_get("id")?,
        account: r.try_get("account")?,
        tags: words(r.try_get("tags")?),
        reason: r.try_get("reason")?,
        created_at_ms: r.try_get("created_at")?,
        targets: words(r.try_get("targets")?),
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        last_error: r.try_get("last_error")?,
        failed: state == "failed",
    })
}

impl Store {
    /// Makes this store write purges for `targets` (the node's `[[edge.purge]]` names).
    pub(crate) fn with_edge_targets(mut self, targets: Vec<String>) -> Store {
        self.outbox = Arc::new(Outbox::new(targets));
        self
    }

    pub(crate) fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// Writes a purge of `tags` into the transaction `tx`; `false` (and nothing written) when
    /// no purge target is configured. Call [`Store::purge_committed`] after the commit.
    pub(super) async fn enqueue_purge(
        &self,
        tx: &mut Transaction<'_, Any>,
        account: &str,
        tags: &[String],
        reason: &str,
    ) -> Result<bool, StoreError> {
        if self.outbox.targets.is_empty() || tags.is_empty() {
            return Ok(false);
        }
        let now = now_ms();
        let mut id = [0u8; 12];
        rand_bytes(&mut id);
        sqlx::query(
            "INSERT INTO edge_purges (id, account, tags, reason, created_at, targets, attempts,
                                      next_at, claimed_until, last_error, state)
             VALUES ($1, $2, $3, $4, $5, $6, 0, $5, 0, NULL, 'pending')",
        )
        .bind(hex::encode(id))
        .bind(account)
        .bind(tags.join(" "))
        .bind(reason)
        .bind(now)
        .bind(self.outbox.targets.join(" "))
        .execute(&mut **tx)
        .await?;
        Ok(true)
    }

    /// After the commit of a transaction that [`Store::enqueue_purge`]d: wakes the worker.
    pub(super) fn purge_committed(&self, queued: bool) {
        if queued {
            self.outbox.queued.fetch_add(1, Ordering::Relaxed);
            self.outbox.wake.notify_one();
        }
    }

    /// A purge outside any other change (the operator's purge, the admin API).
    pub(crate) async fn enqueue_edge_purge(
        &self,
        account: &str,
        tags: &[String],
        reason: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let queued = self.enqueue_purge(&mut tx, account, tags, reason).await?;
        tx.commit().await?;
        self.purge_committed(queued);
        Ok(())
    }

    /// Claims up to `limit` due purges for `lease_ms`: each is returned to one caller only
    /// until its lease runs out.
    pub(crate) async fn claim_purges(
        &self,
        limit: u32,
        lease_ms: i64,
    ) -> Result<Vec<PendingPurge>, StoreError> {
        let now = now_ms();
        let ids: Vec<String> = sqlx::query(
            "SELECT id FROM edge_purges
             WHERE state = 'pending' AND next_at <= $1 AND claimed_until <= $1
             ORDER BY created_at, id LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| r.try_get("id"))
        .collect::<Result<_, _>>()?;
        let mut claimed = Vec::with_capacity(ids.len());
        for id in ids {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE edge_purges SET claimed_until = $1
                 WHERE id = $2 AND state = 'pending' AND claimed_until <= $3
                 RETURNING {COLUMNS}"
            )))
            .bind(now + lease_ms)
            .bind(&id)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(r) = row {
                claimed.push(pending_from_row(&r)?);
            }
        }
        Ok(claimed)
    }

    /// Records one delivery attempt of a claimed purge: `owed` are the targets that still
    /// have not acknowledged it (empty: delivered everywhere, the row goes). Otherwise the
    /// next attempt is at `next_at_ms`, or the row is marked failed when `give_up`.
    pub(crate) async fn finish_purge_attempt(
        &self,
        id: &str,
        owed: &[String],
        error: Option<&str>,
        next_at_ms: i64,
        give_up: bool,
    ) -> Result<(), StoreError> {
        if owed.is_empty() {
            sqlx::query("DELETE FROM edge_purges WHERE id = $1")
                .bind(id)
                .execute(&self.pool)
                .await?;
            return Ok(());
        }
        sqlx::query(
            "UPDATE edge_purges SET targets = $1, attempts = attempts + 1, last_error = $2,
                    next_at = $3, claimed_until = 0, state = $4
             WHERE id = $5",
        )
        .bind(owed.join(" "))
        .bind(error)
        .bind(next_at_ms)
        .bind(if give_up { "failed" } else { "pending" })
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Pending purges and the creation time (unix ms) of the oldest.
    pub(crate) async fn pending_purge_stats(&self) -> Result<(i64, Option<i64>), StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM edge_purges WHERE state = 'pending'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("n")?, row.try_get("oldest")?))
    }

    /// Purges not delivered yet, pending first, then failed, oldest first (operator API).
    pub(crate) async fn purges(
        &self,
        account: Option<&str>,
        limit: u32,
    ) -> Result<Vec<PendingPurge>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM edge_purges WHERE ($1 = '' OR account = $1)
             ORDER BY state DESC, created_at, id LIMIT $2"
        )))
        .bind(account.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(pending_from_row).collect()
    }

    /// Whether any purge of `account` is still pending (neither delivered nor failed).
    pub(crate) async fn purges_pending_for(&self, account: &str) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM edge_purges WHERE account = $1 AND state = 'pending'",
        )
        .bind(account)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    /// Deletes failed purges created before `before_ms` (retention).
    pub(crate) async fn delete_failed_purges(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done =
            sqlx::query("DELETE FROM edge_purges WHERE state = 'failed' AND created_at < $1")
                .bind(before_ms)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }
}

/// Random bytes from the OS generator.
///
/// # Panics
/// Only if the OS random source is unavailable (as `DataKey::generate`).
fn rand_bytes(out: &mut [u8]) {
    use chacha20poly1305::aead::{OsRng, rand_core::RngCore};
    OsRng.fill_bytes(out);
}
