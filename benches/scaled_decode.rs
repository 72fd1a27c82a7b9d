//! Shrink-on-load: each reduced-scale decode path (JPEG baseline and progressive through
//! `pipeline/decode/jpeg_scaled.rs`, lossy and lossless WebP through libwebp's scaled decode;
//! 1/2, 1/4, 1/8) next to the full decode of the same file, so a regression of any path shows
//! without the comparison peers installed.
//!
//! Run: `cargo bench --bench scaled_decode`. The sources are the test fixtures: `ladybird.jpg`
//! (a real photo, 1200x750 baseline 4:2:0), its lossless progressive re-coding with libjpeg's
//! default script (`jpegtran -progressive`, cropped to 1003x749), and its WebP (`cwebp -q 80`)
//! and `arc-colors.png` as lossless WebP with alpha.
//!
//! Corpus mode: `SCALED_DECODE_CORPUS=/var/tmp/imgnode-compare/corpus/files cargo bench
//! --bench scaled_decode` prints, for every JPEG and WebP in that folder, the best of 5 decodes
//! at 1/1, 1/2, 1/4 and 1/8 in milliseconds (no criterion run). With `SCALED_DECODE_RENDER=400`
//! it prints instead, per file, decode plus resize to 400 px wide from the full decode and
//! from the shrink-on-load decode a render would choose (what the decode design saves end to
//! end, the resize included).
//!
//! Figures (2026-12-07, 2 cores AMD EPYC, Debian 12, `88133ca`; criterion medians):
//!
//!   source                         1/1          1/2       1/4       1/8
//!   jpeg_baseline  1200x750        1.39 ms      1.85 ms   1.35 ms   0.81 ms
//!   jpeg_progressive 1003x749      3.54 ms      1.57 ms   0.69 ms   0.23 ms
//!   webp_lossy     1200x750        3.62 ms      4.19 ms   3.50 ms   3.28 ms
//!   webp_lossless  640x359 alpha   0.81 ms      1.44 ms   1.13 ms   1.02 ms
//!
//! (1/1 of the JPEGs is zune-jpeg's full decode.) Corpus render mode, WebP sources, totals over
//! 21 files: 400 px 825 -> 697 ms, 1200 px 853 -> 789 ms (benches/RESULTS.md).
//!

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use imgnode::pipeline::{self, DecodeHint, Limits, probe};

const BASELINE: &[u8] = include_bytes!("../tests/fixtures/photos/ladybird.jpg");
const PROGRESSIVE: &[u8] =
    include_bytes!("../tests/fixtures/jpeg_scaled/ladybird_odd_progressive.jpg");
const WEBP_LOSSY: &[u8] = include_bytes!("../tests/fixtures/webp_scaled/ladybird.webp");
const WEBP_LOSSLESS: &[u8] =
    include_bytes!("../tests/fixtures/webp_scaled/arc_lossless_alpha.webp");

fn decode_at(bytes: &[u8], denominator: u32) -> pipeline::Image {
    let limits = Limits::default();
    let info = probe(bytes, &limits).expect("probe");
    let hint = DecodeHint {
        min_size: Some((1, 1)),
        denominator: Some(denominator),
        ..DecodeHint::default()
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
    let mut group = c.benchmark_group("scaled_decode");
    group.measurement_time(Duration::from_secs(4));
    for (name, bytes) in [
        ("jpeg_baseline", BASELINE),
        ("jpeg_progressive", PROGRESSIVE),
        ("webp_lossy", WEBP_LOSSY),
        ("webp_lossless", WEBP_LOSSLESS),
    ] {
        for n in [1, 2, 4, 8] {
            group.bench_function(format!("{name}_1_{n}"), |b| {
                b.iter(|| decode_at(black_box(bytes), n))
            });
        }
    }
    group.finish();
}

/// The JPEG and WebP files in `dir`, sorted.
fn corpus_files(dir: &str) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("corpus folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jpg" || e == "webp"))
        .collect();
    files.sort();
    files
}

/// Best of 5 decodes of every JPEG and WebP in `dir` at each scale, printed as a table.
fn corpus(dir: &str) {
    let files = corpus_files(dir);
    println!("| file | MP | 1/1 ms | 1/2 ms | 1/4 ms | 1/8 ms |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut totals = [0f64; 4];
    // SCALED_DECODE_SCALES="2 8" limits the scales, SCALED_DECODE_RUNS the repetitions
    // (profiling).
    let scales: Vec<u32> = std::env::var("SCALED_DECODE_SCALES")
        .unwrap_or_else(|_| "1 2 4 8".into())
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    let runs = std::env::var("SCALED_DECODE_RUNS")
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

/// Best of 5 decode + resize to `width` of every JPEG and WebP in `dir`: from the full decode,
/// and from the reduced one the planner picks.
fn corpus_render(dir: &str, width: u32) {
    let files = corpus_files(dir);
    let limits = Limits::default();
    let transform = pipeline::Transform {
        width: Some(width),
        ..pipeline::Transform::default()
    };
    println!("| file | MP | full decode + resize ms | shrink-on-load ms | decoded at |");
    println!("|---|---:|---:|---:|---|");
    let mut totals = [0f64; 2];
    for path in files {
        let bytes = std::fs::read(&path).expect("read");
        let info = probe(&bytes, &limits).expect("probe");
        let planned = pipeline::plan(info.oriented_size(), &transform, &limits)
            .expect("plan")
            .decode_hint();
        let mut size = (0, 0);
        let mut best = [f64::INFINITY; 2];
        for _ in 0..5 {
            for (slot, hint) in [DecodeHint::default(), planned].into_iter().enumerate() {
                let start = Instant::now();
                let image = pipeline::decode_upright(&bytes, &info, &limits, hint).expect("decode");
                if slot == 1 {
                    size = (image.width, image.height);
                }
                black_box(pipeline::resize_image(image, &transform, &limits).expect("resize"));
                best[slot] = best[slot].min(start.elapsed().as_secs_f64() * 1000.0);
            }
        }
        totals[0] += best[0];
        totals[1] += best[1];
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {}x{} |",
            path.file_name().unwrap_or_default().to_string_lossy(),
            f64::from(info.width) * f64::from(info.height) / 1e6,
            best[0],
            best[1],
            size.0,
            size.1
        );
    }
    println!("| total | | {:.0} | {:.0} | |", totals[0], totals[1]);
}

criterion_group!(benches, decode);

fn main() {
    if let Ok(dir) = std::env::var("SCALED_DECODE_CORPUS") {
        match std::env::var("SCALED_DECODE_RENDER").map(|w| w.parse()) {
            Ok(Ok(width)) => corpus_render(&dir, width),
            _ => corpus(&dir),
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
