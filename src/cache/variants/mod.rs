//! The variant cache: rendered images keyed by [`VariantKey`], in a foyer hybrid cache with a
//! plaintext memory tier and an encrypted disk tier that survives restarts.
//!
//! Owns: the foyer instance (memory + block engine on a directory), placement by size,
//! per-entry TTL, crypto-erasure (every disk entry is sealed with the data key of its
//! original, so deleting that key in the metadata DB makes every variant of it unreadable even
//! if a tombstone is lost), and the `imgnode_cache_*` metrics of this tier. In parts:
//! `crypto` (data keys, sealing, the AAD), `disk` (the on-disk key and value format, media
//! type codes, the block layout), `memory` (entry weights, the eviction counter) and `metrics`
//! (the handles). The public types are here or re-exported from here; what the parts share
//! among themselves is `pub(super)`.
//!
//! Must never: write plaintext variant bytes to disk, return an entry that is expired, damaged
//! or sealed with another key, let a damaged cache file surface as an error or a panic, decide
//! HTTP statuses, or create threads (foyer runs its flushers on the current tokio runtime).

mod crypto;
mod disk;
mod memory;
mod metrics;

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use foyer::{
    BlockEngineConfig, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder,
    HybridCacheBuilderPhaseStorage, HybridCachePolicy, HybridCacheProperties, Load, Location,
    RecoverMode,
};
use prometheus::Registry;

pub(crate) use crypto::DataKey;
use disk::{DiskLayout, StoredVariant, media_type_code};
use memory::{ENTRY_MEMORY_OVERHEAD, EvictionCounter, MEMORY_ENTRY_DIVISOR};
use metrics::VariantCacheMetrics;

/// 128-bit digest naming one variant (computed by the caller from original hash + canonical
/// transform + format + buster). Stored on disk as its 16 bytes (`disk`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct VariantKey(pub(crate) [u8; 16]);

#[derive(Clone, Debug)]
pub(crate) struct Variant {
    pub(crate) bytes: Bytes,
    /// One of [`MEDIA_TYPES`]; any other type is cached in memory only (it has no disk code).
    pub(crate) media_type: &'static str,
    /// Unix seconds at which the variant was rendered; the TTL counts from here.
    pub(crate) stored_at: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Tier {
    Memory,
    Disk,
}

pub(crate) struct VariantCacheConfig {
    pub(crate) memory_bytes: u64,
    pub(crate) disk_bytes: u64,
    pub(crate) dir: PathBuf,
    pub(crate) ttl: Duration,
    pub(crate) max_entry_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("invalid variant cache config: {0}")]
    Config(String),
    #[error("variant cache disk tier at {dir}: {source}")]
    Disk {
        dir: PathBuf,
        #[source]
        source: foyer::Error,
    },
    #[error("variant cache metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(
        "variant cache folder {dir} is in use by another process{holder}: two processes must \
         never share one (give each node its own cache.dir)"
    )]
    InUse { dir: PathBuf, holder: String },
}

/// Current time in unix seconds; injectable so tests can move time without sleeping.
pub(crate) type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

fn system_clock() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn to_usize(value: u64, what: &str) -> Result<usize, CacheError> {
    usize::try_from(value).map_err(|_| CacheError::Config(format!("{what} does not fit usize")))
}

// ---------------------------------------------------------------------------------------------
// The cache

/// Where an inserted variant goes, by size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Memory and disk (written at insertion).
    Both,
    /// Disk only: too large to deserve memory, small enough for a block.
    DiskOnly,
    /// Memory only: larger than `max_entry_bytes`, or a media type with no disk code.
    MemoryOnly,
    /// Neither: too large for both.
    Skip,
}

enum Checked {
    Fresh(Variant),
    Expired,
    Rejected,
}

pub(crate) struct VariantCache {
    hybrid: HybridCache<VariantKey, StoredVariant>,
    metrics: VariantCacheMetrics,
    ttl_secs: u64,
    max_entry_bytes: u64,
    max_memory_weight: u64,
    clock: Clock,
    dir: PathBuf,
    /// Whether the disk tier was opened (false: memory only since start-up).
    disk_opened: bool,
    /// The exclusive lock on the disk tier's folder ([`LOCK_FILE`]), held until `close`.
    lock: std::sync::Mutex<Option<std::fs::File>>,
}

/// The lock file in the disk tier's folder: a second process that would open the same folder
/// (a node started twice, a command beside a node) is refused instead of corrupting it.
pub(crate) const LOCK_FILE: &str = ".imgnode.lock";

/// Takes the exclusive lock on `dir` (created if missing). `Ok(None)` when the folder cannot
/// be used at all (the disk tier then fails to open the same way, and the cache runs in
/// memory); [`CacheError::InUse`] when another process holds it.
fn lock_dir(dir: &std::path::Path) -> Result<Option<std::fs::File>, CacheError> {
    use std::io::{Read, Seek, Write};
    let opened = std::fs::create_dir_all(dir).and_then(|()| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
    });
    let mut file = match opened {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "cannot create the cache lock file");
            return Ok(None);
        }
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(CacheError::InUse {
                dir: dir.to_path_buf(),
                holder: if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {pid})")
                },
            });
        }
        Err(std::fs::TryLockError::Error(e)) => {
            tracing::error!(dir = %dir.display(), error = %e, "cannot lock the cache folder");
            return Ok(None);
        }
    }
    // Who holds it, for the error a second process shows.
    let _ = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()));
    Ok(Some(file))
}

impl VariantCache {
    /// Opens (and recovers) the disk tier under `dir`; returns only when recovery is done (the
    /// node's /ready depends on it). Registers the `imgnode_cache_*` metrics on `registry`, so
    /// one registry serves one open cache.
    pub(crate) async fn open(
        config: &VariantCacheConfig,
        registry: &Registry,
    ) -> Result<VariantCache, CacheError> {
        Self::open_with_clock(config, registry, Arc::new(system_clock)).await
    }

    /// [`VariantCache::open`] with an injected clock (unix seconds), for tests.
    async fn open_with_clock(
        config: &VariantCacheConfig,
        registry: &Registry,
        clock: Clock,
    ) -> Result<VariantCache, CacheError> {
        let layout = DiskLayout::plan(config)?;
        let lock = lock_dir(&config.dir)?;
        let metrics = VariantCacheMetrics::register(registry)?;
        let disk_error = |source| CacheError::Disk {
            dir: config.dir.clone(),
            source,
        };
        let with_disk = async {
            if lock.is_none() {
                // Unlocked, the folder could be another process's: not opened.
                return Err(disk_error(foyer::Error::new(
                    foyer::ErrorKind::Io,
                    "the cache folder cannot be locked",
                )));
            }
            let device = FsDeviceBuilder::new(&config.dir)
                // Without a capacity foyer claims 80 % of the free space on the filesystem.
                .with_capacity(to_usize(layout.capacity, "disk_bytes")?)
                .build()
                .map_err(disk_error)?;
            let block = to_usize(layout.block, "block size")?;
            let flush_buffer = to_usize(layout.flush_buffer, "flush buffer")?;
            let engine = BlockEngineConfig::new(device)
                .with_block_size(block)
                .with_buffer_pool_size(flush_buffer)
                .with_submit_queue_size_threshold(flush_buffer.saturating_mul(2))
                // Without the tombstone log, removed entries come back after a reopen; purge and
                // erasure depend on it.
                .with_tombstone_log(true);
            Self::builder(config, &metrics)?
                .with_engine_config(engine)
                // Quiet: a damaged block is skipped during recovery instead of failing the open.
                .with_recover_mode(RecoverMode::Quiet)
                .build()
                .await
                .map_err(disk_error)
        };
        let (hybrid, disk_opened) = match with_disk.await {
            Ok(hybrid) => {
                metrics.disk_available.set(1);
                (hybrid, true)
            }
            // The disk is full, read-only or gone: a node that renders and caches in memory
            // is worth more than one that does not start. Said loudly, and in the metrics.
            Err(CacheError::Disk { dir, source }) => {
                tracing::error!(
                    dir = %dir.display(),
                    error = %source,
                    "the disk cache cannot be opened: caching in memory only"
                );
                metrics.disk_available.set(0);
                (Self::memory_tier(config, &metrics).await?, false)
            }
            Err(other) => return Err(other),
        };
        Ok(Self::assemble(
            config,
            hybrid,
            metrics,
            clock,
            disk_opened,
            lock,
        ))
    }

    /// The memory tier alone (no disk engine).
    async fn memory_tier(
        config: &VariantCacheConfig,
        metrics: &VariantCacheMetrics,
    ) -> Result<HybridCache<VariantKey, StoredVariant>, CacheError> {
        Self::builder(config, metrics)?
            .build()
            .await
            .map_err(|source| CacheError::Disk {
                dir: config.dir.clone(),
                source,
            })
    }

    fn assemble(
        config: &VariantCacheConfig,
        hybrid: HybridCache<VariantKey, StoredVariant>,
        metrics: VariantCacheMetrics,
        clock: Clock,
        disk_opened: bool,
        lock: Option<std::fs::File>,
    ) -> VariantCache {
        let cache = VariantCache {
            hybrid,
            metrics,
            ttl_secs: config.ttl.as_secs(),
            max_entry_bytes: config.max_entry_bytes,
            max_memory_weight: config.memory_bytes / MEMORY_ENTRY_DIVISOR,
            clock,
            dir: config.dir.clone(),
            disk_opened,
            lock: std::sync::Mutex::new(lock),
        };
        cache.update_memory_gauges();
        cache
    }

    /// A cache in memory only, which never touches `config.dir`: for a command run beside a
    /// node (the node's folder stays the node's).
    pub(crate) async fn open_memory_only(
        config: &VariantCacheConfig,
        registry: &Registry,
    ) -> Result<VariantCache, CacheError> {
        let metrics = VariantCacheMetrics::register(registry)?;
        metrics.disk_available.set(0);
        let hybrid = Self::memory_tier(config, &metrics).await?;
        let clock = Arc::new(system_clock);
        Ok(Self::assemble(config, hybrid, metrics, clock, false, None))
    }

    /// Checks that the disk tier's folder still takes writes: on a read-only or full
    /// filesystem foyer drops what it writes and logs per block, so this sets
    /// `imgnode_cache_disk_available` and says once, at each change, what happened. Renders
    /// are cached in memory either way.
    pub(crate) async fn probe_disk(&self) -> bool {
        if !self.disk_opened {
            return false;
        }
        let path = self.dir.join(".imgnode-write-probe");
        let written = async {
            tokio::fs::write(&path, [0u8; 4096]).await?;
            // Filesystems that allocate late report a full disk only when the data goes out.
            tokio::fs::File::open(&path).await?.sync_all().await?;
            tokio::fs::remove_file(&path).await
        }
        .await;
        let was = self.metrics.disk_available.get() == 1;
        match (&written, was) {
            (Ok(()), false) => tracing::warn!(
                dir = %self.dir.display(),
                "the disk cache takes writes again"
            ),
            (Err(e), true) => tracing::error!(
                dir = %self.dir.display(),
                error = %e,
                "the disk cache does not take writes (full or read-only?): caching in memory \
                 only until it does"
            ),
            _ => {}
        }
        self.metrics.disk_available.set(i64::from(written.is_ok()));
        written.is_ok()
    }

    /// The cache up to its storage phase: memory tier, policy, metrics, event listener.
    fn builder(
        config: &VariantCacheConfig,
        metrics: &VariantCacheMetrics,
    ) -> Result<
        HybridCacheBuilderPhaseStorage<VariantKey, StoredVariant, foyer::DefaultHasher>,
        CacheError,
    > {
        Ok(HybridCacheBuilder::new()
            .with_name("imgnode-variants")
            .with_event_listener(Arc::new(EvictionCounter(metrics.memory_evictions.clone())))
            // Written at insertion, so a variant rendered before a crash is found after it
            // (WriteOnEviction would lose everything still in memory).
            .with_policy(HybridCachePolicy::WriteOnInsertion)
            .with_metrics_registry(metrics.foyer.foyer_registry())
            .memory(to_usize(config.memory_bytes, "memory_bytes")?)
            .with_weighter(|_key: &VariantKey, value: &StoredVariant| value.weight())
            .storage())
    }

    /// A hit only if present, younger than the TTL, and (for disk entries) it decrypts and
    /// authenticates with `data_key`. Expired or undecryptable entries are removed and
    /// counted, never returned.
    pub(crate) async fn get(
        &self,
        key: &VariantKey,
        data_key: &DataKey,
    ) -> Option<(Variant, Tier)> {
        let now = (self.clock)();
        if let Some(entry) = self.hybrid.memory().get(key) {
            return match self.check(key, entry.value(), data_key, now) {
                Checked::Fresh(variant) => {
                    self.metrics.hits_memory.inc();
                    Some((variant, Tier::Memory))
                }
                outcome => self.discard(key, outcome),
            };
        }

        // The disk is read directly rather than through `HybridCache::get`, which would put
        // the sealed value into memory; we want plaintext there, decrypted once.
        let started = Instant::now();
        let loaded = self.hybrid.storage().load(key).await;
        self.metrics
            .disk_read_seconds
            .observe(started.elapsed().as_secs_f64());
        let value = match loaded {
            Ok(Load::Entry { value, .. }) => value,
            // Still in foyer's flush queue: the in-memory value itself.
            Ok(Load::Piece { piece, .. }) => piece.value().clone(),
            Ok(Load::Miss | Load::Throttled) => {
                self.metrics.misses.inc();
                return None;
            }
            Err(error) => {
                // foyer already turns checksum and framing errors into misses; what reaches
                // here is a read error or an entry our decoder refused. Either way it is a miss.
                tracing::warn!(%error, "variant cache: disk entry unreadable, removing it");
                return self.discard(key, Checked::Rejected);
            }
        };
        match self.check(key, &value, data_key, now) {
            Checked::Fresh(variant) => {
                self.metrics.hits_disk.inc();
                self.promote(key, &variant, data_key);
                Some((variant, Tier::Disk))
            }
            outcome => self.discard(key, outcome),
        }
    }

    pub(crate) fn insert(&self, key: VariantKey, variant: Variant, data_key: Arc<DataKey>) {
        self.metrics.inserts.inc();
        let size = variant.bytes.len() as u64;
        let format = media_type_code(variant.media_type);
        let placement = self.placement(size, format.is_some());
        if size > self.max_entry_bytes {
            self.metrics.oversize.inc();
        }
        let location = match placement {
            Placement::Both => Location::Default,
            Placement::DiskOnly => Location::OnDisk,
            Placement::MemoryOnly => Location::InMem,
            Placement::Skip => return,
        };
        let value = StoredVariant::Plain {
            key,
            variant,
            data_key,
            format,
        };
        // With WriteOnInsertion foyer enqueues the disk write here unless the location is
        // InMem; OnDisk makes the memory record a phantom that is written but not kept.
        self.hybrid.insert_with_properties(
            key,
            value,
            HybridCacheProperties::default().with_location(location),
        );
        self.update_memory_gauges();
    }

    pub(crate) fn remove(&self, key: &VariantKey) {
        self.metrics.removals.inc();
        // Removes from memory and writes a tombstone for the disk entry.
        self.hybrid.remove(key);
        self.update_memory_gauges();
    }

    /// Purges everything, memory and disk. foyer's `destroy` logs a tombstone whose sequence
    /// supersedes every entry written before it, so nothing returns after a reopen.
    pub(crate) async fn clear(&self) {
        if let Err(error) = self.hybrid.clear().await {
            // Only fails if the disk tier is already closed, or a block cannot be rewritten;
            // the memory tier is cleared either way, and the data keys the caller deletes keep
            // whatever remains on disk unreadable.
            tracing::warn!(%error, "variant cache: clearing the disk tier failed");
        }
        self.update_memory_gauges();
    }

    /// Flushes pending disk writes and closes the disk tier, for an orderly shutdown.
    /// Flushes the disk tier and releases the folder's lock (a restarted node in the same
    /// process may take it again).
    pub(crate) async fn close(&self) -> Result<(), CacheError> {
        let closed = self
            .hybrid
            .close()
            .await
            .map_err(|source| CacheError::Disk {
                dir: self.dir.clone(),
                source,
            });
        self.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
        closed
    }

    fn placement(&self, size: u64, has_disk_code: bool) -> Placement {
        let fits_memory = size + ENTRY_MEMORY_OVERHEAD as u64 <= self.max_memory_weight;
        let fits_disk = size <= self.max_entry_bytes && has_disk_code;
        match (fits_memory, fits_disk) {
            (true, true) => Placement::Both,
            (false, true) => Placement::DiskOnly,
            (true, false) => Placement::MemoryOnly,
            (false, false) => Placement::Skip,
        }
    }

    fn check(
        &self,
        key: &VariantKey,
        value: &StoredVariant,
        data_key: &DataKey,
        now: u64,
    ) -> Checked {
        let stored_at = match value {
            StoredVariant::Plain { variant, .. } => variant.stored_at,
            StoredVariant::Sealed(sealed) => sealed.stored_at,
        };
        // Expiry is checked before decryption: an expired entry costs no crypto.
        if now.saturating_sub(stored_at) >= self.ttl_secs {
            return Checked::Expired;
        }
        match value {
            // Memory hits only compare keys (no decryption on the hot path); a mismatch means
            // the caller's key changed, e.g. after a purge re-keyed the original.
            StoredVariant::Plain {
                variant,
                data_key: held,
                ..
            } => {
                if held.same_as(data_key) {
                    Checked::Fresh(variant.clone())
                } else {
                    Checked::Rejected
                }
            }
            StoredVariant::Sealed(sealed) => match sealed.open(key, data_key) {
                Some(variant) => Checked::Fresh(variant),
                None => Checked::Rejected,
            },
        }
    }

    /// Counts and removes an entry that must not be served; always a miss.
    fn discard<T>(&self, key: &VariantKey, outcome: Checked) -> Option<T> {
        match outcome {
            Checked::Expired => self.metrics.expired.inc(),
            Checked::Rejected => self.metrics.rejected.inc(),
            Checked::Fresh(_) => {}
        }
        self.metrics.misses.inc();
        self.metrics.removals.inc();
        self.hybrid.remove(key);
        self.update_memory_gauges();
        None
    }

    /// Puts a disk hit back into memory as plaintext. `Location::InMem` is foyer's hint that
    /// the record lives in memory only: `HybridCache::insert_with_properties` skips the disk
    /// enqueue for it (and a write-on-eviction pipe would skip it too), so the entry already on
    /// disk is not written a second time.
    fn promote(&self, key: &VariantKey, variant: &Variant, data_key: &DataKey) {
        if variant.bytes.len() as u64 + ENTRY_MEMORY_OVERHEAD as u64 > self.max_memory_weight {
            return;
        }
        let value = StoredVariant::Plain {
            key: *key,
            variant: variant.clone(),
            data_key: Arc::new(data_key.duplicate()),
            format: media_type_code(variant.media_type),
        };
        self.hybrid.insert_with_properties(
            *key,
            value,
            HybridCacheProperties::default().with_location(Location::InMem),
        );
        self.update_memory_gauges();
    }

    /// Turns foyer's device totals into counter increments; called on each metrics scrape.
    pub(crate) fn refresh_disk_metrics(&self) {
        let stats = self.hybrid.statistics();
        let now = [
            stats.disk_write_bytes() as u64,
            stats.disk_write_ios() as u64,
            stats.disk_read_bytes() as u64,
        ];
        let mut seen = self
            .metrics
            .disk_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let counters = [
            &self.metrics.disk_write_bytes,
            &self.metrics.disk_write_ios,
            &self.metrics.disk_read_bytes,
        ];
        for ((counter, now), seen) in counters.into_iter().zip(now).zip(seen.iter_mut()) {
            counter.inc_by(now.saturating_sub(*seen));
            *seen = now.max(*seen);
        }
        drop(seen);
        self.metrics.foyer.refresh();
    }

    fn update_memory_gauges(&self) {
        let memory = self.hybrid.memory();
        self.metrics
            .memory_entries
            .set(i64::try_from(memory.entries()).unwrap_or(i64::MAX));
        self.metrics
            .memory_bytes
            .set(i64::try_from(memory.usage()).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use std::{
        path::Path,
        sync::atomic::{AtomicU64, Ordering},
    };

    use super::disk::{MIN_BLOCKS, PAGE};
    use super::*;

    pub(super) const T0: u64 = 1_700_000_000;
    const TTL: u64 = 3600;
    const MARKER: &[u8; 64] = b"<<imgnode-plaintext-marker-0123456789abcdefghijklmnopqrstuv>>!!#";

    struct Harness {
        _dir: tempfile::TempDir,
        config: VariantCacheConfig,
        now: Arc<AtomicU64>,
    }

    impl Harness {
        fn new() -> Harness {
            let dir = tempfile::tempdir().expect("tempdir");
            let config = VariantCacheConfig {
                memory_bytes: 4 << 20,
                disk_bytes: 16 << 20,
                dir: dir.path().to_path_buf(),
                ttl: Duration::from_secs(TTL),
                max_entry_bytes: 256 << 10,
            };
            Harness {
                _dir: dir,
                config,
                now: Arc::new(AtomicU64::new(T0)),
            }
        }

        /// Each open gets its own registry, as each process has one.
        async fn open(&self) -> (VariantCache, Registry) {
            let registry = Registry::new();
            let now = self.now.clone();
            let cache = VariantCache::open_with_clock(
                &self.config,
                &registry,
                Arc::new(move || now.load(Ordering::SeqCst)),
            )
            .await
            .expect("open");
            (cache, registry)
        }

        fn dir(&self) -> &Path {
            &self.config.dir
        }
    }

    #[tokio::test]
    async fn one_folder_is_held_by_one_open_cache_at_a_time() {
        let h = Harness::new();
        let (first, _) = h.open().await;
        let second = VariantCache::open(&h.config, &Registry::new()).await;
        match second {
            Err(CacheError::InUse { dir, holder }) => {
                assert_eq!(dir, h.config.dir);
                assert_eq!(holder, format!(" (pid {})", std::process::id()));
            }
            Err(other) => panic!("expected InUse, got {other}"),
            Ok(_) => panic!("a second cache opened a folder in use"),
        }
        // A memory-only cache never touches the folder, so it may sit beside the first.
        let beside = VariantCache::open_memory_only(&h.config, &Registry::new())
            .await
            .expect("memory only");
        beside.close().await.expect("close");
        first.close().await.expect("close");
        let (again, _) = h.open().await;
        again.close().await.expect("close");
    }

    pub(super) fn key(n: u32) -> VariantKey {
        let mut k = [0u8; 16];
        k[..4].copy_from_slice(&n.to_le_bytes());
        k[8] = 0xA5;
        VariantKey(k)
    }

    /// Deterministic, non-repeating-looking bytes of `len`, distinct per `seed`.
    pub(super) fn payload(seed: u32, len: usize) -> Bytes {
        let mut state = u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect::<Vec<u8>>()
            .into()
    }

    pub(super) fn variant(bytes: Bytes, stored_at: u64) -> Variant {
        Variant {
            bytes,
            media_type: "image/webp",
            stored_at,
        }
    }

    fn counter(registry: &Registry, name: &str, label: Option<(&str, &str)>) -> f64 {
        registry
            .gather()
            .iter()
            .filter(|family| family.name() == name)
            .flat_map(|family| family.get_metric().iter())
            .filter(|m| {
                label.is_none_or(|(k, v)| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == k && l.value() == v)
                })
            })
            // An unset field reads as its default (0), so the sum picks whichever is set.
            .map(|m| m.get_counter().get_value() + m.get_gauge().get_value())
            .sum()
    }

    fn files_under(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        files
    }

    #[tokio::test]
    async fn memory_round_trip_hits_memory() {
        let h = Harness::new();
        let (cache, registry) = h.open().await;
        let dk = Arc::new(DataKey::generate());
        let bytes = payload(1, 10_000);
        cache.insert(key(1), variant(bytes.clone(), T0), dk.clone());
        let (got, tier) = cache.get(&key(1), &dk).await.expect("hit");
        assert_eq!(tier, Tier::Memory);
        assert_eq!(got.bytes, bytes);
        assert_eq!(got.media_type, "image/webp");
        assert_eq!(got.stored_at, T0);
        assert!(cache.get(&key(2), &dk).await.is_none());
        assert_eq!(
            counter(
                &registry,
                "imgnode_cache_hits_total",
                Some(("tier", "memory"))
            ),
            1.0
        );
        assert_eq!(counter(&registry, "imgnode_cache_misses_total", None), 1.0);
        assert_eq!(
            counter(&registry, "imgnode_cache_memory_entries", None),
            1.0
        );
        assert!(counter(&registry, "imgnode_cache_memory_bytes", None) >= 10_000.0);
        cache.close().await.expect("close");
    }

    fn histogram_count(registry: &Registry, name: &str, op: &str) -> u64 {
        registry
            .gather()
            .iter()
            .filter(|family| family.name() == name)
            .flat_map(|family| family.get_metric().iter())
            .filter(|m| m.get_label().iter().any(|l| l.value() == op))
            .map(|m| m.get_histogram().get_sample_count())
            .sum()
    }

    #[tokio::test]
    async fn disk_tier_metrics_follow_blocks_and_io_across_a_reopen() {
        let h = Harness::new();
        let dk = Arc::new(DataKey::generate());
        {
            let (cache, registry) = h.open().await;
            cache.refresh_disk_metrics();
            let block = counter(&registry, "imgnode_cache_disk_block_bytes", None);
            assert!(block >= PAGE as f64, "block size published: {block}");
            let total: f64 = ["clean", "writing", "evictable", "reclaiming"]
                .iter()
                .map(|s| counter(&registry, "imgnode_cache_disk_blocks", Some(("state", s))))
                .sum();
            assert!(
                total >= MIN_BLOCKS as f64,
                "every block has a state: {total}"
            );
            assert_eq!(counter(&registry, "imgnode_cache_disk_bytes", None), 0.0);
            // Enough to fill more than one block, so one becomes evictable.
            let blocks_worth = (block as usize / (200 << 10)) + 2;
            for n in 0..blocks_worth as u32 {
                cache.insert(key(n), variant(payload(n, 200 << 10), T0), dk.clone());
            }
            cache.hybrid.storage().wait().await;
            cache.refresh_disk_metrics();
            assert!(counter(&registry, "imgnode_cache_disk_bytes", None) >= block);
            assert!(
                counter(
                    &registry,
                    "imgnode_cache_disk_blocks",
                    Some(("state", "evictable"))
                ) >= 1.0
            );
            assert!(
                histogram_count(&registry, "imgnode_cache_disk_io_duration_seconds", "write") >= 1
            );
            cache.close().await.expect("close");
        }
        // After a reopen, recovery reports the blocks that still hold entries.
        let (cache, registry) = h.open().await;
        cache.refresh_disk_metrics();
        let block = counter(&registry, "imgnode_cache_disk_block_bytes", None);
        assert!(counter(&registry, "imgnode_cache_disk_bytes", None) >= block);
        assert!(cache.get(&key(0), &dk).await.is_some());
        assert!(histogram_count(&registry, "imgnode_cache_disk_io_duration_seconds", "read") >= 1);
        cache.close().await.expect("close");
    }

    #[tokio::test]
    async fn reopen_hits_disk_with_identical_bytes_then_memory_without_rewrite() {
        let h = Harness::new();
        let dk = Arc::new(DataKey::generate());
        let items: Vec<(VariantKey, Bytes)> = (0..50)
            .map(|n| (key(n), payload(n, 1000 + 3000 * n as usize)))
            .collect();
        {
            let (cache, _) = h.open().await;
            for (k, b) in &items {
                cache.insert(*k, variant(b.clone(), T0), dk.clone());
            }
            cache.close().await.expect("close");
        }
        let (cache, registry) = h.open().await;
        for (k, b) in &items {
            let (got, tier) = cache.get(k, &dk).await.expect("disk hit after reopen");
            assert_eq!(tier, Tier::Disk);
            assert_eq!(&got.bytes, b);
        }
        assert_eq!(
            counter(
                &registry,
                "imgnode_cache_hits_total",
                Some(("tier", "disk"))
            ),
            50.0
        );
        // The disk hit was put back in memory, and not written to disk again.
        let w0 = cache.hybrid.statistics().disk_write_bytes();
        cache.hybrid.storage().wait().await;
        let w1 = cache.hybrid.statistics().disk_write_bytes();
        let (got, tier) = cache.get(&items[49].0, &dk).await.expect("memory hit");
        assert_eq!(tier, Tier::Memory);
        assert_eq!(got.bytes, items[49].1);
        cache.hybrid.storage().wait().await;
        let w2 = cache.hybrid.statistics().disk_write_bytes();
        // Each `wait` flushes one empty page of its own; the ~148 KB entry adds nothing.
        assert_eq!(w2 - w1, w1 - w0);
        cache.close().await.expect("close");
    }

    #[tokio::test]
    async fn expired_entries_are_removed_in_both_tiers() {
        let h = Harness::new();
        let dk = Arc::new(DataKey::generate());
        {
            let (cache, registry) = h.open().await;
            cache.insert(key(1), variant(payload(1, 500), T0), dk.clone());
            cache.insert(key(2), variant(payload(2, 500), T0 - TTL + 10), dk.clone());
            h.now.store(T0 + TTL - 1, Ordering::SeqCst);
            assert!(
                cache.get(&key(1), &dk).await.is_some(),
                "one second before expiry"
            );
            h.now.store(T0 + TTL, Ordering::SeqCst);
            assert!(
                cache.get(&key(1), &dk).await.is_none(),
                "memory entry at TTL"
            );
            assert_eq!(counter(&registry, "imgnode_cache_expired_total", None), 1.0);
            cache.close().await.expect("close");
        }
        // key(2) expired while the node was down: found on disk, refused, removed.
        h.now.store(T0 + 20, Ordering::SeqCst);
        {
            let (cache, registry) = h.open().await;
            assert!(cache.get(&key(2), &dk).await.is_none());
            assert_eq!(counter(&registry, "imgnode_cache_expired_total", None), 1.0);
            assert!(
                cache.get(&key(1), &dk).await.is_none(),
                "removal survived reopen"
            );
            cache.close().await.expect("close");
        }
        h.now.store(T0, Ordering::SeqCst);
        let (cache, _) = h.open().await;
        assert!(
            cache.get(&key(2), &dk).await.is_none(),
            "expired entry was tombstoned"
        );
        cache.close().await.expect("close");
    }

    #[tokio::test]
    async fn remove_and_clear_survive_reopen() {
        let h = Harness::new();
        let dk = Arc::new(DataKey::generate());
        {
            let (cache, _) = h.open().await;
            for n in 0..10 {
                cache.insert(key(n), variant(payload(n, 2000), T0), dk.clone());
            }
            cache.close().await.expect("close");
        }
        {
            let (cache, _) = h.open().await;
            cache.remove(&key(0));
            cache.remove(&key(1));
            cache.close().await.expect("close");
        }
        {
            let (cache, _) = h.open().await;
            assert!(cache.get(&key(0), &dk).await.is_none());
            assert!(cache.get(&key(1), &dk).await.is_none());
            assert!(cache.get(&key(2), &dk).await.is_some());
            cache.clear().await;
            assert!(cache.get(&key(3), &dk).await.is_none());
            cache.close().await.expect("close");
        }
        let (cache, _) = h.open().await;
        for n in 0..10 {
            assert!(
                cache.get(&key(n), &dk).await.is_none(),
                "key {n} back after clear"
            );
        }
        // The cache still works after a clear.
        cache.insert(key(20), variant(payload(20, 100), T0), dk.clone());
        cache.close().await.expect("close");
        let (cache, _) = h.open().await;
        assert!(cache.get(&key(20), &dk).await.is_some());
        cache.close().await.expect("close");
    }

    #[tokio::test]
    async fn wrong_data_key_is_a_miss_and_removes_the_entry() {
        let h = Harness::new();
        let right = Arc::new(DataKey::generate());
        let wrong = DataKey::generate();
        {
            let (cache, registry) = h.open().await;
            cache.insert(key(1), variant(payload(1, 800), T0), right.clone());
            cache.insert(key(2), variant(payload(2, 800), T0), right.clone());
            // Memory tier: keys are compared, not decrypted.
            assert!(cache.get(&key(2), &wrong).await.is_none());
            assert_eq!(
                counter(&registry, "imgnode_cache_rejected_total", None),
                1.0
            );
            cache.close().await.expect("close");
        }
        let (cache, registry) = h.open().await;
        assert!(cache.get(&key(1), &wrong).await.is_none());
        assert_eq!(
            counter(&registry, "imgnode_cache_rejected_total", None),
            1.0
        );
        assert!(
            cache.get(&key(1), &right).await.is_none(),
            "rejected entry was removed"
        );
        assert!(
            cache.get(&key(2), &right).await.is_none(),
            "rejected entry was removed"
        );
        cache.close().await.expect("close");
    }

    #[tokio::test]
    async fn plaintext_never_reaches_disk_and_removed_entries_stay_gone() {
        let h = Harness::new();
        let dk = Arc::new(DataKey::generate());
        let mut bytes = payload(7, 20_000).to_vec();
        bytes[5_000..5_064].copy_from_slice(MARKER);
        bytes[12_345..12_409].copy_from_slice(MARKER);
        {
            let (cache, _) = h.open().await;
            cache.insert(key(7), variant(bytes.clone().into(), T0), dk.clone());
            cache.close().await.expect("close");
        }
        let files = files_under(h.dir());
        assert!(!files.is_empty());
        for file in &files {
            let content = std::fs::read(file).expect("read cache file");
            assert!(
                !content.windows(MARKER.len()).any(|w| w == MARKER),
                "plaintext marker found in {}",
                file.display()
            );
        }
        {
            let (cache, _) = h.open().await;
            let (got, tier) = cache.get(&key(7), &dk).await.expect("disk hit");
            assert_eq!((got.bytes.as_ref(), tier), (bytes.as_slice(), Tier::Disk));
            cache.remove(&key(7));
            cache.close().await.expect("close");
        }
        let (cache, _) = h.open().await;
        assert!(cache.get(&key(7), &dk).await.is_none());
        cache.close().await.expect("close");
    }

    #[derive(Debug, Clone, Copy)]
    enum Damage {
        /// Flip bytes inside the written region of every block file.
        FlipData,
        /// Flip bytes in the first page of every file (blob index, tombstone log).
        FlipHeaders,
        /// Cut every block file in the middle of its written region.
        Truncate,
        /// Overwrite every file with garbage, keeping its length.
        Garbage,
    }

    fn damage(dir: &Path, how: Damage) {
        for file in files_under(dir) {
            let mut content = std::fs::read(&file).expect("read");
            let written = content.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
            if written == 0 {
                continue;
            }
            match how {
                Damage::FlipData => {
                    for i in (written / 7..written).step_by(2111) {
                        content[i] ^= 0x5A;
                    }
                }
                Damage::FlipHeaders => {
                    for i in (0..content.len().min(4096)).step_by(97) {
                        content[i] ^= 0xFF;
                    }
                }
                Damage::Truncate => content.truncate(written / 2),
                Damage::Garbage => {
                    let junk = payload(written as u32, content.len());
                    content.copy_from_slice(&junk);
                }
            }
            std::fs::write(&file, &content).expect("write damaged file");
        }
    }

    #[tokio::test]
    async fn damaged_files_give_exact_bytes_or_misses() {
        for how in [
            Damage::FlipData,
            Damage::FlipHeaders,
            Damage::Truncate,
            Damage::Garbage,
        ] {
            let h = Harness::new();
            let dk = Arc::new(DataKey::generate());
            let items: Vec<(VariantKey, Bytes)> = (0..60)
                .map(|n| (key(n), payload(n + 100, 500 + 1_700 * n as usize)))
                .collect();
            {
                let (cache, _) = h.open().await;
                for (k, b) in &items {
                    cache.insert(*k, variant(b.clone(), T0), dk.clone());
                }
                cache.close().await.expect("close");
            }
            damage(h.dir(), how);
            let (cache, _) = h.open().await;
            let mut hits = 0;
            for (k, b) in &items {
                if let Some((got, tier)) = cache.get(k, &dk).await {
                    assert_eq!(tier, Tier::Disk);
                    assert_eq!(&got.bytes, b, "{how:?}: damaged bytes returned");
                    hits += 1;
                }
            }
            eprintln!(
                "damage {how:?}: {hits}/{} exact hits, rest misses",
                items.len()
            );
            assert!(hits < items.len(), "{how:?}: damage had no effect");
            // Still usable after damage.
            cache.insert(key(999), variant(payload(999, 1000), T0), dk.clone());
            assert!(cache.get(&key(999), &dk).await.is_some());
            cache.close().await.expect("close");
        }
    }

    #[tokio::test]
    async fn placement_by_size_and_type() {
        let h = Harness::new();
        let (cache, registry) = h.open().await;
        let dk = Arc::new(DataKey::generate());
        // Over max_entry_bytes (256 KiB) but within 1/8 of memory (512 KiB): memory only.
        cache.insert(key(1), variant(payload(1, 300 << 10), T0), dk.clone());
        // Unknown media type: memory only.
        let mut odd = variant(payload(2, 100), T0);
        odd.media_type = "image/x-unknown";
        cache.insert(key(2), odd, dk.clone());
        // Too large for both: not cached.
        cache.insert(key(3), variant(payload(3, 600 << 10), T0), dk.clone());
        assert_eq!(
            cache.get(&key(1), &dk).await.map(|(_, t)| t),
            Some(Tier::Memory)
        );
        assert_eq!(
            cache.get(&key(2), &dk).await.map(|(v, _)| v.media_type),
            Some("image/x-unknown")
        );
        assert!(cache.get(&key(3), &dk).await.is_none());
        assert_eq!(
            counter(&registry, "imgnode_cache_oversize_total", None),
            2.0
        );
        cache.close().await.expect("close");
        let (cache, _) = h.open().await;
        assert!(
            cache.get(&key(1), &dk).await.is_none(),
            "memory-only entry not on disk"
        );
        assert!(
            cache.get(&key(2), &dk).await.is_none(),
            "memory-only entry not on disk"
        );
        cache.close().await.expect("close");
    }
}
