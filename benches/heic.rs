//! HEIC render cost (issue 19): a 12 MP HEIC to an 800 px WebP, and the decode alone.
//!
//! Run: `cargo bench --bench heic` (release profile). The source,
//! `tests/fixtures/bench/elephants_12mp.heic` (619 KB), is `elephants.jpg` upscaled to
//! 4000x3000 and encoded by Debian 12's `heif-enc -q 50` (libheif 1.15.1, x265; one HEVC
//! image, 8-bit 4:2:0; see `tests/fixtures/generate.sh`), so it is smoother than a camera
//! photo; phones write 512x512 grids instead, which libheif decodes tile by tile (here on the
//! calling thread: `heif_context_set_max_decoding_threads(0)`). It is committed because
//! encoding it takes about 30 s and an encoder the build does not need.
//!
//! Figures, 2026-12-07, `cargo bench --bench heic`, 2 vCPU VM, release, criterion median
//! [low, high], measured once on a machine shared with other builds (load average 6.3-6.6 on
//! 2 cores during the run), so these are on the high side:
//!
//! | bench | time |
//! |---|---|
//! | heic/decode_12mp (libheif + libde265, to RGB8) | 531.6 ms [506.9, 550.9] |
//! | heic/render_12mp_to_800w_webp (decode, resize, WebP q80) | 701.5 ms [695.1, 708.2] |
//!
//! Reading: the render is three quarters HEVC decoding at full size; libheif 1.15 has no
//! scaled decode, so unlike JPEG and WebP there is no shrink-on-load for HEIC.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use imgnode::pipeline::{self, DecodeHint, EncodeSettings, Limits, OutputFormat, Transform, probe};

const HEIC_12MP: &[u8] = include_bytes!("../tests/fixtures/bench/elephants_12mp.heic");

fn benches(c: &mut Criterion) {
    let limits = Limits::default();
    let settings = EncodeSettings::default();
    let info = probe(HEIC_12MP, &limits).expect("probe");
    assert_eq!((info.width, info.height), (4000, 3000));
    let to_800 = Transform {
        width: Some(800),
        ..Transform::default()
    };
    let mut g = c.benchmark_group("heic");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("decode_12mp", |b| {
        b.iter(|| {
            pipeline::decode_upright(black_box(HEIC_12MP), &info, &limits, DecodeHint::default())
                .expect("decode")
        })
    });
    g.bench_function("render_12mp_to_800w_webp", |b| {
        b.iter(|| {
            pipeline::render(
                black_box(HEIC_12MP),
                &to_800,
                OutputFormat::Webp,
                &limits,
                &settings,
            )
            .expect("render")
        })
    });
    g.finish();
}

criterion_group!(heic_benches, benches);
criterion_main!(heic_benches);
