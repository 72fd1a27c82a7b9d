//! Locks that hold across every node sharing the database.
//!
//! On PostgreSQL these are session advisory locks, each held on a connection of a small pool
//! of its own (so a holder waiting for a query connection cannot starve the pool it holds a
//! connection of); a node that dies releases its locks with its sessions. On SQLite there is
//! one node and the locks are no-ops: the in-process locks the callers also take suffice.

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, Row};

use super::{Store, StoreError};

/// Advisory lock keys of whole tasks. Content-hash locks use the rest of the key space
/// ([`hash_key`] keeps the top bit clear, these set it).
pub(super) const MIGRATIONS: i64 = i64::MIN + 1;
/// The orphan sweep: one node at a time lists the bucket.
pub const ORPHAN_SWEEP: i64 = i64::MIN + 2;
/// Retention and erasure resumption.
pub(crate) const RETENTION: i64 = i64::MIN + 3;
/// Sealing the plaintext originals of an earlier version.
pub(crate) const ENCRYPT_ORIGINALS: i64 = i64::MIN + 4;

/// A held lock; give it back with [`NodeLock::release`]. Dropped without that, its session is
/// closed, which releases it too.
pub struct NodeLock {
    held: Option<(PoolConnection<Any>, i64)>,
}

impl NodeLock {
    fn conn(&mut self) -> Option<&mut PoolConnection<Any>> {
        self.held.as_mut().map(|(conn, _)| conn)
    }

    pub async fn release(mut self) {
        let Some((conn, key)) = self.held.as_mut() else {
            return;
        };
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(*key)
            .execute(&mut **conn)
            .await;
        if unlocked.is_ok() {
            // Unlocked: the connection may serve again. (On failure, or if this future is
            // dropped mid-unlock, `Drop` closes the session instead.)
            self.held = None;
        }
    }
}

impl Drop for NodeLock {
    fn drop(&mut self) {
        if let Some((conn, _)) = self.held.take() {
            // Maybe still locked (or mid-query): the connection must not go back to the pool
            // holding it. Closing the session releases every lock it holds.
            drop(conn.detach());
        }
    }
}

/// The advisory lock key of an original: its content hash's first 63 bits.
fn hash_key(hash: &str) -> i64 {
    let prefix = hash.get(..16).unwrap_or(hash);
    let bits = u64::from_str_radix(prefix, 16).unwrap_or_else(|_| {
        // Not a hex hash (never stored by imgnode): still a stable key.
        prefix.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
    });
    (bits >> 1) as i64
}

impl Store {
    fn lock_pool(&self) -> Option<&AnyPool> {
        self.lock_pool.as_ref()
    }

    /// Locks the original with content hash `hash` on every node, waiting for it: held by an
    /// upload from writing the object to committing its metadata, and by the release of an
    /// unreferenced object from its check to its delete.
    pub async fn lock_hash(&self, hash: &str) -> Result<NodeLock, StoreError> {
        let Some(pool) = self.lock_pool() else {
            return Ok(NodeLock { held: None });
        };
        let key = hash_key(hash);
        // Owned by the guard before the lock is asked for: a caller dropped while waiting
        // (a client gone) closes the session, so no lock outlives its holder.
        let mut lock = NodeLock {
            held: Some((pool.acquire().await?, key)),
        };
        if let Some(conn) = lock.conn() {
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(key)
                .execute(&mut **conn)
                .await?;
        }
        Ok(lock)
    }

    /// Takes the task lock `key` if no other node holds it; `None` when one does (that node
    /// is doing the work).
    pub async fn try_lock_task(&self, key: i64) -> Result<Option<NodeLock>, StoreError> {
        let Some(pool) = self.lock_pool() else {
            return Ok(Some(NodeLock { held: None }));
        };
        let mut lock = NodeLock {
            held: Some((pool.acquire().await?, key)),
        };
        let mut got = false;
        if let Some(conn) = lock.conn() {
            got = sqlx::query("SELECT pg_try_advisory_lock($1) AS got")
                .bind(key)
                .fetch_one(&mut **conn)
                .await?
                .try_get("got")?;
        }
        if !got {
            // Not locked: the connection goes back to the pool.
            lock.held = None;
            return Ok(None);
        }
        Ok(Some(lock))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_keys_are_stable_and_apart_from_task_keys() {
        let h = "ff".repeat(32);
        assert_eq!(hash_key(&h), i64::MAX);
        assert_eq!(hash_key(&"00".repeat(32)), 0);
        assert!(hash_key("not-hex-at-all") >= 0);
        assert_eq!(hash_key("not-hex-at-all"), hash_key("not-hex-at-all"));
        for task in [MIGRATIONS, ORPHAN_SWEEP, RETENTION, ENCRYPT_ORIGINALS] {
            assert!(task < 0);
        }
    }
}
