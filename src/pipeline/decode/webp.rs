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
    // image-webp sizes a frame's buffer from the frame's own header, which its memory limit
    // does not cover: a frame claiming more than the canvas (the size the limits were checked
    // against) is refused before it can allocate (found by fuzzing).
    check_frame_sizes(bytes, width, height)?;
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

/// Every VP8/VP8L bitstream in the file (top level, or in an animation frame) must declare a
/// size within the canvas.
fn check_frame_sizes(bytes: &[u8], canvas_w: u32, canvas_h: u32) -> Result<(), PipelineError> {
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
    use super::*;

    fn fixture(rel: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/{rel}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
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
    /// allocate 128 MB before anything checked it.
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
            let err = decode(&bytes, &Limits::default()).unwrap_err();
            assert!(err.to_string().contains("canvas"), "{rel}: {err}");
        }
    }
}
