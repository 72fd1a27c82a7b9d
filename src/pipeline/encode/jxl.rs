//! JPEG XL output through libjxl 0.7 (Debian's libjxl-dev, through our own bindings generated
//! from its headers at build time, `jxl_ffi`): one frame,
//! 8 bits per sample, tagged sRGB (every output is sRGB), a bare codestream (no container, so
//! no boxes and no metadata), alpha kept as an extra channel. Below `q=100` the frame is lossy
//! VarDCT in XYB at the distance [`distance`] maps `q` to; at `q=100` it is lossless modular
//! in the original RGB. libjxl runs on the calling render thread: no parallel runner is set,
//! so it never starts threads of its own (the render pool already has one thread per core).
//!
//! Unsafe code, as for libaom: every libjxl call is in `Session`, whose `Drop` destroys the
//! encoder (and with it the frame settings it owns) on every path.

use std::ffi::c_int;
use std::mem::MaybeUninit;
use std::ptr;

use super::jxl_ffi as jxl;
use jxl::{JxlEncoderStatus as Status, JxlExtraChannelType, JxlPixelFormat};

use super::super::{Image, PipelineError, PixelLayout};
use super::{gray_plane, internal};

/// libjxl 0.7's largest accepted distance.
const MAX_DISTANCE: f32 = 15.0;

/// The highest effort used for lossless frames, whatever `encode.jxl_effort` says: on the
/// comparison photos at 800 px, lossless effort 3 took 56 ms, 4 took 266 ms and 5 took 1170 ms
/// for 1.5 % and 1.9 % fewer bytes (benches/RESULTS.md, "JPEG XL output").
const MAX_LOSSLESS_EFFORT: u8 = 3;

/// The butteraugli distance for a URL's `q` (1-99; 100 is lossless and never asks). Our own
/// curve with the shape of libjxl's later `JxlEncoderDistanceFromQuality` (0.9+): from `q=30`
/// up, 0.09 distance per point below 100 plus 0.1, so `q=90` is distance 1.0 ("visually
/// lossless"), 80 is 1.9, 75 is 2.35, 50 is 4.6, 30 is 6.4; below 30 a straight line from 6.4
/// to libjxl 0.7's maximum, 15, at `q=1`.
pub(super) fn distance(quality: u8) -> f32 {
    let q = f32::from(quality.clamp(1, 99));
    if q >= 30.0 {
        0.1 + (100.0 - q) * 0.09
    } else {
        let at_30 = 0.1 + 70.0 * 0.09;
        at_30 + (30.0 - q) * (MAX_DISTANCE - at_30) / 29.0
    }
}

/// Encodes `image` (already checked: non-empty, buffer of the right size) as JPEG XL: lossless
/// when `quality` is 100 (at most [`MAX_LOSSLESS_EFFORT`]), else lossy at [`distance`].
/// `effort` is libjxl's 1 (fast) to 9.
pub(super) fn encode(image: &Image, quality: u8, effort: u8) -> Result<Vec<u8>, PipelineError> {
    let alpha = image.layout == PixelLayout::Rgba8;
    // Grey pictures (R = G = B everywhere) are written with one colour channel.
    let gray = gray_plane(image, true);
    let (pixels, color_channels) = match &gray {
        Some(plane) => (plane.as_slice(), 1),
        None => (image.data.as_slice(), 3),
    };
    let lossless = quality >= 100;
    let effort = if lossless {
        effort.min(MAX_LOSSLESS_EFFORT)
    } else {
        effort
    };
    let frame = Frame {
        pixels,
        width: image.width,
        height: image.height,
        color_channels,
        alpha,
        lossless,
        distance: distance(quality),
        effort: i64::from(effort.clamp(1, 9)),
    };
    let session = Session::new()?;
    session.encode(&frame)
}

/// One picture to encode: interleaved 8-bit samples, `color_channels` (1 or 3) plus alpha.
struct Frame<'a> {
    pixels: &'a [u8],
    width: u32,
    height: u32,
    color_channels: u32,
    alpha: bool,
    lossless: bool,
    distance: f32,
    effort: i64,
}

/// One libjxl encoder, destroyed on drop.
struct Session {
    enc: *mut jxl::JxlEncoder,
}

fn check(status: Status, what: &str) -> Result<(), PipelineError> {
    if status == Status::JXL_ENC_SUCCESS {
        Ok(())
    } else {
        Err(internal("jxl", format!("{what} failed ({status:?})")))
    }
}

impl Session {
    fn new() -> Result<Self, PipelineError> {
        // SAFETY: a null memory manager asks for libjxl's default allocator; the result is
        // checked for null before use and owned by `Session` (destroyed once, in `Drop`).
        #[expect(unsafe_code)]
        let enc = unsafe { jxl::JxlEncoderCreate(ptr::null()) };
        if enc.is_null() {
            return Err(internal("jxl", "JxlEncoderCreate returned null"));
        }
        Ok(Session { enc })
    }

    fn encode(&self, frame: &Frame<'_>) -> Result<Vec<u8>, PipelineError> {
        let channels = frame.color_channels + u32::from(frame.alpha);
        let expected = frame.width as usize * frame.height as usize * channels as usize;
        if frame.pixels.len() != expected {
            return Err(internal("jxl", "pixel buffer of the wrong size"));
        }
        let format = JxlPixelFormat {
            num_channels: channels,
            data_type: jxl::JxlDataType::JXL_TYPE_UINT8,
            endianness: jxl::JxlEndianness::JXL_NATIVE_ENDIAN,
            align: 0,
        };
        // SAFETY: `self.enc` is a live encoder (see `new`). Every struct handed to libjxl is
        // zeroed (so the padding and any number libjxl's initialiser leaves alone hold
        // initialised bytes), then initialised by libjxl's own `Init`/`SetTo` function, which
        // gives every enum field a valid value, then only plain fields are changed; libjxl
        // copies what it is given. The frame settings belong to the
        // encoder and are not used after it. `JxlEncoderAddImageFrame` reads exactly
        // `pixels.len()` bytes, which hold `width x height x channels` samples (checked
        // above); it copies them before returning. `JxlEncoderProcessOutput` writes at most
        // `avail` bytes at `next`, which points into `out` with `avail` bytes after it, and
        // advances both; `written` is derived from what it left.
        #[expect(unsafe_code)]
        unsafe {
            let mut info = MaybeUninit::<jxl::JxlBasicInfo>::zeroed();
            jxl::JxlEncoderInitBasicInfo(info.as_mut_ptr());
            let mut info = info.assume_init();
            info.xsize = frame.width;
            info.ysize = frame.height;
            info.bits_per_sample = 8;
            info.exponent_bits_per_sample = 0;
            info.num_color_channels = frame.color_channels;
            // Lossy frames are coded in XYB (libjxl's perceptual space, where its distance
            // means what it says); lossless ones keep the samples as given.
            info.uses_original_profile = c_int::from(frame.lossless);
            if frame.alpha {
                info.num_extra_channels = 1;
                info.alpha_bits = 8;
                info.alpha_exponent_bits = 0;
            }
            check(
                jxl::JxlEncoderSetBasicInfo(self.enc, &info),
                "JxlEncoderSetBasicInfo",
            )?;
            if frame.alpha {
                let mut extra = MaybeUninit::<jxl::JxlExtraChannelInfo>::zeroed();
                jxl::JxlEncoderInitExtraChannelInfo(
                    JxlExtraChannelType::JXL_CHANNEL_ALPHA,
                    extra.as_mut_ptr(),
                );
                let mut extra = extra.assume_init();
                extra.bits_per_sample = 8;
                extra.exponent_bits_per_sample = 0;
                check(
                    jxl::JxlEncoderSetExtraChannelInfo(self.enc, 0, &extra),
                    "JxlEncoderSetExtraChannelInfo",
                )?;
            }
            let mut color = MaybeUninit::<jxl::JxlColorEncoding>::zeroed();
            jxl::JxlColorEncodingSetToSRGB(
                color.as_mut_ptr(),
                c_int::from(frame.color_channels == 1),
            );
            check(
                jxl::JxlEncoderSetColorEncoding(self.enc, color.as_ptr()),
                "JxlEncoderSetColorEncoding",
            )?;

            let settings = jxl::JxlEncoderFrameSettingsCreate(self.enc, ptr::null());
            if settings.is_null() {
                return Err(internal(
                    "jxl",
                    "JxlEncoderFrameSettingsCreate returned null",
                ));
            }
            check(
                jxl::JxlEncoderFrameSettingsSetOption(
                    settings,
                    jxl::JxlEncoderFrameSettingId::JXL_ENC_FRAME_SETTING_EFFORT,
                    frame.effort,
                ),
                "effort",
            )?;
            if frame.lossless {
                check(
                    jxl::JxlEncoderSetFrameLossless(settings, c_int::from(true)),
                    "JxlEncoderSetFrameLossless",
                )?;
            } else {
                check(
                    jxl::JxlEncoderSetFrameDistance(settings, frame.distance),
                    "JxlEncoderSetFrameDistance",
                )?;
            }
            check(
                jxl::JxlEncoderAddImageFrame(
                    settings,
                    &format,
                    frame.pixels.as_ptr().cast(),
                    frame.pixels.len(),
                ),
                "JxlEncoderAddImageFrame",
            )?;
            jxl::JxlEncoderCloseInput(self.enc);

            let mut out = vec![0u8; (frame.pixels.len() / 8).max(4096)];
            let mut written = 0usize;
            loop {
                let mut next = out.as_mut_ptr().add(written);
                let mut avail = out.len() - written;
                let status = jxl::JxlEncoderProcessOutput(self.enc, &mut next, &mut avail);
                written = out.len() - avail;
                match status {
                    Status::JXL_ENC_NEED_MORE_OUTPUT => out.resize(out.len() * 2, 0),
                    other => {
                        check(other, "JxlEncoderProcessOutput")?;
                        break;
                    }
                }
            }
            out.truncate(written);
            Ok(out)
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: `enc` came from `JxlEncoderCreate`, is non-null, and is destroyed only here.
        #[expect(unsafe_code)]
        unsafe {
            jxl::JxlEncoderDestroy(self.enc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_follows_the_documented_curve() {
        let close = |q: u8, d: f32| (distance(q) - d).abs() < 1e-4;
        assert!(close(90, 1.0));
        assert!(close(80, 1.9));
        assert!(close(75, 2.35));
        assert!(close(50, 4.6));
        assert!(close(30, 6.4));
        assert!(close(1, MAX_DISTANCE));
        assert!(close(0, MAX_DISTANCE));
        assert!(
            close(100, 0.19),
            "100 is lossless and never asks; 99's distance"
        );
        // Monotone: a higher q never gives a larger distance.
        for q in 1..99u8 {
            assert!(distance(q + 1) < distance(q), "q {q}");
        }
    }
}
