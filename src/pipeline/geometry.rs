//! Output geometry: turns `w`/`h`/`fit`/`aspect` into an exact output size and a source
//! crop ([`plan`], before decoding, so output limits are checked before any allocation), then
//! crops and resamples the decoded image in one pass ([`apply`], fast_image_resize), and caps
//! AVIF outputs ([`cap_for_format`]).
//!
//! Owns sizes, crop rectangles and resampling. Must never decode, encode or apply effects, and
//! must never clamp an over-limit request silently: that is a 400 (`OutputTooLarge`).
//!
//! The model, in source pixels: `aspect` first narrows the source to the largest region of that
//! ratio (region `A`); the fit mode then maps `A` onto the `w` x `h` box. Every plan therefore
//! ends as "take a region of size `crop` from the source, placed by the crop anchor, and
//! resample it to `output`". The region is kept in source units (not pixels of the decoded
//! buffer) so that a decoder that shrank on load still gets the same framing, in proportion.

use fast_image_resize::images::{CroppedImage, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use super::crop;
use super::spec::{Crop, Fit, Limits, OutputFormat, Transform};
use super::{DecodeHint, Image, PipelineError, PixelLayout};

/// A length in source pixels. Always finite and positive (it is computed from non-zero
/// integers), so comparing bit patterns is a correct equality.
#[derive(Debug, Clone, Copy)]
struct SourceLength(f64);

impl PartialEq for SourceLength {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for SourceLength {}

/// The resolved geometry of one render, computed from the header size alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputPlan {
    /// Oriented source size the plan was made for.
    source: (u32, u32),
    /// Size of the source region kept (placed by the crop anchor), in source pixels.
    /// Equal to `source` when nothing is cropped.
    crop: (SourceLength, SourceLength),
    /// Final size before rotation.
    output: (u32, u32),
    /// EXIF orientation of the source (1 when unknown): where a shrink-on-load decode's
    /// partial last block ends up once the image is turned upright.
    orientation: u8,
}

impl OutputPlan {
    /// The same plan for a source stored with EXIF `orientation` (the plan's sizes are
    /// already oriented; this only tells where a DCT-scaled decode's padding lies).
    pub(crate) fn with_orientation(mut self, orientation: u8) -> OutputPlan {
        self.orientation = orientation;
        self
    }

    /// The final output size before `rotate` (a 90/270 rotation swaps it).
    pub(crate) fn output_size(&self) -> (u32, u32) {
        self.output
    }

    /// Whether the plan keeps only part of the source.
    fn crops(&self) -> bool {
        self.crop.0.0 < f64::from(self.source.0) || self.crop.1.0 < f64::from(self.source.1)
    }

    /// The smallest decoded size that still gives full quality: the whole source scaled by
    /// the same factors the kept region is scaled by (rounded up). `None` when the output
    /// needs every source pixel (no downscale on either axis).
    pub fn decode_hint(&self) -> DecodeHint {
        let (sw, sh) = self.source;
        let scale_x = f64::from(self.output.0) / self.crop.0.0;
        let scale_y = f64::from(self.output.1) / self.crop.1.0;
        let want_w = ceil_px(f64::from(sw) * scale_x);
        let want_h = ceil_px(f64::from(sh) * scale_y);
        let (min_w, min_h) = (want_w.min(sw), want_h.min(sh));
        DecodeHint {
            min_size: ((min_w, min_h) != (sw, sh)).then_some((min_w, min_h)),
            render_size: ((want_w, want_h) != (sw, sh)).then_some((want_w, want_h)),
            ..DecodeHint::default()
        }
    }
}

/// Plans the output of `t` on an oriented source of `source` pixels.
///
/// Sizes in `t` are device pixels already. Rules (see the module doc for the model):
/// - no `w`, no `h`: the output is region `A` (the whole source without `aspect`);
/// - one side only: the other side follows the ratio of `A`; `scale-down` never enlarges;
/// - both sides: `cover` crops `A` to the box ratio and fills the box exactly, `contain` fits
///   `A` inside the box, `fill` stretches `A` to the box, `scale-down` is `contain` without
///   enlarging.
///
/// Sizes round to nearest and are never 0. An output over `limits.max_output_pixels` or
/// `limits.max_output_side` is `OutputTooLarge`.
pub fn plan(
    source: (u32, u32),
    t: &Transform,
    limits: &Limits,
) -> Result<OutputPlan, PipelineError> {
    let (sw, sh) = source;
    if sw == 0 || sh == 0 {
        return Err(PipelineError::Corrupt(format!(
            "source has a zero dimension ({sw}x{sh})"
        )));
    }
    let (src_w, src_h) = (f64::from(sw), f64::from(sh));

    // Region A: the largest region of the forced aspect ratio, or the whole source.
    let (a_w, a_h) = match t.aspect {
        None => (src_w, src_h),
        Some((0, _)) | Some((_, 0)) => {
            // The URL grammar only produces 1-100; a zero here is a bug upstream.
            return Err(PipelineError::Internal(format!(
                "invalid aspect ratio {:?}",
                t.aspect
            )));
        }
        Some((aw, ah)) => largest_region(src_w, src_h, f64::from(aw) / f64::from(ah)),
    };

    let (crop, output) = match (t.width, t.height) {
        (None, None) => ((a_w, a_h), (round_px(a_w), round_px(a_h))),
        (Some(w), None) => {
            let scale = f64::from(w) / a_w;
            single_side(a_w, a_h, scale, t.fit)
        }
        (None, Some(h)) => {
            let scale = f64::from(h) / a_h;
            single_side(a_w, a_h, scale, t.fit)
        }
        (Some(w), Some(h)) => {
            let (box_w, box_h) = (f64::from(w.max(1)), f64::from(h.max(1)));
            match t.fit {
                Fit::Fill => ((a_w, a_h), (w.max(1), h.max(1))),
                Fit::Cover => (
                    largest_region(a_w, a_h, box_w / box_h),
                    (w.max(1), h.max(1)),
                ),
                Fit::Contain | Fit::ScaleDown => {
                    let mut scale = (box_w / a_w).min(box_h / a_h);
                    if t.fit == Fit::ScaleDown {
                        scale = scale.min(1.0);
                    }
                    (
                        (a_w, a_h),
                        (
                            round_px(a_w * scale).min(w.max(1)),
                            round_px(a_h * scale).min(h.max(1)),
                        ),
                    )
                }
            }
        }
    };

    check_output(output, limits)?;
    Ok(OutputPlan {
        source,
        crop: (SourceLength(crop.0), SourceLength(crop.1)),
        output,
        orientation: 1,
    })
}

/// One requested side: the box follows the ratio of region A, so every fit keeps all of A.
fn single_side(a_w: f64, a_h: f64, scale: f64, fit: Fit) -> ((f64, f64), (u32, u32)) {
    let scale = if fit == Fit::ScaleDown {
        scale.min(1.0)
    } else {
        scale
    };
    ((a_w, a_h), (round_px(a_w * scale), round_px(a_h * scale)))
}

fn check_output((w, h): (u32, u32), limits: &Limits) -> Result<(), PipelineError> {
    let pixels = u64::from(w) * u64::from(h);
    if w > limits.max_output_side || h > limits.max_output_side {
        return Err(PipelineError::OutputTooLarge(format!(
            "{w}x{h} exceeds the largest output side of {} px",
            limits.max_output_side
        )));
    }
    if pixels > limits.max_output_pixels {
        return Err(PipelineError::OutputTooLarge(format!(
            "{w}x{h} ({pixels} px) exceeds the output limit of {} px",
            limits.max_output_pixels
        )));
    }
    Ok(())
}

/// The largest `ratio` (w/h) region inside `w` x `h`.
fn largest_region(w: f64, h: f64, ratio: f64) -> (f64, f64) {
    if w / h > ratio {
        (h * ratio, h)
    } else {
        (w, w / ratio)
    }
}

/// Rounds a size to the nearest pixel, never 0. `as` saturates, so huge values become
/// `u32::MAX` and then fail the output limits instead of wrapping.
fn round_px(v: f64) -> u32 {
    (v.round() as u32).max(1)
}

fn ceil_px(v: f64) -> u32 {
    // Remove float noise first so 200.00000000001 does not become 201.
    ((v - 1e-9).ceil() as u32).max(1)
}

/// Fractions of the slack (0 = left/top, 1 = right/bottom) for the fixed anchors.
fn anchor_fractions(anchor: Crop) -> (f64, f64) {
    match anchor {
        Crop::Center | Crop::Attention | Crop::Entropy => (0.5, 0.5),
        Crop::Top => (0.5, 0.0),
        Crop::Bottom => (0.5, 1.0),
        Crop::Left => (0.0, 0.5),
        Crop::Right => (1.0, 0.5),
        Crop::TopLeft => (0.0, 0.0),
        Crop::TopRight => (1.0, 0.0),
        Crop::BottomLeft => (0.0, 1.0),
        Crop::BottomRight => (1.0, 1.0),
    }
}

/// A crop rectangle on the decoded buffer, in (possibly fractional) pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rect {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
}

impl Rect {
    fn full(image: &Image) -> Rect {
        Rect {
            left: 0.0,
            top: 0.0,
            width: f64::from(image.width),
            height: f64::from(image.height),
        }
    }

    /// The size in whole pixels, when it is whole (within float noise).
    fn whole_size(&self) -> Option<(u32, u32)> {
        let whole = |v: f64| {
            let r = v.round();
            ((v - r).abs() < 1e-6).then_some(r as u32)
        };
        Some((whole(self.width)?, whole(self.height)?))
    }
}

/// Crops and resizes `image` per `plan` in one resampling pass. The decoded image may be
/// smaller than the planned source (shrink-on-load): the crop is mapped in proportion.
pub(super) fn apply(
    image: Image,
    plan: &OutputPlan,
    t: &Transform,
) -> Result<Image, PipelineError> {
    let rect = crop_rect(&image, plan, t.crop);
    apply_rect(image, rect, plan.output)
}

/// Where an animation's frames are cropped: found once, on the first frame, and kept for
/// every frame (a content-aware anchor re-run per frame would make the framing jump).
#[derive(Debug, Clone, Copy)]
pub(super) struct FrameCrop(Rect);

impl FrameCrop {
    /// The crop `plan` and `t` give on `first` (every frame has its size).
    pub(super) fn new(first: &Image, plan: &OutputPlan, t: &Transform) -> FrameCrop {
        FrameCrop(crop_rect(first, plan, t.crop))
    }

    /// [`apply`] on one frame, with the crop found on the first.
    pub(super) fn apply(self, frame: Image, plan: &OutputPlan) -> Result<Image, PipelineError> {
        apply_rect(frame, self.0, plan.output)
    }
}

fn apply_rect(image: Image, rect: Rect, output: (u32, u32)) -> Result<Image, PipelineError> {
    let full = rect == Rect::full(&image);
    if full && output == (image.width, image.height) {
        return Ok(image);
    }
    if let Some((width, height)) = rect.whole_size()
        && (width, height) == output
    {
        // A crop without scaling: snap the corner to whole pixels (at most half a pixel of
        // framing) rather than resample at a half-pixel offset, which would blur everything.
        let left = (rect.left.round() as u32).min(image.width - width);
        let top = (rect.top.round() as u32).min(image.height - height);
        return Ok(copy_region(&image, left, top, width, height));
    }
    resample(&image, rect, output)
}

/// Where the picture lies on the decoded buffer, in its pixels. A 1/n DCT-scaled decode
/// (shrink-on-load) is `ceil(w / n)` wide, but only `w / n` of that is the source: the last
/// column and row come from a partial block. Mapping the source onto `w / n` instead of the
/// whole buffer keeps the output from stretching by up to half a decoded pixel. The partial
/// block is at the stored right and bottom; turning the image upright can move it to the
/// left or the top. A decoder that resampled the source onto the whole buffer (libwebp) says
/// so in `Image::whole_picture`.
fn picture(image: &Image, plan: &OutputPlan) -> Rect {
    let size = (image.width, image.height);
    let (sw, sh) = plan.source;
    if size != plan.source
        && !image.whole_picture
        && let Some(n) = [8, 4, 2]
            .into_iter()
            .find(|&n| (sw.div_ceil(n), sh.div_ceil(n)) == size)
    {
        let width = f64::from(sw) / f64::from(n);
        let height = f64::from(sh) / f64::from(n);
        let o = plan.orientation;
        let pad_left = matches!(o, 2 | 3 | 6 | 7);
        let pad_top = matches!(o, 3 | 4 | 7 | 8);
        return Rect {
            left: if pad_left {
                f64::from(size.0) - width
            } else {
                0.0
            },
            top: if pad_top {
                f64::from(size.1) - height
            } else {
                0.0
            },
            width,
            height,
        };
    }
    Rect::full(image)
}

/// Where the planned region lies on the decoded buffer.
fn crop_rect(image: &Image, plan: &OutputPlan, anchor: Crop) -> Rect {
    let picture = picture(image, plan);
    if !plan.crops() {
        return picture;
    }
    let (iw, ih) = (picture.width, picture.height);
    let width = (plan.crop.0.0 * iw / f64::from(plan.source.0)).min(iw);
    let height = (plan.crop.1.0 * ih / f64::from(plan.source.1)).min(ih);
    let (left, top) = match anchor {
        Crop::Attention | Crop::Entropy => {
            // The content-aware search works on whole pixels; the window it places is the
            // rounded region, and the fractional region starts at the same corner.
            let win_w = (width.round() as u32).clamp(1, image.width);
            let win_h = (height.round() as u32).clamp(1, image.height);
            let (x, y) = crop::window(image, win_w, win_h, anchor);
            let inside = |v: u32, start: f64, room: f64| f64::from(v).min(start + room).max(start);
            (
                inside(x, picture.left, iw - width),
                inside(y, picture.top, ih - height),
            )
        }
        _ => {
            let (fx, fy) = anchor_fractions(anchor);
            (
                picture.left + (iw - width) * fx,
                picture.top + (ih - height) * fy,
            )
        }
    };
    Rect {
        left: left.max(0.0),
        top: top.max(0.0),
        width,
        height,
    }
}

/// A crop without scaling: row copies, no resampling.
fn copy_region(image: &Image, left: u32, top: u32, width: u32, height: u32) -> Image {
    let channels = image.channels();
    let stride = image.stride();
    let row_bytes = width as usize * channels;
    let start = left as usize * channels;
    let mut data = Vec::with_capacity(row_bytes * height as usize);
    for row in image
        .data
        .chunks_exact(stride)
        .skip(top as usize)
        .take(height as usize)
    {
        data.extend_from_slice(&row[start..start + row_bytes]);
    }
    let mut out = Image::new(width, height, image.layout, data);
    out.icc = image.icc.clone();
    out
}

fn pixel_type(layout: PixelLayout) -> PixelType {
    match layout {
        PixelLayout::Rgb8 => PixelType::U8x3,
        PixelLayout::Rgba8 => PixelType::U8x4,
    }
}

/// Resamples `rect` of `image` to `output`. Lanczos3 when shrinking (sharpest without
/// aliasing); Catmull-Rom when only enlarging, where Lanczos3's extra lobes add visible
/// ringing halos for little gain. For `U8x4` fast_image_resize multiplies colour by alpha
/// before convolving and divides after (`ResizeOptions::mul_div_alpha`, on by default), so
/// transparent pixels do not bleed their invisible colour into the result.
fn resample(image: &Image, rect: Rect, output: (u32, u32)) -> Result<Image, PipelineError> {
    let internal = |e: &dyn std::fmt::Display| PipelineError::Internal(format!("resize: {e}"));
    let pixel_type = pixel_type(image.layout);
    let src = ImageRef::new(image.width, image.height, &image.data, pixel_type)
        .map_err(|e| internal(&e))?;

    // Hand the resizer only the whole-pixel bounding box of the region: its alpha
    // premultiplication pass covers the whole view it gets, so a small crop of a large
    // RGBA source would otherwise premultiply every source pixel.
    let bx = rect.left.floor();
    let by = rect.top.floor();
    let bw = ((rect.left + rect.width).ceil() - bx).min(f64::from(image.width) - bx);
    let bh = ((rect.top + rect.height).ceil() - by).min(f64::from(image.height) - by);
    let cropped = CroppedImage::new(&src, bx as u32, by as u32, bw as u32, bh as u32)
        .map_err(|e| internal(&e))?;

    let enlarging = f64::from(output.0) >= rect.width && f64::from(output.1) >= rect.height;
    let filter = if enlarging {
        FilterType::CatmullRom
    } else {
        FilterType::Lanczos3
    };
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(filter))
        .crop(rect.left - bx, rect.top - by, rect.width, rect.height)
        .use_alpha(true);

    let mut dst = fast_image_resize::images::Image::new(output.0, output.1, pixel_type);
    Resizer::new()
        .resize(&cropped, &mut dst, &options)
        .map_err(|e| internal(&e))?;
    let mut out = Image::new(output.0, output.1, image.layout, dst.into_vec());
    out.icc = image.icc.clone();
    Ok(out)
}

/// Downscales (keeping the aspect ratio) an AVIF-bound image so it fits
/// `limits.avif_max_pixels` and `limits.avif_max_side`, as img-src does (AVIF encoding time
/// grows with the pixel count), and a JPEG XL-bound one so it fits `limits.jxl_max_pixels`
/// (libjxl's encoder memory grows with it: about 760 MB for a 17.9 MP photo). Other formats
/// pass through unchanged.
pub(super) fn cap_for_format(
    image: Image,
    output: OutputFormat,
    limits: &Limits,
) -> Result<Image, PipelineError> {
    let (max_pixels, max_side) = match output {
        OutputFormat::Avif => (limits.avif_max_pixels, limits.avif_max_side),
        OutputFormat::Jxl => (limits.jxl_max_pixels, u32::MAX),
        _ => return Ok(image),
    };
    match format_cap((image.width, image.height), max_pixels, max_side) {
        None => Ok(image),
        Some(size) => resample(&image, Rect::full(&image), size),
    }
}

/// The capped size, or `None` when `size` is already within `max_pixels` and `max_side`.
fn format_cap((w, h): (u32, u32), max_pixels: u64, max_side: u32) -> Option<(u32, u32)> {
    let max_pixels = max_pixels.max(1);
    let max_side = max_side.max(1);
    let pixels = u64::from(w) * u64::from(h);
    if pixels <= max_pixels && w <= max_side && h <= max_side {
        return None;
    }
    let (fw, fh) = (f64::from(w), f64::from(h));
    let scale = (max_pixels as f64 / pixels as f64)
        .sqrt()
        .min(f64::from(max_side) / fw.max(fh));
    // Floor, not round: the cap is an upper bound.
    let mut nw = ((fw * scale).floor() as u32).clamp(1, max_side);
    let mut nh = ((fh * scale).floor() as u32).clamp(1, max_side);
    // Float noise in the square root can leave a pixel row too many.
    while u64::from(nw) * u64::from(nh) > max_pixels && (nw > 1 || nh > 1) {
        if nw >= nh {
            nw -= 1;
        } else {
            nh -= 1;
        }
    }
    Some((nw, nh))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(w: Option<u32>, h: Option<u32>, fit: Fit) -> Transform {
        Transform {
            width: w,
            height: h,
            fit,
            ..Transform::default()
        }
    }

    fn size(source: (u32, u32), t: &Transform) -> (u32, u32) {
        plan(source, t, &Limits::default())
            .expect("plan within limits")
            .output_size()
    }

    #[test]
    fn a_dct_scaled_decode_maps_the_source_onto_its_picture_not_its_padding() {
        // 1003x749 decoded at 1/8 is 126x94, of which 125.375x93.625 is picture.
        let p = plan(
            (1003, 749),
            &t(Some(100), None, Fit::ScaleDown),
            &Limits::default(),
        )
        .expect("plan");
        let scaled = Image::new(126, 94, PixelLayout::Rgb8, vec![0; 126 * 94 * 3]);
        let whole = crop_rect(&scaled, &p, Crop::Center);
        assert_eq!(
            (whole.left, whole.top, whole.width, whole.height),
            (0.0, 0.0, 125.375, 93.625)
        );
        // A full-size decode is all picture; so is a size that is no DCT scaling of it.
        let full = Image::new(1003, 749, PixelLayout::Rgb8, vec![0; 1003 * 749 * 3]);
        assert_eq!(crop_rect(&full, &p, Crop::Center), Rect::full(&full));
        let other = Image::new(120, 90, PixelLayout::Rgb8, vec![0; 120 * 90 * 3]);
        assert_eq!(crop_rect(&other, &p, Crop::Center), Rect::full(&other));
        // Cropping takes its share of the picture, anchored inside it.
        let cover = plan(
            (1003, 749),
            &t(Some(100), Some(100), Fit::Cover),
            &Limits::default(),
        )
        .expect("plan");
        let rect = crop_rect(&scaled, &cover, Crop::Center);
        assert!((rect.height - 93.625).abs() < 1e-9, "{rect:?}");
        assert!(
            (rect.left + rect.width / 2.0 - 125.375 / 2.0).abs() < 1e-9,
            "{rect:?}"
        );
        let rect = crop_rect(&scaled, &cover, Crop::Right);
        assert!((rect.left + rect.width - 125.375).abs() < 1e-9, "{rect:?}");
    }

    #[test]
    fn turning_the_image_upright_moves_the_partial_block() {
        // Stored 1003x749; oriented by EXIF 6 (90 degrees clockwise) it is 749x1003, decoded at
        // 1/8 and turned upright 94x126: the stored bottom row (the partial block) is now the
        // left column, the stored right column the bottom row.
        let t = t(Some(50), None, Fit::ScaleDown);
        let scaled = Image::new(94, 126, PixelLayout::Rgb8, vec![0; 94 * 126 * 3]);
        let expect = |orientation: u8, left: f64, top: f64| {
            let p = plan((749, 1003), &t, &Limits::default())
                .expect("plan")
                .with_orientation(orientation);
            let r = crop_rect(&scaled, &p, Crop::Center);
            assert_eq!(
                (r.left, r.top, r.width, r.height),
                (left, top, 93.625, 125.375),
                "orientation {orientation}"
            );
        };
        for o in [1, 5] {
            expect(o, 0.0, 0.0);
        }
        for o in [2, 6] {
            expect(o, 0.375, 0.0);
        }
        for o in [4, 8] {
            expect(o, 0.0, 0.625);
        }
        for o in [3, 7] {
            expect(o, 0.375, 0.625);
        }
    }

    /// Left half black, right half white; top rows red-tinted to check vertical anchors.
    fn halves(w: u32, h: u32, layout: PixelLayout) -> Image {
        let c = layout.channels();
        let mut data = vec![0u8; w as usize * h as usize * c];
        for (i, px) in data.chunks_exact_mut(c).enumerate() {
            let x = i as u32 % w;
            let v = if x >= w / 2 { 255 } else { 0 };
            px[..3].fill(v);
            if c == 4 {
                px[3] = 255;
            }
        }
        Image::new(w, h, layout, data)
    }

    #[test]
    fn no_size_keeps_source() {
        assert_eq!(size((640, 480), &Transform::default()), (640, 480));
        let p = plan((640, 480), &Transform::default(), &Limits::default()).expect("plan");
        assert!(!p.crops());
        assert_eq!(p.decode_hint(), DecodeHint::default());
    }

    #[test]
    fn aspect_without_size_crops_source() {
        let mut tr = Transform {
            aspect: Some((1, 1)),
            ..Transform::default()
        };
        assert_eq!(size((640, 480), &tr), (480, 480));
        tr.aspect = Some((16, 9));
        assert_eq!(size((640, 480), &tr), (640, 360));
        let p = plan((640, 480), &tr, &Limits::default()).expect("plan");
        assert!(p.crops());
    }

    #[test]
    fn single_dimension_follows_source_aspect() {
        for fit in [Fit::Cover, Fit::Contain, Fit::Fill] {
            assert_eq!(size((1000, 500), &t(Some(300), None, fit)), (300, 150));
            assert_eq!(size((1000, 500), &t(None, Some(100), fit)), (200, 100));
            // Upscaling is allowed except with scale-down.
            assert_eq!(size((1000, 500), &t(Some(2000), None, fit)), (2000, 1000));
        }
        // Rounds to nearest, never 0.
        assert_eq!(
            size((1000, 333), &t(Some(100), None, Fit::Cover)),
            (100, 33)
        );
        assert_eq!(size((10000, 10), &t(Some(100), None, Fit::Cover)), (100, 1));
    }

    #[test]
    fn single_dimension_scale_down_never_enlarges() {
        assert_eq!(
            size((1000, 500), &t(Some(2000), None, Fit::ScaleDown)),
            (1000, 500)
        );
        assert_eq!(
            size((1000, 500), &t(None, Some(900), Fit::ScaleDown)),
            (1000, 500)
        );
        assert_eq!(
            size((1000, 500), &t(Some(500), None, Fit::ScaleDown)),
            (500, 250)
        );
    }

    #[test]
    fn single_dimension_with_aspect() {
        let mut tr = t(Some(400), None, Fit::Cover);
        tr.aspect = Some((1, 1));
        assert_eq!(size((1000, 500), &tr), (400, 400));
        tr.width = None;
        tr.height = Some(90);
        tr.aspect = Some((16, 9));
        assert_eq!(size((1000, 1000), &tr), (160, 90));
        // scale-down: never larger than the aspect region of the source (500x500).
        let mut tr = t(Some(800), None, Fit::ScaleDown);
        tr.aspect = Some((1, 1));
        assert_eq!(size((1000, 500), &tr), (500, 500));
    }

    #[test]
    fn both_dimensions_every_fit() {
        let src = (1000, 500);
        assert_eq!(size(src, &t(Some(300), Some(300), Fit::Cover)), (300, 300));
        assert_eq!(
            size(src, &t(Some(300), Some(300), Fit::Contain)),
            (300, 150)
        );
        assert_eq!(size(src, &t(Some(300), Some(300), Fit::Fill)), (300, 300));
        assert_eq!(
            size(src, &t(Some(300), Some(300), Fit::ScaleDown)),
            (300, 150)
        );
        // Enlarging.
        assert_eq!(
            size(src, &t(Some(4000), Some(4000), Fit::Cover)),
            (4000, 4000)
        );
        assert_eq!(
            size(src, &t(Some(4000), Some(4000), Fit::Contain)),
            (4000, 2000)
        );
        assert_eq!(
            size(src, &t(Some(4000), Some(4000), Fit::Fill)),
            (4000, 4000)
        );
        assert_eq!(
            size(src, &t(Some(4000), Some(4000), Fit::ScaleDown)),
            (1000, 500)
        );
        let cover = plan(
            src,
            &t(Some(300), Some(300), Fit::Cover),
            &Limits::default(),
        )
        .expect("plan");
        assert!(cover.crops());
        let fill =
            plan(src, &t(Some(300), Some(300), Fit::Fill), &Limits::default()).expect("plan");
        assert!(!fill.crops());
    }

    #[test]
    fn aspect_with_both_dimensions_contain_keeps_aspect() {
        let mut tr = t(Some(400), Some(200), Fit::Contain);
        tr.aspect = Some((1, 1));
        assert_eq!(size((1000, 500), &tr), (200, 200));
        tr.fit = Fit::Cover;
        assert_eq!(size((1000, 500), &tr), (400, 200));
    }

    #[test]
    fn over_limits_is_an_error_not_a_clamp() {
        let limits = Limits {
            max_output_pixels: 1_000_000,
            max_output_side: 2000,
            ..Limits::default()
        };
        let err = plan((500, 500), &t(Some(2001), Some(10), Fit::Fill), &limits);
        assert!(matches!(err, Err(PipelineError::OutputTooLarge(_))));
        let err = plan((500, 500), &t(Some(1001), Some(1000), Fit::Fill), &limits);
        assert!(matches!(err, Err(PipelineError::OutputTooLarge(_))));
        assert!(plan((500, 500), &t(Some(1000), Some(1000), Fit::Fill), &limits).is_ok());
        // An enormous single side fails the limits rather than overflowing.
        let err = plan((1, 1), &t(Some(u32::MAX), None, Fit::Cover), &limits);
        assert!(matches!(err, Err(PipelineError::OutputTooLarge(_))));
        assert!(matches!(
            plan((0, 10), &Transform::default(), &limits),
            Err(PipelineError::Corrupt(_))
        ));
    }

    #[test]
    fn decode_hint_is_cover_size_before_crop() {
        let p = plan(
            (4000, 2000),
            &t(Some(300), Some(300), Fit::Cover),
            &Limits::default(),
        )
        .expect("plan");
        assert_eq!(p.decode_hint().min_size, Some((600, 300)));
        let p = plan(
            (4000, 2000),
            &t(Some(300), Some(300), Fit::Contain),
            &Limits::default(),
        )
        .expect("plan");
        assert_eq!(p.decode_hint().min_size, Some((300, 150)));
        let p = plan(
            (400, 200),
            &t(Some(800), None, Fit::Cover),
            &Limits::default(),
        )
        .expect("plan");
        assert_eq!(p.decode_hint().min_size, None);
    }

    #[test]
    fn apply_cover_resizes_and_crops_at_anchor() {
        let image = halves(200, 100, PixelLayout::Rgb8);
        let mut tr = t(Some(50), Some(50), Fit::Cover);
        for (anchor, expect) in [(Crop::Left, 0u8), (Crop::Right, 255u8)] {
            tr.crop = anchor;
            let p = plan((200, 100), &tr, &Limits::default()).expect("plan");
            let out = apply(image.clone(), &p, &tr).expect("apply");
            assert_eq!((out.width, out.height), (50, 50));
            assert_eq!(out.data.len(), 50 * 50 * 3);
            assert!(out.data.iter().all(|&v| v == expect), "{anchor:?}");
        }
    }

    #[test]
    fn apply_maps_crop_onto_shrunk_decode() {
        // Planned for 2000x1000 but the decoder returned 1/4 scale: same framing.
        let image = halves(500, 250, PixelLayout::Rgba8);
        let mut tr = t(Some(100), Some(100), Fit::Cover);
        tr.crop = Crop::Right;
        let p = plan((2000, 1000), &tr, &Limits::default()).expect("plan");
        let out = apply(image, &p, &tr).expect("apply");
        assert_eq!((out.width, out.height), (100, 100));
        assert!(
            out.data
                .chunks_exact(4)
                .all(|px| px == [255, 255, 255, 255])
        );
    }

    #[test]
    fn apply_skips_work_without_change_and_copies_integral_crops() {
        let image = halves(64, 32, PixelLayout::Rgb8);
        let p = plan((64, 32), &Transform::default(), &Limits::default()).expect("plan");
        let out = apply(image.clone(), &p, &Transform::default()).expect("apply");
        assert_eq!(out.data, image.data);

        let tr = Transform {
            aspect: Some((1, 1)),
            crop: Crop::Left,
            ..Transform::default()
        };
        let p = plan((64, 32), &tr, &Limits::default()).expect("plan");
        let out = apply(image, &p, &tr).expect("apply");
        assert_eq!((out.width, out.height), (32, 32));
        assert!(out.data.iter().all(|&v| v == 0));
    }

    #[test]
    fn apply_unscaled_crop_at_half_pixel_is_a_sharp_copy() {
        // 64x33 to 33x33 centre: a slack of 31 columns puts the crop at x = 15.5.
        let data: Vec<u8> = (0..64 * 33 * 3).map(|i| (i % 7 * 30) as u8).collect();
        let image = Image::new(64, 33, PixelLayout::Rgb8, data);
        let tr = Transform {
            width: Some(33),
            height: Some(33),
            ..Transform::default()
        };
        let p = plan((64, 33), &tr, &Limits::default()).expect("plan");
        let out = apply(image.clone(), &p, &tr).expect("apply");
        assert_eq!((out.width, out.height), (33, 33));
        // Every output value exists in the source palette: copied, not interpolated.
        assert!(out.data.iter().all(|v| v % 30 == 0));
    }

    #[test]
    fn apply_fill_stretches_and_upscales() {
        let image = halves(20, 10, PixelLayout::Rgb8);
        let tr = t(Some(37), Some(91), Fit::Fill);
        let p = plan((20, 10), &tr, &Limits::default()).expect("plan");
        let out = apply(image, &p, &tr).expect("apply");
        assert_eq!((out.width, out.height), (37, 91));
    }

    #[test]
    fn apply_content_aware_anchors_run() {
        let image = halves(120, 60, PixelLayout::Rgb8);
        for anchor in [Crop::Attention, Crop::Entropy] {
            let mut tr = t(Some(30), Some(30), Fit::Cover);
            tr.crop = anchor;
            let p = plan((120, 60), &tr, &Limits::default()).expect("plan");
            let out = apply(image.clone(), &p, &tr).expect("apply");
            assert_eq!((out.width, out.height), (30, 30));
        }
    }

    #[test]
    fn rgba_resize_does_not_bleed_transparent_colour() {
        // Opaque white next to fully transparent black: premultiplied resizing keeps the
        // visible colour white instead of a grey fringe.
        let (w, h) = (64u32, 8u32);
        let mut data = Vec::with_capacity((w * h * 4) as usize);
        for _ in 0..h {
            for x in 0..w {
                data.extend_from_slice(if x % 2 == 0 {
                    &[255, 255, 255, 255]
                } else {
                    &[0, 0, 0, 0]
                });
            }
        }
        let image = Image::new(w, h, PixelLayout::Rgba8, data);
        let tr = t(Some(16), Some(2), Fit::Fill);
        let p = plan((w, h), &tr, &Limits::default()).expect("plan");
        let out = apply(image, &p, &tr).expect("apply");
        for px in out.data.chunks_exact(4) {
            assert!(px[3] > 100, "alpha averaged: {px:?}");
            assert!(px[0] >= 250, "colour must stay white: {px:?}");
        }
    }

    /// Rough timings; run with `cargo test --release -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing report, not a check"]
    fn timings_2560x1920_to_1000x750() {
        let mut seed = 1u32;
        let data: Vec<u8> = (0..2560 * 1920 * 4)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect();
        for layout in [PixelLayout::Rgb8, PixelLayout::Rgba8] {
            let len = 2560 * 1920 * layout.channels();
            let image = Image::new(2560, 1920, layout, data[..len].to_vec());
            for (fit, anchor) in [
                (Fit::Fill, Crop::Center),
                (Fit::Cover, Crop::Center),
                (Fit::Cover, Crop::Entropy),
                (Fit::Cover, Crop::Attention),
            ] {
                let tr = Transform {
                    crop: anchor,
                    ..t(
                        Some(1000),
                        Some(if fit == Fit::Fill { 750 } else { 1000 }),
                        fit,
                    )
                };
                let p = plan((2560, 1920), &tr, &Limits::default()).expect("plan");
                // Best of 5 (shared machine); the clone is outside the timed part.
                let best = (0..5)
                    .map(|_| {
                        let input = image.clone();
                        let start = std::time::Instant::now();
                        let out = apply(input, &p, &tr).expect("apply");
                        let took = start.elapsed();
                        assert_eq!(out.width, 1000);
                        took
                    })
                    .min();
                println!("{layout:?} {fit:?} {anchor:?}: {best:?}");
            }
        }
    }

    #[test]
    fn format_caps_downscale_keeping_aspect() {
        let limits = Limits {
            avif_max_pixels: 10_000,
            avif_max_side: 150,
            ..Limits::default()
        };
        let image = halves(400, 200, PixelLayout::Rgb8);
        let out = cap_for_format(image.clone(), OutputFormat::Avif, &limits).expect("cap");
        assert_eq!((out.width, out.height), (141, 70));
        assert!(u64::from(out.width) * u64::from(out.height) <= 10_000);
        let out = cap_for_format(image.clone(), OutputFormat::Webp, &limits).expect("cap");
        assert_eq!((out.width, out.height), (400, 200));
        // Side cap alone.
        let limits = Limits {
            avif_max_side: 100,
            ..Limits::default()
        };
        let out = cap_for_format(image.clone(), OutputFormat::Avif, &limits).expect("cap");
        assert_eq!((out.width, out.height), (100, 50));
        // JPEG XL: its own pixel cap, no side cap.
        let limits = Limits {
            jxl_max_pixels: 10_000,
            ..Limits::default()
        };
        let out = cap_for_format(image.clone(), OutputFormat::Jxl, &limits).expect("cap");
        assert_eq!((out.width, out.height), (141, 70));
        let out = cap_for_format(image, OutputFormat::Avif, &limits).expect("cap");
        assert_eq!((out.width, out.height), (400, 200));
    }
}
