//! WebP through image-webp: lossy, lossless, alpha; the first frame of an animation.

use std::io::Cursor;

use image_webp::WebPDecoder;

use super::super::spec::{Limits, SourceFormat};
use super::super::{Image, PipelineError};
use super::{corrupt, image_from_samples, memory_limit};

pub(super) fn decode(bytes: &[u8], limits: &Limits) -> Result<Image, PipelineError> {
    let bad = |e: image_webp::DecodingError| corrupt(SourceFormat::Webp, e);
    let mut decoder = WebPDecoder::new(Cursor::new(bytes)).map_err(bad)?;
    decoder.set_memory_limit(memory_limit(limits));
    // image-webp unwraps the first ANMF chunk of an "animated" file: refuse one without.
    if decoder.is_animated() && decoder.num_frames() == 0 {
        return Err(corrupt(SourceFormat::Webp, "animation without frames"));
    }
    let (width, height) = decoder.dimensions();
    let channels = if decoder.has_alpha() { 4 } else { 3 };
    let size = decoder
        .output_buffer_size()
        .ok_or_else(|| corrupt(SourceFormat::Webp, "frame size overflows"))?;
    let mut samples = vec![0; size];
    decoder.read_image(&mut samples).map_err(bad)?;
    // A broken ICCP chunk loses the profile, not the image.
    let icc = decoder.icc_profile().ok().flatten();
    let mut image = image_from_samples(SourceFormat::Webp, width, height, channels, samples)?;
    image.icc = icc;
    Ok(image)
}
