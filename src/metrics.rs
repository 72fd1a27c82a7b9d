//! Prometheus metrics: one registry built by `app`, and a struct of pre-registered handles
//! per subsystem, passed down explicitly.
//!
//! Must never use global statics or the `prometheus` default registry: two nodes in one test
//! process keep separate numbers. Names follow `imgnode_<subsystem>_<thing>_<unit>`.

use std::sync::Arc;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets from 100 µs (cache hits) to 30 s (large AVIF renders).
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

#[derive(Clone)]
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) http: HttpMetrics,
    pub(crate) cpu: CpuMetrics,
    pub(crate) render: RenderMetrics,
    /// Labels: outcome (ok, not_found, timeout, unavailable, too_large, refused: a sealed
    /// object that failed authentication). Originals cache
    /// hits are not fetches.
    pub(crate) origin_fetches_total: IntCounterVec,
    /// Originals still stored in plaintext by an earlier version (updated by the background
    /// pass that seals them).
    pub(crate) originals_plaintext: IntGauge,
    /// Labels: outcome (sealed, failed). Plaintext originals the background pass handled.
    pub(crate) originals_sealed_total: IntCounterVec,
    /// Requests that waited for another request's identical render.
    pub(crate) coalesced_total: IntCounter,
    /// Labels: budget (client, image). New renders refused with 429 by a render budget.
    pub(crate) renders_refused_total: IntCounterVec,
    /// `format=auto` answers given as a stand-in (WebP or JPEG) while the AVIF is not cached.
    pub(crate) avif_fallbacks_total: IntCounter,
    /// Labels: outcome (stored, dropped, failed). Background AVIF encodes behind stand-ins.
    pub(crate) avif_background_total: IntCounterVec,
    /// Set at each scrape from /proc.
    process_resident_memory_bytes: IntGauge,
    /// 1 while this node listens for other nodes' invalidations (PostgreSQL store).
    pub(crate) cluster_listening: IntGauge,
    /// Labels: direction (sent, failed, received, resync). Cache invalidations between nodes.
    pub(crate) cluster_notices_total: IntCounterVec,
    pub(crate) edge: EdgeMetrics,
}

/// The edge purge outbox (`edge::worker`).
#[derive(Clone)]
pub(crate) struct EdgeMetrics {
    /// Purges this node wrote to the outbox.
    pub(crate) queued_total: IntCounter,
    /// Labels: target. Purges a target acknowledged.
    pub(crate) delivered_total: IntCounterVec,
    /// Labels: target. Delivery attempts that failed (retried later).
    pub(crate) failed_total: IntCounterVec,
    /// Labels: target. Purges given up after `edge.purge_attempts`.
    pub(crate) given_up_total: IntCounterVec,
    /// Purges not delivered yet (every node's, from the database).
    pub(crate) pending: IntGauge,
    /// Age of the oldest of them; 0 when none.
    pub(crate) oldest_pending_seconds: IntGauge,
}

#[derive(Clone)]
pub(crate) struct HttpMetrics {
    /// Labels: route, status.
    requests_total: IntCounterVec,
    /// Labels: route, cache.
    request_duration_seconds: HistogramVec,
    /// Labels: route.
    response_bytes_total: IntCounterVec,
    /// Labels: listener (public, ops).
    pub(crate) open_connections: IntGaugeVec,
    /// Labels: listener, reason (`max_connections`, `max_connections_per_ip`).
    pub(crate) refused_connections_total: IntCounterVec,
    /// The series a memory cache hit touches, resolved on first use: the hot path skips
    /// three label lookups (hash, lock, map) per answer.
    hit_series: Arc<HitSeries>,
}

#[derive(Default)]
struct HitSeries {
    requests: std::sync::OnceLock<IntCounter>,
    duration: std::sync::OnceLock<Histogram>,
    bytes: std::sync::OnceLock<IntCounter>,
}

impl HttpMetrics {
    /// Counts one answer: its route, status, cache status (`none` when it has none), time
    /// and body bytes.
    pub(crate) fn observe(
        &self,
        route: &str,
        status: http::StatusCode,
        cache: Option<&str>,
        seconds: f64,
        bytes: u64,
    ) {
        if route == "image" && status == http::StatusCode::OK && cache == Some("HIT-MEMORY") {
            let hot = &self.hit_series;
            hot.requests
                .get_or_init(|| self.requests_total.with_label_values(&[route, "200"]))
                .inc();
            hot.duration
                .get_or_init(|| {
                    self.request_duration_seconds
                        .with_label_values(&[route, "HIT-MEMORY"])
                })
                .observe(seconds);
            hot.bytes
                .get_or_init(|| self.response_bytes_total.with_label_values(&[route]))
                .inc_by(bytes);
            return;
        }
        self.requests_total
            .with_label_values(&[route, status.as_str()])
            .inc();
        self.request_duration_seconds
            .with_label_values(&[route, cache.unwrap_or("none")])
            .observe(seconds);
        self.response_bytes_total
            .with_label_values(&[route])
            .inc_by(bytes);
    }
}

#[derive(Clone)]
pub(crate) struct CpuMetrics {
    pub(crate) queue_depth: IntGauge,
    pub(crate) in_flight: IntGauge,
    pub(crate) threads: IntGauge,
    pub(crate) rejected_total: IntCounter,
    pub(crate) panics_total: IntCounter,
    pub(crate) queue_wait_seconds: Histogram,
}

#[derive(Clone)]
pub(crate) struct RenderMetrics {
    /// Labels: stage (fetch, decode, resize, effects, encode).
    stage_duration_seconds: HistogramVec,
    /// Labels: format, outcome (ok, client_error, error).
    renders_total: IntCounterVec,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let registry = Registry::new();
        let r = Reg(&registry);
        let http = HttpMetrics {
            requests_total: r.counter_vec(
                "imgnode_http_requests_total",
                "HTTP requests answered, by route and status",
                &["route", "status"],
            ),
            request_duration_seconds: r.histogram_vec(
                "imgnode_http_request_duration_seconds",
                "Time from request head to response head, by route and cache status",
                &["route", "cache"],
            ),
            response_bytes_total: r.counter_vec(
                "imgnode_http_response_bytes_total",
                "Response body bytes sent, by route",
                &["route"],
            ),
            open_connections: r.register(
                IntGaugeVec::new(
                    Opts::new(
                        "imgnode_http_open_connections",
                        "Client connections open, by listener",
                    ),
                    &["listener"],
                )
                .expect("valid metric"),
            ),
            refused_connections_total: r.counter_vec(
                "imgnode_http_refused_connections_total",
                "Connections refused (503, or closed on TLS) at server.max_connections or \
                 server.max_connections_per_ip, by listener and reason",
                &["listener", "reason"],
            ),
            hit_series: Arc::default(),
        };
        let edge = EdgeMetrics {
            queued_total: r.counter(
                "imgnode_edge_purges_queued_total",
                "Edge purges this node wrote to the outbox (one per change, for every target)",
            ),
            delivered_total: r.counter_vec(
                "imgnode_edge_purges_delivered_total",
                "Edge purges a purge target acknowledged, by target",
                &["target"],
            ),
            failed_total: r.counter_vec(
                "imgnode_edge_purge_failures_total",
                "Edge purge delivery attempts that failed and will be retried, by target",
                &["target"],
            ),
            given_up_total: r.counter_vec(
                "imgnode_edge_purges_given_up_total",
                "Edge purges abandoned after edge.purge_attempts failed attempts, by target",
                &["target"],
            ),
            pending: r.gauge(
                "imgnode_edge_purges_pending",
                "Edge purges in the outbox not delivered to every target yet (all nodes)",
            ),
            oldest_pending_seconds: r.gauge(
                "imgnode_edge_purge_oldest_pending_seconds",
                "Age of the oldest edge purge not delivered yet; 0 when none",
            ),
        };
        let cluster_listening = r.gauge(
            "imgnode_cluster_listening",
            "1 while the node receives other nodes' cache invalidations (PostgreSQL LISTEN)",
        );
        let cluster_notices_total = r.counter_vec(
            "imgnode_cluster_notices_total",
            "Cache invalidations sent to (or failed to reach) and received from other nodes; \
             resync = caches cleared after the listening connection was (re)opened",
            &["direction"],
        );
        let cpu = CpuMetrics {
            queue_depth: r.gauge(
                "imgnode_cpu_queue_depth",
                "Renders admitted and waiting for a CPU thread",
            ),
            in_flight: r.gauge("imgnode_cpu_in_flight", "Renders running on a CPU thread"),
            threads: r.gauge("imgnode_cpu_threads", "Threads of the CPU pool"),
            rejected_total: r.counter(
                "imgnode_cpu_rejected_total",
                "Renders refused with 503 because the queue was full",
            ),
            panics_total: r.counter(
                "imgnode_cpu_panics_total",
                "Jobs that panicked (answered 500, node kept serving)",
            ),
            queue_wait_seconds: r.histogram(
                "imgnode_cpu_queue_wait_seconds",
                "Time an admitted render waited for a CPU thread",
            ),
        };
        let render = RenderMetrics {
            stage_duration_seconds: r.histogram_vec(
                "imgnode_render_stage_duration_seconds",
                "Duration of each render stage",
                &["stage"],
            ),
            renders_total: r.counter_vec(
                "imgnode_render_renders_total",
                "Renders finished, by output format and outcome",
                &["format", "outcome"],
            ),
        };
        let origin_fetches_total = r.counter_vec(
            "imgnode_origin_fetches_total",
            "Originals fetched from the object store, by outcome (ok, not_found, timeout, unavailable, too_large, refused)",
            &["outcome"],
        );
        let originals_plaintext = r.gauge(
            "imgnode_originals_plaintext",
            "Originals still stored in plaintext by an earlier version, waiting to be sealed",
        );
        let originals_sealed_total = r.counter_vec(
            "imgnode_originals_sealed_total",
            "Plaintext originals of an earlier version handled by the background pass, by outcome (sealed, failed)",
            &["outcome"],
        );
        let coalesced_total = r.counter(
            "imgnode_cache_coalesced_total",
            "Requests answered by waiting for another request's identical render",
        );
        let renders_refused_total = r.counter_vec(
            "imgnode_delivery_renders_refused_total",
            "New renders refused with 429 by a render budget (client: per address; image: new variants per image per hour)",
            &["budget"],
        );
        let avif_fallbacks_total = r.counter(
            "imgnode_delivery_avif_fallbacks_total",
            "format=auto requests answered with a stand-in (WebP or JPEG, short max-age) \
             because their AVIF was not cached yet",
        );
        let avif_background_total = r.counter_vec(
            "imgnode_delivery_avif_background_total",
            "Background AVIF encodes started behind stand-ins, by outcome: stored, dropped \
             (pool busy, budget or quota spent; never queued) or failed",
            &["outcome"],
        );
        let process_resident_memory_bytes = r.gauge(
            "imgnode_process_resident_memory_bytes",
            "Resident set size of the process",
        );
        Metrics {
            registry,
            http,
            cpu,
            render,
            origin_fetches_total,
            originals_plaintext,
            originals_sealed_total,
            coalesced_total,
            renders_refused_total,
            avif_fallbacks_total,
            avif_background_total,
            process_resident_memory_bytes,
            cluster_listening,
            cluster_notices_total,
            edge,
        }
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition format for `/metrics`.
    pub(crate) fn render_text(&self) -> String {
        if let Some(rss) = resident_bytes() {
            self.process_resident_memory_bytes
                .set(i64::try_from(rss).unwrap_or(i64::MAX));
        }
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding our own registry into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The process's resident set size, from `/proc/self/status` (`VmRSS`, in kB); `None` off
/// Linux.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Registration helpers: a duplicate or malformed name is a programming error caught by the
/// first test that builds `Metrics`, so panicking here is the right failure.
struct Reg<'a>(&'a Registry);

impl Reg<'_> {
    fn register<C: prometheus::core::Collector + Clone + 'static>(&self, c: C) -> C {
        self.0
            .register(Box::new(c.clone()))
            .expect("metric names are unique and valid");
        c
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(name, help).expect("valid metric"))
    }

    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help).expect("valid metric"))
    }

    fn histogram(&self, name: &str, help: &str) -> Histogram {
        self.register(
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()))
                .expect("valid metric"),
        )
    }

    fn histogram_vec(&self, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
        self.register(
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                labels,
            )
            .expect("valid metric"),
        )
    }
}

impl RenderMetrics {
    /// Records a successful render and its stage durations.
    pub(crate) fn observe_ok(
        &self,
        format: crate::pipeline::OutputFormat,
        fetch: std::time::Duration,
        t: &crate::pipeline::StageTimings,
    ) {
        let stages = [
            ("fetch", fetch),
            ("decode", t.decode),
            ("resize", t.resize),
            ("effects", t.effects),
            ("encode", t.encode),
        ];
        for (stage, d) in stages {
            self.stage_duration_seconds
                .with_label_values(&[stage])
                .observe(d.as_secs_f64());
        }
        self.renders_total
            .with_label_values(&[format.extension(), "ok"])
            .inc();
    }

    pub(crate) fn observe_err(
        &self,
        format: crate::pipeline::OutputFormat,
        err: &crate::pipeline::PipelineError,
    ) {
        use crate::pipeline::PipelineError as E;
        let outcome = match err {
            E::Internal(_) => "error",
            _ => "client_error",
        };
        self.renders_total
            .with_label_values(&[format.extension(), outcome])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_instances_do_not_share_numbers() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.cpu.rejected_total.inc();
        assert_eq!(a.cpu.rejected_total.get(), 1);
        assert_eq!(b.cpu.rejected_total.get(), 0);
        assert!(a.render_text().contains("imgnode_cpu_rejected_total 1"));
    }
}
