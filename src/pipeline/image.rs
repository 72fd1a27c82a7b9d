//! The in-memory pixel buffer passed between pipeline stages.

use super::spec::OutputFormat;

/// Interleaved 8-bit layouts. Every decoder produces one of these; alpha is straight
/// (not premultiplied) between stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PixelLayout {
    Rgb8,
    Rgba8,
}

impl PixelLayout {
    pub(crate) fn channels(self) -> usize {
        match self {
            PixelLayout::Rgb8 => 3,
            PixelLayout::Rgba8 => 4,
        }
    }
}

/// A decoded image. Invariant: `data.len() == width * height * layout.channels()`.
#[derive(Debug, Clone)]
pub struct Image {
    pub width: u32,
    pub height: u32,
    pub(crate) layout: PixelLayout,
    pub(crate) data: Vec<u8>,
    /// The embedded ICC profile of an RGB source, until `color::to_srgb` has applied it.
    pub(crate) icc: Option<Vec<u8>>,
    /// For a shrunk decode: the whole buffer is the picture, the source resampled onto it
    /// (libwebp's scaled decode). When false, a buffer `ceil(w / n)` wide holds `w / n` of
    /// picture, its last column and row partial (a DCT-scaled JPEG; see `geometry`).
    pub(crate) whole_picture: bool,
}

impl Image {
    pub(crate) fn new(width: u32, height: u32, layout: PixelLayout, data: Vec<u8>) -> Image {
        debug_assert_eq!(
            data.len(),
            width as usize * height as usize * layout.channels()
        );
        Image {
            width,
            height,
            layout,
            data,
            icc: None,
            whole_picture: false,
        }
    }

    pub(crate) fn channels(&self) -> usize {
        self.layout.channels()
    }

    pub(crate) fn stride(&self) -> usize {
        self.width as usize * self.channels()
    }
}

/// What the geometry stage needs from the decoder: the smallest decoded size, in oriented
/// (display) coordinates, that still gives full quality for the planned output. A decoder that
/// can scale while decoding (JPEG DCT scaling) may return any size at least this large;
/// others ignore it. `None` means the full size is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecodeHint {
    pub min_size: Option<(u32, u32)>,
    /// For benchmarks and measurements: decode a JPEG at exactly 1/n (2, 4 or 8) when the
    /// reduced-scale decoder takes the file, whatever `min_size` says. Renders leave it `None`.
    pub denominator: Option<u32>,
    /// For vector sources (SVG): the size, in oriented coordinates, the whole source would
    /// have at the output's scale, which may exceed its intrinsic size (enlarging a vector
    /// is sharp). `None` means the intrinsic size. Raster decoders ignore it.
    pub render_size: Option<(u32, u32)>,
    /// The format and quality the decoded picture will be encoded at, when the caller knows
    /// them. A JPEG bound for lossy WebP at q90 or less keeps a smaller reserve
    /// (`jpeg::reserve`): the encoder's own loss hides what a less reduced Lanczos step would
    /// have smoothed.
    pub output: Option<(OutputFormat, u8)>,
}
