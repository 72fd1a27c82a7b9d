//! libaom as the AV1 encoder of opaque 4:2:0 AVIF: one key frame in all-intra mode, set up as
//! libavif sets it up for a still image (fixed quantizer, `still_picture` header, image-quality
//! tuning, or SSIM before libaom 3.12, no post-processing of the reconstruction nobody will
//! reference), so a URL's `q` at a given speed gives what thumbor, sharp and imgproxy give for
//! the same quality.
//!
//! The only unsafe code of the encoders: libaom's C API through `aom-sys` (no maintained safe
//! binding exposes all-intra usage, 10-bit input and the encoder controls). Every call is in
//! `Session`, whose `Drop` releases the encoder and the image on every path.

use std::ffi::{CStr, c_int, c_uint};
use std::ptr;

use aom_sys as aom;

use super::super::PipelineError;
use super::internal;

/// Planes of one picture at 4:2:0: `Y` then `U`, `V`, rows contiguous, `width` x `height` luma
/// samples (chroma rounded up). `T` is `u8` for 8 bits or `u16` for 10.
pub(super) struct Planes<'a, T> {
    pub(super) planes: [&'a [T]; 3],
    pub(super) width: u32,
    pub(super) height: u32,
}

/// Sample types libaom takes: how many bytes each and the image format that carries them.
pub(super) trait Sample: Copy {
    const BYTES: usize;
    const DEPTH: u32;
    const FORMAT: aom::aom_img_fmt::Type;
}

impl Sample for u8 {
    const BYTES: usize = 1;
    const DEPTH: u32 = 8;
    const FORMAT: aom::aom_img_fmt::Type = aom::aom_img_fmt::AOM_IMG_FMT_I420;
}

impl Sample for u16 {
    const BYTES: usize = 2;
    const DEPTH: u32 = 10;
    const FORMAT: aom::aom_img_fmt::Type = aom::aom_img_fmt::AOM_IMG_FMT_I42016;
}

/// Encodes one picture and returns its AV1 payload (a temporal unit of OBUs). `quantizer` is
/// aom's 0-63 scale; `speed` is aom's `cpu-used`, 0 (slowest) to 9.
pub(super) fn encode<T: Sample>(
    picture: &Planes<'_, T>,
    quantizer: u8,
    speed: u8,
) -> Result<Vec<u8>, PipelineError> {
    let mut session = Session::new(picture, quantizer, speed)?;
    session.fill(picture);
    session.run()
}

/// One encoder and one image, released together.
struct Session {
    ctx: aom::aom_codec_ctx_t,
    image: *mut aom::aom_image_t,
    initialised: bool,
}

/// BT.709 primaries, sRGB transfer, BT.601 matrix, full range: what the RGB -> YUV conversion
/// in `avif.rs` produced. The container carries no `colr` box (these are avif-serialize's
/// defaults, which it leaves out), so readers take them from this sequence header.
const PRIMARIES: c_int = 1;
const TRANSFER: c_int = 13;
const MATRIX: c_int = 6;

/// The tuning libavif 1.4 gives a still picture when libaom has it: `AOM_TUNE_IQ` (libaom
/// 3.12+: quantisation matrices, perceptual delta-q for luma and chroma, CDEF and sharpness set
/// for stills). On the comparison photos at 800 px it gives about 14 % fewer bytes than SSIM
/// tuning at equal DSSIM (benches/RESULTS.md, "AVIF with libaom 3.12's image-quality
/// tuning"). Older libaom (Debian 12's 3.6) gets SSIM tuning, libavif's choice before.
#[cfg(aom_tune_iq)]
const TUNING: aom::aom_tune_metric::Type = aom::aom_tune_metric::AOM_TUNE_IQ;
#[cfg(not(aom_tune_iq))]
const TUNING: aom::aom_tune_metric::Type = aom::aom_tune_metric::AOM_TUNE_SSIM;

/// How fast the quantizer rises as the URL's `q` falls (hundredths of a step per point), so
/// that `q=60` gives about the DSSIM of thumbor's `quality=60` (libavif 1.4 with libaom 3.14,
/// image-quality tuning) on the comparison corpus. With the image-quality tuning libaom spends
/// more bits at a given quantizer, and thumbor's q60 falls at quantizer 30, so the slope is
/// 0.75 (measured, benches/RESULTS.md); with SSIM tuning it is libavif's own 0.63.
#[cfg(aom_tune_iq)]
pub(super) const QUANTIZER_SLOPE: u16 = 75;
#[cfg(not(aom_tune_iq))]
pub(super) const QUANTIZER_SLOPE: u16 = 63;

/// The largest picture sent to libaom: AV1 level 6.3's frame limits. Past them libaom 3.6.0
/// writes level 7.x headers that later decoders refuse (fixed in 3.6.1, which Debian 12's
/// 3.6.0-1+deb12u2 backports under the old version number); `avif.rs` gives larger pictures to
/// rav1e. `limits.avif_max_side` (4000 by default) keeps every picture below them anyway.
pub(super) const MAX_WIDTH: u32 = 16384;
pub(super) const MAX_HEIGHT: u32 = 8704;
impl Session {
    fn new<T: Sample>(
        picture: &Planes<'_, T>,
        quantizer: u8,
        speed: u8,
    ) -> Result<Self, PipelineError> {
        let quantizer = c_uint::from(quantizer.min(63));
        #[expect(unsafe_code, reason = "libaom's C API; see the module doc")]
        // SAFETY: `aom_codec_enc_config_default` fills the whole config it is given (on error it
        // is not used); `aom_img_alloc` with a null image allocates a new one or returns null,
        // checked below; the context is zeroed before `aom_codec_enc_init_ver`, which fills it,
        // and `initialised` records whether `Drop` may destroy it. The ABI version is the one of
        // the headers the bindings were generated from, so a mismatched library refuses to init.
        unsafe {
            let iface = aom::aom_codec_av1_cx();
            let mut cfg = std::mem::MaybeUninit::<aom::aom_codec_enc_cfg_t>::zeroed();
            let err = aom::aom_codec_enc_config_default(
                iface,
                cfg.as_mut_ptr(),
                aom::AOM_USAGE_ALL_INTRA,
            );
            if err != aom::aom_codec_err_t::AOM_CODEC_OK {
                return Err(internal("avif", "libaom: no default configuration"));
            }
            let mut cfg = cfg.assume_init();
            cfg.g_w = picture.width;
            cfg.g_h = picture.height;
            cfg.g_profile = 0;
            cfg.g_bit_depth = T::DEPTH;
            cfg.g_input_bit_depth = T::DEPTH;
            cfg.g_threads = 1;
            cfg.g_limit = 1;
            cfg.g_lag_in_frames = 0;
            cfg.kf_mode = aom::aom_kf_mode::AOM_KF_DISABLED;
            cfg.kf_max_dist = 0;
            cfg.rc_end_usage = aom::aom_rc_mode::AOM_Q;
            cfg.rc_min_quantizer = quantizer;
            cfg.rc_max_quantizer = quantizer;

            let image = aom::aom_img_alloc(
                ptr::null_mut(),
                T::FORMAT,
                picture.width,
                picture.height,
                16,
            );
            if image.is_null() {
                return Err(internal("avif", "libaom: no image buffer"));
            }
            let mut session = Session {
                ctx: std::mem::zeroed(),
                image,
                initialised: false,
            };
            let flags = if T::DEPTH > 8 {
                aom::AOM_CODEC_USE_HIGHBITDEPTH as aom::aom_codec_flags_t
            } else {
                0
            };
            let err = aom::aom_codec_enc_init_ver(
                &mut session.ctx,
                iface,
                &cfg,
                flags,
                aom::AOM_ENCODER_ABI_VERSION as c_int,
            );
            if err != aom::aom_codec_err_t::AOM_CODEC_OK {
                // After a failed init the context's detail may point at freed memory.
                return Err(internal(
                    "avif",
                    format!("libaom init failed (error {err})"),
                ));
            }
            session.initialised = true;
            let id = |c: aom::aome_enc_control_id::Type| c as c_int;
            // The tuning first: a libaom older than the headers (a shared library swapped
            // under the binary) refuses IQ, and then gets SSIM rather than failing the encode.
            let tuning = id(aom::aome_enc_control_id::AOME_SET_TUNING);
            if aom::aom_codec_control(&mut session.ctx, tuning, TUNING as c_int)
                != aom::aom_codec_err_t::AOM_CODEC_OK
                && aom::aom_codec_control(
                    &mut session.ctx,
                    tuning,
                    aom::aom_tune_metric::AOM_TUNE_SSIM as c_int,
                ) != aom::aom_codec_err_t::AOM_CODEC_OK
            {
                return Err(session.error("tuning"));
            }
            let controls: [(c_int, c_int); 6] = [
                (
                    id(aom::aome_enc_control_id::AOME_SET_CPUUSED),
                    c_int::from(speed.min(9)),
                ),
                (
                    id(aom::aome_enc_control_id::AOME_SET_CQ_LEVEL),
                    quantizer as c_int,
                ),
                (
                    id(aom::aome_enc_control_id::AV1E_SET_COLOR_RANGE),
                    aom::aom_color_range::AOM_CR_FULL_RANGE as c_int,
                ),
                (
                    id(aom::aome_enc_control_id::AV1E_SET_COLOR_PRIMARIES),
                    PRIMARIES,
                ),
                (
                    id(aom::aome_enc_control_id::AV1E_SET_TRANSFER_CHARACTERISTICS),
                    TRANSFER,
                ),
                (
                    id(aom::aome_enc_control_id::AV1E_SET_MATRIX_COEFFICIENTS),
                    MATRIX,
                ),
            ];
            for (control, value) in controls {
                if aom::aom_codec_control(&mut session.ctx, control, value)
                    != aom::aom_codec_err_t::AOM_CODEC_OK
                {
                    return Err(session.error("control"));
                }
            }
            // Only spares filtering the reconstruction, which nothing references in a still
            // picture: best effort, as libavif treats it (libaom before 3.6 lacks it).
            let _ = aom::aom_codec_control(
                &mut session.ctx,
                id(aom::aome_enc_control_id::AV1E_SET_SKIP_POSTPROC_FILTERING),
                1 as c_uint,
            );
            (*image).range = aom::aom_color_range::AOM_CR_FULL_RANGE;
            (*image).cp = PRIMARIES as aom::aom_color_primaries_t;
            (*image).tc = TRANSFER as aom::aom_transfer_characteristics_t;
            (*image).mc = MATRIX as aom::aom_matrix_coefficients_t;
            Ok(session)
        }
    }

    /// Copies the planes into libaom's image, row by row (its rows are padded to 16 bytes).
    fn fill<T: Sample>(&mut self, picture: &Planes<'_, T>) {
        let (w, h) = (picture.width as usize, picture.height as usize);
        let sizes = [
            (w, h),
            (w.div_ceil(2), h.div_ceil(2)),
            (w.div_ceil(2), h.div_ceil(2)),
        ];
        for (index, (source, (width, height))) in picture.planes.iter().zip(sizes).enumerate() {
            #[expect(unsafe_code, reason = "libaom's C API; see the module doc")]
            // SAFETY: `aom_img_alloc` made an image of exactly this format and size, so plane
            // `index` has at least `height` rows of `stride` bytes, each at least `width`
            // samples of `T::BYTES`; `source` holds `width * height` samples (checked by the
            // caller's construction, asserted here), and the two buffers cannot overlap.
            unsafe {
                let stride = (*self.image).stride[index] as usize;
                let base = (*self.image).planes[index];
                assert!(source.len() >= width * height && stride >= width * T::BYTES);
                for (y, row) in source.chunks_exact(width).take(height).enumerate() {
                    ptr::copy_nonoverlapping(
                        row.as_ptr().cast::<u8>(),
                        base.add(y * stride),
                        width * T::BYTES,
                    );
                }
            }
        }
    }

    /// Encodes the one frame, flushes, and gathers every frame packet.
    fn run(&mut self) -> Result<Vec<u8>, PipelineError> {
        let mut av1 = Vec::new();
        #[expect(unsafe_code, reason = "libaom's C API; see the module doc")]
        // SAFETY: the context was initialised (`new` returns a session only then) and the image
        // is the one allocated for it; a packet pointer returned by `aom_codec_get_cx_data` is
        // valid until the next call on the context, and its frame buffer holds `sz` bytes, which
        // are copied out before that call.
        unsafe {
            for image in [self.image.cast_const(), ptr::null()] {
                if aom::aom_codec_encode(&mut self.ctx, image, 0, 1, 0)
                    != aom::aom_codec_err_t::AOM_CODEC_OK
                {
                    return Err(self.error("encode"));
                }
                let mut iter: aom::aom_codec_iter_t = ptr::null();
                loop {
                    let packet = aom::aom_codec_get_cx_data(&mut self.ctx, &mut iter);
                    if packet.is_null() {
                        break;
                    }
                    let frame = (*packet).data.frame;
                    if (*packet).kind == aom::aom_codec_cx_pkt_kind::AOM_CODEC_CX_FRAME_PKT
                        && frame.sz > 0
                        && !frame.buf.is_null()
                    {
                        av1.extend_from_slice(std::slice::from_raw_parts(
                            frame.buf.cast::<u8>(),
                            frame.sz,
                        ));
                    }
                }
            }
        }
        if av1.is_empty() {
            return Err(internal("avif", "libaom returned no frame"));
        }
        Ok(av1)
    }

    /// libaom's message and detail for the last failure of an initialised encoder.
    fn error(&mut self, step: &str) -> PipelineError {
        #[expect(unsafe_code, reason = "libaom's C API; see the module doc")]
        // SAFETY: called only on an initialised context (a failed init never gets here);
        // `aom_codec_error` returns a static NUL-terminated string and `aom_codec_error_detail`
        // a context-owned one or null; both are copied before the context changes.
        let (message, detail) = unsafe {
            let text = |p: *const std::ffi::c_char| {
                (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
            };
            (
                text(aom::aom_codec_error(&raw mut self.ctx)).unwrap_or_default(),
                text(aom::aom_codec_error_detail(&raw mut self.ctx)),
            )
        };
        let detail = detail.map(|d| format!(" ({d})")).unwrap_or_default();
        internal("avif", format!("libaom {step}: {message}{detail}"))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        #[expect(unsafe_code, reason = "libaom's C API; see the module doc")]
        // SAFETY: the context is destroyed only if `aom_codec_enc_init_ver` succeeded, and the
        // image was allocated by `aom_img_alloc`; neither is used after this.
        unsafe {
            if self.initialised {
                aom::aom_codec_destroy(&mut self.ctx);
            }
            aom::aom_img_free(self.image);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The linked libaom is the one the bindings and the tuning were compiled for, and where
    /// the suite must run as CI runs it (`TEST_IMGNODE_STRICT=1`, after `tests/setup.sh`),
    /// that is a libaom with the image-quality tuning.
    #[test]
    fn the_linked_libaom_has_the_tuning_compiled_in() {
        #[expect(unsafe_code, reason = "libaom's C API; see the module doc")]
        // SAFETY: `aom_codec_version` takes nothing and returns a packed integer.
        let version = unsafe { aom::aom_codec_version() };
        let (major, minor) = ((version >> 16) & 0xff, (version >> 8) & 0xff);
        #[cfg(aom_tune_iq)]
        assert!((major, minor) >= (3, 12), "linked libaom {major}.{minor}");
        #[cfg(not(aom_tune_iq))]
        if std::env::var_os("TEST_IMGNODE_STRICT").is_some() {
            panic!("built against libaom {major}.{minor}, without AOM_TUNE_IQ: run tests/setup.sh");
        }
    }
}
