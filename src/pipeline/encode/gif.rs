//! GIF output through the `gif` crate: every frame with its own palette (a local colour table),
//! exact when the frame has at most 255 colours, else 255 colours found by color_quant's
//! NeuQuant on the frame's opaque pixels; one more index is the transparent one. Alpha is cut
//! at 50 % (GIF transparency is one bit). Every frame covers the whole canvas and is disposed
//! to the background, so transparent pixels never show the frame before.

use std::borrow::Cow;
use std::collections::HashMap;

use gif::{DisposalMethod, Repeat};

use super::super::{Image, PipelineError, PixelLayout};
use super::internal;

/// NeuQuant's sampling factor, 1 (every pixel, slowest) to 30. Measured on a 400x300 crop of
/// tests/fixtures/photos/ladybird.jpg (dev box, palette and indexing): 1 → 231 ms, mean error
/// 2.40 a channel; 3 → 92 ms, 2.51; 5 → 57 ms, 2.62; 10 → 39 ms, 2.76. 10 is the crate's own
/// suggestion and a sixth of the cost of 1 for a seventh more error.
const NEUQUANT_SAMPLING: i32 = 10;
/// Alpha below this is transparent.
const ALPHA_CUT: u8 = 128;

/// An animated GIF being written, frame by frame.
pub(crate) struct GifAnimation {
    encoder: gif::Encoder<Vec<u8>>,
    size: (u16, u16),
}

impl GifAnimation {
    /// A `width` x `height` animation playing `loop_count` times (0 forever; 1 writes no loop
    /// extension, which viewers play once; n writes n - 1 repeats, see `Frames::loop_count`).
    pub(crate) fn new(width: u32, height: u32, loop_count: u16) -> Result<Self, PipelineError> {
        let size = gif_size(width, height)?;
        let mut encoder =
            gif::Encoder::new(Vec::new(), size.0, size.1, &[]).map_err(|e| internal("gif", e))?;
        let repeat = match loop_count {
            0 => Some(Repeat::Infinite),
            1 => None,
            n => Some(Repeat::Finite(n - 1)),
        };
        if let Some(repeat) = repeat {
            encoder.set_repeat(repeat).map_err(|e| internal("gif", e))?;
        }
        Ok(GifAnimation { encoder, size })
    }

    /// Adds a frame of the canvas size, shown for `delay_ms` (rounded to centiseconds).
    pub(crate) fn add(&mut self, image: &Image, delay_ms: u32) -> Result<(), PipelineError> {
        if gif_size(image.width, image.height)? != self.size {
            return Err(internal("gif", "frame size differs from the canvas"));
        }
        let (palette, transparent, buffer) = quantize(image);
        let frame = gif::Frame {
            width: self.size.0,
            height: self.size.1,
            delay: u16::try_from(delay_ms.div_ceil(10)).unwrap_or(u16::MAX),
            dispose: DisposalMethod::Background,
            transparent,
            palette: Some(palette),
            buffer: Cow::Owned(buffer),
            ..gif::Frame::default()
        };
        self.encoder
            .write_frame(&frame)
            .map_err(|e| internal("gif", e))
    }

    pub(crate) fn finish(self) -> Result<Vec<u8>, PipelineError> {
        self.encoder.into_inner().map_err(|e| internal("gif", e))
    }
}

/// A still as a one-frame GIF.
pub(super) fn encode(image: &Image) -> Result<Vec<u8>, PipelineError> {
    let mut gif = GifAnimation::new(image.width, image.height, 1)?;
    gif.add(image, 0)?;
    gif.finish()
}

fn gif_size(width: u32, height: u32) -> Result<(u16, u16), PipelineError> {
    match (u16::try_from(width), u16::try_from(height)) {
        (Ok(w), Ok(h)) => Ok((w, h)),
        _ => Err(internal(
            "gif",
            format!("{width}x{height} exceeds 65535 px a side"),
        )),
    }
}

/// A pixel's palette index.
enum Lookup {
    Exact(HashMap<[u8; 3], u8>),
    Quantized(Box<color_quant::NeuQuant>),
}

impl Lookup {
    fn index(&self, px: &[u8]) -> u8 {
        match self {
            // Every opaque colour was inserted while counting.
            Lookup::Exact(map) => map.get(&[px[0], px[1], px[2]]).copied().unwrap_or(0),
            Lookup::Quantized(quant) => quant.index_of(&[px[0], px[1], px[2], 255]) as u8,
        }
    }
}

/// The frame as (RGB palette, transparent index, one index a pixel).
fn quantize(image: &Image) -> (Vec<u8>, Option<u8>, Vec<u8>) {
    let channels = image.channels();
    let opaque = |px: &[u8]| image.layout == PixelLayout::Rgb8 || px[3] >= ALPHA_CUT;
    // Exact colours first: most animations (screen captures, graphics) have few.
    let mut exact: HashMap<[u8; 3], u8> = HashMap::new();
    let mut any_transparent = false;
    let mut fits = true;
    for px in image.data.chunks_exact(channels) {
        if !opaque(px) {
            any_transparent = true;
            continue;
        }
        if fits && !exact.contains_key(&[px[0], px[1], px[2]]) {
            if exact.len() == 255 {
                fits = false;
                continue;
            }
            exact.insert([px[0], px[1], px[2]], exact.len() as u8);
        }
    }
    let (mut palette, lookup) = if fits {
        let mut palette = vec![0u8; exact.len() * 3];
        for (rgb, &i) in &exact {
            palette[usize::from(i) * 3..][..3].copy_from_slice(rgb);
        }
        (palette, Lookup::Exact(exact))
    } else {
        let samples: Vec<u8> = image
            .data
            .chunks_exact(channels)
            .filter(|px| opaque(px))
            .flat_map(|px| [px[0], px[1], px[2], 255])
            .collect();
        let quant = color_quant::NeuQuant::new(NEUQUANT_SAMPLING, 255, &samples);
        drop(samples);
        (quant.color_map_rgb(), Lookup::Quantized(Box::new(quant)))
    };
    // The transparent index follows the colours (at most 255 of them).
    let transparent = any_transparent.then_some((palette.len() / 3) as u8);
    if any_transparent {
        palette.extend_from_slice(&[0, 0, 0]);
    }
    if palette.is_empty() {
        palette.extend_from_slice(&[0, 0, 0]);
    }
    let buffer = image
        .data
        .chunks_exact(channels)
        .map(|px| match transparent {
            Some(t) if !opaque(px) => t,
            _ => lookup.index(px),
        })
        .collect();
    (palette, transparent, buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (RGBA pixels, delay in cs) of each frame.
    type Decoded = Vec<(Vec<u8>, u16)>;

    fn decode(bytes: &[u8]) -> (Decoded, gif::Repeat, (u16, u16)) {
        let mut options = gif::DecodeOptions::new();
        options.set_color_output(gif::ColorOutput::RGBA);
        let mut decoder = options.read_info(bytes).expect("gif header");
        let size = (decoder.width(), decoder.height());
        let mut frames = Vec::new();
        while let Some(f) = decoder.read_next_frame().expect("frame") {
            frames.push((f.buffer.to_vec(), f.delay));
        }
        (frames, decoder.repeat(), size)
    }

    #[test]
    fn few_colours_are_exact_and_alpha_is_one_bit() {
        // Red, green, half-transparent blue, fully transparent.
        let data = vec![255, 0, 0, 255, 0, 255, 0, 255, 0, 0, 255, 100, 9, 9, 9, 0];
        let image = Image::new(2, 2, PixelLayout::Rgba8, data);
        let bytes = encode(&image).expect("encode");
        let (frames, repeat, size) = decode(&bytes);
        assert_eq!(size, (2, 2));
        assert_eq!(
            repeat,
            gif::Repeat::Finite(0),
            "a still has no loop extension"
        );
        assert_eq!(frames.len(), 1);
        assert_eq!(
            frames[0].0,
            vec![255, 0, 0, 255, 0, 255, 0, 255, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn many_colours_are_quantised_close_with_timing_and_loops() {
        // A 64x64 gradient: 4096 colours.
        let data: Vec<u8> = (0..64u32 * 64)
            .flat_map(|i| [(i % 64 * 4) as u8, (i / 64 * 4) as u8, 128])
            .collect();
        let image = Image::new(64, 64, PixelLayout::Rgb8, data.clone());
        let mut gif = GifAnimation::new(64, 64, 3).expect("new");
        gif.add(&image, 70).expect("frame 1");
        gif.add(&image, 1000).expect("frame 2");
        let bytes = gif.finish().expect("finish");
        let (frames, repeat, _) = decode(&bytes);
        // Played 3 times: 2 repeats after the first.
        assert_eq!(repeat, gif::Repeat::Finite(2));
        assert_eq!(frames.iter().map(|f| f.1).collect::<Vec<_>>(), [7, 100]);
        let rgba = &frames[0].0;
        let error: f64 = rgba
            .chunks_exact(4)
            .zip(data.chunks_exact(3))
            .map(|(a, b)| (0..3).map(|c| f64::from(a[c].abs_diff(b[c]))).sum::<f64>())
            .sum::<f64>()
            / (64.0 * 64.0 * 3.0);
        // A smooth 2-D ramp is NeuQuant's worst case (6.6 here; a photograph is under 3).
        assert!(error < 8.0, "mean error {error}");
        assert!(rgba.chunks_exact(4).all(|p| p[3] == 255));
    }
}
