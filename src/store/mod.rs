//! The metadata database: accounts, images and the paths that point at them.
//!
//! Owns the schema, its versioned migrations and every query. SQL is written once, portable
//! between SQLite and PostgreSQL (`$N` placeholders, `BIGINT`/`TEXT` only, ids made by the
//! application), and runs through sqlx's `Any` driver, so the PostgreSQL backend is a matter
//! of a URL. Must never know about HTTP types or object storage.

mod console;
mod edge;
mod images;
mod keys;
pub mod locks;
mod migrations;
mod model;
mod originals;
mod presets;
mod settings;
#[doc(hidden)]
pub mod testing;
mod usage;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

pub(crate) use console::{CeremonyRefusal, NewSession, PasskeyRecord, SessionRecord};
pub(crate) use edge::{Outbox, PendingPurge, now_ms};
pub(crate) use images::ImageWithPaths;
pub use keys::{ApiKeyRecord, NewApiKey};
pub(crate) use model::{Account, ImageRecord, PathOutcome, validate_account_name};
pub use model::{AccountStatus, NewImage, Placement, Visibility};
pub use originals::StoredKey;
pub(crate) use presets::PresetChange;
pub(crate) use presets::PresetRecord;
pub(crate) use settings::{
    AccountSettings, DELIVERY_FORMATS, FIT_MODES, MAX_ALLOWED_WIDTHS, THEMES, WIDTHS_POLICIES,
};
pub(crate) use usage::AuditFilter;
pub use usage::{AuditRecord, UsageCounts};

use crate::pipeline::SourceFormat;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("not found")]
    NotFound,
    /// A per-account limit (presets) is reached.
    #[error("{0}")]
    Limit(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("corrupt row: {0}")]
    CorruptRow(String),
    /// One failure seen by several waiters of a coalesced load.
    #[error("{0}")]
    Shared(std::sync::Arc<StoreError>),
}

impl StoreError {
    /// The database is locked or busy (another writer, a lock wait, a serialisation
    /// conflict) rather than down or refusing the request: worth a retry soon. A database
    /// that cannot be reached at all is not "busy" (it stays a 500, and is logged).
    pub(crate) fn is_busy(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(e)) => matches!(
                e.code().as_deref(),
                // SQLite: SQLITE_BUSY, SQLITE_LOCKED and their extended codes.
                Some("5" | "6" | "261" | "262" | "517" | "773")
                    // PostgreSQL: lock_not_available, serialization_failure, deadlock_detected.
                    | Some("55P03" | "40001" | "40P01")
            ),
            StoreError::Shared(e) => e.is_busy(),
            _ => false,
        }
    }
}

/// A handle on the metadata database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// PostgreSQL: connections that hold advisory locks (see `locks`); none on SQLite.
    lock_pool: Option<AnyPool>,
    /// Edge purges to write with each change (`edge`).
    outbox: std::sync::Arc<Outbox>,
}

/// Which database a [`Store`] runs on. The SQL is the same; what differs is what several
/// processes sharing the database need (locks across nodes, change notifications).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// One node: a file, writers serialised by SQLite itself.
    Sqlite,
    /// Any number of nodes: advisory locks and LISTEN/NOTIFY coordinate them.
    Postgres,
}

impl Store {
    /// Connects to `url` (`sqlite://PATH`, created if missing) and applies pending migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let backend = if sqlite {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        if let Some(file) = url.strip_prefix("sqlite://") {
            // SQLite creates the file but not its folder (`./data` on a fresh clone).
            let file = file.split('?').next().unwrap_or(file);
            if let Some(dir) = std::path::Path::new(file).parent()
                && !dir.as_os_str().is_empty()
            {
                crate::fsperm::create_private_dir(dir)
                    .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
            }
        }
        let url = if sqlite && !url.contains('?') {
            format!("{url}?mode=rwc")
        } else {
            url.to_string()
        };
        let pool = AnyPoolOptions::new()
            // SQLite serialises writers anyway; a few readers are plenty for the metadata load.
            .max_connections(if sqlite { 8 } else { 16 })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if sqlite {
                        // WAL: readers never block the writer. busy_timeout: concurrent
                        // writers wait instead of failing with SQLITE_BUSY.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                        // Deleted rows (cache data keys above all) are overwritten, not left
                        // in free pages.
                        conn.execute("PRAGMA secure_delete = ON").await?;
                    } else {
                        // Not the server's notices ("... already exists, skipping") in our log.
                        conn.execute("SET client_min_messages = warning").await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        let lock_pool = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(
                AnyPoolOptions::new()
                    // Uploads writing their objects at once (each holds one for its S3 write),
                    // plus the background tasks.
                    .max_connections(32)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(|conn, _meta| {
                        Box::pin(async move {
                            // A lock held by a node cut off without a goodbye (power loss,
                            // partition) lasts until the server notices the dead session:
                            // waiters give up after this instead of hanging with it.
                            conn.execute("SET lock_timeout = '60s'").await?;
                            conn.execute("SET client_min_messages = warning").await?;
                            Ok(())
                        })
                    })
                    .connect_lazy(&url)?,
            ),
        };
        let store = Store {
            pool,
            backend,
            lock_pool,
            outbox: Default::default(),
        };
        migrations::apply(&store.pool, backend).await?;
        Ok(store)
    }

    pub(crate) fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn close(&self) {
        if let Some(locks) = &self.lock_pool {
            locks.close().await;
        }
        self.pool.close().await;
    }

    /// Tells every node listening on `channel`: PostgreSQL LISTEN/NOTIFY, or on SQLite a row
    /// of the `notices` table, which the serving node polls ([`Store::notices_after`]).
    pub(crate) async fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        match self.backend {
            Backend::Postgres => {
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(channel)
                    .bind(payload)
                    .execute(&self.pool)
                    .await?;
            }
            Backend::Sqlite => {
                let now = now_unix();
                // One statement, so the id is taken inside SQLite's write lock: ids only grow,
                // even with two processes writing.
                sqlx::query(
                    "INSERT INTO notices (id, payload, at) \
                     SELECT COALESCE(MAX(id), 0) + 1, $1, $2 FROM notices",
                )
                .bind(payload)
                .bind(now)
                .execute(&self.pool)
                .await?;
                // Notices older than an hour were read long ago; the newest row stays, so
                // ids never restart.
                sqlx::query(
                    "DELETE FROM notices WHERE at < $1 \
                     AND id < (SELECT MAX(id) FROM notices)",
                )
                .bind(now - NOTICE_RETENTION_SECS)
                .execute(&self.pool)
                .await?;
            }
        }
        Ok(())
    }

    /// Notices written after `after` (SQLite; see [`Store::notify`]), oldest first, at most
    /// `limit`. `after = None` asks only for the newest id, to start reading from.
    pub(crate) async fn notices_after(
        &self,
        after: Option<i64>,
        limit: i64,
    ) -> Result<(i64, Vec<String>), StoreError> {
        let Some(after) = after else {
            let (last,): (Option<i64>,) = sqlx::query_as("SELECT MAX(id) FROM notices")
                .fetch_one(&self.pool)
                .await?;
            return Ok((last.unwrap_or(0), Vec::new()));
        };
        let rows: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, payload FROM notices WHERE id > $1 ORDER BY id LIMIT $2")
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        let last = rows.last().map_or(after, |(id, _)| *id);
        Ok((last, rows.into_iter().map(|(_, p)| p).collect()))
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    // ---- accounts ----------------------------------------------------------------------

    pub async fn create_account(&self, name: &str, plan: &str) -> Result<Account, StoreError> {
        let now = now_unix();
        let inserted = sqlx::query(
            "INSERT INTO accounts (name, plan, status, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(plan)
        .bind(AccountStatus::Active.as_str())
        .bind(now)
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!("account {name} exists")));
        }
        Ok(Account {
            name: name.to_string(),
            plan: plan.to_string(),
            status: AccountStatus::Active,
            created_at: now,
        })
    }

    pub async fn account(&self, name: &str) -> Result<Option<Account>, StoreError> {
        let row =
            sqlx::query("SELECT name, plan, status, created_at FROM accounts WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            Ok(Account {
                name: r.try_get("name")?,
                plan: r.try_get("plan")?,
                status: parse_col(&r, "status")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .transpose()
    }

    pub(crate) async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let rows = sqlx::query("SELECT name, plan, status, created_at FROM accounts ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Account {
                    name: r.try_get("name")?,
                    plan: r.try_get("plan")?,
                    status: parse_col(r, "status")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Sets an account's status; `false` when there is no such account.
    /// `false` when there is no such account, or it is being erased: an erasure is final, so
    /// only `Erasing` itself may be set again (to resume it).
    pub async fn set_account_status(
        &self,
        name: &str,
        status: AccountStatus,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE accounts SET status = $1, updated_at = $2
             WHERE name = $3 AND (status <> 'erasing' OR $1 = 'erasing')",
        )
        .bind(status.as_str())
        .bind(now_unix())
        .bind(name)
        .execute(&mut *tx)
        .await?;
        let changed = done.rows_affected() == 1;
        if changed && status != AccountStatus::Active {
            // Signed out of the console: a suspended account's sessions do not come back
            // when it is resumed.
            sqlx::query("DELETE FROM console_sessions WHERE account = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        // Suspended or being erased: nothing of the account may be served from the edge.
        let reason = match status {
            AccountStatus::Active => None,
            AccountStatus::Suspended => Some("account suspended"),
            AccountStatus::Erasing => Some("account erased"),
        };
        let queued = match reason {
            Some(reason) if changed => {
                let tags = [crate::edge::tags::account(name)];
                self.enqueue_purge(&mut tx, name, &tags, reason).await?
            }
            _ => false,
        };
        tx.commit().await?;
        self.purge_committed(queued);
        Ok(changed)
    }

    /// `false` when there is no such account or it is being erased (nothing may revive it).
    pub(crate) async fn set_account_plan(
        &self,
        name: &str,
        plan: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE accounts SET plan = $1, updated_at = $2 WHERE name = $3 AND status <> 'erasing'",
        )
            .bind(plan)
            .bind(now_unix())
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Names of the accounts in `status` (erasures to resume at start-up).
    pub(crate) async fn accounts_in(
        &self,
        status: AccountStatus,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT name FROM accounts WHERE status = $1 ORDER BY name")
            .bind(status.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get("name").map_err(StoreError::from))
            .collect()
    }

    /// Deletes everything stored about an account except the account row itself (its
    /// `erasing` status is what makes an interrupted erasure resume), in one transaction that
    /// also shreds the account's originals (their data keys go, so every copy of their
    /// objects is unreadable from the commit on) and saves what is left to delete in
    /// `erasure_originals` for the release step. Audit records stay until retention removes
    /// them.
    pub async fn delete_account_data(&self, name: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO erasure_originals (account, hash, object)
             SELECT account, hash, object FROM original_keys WHERE account = $1
             ON CONFLICT (account, hash) DO NOTHING",
        )
        .bind(name)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO erasure_originals (account, hash)
             SELECT DISTINCT account, hash FROM images WHERE account = $1
             ON CONFLICT (account, hash) DO NOTHING",
        )
        .bind(name)
        .execute(&mut *tx)
        .await?;
        for table in [
            "original_keys",
            "paths",
            "images",
            "api_keys",
            "presets",
            "account_settings",
            "usage",
            "signed_urls",
            "console_sessions",
            "console_passkeys",
            "console_ceremonies",
        ] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE account = $1"
            )))
            .bind(name)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Originals saved by [`Store::delete_account_data`] and not released yet: content hash
    /// and sealed object (`None` for a plaintext original of an earlier version).
    pub(crate) async fn erasure_originals(
        &self,
        name: &str,
    ) -> Result<Vec<(String, Option<String>)>, StoreError> {
        let rows = sqlx::query("SELECT hash, object FROM erasure_originals WHERE account = $1")
            .bind(name)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("hash")?, r.try_get("object")?)))
            .collect()
    }

    /// The last step of an erasure: the saved hashes and the account row.
    pub(crate) async fn delete_account(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM erasure_originals WHERE account = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM accounts WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- images and paths ----------------------------------------------------------------

    /// The image a path stem (`folder/name`, no extension) points at.
    pub async fn image_by_stem(
        &self,
        account: &str,
        stem: &str,
    ) -> Result<Option<ImageRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT i.account, i.id, i.hash, i.format, i.width, i.height, i.size,
                    i.original_filename, i.uploaded_at, i.visibility, i.dominant_color,
                    i.has_alpha, i.frames
             FROM paths p JOIN images i ON i.account = p.account AND i.id = p.image_id
             WHERE p.account = $1 AND p.stem = $2",
        )
        .bind(account)
        .bind(stem)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| image_from_row(&r)).transpose()
    }

    pub async fn image(&self, account: &str, id: &str) -> Result<Option<ImageRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT account, id, hash, format, width, height, size, original_filename,
                    uploaded_at, visibility, dominant_color, has_alpha, frames
             FROM images WHERE account = $1 AND id = $2",
        )
        .bind(account)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| image_from_row(&r)).transpose()
    }

    /// Records `image` (if the account does not have these bytes yet) and points `path` at it,
    /// in one transaction. The caller must have written the original to the origin first, so
    /// a committed path never points at a missing object.
    ///
    /// Same bytes already at the same path: `Conflict`. Another image at that path: the path
    /// is re-pointed, and the old image is deleted when no path is left to it (returned in
    /// `PathOutcome::orphaned` so its cached variants can be purged).
    pub async fn put_image(
        &self,
        image: &NewImage,
        path: &str,
        stem: &str,
        placement: Placement,
    ) -> Result<PathOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        // An upload that raced an erasure must not re-create what the erasure deletes. A write
        // as the first statement: SQLite takes the write lock now (waiting out the busy
        // timeout) instead of failing to upgrade a read snapshot later.
        let live = sqlx::query(
            "UPDATE accounts SET updated_at = updated_at WHERE name = $1 AND status <> 'erasing'",
        )
        .bind(&image.account)
        .execute(&mut *tx)
        .await?;
        if live.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        let now = now_unix();
        let inserted = sqlx::query(
            "INSERT INTO images (account, id, hash, format, width, height, size,
                                 original_filename, uploaded_at, visibility, dominant_color,
                                 has_alpha, frames)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (account, id) DO NOTHING",
        )
        .bind(&image.account)
        .bind(&image.id)
        .bind(&image.hash)
        .bind(image.format.extension())
        .bind(i64::from(image.width))
        .bind(i64::from(image.height))
        .bind(image.size as i64)
        .bind(&image.original_filename)
        .bind(now)
        .bind(image.visibility.as_str())
        .bind(image.dominant_color.as_deref())
        .bind(image.has_alpha.map(i64::from))
        .bind(image.frames.map(i64::from))
        .execute(&mut *tx)
        .await?;
        let is_new = inserted.rows_affected() == 1;
        if !is_new && placement.visibility_explicit {
            let stored: String =
                sqlx::query("SELECT visibility FROM images WHERE account = $1 AND id = $2")
                    .bind(&image.account)
                    .bind(&image.id)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("visibility")?;
            if stored != image.visibility.as_str() {
                return Err(StoreError::Conflict(format!(
                    "this account already holds these bytes as a {stored} image (visibility \
                     belongs to the image and all its paths): change it with PATCH \
                     /api/v1/images/{}/visibility, or upload with visibility={stored}",
                    image.id
                )));
            }
        }

        let previous: Option<(String, String)> =
            sqlx::query("SELECT image_id, path FROM paths WHERE account = $1 AND stem = $2")
                .bind(&image.account)
                .bind(stem)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| Ok::<_, sqlx::Error>((r.try_get("image_id")?, r.try_get("path")?)))
                .transpose()?;
        let mut orphaned = None;
        let repointed = matches!(&previous, Some((prev, _)) if *prev != image.id);
        match previous {
            Some((prev, _)) if prev == image.id => {
                return Err(StoreError::Conflict(format!(
                    "these bytes are already stored at {path}"
                )));
            }
            Some((_, existing)) if !placement.overwrite => {
                return Err(StoreError::Conflict(format!(
                    "`{existing}` holds another image under the same name (URLs look images \
                     up without their extension): send overwrite=true to replace it"
                )));
            }
            Some((prev, _)) => {
                sqlx::query(
                    "UPDATE paths SET image_id = $1, path = $2, created_at = $3
                     WHERE account = $4 AND stem = $5",
                )
                .bind(&image.id)
                .bind(path)
                .bind(now)
                .bind(&image.account)
                .bind(stem)
                .execute(&mut *tx)
                .await?;
                let left: i64 = sqlx::query(
                    "SELECT COUNT(*) AS n FROM paths WHERE account = $1 AND image_id = $2",
                )
                .bind(&image.account)
                .bind(&prev)
                .fetch_one(&mut *tx)
                .await?
                .try_get("n")?;
                if left == 0 {
                    sqlx::query("DELETE FROM signed_urls WHERE account = $1 AND image_id = $2")
                        .bind(&image.account)
                        .bind(&prev)
                        .execute(&mut *tx)
                        .await?;
                    let hash: Option<String> = sqlx::query(
                        "DELETE FROM images WHERE account = $1 AND id = $2 RETURNING hash",
                    )
                    .bind(&image.account)
                    .bind(&prev)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|r| r.try_get("hash"))
                    .transpose()?;
                    orphaned = hash.map(|hash| (prev, hash));
                }
            }
            None => {
                sqlx::query(
                    "INSERT INTO paths (account, stem, path, image_id, created_at)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&image.account)
                .bind(stem)
                .bind(path)
                .bind(&image.id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
        // A path re-pointed at other bytes: the edge's copies through it are stale (and the
        // old image's, when it had no other path left).
        let queued = if repointed {
            let mut tags = vec![crate::edge::tags::path(&image.account, stem)];
            if let Some((prev, _)) = &orphaned {
                tags.push(crate::edge::tags::image(&image.account, prev));
            }
            self.enqueue_purge(&mut tx, &image.account, &tags, "path re-pointed")
                .await?
        } else {
            false
        };
        tx.commit().await?;
        self.purge_committed(queued);
        Ok(PathOutcome { is_new, orphaned })
    }

    // ---- cache data keys -------------------------------------------------------------------

    /// The data key of an original's cached variants, if one exists.
    pub async fn cache_key(&self, hash: &str) -> Result<Option<[u8; 32]>, StoreError> {
        let row = sqlx::query("SELECT data_key FROM cache_keys WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| decode_key(&r.try_get::<String, _>("data_key")?))
            .transpose()
    }

    /// Stores `candidate` as the data key of `hash` unless one exists, and returns the key in
    /// force (the first writer wins, so concurrent renders agree).
    pub(crate) async fn cache_key_or_insert(
        &self,
        hash: &str,
        candidate: &[u8; 32],
    ) -> Result<[u8; 32], StoreError> {
        sqlx::query(
            "INSERT INTO cache_keys (hash, data_key, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (hash) DO NOTHING",
        )
        .bind(hash)
        .bind(hex::encode(candidate))
        .bind(now_unix())
        .execute(&self.pool)
        .await?;
        self.cache_key(hash)
            .await?
            .ok_or_else(|| StoreError::CorruptRow(format!("cache key for {hash} vanished")))
    }

    /// Deletes the data keys of these originals: their cached variants become unreadable.
    pub(crate) async fn delete_cache_keys(&self, hashes: &[String]) -> Result<(), StoreError> {
        for hash in hashes {
            sqlx::query("DELETE FROM cache_keys WHERE hash = $1")
                .bind(hash)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Deletes every data key (purge of the whole cache).
    pub(crate) async fn delete_all_cache_keys(&self) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM cache_keys")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Content hashes of every image of an account.
    pub async fn account_hashes(&self, account: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT DISTINCT hash FROM images WHERE account = $1")
            .bind(account)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get("hash").map_err(StoreError::from))
            .collect()
    }
}

pub(crate) fn image_from_row(r: &AnyRow) -> Result<ImageRecord, StoreError> {
    let format: String = r.try_get("format")?;
    Ok(ImageRecord {
        account: r.try_get("account")?,
        id: r.try_get("id")?,
        hash: r.try_get("hash")?,
        format: SourceFormat::from_name(&format)
            .ok_or_else(|| StoreError::CorruptRow(format!("format {format}")))?,
        width: to_u32(r.try_get("width")?)?,
        height: to_u32(r.try_get("height")?)?,
        size: u64::try_from(r.try_get::<i64, _>("size")?)
            .map_err(|_| StoreError::CorruptRow("size".into()))?,
        original_filename: r.try_get("original_filename")?,
        uploaded_at: r.try_get("uploaded_at")?,
        visibility: parse_col(r, "visibility")?,
        dominant_color: r.try_get("dominant_color")?,
        has_alpha: r.try_get::<Option<i64>, _>("has_alpha")?.map(|v| v != 0),
        frames: r
            .try_get::<Option<i64>, _>("frames")?
            .map(|v| u32::try_from(v).map_err(|_| StoreError::CorruptRow("frames".into())))
            .transpose()?,
    })
}

fn decode_key(text: &str) -> Result<[u8; 32], StoreError> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(text, &mut key)
        .map_err(|_| StoreError::CorruptRow("cache data key".into()))?;
    Ok(key)
}

fn to_u32(v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::CorruptRow(format!("dimension {v}")))
}

fn parse_col<T: FromStr>(r: &AnyRow, col: &str) -> Result<T, StoreError> {
    let s: String = r.try_get(col)?;
    s.parse()
        .map_err(|_| StoreError::CorruptRow(format!("{col} = {s}")))
}

/// A unix time as RFC 3339 (the API's image times); empty if out of range.
pub(crate) fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// How long SQLite keeps a cache-invalidation notice (see [`Store::notify`]).
const NOTICE_RETENTION_SECS: i64 = 3600;

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests;
