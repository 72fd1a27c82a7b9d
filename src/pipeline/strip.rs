//! Metadata removal for originals answered as they are (a bare `photo.jpg` of a JPEG): the
//! pixels stay byte for byte, what a camera or phone wrote about the picture goes (GPS
//! position, device, time, thumbnails, XMP, IPTC, comments).
//!
//! JPEG only: it is what phones and cameras write with GPS. The segments before the scan are
//! copied except APP1 (Exif, XMP), APP13 (Photoshop/IPTC) and COM; APP0 (JFIF), APP2 (the ICC
//! profile), APP14 (Adobe: needed to read CMYK/YCCK) and every coding segment stay. An
//! orientation other than 1 is kept in a minimal Exif of one tag, so browsers still turn the
//! picture upright.
//!
//! Cheap and bounded by construction, so it runs on the request's worker (an original is
//! answered even when the render pool is full): a walk over the segment headers before the
//! scan, one copy of the bytes, and the Orientation read from the Exif segment, which a JPEG
//! caps at 64 KiB.

/// The JPEG `bytes` without its metadata segments, with a minimal Exif holding the
/// Orientation (EXIF 1..=8) of the Exif it removes when that is not 1. `None` when there is
/// nothing to remove, or the segment structure cannot be followed (the caller then answers
/// the bytes as stored: they decoded at upload).
pub(crate) fn jpeg_without_metadata(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut orientation = 1;
    if bytes.len() < 4 || bytes[0..2] != [0xFF, 0xD8] {
        return None;
    }
    let mut kept: Vec<(usize, usize)> = Vec::new();
    let mut dropped = false;
    let mut i = 2;
    let scan = loop {
        // Fill bytes (0xFF runs) may precede a marker.
        while bytes.get(i) == Some(&0xFF) && bytes.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        if bytes.get(i) != Some(&0xFF) {
            return None;
        }
        let marker = *bytes.get(i + 1)?;
        if marker == 0xDA {
            // Start of scan: the entropy-coded data and everything after it stay as they are.
            break i;
        }
        let len = usize::from(u16::from_be_bytes([*bytes.get(i + 2)?, *bytes.get(i + 3)?]));
        if len < 2 || i + 2 + len > bytes.len() {
            return None;
        }
        let end = i + 2 + len;
        if matches!(marker, 0xE1 | 0xED | 0xFE) {
            let payload = &bytes[i + 4..end];
            if marker == 0xE1 && orientation == 1 {
                orientation = exif_orientation(payload).unwrap_or(1);
            }
            dropped = true;
        } else {
            kept.push((i, end));
        }
        i = end;
    };
    if !dropped {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&[0xFF, 0xD8]);
    let mut exif_written = orientation == 1 || !(2..=8).contains(&orientation);
    for (start, end) in kept {
        // JFIF's APP0 must come first; the Exif goes right after it (or first, without one).
        let is_app0 = bytes[start + 1] == 0xE0;
        if !exif_written && !is_app0 {
            out.extend_from_slice(&orientation_exif(orientation));
            exif_written = true;
        }
        out.extend_from_slice(&bytes[start..end]);
    }
    if !exif_written {
        out.extend_from_slice(&orientation_exif(orientation));
    }
    out.extend_from_slice(&bytes[scan..]);
    Some(out)
}

/// The Orientation of an APP1 payload that is an Exif block.
fn exif_orientation(payload: &[u8]) -> Option<u8> {
    let tiff = payload.strip_prefix(b"Exif\0\0")?;
    let fields = exif::Reader::new().read_raw(tiff.to_vec()).ok()?;
    let value = fields
        .get_field(exif::Tag::Orientation, exif::In::PRIMARY)?
        .value
        .get_uint(0)?;
    u8::try_from(value).ok().filter(|o| (1..=8).contains(o))
}

/// An APP1 Exif segment with one tag: Orientation (0x0112, SHORT) = `orientation`.
fn orientation_exif(orientation: u8) -> Vec<u8> {
    let mut tiff = Vec::with_capacity(26);
    tiff.extend_from_slice(b"MM\0*"); // big-endian TIFF header
    tiff.extend_from_slice(&8u32.to_be_bytes()); // IFD0 right after it
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&u16::from(orientation).to_be_bytes());
    tiff.extend_from_slice(&[0, 0]); // value padding
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let payload_len = 6 + tiff.len();
    let mut seg = Vec::with_capacity(4 + payload_len);
    seg.extend_from_slice(&[0xFF, 0xE1]);
    seg.extend_from_slice(&((payload_len + 2) as u16).to_be_bytes());
    seg.extend_from_slice(b"Exif\0\0");
    seg.extend_from_slice(&tiff);
    seg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(marker: u8, payload: &[u8]) -> Vec<u8> {
        let mut s = vec![0xFF, marker];
        s.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        s.extend_from_slice(payload);
        s
    }

    #[test]
    fn drops_exif_xmp_iptc_and_comments_and_keeps_the_rest_in_order() {
        let mut jpeg = vec![0xFF, 0xD8];
        jpeg.extend(segment(0xE0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"));
        jpeg.extend(segment(0xE1, b"Exif\0\0MM\0*GPS..."));
        jpeg.extend(segment(0xE1, b"http://ns.adobe.com/xap/1.0/\0<x/>"));
        jpeg.extend(segment(0xE2, b"ICC_PROFILE\0\x01\x01abc"));
        jpeg.extend(segment(0xED, b"Photoshop 3.0\0"));
        jpeg.extend(segment(0xFE, b"a comment"));
        jpeg.extend(segment(0xDB, &[0; 65]));
        jpeg.extend([0xFF, 0xDA, 0, 2, 1, 2, 3, 0xFF, 0xD9]);
        let out = jpeg_without_metadata(&jpeg).unwrap();
        let mut want = vec![0xFF, 0xD8];
        want.extend(segment(0xE0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"));
        want.extend(segment(0xE2, b"ICC_PROFILE\0\x01\x01abc"));
        want.extend(segment(0xDB, &[0; 65]));
        want.extend([0xFF, 0xDA, 0, 2, 1, 2, 3, 0xFF, 0xD9]);
        assert_eq!(out, want);

        // An orientation is kept, in a one-tag Exif after the JFIF segment.
        let mut oriented = vec![0xFF, 0xD8];
        oriented.extend(segment(0xE0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"));
        let mut camera = orientation_exif(6)[4..].to_vec();
        camera.extend_from_slice(b"trailing maker notes");
        oriented.extend(segment(0xE1, &camera));
        oriented.extend_from_slice(&jpeg[2 + 18..]);
        let out = jpeg_without_metadata(&oriented).unwrap();
        let exif = orientation_exif(6);
        assert_eq!(&out[2 + 18..2 + 18 + exif.len()], &exif[..]);
        let fields = exif::Reader::new()
            .read_raw(exif[10..].to_vec())
            .expect("a valid Exif");
        let o = fields
            .get_field(exif::Tag::Orientation, exif::In::PRIMARY)
            .and_then(|f| f.value.get_uint(0));
        assert_eq!(o, Some(6));
        assert_eq!(fields.fields().count(), 1);
    }

    #[test]
    fn nothing_to_remove_or_nothing_to_follow_is_none() {
        let mut clean = vec![0xFF, 0xD8];
        clean.extend(segment(0xDB, &[0; 65]));
        clean.extend([0xFF, 0xDA, 0, 2, 0xFF, 0xD9]);
        assert_eq!(jpeg_without_metadata(&clean), None);
        assert_eq!(jpeg_without_metadata(b"\xFF\xD8\xFF\xE1\xFF\xFF"), None);
        assert_eq!(jpeg_without_metadata(b"GIF89a"), None);
    }
}
