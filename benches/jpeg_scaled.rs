//! Reduced-scale JPEG decoding: each path of `pipeline/decode/jpeg_scaled.rs` (baseline and
//! progressive at 1/2, 1/4, 1/8) next to the full decode of the same file, so a regression of
//! any path shows without the comparison peers installed.
//!
//! Run: `cargo bench --bench jpeg_scaled`. The sources are the test fixtures: `ladybird.jpg`
//! (a real photo, 1200x750 baseline 4:2:0) and its lossless progressive re-coding with
//! libjpeg's default script (`jpegtran -progressive`, cropped to 1003x749).
//!
//! Corpus mode: `JPEG_SCALED_CORPUS=/var/tmp/imgnode-compare/corpus/files cargo bench --bench
//! jpeg_scaled` prints, for every JPEG in that folder, the best of 5 decodes at 1/1, 1/2, 1/4
//! and 1/8 in milliseconds (no criterion run).
//!
//! FIGURES
//!

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use imgnode::pipeline::{self, DecodeHint, Limits, probe};

const BASELINE: &[u8] = include_bytes!("../tests/fixtures/photos/ladybird.jpg");
const PROGRESSIVE: &[u8] =
    include_bytes!("../tests/fixtures/jpeg_scaled/ladybird_odd_progressive.jpg");

fn decode_at(bytes: &[u8], denominator: u32) -> pipeline::Image {
    let limits = Limits::default();
    let info = probe(bytes, &limits).expect("probe");
    let hint = DecodeHint {
        min_size: Some((1, 1)),
        denominator: Some(denominator),
    };
    let image = pipeline::decode_upright(bytes, &info, &limits, hint).expect("decode");
    assert_eq!(
        (image.width, image.height),
        (
            info.width.div_ceil(denominator),
            info.height.div_ceil(denominator)
        ),
        "decoded at 1/{denominator}"
    );
    image
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("jpeg_scaled");
    group.measurement_time(Duration::from_secs(4));
    for (name, bytes) in [("baseline", BASELINE), ("progressive", PROGRESSIVE)] {
        for n in [1, 2, 4, 8] {
            group.bench_function(format!("{name}_1_{n}"), |b| {
                b.iter(|| decode_at(black_box(bytes), n))
            });
        }
    }
    group.finish();
}

/// Best of 5 decodes of every JPEG in `dir` at each scale, printed as a table.
fn corpus(dir: &str) {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("corpus folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    files.sort();
    println!("| file | MP | 1/1 ms | 1/2 ms | 1/4 ms | 1/8 ms |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut totals = [0f64; 4];
    // JPEG_SCALED_SCALES="2 8" limits the scales, JPEG_SCALED_RUNS the repetitions (profiling).
    let scales: Vec<u32> = std::env::var("JPEG_SCALED_SCALES")
        .unwrap_or_else(|_| "1 2 4 8".into())
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    let runs = std::env::var("JPEG_SCALED_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);
    for path in files {
        let bytes = std::fs::read(&path).expect("read");
        let info = probe(&bytes, &Limits::default()).expect("probe");
        let mut row = [0f64; 4];
        for (slot, n) in [1, 2, 4, 8].into_iter().enumerate() {
            if !scales.contains(&n) {
                continue;
            }
            let best = (0..runs)
                .map(|_| {
                    let start = Instant::now();
                    black_box(decode_at(&bytes, n));
                    start.elapsed().as_secs_f64() * 1000.0
                })
                .fold(f64::INFINITY, f64::min);
            row[slot] = best;
            totals[slot] += best;
        }
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            path.file_name().unwrap_or_default().to_string_lossy(),
            f64::from(info.width) * f64::from(info.height) / 1e6,
            row[0],
            row[1],
            row[2],
            row[3]
        );
    }
    println!(
        "| total | | {:.0} | {:.0} | {:.0} | {:.0} |",
        totals[0], totals[1], totals[2], totals[3]
    );
}

criterion_group!(benches, decode);

fn main() {
    if let Ok(dir) = std::env::var("JPEG_SCALED_CORPUS") {
        corpus(&dir);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
