//! The `imgnode_cache_*` metrics of the variant cache: one handle per series, registered once
//! on the registry the cache is opened with; foyer's own series come through
//! [`FoyerMetrics`].
//!
//! Must never: register on a process-global registry (a test process opens many caches, each
//! with its own), or read or change the cache: the cache feeds these handles.

use std::sync::Arc;

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, core::Collector,
};

use crate::cache::foyer_metrics::FoyerMetrics;

/// Pre-registered handles. `misses_total` counts every `get` that returns `None`, so
/// hits + misses = lookups; `expired_total` and `rejected_total` break some misses down.
///
/// foyer's own instrumentation reaches prometheus only through [`FoyerMetrics`] (block states,
/// disk bytes in use, device latency). foyer keeps no count of disk-tier entries (its indexer
/// is private and block reclamation drops entries silently), so none is published.
#[derive(Clone)]
pub(super) struct VariantCacheMetrics {
    pub(super) hits_memory: IntCounter,
    pub(super) hits_disk: IntCounter,
    pub(super) misses: IntCounter,
    pub(super) expired: IntCounter,
    pub(super) rejected: IntCounter,
    pub(super) inserts: IntCounter,
    pub(super) oversize: IntCounter,
    pub(super) removals: IntCounter,
    pub(super) memory_entries: IntGauge,
    pub(super) memory_bytes: IntGauge,
    /// 1 when the disk tier is in use, 0 when it could not be opened (memory only).
    pub(super) disk_available: IntGauge,
    pub(super) disk_read_seconds: Histogram,
    /// Entries pushed out of the memory tier by capacity (they stay on disk).
    pub(super) memory_evictions: IntCounter,
    pub(super) disk_write_bytes: IntCounter,
    pub(super) disk_write_ios: IntCounter,
    pub(super) disk_read_bytes: IntCounter,
    /// foyer's device totals at the last scrape, to turn them into counter increments.
    pub(super) disk_seen: Arc<std::sync::Mutex<[u64; 3]>>,
    /// Block states, disk bytes in use and device latency, forwarded from foyer.
    pub(super) foyer: FoyerMetrics,
}

impl VariantCacheMetrics {
    pub(super) fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        fn reg<C: Collector + Clone + 'static>(
            registry: &Registry,
            c: C,
        ) -> Result<C, prometheus::Error> {
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        }
        let counter = |name: &str, help: &str| reg(registry, IntCounter::new(name, help)?);
        let gauge = |name: &str, help: &str| reg(registry, IntGauge::new(name, help)?);
        let hits = reg(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "imgnode_cache_hits_total",
                    "Variant cache hits, by tier that answered",
                ),
                &["tier"],
            )?,
        )?;
        Ok(VariantCacheMetrics {
            hits_memory: hits.with_label_values(&["memory"]),
            hits_disk: hits.with_label_values(&["disk"]),
            misses: counter(
                "imgnode_cache_misses_total",
                "Variant cache lookups that returned nothing (absent, expired or rejected)",
            )?,
            expired: counter(
                "imgnode_cache_expired_total",
                "Variant cache entries found older than the TTL and removed",
            )?,
            rejected: counter(
                "imgnode_cache_rejected_total",
                "Variant cache entries that failed to read, decrypt or authenticate, and were removed",
            )?,
            inserts: counter("imgnode_cache_inserts_total", "Variants inserted")?,
            oversize: counter(
                "imgnode_cache_oversize_total",
                "Variants larger than max_entry_bytes (kept in memory only, or not cached)",
            )?,
            removals: counter(
                "imgnode_cache_removals_total",
                "Variants removed by request (purge), expiry or rejection",
            )?,
            memory_entries: gauge(
                "imgnode_cache_memory_entries",
                "Variants held in the memory tier",
            )?,
            memory_bytes: gauge(
                "imgnode_cache_memory_bytes",
                "Weighted bytes held in the memory tier",
            )?,
            disk_available: gauge(
                "imgnode_cache_disk_available",
                "1 when the disk tier is in use; 0 when it could not be opened (full, read-only \
                 or missing folder) and the node caches in memory only",
            )?,
            memory_evictions: counter(
                "imgnode_cache_memory_evictions_total",
                "Variants evicted from the memory tier for capacity (still on disk)",
            )?,
            disk_write_bytes: counter(
                "imgnode_cache_disk_write_bytes_total",
                "Bytes written to the disk tier's device",
            )?,
            disk_write_ios: counter(
                "imgnode_cache_disk_writes_total",
                "Write operations on the disk tier's device",
            )?,
            disk_read_bytes: counter(
                "imgnode_cache_disk_read_bytes_total",
                "Bytes read from the disk tier's device",
            )?,
            disk_seen: Arc::new(std::sync::Mutex::new([0; 3])),
            foyer: FoyerMetrics::register(registry)?,
            disk_read_seconds: reg(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "imgnode_cache_disk_read_duration_seconds",
                        "Time to read one entry from the disk tier (hit or miss)",
                    )
                    .buckets(vec![
                        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                        0.1, 0.25, 1.0,
                    ]),
                )?,
            )?,
        })
    }
}
