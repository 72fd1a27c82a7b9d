//! HEIC/HEIF: the container's declarations checked against the limits here (the box walk is
//! AVIF's, `avif::declarations`), then libheif 1.15 (Debian's libheif1, HEVC through
//! libde265) parses the file and decodes the primary image: grid assembly, `irot`/`imir`/`clap`
//! and YCbCr to RGB are libheif's.
//!
//! Owns the libheif session (`Context`, `Handle`, `Decoded`, each released by its `Drop` on
//! every path) and the step from libheif's interleaved RGB(A), 8 or 16 bits a sample, to the
//! pipeline's Rgb8/Rgba8. Must never let libheif see a file whose declarations are over the
//! limits, never trust libheif's output size (checked against the header), never apply the
//! EXIF Orientation of a HEIF file (libheif has already applied `irot`/`imir`, which is the
//! orientation a HEIF reader must honour; Apple's files carry both, describing the same turn,
//! so honouring EXIF too would turn the picture twice), and never panic on input.
//!
//! The only unsafe code of the decoders besides libwebp's scaled decode: libheif's C API
//! through `libheif-sys` (see Cargo.toml for why not `libheif-rs`).

use std::ffi::CStr;
use std::ptr;
use std::sync::Once;

use libheif_sys as lh;

use super::super::spec::{Limits, SourceFormat};
use super::super::{Image, PipelineError, PixelLayout};
use super::avif::{self, Nclx};
use super::corrupt;

fn bad(why: impl std::fmt::Display) -> PipelineError {
    corrupt(SourceFormat::Heic, why)
}

/// Item types that are images (coded, or derived from other images).
const IMAGE_TYPES: [&[u8; 4]; 6] = [b"hvc1", b"grid", b"iden", b"iovl", b"av01", b"jpeg"];

/// libheif's own per-side limit in 1.15 (`MAX_IMAGE_WIDTH`/`MAX_IMAGE_HEIGHT`); it is never
/// raised, only lowered to `max_source_pixels` when that is smaller.
const LIBHEIF_MAX_SIDE: u64 = 32_768;

// --- the probe ------------------------------------------------------------------------------

/// Header facts for the probe, from libheif's parse (no pixel decoded).
pub(in super::super) struct HeicHeader {
    /// Display size: after `irot`/`clap`, as the decoder returns it.
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) has_alpha: bool,
    /// Top-level images (each a "frame" for `max_frames`).
    pub(crate) images: u32,
}

pub(in super::super) fn header(bytes: &[u8], limits: &Limits) -> Result<HeicHeader, PipelineError> {
    let images = check_declarations(bytes, limits)?;
    let context = Context::read(bytes, limits)?;
    let handle = context.primary()?;
    let (width, height) = handle.size()?;
    Ok(HeicHeader {
        width,
        height,
        has_alpha: handle.has_alpha(),
        images,
    })
}

/// Checks what the boxes declare before libheif is given the file: every image item's `ispe`
/// within `max_source_pixels`, the images a grid or overlay is derived from (which are all
/// decoded, and may repeat one tile thousands of times) together within twice that, and the
/// top-level images within `max_frames`. Answers the number of top-level images.
fn check_declarations(bytes: &[u8], limits: &Limits) -> Result<u32, PipelineError> {
    let declared = avif::declarations(bytes).map_err(|e| match e {
        // The box walk is AVIF's; its messages name AVIF.
        PipelineError::Corrupt(why) => bad(why.trim_start_matches("avif: ")),
        other => other,
    })?;
    let too_large = |what: String| PipelineError::SourceTooLarge(what);
    let size_of = |id: u32| {
        declared
            .items
            .iter()
            .find(|item| item.id == id)
            .and_then(|item| item.size)
    };
    let images: Vec<_> = declared
        .items
        .iter()
        .filter(|item| IMAGE_TYPES.contains(&&item.kind))
        .collect();
    if !images.iter().any(|item| item.id == declared.primary) {
        return Err(PipelineError::UnsupportedFormat);
    }
    for item in &images {
        let id = item.id;
        let (w, h) = item
            .size
            .ok_or_else(|| bad(format!("image item {id} has no ispe")))?;
        let pixels = u64::from(w) * u64::from(h);
        if pixels > limits.max_source_pixels {
            return Err(too_large(format!(
                "item {id} declares {w}x{h} = {pixels} pixels, limit {}",
                limits.max_source_pixels
            )));
        }
        check_hevc_size(item, (w, h))?;
    }
    for &&avif::DeclaredItem { id, .. } in &images {
        let mut pixels = 0u64;
        for &(_, _, to) in declared
            .references
            .iter()
            .filter(|(kind, from, _)| kind == b"dimg" && *from == id)
        {
            let (w, h) = size_of(to).ok_or_else(|| bad(format!("tile {to} has no ispe")))?;
            pixels = pixels.saturating_add(u64::from(w) * u64::from(h));
        }
        if pixels > limits.max_source_pixels.saturating_mul(2) {
            return Err(too_large(format!(
                "item {id} is derived from {pixels} pixels of tiles, limit {}",
                limits.max_source_pixels.saturating_mul(2)
            )));
        }
    }
    // Top level: not a tile of a derived image, an auxiliary (alpha, depth) or a thumbnail.
    let hidden = |id: u32| {
        declared.references.iter().any(|(kind, from, to)| {
            (kind == b"dimg" && *to == id) || ((kind == b"auxl" || kind == b"thmb") && *from == id)
        })
    };
    let top_level = images.iter().filter(|item| !hidden(item.id)).count();
    let top_level = u32::try_from(top_level).unwrap_or(u32::MAX);
    if top_level > limits.max_frames {
        return Err(too_large(format!(
            "{top_level} images, limit {}",
            limits.max_frames
        )));
    }
    Ok(top_level)
}

/// How much larger than its `ispe` an HEVC picture may be coded: the conformance window
/// crops at most a few coding blocks (64 px each) off the right and bottom edges.
const CODED_MARGIN: u32 = 256;

/// Every sequence parameter set of an `hvc1` item (in its `hvcC` and in its data) must code a
/// picture no larger than its `ispe` plus [`CODED_MARGIN`]: libde265 allocates its frames from
/// the SPS, so a small `ispe` in front of a huge SPS would pass every other check.
fn check_hevc_size(item: &avif::DeclaredItem<'_>, (w, h): (u32, u32)) -> Result<(), PipelineError> {
    if &item.kind != b"hvc1" {
        return Ok(());
    }
    let hvcc = item
        .hvcc
        .ok_or_else(|| bad(format!("item {} has no hvcC", item.id)))?;
    let (length_size, mut nals) = hvcc_nals(hvcc)?;
    for extent in &item.data {
        let mut at = 0usize;
        while at < extent.len() {
            let len = extent
                .get(at..at + length_size)
                .ok_or_else(|| bad("truncated NAL length"))?
                .iter()
                .fold(0usize, |n, &b| (n << 8) | usize::from(b));
            let nal = extent
                .get(at + length_size..at + length_size + len)
                .ok_or_else(|| bad("NAL unit runs past its extent"))?;
            nals.push(nal);
            at += length_size + len;
        }
    }
    for nal in nals {
        if nal.first().map(|b| (b >> 1) & 0x3f) != Some(33) {
            continue; // not an SPS
        }
        let (coded_w, coded_h) = sps_size(nal).ok_or_else(|| bad("unreadable HEVC SPS"))?;
        if coded_w > w.saturating_add(CODED_MARGIN) || coded_h > h.saturating_add(CODED_MARGIN) {
            return Err(PipelineError::SourceTooLarge(format!(
                "item {} codes {coded_w}x{coded_h} for an ispe of {w}x{h}",
                item.id
            )));
        }
    }
    Ok(())
}

/// The NAL length size of an `hvcC` and its parameter-set NAL units.
fn hvcc_nals(hvcc: &[u8]) -> Result<(usize, Vec<&[u8]>), PipelineError> {
    let short = || bad("short hvcC");
    let length_size = usize::from(hvcc.get(21).ok_or_else(short)? & 3) + 1;
    let arrays = *hvcc.get(22).ok_or_else(short)?;
    let mut at = 23usize;
    let mut nals = Vec::new();
    for _ in 0..arrays {
        let count = hvcc.get(at + 1..at + 3).ok_or_else(short)?;
        at += 3;
        for _ in 0..u16::from_be_bytes([count[0], count[1]]) {
            let len = hvcc.get(at..at + 2).ok_or_else(short)?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            nals.push(hvcc.get(at + 2..at + 2 + len).ok_or_else(short)?);
            at += 2 + len;
        }
    }
    Ok((length_size, nals))
}

/// `pic_width_in_luma_samples` and `pic_height_in_luma_samples` of an SPS NAL unit (H.265
/// 7.3.2.2), read up to there: emulation prevention removed, `profile_tier_level` skipped.
fn sps_size(nal: &[u8]) -> Option<(u32, u32)> {
    // Enough of the RBSP for everything before the size (at most about 60 bytes).
    let mut rbsp = Vec::with_capacity(64);
    let mut zeros = 0;
    for &b in nal.iter().skip(2).take(96) {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        rbsp.push(b);
    }
    let mut r = Bits { data: &rbsp, at: 0 };
    r.bits(4)?; // sps_video_parameter_set_id
    let sub_layers = r.bits(3)? as usize; // sps_max_sub_layers_minus1
    r.bits(1)?; // temporal_id_nesting
    r.skip(96)?; // general profile (88 bits) and level (8)
    let mut present = [(false, false); 8];
    for p in present.iter_mut().take(sub_layers) {
        *p = (r.bits(1)? == 1, r.bits(1)? == 1);
    }
    if sub_layers > 0 {
        r.skip(2 * (8 - sub_layers))?;
    }
    for &(profile, level) in present.iter().take(sub_layers) {
        r.skip(if profile { 88 } else { 0 } + if level { 8 } else { 0 })?;
    }
    r.ue()?; // sps_seq_parameter_set_id
    if r.ue()? == 3 {
        r.bits(1)?; // separate_colour_plane_flag
    }
    Some((r.ue()?, r.ue()?))
}

/// MSB-first bit reader over an RBSP.
struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn bits(&mut self, n: usize) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = self.data.get(self.at / 8)?;
            v = (v << 1) | u32::from((byte >> (7 - self.at % 8)) & 1);
            self.at += 1;
        }
        Some(v)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.at += n;
        (self.at <= self.data.len() * 8).then_some(())
    }

    /// Exp-Golomb `ue(v)`, up to 31 leading zeros.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bits(1)? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.bits(zeros)?;
        Some(((1u64 << zeros) - 1 + u64::from(rest)).min(u64::from(u32::MAX)) as u32)
    }
}

// --- decoding -------------------------------------------------------------------------------

/// Decodes the primary image into Rgb8/Rgba8 with its ICC profile (embedded, or made from its
/// `nclx` when that is not sRGB). The caller checks the size against the probe.
pub(super) fn decode(bytes: &[u8], limits: &Limits) -> Result<Image, PipelineError> {
    check_declarations(bytes, limits)?;
    let context = Context::read(bytes, limits)?;
    let handle = context.primary()?;
    let (width, height) = handle.size()?;
    let has_alpha = handle.has_alpha();
    let wide = handle.luma_bits() > 8;
    let chroma = match (wide, has_alpha) {
        (false, false) => lh::heif_chroma_heif_chroma_interleaved_RGB,
        (false, true) => lh::heif_chroma_heif_chroma_interleaved_RGBA,
        (true, false) => lh::heif_chroma_heif_chroma_interleaved_RRGGBB_LE,
        (true, true) => lh::heif_chroma_heif_chroma_interleaved_RRGGBBAA_LE,
    };
    let decoded = handle.decode(chroma)?;
    let (rows, stride, bits) = decoded.interleaved()?;
    if decoded.size() != (width, height) {
        return Err(bad(format!(
            "decoded {:?}, header said {width}x{height}",
            decoded.size()
        )));
    }
    let channels = if has_alpha { 4 } else { 3 };
    let row_len = width as usize * channels;
    let mut data = Vec::with_capacity(row_len * height as usize);
    for y in 0..height as usize {
        let start = y * stride;
        if wide {
            let row = rows
                .get(start..start + row_len * 2)
                .ok_or_else(|| bad("short plane"))?;
            let max = (1u32 << bits.clamp(9, 16)) - 1;
            data.extend(row.chunks_exact(2).map(|le| {
                let v = u32::from(u16::from_le_bytes([le[0], le[1]])).min(max);
                // To the nearest 8-bit value: v * 255 / max, rounded.
                ((v * 255 + max / 2) / max) as u8
            }));
        } else {
            let row = rows
                .get(start..start + row_len)
                .ok_or_else(|| bad("short plane"))?;
            data.extend_from_slice(row);
        }
    }
    drop(decoded);
    if has_alpha && handle.premultiplied() {
        avif::unpremultiply(&mut data);
    }
    let layout = if has_alpha {
        PixelLayout::Rgba8
    } else {
        PixelLayout::Rgb8
    };
    let mut image = Image::new(width, height, layout, data);
    image.icc = handle.icc()?;
    Ok(image)
}

// --- libheif --------------------------------------------------------------------------------

fn check(err: lh::heif_error) -> Result<(), PipelineError> {
    if err.code == lh::heif_error_code_heif_error_Ok {
        return Ok(());
    }
    let message = if err.message.is_null() {
        String::new()
    } else {
        #[expect(unsafe_code, reason = "libheif's C API; see the module doc")]
        // SAFETY: a non-null `message` of a `heif_error` is a NUL-terminated static string or
        // one owned by the context, which outlives this call (every caller holds it).
        unsafe { CStr::from_ptr(err.message) }
            .to_string_lossy()
            .into_owned()
    };
    if err.subcode == lh::heif_suberror_code_heif_suberror_Security_limit_exceeded {
        return Err(PipelineError::SourceTooLarge(format!("heic: {message}")));
    }
    Err(bad(format!("libheif error {}: {message}", err.code)))
}

/// A libheif context over the caller's bytes (not copied: `'a`).
struct Context<'a> {
    ctx: *mut lh::heif_context,
    _bytes: std::marker::PhantomData<&'a [u8]>,
}

impl<'a> Context<'a> {
    fn read(bytes: &'a [u8], limits: &Limits) -> Result<Context<'a>, PipelineError> {
        static INIT: Once = Once::new();
        let side = limits.max_source_pixels.min(LIBHEIF_MAX_SIDE) as i32;
        #[expect(unsafe_code, reason = "libheif's C API; see the module doc")]
        // SAFETY: `heif_init` with null parameters is libheif's documented global set-up
        // (reference-counted; never undone here). `heif_context_alloc` returns a new context
        // or null, checked; from then on `Context`'s `Drop` frees it on every path. The size
        // limit and thread count are set before the read, which is when libheif checks them.
        // `read_from_memory_without_copy` keeps a pointer to `bytes`, which outlive the
        // context (`'a`).
        unsafe {
            INIT.call_once(|| {
                let _ = lh::heif_init(ptr::null_mut());
            });
            let ctx = lh::heif_context_alloc();
            if ctx.is_null() {
                return Err(PipelineError::Internal("libheif: no context".into()));
            }
            let context = Context {
                ctx,
                _bytes: std::marker::PhantomData,
            };
            lh::heif_context_set_maximum_image_size_limit(ctx, side);
            // Grid tiles are decoded on the calling (render pool) thread, not on new ones.
            lh::heif_context_set_max_decoding_threads(ctx, 0);
            check(lh::heif_context_read_from_memory_without_copy(
                ctx,
                bytes.as_ptr().cast(),
                bytes.len(),
                ptr::null(),
            ))?;
            Ok(context)
        }
    }

    fn primary(&self) -> Result<Handle<'_>, PipelineError> {
        let mut handle = ptr::null_mut();
        #[expect(unsafe_code, reason = "libheif's C API; see the module doc")]
        // SAFETY: the context was read successfully; on success `handle` is a new reference
        // that `Handle`'s `Drop` releases, and it borrows the context (`'_`).
        unsafe {
            check(lh::heif_context_get_primary_image_handle(
                self.ctx,
                &mut handle,
            ))?;
        }
        if handle.is_null() {
            return Err(bad("no primary image"));
        }
        Ok(Handle {
            handle,
            _context: std::marker::PhantomData,
        })
    }
}

impl Drop for Context<'_> {
    fn drop(&mut self) {
        #[expect(unsafe_code, reason = "libheif's C API; see the module doc")]
        // SAFETY: `ctx` came from `heif_context_alloc` and is freed exactly once, here.
        unsafe {
            lh::heif_context_free(self.ctx)
        }
    }
}

struct Handle<'a> {
    handle: *mut lh::heif_image_handle,
    _context: std::marker::PhantomData<&'a Context<'a>>,
}

impl Handle<'_> {
    /// Display size (after transformations), checked to be positive.
    fn size(&self) -> Result<(u32, u32), PipelineError> {
        #[expect(unsafe_code, reason = "libheif's C API; see the module doc")]
        // SAFETY: `handle` is a live handle (released only by `Drop`).
        let (w, h) = unsafe {
            (
                lh::heif_image_handle_get_width(self.handle),
                lh::heif_image_handle_get_height(self.handle),
            )
        };
        match (u32::try_from(w), u32::try_from(h)) {
            (Ok(w), Ok(h)) if w > 0 && h > 0 => Ok((w, h)),
            _ => Err(bad(format!("image size {w}x{h}"))),
        }
    }

    fn has_alpha(&self) -> bool {
        #[expect(unsafe_code, reason = "libheif's C API; see the module doc")]
        // SAFETY: `handle` is a live handle.
        unsafe {
            lh::heif_image_handle_has_alpha_channel(self.handle) != 0
        }
    }

    fn premultiplied(&self) -> bool {
        #[expect(unsafe_code, reason = "libheif's C API; see the module doc")]
        // SAFETY: `handle` is a live handle.
        unsafe {
            lh::heif_image_handle_is_premultiplied_alpha(self.handle) != 0
        }
    }

    fn luma_bits(&self) -> i32 {
        #[expect(unsafe_code, reason = "libheif's C API; see the module doc")]
        // SAFETY: `handle` is a live handle.
        unsafe {
            lh::heif_image_handle_get_luma_bits_per_pixel(self.handle)
        }
    }

    /// The embedded ICC profile (`prof`/`rICC`), else one for a non-sRGB `nclx`.
    fn icc(&self) -> Result<Option<Vec<u8>>, PipelineError> {
        #[expect(unsafe_code, reason = "libheif's C API; see the module doc")]
        // SAFETY: `handle` is a live handle. The raw profile is copied into a buffer of the
        // size libheif reports for it; the nclx struct libheif allocates is read, then freed
        // with its own function, exactly once.
        unsafe {
            match lh::heif_image_handle_get_color_profile_type(self.handle) {
                lh::heif_color_profile_type_heif_color_profile_type_prof
                | lh::heif_color_profile_type_heif_color_profile_type_rICC => {
                    let size = lh::heif_image_handle_get_raw_color_profile_size(self.handle);
                    let mut icc = vec![0u8; size];
                    check(lh::heif_image_handle_get_raw_color_profile(
                        self.handle,
                        icc.as_mut_ptr().cast(),
                    ))?;
                    Ok(Some(icc))
                }
                lh::heif_color_profile_type_heif_color_profile_type_nclx => {
                    let mut nclx = ptr::null_mut();
                    check(lh::heif_image_handle_get_nclx_color_profile(
                        self.handle,
                        &mut nclx,
                    ))?;
                    if nclx.is_null() {
                        return Ok(None);
                    }
                    let profile = Nclx {
                        primaries: (*nclx).color_primaries as u16,
                        transfer: (*nclx).transfer_characteristics as u16,
                        matrix: (*nclx).matrix_coefficients as u16,
                        full_range: (*nclx).full_range_flag != 0,
                    };
                    lh::heif_nclx_color_profile_free(nclx);
                    Ok(avif::icc_for_nclx(profile))
                }
                _ => Ok(None),
            }
        }
    }

    /// Decodes to interleaved RGB(A) of `chroma`, transformations applied, strictly (an error
    /// rather than a best-effort picture from damaged data).
    fn decode(&self, chroma: lh::heif_chroma) -> Result<Decoded, PipelineError> {
        let mut image = ptr::null_mut();
        #[expect(unsafe_code, reason = "libheif's C API; see the module doc")]
        // SAFETY: options come from `heif_decoding_options_alloc` (null checked), which fills
        // every field of the version the library knows; only fields of version 1..3 (present
        // in 1.15's struct and these bindings) are written, and the options are freed after
        // the call on both paths. On success `image` is a new image owned by `Decoded`.
        unsafe {
            let options = lh::heif_decoding_options_alloc();
            if options.is_null() {
                return Err(PipelineError::Internal("libheif: no options".into()));
            }
            (*options).ignore_transformations = 0;
            (*options).convert_hdr_to_8bit = 0;
            (*options).strict_decoding = 1;
            let err = lh::heif_decode_image(
                self.handle,
                &mut image,
                lh::heif_colorspace_heif_colorspace_RGB,
                chroma,
                options,
            );
            lh::heif_decoding_options_free(options);
            check(err)?;
        }
        if image.is_null() {
            return Err(bad("no decoded image"));
        }
        Ok(Decoded { image })
    }
}

impl Drop for Handle<'_> {
    fn drop(&mut self) {
        #[expect(unsafe_code, reason = "libheif's C API; see the module doc")]
        // SAFETY: `handle` is a reference obtained from libheif, released exactly once.
        unsafe {
            lh::heif_image_handle_release(self.handle)
        }
    }
}

struct Decoded {
    image: *mut lh::heif_image,
}

impl Decoded {
    fn size(&self) -> (u32, u32) {
        #[expect(unsafe_code, reason = "libheif's C API; see the module doc")]
        // SAFETY: `image` is live (released only by `Drop`).
        let (w, h) = unsafe {
            (
                lh::heif_image_get_width(self.image, lh::heif_channel_heif_channel_interleaved),
                lh::heif_image_get_height(self.image, lh::heif_channel_heif_channel_interleaved),
            )
        };
        (u32::try_from(w).unwrap_or(0), u32::try_from(h).unwrap_or(0))
    }

    /// The interleaved plane (every row, `stride` bytes apart), its stride and bit depth.
    fn interleaved(&self) -> Result<(&[u8], usize, u32), PipelineError> {
        let channel = lh::heif_channel_heif_channel_interleaved;
        let mut stride = 0;
        #[expect(unsafe_code, reason = "libheif's C API; see the module doc")]
        // SAFETY: `image` is live for `&self`; libheif's plane holds `height` rows of `stride`
        // bytes (the last row at least as long as the picture's), so the slice covers
        // `stride * (height - 1)` plus one row's worth, bounded by what was allocated; it is
        // borrowed from `self` and cannot outlive the image.
        unsafe {
            let plane = lh::heif_image_get_plane_readonly(self.image, channel, &mut stride);
            let height = lh::heif_image_get_height(self.image, channel);
            let width = lh::heif_image_get_width(self.image, channel);
            let bits = lh::heif_image_get_bits_per_pixel_range(self.image, channel);
            let bits_per_pixel = lh::heif_image_get_bits_per_pixel(self.image, channel);
            if plane.is_null() || stride <= 0 || height <= 0 || width <= 0 || bits <= 0 {
                return Err(bad("no interleaved plane"));
            }
            let (stride, height) = (stride as usize, height as usize);
            let row = (width as usize * bits_per_pixel.max(0) as usize).div_ceil(8);
            if row > stride {
                return Err(bad("plane stride shorter than a row"));
            }
            let len = stride * (height - 1) + row;
            Ok((std::slice::from_raw_parts(plane, len), stride, bits as u32))
        }
    }
}

impl Drop for Decoded {
    fn drop(&mut self) {
        #[expect(unsafe_code, reason = "libheif's C API; see the module doc")]
        // SAFETY: `image` came from `heif_decode_image` and is released exactly once, here.
        unsafe {
            lh::heif_image_release(self.image)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::color::to_srgb;
    use super::super::super::probe::probe;
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn heic_matches_heif_convert() {
        // (fixture, layout, size, tolerance): heif-convert is libheif too, so 8-bit pictures
        // match exactly; its 10-bit output is a 16-bit PNG, reduced here by `v / 257`, ours
        // from 10 bits by `v * 255 / 1023`: at most one apart.
        let cases = [
            ("heic_photo.heic", PixelLayout::Rgb8, (96, 60), 0),
            ("heic_10bit.heic", PixelLayout::Rgb8, (96, 60), 1),
            ("heic_alpha.heic", PixelLayout::Rgba8, (64, 48), 0),
            // Stored 96x60 with irot 3 and EXIF Orientation 6: turned once, not twice.
            ("heic_irot_exif6.heic", PixelLayout::Rgb8, (60, 96), 0),
            ("heic_grid.heic", PixelLayout::Rgb8, (192, 120), 0),
        ];
        for (name, layout, size, tolerance) in cases {
            let image = assert_matches_reference(name, tolerance);
            assert_eq!(image.layout, layout, "{name}");
            assert_eq!((image.width, image.height), size, "{name}");
        }
        let alpha = decode_fixture("formats/heic_alpha.heic").expect("alpha");
        assert_quadrants(&alpha, 12, "heic_alpha");
        assert_eq!(pixel(&alpha, 56, 42)[3], 0, "transparent corner");
    }

    #[test]
    fn the_probe_reports_the_displayed_size_and_no_orientation() {
        let limits = Limits::default();
        for (rel, size, has_alpha) in [
            ("formats/heic_photo.heic", (96, 60), false),
            ("formats/heic_alpha.heic", (64, 48), true),
            ("formats/heic_irot_exif6.heic", (60, 96), false),
            ("formats/heic_grid.heic", (192, 120), false),
            // The primary of two.
            ("formats/heic_two_images.heic", (96, 60), false),
        ] {
            let info = probe(&fixture(rel), &limits).unwrap_or_else(|e| panic!("{rel}: {e}"));
            assert_eq!(info.format, SourceFormat::Heic, "{rel}");
            assert_eq!((info.width, info.height), size, "{rel}");
            assert_eq!(
                info.orientation, 1,
                "{rel}: EXIF orientation must not be applied"
            );
            assert_eq!(info.has_alpha, has_alpha, "{rel}");
        }
    }

    #[test]
    fn ten_bit_samples_round_to_nearest() {
        // The 10-bit fixture really is 10-bit (hvcC bit depth), and its decode is not the
        // truncated one: somewhere a sample must round up where `v >> 2` would not.
        let bytes = fixture("formats/heic_10bit.heic");
        let context = Context::read(&bytes, &Limits::default()).expect("read");
        let handle = context.primary().expect("primary");
        assert_eq!(handle.luma_bits(), 10);
        let decoded = handle
            .decode(lh::heif_chroma_heif_chroma_interleaved_RRGGBB_LE)
            .expect("decode");
        let (plane, _, bits) = decoded.interleaved().expect("plane");
        assert_eq!(bits, 10);
        let first = u16::from_le_bytes([plane[0], plane[1]]);
        let image = decode_fixture("formats/heic_10bit.heic").expect("10-bit");
        let rounded = ((u32::from(first) * 255 + 511) / 1023) as u8;
        assert_eq!(image.data[0], rounded, "first sample {first}");
    }

    #[test]
    fn premultiplied_alpha_is_made_straight() {
        // Stored premultiplied (100, 50, 25) at alpha 128: straight (199, 100, 50).
        let image = decode_fixture("formats/heic_premultiplied.heic").expect("decode");
        assert_eq!(image.layout, PixelLayout::Rgba8);
        assert_near(
            pixel(&image, 20, 20),
            [199, 100, 50, 128],
            6,
            "unpremultiplied",
        );
    }

    #[test]
    fn p3_by_icc_or_nclx_is_converted_to_srgb() {
        // P3 (200, 60, 50) is sRGB (217.5, 41.6, 38.8), as in color.rs.
        for rel in ["color/p3_icc.heic", "color/p3_nclx.heic"] {
            let raw = decode_fixture(rel).unwrap_or_else(|e| panic!("{rel}: {e}"));
            assert!(raw.icc.is_some(), "{rel}: a profile for to_srgb");
            assert_near(pixel(&raw, 16, 16), [200, 60, 50, 255], 4, rel);
            let image = to_srgb(raw).expect("to_srgb");
            assert_near(pixel(&image, 16, 16), [218, 42, 39, 255], 4, rel);
        }
        // The default (sRGB-like, no colr box) needs no profile.
        let plain = decode_fixture("formats/heic_photo.heic").expect("photo");
        assert!(plain.icc.is_none());
    }

    #[test]
    fn declarations_over_the_limits_are_refused_before_decoding() {
        for rel in [
            "hostile/bomb_heic_ispe.heic",
            "hostile/bomb_heic_grid.heic",
            // libheif 1.15 itself decodes this one at 1024x1024.
            "hostile/heic_sps_bigger.heic",
        ] {
            let result = probe(&fixture(rel), &Limits::default());
            assert!(
                matches!(result, Err(PipelineError::SourceTooLarge(_))),
                "{rel}: {result:?}"
            );
        }
        // Two top-level images count as two frames; a grid's tiles are not top-level.
        let one = Limits {
            max_frames: 1,
            ..Limits::default()
        };
        let result = probe(&fixture("formats/heic_two_images.heic"), &one);
        assert!(
            matches!(result, Err(PipelineError::SourceTooLarge(_))),
            "{result:?}"
        );
        probe(&fixture("formats/heic_grid.heic"), &one).expect("a grid is one image");
        // libheif's own limit, lowered to ours: a 96x60 photo with max_source_pixels 90.
        let tiny = Limits {
            max_source_pixels: 90,
            ..Limits::default()
        };
        let result = Context::read(&fixture("formats/heic_photo.heic"), &tiny).map(|_| ());
        assert!(
            matches!(result, Err(PipelineError::SourceTooLarge(_))),
            "{result:?}"
        );
    }

    #[test]
    fn the_hevc_sps_size_is_read() {
        // x265 codes 60 rows as 64 (whole 8x8 blocks) with a conformance window.
        for (rel, id, want) in [
            ("formats/heic_photo.heic", 1, (96, 64)),
            ("hostile/heic_sps_bigger.heic", 1, (1024, 1024)),
        ] {
            let bytes = fixture(rel);
            let declared = avif::declarations(&bytes).expect("declarations");
            let item = declared
                .items
                .iter()
                .find(|i| &i.kind == b"hvc1")
                .expect("hvc1");
            let (_, nals) = hvcc_nals(item.hvcc.expect("hvcC")).expect("nals");
            let sps = nals.iter().find(|n| (n[0] >> 1) & 0x3f == 33).expect("SPS");
            assert_eq!(sps_size(sps), Some(want), "{rel} item {id}");
        }
    }

    #[test]
    fn truncated_and_cut_files_are_corrupt_never_a_panic() {
        let result = decode_fixture("hostile/truncated_heic.heic");
        assert!(
            matches!(result, Err(PipelineError::Corrupt(_))),
            "{result:?}"
        );
        let limits = Limits::default();
        for rel in ["formats/heic_alpha.heic", "formats/heic_grid.heic"] {
            let bytes = fixture(rel);
            for len in (0..bytes.len()).step_by(13) {
                let prefix = &bytes[..len];
                if let Ok(info) = probe(prefix, &limits) {
                    let result = decode(prefix, &limits);
                    assert!(result.is_err(), "{rel} cut at {len}: {info:?}");
                }
            }
        }
    }
}
