//! The part of foyer's own instrumentation imgnode publishes: disk-tier block states (from
//! which the disk bytes in use follow) and per-I/O disk latency.
//!
//! Owns: a `mixtrics` registry handed to foyer that forwards those few series to imgnode's
//! prometheus registry under `imgnode_cache_*` names and drops the rest.
//!
//! Why not mixtrics' own prometheus backend: it keeps a process-global map and `unwrap`s
//! registration, so a second cache in the same process (every test runs several nodes) panics.
//! Here every series is a handle registered once on the registry the cache is opened with.

use std::borrow::Cow;

use mixtrics::metrics::{
    BoxedCounter, BoxedCounterVec, BoxedGauge, BoxedGaugeVec, BoxedHistogram, BoxedHistogramVec,
    CounterOps, CounterVecOps, GaugeOps, GaugeVecOps, HistogramOps, HistogramVecOps, RegistryOps,
};
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntGauge, IntGaugeVec, Opts, Registry};

/// foyer's series names this bridge forwards (foyer-common `Metrics::new`).
const FOYER_BLOCKS: &str = "foyer_storage_block_engine_block";
const FOYER_BLOCK_SIZE: &str = "foyer_storage_block_engine_block_size_bytes";
const FOYER_DISK_IO_DURATION: &str = "foyer_storage_disk_io_duration";

/// Block states foyer reports; every block of the device is in exactly one.
const BLOCK_STATES: [&str; 4] = ["clean", "writing", "evictable", "reclaiming"];
/// Disk operations foyer times.
const IO_OPS: [&str; 3] = ["read", "write", "flush"];

/// The published handles; cloned into the registry given to foyer.
#[derive(Clone, Debug)]
pub(super) struct FoyerMetrics {
    blocks: IntGaugeVec,
    block_bytes: IntGauge,
    disk_bytes: IntGauge,
    io_seconds: HistogramVec,
}

impl FoyerMetrics {
    pub(super) fn register(registry: &Registry) -> Result<FoyerMetrics, prometheus::Error> {
        let blocks = IntGaugeVec::new(
            Opts::new(
                "imgnode_cache_disk_blocks",
                "Disk-tier blocks by state (clean = empty; evictable = full of entries)",
            ),
            &["state"],
        )?;
        let block_bytes = IntGauge::new(
            "imgnode_cache_disk_block_bytes",
            "Size of one disk-tier block",
        )?;
        let disk_bytes = IntGauge::new(
            "imgnode_cache_disk_bytes",
            "Disk-tier bytes holding entries (blocks not clean x block size)",
        )?;
        let io_seconds = HistogramVec::new(
            HistogramOpts::new(
                "imgnode_cache_disk_io_duration_seconds",
                "Duration of one disk-tier device operation (a block write, an entry read, a flush)",
            )
            .buckets(vec![
                0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                0.05, 0.1, 0.25, 1.0, 4.0,
            ]),
            &["op"],
        )?;
        registry.register(Box::new(blocks.clone()))?;
        registry.register(Box::new(block_bytes.clone()))?;
        registry.register(Box::new(disk_bytes.clone()))?;
        registry.register(Box::new(io_seconds.clone()))?;
        // Present from the first scrape, before foyer touches them.
        for state in BLOCK_STATES {
            blocks.with_label_values(&[state]);
        }
        for op in IO_OPS {
            io_seconds.with_label_values(&[op]);
        }
        Ok(FoyerMetrics {
            blocks,
            block_bytes,
            disk_bytes,
            io_seconds,
        })
    }

    /// The registry to hand to `HybridCacheBuilder::with_metrics_registry`.
    pub(super) fn foyer_registry(&self) -> mixtrics::metrics::BoxedRegistry {
        Box::new(self.clone())
    }

    /// Recomputes the derived bytes-in-use gauge; called on each scrape.
    pub(super) fn refresh(&self) {
        let used: i64 = ["writing", "evictable", "reclaiming"]
            .iter()
            .map(|state| self.blocks.with_label_values(&[state]).get().max(0))
            .sum();
        self.disk_bytes
            .set(used.saturating_mul(self.block_bytes.get().max(0)));
    }
}

/// foyer labels its series `[cache name, kind]`; the kind is what we publish.
fn kind<'a>(labels: &'a [Cow<'static, str>]) -> Option<&'a str> {
    labels.get(1).map(|label| label.as_ref())
}

impl RegistryOps for FoyerMetrics {
    fn register_counter_vec(
        &self,
        _name: Cow<'static, str>,
        _desc: Cow<'static, str>,
        _label_names: &'static [&'static str],
    ) -> BoxedCounterVec {
        Box::new(Ignored)
    }

    fn register_gauge_vec(
        &self,
        name: Cow<'static, str>,
        _desc: Cow<'static, str>,
        _label_names: &'static [&'static str],
    ) -> BoxedGaugeVec {
        match name.as_ref() {
            FOYER_BLOCKS => Box::new(BlockStates(self.blocks.clone())),
            FOYER_BLOCK_SIZE => Box::new(Single(self.block_bytes.clone())),
            _ => Box::new(Ignored),
        }
    }

    fn register_histogram_vec(
        &self,
        _name: Cow<'static, str>,
        _desc: Cow<'static, str>,
        _label_names: &'static [&'static str],
    ) -> BoxedHistogramVec {
        Box::new(Ignored)
    }

    fn register_histogram_vec_with_buckets(
        &self,
        name: Cow<'static, str>,
        _desc: Cow<'static, str>,
        _label_names: &'static [&'static str],
        _buckets: Vec<f64>,
    ) -> BoxedHistogramVec {
        if name == FOYER_DISK_IO_DURATION {
            Box::new(IoDurations(self.io_seconds.clone()))
        } else {
            Box::new(Ignored)
        }
    }
}

/// A series foyer keeps that imgnode does not publish.
#[derive(Debug)]
struct Ignored;

impl CounterOps for Ignored {
    fn increase(&self, _val: u64) {}
}

impl GaugeOps for Ignored {
    fn increase(&self, _val: u64) {}
    fn decrease(&self, _val: u64) {}
    fn absolute(&self, _val: u64) {}
}

impl HistogramOps for Ignored {
    fn record(&self, _val: f64) {}
}

impl CounterVecOps for Ignored {
    fn counter(&self, _labels: &[Cow<'static, str>]) -> BoxedCounter {
        Box::new(Ignored)
    }
}

impl GaugeVecOps for Ignored {
    fn gauge(&self, _labels: &[Cow<'static, str>]) -> BoxedGauge {
        Box::new(Ignored)
    }
}

impl HistogramVecOps for Ignored {
    fn histogram(&self, _labels: &[Cow<'static, str>]) -> BoxedHistogram {
        Box::new(Ignored)
    }
}

#[derive(Debug)]
struct Gauge(IntGauge);

fn to_i64(val: u64) -> i64 {
    i64::try_from(val).unwrap_or(i64::MAX)
}

impl GaugeOps for Gauge {
    fn increase(&self, val: u64) {
        self.0.add(to_i64(val));
    }
    fn decrease(&self, val: u64) {
        self.0.sub(to_i64(val));
    }
    fn absolute(&self, val: u64) {
        self.0.set(to_i64(val));
    }
}

#[derive(Debug)]
struct BlockStates(IntGaugeVec);

impl GaugeVecOps for BlockStates {
    fn gauge(&self, labels: &[Cow<'static, str>]) -> BoxedGauge {
        match kind(labels).filter(|state| BLOCK_STATES.contains(state)) {
            Some(state) => Box::new(Gauge(self.0.with_label_values(&[state]))),
            None => Box::new(Ignored),
        }
    }
}

#[derive(Debug)]
struct Single(IntGauge);

impl GaugeVecOps for Single {
    fn gauge(&self, _labels: &[Cow<'static, str>]) -> BoxedGauge {
        Box::new(Gauge(self.0.clone()))
    }
}

#[derive(Debug)]
struct Timer(Histogram);

impl HistogramOps for Timer {
    fn record(&self, val: f64) {
        self.0.observe(val);
    }
}

#[derive(Debug)]
struct IoDurations(HistogramVec);

impl HistogramVecOps for IoDurations {
    fn histogram(&self, labels: &[Cow<'static, str>]) -> BoxedHistogram {
        match kind(labels).filter(|op| IO_OPS.contains(op)) {
            Some(op) => Box::new(Timer(self.0.with_label_values(&[op]))),
            None => Box::new(Ignored),
        }
    }
}
