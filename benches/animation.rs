//! Animated render cost (issue 19): a 100-frame GIF to an animated WebP, and to an animated GIF.
//!
//! Run: `cargo bench --bench animation` (release profile). The source is made here, not
//! committed (it would be megabytes): 100 frames of 480x270, a window panning across
//! `tests/fixtures/photos/ladybird.jpg` (1200x750, decoded by the `image` crate) two pixels a
//! frame right and one down, so every frame differs everywhere, as a video clip's do; each frame
//! quantised by the `gif` crate (`Frame::from_rgb_speed`, NeuQuant, speed 10) with its own
//! palette, 4 cs a frame, looping forever: about the GIF a phone's screen recorder or a
//! "GIF maker" site writes. It is rendered 240 px wide (`w=240`) at the default quality.
//!
//! Figures, 2026-12-07, `cargo bench --bench animation`, 2 vCPU VM, release, criterion median
//! [low, high], measured once on a machine shared with other builds (load average 2.8-5.4 on
//! 2 cores during the run), so on the high side. The source GIF is 5 297 956 bytes.
//!
//! | bench | time | output |
//! |---|---|---|
//! | animation/gif_100_frames_480x270_to_240w_webp (libwebp's animation encoder, q80, method 4) | 431.0 ms [427.0, 439.1] | 210 476 bytes |
//! | animation/gif_100_frames_480x270_to_240w_gif (palette per frame, NeuQuant) | 644.5 ms [621.1, 669.1] | 1 972 922 bytes |
//!
//! Reading: 4.3 ms a frame to WebP (decode, composite, resize, encode), 6.4 ms to GIF (the
//! NeuQuant palette and a whole-canvas frame each time); the GIF output is 9x the WebP, since
//! every frame is written whole (no inter-frame sub-rectangles) and photographic content
//! compresses badly as 256 colours. A second, shorter run (`-- --warm-up-time 1
//! --measurement-time 5`, lighter load) gave 358.8 ms and 550.3 ms.
//!
//! Memory (printed before each bench by `common/counting_alloc.rs`: Rust allocations only,
//! libwebp's own are not seen; re-run 2026-12-08 after that file was shared, same figures):
//! the peak of live heap during one render, above the source bytes, is 2.56 MiB to WebP and 6.15 MiB to GIF (most of it the 1.97 MB output growing),
//! where holding the 100 decoded 480x270 RGBA frames would take 49.4 MiB: one canvas, one
//! frame in flight.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use imgnode::pipeline::{self, EncodeSettings, Limits, OutputFormat, Transform, probe};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

const PHOTO: &[u8] = include_bytes!("../tests/fixtures/photos/ladybird.jpg");
const FRAMES: u32 = 100;
const SIZE: (u16, u16) = (480, 270);

/// The 100-frame GIF described above.
fn source() -> Vec<u8> {
    let photo = image::load_from_memory(PHOTO).expect("photo").to_rgb8();
    let (w, h) = (usize::from(SIZE.0), usize::from(SIZE.1));
    let mut out = Vec::new();
    let mut encoder = gif::Encoder::new(&mut out, SIZE.0, SIZE.1, &[]).expect("gif");
    encoder.set_repeat(gif::Repeat::Infinite).expect("loop");
    for i in 0..FRAMES {
        let (x0, y0) = (i * 2, i);
        let mut rgb = Vec::with_capacity(w * h * 3);
        for y in 0..h as u32 {
            for x in 0..w as u32 {
                rgb.extend_from_slice(&photo.get_pixel(x0 + x, y0 + y).0);
            }
        }
        let mut frame = gif::Frame::from_rgb_speed(SIZE.0, SIZE.1, &rgb, 10);
        frame.delay = 4;
        encoder.write_frame(&frame).expect("frame");
    }
    drop(encoder);
    out
}

fn benches(c: &mut Criterion) {
    let gif = source();
    let limits = Limits::default();
    let settings = EncodeSettings::default();
    let info = probe(&gif, &limits).expect("probe");
    assert_eq!((info.width, info.height), (480, 270));
    println!("source: {} frames, {} bytes", FRAMES, gif.len());
    let to_240 = Transform {
        width: Some(240),
        ..Transform::default()
    };
    let mut g = c.benchmark_group("animation");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    for (name, output) in [
        ("gif_100_frames_480x270_to_240w_webp", OutputFormat::Webp),
        ("gif_100_frames_480x270_to_240w_gif", OutputFormat::Gif),
    ] {
        let (rendered, peak) = counting_alloc::peak_during(|| {
            pipeline::render(&gif, &to_240, output, &limits, &settings).expect("render")
        });
        let bytes = rendered.bytes;
        println!(
            "{name}: {} bytes, peak live heap {:.2} MiB above the source",
            bytes.len(),
            peak as f64 / f64::from(1 << 20)
        );
        g.bench_function(name, |b| {
            b.iter(|| {
                pipeline::render(black_box(&gif), &to_240, output, &limits, &settings)
                    .expect("render")
            })
        });
    }
    g.finish();
}

criterion_group!(animation_benches, benches);
criterion_main!(animation_benches);
