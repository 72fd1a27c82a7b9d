//! Radiance RGBE (`.hdr`) and OpenEXR through the `image` crate's decoders (OpenEXR through the
//! `exr` crate), both linear light in floats, tone-mapped to 8-bit sRGB by [`tone_map`].
//!
//! The operator (README, "HDR and OpenEXR"): colours are taken as linear Rec. 709 / sRGB
//! primaries (EXR's default chromaticities; Radiance's are within a hair of them). Luminance
//! `L = 0.2126 R + 0.7152 G + 0.0722 B`; white point `Lw = max(1, the largest L in the image)`;
//! extended Reinhard (Reinhard et al. 2002, eq. 4) on luminance,
//! `Ld = L (1 + L / Lw²) / (1 + L)`, every channel scaled by `Ld / L` (hue kept), clamped to
//! [0, 1], then the sRGB transfer function. `Lw` maps to white; a picture whose values are all
//! within [0, 1] (an SDR picture stored as floats) comes out unchanged (`Lw = 1` makes `Ld = L`),
//! as ImageMagick or libvips would convert it. No exposure change.
//!
//! EXR alpha is kept; EXR colour is premultiplied by alpha (by the format's convention) and is
//! divided by it first. NaN and negative values become 0, infinities the largest half float.
//!
//! Memory: the decoders work on 32-bit float RGBA, 16 bytes a pixel, and image's EXR decoder
//! holds two such buffers, so [`header`] refuses float sources whose buffers would pass the
//! per-job memory limit, before any pixel. EXR: every part's display and data windows, tile and
//! block sizes are checked from the headers, and the number of parts against `max_frames`.

use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};

use exr::meta::{BlockDescription, MetaData};
use image::codecs::hdr::HdrDecoder;
use image::codecs::openexr::OpenExrDecoder;
use image::{ColorType, ImageDecoder, ImageError};

use super::super::spec::{Limits, SourceFormat};
use super::super::{Image, PipelineError};
use super::{corrupt, image_from_samples, memory_limit};

/// The header facts of an HDR or EXR source.
pub(crate) struct Header {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) has_alpha: bool,
}

/// Bytes a pixel costs while decoding: f32 RGBA, once for Radiance, twice for image's EXR
/// decoder (the exr crate's own buffer, then a copy).
fn bytes_per_pixel(format: SourceFormat) -> u64 {
    if format == SourceFormat::Exr { 32 } else { 16 }
}

fn too_large(why: String) -> PipelineError {
    PipelineError::SourceTooLarge(why)
}

fn check_size(
    format: SourceFormat,
    what: &str,
    (width, height): (u64, u64),
    limits: &Limits,
) -> Result<(), PipelineError> {
    let pixels = width.saturating_mul(height);
    if pixels > limits.max_source_pixels {
        return Err(too_large(format!(
            "{} {what} is {width}x{height} = {pixels} pixels, limit {}",
            format.extension(),
            limits.max_source_pixels
        )));
    }
    Ok(())
}

/// Reads the header of an HDR source, or every part header of an EXR one (no pixel data), and
/// checks them against the limits.
pub(crate) fn header(
    format: SourceFormat,
    bytes: &[u8],
    limits: &Limits,
) -> Result<Header, PipelineError> {
    // The probe runs outside `decode::decode`'s catch_unwind: a panic while parsing hostile
    // headers is the file's fault (422), not an internal error.
    let header = catch_unwind(AssertUnwindSafe(|| read_header(format, bytes, limits)))
        .map_err(|_| corrupt(format, "decoder panicked on the headers"))??;
    let size = (u64::from(header.width), u64::from(header.height));
    check_size(format, "image", size, limits)?;
    let bytes = size.0 * size.1 * bytes_per_pixel(format);
    if bytes > memory_limit(limits) as u64 {
        return Err(too_large(format!(
            "{}: {}x{} needs {bytes} bytes of float buffers, memory limit {}",
            format.extension(),
            header.width,
            header.height,
            memory_limit(limits)
        )));
    }
    Ok(header)
}

fn read_header(
    format: SourceFormat,
    bytes: &[u8],
    limits: &Limits,
) -> Result<Header, PipelineError> {
    Ok(match format {
        SourceFormat::Hdr => {
            let decoder = HdrDecoder::new(Cursor::new(bytes)).map_err(|e| corrupt(format, e))?;
            let (width, height) = decoder.dimensions();
            Header {
                width,
                height,
                has_alpha: false,
            }
        }
        SourceFormat::Exr => exr_header(bytes, limits)?,
        _ => return Err(corrupt(format, "not HDR or EXR")),
    })
}

/// Every part: display and data windows within `max_source_pixels`, one decompressed block
/// (scan-line block or tile, all channels) within the memory limit, and an offset table the
/// file can hold. Answers the part the decoder will read: the first flat one with R, G and B.
fn exr_header(bytes: &[u8], limits: &Limits) -> Result<Header, PipelineError> {
    let format = SourceFormat::Exr;
    let meta =
        MetaData::read_from_buffered(Cursor::new(bytes), false).map_err(|e| corrupt(format, e))?;
    if meta.headers.len() > limits.max_frames as usize {
        return Err(too_large(format!(
            "exr: {} parts, limit {}",
            meta.headers.len(),
            limits.max_frames
        )));
    }
    let mut chosen = None;
    for (index, part) in meta.headers.iter().enumerate() {
        let what = format!("part {index}");
        let display = part.shared_attributes.display_window.size;
        let data = part.layer_size;
        check_size(format, &what, (display.0 as u64, display.1 as u64), limits)?;
        check_size(format, &what, (data.0 as u64, data.1 as u64), limits)?;
        let (block_w, block_h) = match part.blocks {
            BlockDescription::ScanLines => (data.0, part.compression.scan_lines_per_block()),
            BlockDescription::Tiles(tiles) => (tiles.tile_size.0, tiles.tile_size.1),
        };
        let block = (block_w.min(data.0) as u64)
            .saturating_mul(block_h.min(data.1) as u64)
            .saturating_mul(part.channels.bytes_per_pixel as u64);
        if block > memory_limit(limits) as u64 {
            return Err(too_large(format!(
                "exr {what}: one block is {block} bytes, memory limit {}",
                memory_limit(limits)
            )));
        }
        if (part.chunk_count as u64).saturating_mul(8) > bytes.len() as u64 {
            return Err(corrupt(
                format,
                format!("{what} declares {} chunks", part.chunk_count),
            ));
        }
        let has = |name: &str| part.channels.find_index_of_channel(&name.into()).is_some();
        if chosen.is_none() && !part.deep && has("R") && has("G") && has("B") {
            chosen = Some(Header {
                width: display.0 as u32,
                height: display.1 as u32,
                has_alpha: has("A"),
            });
        }
    }
    chosen.ok_or_else(|| corrupt(format, "no flat RGB part"))
}

pub(super) fn decode(
    format: SourceFormat,
    bytes: &[u8],
    limits: &Limits,
) -> Result<Image, PipelineError> {
    let bad = |e: ImageError| corrupt(format, e);
    // The header checks again: the decoders below allocate from these numbers.
    let header = header(format, bytes, limits)?;
    let reader = Cursor::new(bytes);
    let mut decoder: Box<dyn ImageDecoder> = match format {
        SourceFormat::Hdr => Box::new(HdrDecoder::new(reader).map_err(bad)?),
        SourceFormat::Exr => Box::new(OpenExrDecoder::new(reader).map_err(bad)?),
        _ => return Err(corrupt(format, "not HDR or EXR")),
    };
    let mut image_limits = image::Limits::default();
    image_limits.max_alloc = Some(memory_limit(limits) as u64);
    decoder.set_limits(image_limits).map_err(bad)?;
    let (width, height) = decoder.dimensions();
    if (width, height) != (header.width, header.height) {
        return Err(corrupt(format, "decoder and header disagree on the size"));
    }
    let channels = match decoder.color_type() {
        ColorType::Rgb32F => 3,
        ColorType::Rgba32F => 4,
        other => return Err(corrupt(format, format!("colour type {other:?}"))),
    };
    let total = usize::try_from(decoder.total_bytes())
        .ok()
        .filter(|&total| total == width as usize * height as usize * channels * 4)
        .ok_or_else(|| corrupt(format, "unexpected buffer size"))?;
    let mut buffer = vec![0u8; total];
    decoder.read_image_boxed(&mut buffer).map_err(bad)?;
    let floats: Vec<f32> = buffer
        .chunks_exact(4)
        .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    drop(buffer);
    let samples = tone_map(&floats, channels, format == SourceFormat::Exr);
    image_from_samples(format, width, height, channels, samples)
}

/// Largest finite half float: what an infinity in the source counts as.
const HALF_MAX: f32 = 65504.0;

fn sanitize(v: f32) -> f32 {
    if v.is_nan() || v <= 0.0 {
        0.0
    } else {
        v.min(HALF_MAX)
    }
}

/// The operator of the module documentation: interleaved linear RGB or RGBA floats (`channels`
/// 3 or 4; `premultiplied` colour is divided by alpha first) to interleaved 8-bit sRGB, alpha
/// rounded to 8 bits.
pub(super) fn tone_map(floats: &[f32], channels: usize, premultiplied: bool) -> Vec<u8> {
    let straight = |p: &[f32]| -> [f32; 4] {
        let alpha = if channels == 4 {
            sanitize(p[3]).min(1.0)
        } else {
            1.0
        };
        let unpremultiply = if premultiplied && alpha > 0.0 {
            alpha
        } else {
            1.0
        };
        [
            sanitize(p[0] / unpremultiply),
            sanitize(p[1] / unpremultiply),
            sanitize(p[2] / unpremultiply),
            alpha,
        ]
    };
    let luminance = |[r, g, b, _]: [f32; 4]| 0.2126 * r + 0.7152 * g + 0.0722 * b;
    let white = floats
        .chunks_exact(channels)
        .map(|p| luminance(straight(p)))
        .fold(1.0f32, f32::max);
    let white_squared = white * white;
    let mut out = Vec::with_capacity(floats.len());
    for p in floats.chunks_exact(channels) {
        let pixel = straight(p);
        let l = luminance(pixel);
        let scale = if l > 0.0 {
            (1.0 + l / white_squared) / (1.0 + l)
        } else {
            1.0
        };
        for &v in &pixel[..3] {
            out.push(encode_srgb((v * scale).min(1.0)));
        }
        if channels == 4 {
            out.push((pixel[3] * 255.0).round() as u8);
        }
    }
    out
}

/// Linear [0, 1] to an 8-bit sRGB code value (IEC 61966-2-1).
fn encode_srgb(v: f32) -> u8 {
    let v = v.clamp(0.0, 1.0);
    let encoded = if v <= 0.003_130_8 {
        12.92 * v
    } else {
        1.055 * v.powf(1.0 / 2.4) - 0.055
    };
    (encoded * 255.0).round() as u8
}

#[cfg(test)]
mod tests {
    use super::super::super::probe::probe;
    use super::super::test_support::*;
    use super::*;
    use crate::pipeline::PixelLayout;

    #[test]
    fn sdr_range_values_are_only_srgb_encoded() {
        // All within [0, 1]: Lw = 1 and the operator is the identity before the transfer.
        let floats = [0.0, 0.215_861, 1.0, 0.5, 0.5, 0.5];
        assert_eq!(tone_map(&floats, 3, false), [0, 128, 255, 188, 188, 188]);
    }

    #[test]
    fn known_patches_map_where_the_operator_says() {
        // Gray patches 0.18, 1 and 4 (so Lw = 4): Ld = L (1 + L/16) / (1 + L).
        // 0.18 -> 0.1543 -> sRGB 0.4292 -> 109; 1 -> 0.53125 -> 0.7556 -> 193; 4 -> 1 -> 255.
        let floats = [0.18, 0.18, 0.18, 1.0, 1.0, 1.0, 4.0, 4.0, 4.0];
        assert_eq!(
            tone_map(&floats, 3, false),
            [109, 109, 109, 193, 193, 193, 255, 255, 255]
        );
        // Hue kept: a red of luminance 0.2126 * 2 scales its one channel by Ld / L, then clips.
        let red = tone_map(&[2.0, 0.0, 0.0, 4.0, 4.0, 4.0], 3, false);
        let l = 0.2126f32 * 2.0;
        let expected = encode_srgb(2.0 * (1.0 + l / 16.0) / (1.0 + l));
        assert_eq!(red[..3], [expected, 0, 0]);
        // Premultiplied EXR colour is divided by alpha; NaN and negatives are black.
        assert_eq!(
            tone_map(&[0.25, 0.25, 0.25, 0.5, f32::NAN, -1.0, 0.0, 1.0], 4, true),
            [188, 188, 188, 128, 0, 0, 0, 255]
        );
    }

    #[test]
    fn hdr_and_exr_match_an_independent_decode() {
        // hdr_photo.hdr: ImageMagick's own decode as reference (values all within [0, 1], so
        // the operator is the sRGB transfer alone). RGBE keeps 8 bits of mantissa: 1 apart.
        // exr_*.exr: references computed by an independent implementation of the operator in
        // numpy from the same float data (generate.sh); float rounding: 1 apart.
        let cases = [
            ("hdr_photo.hdr", PixelLayout::Rgb8, 1),
            ("hdr_bright.hdr", PixelLayout::Rgb8, 1),
            ("exr_bright.exr", PixelLayout::Rgb8, 1),
            ("exr_alpha_zip.exr", PixelLayout::Rgba8, 1),
            ("exr_half_tiled.exr", PixelLayout::Rgb8, 1),
        ];
        for (name, layout, tolerance) in cases {
            let image = assert_matches_reference(name, tolerance);
            assert_eq!(image.layout, layout, "{name}");
        }
    }

    #[test]
    fn exr_parts_are_all_checked() {
        let bytes = fixture("formats/exr_bright.exr");
        let info = probe(&bytes, &Limits::default()).expect("probe");
        assert_eq!((info.width, info.height, info.has_alpha), (96, 60, false));
        let small = Limits {
            max_source_pixels: 96 * 60 - 1,
            ..Limits::default()
        };
        assert!(matches!(
            probe(&bytes, &small),
            Err(PipelineError::SourceTooLarge(_))
        ));
    }
}
