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
//! flatten alpha when the format has none → encode. An animated GIF or WebP rendered to WebP
//! or GIF runs these stages on every frame (`animation`); other outputs take its first frame.

mod animation;
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
mod strip;

use std::time::{Duration, Instant};

pub(crate) use self::image::PixelLayout;
pub use self::image::{DecodeHint, Image};
pub(crate) use error::PipelineError;
pub use geometry::plan;
pub use probe::probe;
pub(crate) use probe::{ImageInfo, sniff};
pub(crate) use spec::{AvifChroma, AvifEncoder, Fit, Rgb};
pub use spec::{Crop, EncodeSettings, Limits, OutputFormat, SourceFormat, Transform};
pub(crate) use strip::jpeg_without_metadata;

/// Per-stage durations of one render (reported in `Server-Timing` and metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct StageTimings {
    pub(crate) decode: Duration,
    pub(crate) resize: Duration,
    pub(crate) effects: Duration,
    pub(crate) encode: Duration,
}

/// An encoded result.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub bytes: Vec<u8>,
    #[cfg(test)]
    width: u32,
    #[cfg(test)]
    height: u32,
    pub(crate) timings: StageTimings,
}

/// Renders `source` with `transform` into `output`.
pub fn render(
    source: &[u8],
    transform: &Transform,
    output: OutputFormat,
    limits: &Limits,
    settings: &EncodeSettings,
) -> Result<Rendered, PipelineError> {
    render_until(source, transform, output, limits, settings, None)
}

/// [`render`], giving up with `Deadline` between two frames of an animation once `deadline`
/// has passed (a still is one step: the CPU pool's own timeout answers for it).
pub(crate) fn render_until(
    source: &[u8],
    transform: &Transform,
    output: OutputFormat,
    limits: &Limits,
    settings: &EncodeSettings,
    deadline: Option<Instant>,
) -> Result<Rendered, PipelineError> {
    let started = Instant::now();
    let info = probe(source, limits)?;
    animation::check_frame(&info, transform.frame)?;
    let plan = plan(info.oriented_size(), transform, limits)?.with_orientation(info.orientation);
    let animate = transform.frame.is_none() && transform.animated && output.animates();
    if animate && animation::has_frames(&info) {
        return animation::render(
            source, &info, &plan, transform, output, settings, limits, deadline,
        );
    }
    let image = match transform.frame {
        Some(n) if n > 0 => animation::nth_frame(source, &info, limits, n, deadline)?,
        _ => {
            let hint = DecodeHint {
                output: Some((output, transform.quality)),
                ..plan.decode_hint()
            };
            decode_upright(source, &info, limits, hint)?
        }
    };
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

    #[cfg(test)]
    let (width, height) = (image.width, image.height);
    let bytes = encode_image(&image, output, transform.quality, settings)?;
    let encoded = Instant::now();

    Ok(Rendered {
        bytes,
        #[cfg(test)]
        width,
        #[cfg(test)]
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

/// Side of the thumbnail [`dominant_color`] counts colours on.
const PALETTE_SIDE: u32 = 64;

/// The most common colour of `source`: decoded small (shrink-on-load where the codec can),
/// reduced to fit 64×64, bucketed at 4 bits per channel; the answer is the mean of the fullest
/// bucket, so it is a colour the image really has (not a muddy average of everything).
/// Transparent pixels do not count; a fully transparent image answers white.
pub(crate) fn dominant_color(
    source: &[u8],
    info: &ImageInfo,
    limits: &Limits,
) -> Result<Rgb, PipelineError> {
    let (w, h) = info.oriented_size();
    let scale = f64::from(PALETTE_SIDE) / f64::from(w.max(h).max(1));
    let small = |side: u32| ((f64::from(side) * scale).round() as u32).clamp(1, side.max(1));
    let box_size = if scale < 1.0 {
        (small(w), small(h))
    } else {
        (w, h)
    };
    let hint = DecodeHint {
        min_size: Some(box_size),
        render_size: Some(box_size),
        ..DecodeHint::default()
    };
    let image = decode_upright(source, info, limits, hint)?;
    let image = if scale < 1.0 {
        let fit = Transform {
            width: Some(box_size.0),
            height: Some(box_size.1),
            fit: Fit::Fill,
            ..Transform::default()
        };
        resize_image(image, &fit, limits)?
    } else {
        image
    };
    Ok(fullest_bucket_mean(&image))
}

fn fullest_bucket_mean(image: &Image) -> Rgb {
    // Per bucket: pixel count and channel sums.
    let mut buckets = vec![(0u32, [0u64; 3]); 4096];
    let channels = image.channels();
    for px in image.data.chunks_exact(channels) {
        if channels == 4 && px[3] < 128 {
            continue;
        }
        let index = (usize::from(px[0] >> 4) << 8)
            | (usize::from(px[1] >> 4) << 4)
            | usize::from(px[2] >> 4);
        let bucket = &mut buckets[index];
        bucket.0 += 1;
        for (sum, value) in bucket.1.iter_mut().zip(px) {
            *sum += u64::from(*value);
        }
    }
    let Some((count, sums)) = buckets.iter().max_by_key(|b| b.0).filter(|b| b.0 > 0) else {
        return Rgb::WHITE;
    };
    let mean = |c: usize| (sums[c] / u64::from(*count)) as u8;
    Rgb([mean(0), mean(1), mean(2)])
}

#[cfg(test)]
mod palette_tests {
    use super::*;

    #[test]
    fn fullest_bucket_wins_over_the_average() {
        // 70 % pure red, 30 % blue: the average would be purple; the answer is red.
        let mut data = Vec::new();
        for i in 0..100 {
            data.extend_from_slice(if i < 70 {
                &[250, 10, 10]
            } else {
                &[10, 10, 250]
            });
        }
        let image = Image::new(10, 10, PixelLayout::Rgb8, data);
        assert_eq!(fullest_bucket_mean(&image), Rgb([250, 10, 10]));
        let clear = Image::new(1, 1, PixelLayout::Rgba8, vec![0, 0, 0, 0]);
        assert_eq!(fullest_bucket_mean(&clear), Rgb::WHITE);
    }
}
