//! The key-encryption key (KEK) that wraps every original's data key.
//!
//! Owns: reading the KEK file (`storage.kek_file`, or `{data_dir}/originals.kek` generated
//! on first start), its checks (mode 0600 or stricter, one key per line of 64 hex digits,
//! comments with `#`), key ids, and wrapping/unwrapping data keys with AES-256-GCM bound to
//! the row they belong to. The first key wraps; every key unwraps (rotation).
//!
//! Must never: log, show or serialize key material (`Debug` shows ids only), or read a KEK
//! from the database or the config text.

use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::sealed::ObjectKey;

/// Name of the generated KEK file in the data directory.
pub(crate) const DEFAULT_FILE: &str = "originals.kek";
const TAG_LEN: usize = 16;
/// Hex digits of a key id.
const ID_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum KekError {
    #[error("KEK file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "KEK file {path} is readable by group or others (mode {mode:o}): run `chmod 600` on it"
    )]
    Mode { path: PathBuf, mode: u32 },
    #[error("KEK file {path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
    #[error(
        "the metadata store holds encrypted originals but the KEK file {path} does not exist: \
         restore it from its backup (a new key cannot read them)"
    )]
    Missing { path: PathBuf },
    #[error(
        "the metadata store holds data keys wrapped by KEK {id}, which is not in {path}: wrong \
         or incomplete KEK file (keep every old key in it until `imgnode rotate-kek` has run)"
    )]
    UnknownKey { path: PathBuf, id: String },
    #[error("a data key failed to unwrap (KEK {0}): the row was altered or the key is wrong")]
    Unwrap(String),
}

/// The KEK file's keys; the first wraps.
pub struct Kek {
    keys: Vec<(String, LessSafeKey)>,
    path: PathBuf,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("Kek").field("ids", &ids).finish()
    }
}

/// A data key wrapped by a KEK, as stored: the KEK's id and `hex(nonce ‖ ciphertext ‖ tag)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WrappedKey {
    pub(crate) kek_id: String,
    pub(crate) wrapped: String,
}

/// What `Kek::load` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// Read from an existing file.
    Read,
    /// Generated now (no file existed and nothing was encrypted yet).
    Generated,
}

impl Kek {
    /// The KEK from `file`, or from `{data_dir}/originals.kek`, which is generated (one random
    /// key, mode 0600) when it does not exist and `may_generate` (nothing is encrypted yet).
    pub(crate) fn load(
        file: Option<&Path>,
        data_dir: &Path,
        may_generate: bool,
    ) -> Result<(Kek, Source), KekError> {
        let (path, default) = match file {
            Some(p) => (p.to_path_buf(), false),
            None => (data_dir.join(DEFAULT_FILE), true),
        };
        let io = |source| KekError::Io {
            path: path.clone(),
            source,
        };
        let mut source = Source::Read;
        if !path.exists() {
            if !default {
                return Err(io(std::io::Error::from(std::io::ErrorKind::NotFound)));
            }
            if !may_generate {
                return Err(KekError::Missing { path });
            }
            generate(&path).map_err(io)?;
            source = Source::Generated;
        }
        check_mode(&path)?;
        let text = Zeroizing::new(std::fs::read_to_string(&path).map_err(io)?);
        let kek = Kek::parse(&text, path.clone())?;
        Ok((kek, source))
    }

    /// Keys from the text of a KEK file.
    pub(crate) fn parse(text: &str, path: PathBuf) -> Result<Kek, KekError> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut raw = Zeroizing::new([0u8; 32]);
            if line.len() != 64 || hex::decode_to_slice(line, raw.as_mut()).is_err() {
                return Err(KekError::Invalid {
                    path,
                    problem: format!(
                        "line {} is not a key (64 hex digits: `openssl rand -hex 32`)",
                        n + 1
                    ),
                });
            }
            keys.push((key_id(&raw), aead(&raw)));
        }
        if keys.is_empty() {
            return Err(KekError::Invalid {
                path,
                problem: "holds no key".into(),
            });
        }
        Ok(Kek { keys, path })
    }

    /// A KEK of these keys (tests, benches).
    pub fn from_keys(keys: &[[u8; 32]]) -> Kek {
        Kek {
            keys: keys.iter().map(|k| (key_id(k), aead(k))).collect(),
            path: PathBuf::from("(in memory)"),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The id of the key that wraps.
    pub(crate) fn wrapping_id(&self) -> &str {
        &self.keys[0].0
    }

    pub(crate) fn holds(&self, id: &str) -> bool {
        self.keys.iter().any(|(k, _)| k == id)
    }

    /// Refuses a KEK that lacks a key some stored data key is wrapped by.
    pub(crate) fn check_covers<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<(), KekError> {
        match ids.into_iter().find(|id| !self.holds(id)) {
            Some(id) => Err(KekError::UnknownKey {
                path: self.path.clone(),
                id: id.clone(),
            }),
            None => Ok(()),
        }
    }

    /// `key` wrapped by the first key, bound to `context` (the row it is stored in).
    pub(crate) fn wrap(&self, key: &ObjectKey, context: &[u8]) -> WrappedKey {
        let (id, kek) = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).expect("the OS random source failed");
        let mut blob = key.as_bytes().to_vec();
        let tag = kek
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context),
                &mut blob,
            )
            .expect("sealing 32 bytes cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&blob);
        out.extend_from_slice(tag.as_ref());
        blob.iter_mut().for_each(|b| *b = 0);
        WrappedKey {
            kek_id: id.clone(),
            wrapped: hex::encode(out),
        }
    }

    /// The data key in `wrapped`, which must have been wrapped for `context`.
    pub(crate) fn unwrap(
        &self,
        wrapped: &WrappedKey,
        context: &[u8],
    ) -> Result<ObjectKey, KekError> {
        let fail = || KekError::Unwrap(wrapped.kek_id.clone());
        let (_, kek) = self
            .keys
            .iter()
            .find(|(id, _)| *id == wrapped.kek_id)
            .ok_or_else(|| KekError::UnknownKey {
                path: self.path.clone(),
                id: wrapped.kek_id.clone(),
            })?;
        let mut blob = Zeroizing::new(hex::decode(&wrapped.wrapped).map_err(|_| fail())?);
        if blob.len() != NONCE_LEN + 32 + TAG_LEN {
            return Err(fail());
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&blob[..NONCE_LEN]);
        let plain = kek
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context),
                &mut blob[NONCE_LEN..],
            )
            .map_err(|_| fail())?;
        let mut raw = Zeroizing::new([0u8; 32]);
        raw.copy_from_slice(plain);
        Ok(ObjectKey::from_bytes(raw))
    }
}

/// A key's public id: 64 bits of a hash of it, in hex (tells keys apart, reveals nothing).
fn key_id(raw: &[u8; 32]) -> String {
    let digest = Sha256::new()
        .chain_update(b"imgnode/kek-id\0")
        .chain_update(raw)
        .finalize();
    hex::encode(&digest[..ID_LEN / 2])
}

fn aead(raw: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, raw).expect("32-byte key"))
}

fn check_mode(path: &Path) -> Result<(), KekError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|source| KekError::Io {
                path: path.to_path_buf(),
                source,
            })?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(KekError::Mode {
                path: path.to_path_buf(),
                mode: mode & 0o777,
            });
        }
    }
    Ok(())
}

fn generate(path: &Path) -> std::io::Result<()> {
    let mut raw = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(raw.as_mut()).map_err(|_| std::io::Error::other("OS random source"))?;
    let text = Zeroizing::new(format!(
        "# imgnode key-encryption key for originals: the first line wraps, every line unwraps.\n\
         # Back this file up apart from the data: without it no original can be read.\n{}\n",
        hex::encode(raw.as_ref())
    ));
    crate::fsperm::create_private_file(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_under_the_first_unwraps_under_any_and_binds_the_context() {
        let old = Kek::from_keys(&[[1; 32]]);
        let rotated = Kek::from_keys(&[[2; 32], [1; 32]]);
        let key = ObjectKey::generate();
        let w = old.wrap(&key, b"acme\0abc");
        assert_eq!(w.kek_id.len(), ID_LEN);
        assert_eq!(w.wrapped.len(), 2 * (NONCE_LEN + 32 + TAG_LEN));
        assert!(!w.wrapped.contains(&hex::encode(key.as_bytes())));
        let back = rotated.unwrap(&w, b"acme\0abc").unwrap();
        assert_eq!(back.as_bytes(), key.as_bytes());
        let rewrapped = rotated.wrap(&back, b"acme\0abc");
        assert_eq!(rewrapped.kek_id, rotated.wrapping_id());
        assert_ne!(rewrapped.kek_id, w.kek_id);
        assert!(matches!(
            old.unwrap(&rewrapped, b"acme\0abc"),
            Err(KekError::UnknownKey { .. })
        ));
        assert!(matches!(
            rotated.unwrap(&w, b"other\0abc"),
            Err(KekError::Unwrap(_))
        ));
        let mut tampered = w.clone();
        tampered.wrapped.replace_range(30..32, "00");
        if tampered != w {
            assert!(rotated.unwrap(&tampered, b"acme\0abc").is_err());
        }
    }

    #[test]
    fn file_is_generated_private_once_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let (first, source) = Kek::load(None, dir.path(), true).unwrap();
        assert_eq!(source, Source::Generated);
        let (again, source) = Kek::load(None, dir.path(), true).unwrap();
        assert_eq!(source, Source::Read);
        assert_eq!(first.wrapping_id(), again.wrapping_id());
        let path = dir.path().join(DEFAULT_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(
                Kek::load(None, dir.path(), true),
                Err(KekError::Mode { .. })
            ));
        }
        // Missing once something is encrypted: never silently a new key.
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            Kek::load(None, empty.path(), false),
            Err(KekError::Missing { .. })
        ));
        assert!(matches!(
            Kek::load(Some(&empty.path().join("nope")), empty.path(), true),
            Err(KekError::Io { .. })
        ));
        for bad in ["", "# only a comment\n", "abcd\n", &"zz".repeat(32)] {
            assert!(matches!(
                Kek::parse(bad, PathBuf::from("k")),
                Err(KekError::Invalid { .. })
            ));
        }
        let two = format!("# c\n{}\n\n  {}  \n", "ab".repeat(32), "cd".repeat(32));
        let kek = Kek::parse(&two, PathBuf::from("k")).unwrap();
        assert_eq!(kek.keys.len(), 2);
        assert!(format!("{kek:?}").len() < 80, "ids only");
        assert!(!format!("{kek:?}").contains(&"ab".repeat(32)));
    }
}
