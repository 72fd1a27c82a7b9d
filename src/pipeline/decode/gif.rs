//! GIF through the `gif` crate: the first frame composited onto a transparent canvas of the
//! logical screen size.

use std::io::Cursor;
use std::num::NonZeroU64;

use gif::{ColorOutput, DecodeOptions, MemoryLimit};

use super::super::spec::{Limits, SourceFormat};
use super::super::{Image, PipelineError, PixelLayout};
use super::{corrupt, memory_limit, strip_alpha};

pub(super) fn decode(bytes: &[u8], limits: &Limits) -> Result<Image, PipelineError> {
    let bad = |e: gif::DecodingError| corrupt(SourceFormat::Gif, e);
    let mut options = DecodeOptions::new();
    options.set_color_output(ColorOutput::RGBA);
    // A frame is sized by its own descriptor, not by the screen: the probe refuses frames
    // outside the screen, and the decoder is told to as well, with a memory limit no larger
    // than one RGBA screen (plus slack for metadata), so nothing here can allocate past it.
    options.check_frame_consistency(true);
    let screen = bytes.get(6..10).map_or(0, |s| {
        u64::from(u16::from_le_bytes([s[0], s[1]])) * u64::from(u16::from_le_bytes([s[2], s[3]]))
    });
    let bytes_allowed = (memory_limit(limits) as u64).min(screen * 4 + (16 << 20));
    let limit = NonZeroU64::new(bytes_allowed)
        .map_or(MemoryLimit::Bytes(NonZeroU64::MIN), MemoryLimit::Bytes);
    options.set_memory_limit(limit);
    let mut decoder = options.read_info(Cursor::new(bytes)).map_err(bad)?;
    let (width, height) = (usize::from(decoder.width()), usize::from(decoder.height()));
    let frame = decoder
        .read_next_frame()
        .map_err(bad)?
        .ok_or_else(|| corrupt(SourceFormat::Gif, "no frame"))?;
    let (left, top) = (usize::from(frame.left), usize::from(frame.top));
    let frame_width = usize::from(frame.width);
    if frame.buffer.len() != frame_width * usize::from(frame.height) * 4 {
        return Err(corrupt(SourceFormat::Gif, "frame buffer size"));
    }
    // Browsers show what is under a GIF's transparent pixels (the background colour is
    // ignored in practice), so the canvas starts transparent.
    let mut canvas = vec![0u8; width * height * 4];
    if frame_width > 0 {
        for (row, src) in frame.buffer.chunks_exact(frame_width * 4).enumerate() {
            let y = top + row;
            if y >= height {
                break;
            }
            // Frames may hang over the right edge of the screen: clip them.
            let visible = frame_width.min(width.saturating_sub(left));
            let dst_start = (y * width + left) * 4;
            let dst = &mut canvas[dst_start..dst_start + visible * 4];
            for (d, s) in dst.chunks_exact_mut(4).zip(src.chunks_exact(4)) {
                if s[3] != 0 {
                    d.copy_from_slice(s);
                }
            }
        }
    }
    let image = Image::new(
        u32::from(decoder.width()),
        u32::from(decoder.height()),
        PixelLayout::Rgba8,
        canvas,
    );
    let opaque = image.data.chunks_exact(4).all(|p| p[3] == 255);
    Ok(if opaque { strip_alpha(image) } else { image })
}
