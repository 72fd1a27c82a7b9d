//! The image pipeline: bytes in, bytes out, synchronous and pure.
//!
//! Owns sniffing, the header probe, decoding (with shrink-on-load where the codec can),
//! EXIF orientation, colour conversion to sRGB, geometry, effects and encoding.
//! Must never do I/O, touch async code or globals, or be called outside `cpu::Pool`: every
//! function here may take tens of milliseconds of CPU.
//!
//! Stage order is fixed whatever the order of URL parameters: probe (limits before any
//! allocation) → plan the output size (output limits before decoding) → decode → orient →
//! to sRGB → crop/resize → rotate → flip → grayscale → blur → sharpen → AVIF size cap →
//! flatten alpha when the format has none → encode.

mod color;
mod crop;
mod decode;
mod effects;
mod encode;
mod error;
mod geometry;
mod image;
mod orient;
mod probe;
pub mod spec;

use std::time::{Duration, Instant};

pub use self::image::{DecodeHint, Image, PixelLayout};
pub use error::PipelineError;
pub use geometry::{OutputPlan, plan};
pub use probe::{ImageInfo, probe, sniff};
pub use spec::{
    Crop, EncodeSettings, Fit, Flip, Limits, OutputFormat, Rgb, Rotate, SourceFormat, Transform,
};

/// Per-stage durations of one render (reported in `Server-Timing` and metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageTimings {
    pub decode: Duration,
    pub resize: Duration,
    pub effects: Duration,
    pub encode: Duration,
}

/// An encoded result.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub bytes: Vec<u8>,
    pub format: OutputFormat,
    pub width: u32,
    pub height: u32,
    pub timings: StageTimings,
}

/// Renders `source` with `transform` into `output`.
pub fn render(
    source: &[u8],
    transform: &Transform,
    output: OutputFormat,
    limits: &Limits,
    settings: &EncodeSettings,
) -> Result<Rendered, PipelineError> {
    let started = Instant::now();
    let info = probe(source, limits)?;
    let plan = plan(info.oriented_size(), transform, limits)?;
    let image = decode_upright(source, &info, limits, plan.decode_hint())?;
    let decoded = Instant::now();

    let image = geometry::apply(image, &plan, transform)?;
    let resized = Instant::now();

    let image = effects::apply(image, transform);
    let image = geometry::cap_for_format(image, output, limits)?;
    let image = if output.has_alpha() {
        image
    } else {
        effects::flatten(image, transform.background)
    };
    let effected = Instant::now();

    let (width, height) = (image.width, image.height);
    let bytes = encode_image(&image, output, transform.quality, settings)?;
    let encoded = Instant::now();

    Ok(Rendered {
        bytes,
        format: output,
        width,
        height,
        timings: StageTimings {
            decode: decoded - started,
            resize: resized - decoded,
            effects: effected - resized,
            encode: encoded - effected,
        },
    })
}

/// Decode, orient and convert to sRGB: the decode stage of `render`, on its own.
pub fn decode_upright(
    source: &[u8],
    info: &ImageInfo,
    limits: &Limits,
    hint: DecodeHint,
) -> Result<Image, PipelineError> {
    let image = decode::decode(source, info, limits, hint)?;
    let image = orient::apply(image, info.orientation);
    color::to_srgb(image)
}

/// The geometry stage of `render` on its own (crop and resize per `transform`).
pub fn resize_image(
    image: Image,
    transform: &Transform,
    limits: &Limits,
) -> Result<Image, PipelineError> {
    let plan = plan((image.width, image.height), transform, limits)?;
    geometry::apply(image, &plan, transform)
}

/// The encode stage of `render` on its own.
pub fn encode_image(
    image: &Image,
    output: OutputFormat,
    quality: u8,
    settings: &EncodeSettings,
) -> Result<Vec<u8>, PipelineError> {
    encode::encode(image, output, quality, settings)
}
