//! QOI, PNM (PBM/PGM/PPM/PAM, binary and plain) and TGA through the `image` crate's decoders.
//!
//! Constructing one of these decoders reads the header only, so the probe uses the same code
//! as the decode ([`header`]); the pixel buffer is allocated here, after the probe has checked
//! the declared size against the limits, and only as large as the header says.

use std::io::Cursor;

use image::codecs::{pnm::PnmDecoder, qoi::QoiDecoder, tga::TgaDecoder};
use image::{ColorType, ImageDecoder, ImageError};

use super::super::spec::{Limits, SourceFormat};
use super::super::{Image, PipelineError};
use super::{corrupt, image_from_samples, memory_limit, to_8_bit};

/// The header facts of a QOI, PNM or TGA source.
pub(crate) struct Header {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) has_alpha: bool,
}

fn open(format: SourceFormat, bytes: &[u8]) -> Result<Box<dyn ImageDecoder + '_>, PipelineError> {
    let bad = |e: ImageError| corrupt(format, e);
    let reader = Cursor::new(bytes);
    Ok(match format {
        SourceFormat::Qoi => Box::new(QoiDecoder::new(reader).map_err(bad)?),
        SourceFormat::Pnm => Box::new(PnmDecoder::new(reader).map_err(bad)?),
        SourceFormat::Tga => Box::new(TgaDecoder::new(reader).map_err(bad)?),
        _ => return Err(corrupt(format, "not an image-rs format")),
    })
}

/// Reads the header of a QOI, PNM or TGA source (no pixel data).
pub(crate) fn header(format: SourceFormat, bytes: &[u8]) -> Result<Header, PipelineError> {
    let decoder = open(format, bytes)?;
    let (width, height) = decoder.dimensions();
    Ok(Header {
        width,
        height,
        has_alpha: decoder.color_type().has_alpha(),
    })
}

pub(super) fn decode(
    format: SourceFormat,
    bytes: &[u8],
    limits: &Limits,
) -> Result<Image, PipelineError> {
    let bad = |e: ImageError| corrupt(format, e);
    let mut decoder = open(format, bytes)?;
    let budget = memory_limit(limits);
    let mut image_limits = image::Limits::default();
    image_limits.max_alloc = Some(budget as u64);
    decoder.set_limits(image_limits).map_err(bad)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > limits.max_source_pixels {
        return Err(PipelineError::SourceTooLarge(format!(
            "{}: {width}x{height}",
            format.extension()
        )));
    }
    let total = usize::try_from(decoder.total_bytes())
        .ok()
        .filter(|&total| total <= budget)
        .ok_or_else(|| corrupt(format, "frame larger than the memory limit"))?;
    let color = decoder.color_type();
    let mut buffer = vec![0u8; total];
    decoder.read_image_boxed(&mut buffer).map_err(bad)?;
    let channels = usize::from(color.channel_count());
    let samples = match color {
        ColorType::L8 | ColorType::La8 | ColorType::Rgb8 | ColorType::Rgba8 => buffer,
        // 16-bit PNM (maxval above 255): native-endian u16 samples, rounded to 8 bits.
        ColorType::L16 | ColorType::La16 | ColorType::Rgb16 | ColorType::Rgba16 => buffer
            .chunks_exact(2)
            .map(|b| to_8_bit(u16::from_ne_bytes([b[0], b[1]])))
            .collect(),
        other => return Err(corrupt(format, format!("colour type {other:?}"))),
    };
    image_from_samples(format, width, height, channels, samples)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use crate::pipeline::PixelLayout;

    #[test]
    fn qoi_pnm_and_tga_match_an_independent_decode() {
        // (fixture, layout): every one is lossless, so the match is exact, except the 16-bit
        // PGM, whose samples are rounded to 8 bits (ImageMagick and we may differ by one).
        let cases = [
            ("qoi_photo.qoi", PixelLayout::Rgb8, 0),
            ("qoi_alpha.qoi", PixelLayout::Rgba8, 0),
            ("pnm_photo.ppm", PixelLayout::Rgb8, 0),
            ("pnm_gray.pgm", PixelLayout::Rgb8, 0),
            ("pnm_gray16.pgm", PixelLayout::Rgb8, 1),
            ("pnm_bitmap.pbm", PixelLayout::Rgb8, 0),
            ("pnm_plain.ppm", PixelLayout::Rgb8, 0),
            ("pnm_alpha.pam", PixelLayout::Rgba8, 0),
            ("tga_photo.tga", PixelLayout::Rgb8, 0),
            ("tga_rle_alpha.tga", PixelLayout::Rgba8, 0),
            ("tga_palette.tga", PixelLayout::Rgb8, 0),
            ("tga_bottom_up.tga", PixelLayout::Rgb8, 0),
        ];
        for (name, layout, tolerance) in cases {
            let image = assert_matches_reference(name, tolerance);
            assert_eq!(image.layout, layout, "{name}");
        }
    }
}
