//! The header probe and every decoder behind the pipeline's limits, at full size and at each
//! shrink-on-load scale: any bytes either decode to an image of the probed size (or, for a
//! JPEG or still WebP asked for 1/n, 1/n of it) or give an error; no panic, and (with run.sh's
//! `-malloc_limit_mb`) no allocation beyond the per-job budget the limits imply. An animated
//! GIF or WebP is also rendered frame by frame to an animated GIF (small: the decode side is
//! what is fuzzed), which must answer bytes or an error.
#![no_main]

use imgnode::pipeline::{
    DecodeHint, EncodeSettings, Limits, OutputFormat, Transform, decode_upright, probe, render,
};
use libfuzzer_sys::fuzz_target;

/// 4 MP x 8 bytes per pixel (16-bit RGBA) = 32 MiB: run.sh allows 96 MiB per allocation.
fn limits() -> Limits {
    Limits {
        max_source_pixels: 4_000_000,
        max_source_bytes: 8 * 1024 * 1024,
        max_frames: 64,
        max_animation_pixels: 16_000_000,
        ..Limits::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = limits();
    let Ok(info) = probe(data, &limits) else {
        return;
    };
    let (w, h) = info.oriented_size();
    if let Ok(image) = decode_upright(data, &info, &limits, DecodeHint::default()) {
        assert_eq!((image.width, image.height), (w, h), "decoded size differs from probe");
    }
    // Shrink-on-load: every reduced-scale JPEG path (1/2, 1/4, 1/8; baseline and progressive,
    // scans skipped or decoded) and libwebp's scaled decode answer the scaled size, the full
    // size (a file the reduced decoder refused went to the full decoder; an animated WebP) or
    // an error. An SVG is drawn at `render_size`, here the same scaled size.
    for n in [2, 4, 8] {
        let hint = DecodeHint {
            min_size: Some((1, 1)),
            denominator: Some(n),
            render_size: Some((w.div_ceil(n), h.div_ceil(n))),
        };
        if let Ok(image) = decode_upright(data, &info, &limits, hint) {
            let size = (image.width, image.height);
            assert!(
                size == (w, h) || size == (w.div_ceil(n), h.div_ceil(n)),
                "decoded {size:?} at 1/{n}, probed {w}x{h}"
            );
        }
    }
    if info.frames() > 1 {
        let small = Transform {
            width: Some(8),
            ..Transform::default()
        };
        let settings = EncodeSettings::default();
        let _ = render(data, &small, OutputFormat::Gif, &limits, &settings);
    }
});
