//! Colour management: everything leaves here as sRGB.
//!
//! Owns applying embedded ICC profiles (moxcms) and the CMYK to sRGB conversion. Must never
//! fail an image because of its profile: a profile that cannot be parsed or transformed is
//! dropped and the pixels are kept as they are (browsers do the same), and must never touch
//! geometry or alpha.

use moxcms::{ColorProfile, DataColorSpace, Layout, TransformOptions};

use super::{Image, PipelineError, PixelLayout};

/// Converts `image` from its embedded profile (if any, and not already sRGB) to sRGB and
/// clears `image.icc`. Alpha is passed through unchanged.
pub(super) fn to_srgb(mut image: Image) -> Result<Image, PipelineError> {
    let Some(icc) = image.icc.take() else {
        return Ok(image);
    };
    let Ok(source) = ColorProfile::new_from_slice(&icc) else {
        return Ok(image);
    };
    if source.color_space != DataColorSpace::Rgb || is_srgb(&source) {
        return Ok(image);
    }
    let layout = match image.layout {
        PixelLayout::Rgb8 => Layout::Rgb,
        PixelLayout::Rgba8 => Layout::Rgba,
    };
    let srgb = ColorProfile::new_srgb();
    let Ok(transform) =
        source.create_transform_8bit(layout, &srgb, layout, TransformOptions::default())
    else {
        return Ok(image);
    };
    let mut converted = vec![0u8; image.data.len()];
    if transform.transform(&image.data, &mut converted).is_ok() {
        image.data = converted;
    }
    Ok(image)
}

/// CMYK (0 = no ink, 255 = full ink, 4 bytes a pixel) to sRGB RGB8 through the embedded
/// CMYK profile when there is a usable one, otherwise through the naive
/// `(1 - C)(1 - K)` formula (what browsers do without a profile).
pub(super) fn cmyk_to_srgb(cmyk: &[u8], icc: Option<&[u8]>) -> Vec<u8> {
    if let Some(rgb) = icc.and_then(|icc| cmyk_through_profile(cmyk, icc)) {
        return rgb;
    }
    cmyk.chunks_exact(4)
        .flat_map(|p| {
            let k = 255 - u16::from(p[3]);
            let channel = |ink: u8| ((255 - u16::from(ink)) * k / 255) as u8;
            [channel(p[0]), channel(p[1]), channel(p[2])]
        })
        .collect()
}

fn cmyk_through_profile(cmyk: &[u8], icc: &[u8]) -> Option<Vec<u8>> {
    let source = ColorProfile::new_from_slice(icc).ok()?;
    if source.color_space != DataColorSpace::Cmyk {
        return None;
    }
    // moxcms takes 8-bit CMYK in the RGBA layout.
    let transform = source
        .create_transform_8bit(
            Layout::Rgba,
            &ColorProfile::new_srgb(),
            Layout::Rgb,
            TransformOptions::default(),
        )
        .ok()?;
    let mut rgb = vec![0u8; cmyk.len() / 4 * 3];
    transform.transform(cmyk, &mut rgb).ok()?;
    Some(rgb)
}

/// Whether a matrix/TRC profile is sRGB in all but name: sRGB primaries and sRGB curves.
/// Checked on the parsed values (not the description), so the many sRGB variants in the
/// wild (v2, v4, different writers) are all skipped without building a transform.
fn is_srgb(profile: &ColorProfile) -> bool {
    let srgb = ColorProfile::new_srgb();
    let close = |a: &moxcms::Xyzd, b: &moxcms::Xyzd| {
        (a.x - b.x).abs() < 0.002 && (a.y - b.y).abs() < 0.002 && (a.z - b.z).abs() < 0.002
    };
    let primaries = close(&profile.red_colorant, &srgb.red_colorant)
        && close(&profile.green_colorant, &srgb.green_colorant)
        && close(&profile.blue_colorant, &srgb.blue_colorant);
    if !primaries || profile.lut_a_to_b_perceptual.is_some() {
        return false;
    }
    let Some(reference) = srgb
        .red_trc
        .as_ref()
        .and_then(|t| t.make_linear_evaluator().ok())
    else {
        return false;
    };
    [&profile.red_trc, &profile.green_trc, &profile.blue_trc]
        .into_iter()
        .all(|trc| {
            let Some(curve) = trc.as_ref().and_then(|t| t.make_linear_evaluator().ok()) else {
                return false;
            };
            [0.02f32, 0.1, 0.25, 0.5, 0.75, 0.95]
                .into_iter()
                .all(|v| (curve.evaluate_value(v) - reference.evaluate_value(v)).abs() < 0.004)
        })
}

#[cfg(test)]
mod tests {
    use super::super::decode::test_support::{assert_near, decode_fixture, fixture, pixel};
    use super::*;

    #[test]
    fn display_p3_is_converted_to_srgb() {
        // P3 (200, 60, 50) is sRGB (217.5, 41.6, 38.8) (computed by generate.sh): the same
        // colour needs more red and less green/blue in the smaller gamut.
        let raw = decode_fixture("color/p3_jpeg.jpg").expect("decode");
        let before = pixel(&raw, 16, 16);
        let image = to_srgb(raw).expect("to_srgb");
        assert!(image.icc.is_none());
        let after = pixel(&image, 16, 16);
        assert!(after[0] > before[0] + 10, "{before:?} -> {after:?}");
        assert!(after[1] + 10 < before[1], "{before:?} -> {after:?}");
        assert_near(after, [218, 42, 39, 255], 4, "P3 to sRGB");
    }

    #[test]
    fn display_p3_with_alpha_keeps_alpha() {
        let image = to_srgb(decode_fixture("color/p3_alpha.png").expect("decode")).expect("srgb");
        assert_eq!(image.layout, PixelLayout::Rgba8);
        assert_near(
            pixel(&image, 5, 5),
            [218, 42, 39, 128],
            3,
            "P3 RGBA to sRGB",
        );
    }

    #[test]
    fn srgb_profiles_are_skipped() {
        let raw = decode_fixture("color/srgb_tagged.jpg").expect("decode");
        let icc = raw.icc.clone().expect("tagged");
        let parsed = ColorProfile::new_from_slice(&icc).expect("colord sRGB parses");
        assert!(is_srgb(&parsed));
        assert!(is_srgb(&ColorProfile::new_srgb()));
        assert!(!is_srgb(&ColorProfile::new_display_p3()));
        let data = raw.data.clone();
        let image = to_srgb(raw).expect("to_srgb");
        assert_eq!(image.data, data);
        assert!(image.icc.is_none());
    }

    #[test]
    fn unparseable_profile_keeps_pixels() {
        let mut image = decode_fixture("formats/jpeg_444.jpg").expect("decode");
        let data = image.data.clone();
        image.icc = Some(b"definitely not an ICC profile".to_vec());
        let image = to_srgb(image).expect("never fails on a profile");
        assert_eq!(image.data, data);
        assert!(image.icc.is_none());
        // A CMYK profile on RGB pixels is ignored too.
        let mut image = decode_fixture("formats/jpeg_444.jpg").expect("decode");
        image.icc = Some(fixture("color/toy-cmyk.icc"));
        assert_eq!(to_srgb(image).expect("ignored").data, data);
    }

    #[test]
    fn naive_cmyk_formula() {
        let cmyk = [255, 0, 0, 0, 0, 0, 0, 255, 0, 0, 0, 0, 128, 128, 128, 128];
        assert_eq!(
            cmyk_to_srgb(&cmyk, None),
            [0, 255, 255, 0, 0, 0, 255, 255, 255, 63, 63, 63]
        );
        // A garbage profile falls back to the naive formula.
        assert_eq!(cmyk_to_srgb(&cmyk[..4], Some(b"junk")), [0, 255, 255]);
    }
}
