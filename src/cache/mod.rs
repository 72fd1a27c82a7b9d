//! Caches: rendered variants (foyer, memory + disk), originals from remote origins (moka,
//! bytes-bounded), small metadata (moka), single flight, and purge.
//!
//! Owns cache keys and the purge guarantee: once a purge returns, no variant of those
//! originals is served from memory, and what remains in the disk tier's files is ciphertext
//! under a deleted data key (crypto-erasure), so no byte of it can be read back.
//! Must never decide HTTP status (errors flow back as the callers' errors).

pub(crate) mod flight;
mod foyer_metrics;
pub(crate) mod meta;
pub(crate) mod variants;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::cluster::{Broadcaster, Notice};
use crate::store::{Store, StoreError};
use meta::MetaCache;
use variants::{CacheError, Tier, Variant, VariantCache, VariantCacheConfig, VariantKey};

fn variant_config(settings: &CacheSettings) -> VariantCacheConfig {
    VariantCacheConfig {
        memory_bytes: settings.memory_bytes,
        disk_bytes: settings.disk_bytes,
        dir: settings.dir.clone(),
        ttl: settings.ttl,
        max_entry_bytes: settings.max_entry_bytes,
    }
}

/// Settings of every cache, from `[cache]`.
#[derive(Debug, Clone)]
pub(crate) struct CacheSettings {
    pub(crate) memory_bytes: u64,
    pub(crate) disk_bytes: u64,
    pub(crate) dir: PathBuf,
    pub(crate) ttl: Duration,
    pub(crate) max_entry_bytes: u64,
    /// 0 disables the originals cache (the local-folder origin needs none).
    pub(crate) originals_bytes: u64,
    pub(crate) metadata_entries: u64,
    pub(crate) metadata_ttl: Duration,
    pub(crate) negative_ttl: Duration,
    pub(crate) buster: String,
}

pub struct Caches {
    pub(crate) variants: VariantCache,
    pub meta: MetaCache,
    originals: Option<moka::future::Cache<String, Bytes>>,
    /// Variant keys that may sit in the memory tier, by original hash: what purge removes
    /// actively, to free memory at once. Correctness does not depend on it: a lookup needs the
    /// original's current data key, which purge deletes first, so a purged entry missing from
    /// this index is never served and ages out of memory. Hence it is simply bounded.
    index: Mutex<HashMap<String, HashSet<VariantKey>>>,
    index_limit: usize,
    buster: String,
    cluster: Broadcaster,
}

impl Caches {
    /// Every cache, the variants' disk tier under `settings.dir` (locked: see
    /// [`variants::LOCK_FILE`]).
    pub(crate) async fn open(
        settings: &CacheSettings,
        registry: &prometheus::Registry,
        cluster: Broadcaster,
    ) -> Result<Caches, CacheError> {
        let variants = VariantCache::open(&variant_config(settings), registry).await?;
        Ok(Caches::with_variants(variants, settings, cluster))
    }

    /// Every cache in memory only: a command run beside a node never opens its folder.
    pub(crate) async fn open_memory_only(
        settings: &CacheSettings,
        registry: &prometheus::Registry,
        cluster: Broadcaster,
    ) -> Result<Caches, CacheError> {
        let variants = VariantCache::open_memory_only(&variant_config(settings), registry).await?;
        Ok(Caches::with_variants(variants, settings, cluster))
    }

    fn with_variants(
        variants: VariantCache,
        settings: &CacheSettings,
        cluster: Broadcaster,
    ) -> Caches {
        let originals = (settings.originals_bytes > 0).then(|| {
            moka::future::Cache::builder()
                .max_capacity(settings.originals_bytes)
                .weigher(|_k: &String, v: &Bytes| u32::try_from(v.len()).unwrap_or(u32::MAX))
                .support_invalidation_closures()
                .build()
        });
        Caches {
            variants,
            meta: MetaCache::new(
                settings.metadata_entries,
                settings.metadata_ttl,
                settings.negative_ttl,
                cluster.clone(),
            ),
            originals,
            index: Mutex::new(HashMap::new()),
            index_limit: usize::try_from(settings.metadata_entries).unwrap_or(usize::MAX),
            buster: settings.buster.clone(),
            cluster,
        }
    }

    /// The key of one variant: the inputs that decide its bytes, and the account that owns
    /// the original (`scope`, see [`scope`]: two tenants holding the same bytes never share a
    /// variant, so neither learns from a hit what the other serves). Also the ETag's source.
    pub(crate) fn variant_key(&self, scope: &str, canonical: &str, format: &str) -> VariantKey {
        variant_key(scope, canonical, format, &self.buster)
    }

    /// The original's bytes through the originals cache, loading each one once however many
    /// requests ask at the same time.
    pub(crate) async fn original<F, E>(&self, scope: &str, load: F) -> Result<Bytes, E>
    where
        F: Future<Output = Result<Bytes, E>>,
        E: Clone + Send + Sync + 'static,
    {
        match &self.originals {
            None => load.await,
            Some(cache) => cache
                .try_get_with_by_ref(scope, load)
                .await
                .map_err(|e| (*e).clone()),
        }
    }

    /// Drops a deleted original's bytes (of one account: `scope`) from the originals cache.
    pub(crate) async fn forget_original(&self, scope: &str) {
        if let Some(cache) = &self.originals {
            cache.invalidate(scope).await;
        }
    }

    /// A cached variant of the original `scope` and the tier it came from; `None` when it is
    /// not cached, or the original has no data key (purged, or never rendered).
    pub(crate) async fn rendered(
        &self,
        store: &Store,
        scope: &str,
        key: &VariantKey,
    ) -> Result<Option<(Bytes, Tier)>, StoreError> {
        let Some(data_key) = self.meta.data_key(store, scope).await? else {
            return Ok(None);
        };
        let Some((variant, tier)) = self.variants.get(key, &data_key).await else {
            return Ok(None);
        };
        if tier == Tier::Disk {
            // The disk hit is now back in memory: purge must know it is there.
            self.note_cached(scope, *key);
        }
        Ok(Some((variant.bytes, tier)))
    }

    /// Stores a freshly rendered variant of the original `scope`, encrypted under its data
    /// key. A purge that ran while it rendered deleted the key the render would have used:
    /// then the entry is taken back out at once, so nothing purged is served again.
    pub(crate) async fn insert_rendered(
        &self,
        store: &Store,
        scope: &str,
        key: VariantKey,
        variant: Variant,
    ) -> Result<(), StoreError> {
        let data_key = self.meta.data_key_for_insert(store, scope).await?;
        self.variants.insert(key, variant, data_key.clone());
        self.note_cached(scope, key);
        let current = self.meta.data_key(store, scope).await?;
        if current.is_none_or(|k| k.as_bytes() != data_key.as_bytes()) {
            self.variants.remove(&key);
        }
        Ok(())
    }

    /// Remembers that `key` (a variant of the original `scope`, see [`scope`]) may now sit in
    /// memory.
    fn note_cached(&self, scope: &str, key: VariantKey) {
        /// Variants of one original tracked for active removal; more are left to age out.
        const PER_ORIGINAL: usize = 1024;
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        if !index.contains_key(scope) && index.len() >= self.index_limit {
            index.clear();
        }
        let keys = index.entry(scope.to_string()).or_default();
        if keys.len() < PER_ORIGINAL {
            keys.insert(key);
        }
    }

    /// Purges every variant `account` has of these originals: their data keys are deleted
    /// first (nothing on disk can be decrypted from then on), then the entries leave memory
    /// and disk, here and on the other nodes. Another account's variants of the same bytes
    /// are untouched.
    pub(crate) async fn purge_originals(
        &self,
        store: &Store,
        account: &str,
        hashes: &[String],
    ) -> Result<(), StoreError> {
        if hashes.is_empty() {
            return Ok(());
        }
        let scopes: Vec<String> = hashes.iter().map(|h| scope(account, h)).collect();
        store.delete_cache_keys(&scopes).await?;
        self.forget_scopes(&scopes).await;
        self.cluster.publish(Notice::Hashes(scopes));
        Ok(())
    }

    /// What this node holds of these originals (their data keys, variants and bytes), after
    /// their data keys were deleted from the database (here or by another node). `scopes` are
    /// [`scope`] strings.
    pub(crate) async fn forget_scopes(&self, scopes: &[String]) {
        self.meta.invalidate_data_keys(scopes).await;
        let keys: Vec<VariantKey> = {
            let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
            scopes
                .iter()
                .filter_map(|s| index.remove(s))
                .flatten()
                .collect()
        };
        for key in &keys {
            self.variants.remove(key);
        }
        if let Some(originals) = &self.originals {
            // A purge also makes the next render fetch the bytes from the origin again.
            for s in scopes {
                originals.invalidate(s.as_str()).await;
            }
        }
    }

    /// Purges every variant of every image of an account.
    pub(crate) async fn purge_account(
        &self,
        store: &Store,
        account: &str,
    ) -> Result<usize, StoreError> {
        let hashes = store.account_hashes(account).await?;
        self.purge_originals(store, account, &hashes).await?;
        self.meta.invalidate_account(account).await;
        Ok(hashes.len())
    }

    /// Purges everything.
    pub(crate) async fn purge_all(&self, store: &Store) -> Result<(), StoreError> {
        store.delete_all_cache_keys().await?;
        self.meta.invalidate_all_local();
        self.cluster.publish(Notice::All);
        self.index.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.variants.clear().await;
        if let Some(originals) = &self.originals {
            originals.invalidate_all();
        }
        Ok(())
    }

    pub(crate) async fn close(&self) -> Result<(), CacheError> {
        self.variants.close().await
    }
}

/// What variants, data keys and purges are keyed by: an original as one account holds it
/// (`{account}/{hash}`; account names have no `/`). Content hashes alone are shared by every
/// account that uploaded the same bytes.
pub(crate) fn scope(account: &str, hash: &str) -> String {
    // On every request: no formatting machinery, one allocation.
    let mut s = String::with_capacity(account.len() + 1 + hash.len());
    s.push_str(account);
    s.push('/');
    s.push_str(hash);
    s
}

/// SHA-256 over the NUL-separated inputs, first 128 bits.
pub(crate) fn variant_key(scope: &str, canonical: &str, format: &str, buster: &str) -> VariantKey {
    let mut h = Sha256::new();
    for part in [scope, canonical, format, buster] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let digest = h.finalize();
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    VariantKey(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_every_input_and_separate_them() {
        let base = variant_key("h", "w=100", "webp", "");
        assert_ne!(base, variant_key("h", "w=100", "avif", ""));
        assert_ne!(base, variant_key("h", "w=101", "webp", ""));
        assert_ne!(base, variant_key("g", "w=100", "webp", ""));
        assert_ne!(base, variant_key("h", "w=100", "webp", "2"));
        assert_ne!(
            variant_key("ab", "c", "", ""),
            variant_key("a", "bc", "", "")
        );
        assert_eq!(base, variant_key("h", "w=100", "webp", ""));
    }
}
