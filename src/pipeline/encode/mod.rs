//! Encoders: the final pixels to JPEG (jpeg-encoder), PNG (png), lossy WebP (libwebp through
//! the `webp` crate), AVIF (libaom or rav1e at 4:2:0, ravif at 4:4:4 and with alpha: `avif.rs`, `aom.rs`)
//! JPEG XL (libjxl: `jxl.rs`) and GIF (`gif.rs`, palette per frame); animations frame by
//! frame as GIF (`gif.rs`) or WebP (libwebp's animation encoder: `webp_anim.rs`).
//!
//! Owns encoder settings and nothing else. Must never write metadata (no EXIF, XMP, IPTC or
//! ICC: every output is sRGB and carries no GPS), never panic on an encoder failure (that is
//! `Internal`), and never change pixels beyond what a format requires.
//!
//! Images whose colour channels are all equal (for instance after `grayscale`) are written as
//! one-channel JPEG/PNG: the check stops at the first coloured pixel, so it costs nothing on
//! colour images and saves a third of the work and bytes on grey ones.

mod aom;
mod avif;
mod gif;
mod jxl;
mod jxl_ffi;
mod webp_anim;

pub(super) use gif::GifAnimation;
pub(super) use webp_anim::WebpAnimation;

use jpeg_encoder::{ChromaSubsamplingMethod, ColorType, SamplingFactor};

use super::spec::{EncodeSettings, OutputFormat};
use super::{Image, PipelineError, PixelLayout};

/// Encodes `image` as `format` at `quality` (1-100; ignored by PNG).
pub(super) fn encode(
    image: &Image,
    format: OutputFormat,
    quality: u8,
    settings: &EncodeSettings,
) -> Result<Vec<u8>, PipelineError> {
    let expected = image.width as usize * image.height as usize * image.channels();
    if image.width == 0 || image.height == 0 || image.data.len() != expected {
        return Err(PipelineError::Internal(format!(
            "cannot encode a {}x{} {:?} buffer of {} bytes",
            image.width,
            image.height,
            image.layout,
            image.data.len()
        )));
    }
    let quality = quality.clamp(1, 100);
    match format {
        OutputFormat::Jpeg => jpeg(image, quality),
        OutputFormat::Png => png(image, settings.png_compression),
        OutputFormat::Webp => webp(image, quality, settings.webp_method),
        OutputFormat::Avif => avif::encode(image, quality, settings),
        OutputFormat::Jxl => jxl::encode(image, quality, settings.jxl_effort),
        OutputFormat::Gif => gif::encode(image),
    }
}

fn internal(codec: &str, e: impl std::fmt::Display) -> PipelineError {
    PipelineError::Internal(format!("{codec} encoder: {e}"))
}

/// The single grey channel when every pixel has R = G = B (alpha kept alongside when
/// `keep_alpha`), or `None` at the first coloured pixel.
fn gray_plane(image: &Image, keep_alpha: bool) -> Option<Vec<u8>> {
    let channels = image.channels();
    let is_gray = |px: &[u8]| px[0] == px[1] && px[1] == px[2];
    if !image.data.chunks_exact(channels).all(is_gray) {
        return None;
    }
    Some(match (image.layout, keep_alpha) {
        (PixelLayout::Rgba8, true) => image
            .data
            .chunks_exact(4)
            .flat_map(|px| [px[0], px[3]])
            .collect(),
        _ => image.data.chunks_exact(channels).map(|px| px[0]).collect(),
    })
}

/// JPEG, 4:2:0 with box-averaged chroma (less colour aliasing than the crate's default
/// top-left sampling), optimised Huffman tables. Only a JFIF header is written. An `Rgba8`
/// input (the pipeline flattens first) has its alpha ignored.
///
/// Optimised tables make jpeg-encoder 0.7 give up the single interleaved scan: sequential
/// output becomes one non-interleaved scan per component, which zune-jpeg <= 0.5.15 (ours
/// before the 0.5.16-rc3 pin, and what `image` 0.25.10 uses) decodes to garbage with 4:2:0
/// (zune-image#419). So the tables go into a progressive file of two scans per component
/// (DC, then AC 1-63): the same coefficients and the same bytes as optimised sequential, and
/// decoded right by zune-jpeg 0.5.15 and 0.5.16-rc3, jpeg-decoder 0.3 and libjpeg-turbo.
/// jpeg-encoder's default progressive script (4 scans, spectral selection only) is bigger
/// than standard tables. Measured at q80 on tests/fixtures/photos resized to 1000 px wide
/// (Lanczos3), median of 31 runs on the 2-core dev box (timings +-30 % run to run):
///
/// | bytes (encode ms)      | ladybird 1000x625   | dune 1000x625         | elephants 1000x563   |
/// |------------------------|---------------------|-----------------------|----------------------|
/// | standard, interleaved  | 51 892 (6.2)        | 102 982 (6.6)         | 160 110 (6.7)        |
/// | optimised, sequential  | 49 148 -5.3 % (8.7) | 100 837 -2.1 % (10.3) | 156 276 -2.4 % (8.8) |
/// | optimised, prog. 4     | 55 000 +6.0 % (9.0) | 108 763 +5.6 % (10.3) | 161 973 +1.2 % (9.1) |
/// | optimised, prog. 2 (*) | 49 201 -5.2 % (9.0) | 100 839 -2.1 % (10.0) | 156 263 -2.4 % (9.5) |
///
/// (*) used. "sequential" is one non-interleaved scan per component; "prog. 4" is
/// jpeg-encoder's `set_progressive(true)`, "prog. 2" `set_progressive_scans(2)`.
///
/// Decoding the chosen files with zune-jpeg costs ~0.6 ms more than the interleaved
/// baseline ones (1.9-2.8 ms instead of 1.3-2.3 ms: the progressive path buffers
/// coefficients). Test `jpeg_is_progressive_and_decodes_everywhere`.
fn jpeg(image: &Image, quality: u8) -> Result<Vec<u8>, PipelineError> {
    let (Ok(width), Ok(height)) = (u16::try_from(image.width), u16::try_from(image.height)) else {
        return Err(internal(
            "jpeg",
            format!("{}x{} exceeds 65535 px a side", image.width, image.height),
        ));
    };
    let mut out = Vec::with_capacity(image.data.len() / 8);
    let mut encoder = jpeg_encoder::Encoder::new(&mut out, quality);
    encoder.set_sampling_factor(SamplingFactor::R_4_2_0);
    encoder.set_chroma_subsampling_method(ChromaSubsamplingMethod::Average);
    encoder.set_optimized_huffman_tables(true);
    // Two scans per component: DC, then AC 1-63 (see above for why not sequential).
    encoder.set_progressive_scans(2);
    let result = match gray_plane(image, false) {
        Some(gray) => encoder.encode(&gray, width, height, ColorType::Luma),
        None => {
            let color = match image.layout {
                PixelLayout::Rgb8 => ColorType::Rgb,
                PixelLayout::Rgba8 => ColorType::Rgba,
            };
            encoder.encode(&image.data, width, height, color)
        }
    };
    result.map_err(|e| internal("jpeg", e))?;
    Ok(out)
}

/// PNG, 8 bits per channel, adaptive per-row filters, tagged sRGB. Compression 0 is the
/// crate's `Fast` (fdeflate: an order of magnitude faster than zlib's default, for
/// on-the-fly output), 1 `Balanced`, 2 `High`.
fn png(image: &Image, compression: u8) -> Result<Vec<u8>, PipelineError> {
    let gray = gray_plane(image, true);
    let (data, color) = match (&gray, image.layout) {
        (Some(g), PixelLayout::Rgb8) => (g.as_slice(), png::ColorType::Grayscale),
        (Some(g), PixelLayout::Rgba8) => (g.as_slice(), png::ColorType::GrayscaleAlpha),
        (None, PixelLayout::Rgb8) => (image.data.as_slice(), png::ColorType::Rgb),
        (None, PixelLayout::Rgba8) => (image.data.as_slice(), png::ColorType::Rgba),
    };
    let mut out = Vec::with_capacity(image.data.len() / 2);
    let mut encoder = png::Encoder::new(&mut out, image.width, image.height);
    encoder.set_color(color);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(match compression {
        0 => png::Compression::Fast,
        1 => png::Compression::Balanced,
        _ => png::Compression::High,
    });
    // `set_compression` also picks a filter; the adaptive one is what we want at every level.
    encoder.set_filter(png::Filter::Adaptive);
    encoder.set_source_srgb(png::SrgbRenderingIntent::Perceptual);
    let mut writer = encoder.write_header().map_err(|e| internal("png", e))?;
    writer
        .write_image_data(data)
        .map_err(|e| internal("png", e))?;
    writer.finish().map_err(|e| internal("png", e))?;
    Ok(out)
}

/// Lossy WebP through libwebp's advanced API (`WebPConfig`, exposed safely by the `webp`
/// crate), so the operator's `method` (0 fast … 6 small) applies. Alpha, when present, is
/// kept (lossy-compressed alpha plane at full alpha quality). libwebp writes no metadata
/// chunks unless asked.
fn webp(image: &Image, quality: u8, method: u8) -> Result<Vec<u8>, PipelineError> {
    let mut config =
        webp::WebPConfig::new().map_err(|()| internal("webp", "WebPConfig init failed"))?;
    config.lossless = 0;
    config.quality = f32::from(quality);
    config.method = i32::from(method.min(6));
    config.alpha_compression = 1;
    config.alpha_quality = 100;
    let layout = match image.layout {
        PixelLayout::Rgb8 => webp::PixelLayout::Rgb,
        PixelLayout::Rgba8 => webp::PixelLayout::Rgba,
    };
    let encoded = webp::Encoder::new(&image.data, layout, image.width, image.height)
        .encode_advanced(&config)
        .map_err(|e| internal("webp", format!("{e:?}")))?;
    Ok(encoded.to_vec())
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::time::Instant;

    use super::*;

    fn gradient(w: u32, h: u32, layout: PixelLayout) -> Image {
        let c = layout.channels();
        let mut data = Vec::with_capacity((w * h) as usize * c);
        for y in 0..h {
            for x in 0..w {
                data.extend_from_slice(&[(x * 255 / w) as u8, (y * 255 / h) as u8, 128]);
                if c == 4 {
                    data.push(if x < w / 2 { 255 } else { 64 });
                }
            }
        }
        Image::new(w, h, layout, data)
    }

    fn gray(w: u32, h: u32) -> Image {
        let data = (0..w * h).flat_map(|i| [(i % 251) as u8; 3]).collect();
        Image::new(w, h, PixelLayout::Rgb8, data)
    }

    fn settings() -> EncodeSettings {
        EncodeSettings {
            avif_speed: 10,
            rav1e_speed: 10,
            ..EncodeSettings::default()
        }
    }

    fn decode_jpeg(bytes: &[u8]) -> (usize, usize, Vec<u8>, zune_core::colorspace::ColorSpace) {
        let mut decoder = zune_jpeg::JpegDecoder::new(Cursor::new(bytes));
        let pixels = decoder.decode().expect("jpeg decodes");
        let info = decoder.info().expect("jpeg info");
        let cs = decoder.output_colorspace().expect("colorspace");
        (
            usize::from(info.width),
            usize::from(info.height),
            pixels,
            cs,
        )
    }

    fn has_marker(bytes: &[u8], marker: &[u8]) -> bool {
        bytes.windows(marker.len()).any(|w| w == marker)
    }

    #[test]
    fn jpeg_round_trip() {
        let image = gradient(64, 40, PixelLayout::Rgb8);
        let bytes = encode(&image, OutputFormat::Jpeg, 85, &settings()).expect("encode");
        assert_eq!(&bytes[..2], &[0xFF, 0xD8]);
        assert!(!has_marker(&bytes, b"Exif"));
        let (w, h, pixels, _) = decode_jpeg(&bytes);
        assert_eq!((w, h), (64, 40));
        assert_eq!(pixels.len(), 64 * 40 * 3);
        // Close to the source.
        let err: f64 = pixels
            .iter()
            .zip(&image.data)
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).abs())
            .sum::<f64>()
            / pixels.len() as f64;
        assert!(err < 4.0, "mean error {err}");
    }

    #[test]
    fn jpeg_grayscale_is_one_channel_and_rgba_is_accepted() {
        let bytes = encode(&gray(33, 17), OutputFormat::Jpeg, 80, &settings()).expect("encode");
        let (w, h, _, cs) = decode_jpeg(&bytes);
        assert_eq!((w, h), (33, 17));
        let mut decoder = zune_jpeg::JpegDecoder::new(Cursor::new(&bytes));
        decoder.decode_headers().expect("headers");
        assert_eq!(
            decoder.input_colorspace(),
            Some(zune_core::colorspace::ColorSpace::Luma)
        );
        let _ = cs;
        let rgba = gradient(20, 10, PixelLayout::Rgba8);
        let bytes = encode(&rgba, OutputFormat::Jpeg, 80, &settings()).expect("encode");
        assert_eq!(decode_jpeg(&bytes).0, 20);
    }

    /// Regression: optimised Huffman tables make jpeg-encoder write one scan per component,
    /// which zune-jpeg <= 0.5.15 decodes with garbage colours when the luma is subsampled
    /// vertically (zune-image#419). The output is progressive instead (two scans per
    /// component), smaller than standard tables, and decodes right through our decoder and
    /// an independent one (jpeg-decoder).
    #[test]
    fn jpeg_is_progressive_and_decodes_everywhere() {
        // 4:2:0 with a height that is not a multiple of the 16-row MCU.
        let (w, h) = (200, 120);
        let mut image = gradient(w, h, PixelLayout::Rgb8);
        // Some luma texture, so the tables have something to fit.
        for (i, px) in image.data.chunks_exact_mut(3).enumerate() {
            let n = (i * 7919 % 13) as u8;
            px.iter_mut().for_each(|v| *v = v.saturating_add(n));
        }
        let bytes = encode(&image, OutputFormat::Jpeg, 80, &settings()).expect("encode");
        let markers = |m: u8| bytes.windows(2).filter(|p| p == &[0xFF, m]).count();
        assert_eq!(markers(0xC2), 1, "SOF2, progressive");
        assert_eq!(markers(0xC0), 0, "no baseline frame");
        assert_eq!(markers(0xDA), 6, "DC and AC scan for each component");

        // Optimised tables: smaller than the same image with the standard ones.
        let mut standard = Vec::new();
        let mut encoder = jpeg_encoder::Encoder::new(&mut standard, 80);
        encoder.set_sampling_factor(SamplingFactor::R_4_2_0);
        encoder.set_chroma_subsampling_method(ChromaSubsamplingMethod::Average);
        encoder
            .encode(&image.data, w as u16, h as u16, ColorType::Rgb)
            .expect("standard encode");
        assert!(
            bytes.len() < standard.len(),
            "{} >= {}",
            bytes.len(),
            standard.len()
        );

        let mean_error = |a: &[u8], b: &[u8]| {
            assert_eq!(a.len(), b.len());
            a.iter()
                .zip(b)
                .map(|(&x, &y)| f64::from(x.abs_diff(y)))
                .sum::<f64>()
                / a.len() as f64
        };
        let (dw, dh, ours, _) = decode_jpeg(&bytes);
        assert_eq!((dw, dh), (w as usize, h as usize));
        let ours_err = mean_error(&ours, &image.data);
        assert!(ours_err < 6.0, "zune-jpeg mean error {ours_err}");
        let mut independent = jpeg_decoder::Decoder::new(Cursor::new(&bytes));
        let theirs = independent.decode().expect("jpeg-decoder decodes");
        let theirs_err = mean_error(&theirs, &image.data);
        assert!(theirs_err < 6.0, "jpeg-decoder mean error {theirs_err}");
        let between = mean_error(&ours, &theirs);
        assert!(between < 1.5, "decoders disagree by {between}");
    }

    fn decode_png(bytes: &[u8]) -> (u32, u32, png::ColorType, Vec<u8>) {
        let decoder = png::Decoder::new(Cursor::new(bytes));
        let mut reader = decoder.read_info().expect("png header");
        let mut buf = vec![0; reader.output_buffer_size().expect("size")];
        let info = reader.next_frame(&mut buf).expect("png frame");
        buf.truncate(info.buffer_size());
        (info.width, info.height, info.color_type, buf)
    }

    #[test]
    fn png_round_trip_lossless_all_levels() {
        for layout in [PixelLayout::Rgb8, PixelLayout::Rgba8] {
            let image = gradient(50, 30, layout);
            for level in 0..=2 {
                let s = EncodeSettings {
                    png_compression: level,
                    ..settings()
                };
                let bytes = encode(&image, OutputFormat::Png, 80, &s).expect("encode");
                assert!(!has_marker(&bytes, b"eXIf") && !has_marker(&bytes, b"iCCP"));
                let (w, h, color, pixels) = decode_png(&bytes);
                assert_eq!((w, h), (50, 30));
                assert_eq!(
                    color,
                    if layout == PixelLayout::Rgb8 {
                        png::ColorType::Rgb
                    } else {
                        png::ColorType::Rgba
                    }
                );
                assert_eq!(pixels, image.data, "lossless at level {level}");
            }
        }
        let (_, _, color, pixels) =
            decode_png(&encode(&gray(9, 9), OutputFormat::Png, 80, &settings()).expect("encode"));
        assert_eq!(color, png::ColorType::Grayscale);
        assert_eq!(pixels.len(), 81);
    }

    #[test]
    fn webp_round_trip_keeps_alpha() {
        for (layout, alpha) in [(PixelLayout::Rgb8, false), (PixelLayout::Rgba8, true)] {
            let image = gradient(64, 48, layout);
            for method in [0u8, 4, 6] {
                let s = EncodeSettings {
                    webp_method: method,
                    ..settings()
                };
                let bytes = encode(&image, OutputFormat::Webp, 75, &s).expect("encode");
                assert_eq!(&bytes[..4], b"RIFF");
                assert_eq!(&bytes[8..12], b"WEBP");
                assert!(!has_marker(&bytes, b"EXIF") && !has_marker(&bytes, b"XMP "));
                let mut decoder =
                    image_webp::WebPDecoder::new(Cursor::new(&bytes)).expect("webp header");
                assert_eq!(decoder.dimensions(), (64, 48));
                assert_eq!(decoder.has_alpha(), alpha);
                let mut buf = vec![0; decoder.output_buffer_size().expect("size")];
                decoder.read_image(&mut buf).expect("webp decodes");
                if alpha {
                    // Left half opaque, right half alpha 64.
                    assert!(buf.chunks_exact(4).take(10).all(|p| p[3] == 255));
                    assert!(
                        buf.chunks_exact(4)
                            .skip(60)
                            .take(4)
                            .all(|p| p[3].abs_diff(64) < 8)
                    );
                }
            }
        }
    }

    fn avif_ok(bytes: &[u8]) {
        assert!(!bytes.is_empty());
        assert_eq!(&bytes[4..8], b"ftyp");
        assert_eq!(&bytes[8..12], b"avif");
        assert!(!has_marker(bytes, b"Exif"));
    }

    #[test]
    fn avif_produces_ftyp_avif() {
        let rgb = encode(
            &gradient(48, 32, PixelLayout::Rgb8),
            OutputFormat::Avif,
            70,
            &settings(),
        )
        .expect("encode");
        avif_ok(&rgb);
        let rgba = encode(
            &gradient(48, 32, PixelLayout::Rgba8),
            OutputFormat::Avif,
            70,
            &settings(),
        )
        .expect("encode");
        avif_ok(&rgba);
        // The alpha plane makes the file carry an auxiliary alpha item.
        assert!(has_marker(&rgba, b"auxC"));
        assert!(!has_marker(&rgb, b"auxC"));
    }

    /// A bare JPEG XL codestream (signature FF 0A, no container, so no metadata boxes);
    /// lossless at q=100 is larger than lossy at 80 and both encode RGB, RGBA and grey.
    /// Pixels are checked against djxl in tests/integration/formats.rs.
    #[test]
    fn jxl_is_a_bare_codestream_lossless_at_100() {
        for layout in [PixelLayout::Rgb8, PixelLayout::Rgba8] {
            let image = gradient(64, 40, layout);
            let lossy = encode(&image, OutputFormat::Jxl, 80, &settings()).expect("encode");
            let lossless = encode(&image, OutputFormat::Jxl, 100, &settings()).expect("encode");
            for bytes in [&lossy, &lossless] {
                assert_eq!(&bytes[..2], &[0xFF, 0x0A], "{layout:?}");
                assert!(!has_marker(bytes, b"Exif") && !has_marker(bytes, b"jbrd"));
            }
            assert_ne!(lossy, lossless);
        }
        let bytes = encode(&gray(33, 17), OutputFormat::Jxl, 100, &settings()).expect("encode");
        assert_eq!(&bytes[..2], &[0xFF, 0x0A]);
    }

    #[test]
    fn one_pixel_images_encode() {
        for layout in [PixelLayout::Rgb8, PixelLayout::Rgba8] {
            let image = gradient(1, 1, layout);
            for format in [
                OutputFormat::Jpeg,
                OutputFormat::Png,
                OutputFormat::Webp,
                OutputFormat::Avif,
                OutputFormat::Jxl,
                OutputFormat::Gif,
            ] {
                let bytes = encode(&image, format, 80, &settings()).expect("encode");
                assert!(!bytes.is_empty(), "{format} {layout:?}");
            }
        }
    }

    #[test]
    fn out_of_range_settings_do_not_panic() {
        let s = EncodeSettings {
            avif_speed: 0,
            rav1e_speed: 0,
            avif_encoder: super::super::AvifEncoder::Aom,
            avif_chroma: super::super::AvifChroma::Yuv420,
            avif_bit_depth: 12,
            webp_method: 99,
            png_compression: 7,
            jxl_effort: 0,
        };
        let image = gradient(8, 8, PixelLayout::Rgb8);
        for format in [
            OutputFormat::Jpeg,
            OutputFormat::Png,
            OutputFormat::Webp,
            OutputFormat::Avif,
            OutputFormat::Jxl,
        ] {
            assert!(encode(&image, format, 0, &s).is_ok(), "{format}");
        }
        let bad = Image {
            width: 4,
            height: 4,
            layout: PixelLayout::Rgb8,
            data: vec![0; 5],
            icc: None,
            whole_picture: false,
        };
        assert!(matches!(
            encode(&bad, OutputFormat::Png, 80, &s),
            Err(PipelineError::Internal(_))
        ));
    }

    /// Rough timings for 1000x750; run with `cargo test --release -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing report, not a check"]
    fn timings_1000x750() {
        let mut image = gradient(1000, 750, PixelLayout::Rgb8);
        // Add texture so the encoders have real work.
        let mut seed = 7u32;
        for v in image.data.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            *v = v.wrapping_add((seed % 24) as u8);
        }
        let s = EncodeSettings::default();
        for format in [
            OutputFormat::Jpeg,
            OutputFormat::Png,
            OutputFormat::Webp,
            OutputFormat::Avif,
        ] {
            // Best of 5 (shared machine), one run for AVIF.
            let runs = if format == OutputFormat::Avif { 1 } else { 5 };
            let mut best = None;
            let mut size = 0;
            for _ in 0..runs {
                let start = Instant::now();
                let bytes = encode(&image, format, 80, &s).expect("encode");
                let took = start.elapsed();
                size = bytes.len();
                best = Some(best.map_or(took, |b: std::time::Duration| b.min(took)));
            }
            println!("{format}: {best:?}, {size} bytes");
        }
    }
}
