//! Originals in object storage (a local folder, or S3-compatible), addressed by content hash.
//!
//! Owns the object_store client, the key layout and the mapping of storage failures to
//! `NotFound` / `Timeout` / `Unavailable`. Objects are immutable and written create-only, so
//! a reader never sees a half-written object. Must never know about accounts or paths: one
//! object may back images in several accounts.

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::config::OriginConfig;

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

    /// `ab/cd/abcd…`: two fan-out levels keep folders small on a local disk. (On S3, put
    /// originals under their own `origin.prefix`.)
    fn key(hash: &str) -> Path {
        let (a, b) = (
            hash.get(0..2).unwrap_or("00"),
            hash.get(2..4).unwrap_or("00"),
        );
        Path::from(format!("{a}/{b}/{hash}"))
    }

    /// The bytes of the original with this content hash; refuses objects over `max_bytes`
    /// before reading their body.
    pub(crate) async fn get(&self, hash: &str, max_bytes: u64) -> Result<Bytes, OriginGetError> {
        let key = Origin::key(hash);
        let work = async {
            let got = self.store.get(&key).await.map_err(|e| map_err(e, hash))?;
            if got.meta.size > max_bytes {
                return Err(OriginGetError::TooLarge(got.meta.size));
            }
            got.bytes()
                .await
                .map_err(|e| OriginGetError::Origin(map_err(e, hash)))
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(OriginGetError::Origin(OriginError::Timeout)),
        }
    }

    /// Stores `bytes` under `hash`. Content-addressed and create-only: an existing object
    /// with the same hash already holds these bytes, which counts as success.
    pub async fn put(&self, hash: &str, bytes: Bytes) -> Result<(), OriginError> {
        let key = Origin::key(hash);
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

    pub(crate) async fn delete(&self, hash: &str) -> Result<(), OriginError> {
        let key = Origin::key(hash);
        match tokio::time::timeout(self.timeout, self.store.delete(&key)).await {
            Ok(Ok(())) | Ok(Err(object_store::Error::NotFound { .. })) => Ok(()),
            Ok(Err(e)) => Err(map_err(e, hash)),
            Err(_) => Err(OriginError::Timeout),
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

    /// Hashes of the stored objects last written before `before_unix` (seconds) (the sweeper's candidates).
    /// Names that are not content hashes (temporary files, strangers) are skipped.
    pub(crate) async fn hashes_older_than(
        &self,
        before_unix: i64,
    ) -> Result<Vec<String>, OriginError> {
        use futures_util::TryStreamExt;
        let work = self.store.list(None).try_filter_map(|meta| async move {
            let name = meta.location.filename().unwrap_or_default();
            let is_hash = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
            Ok((is_hash && meta.last_modified.timestamp() < before_unix).then(|| name.to_string()))
        });
        match tokio::time::timeout(self.timeout * 10, work.try_collect::<Vec<String>>()).await {
            Ok(Ok(hashes)) => Ok(hashes),
            Ok(Err(e)) => Err(map_err(e, "list")),
            Err(_) => Err(OriginError::Timeout),
        }
    }

    pub async fn exists(&self, hash: &str) -> Result<bool, OriginError> {
        let key = Origin::key(hash);
        match tokio::time::timeout(self.timeout, self.store.head(&key)).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(object_store::Error::NotFound { .. })) => Ok(false),
            Ok(Err(e)) => Err(map_err(e, hash)),
            Err(_) => Err(OriginError::Timeout),
        }
    }
}

/// A failed `Origin::get`: the store's failure, or an object over the byte limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OriginGetError {
    #[error(transparent)]
    Origin(#[from] OriginError),
    #[error("original is {0} bytes, over the limit")]
    TooLarge(u64),
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
            o.get(&hash, 1000).await,
            Err(OriginGetError::Origin(OriginError::NotFound(hash.clone())))
        );
        o.put(&hash, Bytes::from_static(b"hello")).await.unwrap();
        // Idempotent: the same content hash again is fine.
        o.put(&hash, Bytes::from_static(b"hello")).await.unwrap();
        assert_eq!(
            o.get(&hash, 1000).await.unwrap(),
            Bytes::from_static(b"hello")
        );
        assert_eq!(o.get(&hash, 3).await, Err(OriginGetError::TooLarge(5)));
        assert!(o.exists(&hash).await.unwrap());
        assert!(dir.path().join(format!("ab/ab/{hash}")).is_file());
        o.delete(&hash).await.unwrap();
        o.delete(&hash).await.unwrap();
        assert!(!o.exists(&hash).await.unwrap());
    }
}
