//! Signed delivery URLs: `sig = base64url_nopad(HMAC-SHA256(key, message))` over the message
//! [`crate::delivery::url::DeliveryUrl::signing_message`] builds.
//!
//! Owns the signing keys (several, for rotation: the first signs, every one verifies), where
//! they come from (a file, by default `{data_dir}/signing.keys` generated on first start), and
//! the constant-time check. Must never log a key or a signature.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

/// Shortest accepted key, in bytes of the line as written.
const MIN_KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("signing keys file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("signing keys file {path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

pub struct SigningKeys {
    keys: Vec<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKeys({} keys)", self.keys.len())
    }
}

/// Why a signature was refused (never shown to the client beyond "invalid or expired").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Expired,
    Invalid,
}

impl SigningKeys {
    /// Keys from `file`, or from `{data_dir}/signing.keys`, created with one random key (mode
    /// 0600) when it does not exist yet.
    pub(crate) fn load(file: Option<&Path>, data_dir: &Path) -> Result<SigningKeys, SigningError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SigningError::Io { path, source }
        };
        let path = match file {
            Some(path) => path.to_path_buf(),
            None => {
                let path = data_dir.join("signing.keys");
                if !path.exists() {
                    create_key_file(&path).map_err(io(&path))?;
                }
                path
            }
        };
        let text = Zeroizing::new(std::fs::read_to_string(&path).map_err(io(&path))?);
        let keys: Vec<Zeroizing<Vec<u8>>> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| Zeroizing::new(l.as_bytes().to_vec()))
            .collect();
        let invalid = |problem: String| SigningError::Invalid {
            path: path.clone(),
            problem,
        };
        if keys.is_empty() {
            return Err(invalid("holds no key".into()));
        }
        if let Some(n) = keys.iter().position(|k| k.len() < MIN_KEY_LEN) {
            return Err(invalid(format!(
                "key on line {} is shorter than {MIN_KEY_LEN} characters",
                n + 1
            )));
        }
        Ok(SigningKeys { keys })
    }

    /// Keys given directly (tests, benches).
    pub fn from_keys<I: IntoIterator<Item = Vec<u8>>>(keys: I) -> SigningKeys {
        SigningKeys {
            keys: keys.into_iter().map(Zeroizing::new).collect(),
        }
    }

    /// The signature of `message` with the first key.
    pub fn sign(&self, message: &str) -> String {
        URL_SAFE_NO_PAD.encode(mac(&self.keys[0], message).finalize().into_bytes())
    }

    /// Checks `sig`/`exp` of a URL whose signing message is `message`: present, not expired
    /// at `now`, and made by one of the keys (constant-time comparison).
    pub fn verify(
        &self,
        message: &str,
        sig: Option<&str>,
        exp: Option<i64>,
        now: i64,
    ) -> Result<(), Refusal> {
        let sig = sig.ok_or(Refusal::Missing)?;
        if exp.is_some_and(|exp| exp <= now) {
            return Err(Refusal::Expired);
        }
        let Ok(raw) = URL_SAFE_NO_PAD.decode(sig) else {
            return Err(Refusal::Invalid);
        };
        // Every key is tried, so the time taken does not tell which one matched.
        let matched = self.keys.iter().fold(false, |found, key| {
            mac(key, message).verify_slice(&raw).is_ok() | found
        });
        if matched {
            Ok(())
        } else {
            Err(Refusal::Invalid)
        }
    }
}

fn mac(key: &[u8], message: &str) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(message.as_bytes());
    mac
}

fn create_key_file(path: &Path) -> std::io::Result<()> {
    use chacha20poly1305::aead::{OsRng, rand_core::RngCore};
    let mut raw = Zeroizing::new([0u8; 32]);
    OsRng
        .try_fill_bytes(raw.as_mut())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let line = Zeroizing::new(format!(
        "# imgnode URL signing keys: the first signs, all verify.\n{}\n",
        URL_SAFE_NO_PAD.encode(raw.as_ref())
    ));
    crate::fsperm::create_private_file(path, line.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &[u8] = b"first-key-0123456789abcdefghijklmnop";
    const K2: &[u8] = b"second-key-0123456789abcdefghijklmno";

    #[test]
    fn sign_then_verify_with_rotation() {
        let old = SigningKeys::from_keys([K1.to_vec()]);
        let rotated = SigningKeys::from_keys([K2.to_vec(), K1.to_vec()]);
        let msg = "demo/a/b.webp?w=100:2000000000";
        let sig = old.sign(msg);
        assert_eq!(sig.len(), 43, "base64url of 32 bytes without padding");
        assert_eq!(
            rotated.verify(msg, Some(&sig), Some(2_000_000_000), 0),
            Ok(())
        );
        assert_ne!(rotated.sign(msg), sig, "the first key signs");
        assert_eq!(
            old.verify(msg, Some(&rotated.sign(msg)), None, 0),
            Err(Refusal::Invalid)
        );
    }

    #[test]
    fn refusals() {
        let keys = SigningKeys::from_keys([K1.to_vec()]);
        let msg = "demo/a.jpg?:100";
        let sig = keys.sign(msg);
        assert_eq!(keys.verify(msg, None, None, 0), Err(Refusal::Missing));
        assert_eq!(
            keys.verify(msg, Some(&sig), Some(100), 100),
            Err(Refusal::Expired)
        );
        assert_eq!(keys.verify(msg, Some(&sig), Some(100), 99), Ok(()));
        assert_eq!(
            keys.verify("demo/a.jpg?:101", Some(&sig), Some(101), 0),
            Err(Refusal::Invalid)
        );
        assert_eq!(keys.verify(msg, Some("!!"), None, 0), Err(Refusal::Invalid));
        let mut bad = sig.into_bytes();
        bad[0] = if bad[0] == b'A' { b'B' } else { b'A' };
        let bad = String::from_utf8(bad).unwrap();
        assert_eq!(keys.verify(msg, Some(&bad), None, 0), Err(Refusal::Invalid));
    }

    #[test]
    fn key_file_is_generated_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = SigningKeys::load(None, dir.path()).unwrap();
        let b = SigningKeys::load(None, dir.path()).unwrap();
        assert_eq!(a.sign("m"), b.sign("m"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("signing.keys"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let short = dir.path().join("short.keys");
        std::fs::write(&short, "tooshort\n").unwrap();
        assert!(SigningKeys::load(Some(&short), dir.path()).is_err());
        std::fs::write(&short, "# only a comment\n").unwrap();
        assert!(SigningKeys::load(Some(&short), dir.path()).is_err());
        assert!(format!("{a:?}").contains("1 keys"));
    }
}
