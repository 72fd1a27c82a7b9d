//! Console sessions and the console's WebAuthn relying party.
//!
//! A session is a random 256-bit secret in an `HttpOnly; SameSite=Strict` cookie; the store
//! keeps its SHA-256 only. It acts as one API key of its account (the key signed in with, or
//! the one whose session registered the passkey signed in with): the tenant API authorises a
//! session's call with that key's scopes, exactly as the key's own call, and the session ends
//! with the key. Ends too after `console.idle_timeout` unused, `console.absolute_timeout`
//! after sign-in, on sign-out, suspension and erasure.
//!
//! CSRF: a state-changing request authenticated by the cookie must carry the session's token
//! in `X-CSRF-Token` (a hash of the session secret: tied to the session, readable only by a
//! page of the console's origin through the session answer) and an `Origin` of the console
//! ([`Site::origin_allowed`]). `SameSite=Strict` is the second wall, not the only one.
//!
//! The relying party (id and origin) comes from `server.public_url`; a loopback listener
//! without one is `http://localhost:PORT` (browsers allow WebAuthn over http on `localhost`
//! only, and an IP address is never a relying-party id), where `http://127.0.0.1:PORT` is an
//! accepted origin too (API-key sign-in works there, passkeys do not).
//! Must never store or log a session secret.

use std::net::SocketAddr;

use sha2::{Digest, Sha256};
use webauthn_rs::prelude::{Url, Webauthn, WebauthnBuilder};

use super::{AuthError, Principal, Scopes, random_hex};
use crate::store::{SessionRecord, Store};

/// The session cookie over https: `__Host-` makes browsers refuse it unless `Secure`,
/// `Path=/` and without `Domain` (no subdomain can plant one).
const COOKIE_SECURE: &str = "__Host-imgnode_session";
/// The session cookie of a loopback http console.
const COOKIE_PLAIN: &str = "imgnode_session";
/// The request header that carries the session's CSRF token.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// Hex digits of a session secret (32 random bytes).
const SECRET_HEX: usize = 64;

/// Where the console is served from, and its relying party.
pub(crate) struct Site {
    /// `scheme://host[:port]`, what browsers send as `Origin`.
    pub(crate) origin: String,
    /// Further accepted origins (`http://127.0.0.1:PORT` beside `http://localhost:PORT`).
    also: Vec<String>,
    /// The cookie carries `Secure` (everywhere but loopback http).
    pub(crate) secure: bool,
    /// `None` when the origin cannot be a relying party (an IP address, or plain http off
    /// loopback): passkeys are unavailable, API-key sign-in still works.
    pub(crate) webauthn: Option<Webauthn>,
}

impl Site {
    /// From `server.public_url`, else from the bound public address when it is loopback;
    /// `None` when neither gives an origin (a reachable listener without a public URL).
    pub(crate) fn new(public_url: Option<&str>, bound: Option<SocketAddr>) -> Option<Site> {
        let (url, also) = match public_url {
            Some(u) => (Url::parse(u).ok()?, Vec::new()),
            None => {
                let addr = bound?;
                if !addr.ip().is_loopback() {
                    return None;
                }
                let port = addr.port();
                let ip = Url::parse(&format!("http://{addr}")).ok()?;
                (
                    Url::parse(&format!("http://localhost:{port}")).ok()?,
                    vec![ip.origin().ascii_serialization()],
                )
            }
        };
        let origin = url.origin().ascii_serialization();
        let loopback_http = url.scheme() == "http"
            && url.host_str().is_some_and(|h| {
                h == "localhost"
                    || h.trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            });
        let rp_origin = Url::parse(&origin).ok()?;
        let webauthn = rp_origin.domain().and_then(|host| {
            if url.scheme() != "https" && host != "localhost" {
                return None;
            }
            WebauthnBuilder::new(host, &rp_origin)
                .ok()?
                .rp_name("imgnode")
                .build()
                .ok()
        });
        Some(Site {
            origin,
            also,
            secure: !loopback_http,
            webauthn,
        })
    }

    pub(crate) fn cookie_name(&self) -> &'static str {
        if self.secure {
            COOKIE_SECURE
        } else {
            COOKIE_PLAIN
        }
    }

    /// `Origin` is the console's own.
    pub(crate) fn origin_allowed(&self, origin: &str) -> bool {
        origin == self.origin || self.also.iter().any(|o| o == origin)
    }

    /// The `Set-Cookie` value that holds `secret` for `max_age_secs`.
    pub(crate) fn set_cookie(&self, secret: &str, max_age_secs: u64) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!(
            "{}={secret}; HttpOnly{secure}; SameSite=Strict; Path=/; Max-Age={max_age_secs}",
            self.cookie_name()
        )
    }

    /// The `Set-Cookie` value that deletes the session cookie.
    pub(crate) fn clear_cookie(&self) -> String {
        self.set_cookie("", 0)
    }

    /// The session secret of the request's cookie, when it has the shape of one.
    pub(crate) fn cookie_secret<'a>(&self, headers: &'a http::HeaderMap) -> Option<&'a str> {
        let name = self.cookie_name();
        headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .filter(|v| plausible_secret(v))
    }

    /// Refuses a state-changing request authenticated by the cookie `secret` unless it
    /// comes from the console's origin and carries the session's CSRF token; safe methods
    /// pass. The message says what is missing.
    pub(crate) fn check_csrf(
        &self,
        method: &http::Method,
        headers: &http::HeaderMap,
        secret: &str,
    ) -> Result<(), &'static str> {
        if *method == http::Method::GET || *method == http::Method::HEAD {
            return Ok(());
        }
        self.check_origin(headers)?;
        let sent = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or("missing X-CSRF-Token header")?;
        if constant_time_eq(sent.as_bytes(), csrf_token(secret).as_bytes()) {
            Ok(())
        } else {
            Err("wrong X-CSRF-Token for this session")
        }
    }

    /// `Origin` is present and the console's own.
    pub(crate) fn check_origin(&self, headers: &http::HeaderMap) -> Result<(), &'static str> {
        match headers.get(http::header::ORIGIN).map(|v| v.to_str()) {
            Some(Ok(o)) if self.origin_allowed(o) => Ok(()),
            Some(_) => Err("Origin is not the console's"),
            None => Err("missing Origin header"),
        }
    }
}

fn plausible_secret(s: &str) -> bool {
    s.len() == SECRET_HEX && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh session secret (hex; only its hash is stored).
pub(crate) fn new_secret() -> Result<String, AuthError> {
    random_hex(SECRET_HEX / 2)
}

/// What the store keeps of a secret (sessions and ceremonies alike).
pub(crate) fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The CSRF token of a session: derived from its secret, so nothing more is stored, and it
/// does not reveal the secret.
pub(crate) fn csrf_token(secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"imgnode console csrf\0");
    h.update(secret.as_bytes());
    hex::encode(h.finalize())
}

/// The principal behind a session secret, with its record. `Invalid` when the session is
/// unknown, its key is revoked or expired, or it ran past a timeout (then it is deleted).
/// Moves its last use to `now`.
pub(crate) async fn authenticate(
    store: &Store,
    secret: &str,
    idle_secs: i64,
    now: i64,
) -> Result<(Principal, SessionRecord), AuthError> {
    let hash = secret_hash(secret);
    let record = store
        .console_session(&hash)
        .await?
        .ok_or(AuthError::Invalid)?;
    let idle_over = now >= record.last_seen_at.saturating_add(idle_secs);
    if now >= record.expires_at || idle_over {
        store.delete_console_session(&hash).await?;
        return Err(AuthError::Invalid);
    }
    if record.key_expires_at.is_some_and(|t| t <= now) {
        return Err(AuthError::Invalid);
    }
    let scopes = Scopes::parse(&record.scopes).ok_or(AuthError::Invalid)?;
    if now > record.last_seen_at {
        store.touch_console_session(&hash, now).await?;
    }
    Ok((
        Principal {
            account: record.account.clone(),
            key_id: record.key_id.clone(),
            scopes,
            plan: String::new(),
            // The key's: what a key made in the console may live at most (not the session's
            // hours).
            expires_at: record.key_expires_at,
        },
        record,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_sites_are_localhost_relying_parties_without_secure() {
        let site = Site::new(None, Some("127.0.0.1:8080".parse().unwrap())).unwrap();
        assert_eq!(site.origin, "http://localhost:8080");
        assert!(site.origin_allowed("http://127.0.0.1:8080"));
        assert!(!site.origin_allowed("http://127.0.0.1:8081"));
        assert!(!site.secure && site.webauthn.is_some());
        assert_eq!(site.cookie_name(), "imgnode_session");
        assert!(Site::new(None, Some("0.0.0.0:8080".parse().unwrap())).is_none());
        let https = Site::new(Some("https://img.example.com/cdn"), None).unwrap();
        assert_eq!(https.origin, "https://img.example.com");
        assert!(https.secure && https.webauthn.is_some());
        assert!(https.set_cookie("ab", 60).contains("; Secure;"));
        assert!(
            https
                .set_cookie("ab", 60)
                .starts_with("__Host-imgnode_session=ab; HttpOnly")
        );
        // An IP address is never a relying-party id; plain http off loopback is no secure
        // context: key sign-in only, with Secure cookies kept.
        let ip = Site::new(Some("https://10.0.0.5:8443"), None).unwrap();
        assert!(ip.webauthn.is_none() && ip.secure);
        let plain = Site::new(Some("http://img.example.com"), None).unwrap();
        assert!(plain.webauthn.is_none() && plain.secure);
    }

    #[test]
    fn csrf_needs_the_origin_and_the_sessions_token() {
        let site = Site::new(None, Some("127.0.0.1:80".parse().unwrap())).unwrap();
        let secret = "ab".repeat(32);
        let mut h = http::HeaderMap::new();
        assert!(site.check_csrf(&http::Method::GET, &h, &secret).is_ok());
        assert!(site.check_csrf(&http::Method::POST, &h, &secret).is_err());
        h.insert("origin", "http://localhost".parse().unwrap());
        h.insert(CSRF_HEADER, csrf_token(&secret).parse().unwrap());
        assert!(site.check_csrf(&http::Method::POST, &h, &secret).is_ok());
        let other = "cd".repeat(32);
        assert!(site.check_csrf(&http::Method::POST, &h, &other).is_err());
        h.insert("origin", "http://evil.example".parse().unwrap());
        assert!(site.check_csrf(&http::Method::DELETE, &h, &secret).is_err());
        h.insert(
            http::header::COOKIE,
            format!("a=b; imgnode_session={secret}").parse().unwrap(),
        );
        assert_eq!(site.cookie_secret(&h), Some(secret.as_str()));
        h.insert(http::header::COOKIE, "imgnode_session=zz".parse().unwrap());
        assert_eq!(site.cookie_secret(&h), None);
    }
}
