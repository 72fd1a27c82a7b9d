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
use super::{corrupt, image_from_samples};

pub(super) fn decode(
    bytes: &[u8],
    info: &ImageInfo,
    limits: &Limits,
    hint: DecodeHint,
) -> Result<Image, PipelineError> {
    let bad = |e: zune_jpeg::errors::DecodeErrors| corrupt(SourceFormat::Jpeg, format!("{e:?}"));
    let header = jpeg_header(bytes)?;
    // Shrink-on-load seam: zune-jpeg can only decode at 1/1. A scaling decoder (turbojpeg's
    // `set_scaling_factor`, jpeg-decoder's `scale`) would decode at
    // 1/scale_denominator(info, hint) here and return the smaller image; everything after
    // decode already works from `Image::width/height`.
    let _ = hint;
    // Four components: take the raw samples and convert here, because zune's own CMYK
    // conversion ignores the embedded CMYK profile and the Adobe inversion convention.
    let out_colorspace = match (header.components, header.adobe_transform) {
        (4, Some(2)) => ColorSpace::YCCK,
        (4, _) => ColorSpace::CMYK,
        _ => ColorSpace::RGB,
    };
    let max_side = usize::try_from(u64::min(limits.max_source_pixels, u64::from(u16::MAX)))
        .unwrap_or(usize::from(u16::MAX));
    let options = DecoderOptions::default()
        .set_max_width(max_side)
        .set_max_height(max_side)
        // Strict: a truncated or damaged scan is an error instead of a grey-filled rest of
        // the picture that would be cached and served for a year.
        .set_strict_mode(true)
        .jpeg_set_out_colorspace(out_colorspace);
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

/// The JPEG DCT scaling (1, 2, 4 or 8) a scaling decoder should use: the largest whose
/// output still covers `hint.min_size` (given in oriented coordinates). Kept next to the
/// decoder so the day zune-jpeg is joined by a scaling decoder the choice is already tested.
#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "shrink-on-load seam: used once a JPEG decoder that can scale lands"
    )
)]
pub(super) fn scale_denominator(info: &ImageInfo, hint: DecodeHint) -> u32 {
    let Some((min_w, min_h)) = hint.min_size else {
        return 1;
    };
    let (width, height) = info.oriented_size();
    [8, 4, 2]
        .into_iter()
        .find(|&n| width.div_ceil(n) >= min_w && height.div_ceil(n) >= min_h)
        .unwrap_or(1)
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
    fn scale_denominator_picks_the_largest_covering_scale() {
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
        // Oriented 3000x4000.
        assert_eq!(scale_denominator(&info, hint(375, 500)), 8);
        assert_eq!(scale_denominator(&info, hint(376, 500)), 4);
        assert_eq!(scale_denominator(&info, hint(1500, 10)), 2);
        assert_eq!(scale_denominator(&info, hint(1501, 10)), 1);
    }
}
