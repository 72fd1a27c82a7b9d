//! Decoding: source bytes (already probed) into an 8-bit RGB/RGBA [`Image`].
//!
//! Owns one adapter per codec crate, the decoder-side limits, CMYK handling and carrying the
//! embedded RGB ICC profile to `color`. Must never trust the probe alone (decoders re-read
//! their headers, and the result is checked against `info`), never allocate more than the
//! limits allow, and never panic or return partial pixels as success: every decoder failure,
//! truncation included, is `Corrupt`.

pub(super) mod avif;
mod bmp;
pub(super) mod frames;
mod gif;
pub(super) mod hdr;
pub(super) mod heic;
mod ico;
pub(super) mod image_rs;
mod jpeg;
mod jpeg_scaled;
pub(super) mod jxl;
mod png;
pub(super) mod svg;
pub(super) mod tiff;
mod webp;

use std::panic::{AssertUnwindSafe, catch_unwind};

use super::probe::ImageInfo;
use super::spec::{Limits, SourceFormat};
use super::{DecodeHint, Image, PipelineError, PixelLayout};

/// Decodes `bytes` (which `probe` described as `info`) into Rgb8, or Rgba8 when the source
/// carries alpha. RGB sources keep their embedded ICC profile in `Image::icc`; CMYK JPEGs
/// come out already converted to sRGB.
///
/// `hint` is for shrink-on-load: a decoder that can scale while decoding may return any size
/// at least `hint.min_size` (oriented). JPEG can, at 1/2, 1/4 and 1/8 (`jpeg_scaled`), and
/// still WebP images at 1/4 and 1/8, and 1/2 when large (`webp::scale`, libwebp's scaled
/// decode); SVG renders at `hint.render_size` (enlarging too; `svg::render_size`); the
/// others decode at full size.
pub(super) fn decode(
    bytes: &[u8],
    info: &ImageInfo,
    limits: &Limits,
    hint: DecodeHint,
) -> Result<Image, PipelineError> {
    // The codec crates are meant not to panic on hostile bytes, but a panic there is still the
    // source's fault, not ours: report it as Corrupt (422) rather than let it reach the pool
    // as an internal error.
    let scale = match info.format {
        SourceFormat::Jpeg => scale_denominator(info, hint, jpeg::reserve(hint)),
        SourceFormat::Webp => webp::scale(info, hint),
        _ => 1,
    };
    let decoded = catch_unwind(AssertUnwindSafe(|| match info.format {
        SourceFormat::Jpeg => jpeg::decode(bytes, info, limits, scale),
        SourceFormat::Png => png::decode(bytes, limits),
        SourceFormat::Webp => webp::decode(bytes, (info.width, info.height), limits, scale),
        SourceFormat::Gif => gif::decode(bytes, limits),
        SourceFormat::Bmp => bmp::decode(bytes, limits),
        SourceFormat::Avif => avif::decode(bytes, limits),
        SourceFormat::Qoi | SourceFormat::Pnm | SourceFormat::Tga => {
            image_rs::decode(info.format, bytes, limits)
        }
        SourceFormat::Heic => heic::decode(bytes, limits),
        SourceFormat::Ico => ico::decode(bytes, limits),
        SourceFormat::Tiff => tiff::decode(bytes, limits),
        SourceFormat::Jxl => jxl::decode(bytes, limits),
        SourceFormat::Hdr | SourceFormat::Exr => hdr::decode(info.format, bytes, limits),
        SourceFormat::Svg => svg::decode(bytes, info, limits, hint),
    }))
    .map_err(|_| corrupt(info.format, "decoder panicked"))??;
    let scaled = (info.width.div_ceil(scale), info.height.div_ceil(scale));
    let size = (decoded.width, decoded.height);
    if info.format == SourceFormat::Svg {
        // A vector source is rendered at the size the output needs, not its intrinsic one.
        if size != svg::render_size(info, hint, limits) {
            return Err(corrupt(info.format, "rendered at an unexpected size"));
        }
    } else if size != (info.width, info.height) && size != scaled {
        return Err(corrupt(
            info.format,
            format!(
                "decoded {}x{}, header said {}x{}",
                decoded.width, decoded.height, info.width, info.height
            ),
        ));
    }
    Ok(decoded)
}

/// The denominator to decode at: the largest in `reserve` (descending) whose scaled image,
/// `ceil(side / n)`, still covers its reserve times `hint.min_size` (given in oriented
/// coordinates) on both axes, else 1. `hint.denominator` forces one (benches, fuzzing).
fn scale_denominator(info: &ImageInfo, hint: DecodeHint, reserve: &[(u32, f64)]) -> u32 {
    if let Some(n) = hint.denominator.filter(|n| matches!(n, 1 | 2 | 4 | 8)) {
        return n;
    }
    let Some((min_w, min_h)) = hint.min_size else {
        return 1;
    };
    let (width, height) = info.oriented_size();
    let covers = |n: u32, reserve: f64| {
        f64::from(width.div_ceil(n)) >= f64::from(min_w) * reserve
            && f64::from(height.div_ceil(n)) >= f64::from(min_h) * reserve
    };
    reserve
        .iter()
        .find(|&&(n, reserve)| covers(n, reserve))
        .map_or(1, |&(n, _)| n)
}

fn corrupt(format: SourceFormat, why: impl std::fmt::Display) -> PipelineError {
    PipelineError::Corrupt(format!("{}: {why}", format.extension()))
}

/// Bytes a decoder may use: the largest allowed frame at 8 bytes a pixel (16-bit RGBA, the
/// widest intermediate any decoder here keeps) plus slack for metadata chunks.
fn memory_limit(limits: &Limits) -> usize {
    let bytes = limits
        .max_source_pixels
        .saturating_mul(8)
        .saturating_add(16 << 20);
    usize::try_from(bytes).unwrap_or(usize::MAX)
}

/// Builds an image from interleaved 8-bit samples with 1..=4 channels (gray, gray+alpha,
/// RGB, RGBA), checking the length instead of trusting the decoder.
fn image_from_samples(
    format: SourceFormat,
    width: u32,
    height: u32,
    channels: usize,
    samples: Vec<u8>,
) -> Result<Image, PipelineError> {
    let pixels = width as usize * height as usize;
    if samples.len() != pixels * channels {
        return Err(corrupt(
            format,
            format!("{} bytes for {width}x{height}x{channels}", samples.len()),
        ));
    }
    let (layout, data) = match channels {
        3 => (PixelLayout::Rgb8, samples),
        4 => (PixelLayout::Rgba8, samples),
        1 => (
            PixelLayout::Rgb8,
            samples.iter().flat_map(|&v| [v, v, v]).collect(),
        ),
        2 => (
            PixelLayout::Rgba8,
            samples
                .chunks_exact(2)
                .flat_map(|ga| [ga[0], ga[0], ga[0], ga[1]])
                .collect(),
        ),
        _ => return Err(corrupt(format, format!("{channels} channels"))),
    };
    Ok(Image::new(width, height, layout, data))
}

/// A 16-bit sample rounded to 8 bits (`v / 257`, to nearest).
fn to_8_bit(v: u16) -> u8 {
    ((u32::from(v) + 128) / 257) as u8
}

/// Drops the alpha channel of an Rgba8 image.
fn strip_alpha(image: Image) -> Image {
    let data = image
        .data
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    let mut out = Image::new(image.width, image.height, PixelLayout::Rgb8, data);
    out.icc = image.icc;
    out.whole_picture = image.whole_picture;
    out
}

#[cfg(test)]
pub(super) mod test_support {
    use super::super::probe::probe;
    use super::*;

    pub(crate) fn fixture(rel: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(rel);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    pub(crate) fn decode_fixture(rel: &str) -> Result<Image, PipelineError> {
        let bytes = fixture(rel);
        let limits = Limits::default();
        let info = probe(&bytes, &limits)?;
        decode(&bytes, &info, &limits, DecodeHint::default())
    }

    /// The pixel at (x, y) as RGBA (alpha 255 for Rgb8).
    pub(crate) fn pixel(image: &Image, x: u32, y: u32) -> [u8; 4] {
        let c = image.channels();
        let at = (y as usize * image.width as usize + x as usize) * c;
        let p = &image.data[at..at + c];
        [p[0], p[1], p[2], if c == 4 { p[3] } else { 255 }]
    }

    /// `image` reduced by `d`x`d` box averages over its real pixels (partial blocks at the
    /// right and bottom edges average what they have), any channel count: what a decode at
    /// 1/`d` should show.
    pub(crate) fn box_reduce(image: &Image, d: usize) -> Image {
        let c = image.channels();
        let (w, h) = (image.width as usize, image.height as usize);
        let (ow, oh) = (w.div_ceil(d), h.div_ceil(d));
        let mut data = Vec::with_capacity(ow * oh * c);
        for by in 0..oh {
            for bx in 0..ow {
                let mut sum = [0u32; 4];
                let mut n = 0;
                for y in by * d..(by * d + d).min(h) {
                    for x in bx * d..(bx * d + d).min(w) {
                        let p = &image.data[(y * w + x) * c..][..c];
                        sum.iter_mut().zip(p).for_each(|(s, &v)| *s += u32::from(v));
                        n += 1;
                    }
                }
                data.extend(sum[..c].iter().map(|s| ((s + n / 2) / n) as u8));
            }
        }
        Image::new(ow as u32, oh as u32, image.layout, data)
    }

    /// (mean, max) absolute difference over every channel of every pixel.
    pub(crate) fn difference(a: &Image, b: &Image) -> (f64, u8) {
        assert_eq!((a.width, a.height), (b.width, b.height));
        assert_eq!(a.layout, b.layout);
        let diffs = a.data.iter().zip(&b.data).map(|(&x, &y)| x.abs_diff(y));
        let (sum, max) = diffs.fold((0u64, 0u8), |(s, m), d| (s + u64::from(d), m.max(d)));
        (sum as f64 / a.data.len() as f64, max)
    }

    /// Decodes `formats/{name}` and compares it, as RGBA, with the independent decode next to
    /// it (`formats/ref_{name with . as _}.png`, see the fixtures README): at most
    /// `tolerance` apart on any channel of any pixel. Answers the decoded image.
    pub(crate) fn assert_matches_reference(name: &str, tolerance: u8) -> Image {
        let rel = format!("formats/{name}");
        let image = decode_fixture(&rel).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let reference = format!("formats/ref_{}.png", name.replace('.', "_"));
        let expected = decode_fixture(&reference).unwrap_or_else(|e| panic!("{reference}: {e}"));
        let (a, b) = (rgba(&image), rgba(&expected));
        assert_eq!(a.len(), b.len(), "{rel}: size differs from {reference}");
        let max = a.iter().zip(&b).map(|(x, y)| x.abs_diff(*y)).max();
        assert!(
            max.unwrap_or(0) <= tolerance,
            "{rel}: differs from {reference} by up to {max:?}"
        );
        image
    }

    fn rgba(image: &Image) -> Vec<u8> {
        (0..image.height)
            .flat_map(|y| (0..image.width).map(move |x| (x, y)))
            .flat_map(|(x, y)| pixel(image, x, y))
            .collect()
    }

    /// Asserts that `actual` is within `tolerance` of `expected` on every channel.
    pub(crate) fn assert_near(actual: [u8; 4], expected: [u8; 4], tolerance: u8, what: &str) {
        let close = actual
            .iter()
            .zip(expected)
            .all(|(&a, e)| a.abs_diff(e) <= tolerance);
        assert!(
            close,
            "{what}: got {actual:?}, expected {expected:?} ±{tolerance}"
        );
    }

    /// Checks the fixture quadrants: red, green / blue, white (or transparent).
    pub(crate) fn assert_quadrants(image: &Image, tolerance: u8, what: &str) {
        assert_eq!((image.width, image.height), (64, 48), "{what}");
        assert_near(pixel(image, 8, 6), [255, 0, 0, 255], tolerance, what);
        assert_near(pixel(image, 56, 6), [0, 255, 0, 255], tolerance, what);
        assert_near(pixel(image, 8, 42), [0, 0, 255, 255], tolerance, what);
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn every_format_decodes_to_the_quadrants() {
        // (fixture, layout, tolerance): lossy codecs get more room.
        let cases = [
            ("formats/jpeg_baseline.jpg", PixelLayout::Rgb8, 40),
            ("formats/jpeg_progressive.jpg", PixelLayout::Rgb8, 40),
            ("formats/jpeg_restart.jpg", PixelLayout::Rgb8, 40),
            ("formats/jpeg_444.jpg", PixelLayout::Rgb8, 20),
            ("formats/png_palette.png", PixelLayout::Rgb8, 0),
            ("formats/png_16bit.png", PixelLayout::Rgb8, 0),
            ("formats/png_rgba.png", PixelLayout::Rgba8, 0),
            ("formats/png_interlaced.png", PixelLayout::Rgb8, 0),
            ("formats/webp_lossy.webp", PixelLayout::Rgb8, 40),
            ("formats/webp_lossless.webp", PixelLayout::Rgb8, 0),
            ("formats/webp_alpha.webp", PixelLayout::Rgba8, 40),
            ("formats/webp_animated.webp", PixelLayout::Rgba8, 0),
            ("formats/gif_animated.gif", PixelLayout::Rgba8, 0),
            ("formats/bmp_rgb24.bmp", PixelLayout::Rgb8, 0),
        ];
        for (rel, layout, tolerance) in cases {
            let image = decode_fixture(rel).unwrap_or_else(|e| panic!("{rel}: {e}"));
            assert_eq!(image.layout, layout, "{rel}");
            assert_eq!(
                image.data.len(),
                64 * 48 * layout.channels(),
                "{rel}: buffer length"
            );
            assert_quadrants(&image, tolerance, rel);
            let corner = pixel(&image, 56, 42);
            if layout == PixelLayout::Rgba8 && rel != "formats/webp_animated.webp" {
                assert_eq!(corner[3], 0, "{rel}: bottom-right is transparent");
            } else {
                assert_near(corner, [255, 255, 255, 255], tolerance, rel);
            }
        }
    }

    #[test]
    fn gray_sources_become_gray_rgb() {
        for rel in ["formats/jpeg_gray.jpg", "formats/png_gray.png"] {
            let image = decode_fixture(rel).unwrap_or_else(|e| panic!("{rel}: {e}"));
            assert_eq!(image.layout, PixelLayout::Rgb8, "{rel}");
            // ImageMagick made them with Rec. 709 luma: red is 54, white 255.
            assert_near(pixel(&image, 8, 6), [54, 54, 54, 255], 8, rel);
            assert_near(pixel(&image, 56, 42), [255, 255, 255, 255], 8, rel);
        }
        let image = decode_fixture("formats/png_gray_alpha.png").expect("gray+alpha");
        assert_eq!(image.layout, PixelLayout::Rgba8);
        assert_near(pixel(&image, 8, 6), [54, 54, 54, 255], 8, "gray+alpha");
        assert_eq!(pixel(&image, 56, 42)[3], 0);
    }

    #[test]
    fn hostile_inputs_are_corrupt_not_panics() {
        for rel in [
            "hostile/truncated.jpg",
            "hostile/truncated.png",
            "hostile/garbage.jpg",
            "hostile/truncated_qoi.qoi",
            "hostile/truncated_heic.heic",
            "hostile/truncated_pnm.ppm",
            "hostile/truncated_tga.tga",
            "hostile/truncated_ico.ico",
            "hostile/truncated_svg.svg",
            "hostile/truncated_tiff.tif",
            "hostile/truncated_jxl.jxl",
            "hostile/truncated_hdr.hdr",
            "hostile/truncated_exr.exr",
        ] {
            let result = decode_fixture(rel);
            assert!(
                matches!(result, Err(PipelineError::Corrupt(_))),
                "{rel}: {result:?}"
            );
        }
        // Every prefix of every fixture: an answer, never a panic, never a wrong-sized image.
        let limits = Limits::default();
        for rel in [
            "formats/jpeg_baseline.jpg",
            "formats/jpeg_progressive.jpg",
            "formats/png_interlaced.png",
            "formats/webp_lossy.webp",
            "formats/webp_lossless.webp",
            "formats/gif_animated.gif",
            "formats/bmp_rgb24.bmp",
            "formats/heic_alpha.heic",
            "formats/qoi_alpha.qoi",
            "formats/pnm_plain.ppm",
            "formats/svg_alpha.svg",
            "formats/pnm_alpha.pam",
            "formats/tga_rle_alpha.tga",
            "formats/ico_alpha.ico",
            "formats/tiff_alpha.tif",
            "formats/tiff_deflate_tiles.tif",
            "formats/jxl_lossy.jxl",
            "formats/jxl_lossless_alpha.jxl",
            "formats/hdr_photo.hdr",
            "formats/exr_alpha_zip.exr",
            "formats/exr_two_parts.exr",
        ] {
            let bytes = fixture(rel);
            for len in (0..bytes.len()).step_by(7) {
                let prefix = &bytes[..len];
                if let Ok(info) = super::super::probe::probe(prefix, &limits)
                    && let Ok(image) = decode(prefix, &info, &limits, DecodeHint::default())
                {
                    let (w, h) = (image.width as usize, image.height as usize);
                    assert_eq!(image.data.len(), w * h * image.channels());
                }
            }
        }
    }

    #[test]
    fn truncated_jpeg_is_never_a_grey_success() {
        let bytes = fixture("formats/jpeg_progressive.jpg");
        let limits = Limits::default();
        let info = super::super::probe::probe(&bytes, &limits).expect("probe");
        let cut = &bytes[..bytes.len() - 40];
        assert!(matches!(
            decode(cut, &info, &limits, DecodeHint::default()),
            Err(PipelineError::Corrupt(_))
        ));
    }

    #[test]
    fn avif_decodes_to_the_quadrants() {
        // The AVIF-specific cases (10-bit, alpha, odd sizes, hostile files) are in avif.rs.
        let image = decode_fixture("formats/avif_444.avif").expect("avif");
        assert_eq!(image.layout, PixelLayout::Rgb8);
        assert_quadrants(&image, 8, "avif_444");
        assert_near(pixel(&image, 56, 42), [255, 255, 255, 255], 8, "avif_444");
    }

    #[test]
    fn real_photos_decode_in_strict_mode() {
        for rel in [
            "photos/elephants.jpg",
            "photos/ladybird.jpg",
            "photos/dune.jpg",
            "photos/arc-colors.png",
        ] {
            let image = decode_fixture(rel).unwrap_or_else(|e| panic!("{rel}: {e}"));
            assert!(image.width > 0 && image.height > 0);
        }
    }
}
