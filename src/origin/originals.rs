//! An account's originals, encrypted at rest: the one way the node reads, writes and
//! deletes them.
//!
//! Each (account, content hash) has its own data key and its own sealed object under a
//! random name, so the bucket does not show that two accounts hold the same bytes, and
//! deleting one account's copy (its key row, then its object) leaves nothing of it readable
//! while another account's copy is untouched. Deduplication stays within an account. Data
//! keys are wrapped by the KEK and bound to their row (account, hash, object name), so a key
//! moved to another row does not unwrap.
//!
//! Originals stored by earlier versions are plaintext objects named by their hash: read as
//! they are until `Ingest::encrypt_plaintext` has sealed them.
//!
//! Callers hold the hash's locks (`Origin::lock`, `Store::lock_hash`) around `write` and
//! `release`, as they did before encryption.

use std::sync::Arc;

use bytes::Bytes;

use super::kek::{Kek, KekError, WrappedKey};
use super::sealed::ObjectKey;
use super::{Origin, OriginError, OriginGetError, new_object_name};
use crate::store::{Store, StoreError, StoredKey};

#[derive(Debug, thiserror::Error)]
pub enum OriginalsError {
    #[error("{0}")]
    Origin(#[from] OriginError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Kek(#[from] KekError),
}

#[derive(Clone)]
pub struct Originals {
    origin: Origin,
    kek: Arc<Kek>,
    store: Store,
}

impl std::fmt::Debug for Originals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Originals")
            .field("origin", &self.origin)
            .field("kek", &self.kek)
            .finish()
    }
}

/// What a wrapped data key is bound to: its row.
fn context(account: &str, hash: &str, object: &str) -> Vec<u8> {
    let mut c = b"imgnode/original-key\0".to_vec();
    for part in [account, hash, object] {
        c.extend_from_slice(part.as_bytes());
        c.push(0);
    }
    c
}

impl Originals {
    pub fn new(origin: Origin, kek: Arc<Kek>, store: Store) -> Originals {
        Originals { origin, kek, store }
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    fn unwrap_key(
        &self,
        account: &str,
        hash: &str,
        row: &StoredKey,
    ) -> Result<ObjectKey, KekError> {
        let wrapped = WrappedKey {
            kek_id: row.kek_id.clone(),
            wrapped: row.wrapped.clone(),
        };
        self.kek
            .unwrap(&wrapped, &context(account, hash, &row.object))
    }

    /// The bytes of `account`'s original `hash` (at most `max_bytes`).
    pub async fn read(
        &self,
        account: &str,
        hash: &str,
        max_bytes: u64,
    ) -> Result<Bytes, OriginGetError> {
        let row = self.store.original_key(account, hash).await.map_err(|e| {
            OriginGetError::Origin(OriginError::Unavailable(format!("metadata store: {e}")))
        })?;
        let Some(row) = row else {
            return self.origin.get_plaintext(hash, max_bytes).await;
        };
        let key = self.unwrap_key(account, hash, &row).map_err(|e| {
            tracing::error!(account, object = %row.object, error = %e, "original key refused: not served");
            OriginGetError::Sealed(e.to_string())
        })?;
        self.origin.get_sealed(&row.object, &key, max_bytes).await
    }

    /// Stores `plain` as `account`'s original `hash`: sealed under a new data key and object
    /// name, or nothing to do when the account holds these bytes already (an object lost
    /// from the bucket is written again under its key). The caller holds the hash's locks.
    pub async fn write(
        &self,
        account: &str,
        hash: &str,
        plain: &[u8],
    ) -> Result<(), OriginalsError> {
        if let Some(row) = self.store.original_key(account, hash).await? {
            if !self.origin.object_exists(&row.object).await? {
                let key = self.unwrap_key(account, hash, &row)?;
                self.origin.put_sealed(&row.object, &key, plain).await?;
            }
            return Ok(());
        }
        let key = ObjectKey::generate();
        let object = new_object_name();
        self.origin.put_sealed(&object, &key, plain).await?;
        let wrapped = self.kek.wrap(&key, &context(account, hash, &object));
        let stored = StoredKey {
            object: object.clone(),
            kek_id: wrapped.kek_id,
            wrapped: wrapped.wrapped,
        };
        let winner = match self.store.insert_original_key(account, hash, &stored).await {
            Ok(w) => w,
            Err(e) => {
                // Nothing refers to it: delete now rather than leave it to the sweep.
                let _ = self.origin.delete_object(&object).await;
                return Err(e.into());
            }
        };
        if winner.object != object {
            // Another node stored the same bytes for this account first.
            self.origin.delete_object(&object).await?;
        }
        Ok(())
    }

    /// Deletes `account`'s original `hash` if no image of the account references it any more:
    /// its data key first (from then on no copy of the object can be read), then its object;
    /// and the plaintext object of an earlier version when nothing reads it any more.
    /// Returns whether anything was deleted.
    pub(crate) async fn release(&self, account: &str, hash: &str) -> Result<bool, OriginalsError> {
        let shredded = self.store.shred_original_key(account, hash).await?;
        if let Some(object) = &shredded {
            self.origin.delete_object(object).await?;
        }
        let plaintext = self.release_plaintext(hash).await?;
        Ok(shredded.is_some() || plaintext)
    }

    /// Deletes the plaintext object of `hash` if it exists and no image reads it any more.
    pub(crate) async fn release_plaintext(&self, hash: &str) -> Result<bool, OriginalsError> {
        if self.store.plaintext_referenced(hash).await?
            || !self.origin.plaintext_exists(hash).await?
        {
            return Ok(false);
        }
        self.origin.delete_plaintext(hash).await?;
        Ok(true)
    }

    /// Whether `account`'s original `hash` is stored (sealed, or as an earlier version's
    /// plaintext).
    pub async fn stored(&self, account: &str, hash: &str) -> Result<bool, OriginalsError> {
        match self.store.original_key(account, hash).await? {
            Some(row) => Ok(self.origin.object_exists(&row.object).await?),
            None => Ok(self.origin.plaintext_exists(hash).await?),
        }
    }

    /// The sealed object of `account`'s original `hash`, if it has one (tests, tools).
    pub async fn object_name(
        &self,
        account: &str,
        hash: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self.key_row(account, hash).await?.map(|r| r.object))
    }

    /// The row of `account`'s original `hash`: object name and wrapped key (tests, tools).
    pub async fn key_row(
        &self,
        account: &str,
        hash: &str,
    ) -> Result<Option<StoredKey>, StoreError> {
        self.store.original_key(account, hash).await
    }

    /// Rewraps every data key not wrapped by the KEK file's first key under it, without
    /// touching the objects. Returns how many were rewrapped.
    pub async fn rotate_kek(&self) -> Result<usize, OriginalsError> {
        let first = self.kek.wrapping_id().to_string();
        let mut done = 0;
        loop {
            let batch = self.store.keys_wrapped_by_other(&first, 500).await?;
            if batch.is_empty() {
                return Ok(done);
            }
            for (account, hash, row) in batch {
                let key = self.unwrap_key(&account, &hash, &row)?;
                let rewrapped = self.kek.wrap(&key, &context(&account, &hash, &row.object));
                if self
                    .store
                    .rewrap_original_key(
                        &account,
                        &hash,
                        &row,
                        &rewrapped.kek_id,
                        &rewrapped.wrapped,
                    )
                    .await?
                {
                    done += 1;
                }
            }
        }
    }
}
