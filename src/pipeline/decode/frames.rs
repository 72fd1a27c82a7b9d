//! The frames of an animated GIF or WebP, one at a time, each composited onto the canvas as a
//! viewer shows it: GIF disposal (none, background, previous) and frame sub-rectangles here;
//! WebP blending and disposal by image-webp.
//!
//! Memory is one canvas (plus, for GIF, the saved sub-rectangle of a "previous" disposal and
//! the frame being decoded); a frame handed out is a copy of the canvas that the caller
//! drops once it has resized it. The probe has already checked every frame descriptor, the
//! frame count and the animation's total pixels against the limits.

use std::io::Cursor;
use std::num::NonZeroU64;

use gif::{ColorOutput, DecodeOptions, DisposalMethod, MemoryLimit};
use image_webp::{LoopCount, WebPDecoder};

use super::super::probe::ImageInfo;
use super::super::spec::{Limits, SourceFormat};
use super::super::{Image, PipelineError, PixelLayout};
use super::{corrupt, memory_limit};

/// Viewers show a delay this short (GIF 0 or 1 cs) as 100 ms, and so does gif2webp; WebP's
/// animation encoder refuses a zero duration.
pub(in super::super) const MIN_DELAY_MS: u32 = 10;
pub(in super::super) const SHORT_DELAY_AS_MS: u32 = 100;

/// One composited frame and how long it shows, in milliseconds (GIF's centiseconds x 10).
pub(in super::super) struct Frame {
    pub(in super::super) image: Image,
    pub(in super::super) delay_ms: u32,
}

/// The frames of an animated source, in order.
pub(in super::super) enum Frames<'a> {
    Gif(Box<GifFrames<'a>>),
    Webp(Box<WebpFrames<'a>>),
}

impl<'a> Frames<'a> {
    /// Opens `bytes` (probed as `info`: GIF or WebP) for frame-by-frame decoding.
    pub(in super::super) fn open(
        bytes: &'a [u8],
        info: &ImageInfo,
        limits: &Limits,
    ) -> Result<Frames<'a>, PipelineError> {
        match info.format {
            SourceFormat::Gif => Ok(Frames::Gif(Box::new(GifFrames::open(bytes, limits)?))),
            SourceFormat::Webp => Ok(Frames::Webp(Box::new(WebpFrames::open(
                bytes, info, limits,
            )?))),
            other => Err(PipelineError::Internal(format!(
                "{} has no frames to iterate",
                other.extension()
            ))),
        }
    }

    /// The canvas size (every frame has it).
    #[cfg(test)]
    pub(in super::super) fn size(&self) -> (u32, u32) {
        match self {
            Frames::Gif(g) => (g.width as u32, g.height as u32),
            Frames::Webp(w) => w.decoder.dimensions(),
        }
    }

    /// The next composited frame, `None` after the last.
    pub(in super::super) fn next_frame(&mut self) -> Result<Option<Frame>, PipelineError> {
        let format = match self {
            Frames::Gif(_) => SourceFormat::Gif,
            Frames::Webp(_) => SourceFormat::Webp,
        };
        // As in `decode`: a panic in a codec crate is the source's fault.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match self {
            Frames::Gif(g) => g.next_frame(),
            Frames::Webp(w) => w.next_frame(),
        }))
        .map_err(|_| corrupt(format, "decoder panicked"))?
    }

    /// How many times the animation plays, 0 for forever (WebP's loop count). A GIF's
    /// NETSCAPE2.0 count is of repeats after the first play (browsers and ImageMagick play
    /// n + 1 times, and gif2webp writes n + 1); a GIF without one plays once. Read after the
    /// first frame: GIF's extension comes before it.
    pub(in super::super) fn loop_count(&self) -> u16 {
        match self {
            Frames::Gif(g) => match g.decoder.repeat() {
                gif::Repeat::Infinite => 0,
                gif::Repeat::Finite(n) => n.saturating_add(1),
            },
            Frames::Webp(w) => match w.decoder.loop_count() {
                LoopCount::Forever => 0,
                LoopCount::Times(n) => n.get(),
            },
        }
    }
}

/// GIF through the `gif` crate, composited here.
pub(in super::super) struct GifFrames<'a> {
    decoder: gif::Decoder<Cursor<&'a [u8]>>,
    width: usize,
    height: usize,
    /// RGBA, straight alpha; starts transparent (browsers ignore the background colour).
    canvas: Vec<u8>,
    /// What the last frame asks to happen to its rectangle before the next one is drawn:
    /// (left, top, width, height, disposal, saved pixels for `Previous`).
    pending: Option<(usize, usize, usize, usize, DisposalMethod, Vec<u8>)>,
}

impl<'a> GifFrames<'a> {
    fn open(bytes: &'a [u8], limits: &Limits) -> Result<GifFrames<'a>, PipelineError> {
        let bad = |e: gif::DecodingError| corrupt(SourceFormat::Gif, e);
        let mut options = DecodeOptions::new();
        options.set_color_output(ColorOutput::RGBA);
        // As for the first frame (`gif.rs`): frames inside the screen, and no allocation past
        // one RGBA screen plus slack.
        options.check_frame_consistency(true);
        let screen = bytes.get(6..10).map_or(0, |s| {
            u64::from(u16::from_le_bytes([s[0], s[1]]))
                * u64::from(u16::from_le_bytes([s[2], s[3]]))
        });
        let bytes_allowed = (memory_limit(limits) as u64).min(screen * 4 + (16 << 20));
        let limit = NonZeroU64::new(bytes_allowed)
            .map_or(MemoryLimit::Bytes(NonZeroU64::MIN), MemoryLimit::Bytes);
        options.set_memory_limit(limit);
        let decoder = options.read_info(Cursor::new(bytes)).map_err(bad)?;
        let (width, height) = (usize::from(decoder.width()), usize::from(decoder.height()));
        Ok(GifFrames {
            decoder,
            width,
            height,
            canvas: vec![0; width * height * 4],
            pending: None,
        })
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, PipelineError> {
        let bad = |e: gif::DecodingError| corrupt(SourceFormat::Gif, e);
        let Some(frame) = self.decoder.read_next_frame().map_err(bad)? else {
            return Ok(None);
        };
        let (left, top) = (usize::from(frame.left), usize::from(frame.top));
        let (fw, fh) = (usize::from(frame.width), usize::from(frame.height));
        if frame.buffer.len() != fw * fh * 4 {
            return Err(corrupt(SourceFormat::Gif, "frame buffer size"));
        }
        // Frames are clipped to the screen (the probe refuses frames outside it; clipping
        // keeps this safe whatever it let through).
        let visible_w = fw.min(self.width.saturating_sub(left));
        let visible_h = fh.min(self.height.saturating_sub(top));
        let (width, stride) = (self.width, self.width * 4);

        // The previous frame's disposal, now that the next one is coming.
        if let Some((l, t, w, h, disposal, saved)) = self.pending.take() {
            match disposal {
                DisposalMethod::Background => {
                    for row in self.canvas.chunks_exact_mut(stride).skip(t).take(h) {
                        row[l * 4..(l + w) * 4].fill(0);
                    }
                }
                DisposalMethod::Previous => {
                    let rows = self.canvas.chunks_exact_mut(stride).skip(t).take(h);
                    for (row, saved) in rows.zip(saved.chunks_exact(w * 4)) {
                        row[l * 4..(l + w) * 4].copy_from_slice(saved);
                    }
                }
                DisposalMethod::Any | DisposalMethod::Keep => {}
            }
        }
        let disposal = frame.dispose;
        let saved = if disposal == DisposalMethod::Previous && visible_w > 0 {
            self.canvas
                .chunks_exact(stride)
                .skip(top)
                .take(visible_h)
                .flat_map(|row| &row[left * 4..(left + visible_w) * 4])
                .copied()
                .collect()
        } else {
            Vec::new()
        };
        if visible_w > 0 {
            for (row, src) in frame
                .buffer
                .chunks_exact(fw * 4)
                .take(visible_h)
                .enumerate()
            {
                let at = ((top + row) * width + left) * 4;
                let dst = &mut self.canvas[at..at + visible_w * 4];
                // GIF transparency is one index: its pixels leave the canvas as it is.
                for (d, s) in dst.chunks_exact_mut(4).zip(src.chunks_exact(4)) {
                    if s[3] != 0 {
                        d.copy_from_slice(s);
                    }
                }
            }
        }
        let delay_ms = u32::from(frame.delay) * 10;
        self.pending = Some((left, top, visible_w, visible_h, disposal, saved));
        let image = Image::new(
            width as u32,
            self.height as u32,
            PixelLayout::Rgba8,
            self.canvas.clone(),
        );
        Ok(Some(Frame { image, delay_ms }))
    }
}

/// Animated WebP through image-webp, which composites (alpha blending, dispose to
/// background) onto its own canvas; background is transparent, as browsers show it.
pub(in super::super) struct WebpFrames<'a> {
    decoder: WebPDecoder<Cursor<&'a [u8]>>,
    icc: Option<Vec<u8>>,
    left: u32,
}

impl<'a> WebpFrames<'a> {
    fn open(
        bytes: &'a [u8],
        info: &ImageInfo,
        limits: &Limits,
    ) -> Result<WebpFrames<'a>, PipelineError> {
        let bad = |e: image_webp::DecodingError| corrupt(SourceFormat::Webp, e);
        // Every frame's declared size within the canvas before any decoder sees it.
        super::webp::check_frame_sizes(bytes, info.width, info.height)?;
        let mut decoder = WebPDecoder::new(Cursor::new(bytes)).map_err(bad)?;
        decoder.set_memory_limit(memory_limit(limits));
        if decoder.dimensions() != (info.width, info.height) {
            return Err(corrupt(SourceFormat::Webp, "canvas differs from the probe"));
        }
        if !decoder.is_animated() || decoder.num_frames() == 0 {
            return Err(corrupt(SourceFormat::Webp, "animation without frames"));
        }
        decoder.set_background_color([0, 0, 0, 0]).map_err(bad)?;
        let icc = decoder.icc_profile().ok().flatten();
        let left = decoder.num_frames();
        Ok(WebpFrames { decoder, icc, left })
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, PipelineError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let bad = |e: image_webp::DecodingError| corrupt(SourceFormat::Webp, e);
        let (width, height) = self.decoder.dimensions();
        let size = self
            .decoder
            .output_buffer_size()
            .ok_or_else(|| corrupt(SourceFormat::Webp, "frame size overflows"))?;
        let mut samples = vec![0; size];
        let delay_ms = self.decoder.read_frame(&mut samples).map_err(bad)?;
        let channels = if self.decoder.has_alpha() { 4 } else { 3 };
        let mut image =
            super::image_from_samples(SourceFormat::Webp, width, height, channels, samples)?;
        image.icc.clone_from(&self.icc);
        Ok(Some(Frame { image, delay_ms }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::probe::probe;
    use super::super::test_support::{decode_fixture, fixture, pixel};
    use super::*;

    fn all(rel: &str) -> (Vec<Frame>, u16) {
        let bytes = fixture(rel);
        let limits = Limits::default();
        let info = probe(&bytes, &limits).expect("probe");
        let mut frames = Frames::open(&bytes, &info, &limits).expect("open");
        let mut out = Vec::new();
        while let Some(frame) = frames.next_frame().expect("frame") {
            assert_eq!((frame.image.width, frame.image.height), frames.size());
            out.push(frame);
        }
        (out, frames.loop_count())
    }

    /// A GIF exercising sub-rectangles and all three disposals, written by hand (2-colour
    /// global palette: 0 red, 1 blue), 4x4 screen, 20 cs a frame, looping forever:
    /// frame 1 red 2x2 at (0,0), keep; frame 2 blue 2x2 at (0,0), dispose background;
    /// frame 3 blue 1x1 at (3,3), dispose previous; frame 4 blue 1x1 at (0,3).
    fn disposal_gif() -> Vec<u8> {
        let mut g = b"GIF89a".to_vec();
        g.extend_from_slice(&[4, 0, 4, 0, 0x80, 0, 0]); // global table of 2 entries
        g.extend_from_slice(&[255, 0, 0, 0, 0, 255]);
        g.extend_from_slice(&[0x21, 0xFF, 11]);
        g.extend_from_slice(b"NETSCAPE2.0");
        g.extend_from_slice(&[3, 1, 0, 0, 0]); // loop forever
        let frame = |g: &mut Vec<u8>, rect: [u8; 4], dispose: u8, index: u8| {
            // GCE: disposal in bits 2-4, 20 cs delay.
            g.extend_from_slice(&[0x21, 0xF9, 4, dispose << 2, 20, 0, 0, 0]);
            g.extend_from_slice(&[0x2C, rect[0], 0, rect[1], 0, rect[2], 0, rect[3], 0, 0]);
            // LZW, minimum code size 2: a clear code before every pixel (so no table entry is
            // ever added and codes stay 3 bits), then end.
            let pixels = usize::from(rect[2]) * usize::from(rect[3]);
            let mut codes: Vec<u16> = (0..pixels).flat_map(|_| [4, u16::from(index)]).collect();
            codes.push(5);
            let (mut bits, mut acc, mut out) = (0u32, 0u32, Vec::new());
            for code in codes {
                acc |= u32::from(code) << bits;
                bits += 3;
                while bits >= 8 {
                    out.push(acc as u8);
                    acc >>= 8;
                    bits -= 8;
                }
            }
            if bits > 0 {
                out.push(acc as u8);
            }
            g.push(2);
            g.push(out.len() as u8);
            g.extend_from_slice(&out);
            g.push(0);
        };
        frame(&mut g, [0, 0, 2, 2], 1, 0);
        frame(&mut g, [0, 0, 2, 2], 2, 1);
        frame(&mut g, [3, 3, 1, 1], 3, 1);
        frame(&mut g, [0, 3, 1, 1], 1, 1);
        g.push(0x3B);
        g
    }

    #[test]
    fn gif_disposals_are_applied_between_frames() {
        let bytes = disposal_gif();
        let limits = Limits::default();
        let info = probe(&bytes, &limits).expect("probe");
        assert_eq!(info.frames, 4);
        let mut frames = Frames::open(&bytes, &info, &limits).expect("open");
        let mut seen = Vec::new();
        while let Some(frame) = frames.next_frame().expect("frame") {
            assert_eq!(frame.delay_ms, 200);
            seen.push(frame.image);
        }
        assert_eq!(seen.len(), 4);
        assert_eq!(frames.loop_count(), 0);
        let red = [255, 0, 0, 255];
        let blue = [0, 0, 255, 255];
        let clear = [0, 0, 0, 0];
        // 1: red 2x2 top-left, kept; the rest transparent.
        assert_eq!(pixel(&seen[0], 1, 1), red);
        assert_eq!(pixel(&seen[0], 3, 3), clear);
        // 2: blue over it.
        assert_eq!(pixel(&seen[1], 0, 0), blue);
        // 3: frame 2 disposed to background (transparent), blue dot at (3,3).
        assert_eq!(pixel(&seen[2], 0, 0), clear);
        assert_eq!(pixel(&seen[2], 3, 3), blue);
        // 4: frame 3 disposed to previous (the dot is gone), blue dot at (0,3).
        assert_eq!(pixel(&seen[3], 3, 3), clear);
        assert_eq!(pixel(&seen[3], 0, 3), blue);
    }

    /// ImageMagick's composited frames (`-coalesce`) of a GIF whose second frame is a
    /// sub-rectangle: ours are the same pixels, and the delays and loop count are the file's.
    #[test]
    fn gif_frames_match_imagemagick_coalesce() {
        let (frames, loops) = all("formats/gif_anim_photo.gif");
        assert_eq!(loops, 3);
        assert_eq!(
            frames.iter().map(|f| f.delay_ms).collect::<Vec<_>>(),
            [200, 500, 1000]
        );
        for (i, frame) in frames.iter().enumerate() {
            let rel = format!("formats/ref_gif_anim_photo_gif_{i}.png");
            let reference = decode_fixture(&rel).expect("reference");
            assert_eq!((frame.image.width, frame.image.height), (120, 80));
            for y in 0..80 {
                for x in 0..120 {
                    assert_eq!(
                        pixel(&frame.image, x, y),
                        pixel(&reference, x, y),
                        "{rel} at {x},{y}"
                    );
                }
            }
        }
    }

    #[test]
    fn webp_frames_have_their_durations_and_loop_count() {
        let (frames, loops) = all("formats/webp_anim_photo.webp");
        assert_eq!(loops, 3);
        assert_eq!(
            frames.iter().map(|f| f.delay_ms).collect::<Vec<_>>(),
            [200, 500, 1000]
        );
        // Frame 2 blends a blue square over frame 1's top-left corner; the rest is kept.
        let (a, b) = (&frames[0].image, &frames[1].image);
        let blue = pixel(b, 10, 10);
        assert!(blue[2] > 200 && blue[0] < 60, "{blue:?}");
        let (p, q) = (pixel(a, 100, 60), pixel(b, 100, 60));
        assert!(
            p.iter().zip(q).all(|(x, y)| x.abs_diff(y) < 8),
            "{p:?} {q:?}"
        );
    }

    #[test]
    fn fixtures_give_every_frame_with_its_delay() {
        for rel in [
            "formats/gif_animated.gif",
            "formats/webp_animated.webp",
            "formats/gif_anim_photo.gif",
            "formats/webp_anim_photo.webp",
        ] {
            let bytes = fixture(rel);
            let info = probe(&bytes, &Limits::default()).expect("probe");
            let (frames, _) = all(rel);
            assert_eq!(frames.len() as u32, info.frames, "{rel}");
            assert!(frames.iter().all(|f| f.delay_ms > 0), "{rel}");
            // The animation moves: some frame differs from the first.
            assert!(
                frames.iter().any(|f| f.image.data != frames[0].image.data),
                "{rel}"
            );
        }
    }
}
