//! The vocabulary shared by the URL grammar and the pipeline: a fully resolved transform
//! (every default applied, `dpr` folded into pixel sizes) and the limits it runs under.
//!
//! Owns plain data only. Must never parse URLs or touch I/O: `delivery::url` turns a URL
//! into these types, `pipeline::render` consumes them.

use std::fmt;

/// How the image is fitted into the `w` x `h` box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Fit {
    /// Fill the box, crop the overflow (anchored by [`Crop`]).
    #[default]
    Cover,
    /// Fit inside the box, keep the aspect ratio, no padding.
    Contain,
    /// Stretch to exactly the box.
    Fill,
    /// Like `Contain` but never enlarge.
    ScaleDown,
}

/// Anchor used when `Fit::Cover` (or a forced aspect) has to crop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Crop {
    #[default]
    Center,
    Top,
    Bottom,
    Left,
    Right,
    TopLeft,
    TopRight,
    BottomLeft,
    BottomRight,
    /// Keep the most salient region.
    Attention,
    /// Keep the region with the most detail (highest luminance entropy).
    Entropy,
}

/// Extra clockwise rotation, applied after EXIF orientation (which is always applied, so
/// the URL value `auto` resolves to `R0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Rotate {
    #[default]
    R0,
    R90,
    R180,
    R270,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flip {
    /// Mirror left-right.
    Horizontal,
    /// Mirror top-bottom.
    Vertical,
    Both,
}

/// Formats the node can encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputFormat {
    Jpeg,
    Png,
    Webp,
    Avif,
    /// JPEG XL (libjxl): lossy VarDCT in XYB below `q=100`, lossless modular at `q=100`.
    Jxl,
    /// GIF: a palette quantised per frame (color_quant's NeuQuant), 1-bit transparency.
    /// Animated when the source is; never chosen by `format=auto`.
    Gif,
}

impl OutputFormat {
    pub(crate) fn media_type(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "image/jpeg",
            OutputFormat::Png => "image/png",
            OutputFormat::Webp => "image/webp",
            OutputFormat::Avif => "image/avif",
            OutputFormat::Jxl => "image/jxl",
            OutputFormat::Gif => "image/gif",
        }
    }

    /// The canonical file extension (`jpeg` is accepted on input, `jpg` is canonical).
    pub(crate) fn extension(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "jpg",
            OutputFormat::Png => "png",
            OutputFormat::Webp => "webp",
            OutputFormat::Avif => "avif",
            OutputFormat::Jxl => "jxl",
            OutputFormat::Gif => "gif",
        }
    }

    /// Whether the format keeps an animated source animated (every frame, its delay and the
    /// loop count); the others take the first frame.
    pub(crate) fn animates(self) -> bool {
        matches!(self, OutputFormat::Webp | OutputFormat::Gif)
    }

    /// Whether the format can carry an alpha channel (otherwise alpha is flattened onto
    /// the background colour).
    pub(crate) fn has_alpha(self) -> bool {
        !matches!(self, OutputFormat::Jpeg)
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.extension())
    }
}

/// Formats the node can decode (sniffed from the bytes, never from a name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceFormat {
    Jpeg,
    Png,
    Webp,
    Gif,
    Avif,
    Bmp,
    Qoi,
    /// PBM, PGM, PPM and PAM (P1..P7).
    Pnm,
    Tga,
    /// ICO and CUR.
    Ico,
    Tiff,
    /// HEIF with HEVC images (`.heic`, `.heif`); AVIF, also HEIF, is `Avif`.
    Heic,
    /// JPEG XL, bare codestream or ISOBMFF container.
    Jxl,
    /// Radiance RGBE (`.hdr`), tone-mapped to sRGB.
    Hdr,
    /// OpenEXR, tone-mapped to sRGB.
    Exr,
    /// SVG (vector): rendered by resvg at the size the output needs.
    Svg,
}

impl SourceFormat {
    pub(crate) fn media_type(self) -> &'static str {
        match self {
            SourceFormat::Jpeg => "image/jpeg",
            SourceFormat::Png => "image/png",
            SourceFormat::Webp => "image/webp",
            SourceFormat::Gif => "image/gif",
            SourceFormat::Avif => "image/avif",
            SourceFormat::Heic => "image/heic",
            SourceFormat::Bmp => "image/bmp",
            SourceFormat::Qoi => "image/qoi",
            SourceFormat::Pnm => "image/x-portable-anymap",
            SourceFormat::Tga => "image/x-tga",
            SourceFormat::Ico => "image/vnd.microsoft.icon",
            SourceFormat::Tiff => "image/tiff",
            SourceFormat::Svg => "image/svg+xml",
            SourceFormat::Jxl => "image/jxl",
            SourceFormat::Hdr => "image/vnd.radiance",
            SourceFormat::Exr => "image/x-exr",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            SourceFormat::Jpeg => "jpg",
            SourceFormat::Png => "png",
            SourceFormat::Heic => "heic",
            SourceFormat::Webp => "webp",
            SourceFormat::Gif => "gif",
            SourceFormat::Avif => "avif",
            SourceFormat::Bmp => "bmp",
            SourceFormat::Qoi => "qoi",
            SourceFormat::Pnm => "pnm",
            SourceFormat::Tga => "tga",
            SourceFormat::Ico => "ico",
            SourceFormat::Tiff => "tiff",
            SourceFormat::Svg => "svg",
            SourceFormat::Jxl => "jxl",
            SourceFormat::Hdr => "hdr",
            SourceFormat::Exr => "exr",
        }
    }

    /// The output format that keeps this source as it is, when there is one.
    pub(crate) fn as_output(self) -> Option<OutputFormat> {
        match self {
            SourceFormat::Jpeg => Some(OutputFormat::Jpeg),
            SourceFormat::Png => Some(OutputFormat::Png),
            SourceFormat::Webp => Some(OutputFormat::Webp),
            SourceFormat::Avif => Some(OutputFormat::Avif),
            SourceFormat::Jxl => Some(OutputFormat::Jxl),
            SourceFormat::Gif
            | SourceFormat::Bmp
            | SourceFormat::Qoi
            | SourceFormat::Pnm
            | SourceFormat::Tga
            | SourceFormat::Ico
            | SourceFormat::Tiff
            | SourceFormat::Hdr
            | SourceFormat::Exr
            | SourceFormat::Heic
            | SourceFormat::Svg => None,
        }
    }

    pub fn from_name(name: &str) -> Option<SourceFormat> {
        Some(match name {
            "jpg" | "jpeg" => SourceFormat::Jpeg,
            "png" => SourceFormat::Png,
            "webp" => SourceFormat::Webp,
            "gif" => SourceFormat::Gif,
            "avif" => SourceFormat::Avif,
            "bmp" => SourceFormat::Bmp,
            "qoi" => SourceFormat::Qoi,
            "pnm" | "pbm" | "pgm" | "ppm" | "pam" => SourceFormat::Pnm,
            "tga" => SourceFormat::Tga,
            "ico" | "cur" => SourceFormat::Ico,
            "tif" | "tiff" => SourceFormat::Tiff,
            "jxl" => SourceFormat::Jxl,
            "hdr" => SourceFormat::Hdr,
            "exr" => SourceFormat::Exr,
            "heic" | "heif" => SourceFormat::Heic,
            "svg" => SourceFormat::Svg,
            _ => return None,
        })
    }
}

/// An sRGB colour without alpha.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rgb(pub(crate) [u8; 3]);

impl Rgb {
    pub(crate) const WHITE: Rgb = Rgb([255, 255, 255]);
}

impl Default for Rgb {
    fn default() -> Self {
        Rgb::WHITE
    }
}

/// A fully resolved transform: every account/node default applied, `dpr` already folded into
/// `width`/`height` (device pixels). Two requests that must give the same bytes resolve to
/// equal values; the canonical form of this value is the cache-key input.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Transform {
    /// Target width in device pixels; `None` follows the source aspect ratio.
    pub width: Option<u32>,
    /// Target height in device pixels; `None` follows the source aspect ratio.
    pub height: Option<u32>,
    pub fit: Fit,
    /// Forced aspect ratio `W:H` (each 1-100).
    pub aspect: Option<(u8, u8)>,
    /// Encoder quality 1-100.
    pub quality: u8,
    pub crop: Crop,
    pub grayscale: bool,
    /// Gaussian blur strength 0-100 (0 = off).
    pub blur: u8,
    /// Unsharp-mask strength 0-100 (0 = off).
    pub sharpen: u8,
    pub rotate: Rotate,
    pub flip: Option<Flip>,
    /// Background used when alpha has to be flattened.
    pub background: Rgb,
    /// `frame=N`: this frame (0-based) of an animated GIF or WebP source, as a still.
    pub frame: Option<u32>,
    /// `animated=false`: an animated source gives its first frame even to a format that
    /// animates (WebP, GIF).
    pub animated: bool,
}

impl Transform {
    pub(crate) const DEFAULT_QUALITY: u8 = 80;
}

impl Default for Transform {
    fn default() -> Self {
        Transform {
            width: None,
            height: None,
            fit: Fit::Cover,
            aspect: None,
            quality: Transform::DEFAULT_QUALITY,
            crop: Crop::Center,
            grayscale: false,
            blur: 0,
            sharpen: 0,
            rotate: Rotate::R0,
            flip: None,
            background: Rgb::WHITE,
            frame: None,
            animated: true,
        }
    }
}

/// Chroma resolution of AVIF output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AvifChroma {
    /// Half resolution both ways (libavif's default; smaller and cheaper on photographs).
    Yuv420,
    /// Full resolution (sharper colour edges in graphics, text and pixel art).
    Yuv444,
}

/// The AV1 encoder of opaque 4:2:0 AVIF output (4:4:4 and transparent pictures always go
/// through ravif, that is rav1e).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AvifEncoder {
    /// libaom in all-intra mode, as libavif drives it (the default: less CPU at equal quality).
    Aom,
    /// rav1e, pure Rust.
    Rav1e,
}

/// Encoder settings chosen by the operator (not by the URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeSettings {
    /// libaom's speed (`cpu-used`) 1 (slow, small) to 10 (fast; runs as 9).
    pub(crate) avif_speed: u8,
    /// rav1e's speed preset 1 to 10, for `AvifEncoder::Rav1e` and for ravif (transparent and
    /// 4:4:4 pictures).
    pub(crate) rav1e_speed: u8,
    /// The encoder of opaque 4:2:0 AVIF.
    pub(crate) avif_encoder: AvifEncoder,
    /// Chroma resolution of opaque AVIF output (transparent pictures are always 4:4:4).
    pub(crate) avif_chroma: AvifChroma,
    /// Bits per sample inside 4:2:0 AVIF files: 8 or 10.
    pub(crate) avif_bit_depth: u8,
    /// libwebp method 0 (fast) to 6 (small).
    pub(crate) webp_method: u8,
    /// PNG compression: 0 fast, 1 default, 2 best.
    pub(crate) png_compression: u8,
    /// libjxl's effort 1 (fast) to 9 (small), for lossy and lossless JPEG XL.
    pub(crate) jxl_effort: u8,
}

impl Default for EncodeSettings {
    fn default() -> Self {
        EncodeSettings {
            avif_speed: 6,
            rav1e_speed: 8,
            avif_encoder: AvifEncoder::Aom,
            avif_chroma: AvifChroma::Yuv420,
            avif_bit_depth: 8,
            // Measured (benches/RESULTS.md, "WebP output settings"): method 4 reaches
            // thumbor's DSSIM at fewer bytes; 2 costs a quarter less CPU but is worse on both.
            webp_method: 4,
            png_compression: 0,
            // Measured (benches/RESULTS.md, "JPEG XL output"): see encode/jxl.rs.
            jxl_effort: 5,
        }
    }
}

/// Resource limits, all checked before the memory they guard is allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest source, in pixels (width x height from the header).
    pub max_source_pixels: u64,
    /// Largest source, in bytes.
    pub max_source_bytes: u64,
    /// Largest output, in pixels.
    pub max_output_pixels: u64,
    /// Largest output side, in pixels.
    pub max_output_side: u32,
    /// AVIF outputs above this many pixels are downscaled before encoding.
    pub avif_max_pixels: u64,
    /// AVIF outputs above this side are downscaled before encoding.
    pub avif_max_side: u32,
    /// JPEG XL outputs above this many pixels are downscaled before encoding (libjxl 0.7 holds
    /// about 43 bytes per pixel while encoding lossy, 66 lossless).
    pub jxl_max_pixels: u64,
    /// Largest number of animation frames a source may declare.
    pub max_frames: u32,
    /// Largest animation, in pixels: frames x canvas width x canvas height, from the headers.
    /// Bounds the decode work of an animated render (each frame is composited at canvas size).
    pub max_animation_pixels: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_source_pixels: 50_000_000,
            max_source_bytes: 50 * 1024 * 1024,
            max_output_pixels: 40_000_000,
            max_output_side: 10_000,
            avif_max_pixels: 8_000_000,
            avif_max_side: 4_000,
            jxl_max_pixels: 8_000_000,
            max_frames: 1_000,
            max_animation_pixels: 400_000_000,
        }
    }
}
