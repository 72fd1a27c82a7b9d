//! For the test suites only: which database a test's store uses.
//!
//! `TEST_IMGNODE_STORE=postgres` runs the same tests on PostgreSQL: each test store gets a
//! database of its own (named after its data directory, so a node restarted on the same
//! directory finds its data again) on the server at `TEST_IMGNODE_PG`
//! (default [`DEFAULT_ADMIN_URL`], the server `tests/pg.sh` starts). Otherwise SQLite.

use std::path::Path;

use sqlx::Connection;

/// The server `tests/pg.sh` starts (trust authentication on loopback: no password).
const DEFAULT_ADMIN_URL: &str = "postgres://imgnode@127.0.0.1:55432/postgres";

/// Whether this test run puts its stores on PostgreSQL.
pub fn postgres_selected() -> bool {
    std::env::var("TEST_IMGNODE_STORE").is_ok_and(|v| v == "postgres")
}

/// The maintenance URL of the test PostgreSQL server.
pub fn admin_url() -> String {
    std::env::var("TEST_IMGNODE_PG").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_string())
}

/// Creates the database `name` on the test server unless it exists, and returns its URL.
pub async fn postgres_database(name: &str) -> Result<String, sqlx::Error> {
    let admin = admin_url();
    let mut conn = sqlx::postgres::PgConnection::connect(&admin).await?;
    let exists = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut conn)
        .await?
        .is_some();
    if !exists {
        // Names are made here from hex digits: nothing to quote.
        let created = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await;
        match created {
            Ok(_) => {}
            // Another test created it in between.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e),
        }
    }
    conn.close().await?;
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    Ok(format!("{base}/{name}"))
}

/// The store URL for a test whose data lives in `dir`: a PostgreSQL database of its own when
/// PostgreSQL is selected, else `sqlite://{dir}/{file}`.
pub async fn store_url(dir: &Path, file: &str) -> String {
    if !postgres_selected() {
        return format!("sqlite://{}", dir.join(file).display());
    }
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(dir.join(file).to_string_lossy().as_bytes());
    let name = format!("imgnode_t_{}", &hex::encode(digest)[..20]);
    postgres_database(&name).await.unwrap_or_else(|e| {
        panic!(
            "TEST_IMGNODE_STORE=postgres but the test server at {} is unusable ({e}); \
             start it with `bash tests/pg.sh`",
            admin_url()
        )
    })
}
