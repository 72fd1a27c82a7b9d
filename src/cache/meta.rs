//! Small hot metadata in memory (moka): accounts, path lookups and cache data keys.
//!
//! Owns the freshness rules: positive entries live `metadata_ttl`, negative ones (unknown
//! account or path) `negative_ttl`, and every write that changes an answer invalidates it
//! here before the write is acknowledged. Concurrent misses for one key load it once (moka
//! coalesces `try_get_with`). Must never decide HTTP status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;

use super::variants::DataKey;
use crate::cluster::{Broadcaster, Notice};
use crate::store::{Account, AccountSettings, ImageRecord, PresetRecord, Store, StoreError};

/// Positive answers live `positive`, absent ones `negative`.
struct PresenceExpiry {
    positive: Duration,
    negative: Duration,
}

impl<K, T> Expiry<K, Option<T>> for PresenceExpiry {
    fn expire_after_create(&self, _key: &K, value: &Option<T>, _now: Instant) -> Option<Duration> {
        Some(if value.is_some() {
            self.positive
        } else {
            self.negative
        })
    }
}

impl<K, T> Expiry<K, Stamped<T>> for PresenceExpiry {
    fn expire_after_create(&self, key: &K, value: &Stamped<T>, now: Instant) -> Option<Duration> {
        self.expire_after_create(key, &value.value, now)
    }
}

/// A cached answer and the account's write generation read *before* it was loaded. A write
/// bumps the generation after it commits, so an answer loaded concurrently with the write
/// (and inserted after its invalidation) is recognised as stale on its first read.
#[derive(Clone)]
struct Stamped<T> {
    generation: u64,
    value: Option<T>,
}

pub struct MetaCache {
    /// Stamped too: a suspension or plan change (here or from another node) bumps it.
    /// Values behind `Arc`: a hit hands out a pointer, not a deep copy of the record.
    accounts: Cache<String, Stamped<Arc<Account>>>,
    images: Cache<(String, String), Stamped<Arc<ImageRecord>>>,
    data_keys: Cache<String, Option<Arc<DataKey>>>,
    settings: Cache<String, Arc<AccountSettings>>,
    /// `(account, preset name)`.
    presets: Cache<(String, String), Stamped<Arc<PresetRecord>>>,
    /// Write generation per account (images, paths, presets); absent = 0.
    generations: std::sync::RwLock<std::collections::HashMap<String, u64>>,
    /// Added to every account's generation; bumped when everything is invalidated.
    epoch: std::sync::atomic::AtomicU64,
    /// Tells the other nodes what this one invalidates (see `cluster`).
    cluster: Broadcaster,
}

impl MetaCache {
    pub(crate) fn new(
        entries: u64,
        positive: Duration,
        negative: Duration,
        cluster: Broadcaster,
    ) -> MetaCache {
        fn build<K, V>(entries: u64, positive: Duration, negative: Duration) -> Cache<K, V>
        where
            K: std::hash::Hash + Eq + Send + Sync + 'static,
            V: Clone + Send + Sync + 'static,
            PresenceExpiry: Expiry<K, V>,
        {
            Cache::builder()
                .max_capacity(entries)
                .expire_after(PresenceExpiry { positive, negative })
                .support_invalidation_closures()
                .build()
        }
        MetaCache {
            accounts: build(entries, positive, negative),
            images: build(entries, positive, negative),
            data_keys: build(entries, positive, negative),
            presets: build(entries, positive, negative),
            generations: Default::default(),
            epoch: Default::default(),
            cluster,
            settings: Cache::builder()
                .max_capacity(entries)
                .time_to_live(positive)
                .build(),
        }
    }

    pub async fn account(
        &self,
        store: &Store,
        name: &str,
    ) -> Result<Option<Arc<Account>>, StoreError> {
        self.fresh(&self.accounts, name, name, || async {
            Ok(store.account(name).await?.map(Arc::new))
        })
        .await
    }

    pub(crate) async fn image(
        &self,
        store: &Store,
        account: &str,
        stem: &str,
    ) -> Result<Option<Arc<ImageRecord>>, StoreError> {
        let key = (account.to_string(), stem.to_string());
        self.fresh(&self.images, &key, account, || async {
            Ok(store.image_by_stem(account, stem).await?.map(Arc::new))
        })
        .await
    }

    fn generation(&self, account: &str) -> u64 {
        let own = self
            .generations
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(account)
            .copied()
            .unwrap_or(0);
        self.epoch.load(std::sync::atomic::Ordering::Acquire) + own
    }

    /// Makes every cached image and preset answer of `account` stale, here and (through the
    /// other nodes' whole account entry) everywhere. Call after the write commits.
    pub(crate) fn bump(&self, account: &str) {
        self.bump_local(account);
        self.cluster.publish(Notice::Account(account.to_string()));
    }

    fn bump_local(&self, account: &str) {
        *self
            .generations
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(account.to_string())
            .or_default() += 1;
    }

    /// A cached answer unless a write of the account happened since it was loaded; then a
    /// fresh one (loaded once however many requests ask). The key is copied only to insert.
    async fn fresh<K, Q, T, F, Fut>(
        &self,
        cache: &Cache<K, Stamped<T>>,
        key: &Q,
        account: &str,
        load: F,
    ) -> Result<Option<T>, StoreError>
    where
        K: std::borrow::Borrow<Q> + std::hash::Hash + Eq + Send + Sync + 'static,
        Q: std::hash::Hash + Eq + ToOwned<Owned = K> + ?Sized,
        T: Clone + Send + Sync + 'static,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<T>, StoreError>>,
    {
        for _ in 0..2 {
            let generation = self.generation(account);
            let got = cache
                .try_get_with_by_ref(key, async {
                    Ok(Stamped {
                        generation,
                        value: load().await?,
                    })
                })
                .await
                .map_err(unshare)?;
            if got.generation >= self.generation(account) {
                return Ok(got.value);
            }
            cache.invalidate(key).await;
        }
        // Writes keep racing this read: answer from the database without caching.
        load().await
    }

    /// The data key of an original's cached variants in one account (`scope`, see
    /// [`crate::cache::scope`]); `None` when it has none (so nothing of it can be cached).
    pub(crate) async fn data_key(
        &self,
        store: &Store,
        scope: &str,
    ) -> Result<Option<Arc<DataKey>>, StoreError> {
        self.data_keys
            .try_get_with_by_ref(scope, async {
                Ok(store
                    .cache_key(scope)
                    .await?
                    .map(|k| Arc::new(DataKey::from_bytes(k))))
            })
            .await
            .map_err(unshare)
    }

    /// The data key to encrypt a new variant with, created on first use.
    pub(crate) async fn data_key_for_insert(
        &self,
        store: &Store,
        scope: &str,
    ) -> Result<Arc<DataKey>, StoreError> {
        if let Some(key) = self.data_key(store, scope).await? {
            return Ok(key);
        }
        let candidate = DataKey::generate();
        let key = Arc::new(DataKey::from_bytes(
            store
                .cache_key_or_insert(scope, candidate.as_bytes())
                .await?,
        ));
        self.data_keys
            .insert(scope.to_string(), Some(key.clone()))
            .await;
        Ok(key)
    }

    /// The account's settings (defaults for delivery URLs).
    pub(crate) async fn settings(
        &self,
        store: &Store,
        account: &str,
    ) -> Result<Arc<AccountSettings>, StoreError> {
        self.settings
            .try_get_with_by_ref(account, async {
                Ok(Arc::new(store.account_settings(account).await?.settings))
            })
            .await
            .map_err(unshare)
    }

    /// The account's preset with this name (by name only: delivery URLs name presets).
    pub(crate) async fn preset(
        &self,
        store: &Store,
        account: &str,
        name: &str,
    ) -> Result<Option<Arc<PresetRecord>>, StoreError> {
        let key = (account.to_string(), name.to_string());
        self.fresh(&self.presets, &key, account, || async {
            Ok(store
                .preset(account, name)
                .await?
                .filter(|p| p.name == name)
                .map(Arc::new))
        })
        .await
    }

    pub(crate) async fn invalidate_settings(&self, account: &str) {
        self.settings.invalidate(account).await;
        self.cluster.publish(Notice::Account(account.to_string()));
    }

    pub(crate) async fn invalidate_path(&self, account: &str, stem: &str) {
        self.images
            .invalidate(&(account.to_string(), stem.to_string()))
            .await;
        self.bump(account);
    }

    pub(crate) async fn invalidate_account(&self, account: &str) {
        self.invalidate_account_local(account).await;
        self.cluster.publish(Notice::Account(account.to_string()));
    }

    /// Everything about `account`, on this node only (another node's notice).
    pub(crate) async fn invalidate_account_local(&self, account: &str) {
        self.accounts.invalidate(account).await;
        self.settings.invalidate(account).await;
        let owned = account.to_string();
        // Predicates run lazily inside moka; the entries stop being returned at once.
        let _ = self
            .images
            .invalidate_entries_if(move |(a, _), _| *a == owned);
        self.bump_local(account);
    }

    /// On this node only: callers publish the hashes themselves (see `Caches`).
    pub(crate) async fn invalidate_data_keys(&self, hashes: &[String]) {
        for hash in hashes {
            self.data_keys.invalidate(hash).await;
        }
    }

    /// Every cached answer, on this node only (callers publish when other nodes must follow).
    pub(crate) fn invalidate_all_local(&self) {
        // Loads in flight were stamped with the old generations: make them stale too.
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.invalidate_all_entries();
    }

    fn invalidate_all_entries(&self) {
        self.accounts.invalidate_all();
        self.images.invalidate_all();
        self.data_keys.invalidate_all();
        self.settings.invalidate_all();
        self.presets.invalidate_all();
    }
}

fn unshare(e: Arc<StoreError>) -> StoreError {
    Arc::try_unwrap(e).unwrap_or_else(StoreError::Shared)
}
