//! Animated renders: an animated GIF or WebP source to an animated WebP or GIF, frame by frame,
//! and `frame=N` (one frame of an animation, as a still).
//!
//! Each frame goes through the stages of a still in the same order (orient, to sRGB, crop and
//! resize, effects), with one plan made from the canvas size before any frame is decoded and
//! one crop found on the first frame. Memory streams: a frame is composited, resized, handed
//! to the encoder and dropped before the next is decoded; only the encoder's small output
//! frames accumulate. The render's deadline is checked between frames.

use std::time::{Duration, Instant};

use super::decode::frames::{Frames, MIN_DELAY_MS, SHORT_DELAY_AS_MS};
use super::encode::{GifAnimation, WebpAnimation};
use super::geometry::{FrameCrop, OutputPlan};
use super::probe::ImageInfo;
use super::spec::{EncodeSettings, Limits, OutputFormat, SourceFormat, Transform};
use super::{Image, PipelineError, Rendered, StageTimings, color, effects, orient};

/// Whether `info` is an animation whose frames this node can iterate (GIF and WebP).
pub(super) fn has_frames(info: &ImageInfo) -> bool {
    info.frames > 1 && matches!(info.format, SourceFormat::Gif | SourceFormat::Webp)
}

/// `frame=N` checked against the source: the frames of a GIF or WebP animation, frame 0 of
/// anything else.
pub(super) fn check_frame(info: &ImageInfo, frame: Option<u32>) -> Result<(), PipelineError> {
    let selectable = if has_frames(info) { info.frames } else { 1 };
    match frame {
        Some(n) if n >= selectable => Err(PipelineError::BadRequest(format!(
            "frame must be an integer from 0 to {} for this image (frames count from 0; \
             GIF and WebP animations have frames to pick)",
            selectable - 1
        ))),
        _ => Ok(()),
    }
}

/// Frame `n` of an animated GIF or WebP composited as a viewer shows it, upright and in sRGB:
/// the decode stage of a `frame=N` render. Frames before it are composited and dropped.
pub(super) fn nth_frame(
    source: &[u8],
    info: &ImageInfo,
    limits: &Limits,
    n: u32,
    deadline: Option<Instant>,
) -> Result<Image, PipelineError> {
    let mut frames = Frames::open(source, info, limits)?;
    let mut index = 0;
    while let Some(frame) = frames.next_frame()? {
        if index == n {
            return upright(frame.image, info);
        }
        index += 1;
        check_deadline(deadline, index)?;
    }
    Err(PipelineError::Corrupt(format!(
        "{}: frame {n} missing, {index} decoded",
        info.format.extension()
    )))
}

fn check_deadline(deadline: Option<Instant>, frames: u32) -> Result<(), PipelineError> {
    match deadline {
        Some(d) if Instant::now() >= d => Err(PipelineError::Deadline(frames)),
        _ => Ok(()),
    }
}

fn upright(image: Image, info: &ImageInfo) -> Result<Image, PipelineError> {
    color::to_srgb(orient::apply(image, info.orientation))
}

/// The encoder of an animated output.
enum Encoder {
    Webp(WebpAnimation),
    Gif(GifAnimation),
}

impl Encoder {
    fn new(
        output: OutputFormat,
        (width, height): (u32, u32),
        loop_count: u16,
        quality: u8,
        settings: &EncodeSettings,
    ) -> Result<Encoder, PipelineError> {
        match output {
            OutputFormat::Webp => Ok(Encoder::Webp(WebpAnimation::new(
                width,
                height,
                loop_count,
                quality.clamp(1, 100),
                settings.webp_method,
            )?)),
            OutputFormat::Gif => Ok(Encoder::Gif(GifAnimation::new(width, height, loop_count)?)),
            other => Err(PipelineError::Internal(format!("{other} does not animate"))),
        }
    }

    fn add(&mut self, image: &Image, delay_ms: u32) -> Result<(), PipelineError> {
        match self {
            // Viewers show a GIF delay of 0 or 1 cs as 100 ms; WebP has no such rule (and its
            // encoder refuses 0), so the shown timing is written out.
            Encoder::Webp(e) => e.add(
                image,
                if delay_ms <= MIN_DELAY_MS {
                    SHORT_DELAY_AS_MS
                } else {
                    delay_ms
                },
            ),
            Encoder::Gif(e) => e.add(image, delay_ms),
        }
    }

    fn finish(self) -> Result<Vec<u8>, PipelineError> {
        match self {
            Encoder::Webp(e) => e.finish(),
            Encoder::Gif(e) => e.finish(),
        }
    }
}

/// Renders every frame of an animated GIF or WebP `source` into an animated `output` (WebP or
/// GIF), keeping each frame's delay and the loop count.
#[expect(
    clippy::too_many_arguments,
    reason = "the stages' inputs, passed through"
)]
pub(super) fn render(
    source: &[u8],
    info: &ImageInfo,
    plan: &OutputPlan,
    transform: &Transform,
    output: OutputFormat,
    settings: &EncodeSettings,
    limits: &Limits,
    deadline: Option<Instant>,
) -> Result<Rendered, PipelineError> {
    // The encode side under the same budget as the decode side (the probe checked frames x
    // canvas): enlarging a small animation must not make a render of billions of pixels.
    let (w, h) = plan.output_size();
    let total = u64::from(w) * u64::from(h) * u64::from(info.frames);
    if total > limits.max_animation_pixels {
        return Err(PipelineError::OutputTooLarge(format!(
            "{} frames of {w}x{h} = {total} pixels, limit limits.max_animation_pixels = {}",
            info.frames, limits.max_animation_pixels
        )));
    }
    let mut timings = StageTimings::default();
    let mut clock = Instant::now();
    let mut lap = |stage: &mut Duration| {
        let now = Instant::now();
        *stage += now - clock;
        clock = now;
    };
    let mut frames = Frames::open(source, info, limits)?;
    let mut crop = None;
    let mut encoder = None;
    let mut count = 0u32;
    #[cfg(test)]
    let mut size = (0, 0);
    while let Some(frame) = frames.next_frame()? {
        let image = upright(frame.image, info)?;
        lap(&mut timings.decode);
        let crop = *crop.get_or_insert_with(|| FrameCrop::new(&image, plan, transform));
        let image = crop.apply(image, plan)?;
        lap(&mut timings.resize);
        let image = effects::apply(image, transform);
        lap(&mut timings.effects);
        let encoder = match &mut encoder {
            Some(encoder) => encoder,
            None => encoder.insert(Encoder::new(
                output,
                (image.width, image.height),
                frames.loop_count(),
                transform.quality,
                settings,
            )?),
        };
        encoder.add(&image, frame.delay_ms)?;
        #[cfg(test)]
        {
            size = (image.width, image.height);
        }
        drop(image);
        lap(&mut timings.encode);
        count += 1;
        check_deadline(deadline, count)?;
    }
    let encoder = encoder.ok_or_else(|| {
        PipelineError::Corrupt(format!("{}: no frame decoded", info.format.extension()))
    })?;
    let bytes = encoder.finish()?;
    lap(&mut timings.encode);
    Ok(Rendered {
        bytes,
        #[cfg(test)]
        width: size.0,
        #[cfg(test)]
        height: size.1,
        timings,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::super::decode::test_support::fixture;
    use super::super::render;
    use super::*;

    fn transform(f: impl FnOnce(&mut Transform)) -> Transform {
        let mut t = Transform {
            width: Some(32),
            ..Transform::default()
        };
        f(&mut t);
        t
    }

    fn go(rel: &str, t: &Transform, output: OutputFormat) -> Result<Vec<u8>, PipelineError> {
        let limits = Limits::default();
        render(
            &fixture(rel),
            t,
            output,
            &limits,
            &EncodeSettings::default(),
        )
        .map(|r| r.bytes)
    }

    /// (frames as RGBA, delays in ms, loop count) of an animated WebP, decoded by image-webp.
    fn webp_frames(bytes: &[u8]) -> (Vec<Vec<u8>>, Vec<u32>, image_webp::LoopCount, (u32, u32)) {
        let mut d = image_webp::WebPDecoder::new(Cursor::new(bytes)).expect("webp");
        let size = d.dimensions();
        if !d.is_animated() {
            let mut buf = vec![0; d.output_buffer_size().expect("size")];
            d.read_image(&mut buf).expect("still");
            return (vec![buf], vec![], d.loop_count(), size);
        }
        let mut frames = Vec::new();
        let mut delays = Vec::new();
        for _ in 0..d.num_frames() {
            let mut buf = vec![0; d.output_buffer_size().expect("size")];
            delays.push(d.read_frame(&mut buf).expect("frame"));
            frames.push(buf);
        }
        (frames, delays, d.loop_count(), size)
    }

    #[test]
    fn gif_and_webp_sources_stay_animated_as_webp_and_gif() {
        for rel in ["formats/gif_animated.gif", "formats/webp_animated.webp"] {
            let bytes = go(rel, &transform(|_| {}), OutputFormat::Webp).expect("webp");
            let (frames, delays, repeat, size) = webp_frames(&bytes);
            assert_eq!(size, (32, 24), "{rel}");
            assert_eq!(frames.len(), 2, "{rel}");
            assert_eq!(delays, [100, 100], "{rel}");
            assert_eq!(repeat, image_webp::LoopCount::Forever, "{rel}");
            // Frame 1 has red top-left, frame 2 is all blue.
            assert!(frames[0][0] > 200 && frames[0][2] < 50, "{rel}");
            assert!(frames[1][0] < 50 && frames[1][2] > 200, "{rel}");

            let bytes = go(rel, &transform(|_| {}), OutputFormat::Gif).expect("gif");
            let mut options = gif::DecodeOptions::new();
            options.set_color_output(gif::ColorOutput::RGBA);
            let mut d = options.read_info(Cursor::new(&bytes)).expect("gif");
            assert_eq!((d.width(), d.height()), (32, 24));
            let mut delays = Vec::new();
            while let Some(f) = d.read_next_frame().expect("frame") {
                delays.push(f.delay);
            }
            assert_eq!(delays, [10, 10], "{rel}");
            assert_eq!(d.repeat(), gif::Repeat::Infinite, "{rel}");
        }
    }

    #[test]
    fn first_frame_only_when_asked_or_for_other_formats() {
        for t in [
            transform(|t| t.animated = false),
            transform(|t| t.frame = Some(0)),
        ] {
            let bytes = go("formats/gif_animated.gif", &t, OutputFormat::Webp).expect("webp");
            let (frames, _, _, _) = webp_frames(&bytes);
            assert_eq!(frames.len(), 1);
            assert!(frames[0][0] > 200, "red: the first frame");
        }
        let bytes = go(
            "formats/gif_animated.gif",
            &transform(|t| t.frame = Some(1)),
            OutputFormat::Webp,
        )
        .expect("frame 1");
        let (frames, _, _, _) = webp_frames(&bytes);
        assert_eq!(frames.len(), 1);
        assert!(
            frames[0][2] > 200 && frames[0][0] < 50,
            "blue: the second frame"
        );
        let err = go(
            "formats/gif_animated.gif",
            &transform(|t| t.frame = Some(2)),
            OutputFormat::Png,
        )
        .unwrap_err();
        assert!(
            matches!(&err, PipelineError::BadRequest(m) if m.contains("0 to 1")),
            "{err}"
        );
        let err = go(
            "formats/png_rgba.png",
            &transform(|t| t.frame = Some(1)),
            OutputFormat::Png,
        )
        .unwrap_err();
        assert!(matches!(err, PipelineError::BadRequest(_)));
        // A still asked as GIF is a one-frame GIF.
        let bytes = go(
            "formats/png_rgba.png",
            &transform(|_| {}),
            OutputFormat::Gif,
        )
        .expect("gif");
        assert!(bytes.starts_with(b"GIF89a"));
    }

    #[test]
    fn the_output_of_an_animation_is_bounded_like_its_source() {
        // 2 frames of 64x48 enlarged to 640x480: 614 400 pixels to encode.
        let limits = Limits {
            max_animation_pixels: 600_000,
            ..Limits::default()
        };
        let big = Transform {
            width: Some(640),
            ..Transform::default()
        };
        let source = fixture("formats/gif_animated.gif");
        let settings = EncodeSettings::default();
        let err = render(&source, &big, OutputFormat::Webp, &limits, &settings).unwrap_err();
        assert!(
            matches!(&err, PipelineError::OutputTooLarge(m) if m.contains("max_animation_pixels")),
            "{err}"
        );
        // One frame of it is a still, not an animation.
        let still = Transform {
            animated: false,
            ..big.clone()
        };
        assert!(render(&source, &still, OutputFormat::Webp, &limits, &settings).is_ok());
        let small = Transform {
            width: Some(320),
            ..big
        };
        assert!(render(&source, &small, OutputFormat::Webp, &limits, &settings).is_ok());
    }

    #[test]
    fn a_passed_deadline_stops_between_frames() {
        let limits = Limits::default();
        let err = super::super::render_until(
            &fixture("formats/gif_animated.gif"),
            &transform(|_| {}),
            OutputFormat::Webp,
            &limits,
            &EncodeSettings::default(),
            Some(Instant::now()),
        )
        .unwrap_err();
        assert_eq!(err, PipelineError::Deadline(1));
    }
}
