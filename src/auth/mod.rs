//! Tenant authentication: API keys and their scopes.
//!
//! A key is `{prefix}{49 hex digits}` from the OS random source (56 characters with
//! `imgsrc_`, img-src's documented length; keys issued with 64 digits before still work); only
//! its SHA-256 is stored, and the full key is shown once, when issued. Lookups are cached briefly in memory, and a
//! revocation evicts the key here before it answers, so it is refused on the next call.
//! Usage (`last_used_at`, `total_requests`) is counted in memory and written by
//! `flush_usage` on an interval and at shutdown: no database write per request.
//! A key made by a caller (`issue_by`) never outlives it, never holds a scope it lacks, and
//! is revoked with it (and with anything above it); an account holds at most
//! `auth.max_keys_per_account` live keys.
//! Must never log or store a key in clear.

pub(crate) mod console;
pub(crate) mod jwt;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chacha20poly1305::aead::{OsRng, rand_core::RngCore};

use crate::cluster::{Broadcaster, Notice};
use sha2::{Digest, Sha256};

use crate::store::{ApiKeyRecord, NewApiKey, Store, StoreError, now_unix};

/// Characters after the prefix in a key the node issues (hex digits).
const SECRET_CHARS: usize = 49;

/// Whether `secret` (a key without its prefix) has the shape of one the node issues: 49 hex
/// digits, or 64 for keys issued by earlier versions.
pub(crate) fn plausible_secret(secret: &str) -> bool {
    matches!(secret.len(), SECRET_CHARS | 64) && secret.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The default key prefix, as the img-src service issues them.
pub(crate) const DEFAULT_KEY_PREFIX: &str = "imgsrc_";

/// Longest key lifetime a tenant may ask for.
pub(crate) const MAX_EXPIRY_DAYS: u32 = 365;

/// Live (unrevoked, unexpired) keys an account may hold unless configured otherwise.
pub(crate) const DEFAULT_MAX_KEYS_PER_ACCOUNT: u32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Read,
    Write,
    /// The whole account at once: its export (every private original) and its erasure.
    Account,
}

impl Scope {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Account => "account",
        }
    }
}

/// The scopes a key carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scopes {
    pub(crate) read: bool,
    pub(crate) write: bool,
    /// Export and erasure of the whole account. Never granted by default: asked for by name.
    pub(crate) account: bool,
}

impl Scopes {
    /// What a key gets when its creator names no scopes: `read,write`.
    pub(crate) const DEFAULT: Scopes = Scopes {
        read: true,
        write: true,
        account: false,
    };

    /// Everything: the owner's key (an account's first key, issued by the operator or the CLI).
    pub(crate) const OWNER: Scopes = Scopes {
        read: true,
        write: true,
        account: true,
    };

    /// `read`, `write`, `account`, comma-separated (any order, repeats allowed); nothing else.
    pub fn parse(text: &str) -> Option<Scopes> {
        Scopes::from_names(text.split(','))
    }

    /// The one scope parser: every name must be `read`, `write` or `account` (surrounding
    /// spaces ignored), and at least one must be given.
    pub(crate) fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<Scopes> {
        let mut scopes = Scopes {
            read: false,
            write: false,
            account: false,
        };
        for name in names.into_iter().map(str::trim) {
            match name {
                "read" => scopes.read = true,
                "write" => scopes.write = true,
                "account" => scopes.account = true,
                _ => return None,
            }
        }
        (scopes.read || scopes.write || scopes.account).then_some(scopes)
    }

    pub(crate) fn allows(self, scope: Scope) -> bool {
        match scope {
            Scope::Read => self.read,
            Scope::Write => self.write,
            Scope::Account => self.account,
        }
    }

    /// Every scope of `self` is one of `other`'s.
    pub(crate) fn within(self, other: Scopes) -> bool {
        (!self.read || other.read)
            && (!self.write || other.write)
            && (!self.account || other.account)
    }

    /// Canonical text, as stored: the names in the order `read,write,account`.
    pub(crate) fn as_str(self) -> &'static str {
        match (self.read, self.write, self.account) {
            (true, true, true) => "read,write,account",
            (true, true, false) => "read,write",
            (true, false, true) => "read,account",
            (false, true, true) => "write,account",
            (true, false, false) => "read",
            (false, true, false) => "write",
            (false, false, true) => "account",
            (false, false, false) => "",
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Principal {
    pub(crate) account: String,
    /// The API key id, or `jwt:{subject}`: what the audit log names and rate limits key on.
    pub(crate) key_id: String,
    pub(crate) scopes: Scopes,
    /// The account's plan (filled in by the API once the account is looked up).
    pub(crate) plan: String,
    /// When the credential stops working (unix seconds): the key's `expires_at`, a token's
    /// `exp`. Keys it creates expire at the latest then.
    pub(crate) expires_at: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("invalid, expired or revoked API key")]
    Invalid,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the OS random source failed")]
    Random,
}

/// The expiry of a key asked to expire at `requested` (`None`: never) by a caller whose own
/// credential expires at `creator`: the earlier of the two.
fn capped_expiry(requested: Option<i64>, creator: Option<i64>) -> Option<i64> {
    match (requested, creator) {
        (Some(r), Some(c)) => Some(r.min(c)),
        (r, c) => r.or(c),
    }
}

/// A key as issued: the record and, this once, the secret.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub(crate) record: ApiKeyRecord,
    pub secret: String,
}

pub struct ApiKeys {
    prefix: String,
    /// By secret hash; `None` caches "no such key" so guessing does not reach the database
    /// every time.
    cache: moka::future::Cache<String, Option<Arc<ApiKeyRecord>>>,
    /// key id → (requests since the last flush, last use).
    usage: Mutex<HashMap<String, (i64, i64)>>,
    /// Revocations reach the other nodes' caches through it.
    cluster: Broadcaster,
    /// `auth.max_keys_per_account`.
    max_keys: u32,
}

impl ApiKeys {
    pub(crate) fn new(prefix: &str) -> ApiKeys {
        ApiKeys {
            prefix: prefix.to_string(),
            cache: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(30))
                .build(),
            usage: Mutex::new(HashMap::new()),
            cluster: Broadcaster::disabled(),
            max_keys: DEFAULT_MAX_KEYS_PER_ACCOUNT,
        }
    }

    /// At most `max` live keys per account (`auth.max_keys_per_account`).
    pub(crate) fn with_max_keys(mut self, max: u32) -> ApiKeys {
        self.max_keys = max;
        self
    }

    /// Publishes revocations to the other nodes through `cluster`.
    pub(crate) fn clustered(mut self, cluster: Broadcaster) -> ApiKeys {
        self.cluster = cluster;
        self
    }

    /// Issues a key for `account` on the operator's behalf (no creator key: it is revoked on
    /// its own). `expires_in_days` must be 1..=365 when given. A `Store(Conflict)` error when
    /// the account holds `auth.max_keys_per_account` live keys already.
    pub async fn issue(
        &self,
        store: &Store,
        account: &str,
        name: &str,
        scopes: Scopes,
        expires_in_days: Option<u32>,
    ) -> Result<IssuedKey, AuthError> {
        let expires_at = expires_in_days.map(|d| now_unix() + i64::from(d) * 86_400);
        self.insert(store, account, name, scopes, expires_at, None)
            .await
    }

    /// Issues a key that `creator` asked for: it expires at the latest when the creator's
    /// credential does (whatever `expires_in_days` says, `None` included), and it is revoked
    /// with the creator. The caller checks that `scopes` are within the creator's. `Invalid`
    /// when the creating key was revoked or expired meanwhile; `Store(Conflict)` at the
    /// account's key limit.
    pub(crate) async fn issue_by(
        &self,
        store: &Store,
        creator: &Principal,
        name: &str,
        scopes: Scopes,
        expires_in_days: Option<u32>,
    ) -> Result<IssuedKey, AuthError> {
        let requested = expires_in_days.map(|d| now_unix() + i64::from(d) * 86_400);
        let expires_at = capped_expiry(requested, creator.expires_at);
        match self
            .insert(
                store,
                &creator.account,
                name,
                scopes,
                expires_at,
                Some(creator.key_id.clone()),
            )
            .await
        {
            Err(AuthError::Store(StoreError::NotFound)) => Err(AuthError::Invalid),
            other => other,
        }
    }

    async fn insert(
        &self,
        store: &Store,
        account: &str,
        name: &str,
        scopes: Scopes,
        expires_at: Option<i64>,
        parent: Option<String>,
    ) -> Result<IssuedKey, AuthError> {
        let mut random = [0u8; 40];
        OsRng
            .try_fill_bytes(&mut random)
            .map_err(|_| AuthError::Random)?;
        // img-src's documented length: `imgsrc_` and 49 characters, 56 in all (196 bits of
        // the OS random source). Keys issued longer before keep working: only the hash of the
        // whole token is looked up.
        let mut secret = format!("{}{}", self.prefix, hex::encode(&random[..25]));
        secret.truncate(self.prefix.len() + SECRET_CHARS);
        let id = format!("key_{}", hex::encode(&random[32..]));
        let key_prefix = secret.chars().take(self.prefix.len() + 8).collect();
        let record = store
            .create_api_key(
                &NewApiKey {
                    id,
                    account: account.to_string(),
                    name: name.to_string(),
                    key_hash: hash_key(&secret),
                    key_prefix,
                    scopes: scopes.as_str().to_string(),
                    expires_at,
                    parent,
                },
                self.max_keys,
            )
            .await?;
        // A cached "no such key" for this hash cannot exist (the secret is new), but a stale
        // negative entry would be harmless anyway: it expires in seconds.
        Ok(IssuedKey { record, secret })
    }

    /// The principal behind `Authorization: Bearer <key>`.
    pub(crate) async fn authenticate(
        &self,
        store: &Store,
        header: Option<&str>,
    ) -> Result<Principal, AuthError> {
        let token = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        if !token.starts_with(&self.prefix) || token.len() > 256 {
            return Err(AuthError::Invalid);
        }
        let hash = hash_key(token);
        let record = self
            .cache
            .try_get_with_by_ref(&hash, async {
                Ok::<_, StoreError>(store.api_key_by_hash(&hash).await?.map(Arc::new))
            })
            .await
            .map_err(|e| AuthError::Store(StoreError::Shared(e)))?
            .ok_or(AuthError::Invalid)?;
        let now = now_unix();
        if record.revoked_at.is_some() || record.expires_at.is_some_and(|t| t <= now) {
            return Err(AuthError::Invalid);
        }
        let scopes = Scopes::parse(&record.scopes).ok_or(AuthError::Invalid)?;
        self.note_use(&record.id, now);
        Ok(Principal {
            account: record.account.clone(),
            key_id: record.id.clone(),
            scopes,
            plan: String::new(),
            expires_at: record.expires_at,
        })
    }

    /// After an account's erasure: no cached lookup of its keys may survive (its keys are
    /// already refused through the account's status; this frees the memory).
    pub(crate) fn forget_account(&self, _account: &str) {
        self.forget_all();
    }

    /// Every cached key lookup, on this node.
    pub(crate) fn forget_all(&self) {
        self.cache.invalidate_all();
    }

    /// One cached key lookup (by secret hash), on this node.
    pub(crate) async fn forget_key(&self, hash: &str) {
        self.cache.invalidate(hash).await;
    }

    /// Revokes one of an account's keys and every key below it (the keys it created, theirs,
    /// and so on), and forgets them all here, and on the other nodes, before answering.
    pub(crate) async fn revoke(
        &self,
        store: &Store,
        account: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        match store.revoke_api_key(account, id).await? {
            Some(hashes) => {
                for hash in hashes {
                    self.forget_key(&hash).await;
                    self.cluster.publish(Notice::ApiKey(hash));
                }
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Counts a call made with the key `key_id` (by its secret, or by a console session
    /// acting as it).
    pub(crate) fn note_use(&self, key_id: &str, now: i64) {
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let entry = usage.entry(key_id.to_string()).or_insert((0, now));
        entry.0 += 1;
        entry.1 = entry.1.max(now);
    }

    /// Writes the usage counted since the last flush. On failure the counts are put back, so
    /// nothing is lost but a crash between flushes (at most one interval of counts).
    pub(crate) async fn flush_usage(&self, store: &Store) -> Result<(), StoreError> {
        let pending: Vec<(String, (i64, i64))> = {
            let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
            usage.drain().collect()
        };
        for (i, (id, (requests, last))) in pending.iter().enumerate() {
            if let Err(e) = store.record_api_key_usage(id, *requests, *last).await {
                let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
                for (id, (requests, last)) in &pending[i..] {
                    let entry = usage.entry(id.clone()).or_insert((0, *last));
                    entry.0 += requests;
                    entry.1 = entry.1.max(*last);
                }
                return Err(e);
            }
        }
        Ok(())
    }
}

/// SHA-256 of a key, hex. Keys are 256-bit random secrets, so a fast unsalted hash is enough:
/// there is nothing to brute-force.
fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// `bytes` random bytes from the OS generator, hex-encoded (ids of presets and the like).
pub(crate) fn random_hex(bytes: usize) -> Result<String, AuthError> {
    let mut random = vec![0u8; bytes];
    OsRng
        .try_fill_bytes(&mut random)
        .map_err(|_| AuthError::Random)?;
    Ok(hex::encode(random))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store(dir: &tempfile::TempDir) -> Store {
        let url = crate::store::testing::store_url(dir.path(), "m.db").await;
        let s = Store::open(&url).await.unwrap();
        s.create_account("acme", "free").await.unwrap();
        s
    }

    #[test]
    fn scopes_parse_strictly() {
        assert_eq!(Scopes::parse("read,write"), Some(Scopes::DEFAULT));
        assert_eq!(
            Scopes::parse("write, read").map(Scopes::as_str),
            Some("read,write")
        );
        assert_eq!(
            Scopes::parse("account,read,write,read"),
            Some(Scopes::OWNER)
        );
        assert_eq!(
            Scopes::from_names(["account", "read"]).map(Scopes::as_str),
            Some("read,account")
        );
        assert_eq!(
            Scopes::parse("read,write").map(|s| s.allows(Scope::Account)),
            Some(false)
        );
        // Every combination reads back as itself.
        for text in [
            "read",
            "write",
            "account",
            "read,write",
            "read,account",
            "write,account",
        ] {
            assert_eq!(Scopes::parse(text).map(Scopes::as_str), Some(text));
        }
        assert!(Scopes::DEFAULT.within(Scopes::OWNER));
        assert!(!Scopes::OWNER.within(Scopes::DEFAULT));
        assert_eq!(
            Scopes::parse("read").map(|s| s.allows(Scope::Write)),
            Some(false)
        );
        assert_eq!(Scopes::parse("admin"), None);
        assert_eq!(Scopes::parse(""), None);
        assert_eq!(Scopes::parse("read,"), None);
        assert_eq!(Scopes::from_names([]), None);
    }

    #[tokio::test]
    async fn issued_keys_authenticate_and_only_their_hash_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir).await;
        let keys = ApiKeys::new(DEFAULT_KEY_PREFIX);
        let issued = keys
            .issue(&s, "acme", "ci", Scopes::DEFAULT, Some(30))
            .await
            .unwrap();
        assert!(issued.secret.starts_with("imgsrc_"));
        assert_eq!(issued.secret.len(), 56, "img-src's documented length");
        assert!(plausible_secret(&issued.secret[7..]));
        assert!(plausible_secret(&"ab12".repeat(16)) && !plausible_secret(&"ab".repeat(24)));
        assert!(issued.secret.starts_with(&issued.record.key_prefix));
        let who = keys
            .authenticate(&s, Some(&format!("Bearer {}", issued.secret)))
            .await
            .unwrap();
        assert_eq!(who.account, "acme");
        assert_eq!(who.scopes, Scopes::DEFAULT);
        let secret_part = &issued.secret[7..];
        let stored = s.api_keys("acme").await.unwrap();
        let text = format!("{stored:?}");
        assert!(text.contains(&issued.record.key_prefix));
        assert!(!text.contains(secret_part));
        s.close().await;
        if !crate::store::testing::postgres_selected() {
            let db = std::fs::read(dir.path().join("m.db")).unwrap();
            let secret_part = secret_part.as_bytes();
            assert!(!db.windows(secret_part.len()).any(|w| w == secret_part));
        }
    }

    #[tokio::test]
    async fn keys_issued_longer_before_keep_working() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir).await;
        let old = format!("imgsrc_{}", "ab12".repeat(16));
        assert_eq!(old.len(), 71);
        s.create_api_key(
            &NewApiKey {
                id: "key_0123456789abcdef".into(),
                account: "acme".into(),
                name: "old".into(),
                key_hash: hash_key(&old),
                key_prefix: old[..15].into(),
                scopes: Scopes::DEFAULT.as_str().to_string(),
                expires_at: None,
                parent: None,
            },
            100,
        )
        .await
        .unwrap();
        let keys = ApiKeys::new(DEFAULT_KEY_PREFIX);
        let who = keys
            .authenticate(&s, Some(&format!("Bearer {old}")))
            .await
            .unwrap();
        assert_eq!(who.account, "acme");
        s.close().await;
    }

    #[tokio::test]
    async fn bad_expired_and_revoked_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir).await;
        let keys = ApiKeys::new(DEFAULT_KEY_PREFIX);
        for header in [
            None,
            Some("Basic abc"),
            Some("Bearer "),
            Some("Bearer imgsrc_nope"),
        ] {
            assert!(keys.authenticate(&s, header).await.is_err(), "{header:?}");
        }
        let issued = keys
            .issue(&s, "acme", "k", Scopes::DEFAULT, None)
            .await
            .unwrap();
        let bearer = format!("Bearer {}", issued.secret);
        keys.authenticate(&s, Some(&bearer)).await.unwrap();
        assert!(keys.revoke(&s, "acme", &issued.record.id).await.unwrap());
        assert!(matches!(
            keys.authenticate(&s, Some(&bearer)).await,
            Err(AuthError::Invalid)
        ));
        assert!(!keys.revoke(&s, "acme", &issued.record.id).await.unwrap());
        assert!(!keys.revoke(&s, "other", "key_x").await.unwrap());
    }

    #[tokio::test]
    async fn usage_is_aggregated_and_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir).await;
        let keys = ApiKeys::new(DEFAULT_KEY_PREFIX);
        let issued = keys
            .issue(&s, "acme", "k", Scopes::DEFAULT, None)
            .await
            .unwrap();
        let bearer = format!("Bearer {}", issued.secret);
        for _ in 0..5 {
            keys.authenticate(&s, Some(&bearer)).await.unwrap();
        }
        assert_eq!(s.api_keys("acme").await.unwrap()[0].total_requests, 0);
        keys.flush_usage(&s).await.unwrap();
        let listed = s.api_keys("acme").await.unwrap();
        assert_eq!(listed[0].total_requests, 5);
        assert!(listed[0].last_used_at.is_some());
    }
}
