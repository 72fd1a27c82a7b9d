//! Animated WebP through libwebp's WebPAnimEncoder (the bundled libwebp of `libwebp-sys`), fed
//! one frame at a time: the encoder compresses each frame as it comes (keeping only its
//! small encoded candidates), so no list of full frames is ever held. The `webp` crate's
//! `AnimEncoder` would hold every frame until the end and ends the last frame at timestamp 0.
//!
//! Frames are lossy at the URL's quality with the operator's method, as stills are; alpha is
//! kept. libwebp picks sub-rectangles and blending between frames itself.

use std::ptr::NonNull;

use libwebp_sys as sys;

use super::super::{Image, PipelineError, PixelLayout};
use super::internal;

/// An animated WebP being written.
pub(crate) struct WebpAnimation {
    encoder: NonNull<sys::WebPAnimEncoder>,
    config: sys::WebPConfig,
    size: (u32, u32),
    /// The next frame's start, in milliseconds.
    timestamp: i32,
}

impl WebpAnimation {
    /// A `width` x `height` animation playing `loop_count` times (0 forever).
    #[expect(
        unsafe_code,
        reason = "libwebp's animation encoder; no safe binding streams frames"
    )]
    pub(crate) fn new(
        width: u32,
        height: u32,
        loop_count: u16,
        quality: u8,
        method: u8,
    ) -> Result<Self, PipelineError> {
        let mut config = sys::WebPConfig::new().map_err(|()| internal("webp", "config init"))?;
        config.lossless = 0;
        config.quality = f32::from(quality);
        config.method = i32::from(method.min(6));
        config.alpha_compression = 1;
        config.alpha_quality = 100;
        let side = |v: u32| i32::try_from(v).map_err(|_| internal("webp", "canvas too large"));
        let (w, h) = (side(width)?, side(height)?);
        let mut options = std::mem::MaybeUninit::<sys::WebPAnimEncoderOptions>::uninit();
        // SAFETY: OptionsInit writes every field of the options struct (or fails on an ABI
        // mismatch, checked); the struct is only read after it succeeded. EncoderNew copies
        // the options and returns an owned encoder or null, checked; it is deleted in `Drop`.
        let encoder = unsafe {
            let abi = sys::WEBP_MUX_ABI_VERSION as i32;
            if sys::WebPAnimEncoderOptionsInitInternal(options.as_mut_ptr(), abi) == 0 {
                return Err(internal("webp", "animation options init"));
            }
            let mut options = options.assume_init();
            options.anim_params.loop_count = i32::from(loop_count);
            // Transparent: what browsers show under a frame anyway.
            options.anim_params.bgcolor = 0;
            options.allow_mixed = 0;
            sys::WebPAnimEncoderNewInternal(w, h, &options, abi)
        };
        let encoder = NonNull::new(encoder).ok_or_else(|| internal("webp", "encoder init"))?;
        Ok(WebpAnimation {
            encoder,
            config,
            size: (width, height),
            timestamp: 0,
        })
    }

    /// Adds a frame of the canvas size, shown for `delay_ms` (at least 1).
    #[expect(
        unsafe_code,
        reason = "libwebp's animation encoder; no safe binding streams frames"
    )]
    pub(crate) fn add(&mut self, image: &Image, delay_ms: u32) -> Result<(), PipelineError> {
        if (image.width, image.height) != self.size
            || image.data.len() != image.stride() * image.height as usize
        {
            return Err(internal("webp", "frame size differs from the canvas"));
        }
        let mut picture = sys::WebPPicture::new().map_err(|()| internal("webp", "picture"))?;
        picture.use_argb = 1;
        picture.width = self.size.0 as i32;
        picture.height = self.size.1 as i32;
        let stride = i32::try_from(image.stride()).map_err(|_| internal("webp", "stride"))?;
        // SAFETY: the import reads `height` rows of `stride` bytes from `image.data`, whose
        // length was checked above, into a buffer the picture allocates and owns; Add copies
        // the picture into the encoder's own canvas before returning (it keeps no pointer to
        // it), so the picture is freed right after, on every path.
        let added = unsafe {
            let imported = match image.layout {
                PixelLayout::Rgb8 => {
                    sys::WebPPictureImportRGB(&mut picture, image.data.as_ptr(), stride)
                }
                PixelLayout::Rgba8 => {
                    sys::WebPPictureImportRGBA(&mut picture, image.data.as_ptr(), stride)
                }
            };
            let added = imported != 0
                && sys::WebPAnimEncoderAdd(
                    self.encoder.as_ptr(),
                    &mut picture,
                    self.timestamp,
                    &self.config,
                ) != 0;
            sys::WebPPictureFree(&mut picture);
            added
        };
        if !added {
            return Err(internal("webp", self.error()));
        }
        let delay = i32::try_from(delay_ms.max(1)).unwrap_or(i32::MAX);
        self.timestamp = self.timestamp.saturating_add(delay);
        Ok(())
    }

    /// The finished file.
    #[expect(
        unsafe_code,
        reason = "libwebp's animation encoder; no safe binding streams frames"
    )]
    pub(crate) fn finish(self) -> Result<Vec<u8>, PipelineError> {
        let mut data = sys::WebPData::default();
        // SAFETY: a null picture flushes the encoder, the timestamp ending the last frame.
        // Assemble writes a buffer libwebp allocated into `data` (checked), which is copied
        // out and freed with WebPDataClear; the encoder is deleted by `Drop`.
        unsafe {
            let enc = self.encoder.as_ptr();
            let flushed = sys::WebPAnimEncoderAdd(
                enc,
                std::ptr::null_mut(),
                self.timestamp,
                std::ptr::null(),
            ) != 0;
            if !flushed || sys::WebPAnimEncoderAssemble(enc, &mut data) == 0 || data.bytes.is_null()
            {
                return Err(internal("webp", self.error()));
            }
            let bytes = std::slice::from_raw_parts(data.bytes, data.size).to_vec();
            sys::WebPDataClear(&mut data);
            Ok(bytes)
        }
    }

    #[expect(
        unsafe_code,
        reason = "libwebp's animation encoder; no safe binding streams frames"
    )]
    fn error(&self) -> String {
        // SAFETY: the encoder is live; the message is a NUL-terminated string it owns, copied
        // before any other call.
        unsafe {
            let message = sys::WebPAnimEncoderGetError(self.encoder.as_ptr());
            if message.is_null() {
                "animation encoder failed".to_string()
            } else {
                std::ffi::CStr::from_ptr(message)
                    .to_string_lossy()
                    .into_owned()
            }
        }
    }
}

impl Drop for WebpAnimation {
    #[expect(
        unsafe_code,
        reason = "libwebp's animation encoder; no safe binding streams frames"
    )]
    fn drop(&mut self) {
        // SAFETY: the encoder was created by WebPAnimEncoderNew and is deleted exactly once.
        unsafe { sys::WebPAnimEncoderDelete(self.encoder.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    #[test]
    fn frames_delays_and_loop_count_survive() {
        let frame = |v: u8, layout: PixelLayout| {
            let c = layout.channels();
            let data = (0..32 * 24)
                .flat_map(|i| {
                    let mut px = vec![v, (i % 32 * 8) as u8, 255 - v];
                    if c == 4 {
                        px.push(if i % 32 < 16 { 255 } else { 0 });
                    }
                    px
                })
                .collect();
            Image::new(32, 24, layout, data)
        };
        let mut anim = WebpAnimation::new(32, 24, 2, 90, 4).expect("new");
        anim.add(&frame(0, PixelLayout::Rgba8), 100).expect("1");
        anim.add(&frame(200, PixelLayout::Rgba8), 250).expect("2");
        anim.add(&frame(90, PixelLayout::Rgb8), 40).expect("3");
        let bytes = anim.finish().expect("finish");
        let mut decoder = image_webp::WebPDecoder::new(Cursor::new(&bytes)).expect("header");
        assert!(decoder.is_animated());
        assert_eq!(decoder.num_frames(), 3);
        assert_eq!(decoder.dimensions(), (32, 24));
        assert_eq!(
            decoder.loop_count(),
            image_webp::LoopCount::Times(std::num::NonZeroU16::new(2).expect("2"))
        );
        let mut buf = vec![0; decoder.output_buffer_size().expect("size")];
        let mut delays = Vec::new();
        let mut reds = Vec::new();
        for _ in 0..3 {
            delays.push(decoder.read_frame(&mut buf).expect("frame"));
            reds.push(buf[0]);
        }
        assert_eq!(delays, [100, 250, 40]);
        assert!(
            reds[0] < 20 && reds[1] > 180 && reds[2].abs_diff(90) < 20,
            "{reds:?}"
        );
    }
}
