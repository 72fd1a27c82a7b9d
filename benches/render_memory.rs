//! Heap footprint of one render: the peak of live heap bytes while `pipeline::render` turns a
//! source into a JPEG of the given width, per file of a corpus (issue 16 item 5: the
//! footprint must follow the reduced picture, not the source).
//!
//! Run: `RENDER_MEMORY_CORPUS=/var/tmp/imgnode-compare/corpus/files RENDER_MEMORY_WIDTH=1200
//! cargo bench --bench render_memory` (width 400 by default; without a corpus, the test
//! fixtures). Prints per file: source size, the decode scale's picture and the peak of live heap
//! bytes above what was live before the render, in MiB. Not a criterion bench: it counts bytes,
//! it does not time anything. The counting allocator (`common/counting_alloc.rs`, shared with
//! `animation.rs`) wraps the system allocator, so the
//! figures are what the pipeline asks for, before any allocator keeps or returns pages; what C
//! libraries allocate with their own malloc (libwebp, libaom, dav1d) is not counted.
//!
//! Figures (2026-12-07, 2 cores AMD EPYC, Debian 12; the 27 files of the comparison corpus,
//! 1.3-16.8 MP JPEG, PNG and WebP), JPEG out: at 1200 px a mean peak of 28.0 MiB per render,
//! the largest 66.7 MiB (a 16.8 MP WebP, decoded at 1/2); 4 MP sources, which decode at full
//! size for 1200 px, 20-24 MiB. The node's RSS under the cold 1200 px scenario
//! (`benches/compare/rss.sh`, 8 connections) peaks at 551 MiB with mimalloc's defaults and
//! 332 MiB with `MIMALLOC_PURGE_DELAY=0`: most of the difference is freed render buffers the
//! allocator has not returned yet, not live ones.
//!

use imgnode::pipeline::{self, EncodeSettings, Limits, OutputFormat, Transform};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

const MIB: f64 = 1024.0 * 1024.0;

fn main() {
    let width: u32 = std::env::var("RENDER_MEMORY_WIDTH")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(400);
    let mut files: Vec<std::path::PathBuf> = match std::env::var("RENDER_MEMORY_CORPUS") {
        Ok(dir) => std::fs::read_dir(dir)
            .expect("corpus folder")
            .map(|e| e.expect("entry").path())
            .collect(),
        Err(_) => vec![
            "tests/fixtures/photos/ladybird.jpg".into(),
            "tests/fixtures/jpeg_scaled/ladybird_odd_progressive.jpg".into(),
            "tests/fixtures/webp_scaled/ladybird.webp".into(),
        ],
    };
    files.sort();
    let limits = Limits::default();
    let settings = EncodeSettings::default();
    let transform = Transform {
        width: Some(width),
        ..Transform::default()
    };
    let (mut total, mut worst) = (0.0, 0.0f64);
    let mut count = 0;
    println!(
        "{:<24} {:>10} {:>12} {:>9}",
        "file", "source", "peak MiB", "MiB/MP"
    );
    for path in files {
        let bytes = std::fs::read(&path).expect("read");
        let Ok(info) = pipeline::probe(&bytes, &limits) else {
            continue;
        };
        let (rendered, peak) = counting_alloc::peak_during(|| {
            pipeline::render(&bytes, &transform, OutputFormat::Jpeg, &limits, &settings)
        });
        let peak = peak as f64 / MIB;
        let Ok(rendered) = rendered else { continue };
        let mp = f64::from(info.width) * f64::from(info.height) / 1e6;
        println!(
            "{:<24} {:>5}x{:<5} {:>9.1} {:>9.2}   {} bytes out",
            path.file_name().unwrap_or_default().to_string_lossy(),
            info.width,
            info.height,
            peak,
            peak / mp,
            rendered.bytes.len(),
        );
        total += peak;
        worst = worst.max(peak);
        count += 1;
    }
    println!(
        "{count} renders to {width} px: mean peak {:.1} MiB, largest {:.1} MiB",
        total / f64::from(count.max(1)),
        worst
    );
}
