//! EXIF orientation: turns stored pixels into display pixels.
//!
//! Owns the pixel remapping for the eight EXIF orientations. Must never look at metadata
//! (the probe reads the tag) nor change the pixel values, layout or ICC profile: it only
//! moves pixels.

use super::Image;

/// Applies EXIF `orientation` (1..=8; anything else is treated as 1): 2 mirror left-right,
/// 3 rotate 180, 4 mirror top-bottom, 5 transpose, 6 rotate 90 clockwise, 7 transverse,
/// 8 rotate 270 clockwise.
pub(super) fn apply(image: Image, orientation: u8) -> Image {
    if !(2..=8).contains(&orientation) {
        return image;
    }
    let (w, h) = (image.width as usize, image.height as usize);
    let c = image.channels();
    let quarter = orientation >= 5;
    let (out_w, out_h) = if quarter { (h, w) } else { (w, h) };
    let mut data = vec![0u8; image.data.len()];
    // For every destination pixel, where it comes from in the stored image.
    let source = |x: usize, y: usize| -> (usize, usize) {
        match orientation {
            2 => (w - 1 - x, y),
            3 => (w - 1 - x, h - 1 - y),
            4 => (x, h - 1 - y),
            5 => (y, x),
            6 => (y, h - 1 - x),
            7 => (w - 1 - y, h - 1 - x),
            _ => (w - 1 - y, x), // 8
        }
    };
    for (y, row) in data.chunks_exact_mut(out_w * c).enumerate().take(out_h) {
        for (x, px) in row.chunks_exact_mut(c).enumerate() {
            let (sx, sy) = source(x, y);
            let at = (sy * w + sx) * c;
            px.copy_from_slice(&image.data[at..at + c]);
        }
    }
    Image {
        width: out_w as u32,
        height: out_h as u32,
        layout: image.layout,
        data,
        icc: image.icc,
        whole_picture: image.whole_picture,
    }
}

#[cfg(test)]
mod tests {
    use super::super::decode::test_support::{assert_near, decode_fixture, pixel};
    use super::super::probe::probe;
    use super::super::{Limits, PixelLayout};
    use super::*;

    const RED: [u8; 4] = [255, 0, 0, 255];
    const BLUE: [u8; 4] = [0, 0, 255, 255];
    const WHITE: [u8; 4] = [255, 255, 255, 255];

    /// After orientation every fixture shows 48x32 white, red block top-left, blue top-right.
    fn assert_upright(image: &Image, what: &str) {
        assert_eq!((image.width, image.height), (48, 32), "{what}");
        assert_near(pixel(image, 2, 2), RED, 24, what);
        assert_near(pixel(image, 45, 2), BLUE, 24, what);
        assert_near(pixel(image, 2, 29), WHITE, 24, what);
        assert_near(pixel(image, 45, 29), WHITE, 24, what);
    }

    #[test]
    fn all_eight_jpeg_orientations_end_upright() {
        for n in 1..=8u8 {
            let rel = format!("orientation/orient_{n}.jpg");
            let bytes = super::super::decode::test_support::fixture(&rel);
            let info = probe(&bytes, &Limits::default()).expect("probe");
            let image = decode_fixture(&rel).expect("decode");
            assert_upright(&apply(image, info.orientation), &rel);
        }
    }

    #[test]
    fn png_and_webp_exif_orientation_end_upright() {
        for rel in ["orientation/orient_6.png", "orientation/orient_6.webp"] {
            let image = decode_fixture(rel).expect("decode");
            assert_upright(&apply(image, 6), rel);
        }
    }

    /// 3x2 image whose pixel values are their stored index, so every mapping is checked
    /// exactly, RGBA included.
    #[test]
    fn exact_mappings_on_a_tiny_rgba_image() {
        let data: Vec<u8> = (0..6u8).flat_map(|i| [i, i, i, 255 - i]).collect();
        let tiny = Image::new(3, 2, PixelLayout::Rgba8, data);
        // Stored:  0 1 2
        //          3 4 5
        let cases: [(u8, (u32, u32), &[u8]); 8] = [
            (1, (3, 2), &[0, 1, 2, 3, 4, 5]),
            (2, (3, 2), &[2, 1, 0, 5, 4, 3]),
            (3, (3, 2), &[5, 4, 3, 2, 1, 0]),
            (4, (3, 2), &[3, 4, 5, 0, 1, 2]),
            (5, (2, 3), &[0, 3, 1, 4, 2, 5]),
            (6, (2, 3), &[3, 0, 4, 1, 5, 2]),
            (7, (2, 3), &[5, 2, 4, 1, 3, 0]),
            (8, (2, 3), &[2, 5, 1, 4, 0, 3]),
        ];
        for (orientation, size, order) in cases {
            let out = apply(tiny.clone(), orientation);
            assert_eq!((out.width, out.height), size, "orientation {orientation}");
            let got: Vec<u8> = out.data.chunks_exact(4).map(|p| p[0]).collect();
            assert_eq!(got, order, "orientation {orientation}");
            assert!(out.data.chunks_exact(4).all(|p| p[3] == 255 - p[0]));
        }
        assert_eq!(apply(tiny.clone(), 0).data, tiny.data);
        assert_eq!(apply(tiny.clone(), 9).data, tiny.data);
    }
}
