//! JWT bearer tokens, verified against the identity provider's JWKS.
//!
//! Owns the key set of one configured issuer: fetched from `jwks_url` on first use, again when a
//! token names a key id not held (rotation) or the set is older than [`MAX_KEY_SET_AGE`] (so a
//! key the issuer withdrew stops verifying), never more than once per `min_refresh_interval`,
//! with concurrent refreshes sharing one fetch, which runs as its own task so that a dropped
//! request does not cancel it. A failed fetch keeps the keys already held.
//! Accepts RS256 with RSA keys, ES256 with P-256 keys and EdDSA with Ed25519 keys, each only
//! with a key of its own type; checks the signature, `iss`, `aud`, `exp` and `nbf` (with leeway)
//! and requires `sub` and the account claim. `scope`/`scopes` grant `read`, `write` and
//! `account`.
//!
//! Must never log or return token contents (errors say what was wrong, never with what value),
//! never accept `alg: none` or an HMAC algorithm, never fetch anything but the configured URL
//! (`jku`/`x5u`/`jwk` headers are ignored), and never let token traffic fetch the JWKS more
//! often than the floor allows.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::OwnedMutexGuard;

/// Claim that names the account unless configured otherwise.
#[cfg(test)]
const DEFAULT_ACCOUNT_CLAIM: &str = "account";
/// Clock skew tolerated on `exp` and `nbf` by default.
#[cfg(test)]
const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
/// Default floor between two JWKS fetches.
#[cfg(test)]
const DEFAULT_MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// Default limit on one JWKS fetch, connection to last body byte.
#[cfg(test)]
const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS body read; a larger one fails the fetch.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Longest token looked at; longer ones are refused before any parsing.
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// A key set older than this is fetched again when next used (within the floor), so a key the
/// issuer withdrew stops verifying after at most about this long. If that fetch fails, the old
/// keys go on verifying.
const MAX_KEY_SET_AGE: Duration = Duration::from_secs(3600);
/// Largest leeway accepted: more than this is a configuration mistake.
const MAX_LEEWAY: Duration = Duration::from_secs(3600);

/// How to verify tokens from one issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JwtConfig {
    /// Where the issuer publishes its keys. `https`, or plain `http` to a loopback address.
    pub(crate) jwks_url: String,
    /// Exact `iss` required.
    pub(crate) issuer: String,
    /// Value `aud` must be or contain.
    pub(crate) audience: String,
    /// Clock skew tolerated on `exp` and `nbf`, in whole seconds, at most [`MAX_LEEWAY`].
    pub(crate) leeway: Duration,
    /// Claim holding the account name (a non-empty string).
    pub(crate) account_claim: String,
    /// Floor between two JWKS fetches, whatever tokens arrive. Zero disables it (tests only).
    pub(crate) min_refresh_interval: Duration,
    /// Limit on one JWKS fetch.
    pub(crate) fetch_timeout: Duration,
}

#[cfg(test)]
impl JwtConfig {
    /// The three values that have no default, and the documented defaults for the rest.
    fn new(
        jwks_url: impl Into<String>,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> JwtConfig {
        JwtConfig {
            jwks_url: jwks_url.into(),
            issuer: issuer.into(),
            audience: audience.into(),
            leeway: DEFAULT_LEEWAY,
            account_claim: DEFAULT_ACCOUNT_CLAIM.to_string(),
            min_refresh_interval: DEFAULT_MIN_REFRESH_INTERVAL,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
        }
    }
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JwtClaims {
    /// `sub`.
    pub(crate) subject: String,
    /// The configured account claim.
    pub(crate) account: String,
    /// `read` granted: listed in `scope`/`scopes`, or neither claim present.
    pub(crate) read: bool,
    /// `write` granted: listed in `scope`/`scopes`, or neither claim present.
    pub(crate) write: bool,
    /// `account` granted (export and erasure): listed in `scope`/`scopes`. Never by default.
    pub(crate) account_scope: bool,
    /// `exp` (unix seconds, fractions dropped): keys the token creates expire by then.
    pub(crate) expires_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum JwtError {
    /// The token is refused (also returned by [`JwtVerifier::new`] for a bad configuration).
    /// The message names the check that failed and never contains token contents.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token's key is not held and the JWKS could not be fetched (or its last fetch, within
    /// the refresh floor, failed): the token cannot be judged. Still a 401 for the caller.
    #[error("JWKS unavailable: {0}")]
    Unavailable(String),
}

fn invalid(why: impl Into<String>) -> JwtError {
    JwtError::Invalid(why.into())
}

/// The algorithms accepted, each bound to the one key type that may verify it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    /// RS256 (RSASSA-PKCS1-v1_5 with SHA-256), RSA keys of 2048 to 8192 bits.
    Rsa,
    /// ES256 (ECDSA P-256 with SHA-256).
    P256,
    /// EdDSA with Ed25519.
    Ed25519,
}

impl KeyKind {
    const ALL: [KeyKind; 3] = [KeyKind::Rsa, KeyKind::P256, KeyKind::Ed25519];

    /// From a header's `alg`: anything else (`none`, `HS256`, `PS256`, ...) is refused.
    fn from_alg(alg: &str) -> Option<KeyKind> {
        match alg {
            "RS256" => Some(KeyKind::Rsa),
            "ES256" => Some(KeyKind::P256),
            "EdDSA" => Some(KeyKind::Ed25519),
            _ => None,
        }
    }

    fn alg_name(self) -> &'static str {
        match self {
            KeyKind::Rsa => "RS256",
            KeyKind::P256 => "ES256",
            KeyKind::Ed25519 => "EdDSA",
        }
    }

    fn algorithm(self) -> Algorithm {
        match self {
            KeyKind::Rsa => Algorithm::RS256,
            KeyKind::P256 => Algorithm::ES256,
            KeyKind::Ed25519 => Algorithm::EdDSA,
        }
    }

    fn index(self) -> usize {
        match self {
            KeyKind::Rsa => 0,
            KeyKind::P256 => 1,
            KeyKind::Ed25519 => 2,
        }
    }
}

struct CachedKey {
    kind: KeyKind,
    key: DecodingKey,
}

/// One successfully fetched JWKS, usable keys only.
struct KeySet {
    by_kid: HashMap<String, Vec<CachedKey>>,
    fetched_at: Instant,
}

enum Lookup<'a> {
    Found(&'a DecodingKey),
    /// The kid is known, but not for this algorithm's key type.
    WrongType,
    Unknown,
}

impl KeySet {
    fn lookup(&self, kid: &str, kind: KeyKind) -> Lookup<'_> {
        match self.by_kid.get(kid) {
            None => Lookup::Unknown,
            Some(keys) => keys
                .iter()
                .find(|k| k.kind == kind)
                .map_or(Lookup::WrongType, |k| Lookup::Found(&k.key)),
        }
    }

    fn has(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }
}

/// Behind the refresh lock: whoever holds it may fetch.
#[derive(Default)]
struct RefreshState {
    last_attempt: Option<Instant>,
    /// Why the last fetch failed; `None` after a success.
    last_error: Option<String>,
}

/// Monotonic time for the refresh floor and key-set age; tests move it forward.
#[derive(Default)]
struct Clock {
    #[cfg(test)]
    skew: std::sync::Mutex<Duration>,
}

impl Clock {
    #[cfg(not(test))]
    fn now(&self) -> Instant {
        Instant::now()
    }

    #[cfg(test)]
    fn now(&self) -> Instant {
        Instant::now() + *self.skew.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn advance(&self, by: Duration) {
        *self.skew.lock().unwrap_or_else(PoisonError::into_inner) += by;
    }
}

/// Verifies bearer JWTs of one issuer. Share it (`Arc`): it holds the key cache.
pub(crate) struct JwtVerifier {
    issuer: String,
    account_claim: String,
    /// Indexed by [`KeyKind::index`].
    validations: [Validation; 3],
    cache: Arc<KeyCache>,
}

/// The JWKS and its fetching; shared with the fetch task (see [`KeyCache::refresh`]).
struct KeyCache {
    url: reqwest::Url,
    /// `url` without credentials, query or fragment, for logs.
    url_for_logs: String,
    client: reqwest::Client,
    min_refresh_interval: Duration,
    keys: RwLock<Option<Arc<KeySet>>>,
    /// Held across a fetch: concurrent refreshes wait for it and then reuse its result.
    refresh: Arc<tokio::sync::Mutex<RefreshState>>,
    clock: Clock,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("jwks_url", &self.cache.url_for_logs)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Checks the configuration and builds the HTTP client; fetches nothing yet (the first
    /// `verify` does). A bad configuration is `JwtError::Invalid` with a message naming it.
    pub(crate) fn new(config: JwtConfig) -> Result<JwtVerifier, JwtError> {
        let bad = |why: String| invalid(format!("JWT configuration: {why}"));
        let url = reqwest::Url::parse(&config.jwks_url)
            .map_err(|e| bad(format!("jwks_url is not a URL: {e}")))?;
        let https = match url.scheme() {
            "https" => true,
            "http" if is_loopback(&url) => false,
            _ => {
                return Err(bad(
                    "jwks_url must be https (plain http only to a loopback address)".into(),
                ));
            }
        };
        if config.issuer.is_empty() {
            return Err(bad("issuer is empty".into()));
        }
        if config.audience.is_empty() {
            return Err(bad("audience is empty".into()));
        }
        if config.account_claim.is_empty() {
            return Err(bad("account_claim is empty".into()));
        }
        if config.fetch_timeout.is_zero() {
            return Err(bad("fetch_timeout is zero".into()));
        }
        if config.leeway > MAX_LEEWAY {
            return Err(bad(format!("leeway is over {}s", MAX_LEEWAY.as_secs())));
        }

        // Select jsonwebtoken's aws-lc-rs backend explicitly: should another crate in the tree
        // also enable its `rust_crypto` feature, the automatic choice becomes a provider that
        // panics on use. An error means a provider is installed already; that one stays.
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();

        let client = reqwest::Client::builder()
            .timeout(config.fetch_timeout)
            .connect_timeout(config.fetch_timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .https_only(https)
            .user_agent("imgnode-jwks")
            .build()
            .map_err(|e| bad(format!("HTTP client: {e}")))?;

        let validations = KeyKind::ALL.map(|kind| {
            let mut v = Validation::new(kind.algorithm());
            v.leeway = config.leeway.as_secs();
            v.validate_exp = true;
            v.validate_nbf = true;
            v.validate_aud = true;
            v.set_issuer(&[&config.issuer]);
            v.set_audience(&[&config.audience]);
            // Required means present *and* of the right type: a malformed one counts as missing.
            v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            v
        });

        let mut for_logs = url.clone();
        // Both only fail for URLs that cannot carry credentials, which then have none.
        let _ = for_logs.set_username("");
        let _ = for_logs.set_password(None);
        for_logs.set_query(None);
        for_logs.set_fragment(None);

        Ok(JwtVerifier {
            issuer: config.issuer,
            account_claim: config.account_claim,
            validations,
            cache: Arc::new(KeyCache {
                url,
                url_for_logs: for_logs.to_string(),
                client,
                min_refresh_interval: config.min_refresh_interval,
                keys: RwLock::new(None),
                refresh: Arc::new(tokio::sync::Mutex::new(RefreshState::default())),
                clock: Clock::default(),
            }),
        })
    }

    /// Verifies `token` (the bearer value, without `Bearer `). May wait for a JWKS fetch, at
    /// most `fetch_timeout` (plus the wait for a fetch already running).
    pub(crate) async fn verify(&self, token: &str) -> Result<JwtClaims, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid("token too long"));
        }
        if !Self::looks_like_jwt(token) {
            return Err(invalid("not a JWT"));
        }
        let header = parse_header(token)?;
        let keys = self.cache.key_set_with(&header.kid).await?;
        let key = match keys.lookup(&header.kid, header.kind) {
            Lookup::Found(key) => key,
            Lookup::WrongType => {
                return Err(invalid(
                    "the token's algorithm does not match its key's type",
                ));
            }
            Lookup::Unknown => return Err(invalid("unknown key id")),
        };
        let data = jsonwebtoken::decode::<Map<String, Value>>(
            token,
            key,
            &self.validations[header.kind.index()],
        )
        .map_err(rejection)?;
        self.claims(&data.claims)
    }

    /// Cheap check used by the router: does this bearer token look like a JWT (three base64url
    /// parts)? Says nothing about validity; the signature part may be empty so that an
    /// unsigned token is routed here and refused with a clear reason.
    pub(crate) fn looks_like_jwt(token: &str) -> bool {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let base64url = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        !header.is_empty()
            && !payload.is_empty()
            && base64url(header)
            && base64url(payload)
            && base64url(signature)
    }

    fn claims(&self, claims: &Map<String, Value>) -> Result<JwtClaims, JwtError> {
        // jsonwebtoken also accepts an `iss` array holding the issuer; RFC 7519 allows a
        // string only.
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(invalid("wrong issuer"));
        }
        let subject = non_empty_string(claims.get("sub"))
            .ok_or_else(|| invalid("missing or malformed sub claim"))?;
        let account = non_empty_string(claims.get(&self.account_claim)).ok_or_else(|| {
            invalid(format!(
                "missing or malformed {} (account) claim",
                self.account_claim
            ))
        })?;
        let (read, write, account_scope) = scopes(claims)?;
        // Checked present and numeric by the validation already.
        let expires_at = match claims.get("exp") {
            Some(Value::Number(n)) => n
                .as_i64()
                .or_else(|| n.as_f64().map(|f| f.floor() as i64))
                .ok_or_else(|| invalid("malformed exp claim"))?,
            _ => return Err(invalid("missing or malformed exp claim")),
        };
        Ok(JwtClaims {
            subject,
            account,
            read,
            write,
            account_scope,
            expires_at,
        })
    }
}

impl KeyCache {
    fn current(&self) -> Option<Arc<KeySet>> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A key set that holds `kid`, fetching one if needed and allowed.
    async fn key_set_with(self: &Arc<Self>, kid: &str) -> Result<Arc<KeySet>, JwtError> {
        if let Some(keys) = self.current()
            && keys.has(kid)
        {
            if self.clock.now().saturating_duration_since(keys.fetched_at) < MAX_KEY_SET_AGE {
                return Ok(keys);
            }
            // Stale: one caller refreshes, the others go on with the keys held meanwhile.
            let Ok(state) = Arc::clone(&self.refresh).try_lock_owned() else {
                return Ok(keys);
            };
            drop(self.refresh(state).await);
            // A failed or skipped fetch left the old set, which holds the kid; a successful
            // one that dropped it means the issuer withdrew the key.
            return self
                .current()
                .filter(|keys| keys.has(kid))
                .ok_or_else(|| invalid("unknown key id"));
        }

        let state = Arc::clone(&self.refresh).lock_owned().await;
        // Another caller may have fetched while this one waited.
        if let Some(keys) = self.current()
            && keys.has(kid)
        {
            return Ok(keys);
        }
        let state = self.refresh(state).await?;
        if let Some(keys) = self.current()
            && keys.has(kid)
        {
            return Ok(keys);
        }
        match &state.last_error {
            Some(why) => Err(JwtError::Unavailable(why.clone())),
            None => Err(invalid("unknown key id")),
        }
    }

    /// Fetches the JWKS unless the floor forbids it; on failure keeps the keys held. The fetch
    /// runs as its own task, holding the lock: a caller that goes away (its request dropped)
    /// neither cancels it nor loses its result, so dropped requests cannot stop the key set
    /// from being refreshed, and the next caller waits for that fetch instead of starting one.
    async fn refresh(
        self: &Arc<Self>,
        mut state: OwnedMutexGuard<RefreshState>,
    ) -> Result<OwnedMutexGuard<RefreshState>, JwtError> {
        let now = self.clock.now();
        if state
            .last_attempt
            .is_some_and(|last| now.saturating_duration_since(last) < self.min_refresh_interval)
        {
            return Ok(state);
        }
        state.last_attempt = Some(now);
        let cache = Arc::clone(self);
        let fetch = tokio::spawn(async move {
            match cache.fetch(now).await {
                Ok(keys) => {
                    tracing::info!(
                        url = %cache.url_for_logs,
                        key_ids = keys.by_kid.len(),
                        "JWKS fetched"
                    );
                    state.last_error = None;
                    *cache.keys.write().unwrap_or_else(PoisonError::into_inner) =
                        Some(Arc::new(keys));
                }
                Err(why) => {
                    tracing::warn!(
                        url = %cache.url_for_logs,
                        error = %why,
                        "JWKS fetch failed; keeping the keys already held"
                    );
                    state.last_error = Some(why);
                }
            }
            state
        });
        // The task fails only by panicking (releasing the lock as it unwinds) or when the
        // runtime shuts down.
        fetch
            .await
            .map_err(|_| JwtError::Unavailable("the JWKS fetch task failed".into()))
    }

    async fn fetch(&self, now: Instant) -> Result<KeySet, String> {
        let mut response = self
            .client
            .get(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(describe_http_error)?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("JWKS endpoint answered {status}"));
        }
        let too_large = || format!("JWKS larger than {MAX_JWKS_BYTES} bytes");
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(describe_http_error)? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        parse_jwks(&body, now)
    }
}

fn non_empty_string(value: Option<&Value>) -> Option<String> {
    match value {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// `read`/`write`/`account` from `scope` and `scopes`, each a space-separated string or an
/// array of strings; the grants of both add up. Neither present grants `read` and `write`
/// (as an API key created without scopes: `account` is only ever granted by name); present
/// but naming none grants nothing; other values are ignored; a claim of another type (`null`
/// included) refuses the token.
fn scopes(claims: &Map<String, Value>) -> Result<(bool, bool, bool), JwtError> {
    let mut present = false;
    let (mut read, mut write, mut account) = (false, false, false);
    let mut grant = |scope: &str| match scope {
        "read" => read = true,
        "write" => write = true,
        "account" => account = true,
        _ => {}
    };
    for name in ["scope", "scopes"] {
        match claims.get(name) {
            None => continue,
            Some(Value::String(list)) => list.split_ascii_whitespace().for_each(&mut grant),
            Some(Value::Array(items)) => {
                for item in items {
                    let scope = item
                        .as_str()
                        .ok_or_else(|| invalid(format!("malformed {name} claim")))?;
                    grant(scope);
                }
            }
            Some(_) => return Err(invalid(format!("malformed {name} claim"))),
        }
        present = true;
    }
    Ok(if present {
        (read, write, account)
    } else {
        (true, true, false)
    })
}

struct TokenHeader {
    kind: KeyKind,
    kid: String,
}

fn parse_header(token: &str) -> Result<TokenHeader, JwtError> {
    #[derive(Deserialize)]
    struct RawHeader {
        alg: String,
        kid: Option<String>,
        crit: Option<Value>,
    }
    let encoded = token.split('.').next().unwrap_or_default();
    let raw: RawHeader = URL_SAFE_NO_PAD
        .decode(encoded)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .ok_or_else(|| invalid("malformed header"))?;
    let kind = KeyKind::from_alg(&raw.alg)
        .ok_or_else(|| invalid("algorithm not accepted (only RS256, ES256 and EdDSA)"))?;
    // RFC 7515 4.1.11: extensions listed in `crit` must be understood; none are here.
    if raw.crit.is_some() {
        return Err(invalid("critical header extensions are not supported"));
    }
    let kid = raw
        .kid
        .filter(|kid| !kid.is_empty())
        .ok_or_else(|| invalid("no key id (kid) in the header"))?;
    Ok(TokenHeader { kind, kid })
}

/// What a jsonwebtoken error means, without any of the token's contents (its JSON errors quote
/// them).
fn rejection(error: jsonwebtoken::errors::Error) -> JwtError {
    invalid(match error.kind() {
        ErrorKind::InvalidSignature => "bad signature".to_string(),
        ErrorKind::ExpiredSignature => "token expired".to_string(),
        ErrorKind::ImmatureSignature => "token not valid yet (nbf)".to_string(),
        ErrorKind::InvalidIssuer => "wrong issuer".to_string(),
        ErrorKind::InvalidAudience => "wrong audience".to_string(),
        // Both name one of the claims this module asks for, never a value.
        ErrorKind::MissingRequiredClaim(claim) => format!("missing or malformed {claim} claim"),
        ErrorKind::InvalidClaimFormat(claim) => format!("malformed {claim} claim"),
        ErrorKind::InvalidAlgorithm => "the token's algorithm does not match its key".to_string(),
        _ => "malformed token".to_string(),
    })
}

/// A reqwest error with its causes (timeout, refused, TLS, ...), without the URL.
fn describe_http_error(error: reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".to_string();
    }
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn is_loopback(url: &reqwest::Url) -> bool {
    url.host_str().is_some_and(|host| {
        host.eq_ignore_ascii_case("localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

/// The usable keys of a JWKS document. Keys that are not for signatures, lack a `kid`, are of
/// another type or curve, declare another `alg`, or are malformed are skipped; a document
/// with no usable key at all is an error, so the keys held are kept.
fn parse_jwks(body: &[u8], fetched_at: Instant) -> Result<KeySet, String> {
    #[derive(Deserialize)]
    struct RawJwks {
        keys: Vec<Value>,
    }
    let raw: RawJwks =
        serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut by_kid: HashMap<String, Vec<CachedKey>> = HashMap::new();
    let mut skipped = 0usize;
    for value in raw.keys {
        match parse_jwk(value) {
            Some((kid, key)) => by_kid.entry(kid).or_default().push(key),
            None => skipped += 1,
        }
    }
    if by_kid.is_empty() {
        return Err(format!(
            "JWKS has no usable signing key ({skipped} skipped)"
        ));
    }
    if skipped > 0 {
        tracing::debug!(skipped, "JWKS keys skipped (type, use, alg or format)");
    }
    Ok(KeySet { by_kid, fetched_at })
}

fn parse_jwk(value: Value) -> Option<(String, CachedKey)> {
    #[derive(Deserialize)]
    struct RawJwk {
        kty: String,
        kid: Option<String>,
        #[serde(rename = "use")]
        use_: Option<String>,
        key_ops: Option<Vec<String>>,
        alg: Option<String>,
        crv: Option<String>,
        n: Option<String>,
        e: Option<String>,
        x: Option<String>,
        y: Option<String>,
    }
    let jwk: RawJwk = serde_json::from_value(value).ok()?;
    let kid = jwk.kid.filter(|kid| !kid.is_empty())?;
    if jwk.use_.as_deref().is_some_and(|u| u != "sig")
        || jwk
            .key_ops
            .as_ref()
            .is_some_and(|ops| !ops.iter().any(|op| op == "verify"))
    {
        return None;
    }
    let kind = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("RSA", _) => KeyKind::Rsa,
        ("EC", Some("P-256")) => KeyKind::P256,
        ("OKP", Some("Ed25519")) => KeyKind::Ed25519,
        _ => return None,
    };
    if jwk.alg.as_deref().is_some_and(|alg| alg != kind.alg_name()) {
        return None;
    }
    let decode = |member: &Option<String>| {
        member
            .as_deref()
            .and_then(|text| URL_SAFE_NO_PAD.decode(text).ok())
    };
    let key = match kind {
        KeyKind::Rsa => {
            let n = decode(&jwk.n)?;
            let e = decode(&jwk.e)?;
            let n = &n[n.iter().position(|&b| b != 0)?..];
            let e = &e[e.iter().position(|&b| b != 0)?..];
            // 2048 to 8192 bits, as the verifier requires; refused here to say so early.
            if !(256..=1024).contains(&n.len()) || e.len() > 8 {
                return None;
            }
            DecodingKey::from_rsa_raw_components(n, e)
        }
        KeyKind::P256 => {
            let (x, y) = (decode(&jwk.x)?, decode(&jwk.y)?);
            if x.len() != 32 || y.len() != 32 {
                return None;
            }
            DecodingKey::from_ec_components(jwk.x.as_deref()?, jwk.y.as_deref()?).ok()?
        }
        KeyKind::Ed25519 => {
            if decode(&jwk.x)?.len() != 32 {
                return None;
            }
            DecodingKey::from_ed_components(jwk.x.as_deref()?).ok()?
        }
    };
    Some((kid, CachedKey { kind, key }))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Mutex, OnceLock};
    use std::time::{SystemTime, UNIX_EPOCH};

    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
        RSA_PKCS1_SHA256,
    };
    use aws_lc_rs::{encoding::AsDer as _, hmac, rsa};
    use serde_json::json;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinHandle;

    use super::*;

    const ISS: &str = "https://id.example.com/";
    const AUD: &str = "imgnode";
    const HOUR: Duration = Duration::from_secs(3600);

    struct Keys {
        rsa: rsa::KeyPair,
        ec: EcdsaKeyPair,
        ed: Ed25519KeyPair,
    }

    /// Generated once: an RSA key takes a while.
    fn keys() -> &'static Keys {
        static KEYS: OnceLock<Keys> = OnceLock::new();
        KEYS.get_or_init(|| Keys {
            rsa: rsa::KeyPair::generate(rsa::KeySize::Rsa2048).unwrap(),
            ec: new_ec_key(),
            ed: Ed25519KeyPair::generate().unwrap(),
        })
    }

    fn new_ec_key() -> EcdsaKeyPair {
        EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap()
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn rsa_jwk(kid: &str, key: &rsa::KeyPair) -> Value {
        let public = key.public_key();
        json!({
            "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
            "n": b64(public.modulus().big_endian_without_leading_zero()),
            "e": b64(public.exponent().big_endian_without_leading_zero()),
        })
    }

    fn ec_jwk(kid: &str, key: &EcdsaKeyPair) -> Value {
        // Uncompressed point: 0x04 || x || y.
        let point = key.public_key().as_ref();
        json!({
            "kty": "EC", "kid": kid, "crv": "P-256",
            "x": b64(&point[1..33]), "y": b64(&point[33..65]),
        })
    }

    fn ed_jwk(kid: &str, key: &Ed25519KeyPair) -> Value {
        json!({ "kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64(key.public_key().as_ref()) })
    }

    fn jwks(keys: &[Value]) -> String {
        json!({ "keys": keys }).to_string()
    }

    /// The usual set: `rsa-1`, `ec-1`, `ed-1`.
    fn standard_jwks() -> String {
        let k = keys();
        jwks(&[
            rsa_jwk("rsa-1", &k.rsa),
            ec_jwk("ec-1", &k.ec),
            ed_jwk("ed-1", &k.ed),
        ])
    }

    enum Signer<'a> {
        Rsa(&'a rsa::KeyPair),
        Ec(&'a EcdsaKeyPair),
        Ed(&'a Ed25519KeyPair),
        Hmac(&'a [u8]),
        Unsigned,
    }

    fn sign(header: &Value, claims: &Value, signer: Signer<'_>) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = match signer {
            Signer::Rsa(key) => {
                let mut sig = vec![0; key.public_modulus_len()];
                key.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    input.as_bytes(),
                    &mut sig,
                )
                .unwrap();
                sig
            }
            Signer::Ec(key) => key
                .sign(&SystemRandom::new(), input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
            Signer::Ed(key) => key.sign(input.as_bytes()).as_ref().to_vec(),
            Signer::Hmac(secret) => {
                let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
                hmac::sign(&key, input.as_bytes()).as_ref().to_vec()
            }
            Signer::Unsigned => Vec::new(),
        };
        format!("{input}.{}", b64(&signature))
    }

    fn token(alg: &str, kid: &str, claims: &Value, signer: Signer<'_>) -> String {
        sign(
            &json!({ "alg": alg, "typ": "JWT", "kid": kid }),
            claims,
            signer,
        )
    }

    fn rs256(claims: &Value) -> String {
        token("RS256", "rsa-1", claims, Signer::Rsa(&keys().rsa))
    }

    fn es256(kid: &str, claims: &Value) -> String {
        token("ES256", kid, claims, Signer::Ec(&keys().ec))
    }

    fn unix_now() -> i64 {
        i64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap()
    }

    /// Valid claims for ten more minutes, changed by `changes`; a `null` change removes.
    fn claims(changes: Value) -> Value {
        let now = unix_now();
        let mut claims = json!({
            "iss": ISS, "aud": AUD, "sub": "user-1", "account": "acme",
            "iat": now, "exp": now + 600,
        });
        let map = claims.as_object_mut().unwrap();
        for (name, value) in changes.as_object().unwrap() {
            if value.is_null() {
                map.remove(name);
            } else {
                map.insert(name.clone(), value.clone());
            }
        }
        claims
    }

    fn valid() -> Value {
        claims(json!({}))
    }

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Mode {
        Serve,
        /// The body delimited by closing the connection, with no length announced.
        ServeUnframed,
        Fail,
        Hang,
        /// Serves once `gate` gets a permit; `arrived` is notified when the request is in.
        Gated,
    }

    struct ServerState {
        body: Mutex<String>,
        mode: Mutex<Mode>,
        hits: AtomicUsize,
        arrived: tokio::sync::Notify,
        gate: tokio::sync::Semaphore,
    }

    /// A JWKS endpoint on 127.0.0.1:0: HTTP/1.1, one request per connection.
    struct JwksServer {
        url: String,
        state: Arc<ServerState>,
        accept: JoinHandle<()>,
    }

    impl JwksServer {
        async fn start(body: String) -> JwksServer {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!(
                "http://{}/.well-known/jwks.json",
                listener.local_addr().unwrap()
            );
            let state = Arc::new(ServerState {
                body: Mutex::new(body),
                mode: Mutex::new(Mode::Serve),
                hits: AtomicUsize::new(0),
                arrived: tokio::sync::Notify::new(),
                gate: tokio::sync::Semaphore::new(0),
            });
            let shared = state.clone();
            let accept = tokio::spawn(async move {
                while let Ok((socket, _)) = listener.accept().await {
                    tokio::spawn(answer(socket, shared.clone()));
                }
            });
            JwksServer { url, state, accept }
        }

        fn hits(&self) -> usize {
            self.state.hits.load(Ordering::SeqCst)
        }

        fn set_body(&self, body: String) {
            *self.state.body.lock().unwrap() = body;
        }

        fn set_mode(&self, mode: Mode) {
            *self.state.mode.lock().unwrap() = mode;
        }

        /// Stops listening: connections are refused from now on.
        async fn shut_down(self) {
            self.accept.abort();
            let _ = self.accept.await;
        }
    }

    async fn answer(mut socket: TcpStream, state: Arc<ServerState>) {
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        // Counted before answering, so a caller that got the answer sees the count.
        state.hits.fetch_add(1, Ordering::SeqCst);
        let mode = *state.mode.lock().unwrap();
        if mode == Mode::Gated {
            state.arrived.notify_one();
            state.gate.acquire().await.unwrap().forget();
        }
        let body = state.body.lock().unwrap().clone();
        let response = match mode {
            Mode::Hang => return std::future::pending().await,
            Mode::Fail => "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\
                           Connection: close\r\n\r\n"
                .to_string(),
            Mode::Serve | Mode::Gated => format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            ),
            Mode::ServeUnframed => format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{body}"
            ),
        };
        let _ = socket.write_all(response.as_bytes()).await;
        let _ = socket.shutdown().await;
    }

    fn config(url: &str) -> JwtConfig {
        JwtConfig {
            min_refresh_interval: Duration::from_secs(60),
            ..JwtConfig::new(url, ISS, AUD)
        }
    }

    async fn setup() -> (JwksServer, JwtVerifier) {
        let server = JwksServer::start(standard_jwks()).await;
        let verifier = JwtVerifier::new(config(&server.url)).unwrap();
        (server, verifier)
    }

    #[track_caller]
    fn assert_invalid(result: Result<JwtClaims, JwtError>, expected: &str) {
        match result {
            Err(JwtError::Invalid(why)) => {
                assert!(
                    why.contains(expected),
                    "refused for {why:?}, expected {expected:?}"
                )
            }
            other => panic!("expected Invalid({expected:?}), got {other:?}"),
        }
    }

    #[tokio::test]
    async fn accepts_each_algorithm_with_its_key() {
        let (server, verifier) = setup().await;
        let k = keys();
        let expected = JwtClaims {
            subject: "user-1".into(),
            account: "acme".into(),
            read: true,
            write: true,
            account_scope: false,
            expires_at: 2_000_000_000,
        };
        let valid = || claims(json!({ "exp": 2_000_000_000 }));
        for token in [
            rs256(&valid()),
            es256("ec-1", &valid()),
            token("EdDSA", "ed-1", &valid(), Signer::Ed(&k.ed)),
        ] {
            assert_eq!(verifier.verify(&token).await.unwrap(), expected);
        }
        assert_eq!(server.hits(), 1, "one fetch serves all known kids");
    }

    #[tokio::test]
    async fn scopes_come_from_scope_or_scopes() {
        let (_server, verifier) = setup().await;
        let cases = [
            (json!({ "scope": "read" }), (true, false, false)),
            (
                json!({ "scope": "openid write profile" }),
                (false, true, false),
            ),
            (json!({ "scope": "read write" }), (true, true, false)),
            (json!({ "scopes": ["write"] }), (false, true, false)),
            (json!({ "scopes": "read" }), (true, false, false)),
            (
                json!({ "scope": "read", "scopes": ["write"] }),
                (true, true, false),
            ),
            (json!({ "scope": "read account" }), (true, false, true)),
            (json!({ "scopes": ["account"] }), (false, false, true)),
            // Present but naming none: nothing granted. Prefixed forms are not ours.
            (
                json!({ "scope": "openid images:read" }),
                (false, false, false),
            ),
            (json!({ "scope": "" }), (false, false, false)),
            (json!({ "scopes": [] }), (false, false, false)),
            // Neither claim: what a key created without scopes gets, never `account`.
            (json!({}), (true, true, false)),
        ];
        for (changes, expected) in cases {
            let got = verifier
                .verify(&rs256(&claims(changes.clone())))
                .await
                .unwrap();
            assert_eq!(
                (got.read, got.write, got.account_scope),
                expected,
                "{changes}"
            );
        }
        for changes in [
            json!({ "scope": 7 }),
            json!({ "scopes": ["read", 1] }),
            json!({ "scope": { "read": true } }),
        ] {
            assert_invalid(
                verifier.verify(&rs256(&claims(changes))).await,
                "malformed scope",
            );
        }
    }

    #[tokio::test]
    async fn refuses_expired_and_not_yet_valid_within_leeway() {
        let (_server, verifier) = setup().await;
        let now = unix_now();
        assert_invalid(
            verifier
                .verify(&rs256(&claims(json!({ "exp": now - 120 }))))
                .await,
            "expired",
        );
        assert_invalid(
            verifier
                .verify(&rs256(&claims(json!({ "nbf": now + 120 }))))
                .await,
            "not valid yet",
        );
        // Inside the 60 s leeway both pass.
        verifier
            .verify(&rs256(&claims(json!({ "exp": now - 30 }))))
            .await
            .unwrap();
        verifier
            .verify(&rs256(&claims(json!({ "nbf": now + 30 }))))
            .await
            .unwrap();
        assert_invalid(
            verifier
                .verify(&rs256(&claims(json!({ "exp": null }))))
                .await,
            "exp claim",
        );
        assert_invalid(
            verifier
                .verify(&rs256(&claims(json!({ "exp": "tomorrow" }))))
                .await,
            "exp claim",
        );
        assert_invalid(
            verifier
                .verify(&rs256(&claims(json!({ "nbf": "later" }))))
                .await,
            "nbf claim",
        );
    }

    #[tokio::test]
    async fn configured_leeway_applies() {
        let server = JwksServer::start(standard_jwks()).await;
        let verifier = JwtVerifier::new(JwtConfig {
            leeway: Duration::ZERO,
            ..config(&server.url)
        })
        .unwrap();
        let now = unix_now();
        assert_invalid(
            verifier
                .verify(&rs256(&claims(json!({ "exp": now - 30 }))))
                .await,
            "expired",
        );
        assert_invalid(
            verifier
                .verify(&rs256(&claims(json!({ "nbf": now + 30 }))))
                .await,
            "not valid yet",
        );
    }

    #[tokio::test]
    async fn refuses_wrong_issuer_or_audience() {
        let (_server, verifier) = setup().await;
        assert_invalid(
            verifier
                .verify(&rs256(&claims(json!({ "iss": "https://evil.example/" }))))
                .await,
            "wrong issuer",
        );
        assert_invalid(
            verifier
                .verify(&rs256(&claims(json!({ "iss": null }))))
                .await,
            "iss",
        );
        // An array holding the issuer passes jsonwebtoken's check, not ours.
        assert_invalid(
            verifier
                .verify(&rs256(&claims(json!({ "iss": [ISS, "x"] }))))
                .await,
            "wrong issuer",
        );
        assert_invalid(
            verifier
                .verify(&rs256(&claims(json!({ "aud": "someone-else" }))))
                .await,
            "wrong audience",
        );
        assert_invalid(
            verifier
                .verify(&rs256(&claims(json!({ "aud": ["a", "b"] }))))
                .await,
            "wrong audience",
        );
        assert_invalid(
            verifier
                .verify(&rs256(&claims(json!({ "aud": null }))))
                .await,
            "aud",
        );
        assert_invalid(
            verifier.verify(&rs256(&claims(json!({ "aud": 5 })))).await,
            "aud",
        );
        // An audience list that names us is fine.
        verifier
            .verify(&rs256(&claims(json!({ "aud": ["other", AUD] }))))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn refuses_missing_or_malformed_account_and_subject() {
        let (_server, verifier) = setup().await;
        for changes in [
            json!({ "account": null }),
            json!({ "account": "" }),
            json!({ "account": 42 }),
            json!({ "account": ["acme"] }),
        ] {
            assert_invalid(verifier.verify(&rs256(&claims(changes))).await, "account");
        }
        for changes in [
            json!({ "sub": null }),
            json!({ "sub": "" }),
            json!({ "sub": 42 }),
        ] {
            assert_invalid(verifier.verify(&rs256(&claims(changes))).await, "sub");
        }
    }

    #[tokio::test]
    async fn account_claim_is_configurable() {
        let server = JwksServer::start(standard_jwks()).await;
        let verifier = JwtVerifier::new(JwtConfig {
            account_claim: "https://img.example/tenant".into(),
            ..config(&server.url)
        })
        .unwrap();
        let token = rs256(&claims(json!({ "https://img.example/tenant": "globex" })));
        assert_eq!(verifier.verify(&token).await.unwrap().account, "globex");
        // The default claim alone no longer names the account.
        assert_invalid(verifier.verify(&rs256(&valid())).await, "tenant");
    }

    #[tokio::test]
    async fn refuses_unknown_kid_without_fetching_within_the_floor() {
        let (server, verifier) = setup().await;
        verifier.verify(&rs256(&valid())).await.unwrap();
        assert_invalid(
            verifier.verify(&es256("nobody", &valid())).await,
            "unknown key id",
        );
        assert_eq!(server.hits(), 1);
    }

    #[tokio::test]
    async fn refuses_bad_signatures() {
        let (_server, verifier) = setup().await;
        // Right kid and algorithm, another key.
        let other = new_ec_key();
        let forged = token("ES256", "ec-1", &valid(), Signer::Ec(&other));
        assert_invalid(verifier.verify(&forged).await, "bad signature");
        // A genuine signature over other claims.
        let genuine = rs256(&valid());
        let elevated = rs256(&claims(json!({ "account": "someone-else" })));
        let mut parts: Vec<&str> = genuine.split('.').collect();
        parts[1] = elevated.split('.').nth(1).unwrap();
        assert_invalid(verifier.verify(&parts.join(".")).await, "bad signature");
        // No signature at all.
        let stripped = format!("{}.", genuine.rsplit_once('.').unwrap().0);
        assert_invalid(verifier.verify(&stripped).await, "bad signature");
    }

    #[tokio::test]
    async fn refuses_none_hmac_and_algorithms_foreign_to_the_key() {
        let (server, verifier) = setup().await;
        let k = keys();
        let unsigned = token("none", "rsa-1", &valid(), Signer::Unsigned);
        assert!(JwtVerifier::looks_like_jwt(&unsigned));
        assert_invalid(verifier.verify(&unsigned).await, "algorithm not accepted");
        assert_invalid(
            verifier
                .verify(&token("None", "rsa-1", &valid(), Signer::Unsigned))
                .await,
            "algorithm not accepted",
        );
        // Key confusion: HMAC keyed with the RSA public key, in each form it is published.
        let spki = k.rsa.public_key().as_der().unwrap();
        let pkcs1 = k.rsa.public_key().as_ref().to_vec();
        let jwk_text = rsa_jwk("rsa-1", &k.rsa).to_string();
        for secret in [spki.as_ref(), &pkcs1[..], jwk_text.as_bytes()] {
            let forged = token("HS256", "rsa-1", &valid(), Signer::Hmac(secret));
            assert_invalid(verifier.verify(&forged).await, "algorithm not accepted");
        }
        // Accepted algorithms, each with another type's key.
        let mismatched = [
            token("ES256", "rsa-1", &valid(), Signer::Ec(&k.ec)),
            token("RS256", "ec-1", &valid(), Signer::Rsa(&k.rsa)),
            token("EdDSA", "rsa-1", &valid(), Signer::Ed(&k.ed)),
            token("RS256", "ed-1", &valid(), Signer::Rsa(&k.rsa)),
        ];
        for forged in mismatched {
            assert_invalid(
                verifier.verify(&forged).await,
                "does not match its key's type",
            );
        }
        // Other RSA algorithms are not accepted even with the RSA key.
        for alg in ["PS256", "RS384", "RS512", "ES384", "HS512"] {
            let forged = token(alg, "rsa-1", &valid(), Signer::Rsa(&k.rsa));
            assert_invalid(verifier.verify(&forged).await, "algorithm not accepted");
        }
        assert_eq!(
            server.hits(),
            1,
            "a known kid with a wrong algorithm fetches nothing"
        );
    }

    #[tokio::test]
    async fn refuses_headers_without_kid_or_with_crit() {
        let (_server, verifier) = setup().await;
        let k = keys();
        let no_kid = sign(&json!({ "alg": "RS256" }), &valid(), Signer::Rsa(&k.rsa));
        assert_invalid(verifier.verify(&no_kid).await, "no key id");
        let crit = sign(
            &json!({ "alg": "RS256", "kid": "rsa-1", "crit": ["exp"], "exp": 1 }),
            &valid(),
            Signer::Rsa(&k.rsa),
        );
        assert_invalid(verifier.verify(&crit).await, "critical");
        // A `jku` pointing elsewhere is ignored: the configured set decides.
        let jku = sign(
            &json!({ "alg": "ES256", "kid": "ec-1", "jku": "https://evil.example/jwks" }),
            &valid(),
            Signer::Ec(&new_ec_key()),
        );
        assert_invalid(verifier.verify(&jku).await, "bad signature");
    }

    #[tokio::test]
    async fn refuses_malformed_and_oversized_tokens() {
        let (server, verifier) = setup().await;
        for bad in [
            "",
            "abc",
            "a.b",
            "a.b.c.d",
            "e30.e30.!!",
            "e30=.e30.sig",
            "..",
            "e30..x",
        ] {
            assert_invalid(verifier.verify(bad).await, "not a JWT");
        }
        assert_invalid(
            verifier.verify("eyJub3Qi.e30.c2ln").await,
            "malformed header",
        );
        let huge = rs256(&claims(json!({ "pad": "x".repeat(MAX_TOKEN_BYTES) })));
        assert_invalid(verifier.verify(&huge).await, "too long");
        assert_eq!(server.hits(), 0);
    }

    #[test]
    fn looks_like_jwt_is_a_shape_check() {
        assert!(JwtVerifier::looks_like_jwt(
            "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_"
        ));
        assert!(JwtVerifier::looks_like_jwt("a.b."));
        assert!(!JwtVerifier::looks_like_jwt("imgsrc_0123456789abcdef"));
        assert!(!JwtVerifier::looks_like_jwt("a.b"));
        assert!(!JwtVerifier::looks_like_jwt(".b.c"));
        assert!(!JwtVerifier::looks_like_jwt("a..c"));
        assert!(!JwtVerifier::looks_like_jwt("a.b.c.d"));
        assert!(!JwtVerifier::looks_like_jwt("a+/.b.c"));
        assert!(!JwtVerifier::looks_like_jwt("a=.b.c"));
        assert!(!JwtVerifier::looks_like_jwt("a b.c.d"));
    }

    #[tokio::test]
    async fn a_new_kid_triggers_one_refresh_after_the_floor() {
        let (server, verifier) = setup().await;
        verifier.verify(&rs256(&valid())).await.unwrap();
        assert_eq!(server.hits(), 1);

        let k = keys();
        let next = new_ec_key();
        server.set_body(jwks(&[rsa_jwk("rsa-1", &k.rsa), ec_jwk("ec-2", &next)]));
        let rotated = token("ES256", "ec-2", &valid(), Signer::Ec(&next));
        // Within the floor the new kid is not fetched for.
        assert_invalid(verifier.verify(&rotated).await, "unknown key id");
        assert_eq!(server.hits(), 1);

        verifier.cache.clock.advance(Duration::from_secs(61));
        assert_eq!(verifier.verify(&rotated).await.unwrap().account, "acme");
        assert_eq!(server.hits(), 2);
        verifier.verify(&rotated).await.unwrap();
        verifier.verify(&rs256(&valid())).await.unwrap();
        assert_eq!(server.hits(), 2, "the refreshed set is cached");
        // `ec-1` left the set with the refresh.
        assert_invalid(
            verifier.verify(&es256("ec-1", &valid())).await,
            "unknown key id",
        );
    }

    #[tokio::test]
    async fn zero_floor_refreshes_on_each_unknown_kid() {
        let server = JwksServer::start(standard_jwks()).await;
        let verifier = JwtVerifier::new(JwtConfig {
            min_refresh_interval: Duration::ZERO,
            ..config(&server.url)
        })
        .unwrap();
        verifier.verify(&rs256(&valid())).await.unwrap();
        let next = new_ec_key();
        server.set_body(jwks(&[ec_jwk("ec-2", &next)]));
        let rotated = token("ES256", "ec-2", &valid(), Signer::Ec(&next));
        verifier.verify(&rotated).await.unwrap();
        assert_eq!(server.hits(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_unknown_kids_fetches_at_most_once_per_floor() {
        let (server, verifier) = setup().await;
        verifier.verify(&rs256(&valid())).await.unwrap();
        assert_eq!(server.hits(), 1);
        let verifier = Arc::new(verifier);

        async fn flood(verifier: &Arc<JwtVerifier>, round: usize) {
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..50 {
                let verifier = verifier.clone();
                let token = es256(&format!("random-{round}-{i}"), &valid());
                tasks.spawn(async move { verifier.verify(&token).await });
            }
            while let Some(result) = tasks.join_next().await {
                assert_invalid(result.unwrap(), "unknown key id");
            }
        }

        // Within the floor of the first fetch: none.
        flood(&verifier, 0).await;
        assert_eq!(server.hits(), 1);
        // Past it: fifty concurrent unknown kids share one fetch.
        verifier.cache.clock.advance(Duration::from_secs(61));
        flood(&verifier, 1).await;
        assert_eq!(server.hits(), 2);
        flood(&verifier, 2).await;
        assert_eq!(server.hits(), 2);
        // Known kids kept verifying throughout.
        verifier.verify(&rs256(&valid())).await.unwrap();
    }

    #[tokio::test]
    async fn a_dropped_request_does_not_cancel_its_fetch() {
        let (server, verifier) = setup().await;
        let verifier = Arc::new(verifier);
        server.set_mode(Mode::Gated);
        let first = tokio::spawn({
            let verifier = verifier.clone();
            let token = rs256(&valid());
            async move { verifier.verify(&token).await }
        });
        server.state.arrived.notified().await;
        // The client goes away while the JWKS is being fetched for it.
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        server.state.gate.add_permits(1);
        // The fetch went on; the next request waits for it instead of being refused until the
        // floor has passed.
        verifier.verify(&rs256(&valid())).await.unwrap();
        assert_eq!(server.hits(), 1);
    }

    #[tokio::test]
    async fn cached_keys_verify_while_the_jwks_server_is_down() {
        let (server, verifier) = setup().await;
        verifier.verify(&rs256(&valid())).await.unwrap();
        server.shut_down().await;
        // Past the floor and past the set's age: the refresh fails, the keys held still verify.
        verifier.cache.clock.advance(MAX_KEY_SET_AGE + HOUR);
        verifier.verify(&rs256(&valid())).await.unwrap();
        verifier.verify(&es256("ec-1", &valid())).await.unwrap();
        // A kid not held cannot be judged.
        match verifier.verify(&es256("ec-9", &valid())).await {
            Err(JwtError::Unavailable(_)) => {}
            other => panic!("expected Unavailable, got {other:?}"),
        }
        // Still refused for what can be judged without a fetch.
        assert_invalid(
            verifier
                .verify(&rs256(&claims(json!({ "aud": "x" }))))
                .await,
            "wrong audience",
        );
    }

    #[tokio::test]
    async fn an_old_key_set_is_refetched_and_withdrawn_keys_refused() {
        let (server, verifier) = setup().await;
        verifier.verify(&es256("ec-1", &valid())).await.unwrap();
        server.set_body(jwks(&[rsa_jwk("rsa-1", &keys().rsa)]));
        verifier.cache.clock.advance(MAX_KEY_SET_AGE);
        assert_invalid(
            verifier.verify(&es256("ec-1", &valid())).await,
            "unknown key id",
        );
        assert_eq!(server.hits(), 2);
        verifier.verify(&rs256(&valid())).await.unwrap();
        assert_eq!(server.hits(), 2);
    }

    #[tokio::test]
    async fn unavailable_when_no_key_set_can_be_fetched() {
        let server = JwksServer::start(standard_jwks()).await;
        server.set_mode(Mode::Fail);
        let verifier = JwtVerifier::new(config(&server.url)).unwrap();
        let Err(JwtError::Unavailable(why)) = verifier.verify(&rs256(&valid())).await else {
            panic!("expected Unavailable");
        };
        assert!(why.contains("503"), "{why}");
        // The failure counts against the floor too.
        assert!(matches!(
            verifier.verify(&rs256(&valid())).await,
            Err(JwtError::Unavailable(_))
        ));
        assert_eq!(server.hits(), 1);
        // Back up, past the floor: recovered.
        server.set_mode(Mode::Serve);
        verifier.cache.clock.advance(Duration::from_secs(61));
        verifier.verify(&rs256(&valid())).await.unwrap();
        assert_eq!(server.hits(), 2);
    }

    #[tokio::test]
    async fn fetch_is_bounded_in_time_and_size() {
        let server = JwksServer::start("x".repeat(MAX_JWKS_BYTES + 1)).await;
        let verifier = JwtVerifier::new(JwtConfig {
            min_refresh_interval: Duration::ZERO,
            fetch_timeout: Duration::from_millis(300),
            ..config(&server.url)
        })
        .unwrap();
        let Err(JwtError::Unavailable(why)) = verifier.verify(&rs256(&valid())).await else {
            panic!("expected Unavailable");
        };
        assert!(why.contains("larger than"), "{why}");
        // Without a Content-Length the limit applies while reading.
        server.set_mode(Mode::ServeUnframed);
        let Err(JwtError::Unavailable(why)) = verifier.verify(&rs256(&valid())).await else {
            panic!("expected Unavailable");
        };
        assert!(why.contains("larger than"), "{why}");
        // The same framing with a normal body works.
        server.set_body(standard_jwks());
        verifier.verify(&rs256(&valid())).await.unwrap();

        // From here on a kid not held makes it fetch.
        let unknown = es256("ec-9", &valid());
        server.set_mode(Mode::Hang);
        let Err(JwtError::Unavailable(why)) = verifier.verify(&unknown).await else {
            panic!("expected Unavailable");
        };
        assert!(why.contains("timed out"), "{why}");

        server.set_mode(Mode::Serve);
        server.set_body("{\"keys\": 5}".into());
        let Err(JwtError::Unavailable(why)) = verifier.verify(&unknown).await else {
            panic!("expected Unavailable");
        };
        assert!(why.contains("not a JWKS"), "{why}");
    }

    #[tokio::test]
    async fn unusable_jwks_entries_are_skipped() {
        let k = keys();
        let secret = b"shared-secret-published-by-mistake";
        let mut enc_key = rsa_jwk("rsa-enc", &k.rsa);
        enc_key["use"] = json!("enc");
        let mut pss_key = rsa_jwk("rsa-pss", &k.rsa);
        pss_key["alg"] = json!("PS256");
        let mut no_kid = ec_jwk("", &k.ec);
        no_kid.as_object_mut().unwrap().remove("kid");
        let mut p384 = ec_jwk("ec-384", &k.ec);
        p384["crv"] = json!("P-384");
        let mut short_x = ed_jwk("ed-short", &k.ed);
        short_x["x"] = json!(b64(&[1; 31]));
        let mut wrong_ops = ec_jwk("ec-ops", &k.ec);
        wrong_ops["key_ops"] = json!(["sign"]);
        let body = jwks(&[
            json!({ "kty": "oct", "kid": "hs", "k": b64(secret) }),
            json!({ "kty": "RSA", "kid": "rsa-bad", "n": "!!", "e": "AQAB" }),
            json!("not even an object"),
            enc_key,
            pss_key,
            no_kid,
            p384,
            short_x,
            wrong_ops,
            ec_jwk("ec-1", &k.ec),
        ]);
        let server = JwksServer::start(body).await;
        let verifier = JwtVerifier::new(config(&server.url)).unwrap();
        verifier.verify(&es256("ec-1", &valid())).await.unwrap();
        let hs = token("HS256", "hs", &valid(), Signer::Hmac(secret));
        assert_invalid(verifier.verify(&hs).await, "algorithm not accepted");
        for kid in ["rsa-enc", "rsa-pss", "rsa-bad", "ec-384", "ec-ops"] {
            let result = if kid.starts_with("rsa") {
                verifier
                    .verify(&token("RS256", kid, &valid(), Signer::Rsa(&k.rsa)))
                    .await
            } else {
                verifier.verify(&es256(kid, &valid())).await
            };
            assert_invalid(result, "unknown key id");
        }
        let ed = token("EdDSA", "ed-short", &valid(), Signer::Ed(&k.ed));
        assert_invalid(verifier.verify(&ed).await, "unknown key id");
    }

    #[tokio::test]
    async fn a_jwks_without_usable_keys_keeps_the_keys_held() {
        let (server, verifier) = setup().await;
        verifier.verify(&rs256(&valid())).await.unwrap();
        server.set_body(jwks(&[
            json!({ "kty": "oct", "kid": "hs", "k": "c2VjcmV0" }),
        ]));
        verifier.cache.clock.advance(MAX_KEY_SET_AGE);
        verifier.verify(&rs256(&valid())).await.unwrap();
        assert_eq!(server.hits(), 2);
    }

    #[test]
    fn configuration_is_checked() {
        let ok = config("https://id.example.com/.well-known/jwks.json");
        JwtVerifier::new(ok.clone()).unwrap();
        for url in [
            "http://[::1]:8080/jwks",
            "http://localhost/jwks",
            "http://127.0.0.2/j",
        ] {
            JwtVerifier::new(JwtConfig {
                jwks_url: url.into(),
                ..ok.clone()
            })
            .unwrap();
        }
        let bad = [
            JwtConfig {
                jwks_url: "http://id.example.com/jwks".into(),
                ..ok.clone()
            },
            JwtConfig {
                jwks_url: "ftp://127.0.0.1/jwks".into(),
                ..ok.clone()
            },
            JwtConfig {
                jwks_url: "not a url".into(),
                ..ok.clone()
            },
            JwtConfig {
                issuer: String::new(),
                ..ok.clone()
            },
            JwtConfig {
                audience: String::new(),
                ..ok.clone()
            },
            JwtConfig {
                account_claim: String::new(),
                ..ok.clone()
            },
            JwtConfig {
                fetch_timeout: Duration::ZERO,
                ..ok.clone()
            },
            JwtConfig {
                leeway: MAX_LEEWAY + Duration::from_secs(1),
                ..ok.clone()
            },
        ];
        for config in bad {
            let described = format!("{config:?}");
            assert!(
                matches!(JwtVerifier::new(config), Err(JwtError::Invalid(why)) if why.starts_with("JWT configuration")),
                "{described}"
            );
        }
    }

    #[tokio::test]
    async fn errors_never_quote_the_token() {
        let (_server, verifier) = setup().await;
        let marker = "SECRET-MARKER-1234";
        let k = keys();
        let tokens = [
            rs256(&claims(json!({ "exp": marker }))),
            rs256(&claims(json!({ "aud": marker }))),
            rs256(&claims(json!({ "account": null, "sub": marker }))),
            rs256(&claims(json!({ "scope": { marker: 1 } }))),
            token("RS256", marker, &valid(), Signer::Rsa(&k.rsa)),
            token(marker, "rsa-1", &valid(), Signer::Rsa(&k.rsa)),
            sign(
                &json!({ "alg": "RS256", "kid": "rsa-1", marker: 1 }),
                &valid(),
                Signer::Rsa(&k.rsa),
            ),
        ];
        for token in tokens {
            let error = verifier.verify(&token).await.unwrap_err().to_string();
            assert!(!error.contains(marker), "{error}");
        }
    }
}
