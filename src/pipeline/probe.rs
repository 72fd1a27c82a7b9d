//! Sniffing and the header probe: what a source is and how big it claims to be.
//!
//! Owns format detection from magic bytes, reading dimensions / alpha / frame count / EXIF
//! orientation from headers, and enforcing the source limits on those claims.
//! Must never allocate a pixel buffer or decode image data: everything here is proportional
//! to the header bytes it walks, so a 100000 x 100000 PNG is refused for the price of its IHDR.

use std::io::Cursor;

use super::PipelineError;
use super::spec::{Limits, SourceFormat};

/// What the headers say about a source, before any pixel is decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub(crate) format: SourceFormat,
    /// Width as stored (before EXIF orientation).
    pub width: u32,
    /// Height as stored (before EXIF orientation).
    pub height: u32,
    /// EXIF orientation 1..=8; 1 when absent or unreadable.
    pub(crate) orientation: u8,
    /// Whether the source may carry transparency (alpha channel, tRNS, GIF transparency).
    pub(crate) has_alpha: bool,
    /// Animation frames declared (GIF, APNG, WebP, JPEG XL), top-level images (HEIF) or EXR
    /// parts; 1 for a still.
    pub(crate) frames: u32,
}

impl ImageInfo {
    /// Animation frames (or pages, parts) the headers declare; 1 for a still.
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// Display size: width and height swapped for the orientations that turn the image
    /// a quarter (5..=8).
    pub fn oriented_size(&self) -> (u32, u32) {
        if (5..=8).contains(&self.orientation) {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }
}

/// Detects the format from magic bytes only (never from a name or a media type).
pub(crate) fn sniff(bytes: &[u8]) -> Option<SourceFormat> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(SourceFormat::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(SourceFormat::Png)
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some(SourceFormat::Gif)
    } else if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
        Some(SourceFormat::Webp)
    } else if is_avif(bytes) {
        Some(SourceFormat::Avif)
    } else if is_heic(bytes) {
        Some(SourceFormat::Heic)
    } else if is_bmp(bytes) {
        Some(SourceFormat::Bmp)
    } else if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        Some(SourceFormat::Tiff)
    } else if bytes.starts_with(&[0xFF, 0x0A]) || bytes.starts_with(JXL_CONTAINER) {
        Some(SourceFormat::Jxl)
    } else if bytes.starts_with(&[0x76, 0x2F, 0x31, 0x01]) {
        Some(SourceFormat::Exr)
    } else if bytes.starts_with(b"#?RADIANCE\n") || bytes.starts_with(b"#?RGBE\n") {
        Some(SourceFormat::Hdr)
    } else if bytes.len() >= 14 && bytes.starts_with(b"qoif") {
        Some(SourceFormat::Qoi)
    } else if is_pnm(bytes) {
        Some(SourceFormat::Pnm)
    } else if is_ico(bytes) {
        Some(SourceFormat::Ico)
    } else if super::decode::svg::is_svg(bytes) {
        Some(SourceFormat::Svg)
    } else if is_tga(bytes) {
        // Last: TGA has no magic number, only a header whose fields must make sense.
        Some(SourceFormat::Tga)
    } else {
        None
    }
}

/// The JPEG XL container's signature box (ISO/IEC 18181-2); a bare codestream starts `FF 0A`.
pub(super) const JXL_CONTAINER: &[u8] = b"\0\0\0\x0cJXL \r\n\x87\n";

/// `P1`..`P7`, whitespace, then (after any `#` comment lines) a digit, or for PAM (`P7`) a
/// header keyword: `P6` alone starts too much text.
fn is_pnm(bytes: &[u8]) -> bool {
    let [b'P', kind @ b'1'..=b'7', space, rest @ ..] = bytes else {
        return false;
    };
    if !space.is_ascii_whitespace() {
        return false;
    }
    let mut rest = rest;
    loop {
        match rest {
            [c, tail @ ..] if c.is_ascii_whitespace() => rest = tail,
            [b'#', ..] => match rest.iter().position(|&c| c == b'\n') {
                Some(end) => rest = &rest[end + 1..],
                None => return false,
            },
            [c, ..] if *kind == b'7' => return c.is_ascii_uppercase(),
            [c, ..] => return c.is_ascii_digit(),
            [] => return false,
        }
    }
}

/// ICONDIR: reserved 0, type 1 (icon) or 2 (cursor), at least one entry whose reserved byte
/// is 0.
fn is_ico(bytes: &[u8]) -> bool {
    bytes.len() >= 22
        && matches!(bytes[..4], [0, 0, 1 | 2, 0])
        && u16::from_le_bytes([bytes[4], bytes[5]]) > 0
        && bytes[9] == 0
}

/// TGA has no magic number: the 18-byte header's fields must all hold values a TGA writer
/// can write (colour-map type 0/1 matching the image type, a known image type, pixel depth
/// and colour-map entry size, non-zero dimensions, the reserved descriptor bits clear) and
/// the file must be long enough for its ID and colour map.
fn is_tga(bytes: &[u8]) -> bool {
    let Some(h) = bytes.get(..18) else {
        return false;
    };
    let le16 = |i: usize| usize::from(u16::from_le_bytes([h[i], h[i + 1]]));
    let (map_type, image_type, depth, descriptor) = (h[1], h[2], h[16], h[17]);
    let map_ok = match (map_type, image_type) {
        (1, 1 | 9) => matches!(h[7], 15 | 16 | 24 | 32) && le16(5) > 0,
        (0, 2 | 3 | 10 | 11) => true,
        _ => false,
    };
    let depth_ok = match image_type {
        1 | 9 => depth == 8,
        3 | 11 => matches!(depth, 8 | 16),
        _ => matches!(depth, 15 | 16 | 24 | 32),
    };
    let map_bytes = if map_type == 1 {
        le16(5) * usize::from(h[7]).div_ceil(8)
    } else {
        0
    };
    map_ok
        && depth_ok
        && le16(12) > 0
        && le16(14) > 0
        && descriptor & 0xC0 == 0
        && bytes.len() > 18 + usize::from(h[0]) + map_bytes
}

/// `ftyp` box whose major or compatible brands name AVIF (`avif` still, `avis` sequence).
fn is_avif(bytes: &[u8]) -> bool {
    if bytes.len() < 16 || &bytes[4..8] != b"ftyp" {
        return false;
    }
    let size = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let end = size.clamp(16, bytes.len());
    // major brand at 8..12, minor version 12..16, compatible brands after.
    let mut brands = std::iter::once(&bytes[8..12]).chain(bytes[16..end].chunks_exact(4));
    brands.any(|brand| brand == b"avif" || brand == b"avis")
}

/// `ftyp` box whose brands name HEIF with HEVC (`heic`/`heix` and their multi-image and
/// sequence variants) or plain HEIF (`mif1`, `msf1`: checked after AVIF, so an AVIF file that
/// names both is AVIF).
fn is_heic(bytes: &[u8]) -> bool {
    if bytes.len() < 16 || &bytes[4..8] != b"ftyp" {
        return false;
    }
    let size = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let end = size.clamp(16, bytes.len());
    let mut brands = std::iter::once(&bytes[8..12]).chain(bytes[16..end].chunks_exact(4));
    brands.any(|brand| {
        matches!(
            brand,
            b"heic" | b"heix" | b"heim" | b"heis" | b"hevc" | b"hevx" | b"mif1" | b"msf1"
        )
    })
}

/// `BM` alone is too weak (plenty of text starts with it): also require a known DIB header size.
fn is_bmp(bytes: &[u8]) -> bool {
    bytes.len() >= 18
        && bytes.starts_with(b"BM")
        && matches!(
            u32::from_le_bytes([bytes[14], bytes[15], bytes[16], bytes[17]]),
            12 | 16 | 40 | 52 | 56 | 64 | 108 | 124
        )
}

/// Reads the headers of `bytes` and checks them against `limits`.
///
/// Errors: `SourceTooLarge` for too many bytes, pixels or frames; `UnsupportedFormat` for
/// unknown magic; `Corrupt` for a recognised format whose header cannot be read.
pub fn probe(bytes: &[u8], limits: &Limits) -> Result<ImageInfo, PipelineError> {
    if bytes.len() as u64 > limits.max_source_bytes {
        return Err(PipelineError::SourceTooLarge(format!(
            "{} bytes, limit {}",
            bytes.len(),
            limits.max_source_bytes
        )));
    }
    let format = sniff(bytes).ok_or(PipelineError::UnsupportedFormat)?;
    let header = match format {
        SourceFormat::Jpeg => {
            let jpeg = jpeg_header(bytes)?;
            Header {
                width: jpeg.width,
                height: jpeg.height,
                orientation: jpeg.exif.map_or(1, exif_orientation),
                has_alpha: false,
                frames: 1,
            }
        }
        SourceFormat::Png => png_header(bytes)?,
        SourceFormat::Webp => webp_header(bytes)?,
        SourceFormat::Gif => gif_header(bytes, limits)?,
        SourceFormat::Bmp => bmp_header(bytes)?,
        SourceFormat::Avif => avif_header(bytes)?,
        SourceFormat::Qoi => qoi_header(bytes)?,
        SourceFormat::Pnm | SourceFormat::Tga => {
            let header = super::decode::image_rs::header(format, bytes)?;
            Header {
                width: header.width,
                height: header.height,
                orientation: 1,
                has_alpha: header.has_alpha,
                frames: 1,
            }
        }
        SourceFormat::Tiff => {
            let header = super::decode::tiff::header(bytes, limits)?;
            Header {
                width: header.width,
                height: header.height,
                orientation: header.orientation,
                has_alpha: header.has_alpha,
                frames: 1,
            }
        }
        SourceFormat::Jxl => {
            // jxl-oxide applies the codestream's orientation while rendering, so the size
            // reported is the oriented one and `orientation` stays 1 (applied exactly once).
            let header = super::decode::jxl::header(bytes, limits)?;
            Header {
                width: header.width,
                height: header.height,
                orientation: 1,
                has_alpha: header.has_alpha,
                frames: header.frames,
            }
        }
        SourceFormat::Hdr | SourceFormat::Exr => {
            let header = super::decode::hdr::header(format, bytes, limits)?;
            Header {
                width: header.width,
                height: header.height,
                orientation: 1,
                has_alpha: header.has_alpha,
                frames: 1,
            }
        }
        SourceFormat::Heic => {
            // libheif applies irot/imir/clap while decoding: the size is the displayed one and
            // there is no orientation left to apply (EXIF Orientation is never honoured in HEIF).
            let header = super::decode::heic::header(bytes, limits)?;
            Header {
                width: header.width,
                height: header.height,
                orientation: 1,
                has_alpha: header.has_alpha,
                frames: header.images,
            }
        }
        SourceFormat::Svg => {
            let header = super::decode::svg::header(bytes)?;
            Header {
                width: header.width,
                height: header.height,
                orientation: 1,
                // Anything not drawn is transparent.
                has_alpha: true,
                frames: 1,
            }
        }
        SourceFormat::Ico => {
            let entry = ico_largest(bytes, limits)?;
            Header {
                width: entry.width,
                height: entry.height,
                orientation: 1,
                has_alpha: entry.has_alpha,
                frames: 1,
            }
        }
    };
    if header.width == 0 || header.height == 0 {
        return Err(corrupt(format, "zero width or height"));
    }
    let pixels = u64::from(header.width) * u64::from(header.height);
    if pixels > limits.max_source_pixels {
        return Err(PipelineError::SourceTooLarge(format!(
            "{}x{} = {pixels} pixels, limit {}",
            header.width, header.height, limits.max_source_pixels
        )));
    }
    if header.frames > limits.max_frames {
        return Err(PipelineError::SourceTooLarge(format!(
            "{} frames, limit {}",
            header.frames, limits.max_frames
        )));
    }
    // Every frame of an animation is composited at the canvas size, so the decode work of an
    // animated render is frames x canvas: bounded here, from the headers alone.
    let animation = pixels.saturating_mul(u64::from(header.frames));
    if header.frames > 1 && animation > limits.max_animation_pixels {
        return Err(PipelineError::SourceTooLarge(format!(
            "{} frames of {}x{} = {animation} pixels, limit limits.max_animation_pixels = {}",
            header.frames, header.width, header.height, limits.max_animation_pixels
        )));
    }
    Ok(ImageInfo {
        format,
        width: header.width,
        height: header.height,
        orientation: header.orientation,
        has_alpha: header.has_alpha,
        frames: header.frames,
    })
}

/// The header facts every format reports.
struct Header {
    width: u32,
    height: u32,
    orientation: u8,
    has_alpha: bool,
    /// Declared animation frames; 1 for stills. Saturates at `max_frames + 1` where counting
    /// means walking the file (GIF).
    frames: u32,
}

fn corrupt(format: SourceFormat, why: impl std::fmt::Display) -> PipelineError {
    PipelineError::Corrupt(format!("{}: {why}", format.extension()))
}

/// Orientation from a raw TIFF-structured EXIF block (what follows `Exif\0\0` in a JPEG APP1,
/// or a PNG eXIf / WebP EXIF chunk). Anything unreadable is orientation 1: a broken EXIF block
/// is common in the wild and must not cost the image.
pub(super) fn exif_orientation(tiff: &[u8]) -> u8 {
    // Some writers keep the JPEG `Exif\0\0` prefix in PNG/WebP chunks too.
    let tiff = tiff.strip_prefix(b"Exif\0\0").unwrap_or(tiff);
    let Ok(exif) = exif::Reader::new().read_raw(tiff.to_vec()) else {
        return 1;
    };
    exif.get_field(exif::Tag::Orientation, exif::In::PRIMARY)
        .and_then(|field| field.value.get_uint(0))
        .and_then(|value| u8::try_from(value).ok())
        .filter(|value| (1..=8).contains(value))
        .unwrap_or(1)
}

// --- JPEG ---------------------------------------------------------------------------------

/// The JPEG header facts the probe and the decoder need, found by walking the marker
/// segments up to the first frame header (SOFn).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct JpegHeader<'a> {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) components: u8,
    /// TIFF payload of the first `Exif\0\0` APP1 segment.
    exif: Option<&'a [u8]>,
    /// Adobe APP14 colour transform (0 = none / CMYK, 1 = YCbCr, 2 = YCCK) when present.
    /// Its presence also tells that 4-component data is stored inverted (Photoshop style).
    pub(crate) adobe_transform: Option<u8>,
}

/// The JPEG marker at `at` (after any 0xFF fill bytes), its segment payload (empty for the
/// standalone markers TEM, RSTn, SOI and EOI) and the position after it. Lengths are
/// bounds-checked here; the payload is the caller's to read.
pub(super) fn jpeg_segment(
    bytes: &[u8],
    mut at: usize,
) -> Result<(u8, &[u8], usize), PipelineError> {
    let bad = |why: &str| corrupt(SourceFormat::Jpeg, why);
    if bytes.get(at) != Some(&0xFF) {
        return Err(bad("expected a marker"));
    }
    while bytes.get(at) == Some(&0xFF) {
        at += 1;
    }
    let marker = *bytes.get(at).ok_or_else(|| bad("truncated header"))?;
    at += 1;
    if matches!(marker, 0x01 | 0xD0..=0xD9) {
        return Ok((marker, &[], at));
    }
    let length = bytes
        .get(at..at + 2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        .ok_or_else(|| bad("truncated header"))?;
    if length < 2 {
        return Err(bad("segment length below 2"));
    }
    let segment = bytes
        .get(at + 2..at + length)
        .ok_or_else(|| bad("truncated header"))?;
    Ok((marker, segment, at + length))
}

pub(super) fn jpeg_header(bytes: &[u8]) -> Result<JpegHeader<'_>, PipelineError> {
    let bad = |why: &str| corrupt(SourceFormat::Jpeg, why);
    let mut exif = None;
    let mut adobe_transform = None;
    let mut at = 2; // after SOI
    loop {
        let (marker, segment, next) = jpeg_segment(bytes, at)?;
        at = next;
        if matches!(marker, 0xD9 | 0xDA) {
            return Err(bad("no frame header before the scan data"));
        }
        match marker {
            // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                if segment.len() < 6 {
                    return Err(bad("short frame header"));
                }
                let height = u32::from(u16::from_be_bytes([segment[1], segment[2]]));
                let width = u32::from(u16::from_be_bytes([segment[3], segment[4]]));
                if height == 0 {
                    // DNL-defined heights are legal but nobody writes them; no decoder here
                    // supports them either.
                    return Err(bad("height defined by a DNL marker"));
                }
                return Ok(JpegHeader {
                    width,
                    height,
                    components: segment[5],
                    exif,
                    adobe_transform,
                });
            }
            0xE1 if exif.is_none() => exif = segment.strip_prefix(b"Exif\0\0"),
            0xEE if segment.len() >= 12 && segment.starts_with(b"Adobe") => {
                adobe_transform = Some(segment[11]);
            }
            _ => {}
        }
    }
}

// --- PNG ----------------------------------------------------------------------------------

/// IHDR plus the ancillary chunks before the first IDAT (tRNS, eXIf, acTL). Chunk CRCs are
/// left to the decoder; lengths are bounds-checked here.
fn png_header(bytes: &[u8]) -> Result<Header, PipelineError> {
    let bad = |why: &str| corrupt(SourceFormat::Png, why);
    let ihdr = bytes.get(8..33).ok_or_else(|| bad("truncated IHDR"))?;
    if ihdr[0..4] != [0, 0, 0, 13] || &ihdr[4..8] != b"IHDR" {
        return Err(bad("first chunk is not IHDR"));
    }
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let width = be32(&ihdr[8..12]);
    let height = be32(&ihdr[12..16]);
    // PNG caps dimensions at 2^31 - 1.
    if width > i32::MAX as u32 || height > i32::MAX as u32 {
        return Err(bad("dimension above 2^31 - 1"));
    }
    let color_type = ihdr[17];
    let mut header = Header {
        width,
        height,
        orientation: 1,
        has_alpha: matches!(color_type, 4 | 6),
        frames: 1,
    };
    let mut at = 33;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let length = be32(&chunk[0..4]) as usize;
        let kind = &chunk[4..8];
        if kind == b"IDAT" || kind == b"IEND" {
            break;
        }
        let Some(data) = bytes.get(at + 8..(at + 8).saturating_add(length)) else {
            return Err(bad("chunk runs past the end"));
        };
        match kind {
            b"tRNS" => header.has_alpha = true,
            b"eXIf" => header.orientation = exif_orientation(data),
            b"acTL" if data.len() >= 4 => header.frames = be32(&data[0..4]).max(1),
            _ => {}
        }
        at = at + 12 + length;
    }
    Ok(header)
}

// --- WebP ---------------------------------------------------------------------------------

fn webp_header(bytes: &[u8]) -> Result<Header, PipelineError> {
    let bad = |e: image_webp::DecodingError| corrupt(SourceFormat::Webp, e);
    // `new` indexes the RIFF chunks and reads the VP8/VP8L/VP8X headers; no pixel data.
    let mut decoder = image_webp::WebPDecoder::new(Cursor::new(bytes)).map_err(bad)?;
    let (width, height) = decoder.dimensions();
    let orientation = match decoder.exif_metadata() {
        Ok(Some(exif)) => exif_orientation(&exif),
        // An unreadable EXIF chunk must not cost the image, as in JPEG.
        Ok(None) | Err(_) => 1,
    };
    Ok(Header {
        width,
        height,
        orientation,
        has_alpha: decoder.has_alpha(),
        frames: decoder.num_frames().max(1),
    })
}

// --- GIF ----------------------------------------------------------------------------------

/// Logical screen size, whether the first frame may leave transparent pixels, and the frame
/// count (walking blocks without decompressing; stops counting past `max_frames`).
///
/// Every frame descriptor walked is checked before any decoder sees it: a frame is sized by
/// its own descriptor, not by the screen the limits were checked against, so a 1x1 screen
/// could carry a 10000x10000 frame. A frame over `max_source_pixels` is `SourceTooLarge`; a
/// frame reaching outside the logical screen is `Corrupt`. Browsers and giflib clip such
/// frames instead; refusing them is simpler and never allocates more than the screen.
fn gif_header(bytes: &[u8], limits: &Limits) -> Result<Header, PipelineError> {
    let max_frames = limits.max_frames;
    let bad = |why: &str| corrupt(SourceFormat::Gif, why);
    let screen = bytes
        .get(6..13)
        .ok_or_else(|| bad("truncated screen descriptor"))?;
    let width = u32::from(u16::from_le_bytes([screen[0], screen[1]]));
    let height = u32::from(u16::from_le_bytes([screen[2], screen[3]]));
    let flags = screen[4];
    let mut at = 13;
    if flags & 0x80 != 0 {
        at += 3 << ((flags & 0x07) + 1);
    }
    let mut frames = 0u32;
    let mut has_alpha = false;
    let mut transparent_pending = false;
    // Skips a chain of data sub-blocks; returns the offset after the terminator.
    let skip_sub_blocks = |mut at: usize| -> Result<usize, PipelineError> {
        loop {
            let size = usize::from(*bytes.get(at).ok_or_else(|| bad("truncated data"))?);
            at += 1;
            if size == 0 {
                return Ok(at);
            }
            at += size;
        }
    };
    loop {
        match bytes.get(at) {
            // Trailer, or a file cut after its last complete frame: count what is there.
            Some(0x3B) | None => break,
            Some(0x21) => {
                let label = *bytes
                    .get(at + 1)
                    .ok_or_else(|| bad("truncated extension"))?;
                // Graphic control extension: 0x21 0xF9 0x04 flags delay delay index 0x00.
                if label == 0xF9 && frames == 0 {
                    let packed = *bytes.get(at + 3).ok_or_else(|| bad("truncated GCE"))?;
                    transparent_pending = packed & 0x01 != 0;
                }
                at = skip_sub_blocks(at + 2)?;
            }
            Some(0x2C) => {
                let desc = bytes
                    .get(at + 1..at + 10)
                    .ok_or_else(|| bad("truncated image descriptor"))?;
                let le16 = |i: usize| u32::from(u16::from_le_bytes([desc[i], desc[i + 1]]));
                let (left, top, w, h) = (le16(0), le16(2), le16(4), le16(6));
                let frame_pixels = u64::from(w) * u64::from(h);
                if frame_pixels > limits.max_source_pixels {
                    return Err(PipelineError::SourceTooLarge(format!(
                        "gif frame {} is {w}x{h} = {frame_pixels} pixels, limit {}",
                        frames + 1,
                        limits.max_source_pixels
                    )));
                }
                if left + w > width || top + h > height {
                    return Err(corrupt(
                        SourceFormat::Gif,
                        format!(
                            "frame {} ({w}x{h} at {left},{top}) reaches outside the \
                             {width}x{height} logical screen",
                            frames + 1
                        ),
                    ));
                }
                if frames == 0 {
                    let covers = left == 0 && top == 0 && w >= width && h >= height;
                    has_alpha = transparent_pending || !covers;
                }
                frames += 1;
                if frames > max_frames {
                    break;
                }
                let local = desc[8];
                at += 10;
                if local & 0x80 != 0 {
                    at += 3 << ((local & 0x07) + 1);
                }
                // LZW minimum code size, then the image data sub-blocks.
                at = skip_sub_blocks(at + 1)?;
            }
            Some(_) => return Err(bad("unknown block")),
        }
    }
    if frames == 0 {
        return Err(bad("no image"));
    }
    Ok(Header {
        width,
        height,
        orientation: 1,
        has_alpha,
        frames,
    })
}

// --- BMP ----------------------------------------------------------------------------------

fn bmp_header(bytes: &[u8]) -> Result<Header, PipelineError> {
    use zune_core::colorspace::ColorSpace;
    let mut decoder = zune_bmp::BmpDecoder::new(zune_core::bytestream::ZCursor::new(bytes));
    decoder
        .decode_headers()
        .map_err(|e| corrupt(SourceFormat::Bmp, format!("{e:?}")))?;
    let (width, height) = decoder
        .dimensions()
        .ok_or_else(|| corrupt(SourceFormat::Bmp, "no dimensions"))?;
    let to_u32 = |v: usize| u32::try_from(v).map_err(|_| corrupt(SourceFormat::Bmp, "dimension"));
    Ok(Header {
        width: to_u32(width)?,
        height: to_u32(height)?,
        orientation: 1,
        has_alpha: matches!(
            decoder.colorspace(),
            Some(ColorSpace::RGBA | ColorSpace::LumaA)
        ),
        frames: 1,
    })
}

// --- QOI ----------------------------------------------------------------------------------

/// The fixed 14-byte header: `qoif`, width and height (big-endian u32), channels (3 or 4),
/// colour space. Read here rather than by the decoder crate, which calls any image over
/// 400 MP invalid: a size is the limits' to judge (`SourceTooLarge`), not a corruption.
fn qoi_header(bytes: &[u8]) -> Result<Header, PipelineError> {
    let header = bytes
        .get(..14)
        .ok_or_else(|| corrupt(SourceFormat::Qoi, "truncated header"))?;
    let be32 =
        |i: usize| u32::from_be_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let has_alpha = match header[12] {
        3 => false,
        4 => true,
        n => return Err(corrupt(SourceFormat::Qoi, format!("{n} channels"))),
    };
    Ok(Header {
        width: be32(4),
        height: be32(8),
        orientation: 1,
        has_alpha,
        frames: 1,
    })
}

// --- ICO / CUR ----------------------------------------------------------------------------

/// One ICO/CUR directory entry, with the size its embedded PNG or BMP header declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct IcoEntry {
    pub index: usize,
    pub width: u32,
    pub height: u32,
    pub png: bool,
    pub has_alpha: bool,
}

/// Walks every ICO/CUR directory entry: each entry's data must lie inside the file, its
/// embedded PNG (IHDR) or BMP (BITMAPINFOHEADER, height doubled for the AND mask) header must
/// agree with the directory's size bytes (0 means 256 or more), and no entry may be over
/// `max_source_pixels`. Answers the largest entry (the first of equals), the one decoded.
pub(super) fn ico_largest(bytes: &[u8], limits: &Limits) -> Result<IcoEntry, PipelineError> {
    let bad = |why: String| corrupt(SourceFormat::Ico, why);
    let le16 = |b: &[u8], i: usize| u32::from(u16::from_le_bytes([b[i], b[i + 1]]));
    let le32 = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let count = bytes
        .get(..6)
        .map(|h| le16(h, 4) as usize)
        .ok_or_else(|| bad("truncated header".into()))?;
    let mut largest: Option<IcoEntry> = None;
    // Entries' data add up to at most the file: the `ico` crate copies every entry out, and
    // entries sharing one span could otherwise make it copy the file thousands of times.
    let mut data_total = 0usize;
    for index in 0..count {
        let dir = bytes
            .get(6 + index * 16..6 + index * 16 + 16)
            .ok_or_else(|| bad(format!("directory entry {} runs past the end", index + 1)))?;
        let (offset, size) = (le32(dir, 12) as usize, le32(dir, 8) as usize);
        let data = bytes
            .get(offset..offset.saturating_add(size))
            .ok_or_else(|| bad(format!("entry {} data runs past the end", index + 1)))?;
        data_total += size;
        if data_total > bytes.len() {
            return Err(bad(format!(
                "entries overlap: {data_total} bytes of data in a {}-byte file",
                bytes.len()
            )));
        }
        let (width, height, png, has_alpha) = if data.starts_with(b"\x89PNG\r\n\x1a\n") {
            let png = png_header(data)?;
            (png.width, png.height, true, png.has_alpha)
        } else {
            if data.len() < 16 || le32(data, 0) != 40 {
                return Err(bad(format!("entry {} is neither PNG nor BMP", index + 1)));
            }
            let (width, doubled) = (le32(data, 4) as i32, le32(data, 8) as i32);
            if width <= 0 || doubled <= 0 || doubled % 2 != 0 {
                return Err(bad(format!(
                    "entry {} BMP header says {width}x{doubled}",
                    index + 1
                )));
            }
            (width as u32, doubled as u32 / 2, false, true)
        };
        let agrees = |byte: u8, side: u32| match byte {
            0 => side >= 256,
            n => side == u32::from(n),
        };
        if !agrees(dir[0], width) || !agrees(dir[1], height) {
            return Err(bad(format!(
                "entry {} declares {}x{}, its {} header says {width}x{height}",
                index + 1,
                dir[0],
                dir[1],
                if png { "PNG" } else { "BMP" }
            )));
        }
        let pixels = u64::from(width) * u64::from(height);
        if pixels > limits.max_source_pixels {
            return Err(PipelineError::SourceTooLarge(format!(
                "ico entry {} is {width}x{height} = {pixels} pixels, limit {}",
                index + 1,
                limits.max_source_pixels
            )));
        }
        let entry = IcoEntry {
            index,
            width,
            height,
            png,
            has_alpha,
        };
        if largest.is_none_or(|l| pixels > u64::from(l.width) * u64::from(l.height)) {
            largest = Some(entry);
        }
    }
    largest.ok_or_else(|| bad("no entries".into()))
}

// --- AVIF ---------------------------------------------------------------------------------

/// The AVIF container is parsed in one place, `decode::avif`: the primary item's `ispe`, an
/// alpha auxiliary item, and `irot`/`imir` folded into an EXIF orientation.
fn avif_header(bytes: &[u8]) -> Result<Header, PipelineError> {
    let avif = super::decode::avif::probe(bytes)?;
    Ok(Header {
        width: avif.width,
        height: avif.height,
        orientation: avif.orientation,
        has_alpha: avif.has_alpha,
        frames: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(rel: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(rel);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn probe_fixture(rel: &str) -> Result<ImageInfo, PipelineError> {
        probe(&fixture(rel), &Limits::default())
    }

    #[test]
    fn sniffs_every_format_fixture() {
        let cases = [
            ("formats/jpeg_baseline.jpg", SourceFormat::Jpeg),
            ("formats/png_rgba.png", SourceFormat::Png),
            ("formats/webp_lossy.webp", SourceFormat::Webp),
            ("formats/gif_animated.gif", SourceFormat::Gif),
            ("formats/avif_444.avif", SourceFormat::Avif),
            ("formats/bmp_rgb24.bmp", SourceFormat::Bmp),
            ("formats/heic_photo.heic", SourceFormat::Heic),
            ("formats/heic_alpha.heic", SourceFormat::Heic),
        ];
        for (rel, format) in cases {
            assert_eq!(sniff(&fixture(rel)), Some(format), "{rel}");
        }
        assert_eq!(sniff(&fixture("hostile/empty.bin")), None);
        assert_eq!(sniff(&fixture("hostile/wrong_magic.bin")), None);
        assert_eq!(sniff(b"BM is a band name"), None);
    }

    #[test]
    fn probes_size_and_alpha_of_every_format() {
        let cases = [
            ("formats/jpeg_baseline.jpg", false),
            ("formats/jpeg_progressive.jpg", false),
            ("formats/jpeg_restart.jpg", false),
            ("formats/jpeg_444.jpg", false),
            ("formats/jpeg_gray.jpg", false),
            ("formats/jpeg_cmyk.jpg", false),
            ("formats/jpeg_ycck.jpg", false),
            ("formats/png_palette.png", false),
            ("formats/png_16bit.png", false),
            ("formats/png_gray.png", false),
            ("formats/png_gray_alpha.png", true),
            ("formats/png_rgba.png", true),
            ("formats/png_interlaced.png", false),
            ("formats/webp_lossy.webp", false),
            ("formats/webp_lossless.webp", false),
            ("formats/webp_alpha.webp", true),
            ("formats/gif_animated.gif", true),
            ("formats/avif_444.avif", false),
            ("formats/bmp_rgb24.bmp", false),
        ];
        for (rel, has_alpha) in cases {
            let info = probe_fixture(rel).unwrap_or_else(|e| panic!("{rel}: {e}"));
            assert_eq!((info.width, info.height), (64, 48), "{rel}");
            assert_eq!(info.has_alpha, has_alpha, "{rel}");
            assert_eq!(info.orientation, 1, "{rel}");
        }
    }

    #[test]
    fn sniffs_and_probes_qoi_pnm_tga_ico_and_tiff() {
        // (fixture, format, size, has_alpha); an ICO answers its largest entry.
        let photo = (96, 60);
        let cases = [
            ("formats/qoi_photo.qoi", SourceFormat::Qoi, photo, false),
            ("formats/qoi_alpha.qoi", SourceFormat::Qoi, (64, 48), true),
            ("formats/pnm_photo.ppm", SourceFormat::Pnm, photo, false),
            ("formats/pnm_gray.pgm", SourceFormat::Pnm, photo, false),
            ("formats/pnm_gray16.pgm", SourceFormat::Pnm, photo, false),
            ("formats/pnm_bitmap.pbm", SourceFormat::Pnm, photo, false),
            ("formats/pnm_plain.ppm", SourceFormat::Pnm, (64, 48), false),
            ("formats/pnm_alpha.pam", SourceFormat::Pnm, (64, 48), true),
            ("formats/tga_photo.tga", SourceFormat::Tga, photo, false),
            ("formats/tga_bottom_up.tga", SourceFormat::Tga, photo, false),
            ("formats/tga_palette.tga", SourceFormat::Tga, photo, false),
            (
                "formats/tga_rle_alpha.tga",
                SourceFormat::Tga,
                (64, 48),
                true,
            ),
            ("formats/ico_photo.ico", SourceFormat::Ico, photo, true),
            ("formats/ico_png.ico", SourceFormat::Ico, (256, 256), true),
            ("formats/ico_alpha.ico", SourceFormat::Ico, (64, 48), true),
            ("formats/cur_alpha.cur", SourceFormat::Ico, (64, 48), true),
            (
                "formats/tiff_lzw_strips.tif",
                SourceFormat::Tiff,
                photo,
                false,
            ),
            (
                "formats/tiff_deflate_tiles.tif",
                SourceFormat::Tiff,
                photo,
                false,
            ),
            (
                "formats/tiff_packbits_gray16.tif",
                SourceFormat::Tiff,
                photo,
                false,
            ),
            ("formats/tiff_jpeg.tif", SourceFormat::Tiff, photo, false),
            ("formats/tiff_cmyk.tif", SourceFormat::Tiff, photo, false),
            ("formats/tiff_alpha.tif", SourceFormat::Tiff, (64, 48), true),
            (
                "formats/tiff_multipage.tif",
                SourceFormat::Tiff,
                photo,
                false,
            ),
        ];
        for (rel, format, size, has_alpha) in cases {
            let bytes = fixture(rel);
            assert_eq!(sniff(&bytes), Some(format), "{rel}");
            let info = probe(&bytes, &Limits::default()).unwrap_or_else(|e| panic!("{rel}: {e}"));
            assert_eq!((info.width, info.height), size, "{rel}");
            assert_eq!(info.has_alpha, has_alpha, "{rel}");
            // Every prefix: an answer, never a panic.
            for len in 0..bytes.len().min(400) {
                let _ = probe(&bytes[..len], &Limits::default());
            }
        }
        // Text that merely starts like a PNM or TGA header is not one.
        for text in [
            &b"P6 is a paper size"[..],
            b"P3\nnot a number",
            b"\0\0\x01\0",
        ] {
            assert_eq!(sniff(text), None, "{:?}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn sniffs_and_probes_jxl_hdr_and_exr() {
        // (fixture, format, size, has_alpha). JPEG XL reports its oriented size.
        let photo = (96, 60);
        let cases = [
            ("formats/jxl_lossy.jxl", SourceFormat::Jxl, photo, false),
            (
                "formats/jxl_lossless_alpha.jxl",
                SourceFormat::Jxl,
                (64, 48),
                true,
            ),
            ("formats/jxl_from_jpeg.jxl", SourceFormat::Jxl, photo, false),
            ("formats/jxl_orient6.jxl", SourceFormat::Jxl, photo, false),
            ("formats/jxl_animated.jxl", SourceFormat::Jxl, photo, true),
            ("formats/hdr_photo.hdr", SourceFormat::Hdr, photo, false),
            ("formats/hdr_bright.hdr", SourceFormat::Hdr, photo, false),
            ("formats/exr_bright.exr", SourceFormat::Exr, photo, false),
            (
                "formats/exr_half_tiled.exr",
                SourceFormat::Exr,
                photo,
                false,
            ),
            (
                "formats/exr_alpha_zip.exr",
                SourceFormat::Exr,
                (64, 48),
                true,
            ),
            (
                "formats/exr_two_parts.exr",
                SourceFormat::Exr,
                (8, 8),
                false,
            ),
        ];
        for (rel, format, size, has_alpha) in cases {
            let bytes = fixture(rel);
            assert_eq!(sniff(&bytes), Some(format), "{rel}");
            let info = probe(&bytes, &Limits::default()).unwrap_or_else(|e| panic!("{rel}: {e}"));
            assert_eq!((info.width, info.height), size, "{rel}");
            assert_eq!(info.has_alpha, has_alpha, "{rel}");
            assert_eq!(info.orientation, 1, "{rel}");
            for len in (0..bytes.len()).step_by(5) {
                let _ = probe(&bytes[..len], &Limits::default());
            }
        }
    }

    #[test]
    fn huge_jxl_hdr_and_exr_declarations_are_refused_from_the_header() {
        for rel in [
            "hostile/bomb_jxl_100k.jxl",
            "hostile/jxl_1002_frames.jxl",
            "hostile/bomb_hdr_100k.hdr",
            "hostile/bomb_exr_100k.exr",
            // The second part is never decoded, but its data window counts.
            "hostile/bomb_exr_part2.exr",
        ] {
            let bytes = fixture(rel);
            let result = probe(&bytes, &Limits::default());
            assert!(
                matches!(result, Err(PipelineError::SourceTooLarge(_))),
                "{rel}: {result:?}"
            );
        }
    }

    #[test]
    fn huge_qoi_pnm_tga_ico_and_tiff_declarations_are_refused_from_the_header() {
        for rel in [
            "hostile/bomb_qoi_100k.qoi",
            "hostile/bomb_pnm_100k.ppm",
            "hostile/bomb_tga_65k.tga",
            "hostile/bomb_ico_png_100k.ico",
            "hostile/bomb_tiff_100k.tif",
            // Page 2 is never decoded, but its declaration counts.
            "hostile/bomb_tiff_page2.tif",
        ] {
            let bytes = fixture(rel);
            let result = probe(&bytes, &Limits::default());
            assert!(
                matches!(result, Err(PipelineError::SourceTooLarge(_))),
                "{rel}: {result:?}"
            );
        }
        // Every ICO entry counts, not only the one decoded: a limit between the small and the
        // large entry refuses the file.
        let tight = Limits {
            max_source_pixels: 96 * 60 - 1,
            ..Limits::default()
        };
        assert!(matches!(
            probe(&fixture("formats/ico_photo.ico"), &tight),
            Err(PipelineError::SourceTooLarge(_))
        ));
        // Entries sharing one span are refused before anything copies them.
        let icon = fixture("formats/ico_alpha.ico");
        let copies = 1000u16;
        let mut shared = vec![0, 0, 1, 0];
        shared.extend(copies.to_le_bytes());
        let data_at = 6 + 16 * u32::from(copies);
        for _ in 0..copies {
            shared.extend(&icon[6..18]);
            shared.extend(data_at.to_le_bytes());
        }
        shared.extend(&icon[22..]);
        let result = probe(&shared, &Limits::default());
        assert!(
            matches!(&result, Err(PipelineError::Corrupt(m)) if m.contains("overlap")),
            "{result:?}"
        );
        // A directory size that disagrees with the embedded header is corrupt.
        let result = probe_fixture("hostile/ico_size_mismatch.ico");
        assert!(
            matches!(&result, Err(PipelineError::Corrupt(m)) if m.contains("declares 48x60")),
            "{result:?}"
        );
    }

    #[test]
    fn reads_exif_orientation_from_jpeg_png_and_webp() {
        for n in 1..=8u8 {
            let info = probe_fixture(&format!("orientation/orient_{n}.jpg")).expect("probe");
            assert_eq!(info.orientation, n);
            // Stored 32x48 for the quarter turns, 48x32 otherwise; displayed 48x32 always.
            assert_eq!(info.oriented_size(), (48, 32), "orientation {n}");
        }
        assert_eq!(
            probe_fixture("orientation/orient_6.png")
                .expect("png")
                .orientation,
            6
        );
        assert_eq!(
            probe_fixture("orientation/orient_6.webp")
                .expect("webp")
                .orientation,
            6
        );
    }

    #[test]
    fn oriented_size_swaps_for_quarter_turns() {
        let mut info = ImageInfo {
            format: SourceFormat::Jpeg,
            width: 30,
            height: 20,
            orientation: 1,
            has_alpha: false,
            frames: 1,
        };
        for (orientation, size) in [(1, (30, 20)), (4, (30, 20)), (5, (20, 30)), (8, (20, 30))] {
            info.orientation = orientation;
            assert_eq!(info.oriented_size(), size);
        }
    }

    #[test]
    fn bad_exif_offset_is_orientation_one_not_an_error() {
        let info = probe_fixture("hostile/bad_exif_offset.jpg").expect("still an image");
        assert_eq!(info.orientation, 1);
        assert_eq!(exif_orientation(b"II*\0\xff\xff\xff\x7f"), 1);
        assert_eq!(exif_orientation(b""), 1);
    }

    #[test]
    fn huge_declared_png_is_too_large_from_the_header() {
        let bytes = fixture("hostile/huge_dims.png");
        assert!(bytes.len() < 100, "the fixture is only a header");
        assert!(matches!(
            probe(&bytes, &Limits::default()),
            Err(PipelineError::SourceTooLarge(_))
        ));
    }

    /// A GIF of `screen` size with one 1x1-coloured frame per `(left, top, width, height)`
    /// descriptor (the image data is a single clear + EOI: the probe never decodes it).
    fn gif_with_frames(screen: (u16, u16), frames: &[(u16, u16, u16, u16)]) -> Vec<u8> {
        let mut gif = b"GIF89a".to_vec();
        gif.extend(screen.0.to_le_bytes());
        gif.extend(screen.1.to_le_bytes());
        gif.extend([0x80, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff]);
        for &(left, top, w, h) in frames {
            gif.push(0x2c);
            for v in [left, top, w, h] {
                gif.extend(v.to_le_bytes());
            }
            gif.extend([0x00, 0x02, 0x02, 0x4c, 0x01, 0x00]);
        }
        gif.push(0x3b);
        gif
    }

    #[test]
    fn gif_frames_outside_the_screen_are_refused_from_their_descriptors() {
        // The committed fixture: 1x1 screen, one 5000x5000 frame of real data.
        let bomb = fixture("hostile/gif_frame_bigger_than_screen.gif");
        assert!(bomb.len() < 16 * 1024);
        let err = probe(&bomb, &Limits::default()).unwrap_err();
        assert!(
            matches!(&err, PipelineError::Corrupt(m) if m.contains("logical screen")),
            "{err}"
        );
        // Over the pixel limit on its own: too large, whatever the screen says.
        let tight = Limits {
            max_source_pixels: 1_000_000,
            ..Limits::default()
        };
        assert!(matches!(
            probe(&bomb, &tight),
            Err(PipelineError::SourceTooLarge(_))
        ));
        // Any frame, not only the first; offsets count as well as sizes.
        for frames in [
            &[(0, 0, 4, 4), (0, 0, 5, 4)][..],
            &[(0, 0, 4, 4), (1, 0, 4, 4)],
            &[(0, 0, 4, 4), (0, 0, 2, 2), (3, 3, 1, 2)],
            &[(4, 0, 1, 1)],
        ] {
            let gif = gif_with_frames((4, 4), frames);
            assert!(
                matches!(
                    probe(&gif, &Limits::default()),
                    Err(PipelineError::Corrupt(_))
                ),
                "{frames:?}"
            );
        }
        // Frames inside the screen, touching its edges, are fine.
        let gif = gif_with_frames((4, 4), &[(0, 0, 4, 4), (3, 3, 1, 1), (0, 2, 4, 2)]);
        let info = probe(&gif, &Limits::default()).expect("frames inside the screen");
        assert_eq!((info.width, info.height), (4, 4));
    }

    #[test]
    fn limits_on_bytes_pixels_and_frames() {
        let jpeg = fixture("formats/jpeg_baseline.jpg");
        let tight = Limits {
            max_source_bytes: 10,
            ..Limits::default()
        };
        assert!(matches!(
            probe(&jpeg, &tight),
            Err(PipelineError::SourceTooLarge(_))
        ));
        let tight = Limits {
            max_source_pixels: 64 * 48 - 1,
            ..Limits::default()
        };
        assert!(matches!(
            probe(&jpeg, &tight),
            Err(PipelineError::SourceTooLarge(_))
        ));
        let exact = Limits {
            max_source_pixels: 64 * 48,
            ..Limits::default()
        };
        assert!(probe(&jpeg, &exact).is_ok());
        let one_frame = Limits {
            max_frames: 1,
            ..Limits::default()
        };
        for rel in ["formats/gif_animated.gif", "formats/webp_animated.webp"] {
            assert!(
                matches!(
                    probe(&fixture(rel), &one_frame),
                    Err(PipelineError::SourceTooLarge(_))
                ),
                "{rel}"
            );
            assert!(probe(&fixture(rel), &Limits::default()).is_ok(), "{rel}");
        }
        // frames x canvas, from the headers: 3 frames of 4x4 are 48 pixels.
        let gif = gif_with_frames((4, 4), &[(0, 0, 4, 4), (0, 0, 1, 1), (0, 0, 2, 2)]);
        let budget = |max_animation_pixels| Limits {
            max_animation_pixels,
            ..Limits::default()
        };
        assert!(probe(&gif, &budget(48)).is_ok());
        let Err(PipelineError::SourceTooLarge(why)) = probe(&gif, &budget(47)) else {
            panic!("over the animation budget");
        };
        assert!(why.contains("limits.max_animation_pixels"), "{why}");
        // A still is never counted against it.
        assert!(probe(&jpeg, &budget(1)).is_ok());
    }

    #[test]
    fn unknown_and_broken_inputs() {
        assert_eq!(
            probe_fixture("hostile/empty.bin"),
            Err(PipelineError::UnsupportedFormat)
        );
        assert_eq!(
            probe_fixture("hostile/wrong_magic.bin"),
            Err(PipelineError::UnsupportedFormat)
        );
        assert!(matches!(
            probe_fixture("hostile/garbage.jpg"),
            Err(PipelineError::Corrupt(_))
        ));
        // Every prefix of every header must give an answer, never a panic.
        for rel in [
            "formats/jpeg_baseline.jpg",
            "formats/png_rgba.png",
            "formats/webp_alpha.webp",
            "formats/gif_animated.gif",
            "formats/avif_444.avif",
            "formats/bmp_rgb24.bmp",
        ] {
            let bytes = fixture(rel);
            for len in 0..bytes.len().min(400) {
                let _ = probe(&bytes[..len], &Limits::default());
            }
        }
    }
}
