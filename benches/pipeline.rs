//! Pipeline benchmarks: decode, resize and encode per format at a few sizes, and whole renders
//! of a 12 MP JPEG to a 400 px JPEG and WebP, and of an SVG to an 800 px PNG.
//!
//! Run: `cargo bench --bench pipeline` (release profile). The 12 MP source is made at start-up
//! from `elephants.jpg` upscaled to 4000x3000 and encoded at q90, so it is smoother than a
//! camera photo of the same size (decode figures for real photos are higher; see the
//! comparison harness of the performance work for those).
//!
//! Figures, 2026-11-29, `cargo bench --bench pipeline`, 2 vCPU AMD EPYC VM (AVX2), release,
//! criterion median, machine otherwise idle:
//!
//! | bench | time |
//! |---|---|
//! | decode/jpeg_1200x750 (baseline, real photo) | 1.83 ms |
//! | decode/jpeg_4000x3000 (12 MP, q90) | 85.3 ms |
//! | decode/png_rgba_640x359 | 0.53 ms |
//! | decode/webp_1200x750 (lossy, image-webp) | 14.6 ms |
//! | decode/avif_400x250 (dav1d) | 1.24 ms |
//! | resize/4000x3000_to_400w (Lanczos3; includes cloning the 36 MB source) | 36.4 ms |
//! | resize/1200x750_to_400w | 1.01 ms |
//! | resize/1200x750_cover_400x400_attention | 3.10 ms |
//! | resize/rgba_640x359_to_200w | 0.41 ms |
//! | encode/jpg_1000x625 (q80, optimized Huffman, 2-scan progressive) | 7.45 ms |
//! | encode/png_1000x625 (fast) | 4.09 ms |
//! | encode/webp_1000x625 (q80, method 2) | 14.8 ms |
//! | encode/jpg_400x250 | 1.28 ms |
//! | encode/png_400x250 | 0.60 ms |
//! | encode/webp_400x250 | 3.21 ms |
//! | encode/avif_400x250 (speed 8) | 95.0 ms |
//! | render/jpeg_12mp_to_400w_jpg | 89.0 ms |
//! | render/jpeg_12mp_to_400w_webp | 93.9 ms |
//!
//! Added 2026-12-07, `cargo bench --bench pipeline -- render/svg`, same VM but busy (load
//! average 10-20 from three other builds, so an upper bound), criterion median:
//!
//! | bench | time |
//! |---|---|
//! | render/svg_illustration_to_800w_png (400x300 SVG of 240 shapes, gradients, a blurred group and text, drawn at 800x600 by resvg, PNG fast) | 47.5 ms |
//!
//! Reading: a 12 MP render is almost all full-size JPEG decoding (zune-jpeg cannot decode at
//! 1/2, 1/4, 1/8 scale; the `DecodeHint` seam is where shrink-on-load plugs in). WebP decoding
//! through image-webp is about 3x slower than libwebp would be.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use imgnode::pipeline::{
    self, DecodeHint, EncodeSettings, Image, Limits, OutputFormat, Transform, probe,
};

const LADYBIRD: &[u8] = include_bytes!("../tests/fixtures/photos/ladybird.jpg");
const ELEPHANTS: &[u8] = include_bytes!("../tests/fixtures/photos/elephants.jpg");
const ARC_PNG: &[u8] = include_bytes!("../tests/fixtures/photos/arc-colors.png");

fn limits() -> Limits {
    Limits::default()
}

fn decode(bytes: &[u8]) -> Image {
    let l = limits();
    let info = probe(bytes, &l).expect("probe");
    pipeline::decode_upright(bytes, &info, &l, DecodeHint::default()).expect("decode")
}

fn sized(width: u32, height: u32) -> Transform {
    Transform {
        width: Some(width),
        height: Some(height),
        ..Transform::default()
    }
}

fn width(width: u32) -> Transform {
    Transform {
        width: Some(width),
        ..Transform::default()
    }
}

/// A 4000x3000 JPEG (q90) made from a real photo.
fn twelve_megapixel_jpeg() -> Vec<u8> {
    let big =
        pipeline::resize_image(decode(ELEPHANTS), &sized(4000, 3000), &limits()).expect("upscale");
    pipeline::encode_image(&big, OutputFormat::Jpeg, 90, &EncodeSettings::default())
        .expect("encode")
}

fn benches(c: &mut Criterion) {
    let settings = EncodeSettings::default();
    let l = limits();
    let big_jpeg = twelve_megapixel_jpeg();
    let photo = decode(LADYBIRD);
    let webp =
        pipeline::encode_image(&photo, OutputFormat::Webp, 80, &settings).expect("webp source");
    let avif = pipeline::encode_image(
        &pipeline::resize_image(photo.clone(), &width(400), &l).expect("resize"),
        OutputFormat::Avif,
        80,
        &settings,
    )
    .expect("avif source");

    let mut g = c.benchmark_group("decode");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    g.bench_function("jpeg_1200x750", |b| b.iter(|| decode(black_box(LADYBIRD))));
    g.bench_function("jpeg_4000x3000", |b| {
        b.iter(|| decode(black_box(&big_jpeg)))
    });
    g.bench_function("png_rgba_640x359", |b| {
        b.iter(|| decode(black_box(ARC_PNG)))
    });
    g.bench_function("webp_1200x750", |b| b.iter(|| decode(black_box(&webp))));
    g.bench_function("avif_400x250", |b| b.iter(|| decode(black_box(&avif))));
    g.finish();

    let big = decode(&big_jpeg);
    let rgba = decode(ARC_PNG);
    let mut g = c.benchmark_group("resize");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    g.bench_function("4000x3000_to_400w", |b| {
        b.iter(|| pipeline::resize_image(black_box(big.clone()), &width(400), &l))
    });
    g.bench_function("1200x750_to_400w", |b| {
        b.iter(|| pipeline::resize_image(black_box(photo.clone()), &width(400), &l))
    });
    g.bench_function("1200x750_cover_400x400_attention", |b| {
        let t = Transform {
            crop: pipeline::Crop::Attention,
            ..sized(400, 400)
        };
        b.iter(|| pipeline::resize_image(black_box(photo.clone()), &t, &l))
    });
    g.bench_function("rgba_640x359_to_200w", |b| {
        b.iter(|| pipeline::resize_image(black_box(rgba.clone()), &width(200), &l))
    });
    g.finish();

    let mid = pipeline::resize_image(photo.clone(), &width(1000), &l).expect("1000w");
    let small = pipeline::resize_image(photo.clone(), &width(400), &l).expect("400w");
    let mut g = c.benchmark_group("encode");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    for (name, image) in [("1000x625", &mid), ("400x250", &small)] {
        for format in [
            OutputFormat::Jpeg,
            OutputFormat::Png,
            OutputFormat::Webp,
            OutputFormat::Jxl,
        ] {
            g.bench_function(format!("{format}_{name}"), |b| {
                b.iter(|| pipeline::encode_image(black_box(image), format, 80, &settings))
            });
        }
    }
    g.bench_function("avif_400x250", |b| {
        b.iter(|| pipeline::encode_image(black_box(&small), OutputFormat::Avif, 80, &settings))
    });
    // JPEG XL lossless (q=100; signed URLs only by default, unsigned ones are capped at q=90).
    g.bench_function("jxl_lossless_400x250", |b| {
        b.iter(|| pipeline::encode_image(black_box(&small), OutputFormat::Jxl, 100, &settings))
    });
    g.finish();

    let mut g = c.benchmark_group("render");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    for format in [OutputFormat::Jpeg, OutputFormat::Webp] {
        g.bench_function(format!("jpeg_12mp_to_400w_{format}"), |b| {
            b.iter(|| pipeline::render(black_box(&big_jpeg), &width(400), format, &l, &settings))
        });
    }
    // Shrink-on-load: 200 px from 4000 px is a 20x reduction, so the JPEG is decoded from its
    // DC coefficients at 1/8 (500x375) and Lanczos does the remaining 2.5x. The same render
    // through a full-size decode for comparison.
    g.bench_function("jpeg_12mp_to_200w_jpg_dc", |b| {
        b.iter(|| {
            pipeline::render(
                black_box(&big_jpeg),
                &width(200),
                OutputFormat::Jpeg,
                &l,
                &settings,
            )
        })
    });
    // SVG: an illustration of 240 shapes (gradients, strokes, a blurred group, text) rendered
    // by resvg straight at 800 px wide, then encoded as PNG.
    let svg = illustration_svg();
    g.bench_function("svg_illustration_to_800w_png", |b| {
        b.iter(|| {
            pipeline::render(
                black_box(&svg),
                &width(800),
                OutputFormat::Png,
                &l,
                &settings,
            )
        })
    });
    g.bench_function("jpeg_12mp_to_200w_jpg_full_decode", |b| {
        b.iter(|| {
            let image = decode(black_box(&big_jpeg));
            let small = pipeline::resize_image(image, &width(200), &l).expect("resize");
            pipeline::encode_image(&small, OutputFormat::Jpeg, 80, &settings)
        })
    });
    g.finish();
}

/// A 400x300 SVG illustration: a gradient sky, 200 circles with a radial gradient, 30 stroked
/// Bezier curves, a blurred group of 10 shapes and a line of text (bundled font).
fn illustration_svg() -> Vec<u8> {
    let mut svg = String::from(
        "<svg xmlns='http://www.w3.org/2000/svg' width='400' height='300' viewBox='0 0 400 300'>\
         <defs><linearGradient id='sky' x2='0' y2='1'><stop offset='0' stop-color='#124'/>\
         <stop offset='1' stop-color='#8bf'/></linearGradient>\
         <radialGradient id='ball'><stop offset='0' stop-color='#ffd'/>\
         <stop offset='1' stop-color='#f60' stop-opacity='0.6'/></radialGradient>\
         <filter id='soft'><feGaussianBlur stdDeviation='3'/></filter></defs>\
         <rect width='400' height='300' fill='url(#sky)'/>",
    );
    for i in 0..200u32 {
        let (x, y, r) = ((i * 37) % 400, (i * 53) % 300, 3 + i % 17);
        svg += &format!("<circle cx='{x}' cy='{y}' r='{r}' fill='url(#ball)'/>");
    }
    for i in 0..30u32 {
        let y = 10 * i;
        svg += &format!(
            "<path d='M0 {y} C 100 {} 300 {} 400 {y}' fill='none' stroke='#fff' \
             stroke-opacity='0.5' stroke-width='{}'/>",
            y + 40,
            y.saturating_sub(40),
            1 + i % 4
        );
    }
    svg += "<g filter='url(#soft)'>";
    for i in 0..10u32 {
        svg += &format!(
            "<rect x='{}' y='220' width='30' height='60' rx='6' fill='#363'/>",
            40 * i
        );
    }
    svg += "</g><text x='20' y='40' font-size='28' fill='#fff'>imgnode SVG bench</text></svg>";
    svg.into_bytes()
}

criterion_group!(pipeline_benches, benches);
criterion_main!(pipeline_benches);
