//! JPEG XL through jxl-oxide (pure Rust): bare codestreams and containers, lossy (VarDCT/XYB),
//! lossless (Modular) and recompressed JPEGs, 8 to 16-bit and float samples, gray or RGB, with
//! or without alpha. Animated files answer their first frame.
//!
//! Orientation: the codestream has its own orientation field and jxl-oxide applies it while
//! rendering, so [`header`] reports the oriented size and the probe leaves EXIF orientation at
//! 1 (an `Exif` box in the container is not read: the codestream field is authoritative).
//!
//! Colour: a source described by an enumerated colour encoding (sRGB, Display P3, Rec. 2100
//! PQ/HLG...) is rendered to sRGB by jxl-oxide itself, which needs no CMS for those. A source
//! with an embedded ICC profile is rendered in that profile's space when it can be (lossless
//! files; lossy ones whose profile jxl-oxide reads as an enumerated encoding) and the profile
//! describing the rendered pixels goes to `Image::icc` for `color::to_srgb`, as for PNG or JPEG.
//! A lossy file with a profile jxl-oxide cannot turn into an encoding is rendered to sRGB (the
//! closest jxl-oxide gets without a CMS). CMYK (a black extra channel) is refused.

use std::panic::{AssertUnwindSafe, catch_unwind};

use jxl_oxide::color::ColourEncoding;
use jxl_oxide::{
    AllocTracker, EnumColourEncoding, InitializeResult, JxlImage, JxlThreadPool, PixelFormat,
    RenderingIntent,
};

use super::super::spec::{Limits, SourceFormat};
use super::super::{Image, PipelineError};
use super::{corrupt, image_from_samples, memory_limit};

/// The header facts of a JPEG XL source.
pub(crate) struct Header {
    /// Oriented width (jxl-oxide applies the orientation field while rendering).
    pub(crate) width: u32,
    /// Oriented height.
    pub(crate) height: u32,
    pub(crate) has_alpha: bool,
    /// Keyframes (animation frames) found in the file.
    pub(crate) frames: u32,
}

fn bad(e: impl std::fmt::Display) -> PipelineError {
    corrupt(SourceFormat::Jxl, e)
}

/// Parses the image header and every frame header and table of contents (jxl-oxide keeps the
/// frame data for a later render but decodes no pixels here). Memory is tracked against the
/// per-job limit from the start; no thread pool of its own.
fn open(bytes: &[u8], limits: &Limits) -> Result<JxlImage, PipelineError> {
    let mut uninit = JxlImage::builder()
        .pool(JxlThreadPool::none())
        .alloc_tracker(AllocTracker::with_limit(memory_limit(limits)))
        .build_uninit();
    let mut rest = bytes;
    let mut image = loop {
        let used = uninit.feed_bytes(rest).map_err(bad)?;
        rest = &rest[used..];
        match uninit.try_init().map_err(bad)? {
            InitializeResult::Initialized(image) => break image,
            InitializeResult::NeedMoreData(more) if used > 0 && !rest.is_empty() => uninit = more,
            InitializeResult::NeedMoreData(_) => return Err(bad("truncated header")),
        }
    };
    while !rest.is_empty() {
        let used = image.feed_bytes(rest).map_err(bad)?;
        if used == 0 {
            break;
        }
        rest = &rest[used..];
    }
    image.finalize().map_err(bad)?;
    Ok(image)
}

/// The codestream's first bytes: the bare codestream, or the start of the container's `jxlc`
/// box, or of its `jxlp` boxes (each after its 4-byte index) in order. At most `want` bytes.
fn codestream_prefix(bytes: &[u8], want: usize) -> Vec<u8> {
    if !bytes.starts_with(super::super::probe::JXL_CONTAINER) {
        return bytes[..bytes.len().min(want)].to_vec();
    }
    let mut out = Vec::new();
    let mut rest = bytes;
    while out.len() < want && rest.len() >= 8 {
        let size = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as u64;
        let kind = &rest[4..8];
        let (header, size) = match size {
            1 if rest.len() >= 16 => (
                16,
                u64::from_be_bytes(rest[8..16].try_into().unwrap_or([0; 8])),
            ),
            0 => (8, rest.len() as u64),
            _ => (8, size),
        };
        if size < header as u64 {
            break;
        }
        let end = usize::try_from(size).unwrap_or(usize::MAX).min(rest.len());
        let payload = &rest[header.min(end)..end];
        let payload = match kind {
            b"jxlc" => payload,
            b"jxlp" => payload.get(4..).unwrap_or(&[]),
            _ => &[],
        };
        out.extend_from_slice(&payload[..payload.len().min(want - out.len())]);
        rest = &rest[end..];
    }
    out
}

/// LSB-first bit reader over the codestream's first bytes (ISO/IEC 18181-1 reads every field
/// least significant bit first).
struct Bits<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn read(&mut self, n: usize) -> Option<u64> {
        let mut value = 0;
        for i in 0..n {
            let byte = *self.bytes.get(self.at / 8)?;
            value |= u64::from((byte >> (self.at % 8)) & 1) << i;
            self.at += 1;
        }
        Some(value)
    }

    /// SizeHeader's U32 distribution for a dimension minus one: Bits(9), Bits(13), Bits(18) or
    /// Bits(30), chosen by a 2-bit selector.
    fn dimension(&mut self) -> Option<u64> {
        let bits = [9, 13, 18, 30][self.read(2)? as usize];
        Some(self.read(bits)? + 1)
    }
}

/// The declared size from the codestream's SizeHeader (signature `FF 0A`, then `small`, height,
/// ratio and width), read by hand so that a huge declaration is refused before jxl-oxide
/// parses frame headers sized from it. Unoriented; the pixel count is what matters.
fn declared_size(bytes: &[u8]) -> Option<(u64, u64)> {
    let prefix = codestream_prefix(bytes, 16);
    let mut bits = Bits {
        bytes: prefix.strip_prefix(&[0xFF, 0x0A])?,
        at: 0,
    };
    let small = bits.read(1)? == 1;
    let height = if small {
        (bits.read(5)? + 1) * 8
    } else {
        bits.dimension()?
    };
    let width = match bits.read(3)? {
        0 if small => (bits.read(5)? + 1) * 8,
        0 => bits.dimension()?,
        ratio => {
            let (num, den) =
                [(1, 1), (12, 10), (4, 3), (3, 2), (16, 9), (5, 4), (2, 1)][ratio as usize - 1];
            height * num / den
        }
    };
    Some((width, height))
}

/// Reads the headers and checks the image and every loaded frame (frames may be larger than
/// the image when cropped) against `max_source_pixels`; counts the keyframes for `max_frames`.
pub(crate) fn header(bytes: &[u8], limits: &Limits) -> Result<Header, PipelineError> {
    let (width, height) = declared_size(bytes).ok_or_else(|| bad("truncated size header"))?;
    check_size("image", width, height, limits)?;
    // The probe runs outside `decode::decode`'s catch_unwind: a panic while parsing hostile
    // headers is the file's fault (422), not an internal error.
    let image = catch_unwind(AssertUnwindSafe(|| open(bytes, limits)))
        .map_err(|_| bad("decoder panicked on the headers"))??;
    check_size("image", image.width(), image.height(), limits)?;
    let keyframes = image.num_loaded_keyframes();
    for index in 0..keyframes {
        if let Some(frame) = image.frame_header(index) {
            check_size("frame", frame.width, frame.height, limits)?;
        }
    }
    let metadata = &image.image_header().metadata;
    Ok(Header {
        width: image.width(),
        height: image.height(),
        has_alpha: metadata.ec_info.iter().any(|ec| ec.is_alpha()),
        frames: u32::try_from(keyframes).unwrap_or(u32::MAX),
    })
}

fn check_size(
    what: &str,
    width: impl Into<u64>,
    height: impl Into<u64>,
    limits: &Limits,
) -> Result<(), PipelineError> {
    let (width, height) = (width.into(), height.into());
    let pixels = width.saturating_mul(height);
    if pixels > limits.max_source_pixels {
        return Err(PipelineError::SourceTooLarge(format!(
            "jxl {what} is {width}x{height} = {pixels} pixels, limit {}",
            limits.max_source_pixels
        )));
    }
    Ok(())
}

/// Renders the first keyframe, oriented, to 8-bit samples.
pub(super) fn decode(bytes: &[u8], limits: &Limits) -> Result<Image, PipelineError> {
    let (width, height) = declared_size(bytes).ok_or_else(|| bad("truncated size header"))?;
    check_size("image", width, height, limits)?;
    let mut image = open(bytes, limits)?;
    check_size("image", image.width(), image.height(), limits)?;
    if image.num_loaded_keyframes() == 0 {
        return Err(bad("truncated: no complete frame"));
    }
    let metadata = &image.image_header().metadata;
    let gray = metadata.grayscale();
    let icc = match metadata.colour_encoding {
        ColourEncoding::Enum(_) => {
            let srgb = if gray {
                EnumColourEncoding::gray_srgb(RenderingIntent::Relative)
            } else {
                EnumColourEncoding::srgb(RenderingIntent::Relative)
            };
            image.request_color_encoding(srgb);
            None
        }
        // A gray profile cannot be applied to the RGB samples the pipeline works on: its gray
        // levels are kept as they are.
        ColourEncoding::IccProfile(_) if gray => None,
        ColourEncoding::IccProfile(_) => Some(image.rendered_icc()),
    };
    let channels = match image.pixel_format() {
        PixelFormat::Gray => 1,
        PixelFormat::Graya => 2,
        PixelFormat::Rgb => 3,
        PixelFormat::Rgba => 4,
        PixelFormat::Cmyk | PixelFormat::Cmyka => return Err(bad("CMYK is not supported")),
    };
    let render = image.render_frame(0).map_err(bad)?;
    let mut stream = render.stream();
    let (width, height) = (stream.width(), stream.height());
    if stream.channels() as usize != channels {
        return Err(bad(format!(
            "{} channels rendered, {channels} expected",
            stream.channels()
        )));
    }
    let mut samples = vec![0u8; width as usize * height as usize * channels];
    let written = stream.write_to_buffer(&mut samples);
    if written != samples.len() {
        return Err(bad(format!(
            "{written} samples rendered for {width}x{height}"
        )));
    }
    let mut decoded = image_from_samples(SourceFormat::Jxl, width, height, channels, samples)?;
    decoded.icc = icc;
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::super::super::probe::probe;
    use super::super::test_support::*;
    use super::*;
    use crate::pipeline::PixelLayout;

    #[test]
    fn jxl_matches_djxl() {
        // (fixture, layout, tolerance). References are djxl's own decodes (libjxl 0.7) to PNG.
        // Lossless and the JPEG transcode are exact up to rounding; the lossy ones differ by
        // the float pipelines of two decoders (XYB, then sRGB transfer) plus 8-bit rounding.
        let cases = [
            ("jxl_lossy.jxl", PixelLayout::Rgb8, 3),
            ("jxl_lossless_alpha.jxl", PixelLayout::Rgba8, 0),
            ("jxl_from_jpeg.jxl", PixelLayout::Rgb8, 3),
            ("jxl_16bit.jxl", PixelLayout::Rgb8, 1),
            ("jxl_gray.jxl", PixelLayout::Rgb8, 1),
            ("jxl_orient6.jxl", PixelLayout::Rgb8, 3),
            ("jxl_animated.jxl", PixelLayout::Rgba8, 0),
        ];
        for (name, layout, tolerance) in cases {
            let image = assert_matches_reference(name, tolerance);
            assert_eq!(image.layout, layout, "{name}");
        }
    }

    #[test]
    fn orientation_is_applied_once() {
        // jxl_orient6.jxl stores the 96x60 photo turned a quarter (60x96, JPEG-compressed)
        // with orientation 6: displayed, it is the 96x60 photo again. The probe reports the
        // displayed size with EXIF orientation 1, so the pipeline does not turn it again.
        let bytes = fixture("formats/jxl_orient6.jxl");
        let info = probe(&bytes, &Limits::default()).expect("probe");
        assert_eq!((info.width, info.height, info.orientation), (96, 60, 1));
        let image = decode_fixture("formats/jxl_orient6.jxl").expect("decode");
        let upright = decode_fixture("formats/jxl_lossless_photo.jxl").expect("decode");
        assert_eq!((image.width, image.height), (96, 60));
        // Upright, only JPEG error apart (turned or mirrored, the photo differs by ~40 mean).
        let (mean, _) = difference(&image, &upright);
        assert!(mean < 4.0, "mean difference {mean}");
    }

    #[test]
    fn animated_jxl_counts_its_frames() {
        let bytes = fixture("formats/jxl_animated.jxl");
        let limits = Limits {
            max_frames: 2,
            ..Limits::default()
        };
        let header = header(&bytes, &limits).expect("header");
        assert_eq!(header.frames, 3);
        assert!(matches!(
            probe(&bytes, &limits),
            Err(PipelineError::SourceTooLarge(_))
        ));
    }
}
