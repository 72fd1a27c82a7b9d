//! JPEG through zune-jpeg: baseline (interleaved or one scan per component; the latter needs
//! zune-jpeg >= 0.5.16-rc3 with subsampled luma), progressive, restart markers, any
//! subsampling, gray, CMYK and YCCK (Adobe inverted or not).

use yuv::{YuvPlanarImage, YuvRange, YuvStandardMatrix};
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use super::super::color;
use super::super::probe::{ImageInfo, JpegHeader, jpeg_header};
use super::super::spec::{Limits, OutputFormat, SourceFormat};
use super::super::{DecodeHint, Image, PipelineError, PixelLayout};
use super::{corrupt, image_from_samples, jpeg_scaled};

/// Decodes at full size, or at 1/`scale` (`ceil(w / scale)` x `ceil(h / scale)`) when `scale`
/// is 2, 4 or 8 and the file is one `jpeg_scaled` handles.
pub(super) fn decode(
    bytes: &[u8],
    info: &ImageInfo,
    limits: &Limits,
    scale: u32,
) -> Result<Image, PipelineError> {
    let bad = |e: zune_jpeg::errors::DecodeErrors| corrupt(SourceFormat::Jpeg, format!("{e:?}"));
    let header = jpeg_header(bytes)?;
    let max_side = usize::try_from(u64::min(limits.max_source_pixels, u64::from(u16::MAX)))
        .unwrap_or(usize::from(u16::MAX));
    let options = |out_colorspace| {
        DecoderOptions::default()
            .set_max_width(max_side)
            .set_max_height(max_side)
            // Strict: a truncated or damaged scan is an error instead of a grey-filled rest
            // of the picture that would be cached and served for a year.
            .set_strict_mode(true)
            .jpeg_set_out_colorspace(out_colorspace)
    };
    // Shrink-on-load. zune's header pass decides the colour space (an Adobe segment anywhere
    // before the scan, RGB component ids) and assembles the ICC profile; the scaled decoder
    // returns planes and takes that decision as given. Anything it does not handle, and every
    // error it reports, goes to the full decoder, so every refusal is the full decoder's.
    if scale > 1 {
        let mut headers =
            JpegDecoder::new_with_options(ZCursor::new(bytes), options(ColorSpace::RGB));
        headers.decode_headers().map_err(bad)?;
        let coding = match (header.components, headers.input_colorspace()) {
            (1, Some(ColorSpace::Luma)) => Some(ColorSpace::Luma),
            (3, Some(ColorSpace::YCbCr)) => Some(ColorSpace::YCbCr),
            (3, Some(ColorSpace::RGB)) => Some(ColorSpace::RGB),
            (4, _) => Some(ColorSpace::CMYK),
            _ => None,
        };
        if let Some(coding) = coding
            && let Ok(Some(planes)) = jpeg_scaled::decode(bytes, (info.width, info.height), scale)
        {
            let (width, height) = (planes.width, planes.height);
            let icc = headers.icc_profile();
            return match (coding, planes.planes.as_slice()) {
                (ColorSpace::Luma, [gray]) => {
                    image_from_samples(SourceFormat::Jpeg, width, height, 1, gray.clone())
                }
                (ColorSpace::YCbCr, [y, cb, cr]) => {
                    let mut image = ycbcr_image(width, height, [y, cb, cr])?;
                    image.icc = icc;
                    Ok(image)
                }
                (ColorSpace::RGB, [r, g, b]) => {
                    let mut image = rgb_image(width, height, r, g, b, |r, g, b| [r, g, b]);
                    image.icc = icc;
                    Ok(image)
                }
                (_, [c, m, y, k]) => {
                    let mut samples = Vec::with_capacity(c.len() * 4);
                    for (((&c, &m), &y), &k) in c.iter().zip(m).zip(y).zip(k) {
                        samples.extend_from_slice(&[c, m, y, k]);
                    }
                    Ok(cmyk_image(width, height, samples, &header, icc.as_deref()))
                }
                _ => Err(corrupt(SourceFormat::Jpeg, "component count")),
            };
        }
    }
    // Four components: take the raw samples and convert here, because zune's own CMYK
    // conversion ignores the embedded CMYK profile and the Adobe inversion convention.
    let out_colorspace = match (header.components, header.adobe_transform) {
        (4, Some(2)) => ColorSpace::YCCK,
        (4, _) => ColorSpace::CMYK,
        _ => ColorSpace::RGB,
    };
    let options = options(out_colorspace);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(bad)?;
    if decoder.output_colorspace() != Some(out_colorspace) {
        return Err(corrupt(SourceFormat::Jpeg, "unexpected colour space"));
    }
    let samples = decoder.decode().map_err(bad)?;
    let (width, height) = (info.width, info.height);
    let icc = decoder.icc_profile();
    match out_colorspace {
        ColorSpace::RGB => {
            let mut image = image_from_samples(SourceFormat::Jpeg, width, height, 3, samples)?;
            // Gray JPEGs are expanded to RGB; their gray profile does not apply to RGB.
            if header.components == 3 {
                image.icc = icc;
            }
            Ok(image)
        }
        _ => {
            let expected = width as usize * height as usize * 4;
            if samples.len() != expected {
                return Err(corrupt(SourceFormat::Jpeg, "short CMYK buffer"));
            }
            Ok(cmyk_image(width, height, samples, &header, icc.as_deref()))
        }
    }
}

/// Four-component samples as stored (CMYK, or YCCK when the Adobe transform is 2) to sRGB
/// through the embedded CMYK profile, if any.
fn cmyk_image(
    width: u32,
    height: u32,
    mut samples: Vec<u8>,
    header: &JpegHeader<'_>,
    icc: Option<&[u8]>,
) -> Image {
    if header.adobe_transform == Some(2) {
        ycck_to_cmyk_in_place(&mut samples);
    }
    // Photoshop (and every writer that adds the Adobe marker) stores 255 - ink.
    if header.adobe_transform.is_some() {
        samples.iter_mut().for_each(|v| *v = 255 - *v);
    }
    let rgb = color::cmyk_to_srgb(&samples, icc);
    Image::new(width, height, PixelLayout::Rgb8, rgb)
}

/// Interleaves three planes into an Rgb8 image through `convert`.
fn rgb_image(
    width: u32,
    height: u32,
    a: &[u8],
    b: &[u8],
    c: &[u8],
    convert: impl Fn(u8, u8, u8) -> [u8; 3],
) -> Image {
    let mut data = vec![0u8; a.len() * 3];
    for (((out, &a), &b), &c) in data.chunks_exact_mut(3).zip(a).zip(b).zip(c) {
        out.copy_from_slice(&convert(a, b, c));
    }
    Image::new(width, height, PixelLayout::Rgb8, data)
}

/// JFIF YCbCr (BT.601, full range) planes of one size to an Rgb8 image, by the `yuv` crate's
/// SIMD kernels. (Its 4:2:0 and 4:2:2 "bilinear" kernels are not used: they place chroma one
/// luma pixel off JPEG's centred siting, which measurably shifted colour edges.)
fn ycbcr_image(
    width: u32,
    height: u32,
    [y, cb, cr]: [&Vec<u8>; 3],
) -> Result<Image, PipelineError> {
    let planar = YuvPlanarImage {
        y_plane: y,
        y_stride: width,
        u_plane: cb,
        u_stride: width,
        v_plane: cr,
        v_stride: width,
        width,
        height,
    };
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    yuv::yuv444_to_rgb(
        &planar,
        &mut rgb,
        width * 3,
        YuvRange::Full,
        YuvStandardMatrix::Bt601,
    )
    .map_err(|e| corrupt(SourceFormat::Jpeg, format!("yuv: {e}")))?;
    Ok(Image::new(width, height, PixelLayout::Rgb8, rgb))
}

/// YCCK to CMYK as stored (Adobe-inverted), as libjpeg's `ycck_cmyk_convert`: the first
/// three channels are YCbCr-coded `255 - stored`, K passes through.
fn ycck_to_cmyk_in_place(samples: &mut [u8]) {
    for px in samples.chunks_exact_mut(4) {
        let y = f32::from(px[0]);
        let cb = f32::from(px[1]) - 128.0;
        let cr = f32::from(px[2]) - 128.0;
        let to_u8 = |v: f32| 255 - v.round().clamp(0.0, 255.0) as u8;
        px[0] = to_u8(y + 1.402 * cr);
        px[1] = to_u8(y - 0.344_136 * cb - 0.714_136 * cr);
        px[2] = to_u8(y + 1.772 * cb);
    }
}

/// How much of the reduction is left to the Lanczos pass after a DCT-scaled decode, per
/// denominator: the scaled image must be at least this many times the output on both axes.
/// A DCT-scaled image is sharper and more aliased than a Lanczos reduction (at 1/8 it is an
/// 8x8 block average), and a progressive file's reduced decode lacks the refinement bits;
/// the Lanczos step after it hides both. The values are measured (benches/RESULTS.md,
/// "Reduced-scale JPEG decode"): the smallest reserve at which the output's DSSIM against a
/// reference from the full decode stays at or below vipsthumbnail's.
pub(super) const RESERVE: [(u32, f64); 3] = [(8, 2.0), (4, 2.0), (2, 2.0)];

/// The reserve ahead of a lossy WebP encode: at q80 the encoder's own loss (DSSIM about
/// 0.0017 at 800 px) dwarfs the little aliasing a shorter Lanczos step leaves. Measured on the
/// comparison corpus at 800 px (benches/RESULTS.md, "A smaller reserve ahead of lossy WebP"):
/// 1.5 takes 23 % off the render's CPU for 1.4 % fewer bytes at 3.5 % more DSSIM, still below
/// thumbor's on both; 1.0 went over thumbor's DSSIM. At q90 the DSSIM cost is 8 %, still
/// thumbor's bytes at less distortion; above `LOSSY_WEBP_MAX_QUALITY` (which only signed URLs
/// reach by default) it is not measured, and the reserve stays 2.
pub(super) const RESERVE_LOSSY_WEBP: [(u32, f64); 3] = [(8, 1.5), (4, 1.5), (2, 1.5)];
const LOSSY_WEBP_MAX_QUALITY: u8 = 90;

/// The reserve for a decode bound for `hint.output`.
pub(super) fn reserve(hint: DecodeHint) -> &'static [(u32, f64)] {
    match hint.output {
        Some((OutputFormat::Webp, q)) if q <= LOSSY_WEBP_MAX_QUALITY => &RESERVE_LOSSY_WEBP,
        _ => &RESERVE,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    fn scale_denominator(info: &ImageInfo, hint: DecodeHint) -> u32 {
        super::super::scale_denominator(info, hint, reserve(hint))
    }

    #[test]
    fn cmyk_without_profile_is_converted_naively() {
        for rel in ["formats/jpeg_cmyk.jpg", "formats/jpeg_ycck.jpg"] {
            let image = decode_fixture(rel).unwrap_or_else(|e| panic!("{rel}: {e}"));
            assert_eq!(image.layout, PixelLayout::Rgb8);
            assert!(image.icc.is_none());
            // cyan, magenta / yellow, black
            assert_near(pixel(&image, 8, 6), [0, 255, 255, 255], 12, rel);
            assert_near(pixel(&image, 56, 6), [255, 0, 255, 255], 12, rel);
            assert_near(pixel(&image, 8, 42), [255, 255, 0, 255], 12, rel);
            assert_near(pixel(&image, 56, 42), [0, 0, 0, 255], 12, rel);
        }
    }

    #[test]
    fn cmyk_with_profile_goes_through_the_profile() {
        // The toy profile's cyan ink is about sRGB (0, 160, 225), magenta (230, 0, 126);
        // the naive conversion would give (0, 255, 255) and (255, 0, 255).
        let image = decode_fixture("color/cmyk_profile.jpg").expect("decode");
        assert!(image.icc.is_none(), "CMYK profile is consumed by decode");
        let cyan = pixel(&image, 4, 8);
        let magenta = pixel(&image, 28, 8);
        assert_near(cyan, [0, 160, 225, 255], 20, "cyan ink");
        assert_near(magenta, [230, 0, 126, 255], 20, "magenta ink");
    }

    #[test]
    fn rgb_jpeg_keeps_its_icc_profile() {
        let image = decode_fixture("color/p3_jpeg.jpg").expect("decode");
        let icc = image.icc.expect("APP2 profile kept");
        assert_eq!(&icc[36..40], b"acsp");
        assert!(
            decode_fixture("formats/jpeg_gray.jpg")
                .expect("gray")
                .icc
                .is_none()
        );
    }

    /// Regression (zune-image#419, fixed in zune-jpeg 0.5.16-rc3): a baseline 4:2:0 JPEG
    /// with one scan per component (what jpeg-encoder writes with optimised Huffman tables,
    /// and what `cjpeg`/`jpegtran -scans` write) came back from zune-jpeg 0.5.15 with garbage
    /// colours (mean error ~120/255 on this fixture) and no error. It is the interleaved
    /// `jpeg_baseline.jpg` re-coded losslessly, so both must decode to the same pixels.
    #[test]
    fn non_interleaved_subsampled_jpeg_decodes_to_the_right_colours() {
        let image = decode_fixture("formats/jpeg_non_interleaved.jpg").expect("decode");
        assert_quadrants(&image, 40, "non-interleaved");
        assert_near(pixel(&image, 56, 42), [255, 255, 255, 255], 40, "white");
        let interleaved = decode_fixture("formats/jpeg_baseline.jpg").expect("decode");
        let worst = image
            .data
            .iter()
            .zip(&interleaved.data)
            .map(|(&a, &b)| a.abs_diff(b))
            .max();
        assert!(
            worst <= Some(2),
            "differs from the interleaved decode by {worst:?}"
        );
    }

    #[test]
    fn thumbnails_of_a_progressive_jpeg_come_from_its_dc_scan() {
        use super::super::super::{EncodeSettings, OutputFormat, Transform, plan, render};
        // 1003x749: the last block column and row are partial, so the mapping of the source
        // onto the 1/8 image (125.375x93.625 of its 126x94 pixels) matters.
        let bytes = fixture("jpeg_scaled/ladybird_odd_progressive.jpg");
        let limits = Limits::default();
        let info = super::super::super::probe(&bytes, &limits).expect("probe");
        let thumb = Transform {
            width: Some(60),
            ..Transform::default()
        };
        let hint = plan(info.oriented_size(), &thumb, &limits)
            .expect("plan")
            .decode_hint();
        assert_eq!(scale_denominator(&info, hint), 8);
        let decoded =
            super::super::super::decode_upright(&bytes, &info, &limits, hint).expect("dc decode");
        assert_eq!((decoded.width, decoded.height), (126, 94));

        // The render from the DC image looks like the one from the full decode.
        let settings = EncodeSettings::default();
        let rendered =
            render(&bytes, &thumb, OutputFormat::Png, &limits, &settings).expect("render");
        assert_eq!((rendered.width, rendered.height), (60, 45));
        let full =
            super::super::super::decode_upright(&bytes, &info, &limits, DecodeHint::default())
                .expect("full decode");
        let full = super::super::super::resize_image(full, &thumb, &limits).expect("resize");
        let png = ::png::Decoder::new(std::io::Cursor::new(rendered.bytes));
        let mut reader = png.read_info().expect("png");
        let mut thumb_pixels = vec![0; reader.output_buffer_size().expect("size")];
        reader.next_frame(&mut thumb_pixels).expect("frame");
        let diffs: Vec<u8> = thumb_pixels
            .iter()
            .zip(&full.data)
            .map(|(&a, &b)| a.abs_diff(b))
            .collect();
        assert_eq!(diffs.len(), 60 * 45 * 3);
        let mean = diffs.iter().map(|&d| f64::from(d)).sum::<f64>() / diffs.len() as f64;
        assert!(
            mean < 3.0,
            "mean difference {mean:.2} from the full-decode render"
        );
    }

    /// `bytes` with a segment (marker and payload) inserted at `at`.
    fn with_segment(bytes: &[u8], at: usize, marker: u8, payload: &[u8]) -> Vec<u8> {
        let length = u16::try_from(payload.len() + 2).expect("short segment");
        let mut out = bytes[..at].to_vec();
        out.extend_from_slice(&[0xFF, marker]);
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(payload);
        out.extend_from_slice(&bytes[at..]);
        out
    }

    #[test]
    fn the_scaled_decoder_reads_colour_as_the_full_decoder_does() {
        let bytes = fixture("formats/jpeg_baseline.jpg");
        let limits = Limits::default();
        let info = super::super::super::probe(&bytes, &limits).expect("probe");
        let adobe = |transform: u8| {
            let mut payload = b"Adobe".to_vec();
            payload.extend_from_slice(&[0, 100, 0, 0, 0, 0, transform]);
            payload
        };
        let sof = bytes
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .expect("SOF0");
        let sof_end = sof + 2 + usize::from(u16::from_be_bytes([bytes[sof + 2], bytes[sof + 3]]));
        // Adobe transform 0 on three components means RGB-coded, whether the segment comes
        // before the frame header or after it; transform 1 is YCbCr.
        let cases = [
            ("plain YCbCr", bytes.clone(), true),
            (
                "Adobe 0 first",
                with_segment(&bytes, 2, 0xEE, &adobe(0)),
                false,
            ),
            (
                "Adobe 0 after SOF",
                with_segment(&bytes, sof_end, 0xEE, &adobe(0)),
                false,
            ),
            (
                "Adobe 1",
                with_segment(&bytes, sof_end, 0xEE, &adobe(1)),
                true,
            ),
        ];
        for (what, file, ycbcr) in cases {
            let full = decode(&file, &info, &limits, 1).expect("full");
            // Red as YCbCr is red; read as RGB it is not.
            let red = pixel(&full, 8, 6);
            assert_eq!(red[0] > 200 && red[1] < 60, ycbcr, "{what}: {red:?}");
            for n in [2, 4, 8] {
                let small = decode(&file, &info, &limits, n).expect("scaled");
                assert_eq!((small.width, small.height), (64 / n, 48 / n), "{what}");
                // Inside each flat quadrant the scaled picture has the full decode's colour.
                for (x, y) in [(8, 6), (56, 6), (8, 42)] {
                    assert_near(
                        pixel(&small, x / n, y / n),
                        pixel(&full, x, y),
                        12,
                        &format!("{what} at 1/{n}"),
                    );
                }
            }
        }
    }

    #[test]
    fn a_dc_decoded_thumbnail_keeps_the_icc_profile() {
        let bytes = fixture("color/p3_jpeg.jpg");
        let limits = Limits::default();
        let info = super::super::super::probe(&bytes, &limits).expect("probe");
        let image = decode(&bytes, &info, &limits, 8).expect("decode");
        assert_eq!(
            (image.width, image.height),
            (info.width.div_ceil(8), info.height.div_ceil(8))
        );
        let icc = image.icc.expect("APP2 profile kept");
        assert_eq!(&icc[36..40], b"acsp");
    }

    #[test]
    fn lossy_webp_output_keeps_a_smaller_reserve() {
        let info = ImageInfo {
            format: SourceFormat::Jpeg,
            width: 2560,
            height: 1600,
            orientation: 1,
            has_alpha: false,
            frames: 1,
        };
        let scale = |(w, h), output| {
            let hint = DecodeHint {
                min_size: Some((w, h)),
                output,
                ..DecodeHint::default()
            };
            scale_denominator(&info, hint)
        };
        // 800 px wide: 1/2 is 1280 px, 1.6x the output.
        let outputs = [
            (None, 1),
            (Some((OutputFormat::Jpeg, 80)), 1),
            (Some((OutputFormat::Avif, 60)), 1),
            (Some((OutputFormat::Png, 80)), 1),
            (Some((OutputFormat::Webp, 80)), 2),
            (Some((OutputFormat::Webp, 90)), 2),
            // Above q90 (signed URLs) the encoder's loss is too small to hide it: 2 again.
            (Some((OutputFormat::Webp, 91)), 1),
        ];
        for (output, n) in outputs {
            assert_eq!(scale((800, 500), output), n, "{output:?}");
        }
        // The bound itself: 1/2 serves WebP up to 1280 / 1.5 = 853 px wide, 1/4 up to 426.
        let webp = Some((OutputFormat::Webp, 80));
        for (size, n) in [
            ((853, 533), 2),
            ((854, 533), 1),
            ((426, 266), 4),
            ((427, 266), 2),
        ] {
            assert_eq!(scale(size, webp), n, "{size:?}");
        }
    }

    /// Through the whole pipeline: a WebP thumbnail from the decode at 1/2 that only the
    /// smaller reserve allows looks like a WebP of the full decode's thumbnail.
    #[test]
    fn a_webp_thumbnail_from_the_smaller_reserve_matches_the_full_decode() {
        use super::super::super::{
            EncodeSettings, Transform, decode_upright, encode_image, plan, probe, render,
            resize_image,
        };
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/photos/ladybird.jpg"
        ))
        .expect("fixture");
        let limits = Limits::default();
        let settings = EncodeSettings::default();
        let info = probe(&bytes, &limits).expect("probe");
        assert_eq!((info.width, info.height), (1200, 750));
        let thumb = Transform {
            width: Some(400),
            ..Transform::default()
        };
        let hint = plan(info.oriented_size(), &thumb, &limits)
            .expect("plan")
            .decode_hint();
        let webp_hint = DecodeHint {
            output: Some((OutputFormat::Webp, 80)),
            ..hint
        };
        assert_eq!(
            scale_denominator(&info, hint),
            1,
            "JPEG output: full decode"
        );
        assert_eq!(scale_denominator(&info, webp_hint), 2, "WebP output: 1/2");
        let half = decode_upright(&bytes, &info, &limits, webp_hint).expect("1/2 decode");
        assert_eq!((half.width, half.height), (600, 375));

        let decode_webp = |webp: &[u8]| {
            let mut decoder =
                image_webp::WebPDecoder::new(std::io::Cursor::new(webp)).expect("webp header");
            let (w, h) = decoder.dimensions();
            let mut pixels = vec![0; decoder.output_buffer_size().expect("size")];
            decoder.read_image(&mut pixels).expect("webp decodes");
            assert!(!decoder.has_alpha());
            Image::new(w, h, PixelLayout::Rgb8, pixels)
        };
        let ours = render(&bytes, &thumb, OutputFormat::Webp, &limits, &settings).expect("render");
        let ours = decode_webp(&ours.bytes);
        assert_eq!((ours.width, ours.height), (400, 250));
        let full = decode_upright(&bytes, &info, &limits, DecodeHint::default()).expect("full");
        let full = resize_image(full, &thumb, &limits).expect("resize");
        let reference = encode_image(&full, OutputFormat::Webp, 80, &settings).expect("encode");
        let reference = decode_webp(&reference);
        let (mean, _) = difference(&ours, &reference);
        assert!(
            mean < 2.0,
            "mean difference {mean:.2} from the full decode's WebP"
        );
        // Against the full decode's exact thumbnail, the reduced path is as close as the
        // full-decode WebP itself (the encoder's loss, not the reserve, is the difference).
        let (ours_loss, _) = difference(&ours, &full);
        let (reference_loss, _) = difference(&reference, &full);
        assert!(
            ours_loss < reference_loss * 1.25,
            "{ours_loss:.2} from the exact thumbnail, the full-decode WebP {reference_loss:.2}"
        );
    }

    #[test]
    fn scale_denominator_leaves_a_lanczos_step() {
        let info = ImageInfo {
            format: SourceFormat::Jpeg,
            width: 4000,
            height: 3000,
            orientation: 6,
            has_alpha: false,
            frames: 1,
        };
        let hint = |w, h| DecodeHint {
            min_size: Some((w, h)),
            ..DecodeHint::default()
        };
        let reserve = |n: u32| RESERVE.iter().find(|r| r.0 == n).expect("scale").1;
        // The largest size 1/n serves: ceil(side / n) / reserve, on the oriented 3000x4000.
        let serves = |n: u32| {
            let r = reserve(n);
            let fit = |side: u32| (f64::from(side.div_ceil(n)) / r).floor() as u32;
            (fit(3000), fit(4000))
        };
        assert_eq!(scale_denominator(&info, DecodeHint::default()), 1);
        assert_eq!(scale_denominator(&info, hint(1, 1)), 8);
        for n in [8, 4, 2] {
            let (w, h) = serves(n);
            assert_eq!(
                scale_denominator(&info, hint(w, h)),
                n,
                "1/{n} serves {w}x{h}"
            );
            // One pixel more on either axis needs the next larger scale.
            assert!(scale_denominator(&info, hint(w + 1, h)) < n);
            assert!(scale_denominator(&info, hint(w, h + 1)) < n);
        }
        let (w, h) = serves(2);
        assert_eq!(scale_denominator(&info, hint(w + 1, h)), 1);
        // A forced denominator wins (benchmarks and the quality sweep use it).
        let forced = DecodeHint {
            min_size: Some((3000, 4000)),
            denominator: Some(4),
            ..DecodeHint::default()
        };
        assert_eq!(scale_denominator(&info, forced), 4);
    }
}
