//! Delivery URL grammar: the per-request parse, resolve and cache-key work.
//!
//! Results: criterion point estimate `[95% confidence interval]`, `cargo bench --bench url`,
//! Rust 1.95, Debian 12, 2 cores. The 2026-11-29 run shared the machine with other builds
//! (load average ~4), so treat the figures as upper bounds; re-run on an idle machine before
//! comparing small differences.
//!
//! | date       | bench                       | time                         |
//! |------------|-----------------------------|------------------------------|
//! | 2026-11-29 | parse_query/typical         | 170 ns  [168 ns, 171 ns]     |
//! | 2026-11-29 | parse_query/long            | 1.01 µs [0.95 µs, 1.05 µs]   |
//! | 2026-11-29 | resolve+canonical/typical   | 68 ns   [66 ns, 71 ns]       |
//! | 2026-11-29 | canonical/long              | 173 ns  [170 ns, 176 ns]     |
//! | 2026-11-29 | parse_canonical/long        | 455 ns  [448 ns, 463 ns]     |
//! | 2026-11-29 | signing_query/long          | 201 ns  [195 ns, 209 ns]     |
//! | 2026-11-29 | parse_path/typical          | 206 ns  [202 ns, 212 ns]     |
//! | 2026-11-29 | parse_path/escaped          | 270 ns  [259 ns, 282 ns]     |
//!
//! `typical` query: `w=400&h=300&fit=cover&q=75&dpr=2&format=auto`; `long`: every known key,
//! escapes, a preset, cache busters, `sig` and `exp` (19 pairs). Paths: a 4-level plain path
//! and one with escaped UTF-8 and `+`.
//!
//! Regressions show up here in review; CI never gates on these numbers.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use imgnode::delivery::url::{
    TransformDefaults, canonical, parse_canonical, parse_path, parse_query,
};
use imgnode::pipeline::spec::Limits;

/// What most SDKs send: a size, a fit, a quality, a ratio and format negotiation.
const TYPICAL_QUERY: &str = "w=400&h=300&fit=cover&q=75&dpr=2&format=auto";

/// Every known key, an escaped value, a preset, a signature and cache busters.
const LONG_QUERY: &str = "w=1200&h=800&fit=scale-down&aspect=16%3A9&q=82&dpr=2.625\
    &crop=top-left&grayscale=true&blur=3&sharpen=20&rotate=auto&flip=both\
    &bg=%23FFAA00&format=auto&p:product-card&v=1699999999&utm_source=news+letter\
    &sig=Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHF1dXg&exp=1893456000";

const TYPICAL_PATH: &str = "acme/products/2024/summer/photo.v2.webp";
const ESCAPED_PATH: &str = "acme/summer%20sale/caf%C3%A9/d%C3%A9tail%2Bzoom.JPEG";

fn bench(c: &mut Criterion) {
    let defaults = TransformDefaults::default();
    let limits = Limits::default();

    c.bench_function("parse_query/typical", |b| {
        b.iter(|| parse_query(black_box(TYPICAL_QUERY)))
    });
    c.bench_function("parse_query/long", |b| {
        b.iter(|| parse_query(black_box(LONG_QUERY)))
    });

    let typical = parse_query(TYPICAL_QUERY)
        .expect("typical query parses")
        .params;
    let long = parse_query(LONG_QUERY).expect("long query parses").params;
    c.bench_function("resolve+canonical/typical", |b| {
        b.iter(|| canonical(&black_box(&typical).resolve(&defaults, &limits)))
    });
    let long_resolved = long.resolve(&defaults, &limits);
    c.bench_function("canonical/long", |b| {
        b.iter(|| canonical(black_box(&long_resolved)))
    });
    let long_canonical = canonical(&long_resolved);
    c.bench_function("parse_canonical/long", |b| {
        b.iter(|| parse_canonical(black_box(&long_canonical)))
    });
    c.bench_function("signing_query/long", |b| {
        b.iter(|| black_box(&long).signing_query())
    });

    c.bench_function("parse_path/typical", |b| {
        b.iter(|| parse_path(black_box(TYPICAL_PATH)))
    });
    c.bench_function("parse_path/escaped", |b| {
        b.iter(|| parse_path(black_box(ESCAPED_PATH)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
