//! ICO and CUR: the largest entry (chosen by the probe, which has checked every entry's
//! declared size against its embedded header and the limits). PNG entries go through the
//! PNG decoder here; BMP entries (headerless DIBs with an AND mask) through the `ico` crate.

use std::io::Cursor;

use super::super::probe::ico_largest;
use super::super::spec::{Limits, SourceFormat};
use super::super::{Image, PipelineError, PixelLayout};
use super::{corrupt, png, strip_alpha};

pub(super) fn decode(bytes: &[u8], limits: &Limits) -> Result<Image, PipelineError> {
    let entry = ico_largest(bytes, limits)?;
    let dir = ico::IconDir::read(Cursor::new(bytes)).map_err(|e| corrupt(SourceFormat::Ico, e))?;
    let data = dir
        .entries()
        .get(entry.index)
        .ok_or_else(|| corrupt(SourceFormat::Ico, "entry vanished"))?;
    if entry.png {
        return png::decode(data.data(), limits);
    }
    let icon = data.decode().map_err(|e| corrupt(SourceFormat::Ico, e))?;
    let image = Image::new(
        icon.width(),
        icon.height(),
        PixelLayout::Rgba8,
        icon.into_rgba_data(),
    );
    let opaque = image.data.chunks_exact(4).all(|p| p[3] == 255);
    Ok(if opaque { strip_alpha(image) } else { image })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn the_largest_entry_matches_an_independent_decode() {
        // BMP entries (the largest in the middle), a PNG entry, alpha, and a cursor.
        for (name, size) in [
            ("ico_photo.ico", (96, 60)),
            ("ico_png.ico", (256, 256)),
            ("ico_alpha.ico", (64, 48)),
        ] {
            let image = assert_matches_reference(name, 0);
            assert_eq!((image.width, image.height), size, "{name}");
        }
        let cursor = decode_fixture("formats/cur_alpha.cur").expect("cur");
        let icon = decode_fixture("formats/ico_alpha.ico").expect("ico");
        assert_eq!(cursor.data, icon.data);
        assert_eq!(cursor.layout, PixelLayout::Rgba8);
        assert_quadrants(&cursor, 0, "cur_alpha.cur");
        assert_eq!(pixel(&cursor, 56, 42)[3], 0);
    }
}
