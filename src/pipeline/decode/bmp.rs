//! BMP through zune-bmp.

use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;

use super::super::spec::{Limits, SourceFormat};
use super::super::{Image, PipelineError};
use super::{corrupt, image_from_samples, strip_alpha};

pub(super) fn decode(bytes: &[u8], limits: &Limits) -> Result<Image, PipelineError> {
    let bad = |e: zune_bmp::BmpDecoderErrors| corrupt(SourceFormat::Bmp, format!("{e:?}"));
    let max_side = usize::try_from(limits.max_source_pixels.min(1 << 24)).unwrap_or(1 << 24);
    let options = DecoderOptions::default()
        .set_max_width(max_side)
        .set_max_height(max_side);
    let mut decoder = zune_bmp::BmpDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(bad)?;
    let (width, height) = decoder
        .dimensions()
        .ok_or_else(|| corrupt(SourceFormat::Bmp, "no dimensions"))?;
    let channels = match decoder.colorspace() {
        Some(ColorSpace::Luma) => 1,
        Some(ColorSpace::LumaA) => 2,
        Some(ColorSpace::RGB) => 3,
        Some(ColorSpace::RGBA) => 4,
        other => {
            return Err(corrupt(
                SourceFormat::Bmp,
                format!("colour space {other:?}"),
            ));
        }
    };
    let samples = decoder.decode().map_err(bad)?;
    let to_u32 = |v: usize| u32::try_from(v).map_err(|_| corrupt(SourceFormat::Bmp, "size"));
    let image = image_from_samples(
        SourceFormat::Bmp,
        to_u32(width)?,
        to_u32(height)?,
        channels,
        samples,
    )?;
    // Many 32-bit BMPs leave the fourth byte zero ("unused"): that is not a fully transparent
    // picture, it is an opaque one.
    let unused_alpha = channels == 4 && image.data.chunks_exact(4).all(|p| p[3] == 0);
    Ok(if unused_alpha {
        strip_alpha(image)
    } else {
        image
    })
}
