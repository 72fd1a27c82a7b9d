//! JPEG through zune-jpeg: baseline (interleaved or one scan per component; the latter needs
//! zune-jpeg >= 0.5.16-rc3 with subsampled luma), progressive, restart markers, any
//! subsampling, gray, CMYK and YCCK (Adobe inverted or not).

use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use super::super::color;
use super::super::probe::{ImageInfo, jpeg_header};
use super::super::spec::{Limits, SourceFormat};
use super::super::{DecodeHint, Image, PipelineError, PixelLayout};
use super::{corrupt, image_from_samples, jpeg_dc};

/// Decodes at full size, or at 1/8 size (`ceil(w / 8)` x `ceil(h / 8)`) when `scale` is 8 and
/// the file is one `jpeg_dc` handles.
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
    // Shrink-on-load: only the 1/8 step has a decoder here (DC coefficients only). zune-jpeg
    // cannot scale, and 1/2 or 1/4 of a progressive JPEG needs nearly every scan anyway.
    if scale == 8 && matches!(header.components, 1 | 3) {
        // zune's header pass decides the colour space (an Adobe segment anywhere before the
        // scan, RGB component ids) and assembles the ICC profile; the DC decoder takes what
        // it reads as YCbCr or gray. Anything the DC decoder does not handle or refuses goes
        // to the full decoder, so every refusal is the full decoder's.
        let mut headers =
            JpegDecoder::new_with_options(ZCursor::new(bytes), options(ColorSpace::RGB));
        headers.decode_headers().map_err(bad)?;
        if matches!(
            headers.input_colorspace(),
            Some(ColorSpace::YCbCr | ColorSpace::Luma)
        ) && let Ok(Some(mut image)) = jpeg_dc::decode(bytes, (info.width, info.height))
        {
            if header.components == 3 {
                image.icc = headers.icc_profile();
            }
            return Ok(image);
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
            let mut cmyk = samples;
            if out_colorspace == ColorSpace::YCCK {
                ycck_to_cmyk_in_place(&mut cmyk);
            }
            // Photoshop (and every writer that adds the Adobe marker) stores 255 - ink.
            if header.adobe_transform.is_some() {
                cmyk.iter_mut().for_each(|v| *v = 255 - *v);
            }
            let rgb = color::cmyk_to_srgb(&cmyk, icc.as_deref());
            Ok(Image::new(width, height, PixelLayout::Rgb8, rgb))
        }
    }
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

/// How much of the reduction is left to the Lanczos pass after a DCT-scaled decode. A 1/8
/// DCT-scaled image is an 8x8 block average: sharper and more aliased than a Lanczos
/// reduction, and from 4:2:0 sources its chroma is at 1/16. Leaving a 2x Lanczos step (libvips
/// leaves the same) keeps the output's quality score near where the full decode puts it;
/// with 1x the DSSIM of a 3840x2160 image at 400 px rose from 0.000017 to 0.00056
/// (benches/RESULTS.md).
const LANCZOS_RESERVE: u32 = 2;

/// The JPEG DCT scaling to decode at: 8 when the 1/8-scale image still covers
/// `LANCZOS_RESERVE` times `hint.min_size` (given in oriented coordinates), else 1. (1/2 and
/// 1/4 have no decoder here: zune-jpeg cannot scale, and for a progressive JPEG they need
/// nearly every scan anyway.)
pub(super) fn scale_denominator(info: &ImageInfo, hint: DecodeHint) -> u32 {
    let Some((min_w, min_h)) = hint.min_size else {
        return 1;
    };
    let (width, height) = info.oriented_size();
    let covers = |n: u32| {
        width.div_ceil(n) >= min_w.saturating_mul(LANCZOS_RESERVE)
            && height.div_ceil(n) >= min_h.saturating_mul(LANCZOS_RESERVE)
    };
    if covers(8) { 8 } else { 1 }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

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
        let bytes = fixture("jpeg_dc/ladybird_odd_progressive.jpg");
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
    fn the_dc_decoder_takes_only_what_zune_reads_as_ycbcr_or_gray() {
        let bytes = fixture("formats/jpeg_baseline.jpg");
        let limits = Limits::default();
        let info = super::super::super::probe(&bytes, &limits).expect("probe");
        let size = |b: &[u8]| {
            let image = decode(b, &info, &limits, 8).expect("decode");
            (image.width, image.height)
        };
        assert_eq!(size(&bytes), (8, 6), "plain YCbCr: DC decoder");
        let adobe = |transform: u8| {
            let mut payload = b"Adobe".to_vec();
            payload.extend_from_slice(&[0, 100, 0, 0, 0, 0, transform]);
            payload
        };
        // Adobe transform 0 on three components means RGB-coded: the full decoder, whether
        // the segment comes before the frame header or after it.
        let sof = bytes
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .expect("SOF0");
        let sof_end = sof + 2 + usize::from(u16::from_be_bytes([bytes[sof + 2], bytes[sof + 3]]));
        assert_eq!(size(&with_segment(&bytes, 2, 0xEE, &adobe(0))), (64, 48));
        assert_eq!(
            size(&with_segment(&bytes, sof_end, 0xEE, &adobe(0))),
            (64, 48)
        );
        // Transform 1 is YCbCr.
        assert_eq!(
            size(&with_segment(&bytes, sof_end, 0xEE, &adobe(1))),
            (8, 6)
        );
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
    fn scale_denominator_leaves_a_lanczos_step() {
        let info = ImageInfo {
            format: SourceFormat::Jpeg,
            width: 4000,
            height: 3000,
            orientation: 6,
            has_alpha: false,
        };
        let hint = |w, h| DecodeHint {
            min_size: Some((w, h)),
        };
        assert_eq!(scale_denominator(&info, DecodeHint::default()), 1);
        // Oriented 3000x4000; 1/8 is 375x500, which covers twice 187x250.
        assert_eq!(scale_denominator(&info, hint(187, 250)), 8);
        assert_eq!(scale_denominator(&info, hint(188, 250)), 1);
        assert_eq!(scale_denominator(&info, hint(187, 251)), 1);
        assert_eq!(scale_denominator(&info, hint(1, 1)), 8);
    }
}
