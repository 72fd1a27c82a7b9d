//! TIFF through the `tiff` crate: the first page (a multi-page file answers page 1), strips or
//! tiles, 8 or 16-bit gray, gray+alpha, RGB, RGBA and CMYK (through the embedded CMYK profile
//! when there is one, else the naive formula); uncompressed, LZW, Deflate, PackBits or JPEG.
//!
//! The probe ([`header`]) reads every page's directory, no pixel data; the decoder's own
//! buffer limit is the per-job memory limit.

use std::io::Cursor;

use tiff::ColorType;
use tiff::decoder::{Decoder, DecodingResult};
use tiff::tags::Tag;

use super::super::color::cmyk_to_srgb;
use super::super::spec::{Limits, SourceFormat};
use super::super::{Image, PipelineError, PixelLayout};
use super::{corrupt, image_from_samples, memory_limit, to_8_bit};

/// The header facts of a TIFF's first page.
pub(crate) struct Header {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) orientation: u8,
    pub(crate) has_alpha: bool,
}

fn bad(e: tiff::TiffError) -> PipelineError {
    match e {
        tiff::TiffError::LimitsExceeded => {
            PipelineError::SourceTooLarge("tiff: over the decoder's memory limit".into())
        }
        e => corrupt(SourceFormat::Tiff, e),
    }
}

fn open<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Decoder<Cursor<&'a [u8]>>, PipelineError> {
    let mut tiff_limits = tiff::decoder::Limits::default();
    tiff_limits.decoding_buffer_size = memory_limit(limits);
    Ok(Decoder::new(Cursor::new(bytes))
        .map_err(bad)?
        .with_limits(tiff_limits))
}

fn check_size(
    page: usize,
    (width, height): (u32, u32),
    limits: &Limits,
) -> Result<(), PipelineError> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_source_pixels {
        return Err(PipelineError::SourceTooLarge(format!(
            "tiff page {page} is {width}x{height} = {pixels} pixels, limit {}",
            limits.max_source_pixels
        )));
    }
    Ok(())
}

/// Reads the first page's directory (size, colour type, orientation tag), then walks up to
/// `max_frames` further page directories, each of which must be readable and within
/// `max_source_pixels` although only the first is ever decoded.
pub(crate) fn header(bytes: &[u8], limits: &Limits) -> Result<Header, PipelineError> {
    let mut decoder = open(bytes, limits)?;
    let (width, height) = decoder.dimensions().map_err(bad)?;
    let has_alpha = matches!(
        decoder.colortype().map_err(bad)?,
        ColorType::GrayA(_) | ColorType::RGBA(_) | ColorType::CMYKA(_)
    );
    let orientation = decoder
        .find_tag_unsigned::<u8>(Tag::Orientation)
        .ok()
        .flatten()
        .filter(|o| (1..=8).contains(o))
        .unwrap_or(1);
    let mut page = 1;
    while decoder.more_images() && page <= limits.max_frames as usize {
        decoder.next_image().map_err(bad)?;
        page += 1;
        check_size(page, decoder.dimensions().map_err(bad)?, limits)?;
    }
    Ok(Header {
        width,
        height,
        orientation,
        has_alpha,
    })
}

/// JPEG-compressed pages: the tiff crate hands each strip's or tile's JPEG to zune-jpeg with
/// zune's default size limit (16384 px a side) whatever the chunk's own size, so a tiny TIFF
/// could make it allocate hundreds of MB. Every chunk's JPEG frame header is checked against
/// the chunk's size first.
fn check_jpeg_chunks(
    decoder: &mut Decoder<Cursor<&[u8]>>,
    bytes: &[u8],
    (width, height): (u32, u32),
) -> Result<(), PipelineError> {
    if decoder
        .find_tag_unsigned::<u16>(Tag::Compression)
        .map_err(bad)?
        != Some(7)
    {
        return Ok(());
    }
    let tile = decoder
        .find_tag_unsigned::<u32>(Tag::TileWidth)
        .map_err(bad)?;
    let (offsets, counts, chunk) = match tile {
        Some(tile_width) => (
            decoder.get_tag_u64_vec(Tag::TileOffsets).map_err(bad)?,
            decoder.get_tag_u64_vec(Tag::TileByteCounts).map_err(bad)?,
            (
                tile_width,
                decoder.get_tag_u32(Tag::TileLength).map_err(bad)?,
            ),
        ),
        None => {
            let rows = decoder
                .find_tag_unsigned::<u32>(Tag::RowsPerStrip)
                .map_err(bad)?
                .unwrap_or(height);
            (
                decoder.get_tag_u64_vec(Tag::StripOffsets).map_err(bad)?,
                decoder.get_tag_u64_vec(Tag::StripByteCounts).map_err(bad)?,
                (width, rows.min(height)),
            )
        }
    };
    for (&offset, &count) in offsets.iter().zip(&counts) {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(usize::try_from(count).unwrap_or(usize::MAX));
        let data = bytes
            .get(start..end)
            .ok_or_else(|| corrupt(SourceFormat::Tiff, "a JPEG chunk runs past the end"))?;
        let jpeg = super::super::probe::jpeg_header(data)?;
        if jpeg.width > chunk.0 || jpeg.height > chunk.1 {
            return Err(corrupt(
                SourceFormat::Tiff,
                format!(
                    "a JPEG chunk declares {}x{}, the chunk is {}x{}",
                    jpeg.width, jpeg.height, chunk.0, chunk.1
                ),
            ));
        }
    }
    Ok(())
}

pub(super) fn decode(bytes: &[u8], limits: &Limits) -> Result<Image, PipelineError> {
    let mut decoder = open(bytes, limits)?;
    let (width, height) = decoder.dimensions().map_err(bad)?;
    check_size(1, (width, height), limits)?;
    check_jpeg_chunks(&mut decoder, bytes, (width, height))?;
    let color = decoder.colortype().map_err(bad)?;
    let icc = decoder.get_tag_u8_vec(Tag::IccProfile).ok();
    let samples = match decoder.read_image().map_err(bad)? {
        DecodingResult::U8(samples) => samples,
        DecodingResult::U16(samples) => samples.into_iter().map(to_8_bit).collect(),
        _ => return Err(corrupt(SourceFormat::Tiff, format!("samples of {color:?}"))),
    };
    let channels = match color {
        ColorType::Gray(8 | 16) => 1,
        ColorType::GrayA(8 | 16) => 2,
        ColorType::RGB(8 | 16) => 3,
        ColorType::RGBA(8 | 16) => 4,
        ColorType::CMYK(8 | 16) => {
            let pixels = width as usize * height as usize;
            if samples.len() != pixels * 4 {
                return Err(corrupt(SourceFormat::Tiff, "CMYK sample count"));
            }
            let rgb = cmyk_to_srgb(&samples, icc.as_deref());
            return Ok(Image::new(width, height, PixelLayout::Rgb8, rgb));
        }
        other => {
            return Err(corrupt(
                SourceFormat::Tiff,
                format!("unsupported colour type {other:?}"),
            ));
        }
    };
    let mut image = image_from_samples(SourceFormat::Tiff, width, height, channels, samples)?;
    // A gray profile does not describe the RGB pixels handed on (as for PNG).
    image.icc = icc.filter(|_| channels >= 3);
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn tiff_matches_an_independent_decode() {
        // (fixture, layout, tolerance): lossless ones exactly, except 16-bit samples rounded
        // to 8 bits, the naive CMYK formula (ImageMagick rounds differently) and JPEG (two
        // different JPEG decoders).
        let cases = [
            ("tiff_lzw_strips.tif", PixelLayout::Rgb8, 0),
            ("tiff_deflate_tiles.tif", PixelLayout::Rgb8, 0),
            ("tiff_packbits_gray16.tif", PixelLayout::Rgb8, 1),
            ("tiff_jpeg.tif", PixelLayout::Rgb8, 8),
            ("tiff_cmyk.tif", PixelLayout::Rgb8, 2),
            ("tiff_alpha.tif", PixelLayout::Rgba8, 0),
            ("tiff_multipage.tif", PixelLayout::Rgb8, 0),
        ];
        for (name, layout, tolerance) in cases {
            let image = assert_matches_reference(name, tolerance);
            assert_eq!(image.layout, layout, "{name}");
        }
    }

    #[test]
    fn tiff_keeps_its_icc_profile_and_orientation() {
        let image = decode_fixture("formats/tiff_p3.tif").expect("decode");
        assert!(image.icc.is_some());
        assert_near(pixel(&image, 3, 3), [200, 60, 50, 255], 0, "raw P3 samples");
        let bytes = fixture("formats/tiff_orient6.tif");
        let info = header(&bytes, &Limits::default()).expect("header");
        assert_eq!((info.width, info.height, info.orientation), (96, 60, 6));
    }

    #[test]
    fn a_jpeg_strip_larger_than_its_strip_is_refused_before_decoding() {
        let result = decode_fixture("hostile/tiff_jpeg_strip_bigger.tif");
        assert!(
            matches!(&result, Err(PipelineError::Corrupt(m)) if m.contains("16000x16000")),
            "{result:?}"
        );
        assert!(decode_fixture("hostile/truncated_tiff.tif").is_err());
    }
}
