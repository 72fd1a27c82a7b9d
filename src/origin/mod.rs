//! Originals in object storage (a local folder, or S3-compatible), encrypted at rest.
//!
//! `Origin` owns the object_store client, the object layout (sealed objects under random
//! names `o/ab/{id}`, and the plaintext `ab/cd/{hash}` of versions before encryption), the
//! streaming seal and open of an object (`sealed`), and the mapping of storage failures to
//! `NotFound` / `Timeout` / `Unavailable`. `Originals` (`originals`) is the one way the rest
//! of the node reads, writes and deletes an account's original: it finds the object and its
//! wrapped data key in the metadata store and unwraps it with the KEK (`kek`).
//!
//! Objects are immutable and never rewritten under a name a reader may hold, so a reader
//! never sees a half-written object. Must never know about paths, serve bytes that failed
//! authentication, or log key material.

mod kek;
mod originals;
mod sealed;

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::config::{OriginConfig, ServerSideEncryption};

pub(crate) use kek::DEFAULT_FILE as DEFAULT_KEK_FILE;
pub(crate) use kek::Source as KekSource;
pub use kek::{Kek, KekError};
pub use originals::{Originals, OriginalsError};
pub(crate) use sealed::ObjectKey;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error("object {0} not found")]
    NotFound(String),
    #[error("object storage timed out")]
    Timeout,
    #[error("object storage unavailable: {0}")]
    Unavailable(String),
}

#[derive(Clone)]
pub struct Origin {
    store: Arc<dyn ObjectStore>,
    timeout: Duration,
    /// `fs` or `s3`, for logs and metrics.
    kind: &'static str,
    /// Striped per-hash locks: an upload holds its hash's lock from writing the object to
    /// committing the metadata, and a delete of an unreferenced object takes it too, so on one
    /// node a delete never removes an object an upload is about to reference.
    locks: Arc<[tokio::sync::Mutex<()>]>,
}

const LOCK_STRIPES: usize = 64;

fn new_locks() -> Arc<[tokio::sync::Mutex<()>]> {
    (0..LOCK_STRIPES)
        .map(|_| tokio::sync::Mutex::new(()))
        .collect()
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin").field("kind", &self.kind).finish()
    }
}

impl Origin {
    pub fn from_config(config: &OriginConfig) -> Result<Origin, OriginError> {
        match config {
            OriginConfig::Fs { path } => Origin::local(path),
            OriginConfig::S3 {
                bucket,
                region,
                endpoint,
                path_style,
                allow_http,
                credentials_file,
                prefix,
                timeout,
                sse,
            } => {
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_region(region)
                    .with_virtual_hosted_style_request(!path_style)
                    .with_client_options(
                        ClientOptions::new()
                            .with_allow_http(*allow_http)
                            // A backstop: `origin.timeout` is enforced around each operation
                            // (see `get`), so a slow bucket is a 504, not a retried error.
                            .with_timeout(*timeout * 2)
                            .with_connect_timeout(Duration::from_secs(5)),
                    )
                    // Two quick retries of a failed request (a 5xx, a reset): a bucket that
                    // keeps failing answers 502 in well under a second instead of being retried
                    // for minutes (object_store's default).
                    .with_retry(object_store::RetryConfig {
                        max_retries: 2,
                        retry_timeout: *timeout * 2,
                        ..Default::default()
                    });
                if !endpoint.is_empty() {
                    b = b.with_endpoint(endpoint);
                }
                // Defence in depth only: the objects are sealed before they leave the node.
                // (object_store does not export the key's enum; its documented name parses.)
                let sse_kind: AmazonS3ConfigKey = "aws_server_side_encryption"
                    .parse()
                    .map_err(|e: object_store::Error| OriginError::Unavailable(e.to_string()))?;
                match sse {
                    None => {}
                    Some(ServerSideEncryption::S3Managed) => b = b.with_config(sse_kind, "AES256"),
                    // The bucket's default KMS key.
                    Some(ServerSideEncryption::Kms { key_id }) if key_id.is_empty() => {
                        b = b.with_config(sse_kind, "aws:kms");
                    }
                    Some(ServerSideEncryption::Kms { key_id }) => {
                        b = b.with_sse_kms_encryption(key_id.as_str());
                    }
                }
                if let Some(file) = credentials_file {
                    let creds = Credentials::read(file)?;
                    b = b
                        .with_access_key_id(creds.access_key_id)
                        .with_secret_access_key(creds.secret_access_key);
                    if let Some(token) = creds.session_token {
                        b = b.with_token(token);
                    }
                }
                let s3 = b
                    .build()
                    .map_err(|e| OriginError::Unavailable(e.to_string()))?;
                let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                    Arc::new(s3)
                } else {
                    Arc::new(object_store::prefix::PrefixStore::new(s3, prefix.as_str()))
                };
                Ok(Origin {
                    store,
                    timeout: *timeout,
                    kind: "s3",
                    locks: new_locks(),
                })
            }
        }
    }

    /// A local-folder origin (created if missing). Writes go to a temporary file renamed into
    /// place, so a crash never leaves a partial object under its final name.
    fn local(path: &FsPath) -> Result<Origin, OriginError> {
        crate::fsperm::create_private_dir(path)
            .map_err(|e| OriginError::Unavailable(format!("{}: {e}", path.display())))?;
        let fs = LocalFileSystem::new_with_prefix(path)
            .map_err(|e| OriginError::Unavailable(e.to_string()))?;
        Ok(Origin {
            store: Arc::new(fs),
            timeout: Duration::from_secs(30),
            kind: "fs",
            locks: new_locks(),
        })
    }

    /// `ab/cd/abcd…`, the plaintext layout of versions before encryption at rest: two
    /// fan-out levels keep folders small on a local disk.
    fn plaintext_key(hash: &str) -> Path {
        let (a, b) = (
            hash.get(0..2).unwrap_or("00"),
            hash.get(2..4).unwrap_or("00"),
        );
        Path::from(format!("{a}/{b}/{hash}"))
    }

    /// The plaintext original of an earlier version with this content hash; refuses objects
    /// over `max_bytes` before reading their body.
    pub async fn get_plaintext(&self, hash: &str, max_bytes: u64) -> Result<Bytes, OriginGetError> {
        let key = Origin::plaintext_key(hash);
        let work = async {
            let got = self.store.get(&key).await.map_err(|e| map_err(e, hash))?;
            if got.meta.size > max_bytes {
                return Err(OriginGetError::TooLarge(got.meta.size));
            }
            got.bytes()
                .await
                .map_err(|e| OriginGetError::Origin(map_err(e, hash)))
        };
        self.timed(work).await
    }

    /// Writes a plaintext original in the layout of versions before encryption at rest.
    /// Only for tests and tools that recreate such a store (the node never writes one).
    pub async fn put_plaintext_legacy(&self, hash: &str, bytes: Bytes) -> Result<(), OriginError> {
        let key = Origin::plaintext_key(hash);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let work = self
            .store
            .put_opts(&key, PutPayload::from_bytes(bytes), opts);
        match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(_)) | Ok(Err(object_store::Error::AlreadyExists { .. })) => Ok(()),
            Ok(Err(e)) => Err(map_err(e, hash)),
            Err(_) => Err(OriginError::Timeout),
        }
    }

    /// Deletes the plaintext original of `hash`, if there is one.
    pub(crate) async fn delete_plaintext(&self, hash: &str) -> Result<(), OriginError> {
        self.delete_path(&Origin::plaintext_key(hash), hash).await
    }

    /// Whether the plaintext original of `hash` exists.
    pub async fn plaintext_exists(&self, hash: &str) -> Result<bool, OriginError> {
        self.path_exists(&Origin::plaintext_key(hash), hash).await
    }

    /// Opens the sealed object `object` with `key` as its body streams in (the ciphertext is
    /// never held whole); refuses a plaintext over `max_bytes` before allocating for it.
    pub(crate) async fn get_sealed(
        &self,
        object: &str,
        key: &ObjectKey,
        max_bytes: u64,
    ) -> Result<Bytes, OriginGetError> {
        use futures_util::StreamExt;
        let path = Path::from(object);
        let work = async {
            let got = self
                .store
                .get(&path)
                .await
                .map_err(|e| map_err(e, object))?;
            if got.meta.size > sealed::max_sealed_len(max_bytes) {
                return Err(OriginGetError::TooLarge(got.meta.size));
            }
            if self.kind == "fs" {
                // A local file is read in one call (its stream comes in 8 KiB pieces, 40 times
                // slower), then opened in the same buffer.
                let buf = got
                    .bytes()
                    .await
                    .map_err(|e| OriginGetError::Origin(map_err(e, object)))?;
                return sealed::Opener::open_in_place(key, object, Vec::from(buf), max_bytes)
                    .map(Bytes::from)
                    .map_err(|e| sealed_failure(object, e));
            }
            let mut opener = sealed::Opener::new(key, object, got.meta.size, max_bytes);
            let mut body = got.into_stream();
            while let Some(piece) = body.next().await {
                let piece = piece.map_err(|e| OriginGetError::Origin(map_err(e, object)))?;
                opener.push(&piece).map_err(|e| sealed_failure(object, e))?;
            }
            opener
                .finish()
                .map(Bytes::from)
                .map_err(|e| sealed_failure(object, e))
        };
        self.timed(work).await
    }

    /// Seals `plain` with `key` into the object `object`, a segment at a time (one request
    /// up to 8 MiB, a multipart upload above). Object names are random and never reused, so
    /// no reader sees a half-written object under its name.
    pub(crate) async fn put_sealed(
        &self,
        object: &str,
        key: &ObjectKey,
        plain: &[u8],
    ) -> Result<(), OriginError> {
        use tokio::io::AsyncWriteExt;
        let work = async {
            let mut writer = object_store::buffered::BufWriter::with_capacity(
                self.store.clone(),
                Path::from(object),
                8 << 20,
            );
            let mut sealer = sealed::Sealer::new(key, object);
            writer.write_all(sealer.header()).await?;
            let segment = sealed::Sealer::segment_len();
            let count = plain.len().div_ceil(segment).max(1);
            for i in 0..count {
                let part =
                    &plain[(i * segment).min(plain.len())..((i + 1) * segment).min(plain.len())];
                writer
                    .write_all(&sealer.seal_next(part, i + 1 == count))
                    .await?;
            }
            writer.shutdown().await
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(map_io_err(e, object)),
            Err(_) => Err(OriginError::Timeout),
        }
    }

    /// Deletes the object `object` (absent counts as deleted).
    pub(crate) async fn delete_object(&self, object: &str) -> Result<(), OriginError> {
        self.delete_path(&Path::from(object), object).await
    }

    pub async fn object_exists(&self, object: &str) -> Result<bool, OriginError> {
        self.path_exists(&Path::from(object), object).await
    }

    async fn delete_path(&self, path: &Path, name: &str) -> Result<(), OriginError> {
        match tokio::time::timeout(self.timeout, self.store.delete(path)).await {
            Ok(Ok(())) | Ok(Err(object_store::Error::NotFound { .. })) => Ok(()),
            Ok(Err(e)) => Err(map_err(e, name)),
            Err(_) => Err(OriginError::Timeout),
        }
    }

    async fn path_exists(&self, path: &Path, name: &str) -> Result<bool, OriginError> {
        match tokio::time::timeout(self.timeout, self.store.head(path)).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(object_store::Error::NotFound { .. })) => Ok(false),
            Ok(Err(e)) => Err(map_err(e, name)),
            Err(_) => Err(OriginError::Timeout),
        }
    }

    async fn timed<T>(
        &self,
        work: impl Future<Output = Result<T, OriginGetError>>,
    ) -> Result<T, OriginGetError> {
        match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(OriginGetError::Origin(OriginError::Timeout)),
        }
    }

    /// The lock of `hash`'s stripe (see `locks`).
    pub(crate) async fn lock(&self, hash: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let stripe = hash
            .get(..2)
            .and_then(|h| usize::from_str_radix(h, 16).ok())
            .unwrap_or(0)
            % LOCK_STRIPES;
        self.locks[stripe].lock().await
    }

    /// The stored objects last written before `before_unix` (seconds): the sweeper's
    /// candidates. Names that are neither a plaintext original nor a sealed object
    /// (temporary files, strangers) are skipped.
    pub(crate) async fn objects_older_than(
        &self,
        before_unix: i64,
    ) -> Result<Vec<Listed>, OriginError> {
        use futures_util::TryStreamExt;
        let work = self.store.list(None).try_filter_map(|meta| async move {
            if meta.last_modified.timestamp() >= before_unix {
                return Ok(None);
            }
            let name = meta.location.filename().unwrap_or_default();
            let hex = |n: usize| name.len() == n && name.bytes().all(|b| b.is_ascii_hexdigit());
            Ok(if hex(64) {
                Some(Listed::Plaintext(name.to_string()))
            } else if hex(OBJECT_ID_LEN) && meta.location.as_ref().starts_with(SEALED_PREFIX) {
                Some(Listed::Sealed(meta.location.to_string()))
            } else {
                None
            })
        });
        match tokio::time::timeout(self.timeout * 10, work.try_collect::<Vec<Listed>>()).await {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(e)) => Err(map_err(e, "list")),
            Err(_) => Err(OriginError::Timeout),
        }
    }
}

/// An object the sweeper may look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Listed {
    /// A plaintext original of an earlier version: its content hash.
    Plaintext(String),
    /// A sealed original: its object name.
    Sealed(String),
}

/// Folder of the sealed originals.
const SEALED_PREFIX: &str = "o/";
/// Hex digits of a sealed object's random id (128 bits).
const OBJECT_ID_LEN: usize = 32;

/// A fresh sealed object name, `o/ab/{32 hex digits}`: random, so it says nothing about the
/// bytes (two accounts' copies of one file are unrelated objects).
pub(crate) fn new_object_name() -> String {
    let mut id = [0u8; OBJECT_ID_LEN / 2];
    aws_lc_rs::rand::fill(&mut id).expect("the OS random source failed");
    let id = hex::encode(id);
    format!("{SEALED_PREFIX}{}/{id}", &id[..2])
}

fn sealed_failure(object: &str, e: sealed::SealError) -> OriginGetError {
    match e {
        sealed::SealError::TooLarge(n) => OriginGetError::TooLarge(n),
        other => {
            tracing::error!(object, error = %other, "sealed original refused: not served");
            OriginGetError::Sealed(other.to_string())
        }
    }
}

fn map_io_err(e: std::io::Error, name: &str) -> OriginError {
    match e.into_inner() {
        Some(inner) => match inner.downcast::<object_store::Error>() {
            Ok(os) => map_err(*os, name),
            Err(other) => OriginError::Unavailable(other.to_string()),
        },
        None => OriginError::Unavailable(format!("writing {name} failed")),
    }
}

/// A failed `Origin::get`: the store's failure, or an object over the byte limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginGetError {
    #[error(transparent)]
    Origin(#[from] OriginError),
    #[error("original is {0} bytes, over the limit")]
    TooLarge(u64),
    /// A sealed original that failed authentication, or whose key did not unwrap: tampered
    /// with, truncated, or not this node's. Never served.
    #[error("original refused: {0}")]
    Sealed(String),
}

fn map_err(e: object_store::Error, hash: &str) -> OriginError {
    match e {
        object_store::Error::NotFound { .. } => OriginError::NotFound(hash.to_string()),
        other => {
            // object_store reports client timeouts inside a Generic error: find the HTTP
            // client's own timeout in the chain (the retry summary's text names its
            // `retry_timeout` setting whatever the cause, so text is no guide).
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&other);
            let mut timed_out = false;
            while let Some(e) = source {
                if e.downcast_ref::<reqwest::Error>()
                    .is_some_and(reqwest::Error::is_timeout)
                    || e.downcast_ref::<std::io::Error>()
                        .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
                {
                    timed_out = true;
                    break;
                }
                source = e.source();
            }
            if timed_out {
                OriginError::Timeout
            } else {
                OriginError::Unavailable(other.to_string())
            }
        }
    }
}

/// S3 credentials read from a file (a systemd credential, typically), never from argv.
struct Credentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

impl Credentials {
    fn read(path: &FsPath) -> Result<Credentials, OriginError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            access_key_id: String,
            secret_access_key: String,
            session_token: Option<String>,
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            OriginError::Unavailable(format!("credentials file {}: {e}", path.display()))
        })?;
        // The parse error could quote the secret: report only where it failed.
        let f: File = toml::from_str(&text).map_err(|_| {
            OriginError::Unavailable(format!(
                "credentials file {}: expected access_key_id and secret_access_key",
                path.display()
            ))
        })?;
        Ok(Credentials {
            access_key_id: f.access_key_id,
            secret_access_key: f.secret_access_key,
            session_token: f.session_token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_round_trip_and_error_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let o = Origin::local(dir.path()).unwrap();
        let hash = "ab".repeat(32);
        assert_eq!(
            o.get_plaintext(&hash, 1000).await,
            Err(OriginGetError::Origin(OriginError::NotFound(hash.clone())))
        );
        o.put_plaintext_legacy(&hash, Bytes::from_static(b"hello"))
            .await
            .unwrap();
        // Idempotent: the same content hash again is fine.
        o.put_plaintext_legacy(&hash, Bytes::from_static(b"hello"))
            .await
            .unwrap();
        assert_eq!(
            o.get_plaintext(&hash, 1000).await.unwrap(),
            Bytes::from_static(b"hello")
        );
        assert_eq!(
            o.get_plaintext(&hash, 3).await,
            Err(OriginGetError::TooLarge(5))
        );
        assert!(o.plaintext_exists(&hash).await.unwrap());
        assert!(dir.path().join(format!("ab/ab/{hash}")).is_file());
        o.delete_plaintext(&hash).await.unwrap();
        o.delete_plaintext(&hash).await.unwrap();
        assert!(!o.plaintext_exists(&hash).await.unwrap());
    }

    #[tokio::test]
    async fn sealed_objects_stream_in_and_out_and_refuse_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let o = Origin::local(dir.path()).unwrap();
        let key = ObjectKey::generate();
        let name = new_object_name();
        assert!(name.starts_with("o/") && name.len() == 2 + 3 + OBJECT_ID_LEN);
        assert_ne!(name, new_object_name());
        let plain: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        o.put_sealed(&name, &key, &plain).await.unwrap();
        let file = dir.path().join(&name);
        let on_disk = std::fs::read(&file).unwrap();
        assert_eq!(on_disk.len() as u64, sealed::sealed_len(plain.len() as u64));
        assert!(!on_disk.windows(64).any(|w| w == &plain[1000..1064]));
        assert_eq!(o.get_sealed(&name, &key, u64::MAX).await.unwrap(), plain);
        assert!(matches!(
            o.get_sealed(&name, &key, 1000).await,
            Err(OriginGetError::TooLarge(_))
        ));
        assert_eq!(
            o.get_sealed(&name, &key, plain.len() as u64 - 1).await,
            Err(OriginGetError::TooLarge(plain.len() as u64))
        );
        let mut bad = on_disk.clone();
        bad[200_000] ^= 4;
        std::fs::write(&file, &bad).unwrap();
        assert!(matches!(
            o.get_sealed(&name, &key, u64::MAX).await,
            Err(OriginGetError::Sealed(_))
        ));
        let listed = o.objects_older_than(i64::MAX).await.unwrap();
        assert_eq!(listed, vec![Listed::Sealed(name.clone())]);
        o.delete_object(&name).await.unwrap();
        assert!(!o.object_exists(&name).await.unwrap());
    }
}
