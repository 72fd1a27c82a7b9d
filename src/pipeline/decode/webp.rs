//! WebP: still images through libwebp (lossy, lossless, alpha), which can scale while it
//! decodes; the first frame of an animation through image-webp.
//!
//! libwebp's scaled decode still reconstructs every macroblock (VP8 has no reduced
//! transform), but it rescales the YUV rows as they come out (an area average, alpha
//! weighted), so neither the full-size RGB conversion nor a full-size buffer ever exists.

use std::io::Cursor;

use image_webp::WebPDecoder;
use libwebp_sys as sys;

use super::super::probe::ImageInfo;
use super::super::spec::{Limits, SourceFormat};
use super::super::{DecodeHint, Image, PipelineError, PixelLayout};
use super::{corrupt, image_from_samples, memory_limit};

/// How much of the reduction is left to the Lanczos pass after a scaled decode, per
/// denominator, as for JPEG (`jpeg::RESERVE`).
const RESERVE: [(u32, f64); 3] = [(8, 2.0), (4, 2.0), (2, 2.0)];

/// Sources below this many pixels are not decoded at 1/2. libwebp reconstructs every
/// macroblock whatever the scale, and its rescaler costs about what a resize from the full
/// size costs while that fits the caches: measured on the corpus as WebP (benches/RESULTS.md,
/// "WebP sources at reduced scale"), 4 MP sources rendered 3-7 % slower at 1/2, the 14.7 and
/// 17.9 MP ones 11-28 % faster; every one at 1/4 or 1/8 was faster.
const HALF_MIN_PIXELS: u64 = 8_000_000;

/// The denominator to decode at (see `super::scale_denominator`).
pub(super) fn scale(info: &ImageInfo, hint: DecodeHint) -> u32 {
    let n = super::scale_denominator(info, hint, &RESERVE);
    let pixels = u64::from(info.width) * u64::from(info.height);
    if n == 2 && hint.denominator.is_none() && pixels < HALF_MIN_PIXELS {
        return 1;
    }
    n
}

/// Decodes at full size, or at 1/`scale` (`ceil(w / scale)` x `ceil(h / scale)`) for a still
/// image; an animation's first frame is always full size. `probed` is the size the limits
/// were checked against: a file whose header libwebp reads otherwise is refused before any
/// buffer exists.
pub(super) fn decode(
    bytes: &[u8],
    probed: (u32, u32),
    limits: &Limits,
    scale: u32,
) -> Result<Image, PipelineError> {
    let features = features(bytes)?;
    let (width, height) = (features.width, features.height);
    if (width, height) != probed {
        return Err(corrupt(
            SourceFormat::Webp,
            format!(
                "libwebp reads {width}x{height}, the header said {}x{}",
                probed.0, probed.1
            ),
        ));
    }
    // Frames in an animation are checked as well as the top-level bitstream: image-webp sizes
    // a frame's buffer from the frame's own header (found by fuzzing).
    check_frame_sizes(bytes, width, height)?;
    if features.animated {
        return first_frame(bytes, limits);
    }
    let (out_w, out_h) = (width.div_ceil(scale.max(1)), height.div_ceil(scale.max(1)));
    let (mode, channels, layout) = if features.alpha {
        (sys::WEBP_CSP_MODE::MODE_RGBA, 4, PixelLayout::Rgba8)
    } else {
        (sys::WEBP_CSP_MODE::MODE_RGB, 3, PixelLayout::Rgb8)
    };
    let stride = out_w as usize * channels;
    let size = stride * out_h as usize;
    let mut samples = vec![0u8; size];
    let mut config =
        sys::WebPDecoderConfig::new().map_err(|()| corrupt(SourceFormat::Webp, "libwebp init"))?;
    config.output.colorspace = mode;
    config.output.is_external_memory = 1;
    config.output.u.RGBA = sys::WebPRGBABuffer {
        rgba: std::ptr::null_mut(),
        stride: c_int(stride)?,
        size,
    };
    if (out_w, out_h) != (width, height) {
        config.options.use_scaling = 1;
        config.options.scaled_width = c_int(out_w as usize)?;
        config.options.scaled_height = c_int(out_h as usize)?;
    }
    let status = decode_into(bytes, &mut config, &mut samples);
    if status != sys::VP8StatusCode::VP8_STATUS_OK {
        return Err(corrupt(SourceFormat::Webp, format!("libwebp: {status:?}")));
    }
    let mut image = Image::new(out_w, out_h, layout, samples);
    // libwebp maps the whole source onto the whole scaled buffer (no partial last pixel).
    image.whole_picture = true;
    // A broken ICCP chunk loses the profile, not the image.
    image.icc = icc_profile(bytes);
    Ok(image)
}

struct Features {
    width: u32,
    height: u32,
    alpha: bool,
    animated: bool,
}

/// libwebp's WebPDecode into `samples`, which `config.output` describes (RGB or RGBA, its
/// stride and size; the pointer is set here).
#[expect(
    unsafe_code,
    reason = "libwebp's decoder; no safe binding exposes its options"
)]
fn decode_into(
    bytes: &[u8],
    config: &mut sys::WebPDecoderConfig,
    samples: &mut [u8],
) -> sys::VP8StatusCode {
    // SAFETY: WebPDecode reads at most `bytes.len()` bytes of `bytes`, which outlives the
    // call. The output is external memory: `samples`, exclusively borrowed for the call, whose
    // length is checked here against the size `config.output` declares; libwebp checks the
    // declared stride and size against the output dimensions before writing a row and fails
    // instead of writing past them, and allocates nothing it would hand back. The union member
    // written is RGBA, the one an RGB(A) colourspace reads.
    unsafe {
        assert_eq!(config.output.u.RGBA.size, samples.len());
        config.output.u.RGBA.rgba = samples.as_mut_ptr();
        let status = sys::WebPDecode(bytes.as_ptr(), bytes.len(), config);
        // Frees what libwebp allocated for itself (nothing, for external memory).
        sys::WebPFreeDecBuffer(&mut config.output);
        config.output.u.RGBA.rgba = std::ptr::null_mut();
        status
    }
}

#[expect(
    unsafe_code,
    reason = "libwebp's header parser; no safe binding returns has_animation"
)]
fn get_features(bytes: &[u8], features: &mut sys::WebPBitstreamFeatures) -> sys::VP8StatusCode {
    // SAFETY: reads at most `bytes.len()` bytes of `bytes`; writes only `*features`, plain
    // data exclusively borrowed for the call.
    unsafe { sys::WebPGetFeatures(bytes.as_ptr(), bytes.len(), features) }
}

fn features(bytes: &[u8]) -> Result<Features, PipelineError> {
    let mut f = sys::WebPBitstreamFeatures {
        width: 0,
        height: 0,
        has_alpha: 0,
        has_animation: 0,
        format: 0,
        pad: [0; 5],
    };
    let status = get_features(bytes, &mut f);
    if status != sys::VP8StatusCode::VP8_STATUS_OK {
        return Err(corrupt(
            SourceFormat::Webp,
            format!("libwebp header: {status:?}"),
        ));
    }
    let side = |v: i32| u32::try_from(v).ok().filter(|&v| v > 0);
    let (Some(width), Some(height)) = (side(f.width), side(f.height)) else {
        return Err(corrupt(SourceFormat::Webp, "no size"));
    };
    Ok(Features {
        width,
        height,
        alpha: f.has_alpha != 0,
        animated: f.has_animation != 0,
    })
}

fn c_int(v: usize) -> Result<i32, PipelineError> {
    i32::try_from(v).map_err(|_| corrupt(SourceFormat::Webp, "size overflows"))
}

/// The ICC profile of an extended (VP8X) file, if it has an ICCP chunk.
fn icc_profile(bytes: &[u8]) -> Option<Vec<u8>> {
    chunks(bytes.get(12..)?)
        .find(|(kind, _)| *kind == b"ICCP")
        .map(|(_, data)| data.to_vec())
        .filter(|icc| !icc.is_empty())
}

/// The first frame of an animation, composited on its canvas by image-webp.
fn first_frame(bytes: &[u8], limits: &Limits) -> Result<Image, PipelineError> {
    let bad = |e: image_webp::DecodingError| corrupt(SourceFormat::Webp, e);
    let mut decoder = WebPDecoder::new(Cursor::new(bytes)).map_err(bad)?;
    decoder.set_memory_limit(memory_limit(limits));
    // image-webp unwraps the first ANMF chunk of an "animated" file: refuse one without.
    if decoder.is_animated() && decoder.num_frames() == 0 {
        return Err(corrupt(SourceFormat::Webp, "animation without frames"));
    }
    let (width, height) = decoder.dimensions();
    check_frame_sizes(bytes, width, height)?;
    let channels = if decoder.has_alpha() { 4 } else { 3 };
    let size = decoder
        .output_buffer_size()
        .ok_or_else(|| corrupt(SourceFormat::Webp, "frame size overflows"))?;
    let mut samples = vec![0; size];
    decoder.read_image(&mut samples).map_err(bad)?;
    let icc = decoder.icc_profile().ok().flatten();
    let mut image = image_from_samples(SourceFormat::Webp, width, height, channels, samples)?;
    image.icc = icc;
    Ok(image)
}

/// Every VP8/VP8L bitstream in the file (top level, or in an animation frame) must declare a
/// size within the canvas.
pub(super) fn check_frame_sizes(
    bytes: &[u8],
    canvas_w: u32,
    canvas_h: u32,
) -> Result<(), PipelineError> {
    let too_big = |w: u32, h: u32| {
        corrupt(
            SourceFormat::Webp,
            format!("a {w}x{h} frame in a {canvas_w}x{canvas_h} canvas"),
        )
    };
    let check = |kind: &[u8], data: &[u8], max_w: u32, max_h: u32| -> Result<(), PipelineError> {
        if let Some((w, h)) = bitstream_size(kind, data)
            && (w > max_w || h > max_h)
        {
            return Err(too_big(w, h));
        }
        Ok(())
    };
    for (kind, data) in chunks(bytes.get(12..).unwrap_or_default()) {
        match kind {
            b"VP8 " | b"VP8L" => check(kind, data, canvas_w, canvas_h)?,
            b"ANMF" if data.len() >= 16 => {
                let u24 = |at: usize| {
                    u32::from(data[at])
                        | u32::from(data[at + 1]) << 8
                        | u32::from(data[at + 2]) << 16
                };
                let (fw, fh) = (u24(6) + 1, u24(9) + 1);
                if fw > canvas_w || fh > canvas_h {
                    return Err(too_big(fw, fh));
                }
                for (kind, frame) in chunks(&data[16..]) {
                    check(kind, frame, fw, fh)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The RIFF chunks of `bytes` as (fourcc, payload). A chunk whose declared length runs past
/// the end is cut at the end, not skipped: image-webp reads such a chunk to the end of the
/// file too, so its header must still be checked.
fn chunks(mut bytes: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    std::iter::from_fn(move || {
        let kind = bytes.get(..4)?;
        let len = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let end = len.saturating_add(8).min(bytes.len());
        let data = &bytes[8..end];
        let next = len.saturating_add(8).saturating_add(len & 1);
        bytes = bytes.get(next..).unwrap_or_default();
        Some((kind, data))
    })
}

/// The size a VP8 (lossy key frame) or VP8L (lossless) bitstream header declares.
fn bitstream_size(kind: &[u8], data: &[u8]) -> Option<(u32, u32)> {
    match kind {
        b"VP8 " => {
            // 3-byte frame tag, start code 9d 01 2a, then 14-bit width and height.
            if data.get(3..6)? != [0x9d, 0x01, 0x2a] {
                return None;
            }
            let w = u32::from(u16::from_le_bytes(data.get(6..8)?.try_into().ok()?) & 0x3fff);
            let h = u32::from(u16::from_le_bytes(data.get(8..10)?.try_into().ok()?) & 0x3fff);
            Some((w, h))
        }
        b"VP8L" => {
            // Signature 0x2f, then width-1 and height-1 in 14 bits each.
            if *data.first()? != 0x2f {
                return None;
            }
            let bits = u32::from_le_bytes(data.get(1..5)?.try_into().ok()?);
            Some(((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{box_reduce, difference, fixture};
    use super::*;

    /// The size the probe reads (what the limits are checked against).
    fn size_of(bytes: &[u8]) -> (u32, u32) {
        let info = super::super::super::probe(bytes, &Limits::default()).expect("probe");
        (info.width, info.height)
    }

    /// Colour weighted by alpha (alpha kept): what a reduction should preserve where pixels
    /// are partly transparent.
    fn premultiplied(image: &Image) -> Image {
        if image.layout == PixelLayout::Rgb8 {
            return image.clone();
        }
        let data = image
            .data
            .chunks_exact(4)
            .flat_map(|p| {
                let m = |v: u8| ((u32::from(v) * u32::from(p[3]) + 127) / 255) as u8;
                [m(p[0]), m(p[1]), m(p[2]), p[3]]
            })
            .collect();
        Image::new(image.width, image.height, PixelLayout::Rgba8, data)
    }

    /// `image` area-averaged onto `ow` x `oh`: each output pixel the mean of the source area
    /// it covers, partly covered pixels weighted by their share. libwebp's rescaler computes
    /// this (on YUV rows); a `ceil(w / n)` buffer covers the whole source, so for sizes that
    /// `n` does not divide it differs from a box average of n x n blocks.
    fn area_reduce(image: &Image, ow: u32, oh: u32) -> Image {
        let c = image.channels();
        let (w, h) = (image.width as usize, image.height as usize);
        let (ow, oh) = (ow as usize, oh as usize);
        // (source index, weight) per output index along one axis; weights sum to 1.
        let taps = |from: usize, to: usize| -> Vec<Vec<(usize, f64)>> {
            let step = from as f64 / to as f64;
            (0..to)
                .map(|i| {
                    let (start, end) = (i as f64 * step, (i + 1) as f64 * step);
                    (start.floor() as usize..(end.ceil() as usize).min(from))
                        .map(|j| {
                            let overlap = end.min(j as f64 + 1.0) - start.max(j as f64);
                            (j, overlap / step)
                        })
                        .collect()
                })
                .collect()
        };
        let (across, down) = (taps(w, ow), taps(h, oh));
        let mut rows = vec![0f64; ow * h * c];
        for y in 0..h {
            for (x, taps) in across.iter().enumerate() {
                for &(j, weight) in taps {
                    for k in 0..c {
                        rows[(y * ow + x) * c + k] +=
                            weight * f64::from(image.data[(y * w + j) * c + k]);
                    }
                }
            }
        }
        let mut data = vec![0u8; ow * oh * c];
        for (y, taps) in down.iter().enumerate() {
            for x in 0..ow {
                for k in 0..c {
                    let v: f64 = taps
                        .iter()
                        .map(|&(j, weight)| weight * rows[(j * ow + x) * c + k])
                        .sum();
                    data[(y * ow + x) * c + k] = v.round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        Image::new(ow as u32, oh as u32, image.layout, data)
    }

    #[test]
    fn every_scale_matches_the_area_reduced_full_decode() {
        // (fixture, largest mean difference): libwebp averages in YUV before converting (alpha
        // weighted), the reference averages the RGB of the full decode.
        let cases = [
            ("webp_scaled/ladybird.webp", 1.5),
            ("webp_scaled/elephants_odd.webp", 2.25),
            ("webp_scaled/arc_lossy_alpha.webp", 0.25),
            ("webp_scaled/arc_lossless_alpha.webp", 0.25),
        ];
        let limits = Limits::default();
        for (rel, limit) in cases {
            let bytes = fixture(rel);
            let full = decode(&bytes, size_of(&bytes), &limits, 1).expect("full");
            for d in [2, 4, 8] {
                let image = decode(&bytes, size_of(&bytes), &limits, d).expect("scaled");
                let size = (full.width.div_ceil(d), full.height.div_ceil(d));
                assert_eq!((image.width, image.height), size, "{rel} at 1/{d}");
                assert_eq!(image.layout, full.layout, "{rel}");
                assert!(
                    image.whole_picture,
                    "{rel}: the geometry must not look for a partial edge"
                );
                let reference = area_reduce(&premultiplied(&full), size.0, size.1);
                let (mean, max) = difference(&premultiplied(&image), &reference);
                assert!(
                    mean < limit && max < 96,
                    "{rel} at 1/{d}: mean {mean:.3}, max {max}"
                );
            }
        }
        // Where n divides the size, the area average is the n x n box average.
        let bytes = fixture("webp_scaled/ladybird.webp");
        let full = decode(&bytes, size_of(&bytes), &limits, 1).expect("full");
        assert_eq!(
            area_reduce(&full, 600, 375).data,
            box_reduce(&full, 2).data,
            "1200x750 at 1/2"
        );
    }

    /// Through the whole pipeline: a thumbnail of an odd-sized WebP from the scaled decode
    /// looks like the one from the full decode, framing included (no stretch at the edges).
    #[test]
    fn a_thumbnail_from_the_scaled_decode_matches_the_full_one() {
        use super::super::super::{
            EncodeSettings, OutputFormat, Transform, decode_upright, plan, probe, render,
            resize_image,
        };
        let bytes = fixture("webp_scaled/elephants_odd.webp");
        let limits = Limits::default();
        let info = probe(&bytes, &limits).expect("probe");
        let thumb = Transform {
            width: Some(100),
            ..Transform::default()
        };
        let hint = plan(info.oriented_size(), &thumb, &limits)
            .expect("plan")
            .decode_hint();
        let scaled = decode_upright(&bytes, &info, &limits, hint).expect("scaled");
        assert_eq!((scaled.width, scaled.height), (250, 151), "decoded at 1/4");
        let rendered = render(
            &bytes,
            &thumb,
            OutputFormat::Png,
            &limits,
            &EncodeSettings::default(),
        )
        .expect("render");
        let full = decode_upright(&bytes, &info, &limits, Default::default()).expect("full");
        let reference = resize_image(full, &thumb, &limits).expect("resize");
        let png = ::png::Decoder::new(Cursor::new(rendered.bytes));
        let mut reader = png.read_info().expect("png");
        let mut pixels = vec![0; reader.output_buffer_size().expect("size")];
        reader.next_frame(&mut pixels).expect("frame");
        let ours = Image::new(rendered.width, rendered.height, PixelLayout::Rgb8, pixels);
        let (mean, _) = difference(&ours, &reference);
        assert!(
            mean < 2.0,
            "mean difference {mean:.2} from the full-decode render"
        );
    }

    #[test]
    fn half_scale_is_for_large_sources_only() {
        let info = |width, height| ImageInfo {
            format: SourceFormat::Webp,
            width,
            height,
            orientation: 1,
            has_alpha: false,
            frames: 1,
        };
        let hint = |w, h| DecodeHint {
            min_size: Some((w, h)),
            denominator: None,
            ..DecodeHint::default()
        };
        // 4 MP: 1/2 would serve 400 px, but the full decode is cheaper.
        assert_eq!(scale(&info(2560, 1600), hint(400, 250)), 1);
        assert_eq!(scale(&info(2560, 1600), hint(300, 187)), 4);
        // 14.7 MP: 1/2 for 1200 px.
        assert_eq!(scale(&info(5120, 2880), hint(1200, 675)), 2);
        // Forced (benchmarks): as asked.
        let forced = DecodeHint {
            min_size: Some((1, 1)),
            denominator: Some(2),
            ..DecodeHint::default()
        };
        assert_eq!(scale(&info(2560, 1600), forced), 2);
    }

    #[test]
    fn libwebp_decodes_as_image_webp_does() {
        // Lossless is exact; lossy differs only in chroma upsampling (libwebp's "fancy"
        // bilinear one) and rounding.
        let limits = Limits::default();
        for (rel, mean_limit) in [
            ("webp_scaled/arc_lossless_alpha.webp", 0.0),
            ("formats/webp_lossless.webp", 0.0),
            ("webp_scaled/ladybird.webp", 1.0),
            ("webp_scaled/arc_lossy_alpha.webp", 1.0),
        ] {
            let bytes = fixture(rel);
            let ours = decode(&bytes, size_of(&bytes), &limits, 1).expect("libwebp");
            let theirs = first_frame(&bytes, &limits).expect("image-webp");
            let (mean, max) = difference(&ours, &theirs);
            eprintln!("{rel}: mean {mean:.3} max {max}");
            assert!(mean <= mean_limit, "{rel}: mean {mean:.3}, max {max}");
            if mean_limit == 0.0 {
                assert_eq!(ours.data, theirs.data, "{rel}");
            }
        }
    }

    #[test]
    fn the_icc_profile_is_kept_at_every_scale() {
        let bytes = fixture("webp_scaled/p3_alpha_icc.webp");
        let expected = first_frame(&bytes, &Limits::default())
            .expect("image-webp")
            .icc
            .expect("image-webp reads the profile");
        for d in [1, 2, 8] {
            let image = decode(&bytes, size_of(&bytes), &Limits::default(), d).expect("decode");
            assert_eq!(image.icc.as_deref(), Some(&expected[..]), "1/{d}");
        }
    }

    /// The limits were checked against the probe's reading of the header: libwebp reading
    /// another size is refused before its buffer is allocated.
    #[test]
    fn a_size_other_than_the_probed_one_is_refused() {
        let bytes = fixture("webp_scaled/ladybird.webp");
        let err = decode(&bytes, (1200, 751), &Limits::default(), 1).unwrap_err();
        assert!(err.to_string().contains("libwebp reads 1200x750"), "{err}");
    }

    #[test]
    fn an_animation_decodes_its_first_frame_at_full_size() {
        let bytes = fixture("formats/webp_animated.webp");
        let image = decode(&bytes, size_of(&bytes), &Limits::default(), 4).expect("decode");
        assert_eq!((image.width, image.height), (64, 48));
    }

    #[test]
    fn clean_files_pass_the_frame_check() {
        for rel in [
            "formats/webp_lossy.webp",
            "formats/webp_lossless.webp",
            "formats/webp_alpha.webp",
            "formats/webp_animated.webp",
        ] {
            let bytes = fixture(rel);
            let d = WebPDecoder::new(Cursor::new(&bytes[..])).unwrap();
            let (w, h) = d.dimensions();
            check_frame_sizes(&bytes, w, h).unwrap_or_else(|e| panic!("{rel}: {e}"));
        }
    }

    /// Fuzzing found it: a 64x48 canvas whose VP8 frame claims 10560x12140 made image-webp
    /// allocate 128 MB before anything checked it. libwebp's header parse refuses these
    /// (still files); animations go through image-webp behind `check_frame_sizes`.
    #[test]
    fn a_frame_larger_than_its_canvas_is_refused_before_decoding() {
        for rel in [
            "hostile/webp_frame_bigger_than_canvas.webp",
            // The same with the frame's chunk claiming to run past the end of the file.
            "hostile/webp_frame_bigger_overstated.webp",
            // The second fuzzing finding, past the first version of the check.
            "hostile/webp_frame_bigger_second.webp",
        ] {
            let bytes = fixture(rel);
            let err = decode(&bytes, (64, 48), &Limits::default(), 1).unwrap_err();
            let why = err.to_string();
            assert!(
                why.contains("canvas") || why.contains("libwebp header"),
                "{rel}: {err}"
            );
            // image-webp's path checks the frames itself.
            let err = first_frame(&bytes, &Limits::default()).unwrap_err();
            assert!(err.to_string().contains("canvas"), "{rel}: {err}");
        }
    }
}
