//! Versioned schema migrations, applied in order at start-up, each in its own transaction.
//!
//! Append only: a released migration is never edited. SQL must run unchanged on SQLite and
//! PostgreSQL.

use sqlx::{AnyConnection, AnyPool, Connection, Row};

use super::{Backend, StoreError, now_unix};

/// `(version, statements)`.
const MIGRATIONS: &[(i64, &[&str])] = &[
    (
        1,
        &[
            "CREATE TABLE accounts (
            name TEXT PRIMARY KEY,
            plan TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL
        )",
            "CREATE TABLE images (
            account TEXT NOT NULL REFERENCES accounts (name) ON DELETE CASCADE,
            id TEXT NOT NULL,
            hash TEXT NOT NULL,
            format TEXT NOT NULL,
            width BIGINT NOT NULL,
            height BIGINT NOT NULL,
            size BIGINT NOT NULL,
            original_filename TEXT NOT NULL,
            uploaded_at BIGINT NOT NULL,
            visibility TEXT NOT NULL,
            PRIMARY KEY (account, id)
        )",
            "CREATE INDEX images_hash ON images (hash)",
            "CREATE TABLE paths (
            account TEXT NOT NULL,
            stem TEXT NOT NULL,
            path TEXT NOT NULL,
            image_id TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            PRIMARY KEY (account, stem),
            FOREIGN KEY (account, image_id) REFERENCES images (account, id) ON DELETE CASCADE
        )",
            "CREATE INDEX paths_image ON paths (account, image_id)",
        ],
    ),
    (
        2,
        &[
            // One random data key per original (by content hash): cached variants of that original
            // are encrypted with it on disk, and deleting the row makes them unreadable
            // (crypto-erasure), whatever the cache files still hold. Hex, for SQLite/PostgreSQL.
            "CREATE TABLE cache_keys (
            hash TEXT PRIMARY KEY,
            data_key TEXT NOT NULL,
            created_at BIGINT NOT NULL
        )",
        ],
    ),
    (
        3,
        &[
            // API keys: only the SHA-256 of the secret is stored. Usage figures are aggregated
            // in memory and written here on an interval, not on every request.
            "CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            account TEXT NOT NULL REFERENCES accounts (name) ON DELETE CASCADE,
            name TEXT NOT NULL,
            key_hash TEXT NOT NULL UNIQUE,
            key_prefix TEXT NOT NULL,
            scopes TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            expires_at BIGINT,
            revoked_at BIGINT,
            last_used_at BIGINT,
            total_requests BIGINT NOT NULL DEFAULT 0
        )",
            "CREATE INDEX api_keys_account ON api_keys (account)",
        ],
    ),
    (
        4,
        &[
            // Tenant settings as one JSON document (img-src's UserSettings fields that the
            // tenant can change); absent row = defaults.
            "CREATE TABLE account_settings (
            account TEXT PRIMARY KEY REFERENCES accounts (name) ON DELETE CASCADE,
            settings TEXT NOT NULL,
            updated_at BIGINT NOT NULL
        )",
        ],
    ),
    (
        5,
        &[
            // 6 hex digits, computed at upload; NULL for images stored before this version.
            "ALTER TABLE images ADD COLUMN dominant_color TEXT",
            "CREATE INDEX paths_path ON paths (account, path)",
            // Presets: named transform parameter sets (`p:name` on delivery URLs). `params` is
            // the JSON object of delivery keys; `usage_count` is flushed from memory.
            "CREATE TABLE presets (
            id TEXT PRIMARY KEY,
            account TEXT NOT NULL REFERENCES accounts (name) ON DELETE CASCADE,
            name TEXT NOT NULL,
            description TEXT,
            params TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            usage_count BIGINT NOT NULL DEFAULT 0,
            UNIQUE (account, name)
        )",
        ],
    ),
    (
        6,
        &[
            // Usage per account and calendar month (UTC), added to on each flush.
            "CREATE TABLE usage (
            account TEXT NOT NULL,
            period TEXT NOT NULL,
            uploads BIGINT NOT NULL DEFAULT 0,
            api_requests BIGINT NOT NULL DEFAULT 0,
            bandwidth_bytes BIGINT NOT NULL DEFAULT 0,
            transformations BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (account, period)
        )",
            // Every mutating tenant and operator call. Kept apart from accounts (no foreign
            // key) so an erased account's record of the erasure survives until retention.
            "CREATE TABLE audit (
            id TEXT PRIMARY KEY,
            at BIGINT NOT NULL,
            account TEXT,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT,
            client_ip TEXT,
            outcome BIGINT NOT NULL
        )",
            "CREATE INDEX audit_at ON audit (at)",
            "CREATE INDEX audit_account ON audit (account, at)",
        ],
    ),
    (
        7,
        &[
            // Originals of an account being erased, saved in the transaction that deletes its
            // images, so an erasure interrupted after that point still knows what to release.
            "CREATE TABLE erasure_originals (
            account TEXT NOT NULL,
            hash TEXT NOT NULL,
            PRIMARY KEY (account, hash)
        )",
        ],
    ),
    (
        8,
        &[
            // Export and erasure moved from `read`/`write` to a scope of their own, `account`.
            // Keys holding both scopes could do both before, so they keep that power; `read`-
            // or `write`-only keys do not gain it (a read key could export, which is the hole
            // this closes).
            "UPDATE api_keys SET scopes = 'read,write,account' WHERE scopes = 'read,write'",
        ],
    ),
    (
        9,
        &[
            // Who created a key (its id, or `jwt:{sub}`); NULL for the operator's keys and for
            // keys made before this version. Revoking a key revokes the keys below it.
            "ALTER TABLE api_keys ADD COLUMN parent TEXT",
            "CREATE INDEX api_keys_parent ON api_keys (parent)",
        ],
    ),
    (
        10,
        &[
            // Data keys are per account from here on (`cache::scope`: `{account}/{hash}`), so
            // two tenants holding the same bytes share neither variants nor purges. The keys
            // by bare content hash are deleted: their variants become unreadable ciphertext
            // that ages out, and the cache refills once.
            "DELETE FROM cache_keys",
        ],
    ),
    (
        11,
        &[
            // The latest signed URL issued per image (`active_signed_url` in listings), with
            // the path it names, so one whose path is gone is not shown.
            "CREATE TABLE signed_urls (
            account TEXT NOT NULL,
            image_id TEXT NOT NULL,
            path TEXT NOT NULL,
            url TEXT NOT NULL,
            expires_at BIGINT NOT NULL,
            PRIMARY KEY (account, image_id)
        )",
        ],
    ),
    (
        12,
        &[
            // Cache invalidations on SQLite, where there is no LISTEN/NOTIFY: a command run
            // beside a serving node (`imgnode account plan ...`) writes its notices here and
            // the node reads them (`cluster::NoticeLog`). Unused on PostgreSQL.
            "CREATE TABLE notices (
            id BIGINT PRIMARY KEY,
            payload TEXT NOT NULL,
            at BIGINT NOT NULL
        )",
        ],
    ),
    (
        13,
        &[
            // `format=auto` follows the order of `delivery_formats` from here on. Settings
            // stored with the old default list (WebP before AVIF, never chosen as an order)
            // get the new default, so those accounts keep getting AVIF first.
            r#"UPDATE account_settings SET settings = REPLACE(settings,
            '"delivery_formats":["webp","avif","jpeg","png"]',
            '"delivery_formats":["avif","webp","jpeg","png"]')"#,
        ],
    ),
    (
        14,
        &[
            // The edge purge outbox (`store::edge`): written in the transaction of the change
            // that needs the purge. Times in unix milliseconds; `targets` and `tags` are
            // space separated (neither contains spaces).
            "CREATE TABLE edge_purges (
            id TEXT PRIMARY KEY,
            account TEXT NOT NULL,
            tags TEXT NOT NULL,
            reason TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            targets TEXT NOT NULL,
            attempts BIGINT NOT NULL,
            next_at BIGINT NOT NULL,
            claimed_until BIGINT NOT NULL,
            last_error TEXT,
            state TEXT NOT NULL
        )",
            "CREATE INDEX edge_purges_due ON edge_purges (state, next_at)",
            "CREATE INDEX edge_purges_account ON edge_purges (account, state)",
        ],
    ),
    (
        15,
        &[
            // What the probe saw at upload, reported by the API (`has_alpha`, `frame_count`);
            // NULL for images stored before (0/1 and a count otherwise).
            "ALTER TABLE images ADD COLUMN has_alpha BIGINT",
            "ALTER TABLE images ADD COLUMN frames BIGINT",
        ],
    ),
    (
        16,
        &[
            // Originals encrypted at rest (`store::originals`, `origin::Originals`): per
            // account and content hash, the random name of the sealed object and its data key
            // wrapped by the KEK (`kek_id` names which). Deleting a row shreds the object.
            "CREATE TABLE original_keys (
            account TEXT NOT NULL,
            hash TEXT NOT NULL,
            object TEXT NOT NULL UNIQUE,
            kek_id TEXT NOT NULL,
            wrapped_key TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            PRIMARY KEY (account, hash)
        )",
            "CREATE INDEX original_keys_kek ON original_keys (kek_id)",
            // The sealed object an erasure still has to delete (NULL: a plaintext original
            // of an earlier version, named by its hash).
            "ALTER TABLE erasure_originals ADD COLUMN object TEXT",
        ],
    ),
    (
        17,
        &[
            // The console (`console`, `store::console`). Passkeys: the webauthn-rs credential
            // (public key, counter) as JSON, and the API key whose session registered it (its
            // scopes are the passkey's; revoking that key removes the passkey).
            "CREATE TABLE console_passkeys (
            id TEXT PRIMARY KEY,
            account TEXT NOT NULL REFERENCES accounts (name) ON DELETE CASCADE,
            name TEXT NOT NULL,
            credential_id TEXT NOT NULL UNIQUE,
            credential TEXT NOT NULL,
            key_id TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            last_used_at BIGINT
        )",
            "CREATE INDEX console_passkeys_account ON console_passkeys (account)",
            "CREATE INDEX console_passkeys_key ON console_passkeys (key_id)",
            // Sessions: only the SHA-256 of the cookie's secret is stored. `key_id` is the API
            // key the session acts as (the one signed in with, or the passkey's).
            "CREATE TABLE console_sessions (
            id_hash TEXT PRIMARY KEY,
            account TEXT NOT NULL REFERENCES accounts (name) ON DELETE CASCADE,
            key_id TEXT NOT NULL,
            passkey_id TEXT,
            created_at BIGINT NOT NULL,
            last_seen_at BIGINT NOT NULL,
            expires_at BIGINT NOT NULL
        )",
            "CREATE INDEX console_sessions_account ON console_sessions (account)",
            "CREATE INDEX console_sessions_key ON console_sessions (key_id)",
            // A WebAuthn ceremony between its two requests (minutes at most), so any node can
            // finish it, and only once. `client` is the starting address's network: pending
            // ceremonies are bounded per network and in all.
            "CREATE TABLE console_ceremonies (
            id_hash TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            account TEXT NOT NULL,
            client TEXT NOT NULL,
            session_hash TEXT,
            state TEXT NOT NULL,
            expires_at BIGINT NOT NULL
        )",
            "CREATE INDEX console_ceremonies_client ON console_ceremonies (client)",
            "CREATE INDEX console_ceremonies_expiry ON console_ceremonies (expires_at)",
        ],
    ),
];

/// Applies pending migrations. On PostgreSQL several nodes may start at once: a session
/// advisory lock makes one of them migrate while the others wait, then find nothing to do.
pub(super) async fn apply(pool: &AnyPool, backend: Backend) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await?;
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(super::locks::MIGRATIONS)
            .execute(&mut *conn)
            .await?;
    }
    let applied = apply_on(&mut conn, i64::MAX).await;
    if backend == Backend::Postgres {
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(super::locks::MIGRATIONS)
            .execute(&mut *conn)
            .await;
        if unlocked.is_err() {
            // Closing the session releases the lock whatever state it is in.
            drop(conn.detach());
        }
    }
    applied
}

/// Applies the pending migrations up to `up_to` (every one: `i64::MAX`).
async fn apply_on(conn: &mut AnyConnection, up_to: i64) -> Result<(), StoreError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY,
            applied_at BIGINT NOT NULL
        )",
    )
    .execute(&mut *conn)
    .await?;
    let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
        .fetch_one(&mut *conn)
        .await?
        .try_get("v")?;
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > latest {
        return Err(StoreError::CorruptRow(format!(
            "database schema version {current} is newer than this binary ({latest})"
        )));
    }
    for (version, statements) in MIGRATIONS.iter().filter(|m| m.0 > current && m.0 <= up_to) {
        let mut tx = conn.begin().await?;
        for statement in *statements {
            sqlx::query(*statement).execute(&mut *tx).await?;
        }
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(version)
            .bind(now_unix())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh database (SQLite, or PostgreSQL with `TEST_IMGNODE_STORE=postgres`) migrated up
    /// to `version`, on one connection.
    async fn database_at(dir: &tempfile::TempDir, version: i64) -> AnyConnection {
        sqlx::any::install_default_drivers();
        let url = crate::store::testing::store_url(dir.path(), "m.db").await;
        let url = if url.starts_with("sqlite:") {
            format!("{url}?mode=rwc")
        } else {
            url
        };
        let mut conn = AnyConnection::connect(&url).await.unwrap();
        apply_on(&mut conn, version).await.unwrap();
        conn
    }

    #[tokio::test]
    async fn keys_with_read_and_write_keep_export_and_erasure_as_the_account_scope() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = database_at(&dir, 7).await;
        sqlx::query(
            "INSERT INTO accounts (name, plan, status, created_at, updated_at)
             VALUES ('acme', 'free', 'active', 1, 1)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        for (id, scopes) in [("k_rw", "read,write"), ("k_r", "read"), ("k_w", "write")] {
            sqlx::query(
                "INSERT INTO api_keys (id, account, name, key_hash, key_prefix, scopes, created_at)
                 VALUES ($1, 'acme', $1, $1, 'imgsrc_', $2, 1)",
            )
            .bind(id)
            .bind(scopes)
            .execute(&mut conn)
            .await
            .unwrap();
        }
        apply_on(&mut conn, i64::MAX).await.unwrap();
        let rows = sqlx::query("SELECT id, scopes FROM api_keys ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let scopes: Vec<(String, String)> = rows
            .iter()
            .map(|r| (r.get("id"), r.get("scopes")))
            .collect();
        assert_eq!(
            scopes,
            [
                ("k_r".to_string(), "read".to_string()),
                ("k_rw".to_string(), "read,write,account".to_string()),
                ("k_w".to_string(), "write".to_string()),
            ]
        );
        conn.close().await.unwrap();
    }
}
