//! PNG through the `png` crate: palette, 1-16 bit, gray, gray+alpha, tRNS, interlaced; the
//! first (default) image of an APNG.

use std::io::Cursor;

use png::{ColorType, Transformations};

use super::super::spec::{Limits, SourceFormat};
use super::super::{Image, PipelineError};
use super::{corrupt, image_from_samples, memory_limit};

pub(super) fn decode(bytes: &[u8], limits: &Limits) -> Result<Image, PipelineError> {
    let bad = |e: png::DecodingError| corrupt(SourceFormat::Png, e);
    let mut decoder = png::Decoder::new_with_limits(
        Cursor::new(bytes),
        png::Limits {
            bytes: memory_limit(limits),
        },
    );
    // EXPAND: palette -> RGB(A), tRNS -> alpha, 1/2/4-bit gray -> 8-bit; STRIP_16: 16 -> 8.
    decoder.set_transformations(Transformations::EXPAND | Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(bad)?;
    let (color_type, _) = reader.output_color_type();
    let channels = match color_type {
        ColorType::Grayscale => 1,
        ColorType::GrayscaleAlpha => 2,
        ColorType::Rgb => 3,
        ColorType::Rgba => 4,
        ColorType::Indexed => return Err(corrupt(SourceFormat::Png, "palette not expanded")),
    };
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| corrupt(SourceFormat::Png, "frame size overflows"))?;
    let mut samples = vec![0; size];
    let frame = reader.next_frame(&mut samples).map_err(bad)?;
    samples.truncate(frame.buffer_size());
    // A gray profile does not describe the RGB pixels handed on, so only RGB ones are kept.
    let icc = match reader.info().color_type {
        ColorType::Rgb | ColorType::Rgba | ColorType::Indexed => {
            reader.info().icc_profile.as_ref().map(|icc| icc.to_vec())
        }
        ColorType::Grayscale | ColorType::GrayscaleAlpha => None,
    };
    let mut image = image_from_samples(
        SourceFormat::Png,
        frame.width,
        frame.height,
        channels,
        samples,
    )?;
    image.icc = icc;
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::pipeline::PixelLayout;

    #[test]
    fn iccp_profile_is_kept_with_alpha() {
        let image = decode_fixture("color/p3_alpha.png").expect("decode");
        assert_eq!(image.layout, PixelLayout::Rgba8);
        assert!(image.icc.is_some());
        assert_near(pixel(&image, 3, 3), [200, 60, 50, 128], 1, "raw P3 samples");
    }

    #[test]
    fn memory_limit_is_enforced_by_the_decoder() {
        let bytes = fixture("formats/png_rgba.png");
        let tiny = Limits {
            max_source_pixels: 0,
            ..Limits::default()
        };
        // 16 MiB of slack is plenty for a 64x48 image: this one still decodes...
        assert!(decode(&bytes, &tiny).is_ok());
        // ...and the limit itself scales with the allowed pixels.
        assert_eq!(memory_limit(&tiny), 16 << 20);
    }
}
