//! The console's rows: passkeys, sessions and pending WebAuthn ceremonies.
//!
//! Secrets never reach this module: sessions and ceremonies are found by the SHA-256 of their
//! random id. A session acts as one API key of its account (`key_id`) and is only found while
//! that key is live; revoking the key deletes its sessions and the passkeys registered under
//! it (in `revoke_api_key`'s transaction), suspension deletes the account's sessions
//! (`set_account_status`), erasure deletes all three kinds (`delete_account_data`).

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError};

/// A live session, joined with the API key it acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionRecord {
    pub(crate) account: String,
    pub(crate) key_id: String,
    pub(crate) passkey_id: Option<String>,
    pub(crate) created_at: i64,
    pub(crate) last_seen_at: i64,
    /// The absolute limit (unix seconds).
    pub(crate) expires_at: i64,
    /// The key's scopes and expiry.
    pub(crate) scopes: String,
    pub(crate) key_expires_at: Option<i64>,
}

/// What [`Store::create_console_session`] records.
pub(crate) struct NewSession<'a> {
    pub(crate) id_hash: &'a str,
    pub(crate) account: &'a str,
    pub(crate) key_id: &'a str,
    pub(crate) passkey_id: Option<&'a str>,
    pub(crate) now: i64,
    pub(crate) expires_at: i64,
}

/// A registered passkey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PasskeyRecord {
    pub(crate) id: String,
    pub(crate) account: String,
    pub(crate) name: String,
    /// base64url of the WebAuthn credential id.
    pub(crate) credential_id: String,
    /// The webauthn-rs `Passkey` as JSON (public key and signature counter).
    pub(crate) credential: String,
    /// The API key whose session registered it.
    pub(crate) key_id: String,
    pub(crate) created_at: i64,
    pub(crate) last_used_at: Option<i64>,
}

/// A WebAuthn ceremony waiting for its second request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CeremonyRecord {
    pub(crate) kind: String,
    pub(crate) account: String,
    /// A registration is bound to the session that started it.
    pub(crate) session_hash: Option<String>,
    /// The ceremony's state (webauthn-rs, serialised) and what the route keeps with it.
    pub(crate) state: String,
}

/// Why a ceremony was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CeremonyRefusal {
    /// The starting network has its allowance of pending ceremonies.
    ClientFull,
    /// Every node together holds the most pending ceremonies allowed.
    Full,
}

impl Store {
    /// Records a session acting as `key_id`; `NotFound` unless that key is live and the
    /// account's.
    pub(crate) async fn create_console_session(
        &self,
        s: &NewSession<'_>,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "INSERT INTO console_sessions (id_hash, account, key_id, passkey_id, created_at,
                                           last_seen_at, expires_at)
             SELECT $1, $2, $3, $4, $5, $5, $6 FROM api_keys
             WHERE id = $3 AND account = $2 AND revoked_at IS NULL
               AND (expires_at IS NULL OR expires_at > $5)",
        )
        .bind(s.id_hash)
        .bind(s.account)
        .bind(s.key_id)
        .bind(s.passkey_id)
        .bind(s.now)
        .bind(s.expires_at)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    /// The session with this id hash while its API key is unrevoked (timeouts are the
    /// caller's).
    pub(crate) async fn console_session(
        &self,
        id_hash: &str,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT s.account, s.key_id, s.passkey_id, s.created_at, s.last_seen_at,
                    s.expires_at, k.scopes, k.expires_at AS key_expires_at
             FROM console_sessions s JOIN api_keys k ON k.id = s.key_id
             WHERE s.id_hash = $1 AND k.revoked_at IS NULL AND k.account = s.account",
        )
        .bind(id_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(SessionRecord {
                account: r.try_get("account")?,
                key_id: r.try_get("key_id")?,
                passkey_id: r.try_get("passkey_id")?,
                created_at: r.try_get("created_at")?,
                last_seen_at: r.try_get("last_seen_at")?,
                expires_at: r.try_get("expires_at")?,
                scopes: r.try_get("scopes")?,
                key_expires_at: r.try_get("key_expires_at")?,
            })
        })
        .transpose()
    }

    /// Moves a session's last use forward (never back).
    pub(crate) async fn touch_console_session(
        &self,
        id_hash: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE console_sessions SET last_seen_at = $1 WHERE id_hash = $2 AND last_seen_at < $1",
        )
        .bind(now)
        .bind(id_hash)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes one session (sign-out, or found expired); whether it existed.
    pub(crate) async fn delete_console_session(&self, id_hash: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records a passkey. `Conflict` when the account has `max` already, or when the
    /// credential is registered (to any account).
    pub(crate) async fn create_passkey(
        &self,
        p: &PasskeyRecord,
        max: u32,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        super::images::lock_account(&mut tx, &p.account).await?;
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM console_passkeys WHERE account = $1")
            .bind(&p.account)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if n >= i64::from(max) {
            return Err(StoreError::Conflict(format!(
                "the account has {n} passkeys, the most it may have; remove one first"
            )));
        }
        let taken = sqlx::query("SELECT 1 AS one FROM console_passkeys WHERE credential_id = $1")
            .bind(&p.credential_id)
            .fetch_optional(&mut *tx)
            .await?;
        if taken.is_some() {
            return Err(StoreError::Conflict(
                "this passkey is registered already".into(),
            ));
        }
        sqlx::query(
            "INSERT INTO console_passkeys (id, account, name, credential_id, credential, key_id,
                                           created_at, last_used_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)",
        )
        .bind(&p.id)
        .bind(&p.account)
        .bind(&p.name)
        .bind(&p.credential_id)
        .bind(&p.credential)
        .bind(&p.key_id)
        .bind(p.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// An account's passkeys whose registering key is unrevoked, oldest first.
    pub(crate) async fn passkeys(&self, account: &str) -> Result<Vec<PasskeyRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT p.id, p.account, p.name, p.credential_id, p.credential, p.key_id,
                    p.created_at, p.last_used_at
             FROM console_passkeys p
             WHERE p.account = $1 AND EXISTS (SELECT 1 FROM api_keys k WHERE k.id = p.key_id
                                               AND k.account = p.account
                                               AND k.revoked_at IS NULL)
             ORDER BY p.created_at, p.id",
        )
        .bind(account)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(passkey_from_row).collect()
    }

    /// Removes one of an account's passkeys and the sessions signed in with it; whether it
    /// existed.
    pub(crate) async fn delete_passkey(&self, account: &str, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM console_passkeys WHERE account = $1 AND id = $2")
            .bind(account)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM console_sessions WHERE account = $1 AND passkey_id = $2")
            .bind(account)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// After a sign-in with a passkey: its updated credential (counter) and last use.
    pub(crate) async fn passkey_used(
        &self,
        id: &str,
        credential: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE console_passkeys SET credential = $1, last_used_at = $2 WHERE id = $3")
            .bind(credential)
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a pending ceremony unless its network holds `per_client` pending ones or all
    /// nodes hold `total`; expired ones are deleted first.
    #[expect(
        clippy::too_many_arguments,
        reason = "one row's columns and its two bounds"
    )]
    pub(crate) async fn create_ceremony(
        &self,
        id_hash: &str,
        kind: &str,
        account: &str,
        client: &str,
        session_hash: Option<&str>,
        state: &str,
        now: i64,
        expires_at: i64,
        (per_client, total): (u32, u32),
    ) -> Result<Result<(), CeremonyRefusal>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM console_ceremonies WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let mine: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM console_ceremonies WHERE client = $1")
                .bind(client)
                .fetch_one(&mut *tx)
                .await?
                .try_get("n")?;
        if mine >= i64::from(per_client) {
            return Ok(Err(CeremonyRefusal::ClientFull));
        }
        let all: i64 = sqlx::query("SELECT COUNT(*) AS n FROM console_ceremonies")
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if all >= i64::from(total) {
            return Ok(Err(CeremonyRefusal::Full));
        }
        sqlx::query(
            "INSERT INTO console_ceremonies (id_hash, kind, account, client, session_hash, state,
                                             expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id_hash)
        .bind(kind)
        .bind(account)
        .bind(client)
        .bind(session_hash)
        .bind(state)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Takes a pending ceremony of `kind` (once: it is deleted), unless it expired.
    pub(crate) async fn take_ceremony(
        &self,
        id_hash: &str,
        kind: &str,
        now: i64,
    ) -> Result<Option<CeremonyRecord>, StoreError> {
        let row = sqlx::query(
            "DELETE FROM console_ceremonies WHERE id_hash = $1
             RETURNING kind, account, session_hash, state, expires_at",
        )
        .bind(id_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let expires_at: i64 = r.try_get("expires_at")?;
        let record = CeremonyRecord {
            kind: r.try_get("kind")?,
            account: r.try_get("account")?,
            session_hash: r.try_get("session_hash")?,
            state: r.try_get("state")?,
        };
        Ok((record.kind == kind && expires_at > now).then_some(record))
    }
}

fn passkey_from_row(r: &AnyRow) -> Result<PasskeyRecord, StoreError> {
    Ok(PasskeyRecord {
        id: r.try_get("id")?,
        account: r.try_get("account")?,
        name: r.try_get("name")?,
        credential_id: r.try_get("credential_id")?,
        credential: r.try_get("credential")?,
        key_id: r.try_get("key_id")?,
        created_at: r.try_get("created_at")?,
        last_used_at: r.try_get("last_used_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewApiKey, now_unix};

    async fn store(dir: &tempfile::TempDir) -> Store {
        let url = crate::store::testing::store_url(dir.path(), "meta.db").await;
        let s = Store::open(&url).await.unwrap();
        s.create_account("acme", "free").await.unwrap();
        for id in ["key_a", "key_b"] {
            s.create_api_key(
                &NewApiKey {
                    id: id.into(),
                    account: "acme".into(),
                    name: id.into(),
                    key_hash: format!("hash-{id}"),
                    key_prefix: "imgsrc_".into(),
                    scopes: "read,write".into(),
                    expires_at: None,
                    parent: None,
                },
                100,
            )
            .await
            .unwrap();
        }
        s
    }

    fn passkey(id: &str, key_id: &str) -> PasskeyRecord {
        PasskeyRecord {
            id: id.into(),
            account: "acme".into(),
            name: id.into(),
            credential_id: format!("cred-{id}"),
            credential: "{}".into(),
            key_id: key_id.into(),
            created_at: now_unix(),
            last_used_at: None,
        }
    }

    async fn session(s: &Store, hash: &str, key_id: &str) {
        let now = now_unix();
        s.create_console_session(&NewSession {
            id_hash: hash,
            account: "acme",
            key_id,
            passkey_id: None,
            now,
            expires_at: now + 60,
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn revocation_suspension_and_erasure_delete_what_they_must() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir).await;
        let now = now_unix();
        session(&s, "s-a", "key_a").await;
        session(&s, "s-b", "key_b").await;
        s.create_passkey(&passkey("pk_a", "key_a"), 20)
            .await
            .unwrap();
        s.create_passkey(&passkey("pk_b", "key_b"), 20)
            .await
            .unwrap();
        assert!(matches!(
            s.create_passkey(&passkey("pk_b", "key_b"), 20).await,
            Err(StoreError::Conflict(_))
        ));
        // A session needs a live key of its account.
        let missing = NewSession {
            id_hash: "s-x",
            account: "acme",
            key_id: "key_nope",
            passkey_id: None,
            now,
            expires_at: now + 60,
        };
        assert!(matches!(
            s.create_console_session(&missing).await,
            Err(StoreError::NotFound)
        ));

        // Revoking key_a: its session and passkey go, key_b's stay.
        s.revoke_api_key("acme", "key_a").await.unwrap().unwrap();
        assert!(s.console_session("s-a").await.unwrap().is_none());
        assert!(s.console_session("s-b").await.unwrap().is_some());
        let left: Vec<String> = s
            .passkeys("acme")
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(left, ["pk_b"]);

        // Suspension: the sessions.
        s.set_account_status("acme", crate::store::AccountStatus::Suspended)
            .await
            .unwrap();
        assert!(s.console_session("s-b").await.unwrap().is_none());
        s.set_account_status("acme", crate::store::AccountStatus::Active)
            .await
            .unwrap();

        // Erasure: sessions, passkeys and ceremonies.
        session(&s, "s-c", "key_b").await;
        s.create_ceremony(
            "c1",
            "register",
            "acme",
            "127.0.0.1",
            None,
            "{}",
            now,
            now + 60,
            (16, 100),
        )
        .await
        .unwrap()
        .unwrap();
        s.delete_account_data("acme").await.unwrap();
        for table in ["console_sessions", "console_passkeys", "console_ceremonies"] {
            let n: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) AS n FROM {table} WHERE account = 'acme'"
            )))
            .fetch_one(&s.pool)
            .await
            .unwrap()
            .try_get("n")
            .unwrap();
            assert_eq!(n, 0, "{table}");
        }
    }

    #[tokio::test]
    async fn ceremonies_are_bounded_taken_once_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir).await;
        let now = now_unix();
        let add = |id: &'static str, client: &'static str, expires: i64| {
            let s = &s;
            async move {
                s.create_ceremony(
                    id,
                    "authenticate",
                    "acme",
                    client,
                    None,
                    "{}",
                    now,
                    expires,
                    (2, 3),
                )
                .await
                .unwrap()
            }
        };
        assert_eq!(add("a1", "10.0.0.1", now + 60).await, Ok(()));
        assert_eq!(add("a2", "10.0.0.1", now + 60).await, Ok(()));
        assert_eq!(
            add("a3", "10.0.0.1", now + 60).await,
            Err(CeremonyRefusal::ClientFull)
        );
        assert_eq!(add("b1", "10.0.0.2", now + 60).await, Ok(()));
        assert_eq!(
            add("c1", "10.0.0.3", now + 60).await,
            Err(CeremonyRefusal::Full)
        );
        // Taken once, of its kind only.
        assert!(
            s.take_ceremony("a1", "register", now)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            s.take_ceremony("a2", "authenticate", now)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            s.take_ceremony("a2", "authenticate", now)
                .await
                .unwrap()
                .is_none()
        );
        // Expired: refused, and swept by the next insert.
        assert!(
            s.take_ceremony("b1", "authenticate", now + 61)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(add("c2", "10.0.0.3", now + 60).await, Ok(()));
    }
}
