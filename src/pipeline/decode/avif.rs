//! AVIF: the HEIF/ISOBMFF container parsed by hand, the AV1 payload decoded by dav1d, the
//! YUV planes converted to RGB by the `yuv` crate.
//!
//! Owns the one AVIF container parser of the pipeline (the probe calls [`probe`] here for
//! size, alpha and orientation), the AV1 decoder settings and the YUV→RGB step. Must never
//! trust a length or offset from the file before checking it against the buffer, never
//! allocate more than the file size (item data) or the probed, limit-checked frame (pixels),
//! and never panic on input: every malformed byte is `Corrupt`. Grid (tiled) images, image
//! sequences without a primary still item and non-AV1 items are `UnsupportedFormat`.
//!
//! Not `avif-parse`: 2.1 panics (`assert_eq!`) on truncated files. Not libavif: one more C
//! library for what is a few hundred lines of box walking.

use dav1d::{PixelLayout as Av1Layout, PlanarImageComponent as Plane};
use yuv::{YuvPlanarImage, YuvRange, YuvStandardMatrix};

use super::super::spec::{Limits, SourceFormat};
use super::super::{Image, PipelineError, PixelLayout};
use super::corrupt;

/// AVIF alpha auxiliary image URNs: the MPEG-B CICP one (AVIF spec) and the HEVC one
/// (older writers; libavif accepts both).
const ALPHA_URNS: [&[u8]; 2] = [
    b"urn:mpeg:mpegB:cicp:systems:auxiliary:alpha",
    b"urn:mpeg:hevc:2015:auxid:1",
];

fn bad(why: impl std::fmt::Display) -> PipelineError {
    corrupt(SourceFormat::Avif, why)
}

// --- what the probe needs -------------------------------------------------------------------

/// Header facts for the probe, read from the same parse the decoder uses.
pub(in super::super) struct AvifHeader {
    pub(crate) width: u32,
    pub(crate) height: u32,
    /// `irot`/`imir` folded into the equivalent EXIF orientation (1..=8).
    pub(crate) orientation: u8,
    pub(crate) has_alpha: bool,
}

pub(in super::super) fn probe(bytes: &[u8]) -> Result<AvifHeader, PipelineError> {
    let container = Container::parse(bytes)?;
    Ok(AvifHeader {
        width: container.color.width,
        height: container.color.height,
        orientation: container.orientation,
        has_alpha: container.alpha.is_some(),
    })
}

// --- the container --------------------------------------------------------------------------

/// CICP from a `colr` `nclx` property (ITU-T H.273 code points).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Nclx {
    pub(super) primaries: u16,
    pub(super) transfer: u16,
    pub(super) matrix: u16,
    pub(super) full_range: bool,
}

/// One AV1 image item (the colour item or its alpha auxiliary) and its properties.
#[derive(Debug, Default)]
struct Item<'a> {
    width: u32,
    height: u32,
    /// Bits per channel from `pixi` (first channel), when present.
    depth: Option<u8>,
    nclx: Option<Nclx>,
    icc: Option<&'a [u8]>,
    /// The coded AV1 bytes (OBUs), as slices of the file or of `idat`.
    extents: Vec<&'a [u8]>,
}

#[derive(Debug)]
struct Container<'a> {
    color: Item<'a>,
    alpha: Option<Item<'a>>,
    /// Whether the colour is premultiplied by alpha (a `prem` reference).
    premultiplied: bool,
    orientation: u8,
}

/// The pieces of `meta` a parse needs, each a box body.
#[derive(Default)]
struct Meta<'a> {
    pitm: Option<&'a [u8]>,
    iloc: Option<&'a [u8]>,
    iinf: Option<&'a [u8]>,
    iref: Option<&'a [u8]>,
    ipco: Option<&'a [u8]>,
    ipma: Vec<&'a [u8]>,
    idat: Option<&'a [u8]>,
}

impl<'a> Meta<'a> {
    fn read(bytes: &'a [u8]) -> Result<Meta<'a>, PipelineError> {
        let meta_body = child(bytes, b"meta").ok_or_else(|| bad("no meta box"))?;
        // `meta` is a full box: version and flags before its children.
        let meta_children = meta_body.get(4..).ok_or_else(|| bad("short meta box"))?;
        let mut meta = Meta::default();
        for (kind, body) in children(meta_children) {
            match &kind {
                b"pitm" => meta.pitm = Some(body),
                b"iloc" => meta.iloc = Some(body),
                b"iinf" => meta.iinf = Some(body),
                b"iref" => meta.iref = Some(body),
                b"idat" => meta.idat = Some(body),
                b"iprp" => {
                    for (kind, body) in children(body) {
                        match &kind {
                            b"ipco" => meta.ipco = Some(body),
                            b"ipma" => meta.ipma.push(body),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(meta)
    }

    fn primary(&self) -> Result<u32, PipelineError> {
        let pitm = self.pitm.ok_or_else(|| bad("no primary item (pitm)"))?;
        let mut r = Reader::new(pitm);
        let version = r.full_box()?.0;
        r.id(version >= 1)
    }
}

/// What a HEIF file declares, for the HEIC probe (`super::heic`), which checks it against the
/// limits before libheif parses the file: the same box walk as AVIF's, nothing decoded.
pub(super) struct Declarations<'a> {
    pub(super) primary: u32,
    pub(super) items: Vec<DeclaredItem<'a>>,
    /// (reference type, from item, to item).
    pub(super) references: Vec<([u8; 4], u32, u32)>,
}

/// One item of `iinf`.
pub(super) struct DeclaredItem<'a> {
    pub(super) id: u32,
    pub(super) kind: [u8; 4],
    /// `ispe` width and height, when the item has one.
    pub(super) size: Option<(u32, u32)>,
    /// The body of its `hvcC` property (HEVC decoder configuration), when it has one.
    pub(super) hvcc: Option<&'a [u8]>,
    /// The item's data, for `hvc1` items (length-prefixed HEVC NAL units).
    pub(super) data: Vec<&'a [u8]>,
}

pub(super) fn declarations(bytes: &[u8]) -> Result<Declarations<'_>, PipelineError> {
    let meta = Meta::read(bytes)?;
    let primary = meta.primary()?;
    let types = item_types(meta.iinf.ok_or_else(|| bad("no item info (iinf)"))?)?;
    let properties: Vec<([u8; 4], &[u8])> = children(meta.ipco.unwrap_or(&[])).collect();
    let associations = associations(&meta.ipma)?;
    let mut items = Vec::with_capacity(types.len());
    for (id, kind) in types {
        let mut item = Item::default();
        let props = associations
            .iter()
            .filter(|(item, _)| *item == id)
            .filter_map(|&(_, index)| properties.get(usize::from(index).checked_sub(1)?));
        let mut hvcc = None;
        for &(kind, body) in props {
            read_property(&mut item, kind, body)?;
            if &kind == b"hvcC" {
                hvcc = Some(body);
            }
        }
        let size = (item.width > 0 || item.height > 0).then_some((item.width, item.height));
        let data = if &kind == b"hvc1" {
            extents(&meta, bytes, id)?
        } else {
            Vec::new()
        };
        items.push(DeclaredItem {
            id,
            kind,
            size,
            hvcc,
            data,
        });
    }
    Ok(Declarations {
        primary,
        items,
        references: references(meta.iref.unwrap_or(&[]))?,
    })
}

impl<'a> Container<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Container<'a>, PipelineError> {
        let meta = Meta::read(bytes)?;
        let primary = meta.primary()?;
        let types = item_types(meta.iinf.ok_or_else(|| bad("no item info (iinf)"))?)?;
        let kind_of = |id: u32| types.iter().find(|(i, _)| *i == id).map(|(_, t)| *t);
        match kind_of(primary) {
            Some(t) if &t == b"av01" => {}
            // A grid is a mosaic of AV1 tiles (`dimg` references) on a canvas; decoding one
            // means decoding and stitching every tile. Refused until a source needs it.
            Some(t) if &t == b"grid" => return Err(PipelineError::UnsupportedFormat),
            Some(_) => return Err(PipelineError::UnsupportedFormat),
            None => return Err(bad("primary item has no item info")),
        }

        let references = references(meta.iref.unwrap_or(&[]))?;
        let properties: Vec<([u8; 4], &[u8])> = children(meta.ipco.unwrap_or(&[])).collect();
        let associations = associations(&meta.ipma)?;
        let props_of = |id: u32| -> Vec<([u8; 4], &'a [u8])> {
            associations
                .iter()
                .filter(|(item, _)| *item == id)
                .filter_map(|&(_, index)| properties.get(usize::from(index).checked_sub(1)?))
                .copied()
                .collect()
        };

        let mut color = Item::default();
        let mut orientation = (0u8, None::<u8>);
        for (kind, body) in props_of(primary) {
            read_property(&mut color, kind, body)?;
            match &kind {
                b"irot" => orientation.0 = body.first().ok_or_else(|| bad("short irot"))? & 3,
                b"imir" => orientation.1 = Some(body.first().ok_or_else(|| bad("short imir"))? & 1),
                _ => {}
            }
        }
        if color.width == 0 || color.height == 0 {
            return Err(bad("primary item has no ispe"));
        }

        // The alpha item: an AV1 item with an `auxl` reference to the primary and an alpha
        // `auxC` URN. Other auxiliaries (depth maps, gain maps) are ignored.
        let mut alpha = None;
        for &(kind, from, to) in &references {
            if &kind != b"auxl" || to != primary || kind_of(from) != Some(*b"av01") {
                continue;
            }
            let props = props_of(from);
            let is_alpha = props
                .iter()
                .any(|(kind, body)| kind == b"auxC" && body.get(4..).is_some_and(alpha_urn));
            if is_alpha {
                let mut item = Item::default();
                for (kind, body) in props {
                    read_property(&mut item, kind, body)?;
                }
                item.extents = extents(&meta, bytes, from)?;
                alpha = Some((from, item));
                break;
            }
        }
        let premultiplied = alpha.as_ref().is_some_and(|(id, _)| {
            references
                .iter()
                .any(|(kind, from, to)| kind == b"prem" && *from == primary && to == id)
        });
        color.extents = extents(&meta, bytes, primary)?;
        Ok(Container {
            color,
            alpha: alpha.map(|(_, item)| item),
            premultiplied,
            orientation: exif_orientation(orientation.0, orientation.1),
        })
    }
}

fn alpha_urn(aux_type: &[u8]) -> bool {
    // A null-terminated string (some writers omit the terminator).
    let urn = aux_type.split(|&b| b == 0).next().unwrap_or(aux_type);
    ALPHA_URNS.contains(&urn)
}

/// `irot` (anti-clockwise quarter turns, applied first) and `imir` (applied second; mode 0
/// exchanges top and bottom, 1 left and right, as in HEIF amendment 2 and libavif) as the EXIF
/// orientation whose transform `orient::apply` performs: the same display pixels.
fn exif_orientation(angle: u8, mirror: Option<u8>) -> u8 {
    const TABLE: [[u8; 3]; 4] = [
        // no mirror, top-bottom, left-right
        [1, 4, 2], // 0°
        [8, 5, 7], // 90° anti-clockwise
        [3, 2, 4], // 180°
        [6, 7, 5], // 270° anti-clockwise (90° clockwise)
    ];
    let column = match mirror {
        None => 0,
        Some(0) => 1,
        Some(_) => 2,
    };
    TABLE[usize::from(angle & 3)][column]
}

fn read_property<'a>(
    item: &mut Item<'a>,
    kind: [u8; 4],
    body: &'a [u8],
) -> Result<(), PipelineError> {
    let mut r = Reader::new(body);
    match &kind {
        b"ispe" => {
            r.full_box()?;
            item.width = r.u32()?;
            item.height = r.u32()?;
        }
        b"pixi" => {
            r.full_box()?;
            if r.u8()? > 0 {
                item.depth = Some(r.u8()?);
            }
        }
        b"colr" => match &r.fourcc()? {
            b"nclx" => {
                item.nclx = Some(Nclx {
                    primaries: r.u16()?,
                    transfer: r.u16()?,
                    matrix: r.u16()?,
                    full_range: r.u8()? & 0x80 != 0,
                });
            }
            b"rICC" | b"prof" => item.icc = Some(r.rest()),
            _ => {}
        },
        _ => {}
    }
    Ok(())
}

/// (item id, item type) of every `infe` of version 2 or 3 (older versions have no type).
fn item_types(iinf: &[u8]) -> Result<Vec<(u32, [u8; 4])>, PipelineError> {
    let mut r = Reader::new(iinf);
    let version = r.full_box()?.0;
    let _count = if version == 0 {
        u32::from(r.u16()?)
    } else {
        r.u32()?
    };
    let mut types = Vec::new();
    for (kind, body) in children(r.rest()) {
        if &kind != b"infe" {
            continue;
        }
        let mut r = Reader::new(body);
        let version = r.full_box()?.0;
        if version < 2 {
            continue;
        }
        let id = r.id(version >= 3)?;
        r.u16()?; // item_protection_index
        types.push((id, r.fourcc()?));
    }
    Ok(types)
}

/// (reference type, from item, to item) for every reference in `iref`.
fn references(iref: &[u8]) -> Result<Vec<([u8; 4], u32, u32)>, PipelineError> {
    if iref.is_empty() {
        return Ok(Vec::new());
    }
    let mut r = Reader::new(iref);
    let large = r.full_box()?.0 >= 1;
    let mut out = Vec::new();
    for (kind, body) in children(r.rest()) {
        let mut r = Reader::new(body);
        let from = r.id(large)?;
        for _ in 0..r.u16()? {
            out.push((kind, from, r.id(large)?));
        }
    }
    Ok(out)
}

/// (item id, 1-based property index) for every association in every `ipma`.
fn associations(ipma: &[&[u8]]) -> Result<Vec<(u32, u16)>, PipelineError> {
    let mut out = Vec::new();
    for body in ipma {
        let mut r = Reader::new(body);
        let (version, flags) = r.full_box()?;
        for _ in 0..r.u32()? {
            let item = r.id(version >= 1)?;
            for _ in 0..r.u8()? {
                // The top bit is "essential"; the rest is the index.
                let index = if flags & 1 != 0 {
                    r.u16()? & 0x7FFF
                } else {
                    u16::from(r.u8()? & 0x7F)
                };
                out.push((item, index));
            }
        }
    }
    Ok(out)
}

/// The data of item `id` from `iloc`: file offsets (construction method 0) or `idat`
/// offsets (1). Every extent is checked against its buffer, and the total against the file
/// size, so overlapping extents cannot make the later copy larger than the input.
fn extents<'a>(meta: &Meta<'a>, file: &'a [u8], id: u32) -> Result<Vec<&'a [u8]>, PipelineError> {
    let mut r = Reader::new(meta.iloc.ok_or_else(|| bad("no item locations (iloc)"))?);
    let version = r.full_box()?.0;
    if version > 2 {
        return Err(bad(format!("iloc version {version}")));
    }
    let sizes = r.u8()?;
    let (offset_size, length_size) = (sizes >> 4, sizes & 15);
    let sizes = r.u8()?;
    let base_offset_size = sizes >> 4;
    let index_size = if version >= 1 { sizes & 15 } else { 0 };
    let count = if version < 2 {
        u32::from(r.u16()?)
    } else {
        r.u32()?
    };
    for _ in 0..count {
        let item = r.id(version >= 2)?;
        let method = if version >= 1 { r.u16()? & 15 } else { 0 };
        let data_reference = r.u16()?;
        let base = r.sized(base_offset_size)?;
        let extent_count = r.u16()?;
        let mut found = Vec::new();
        let mut total = 0u64;
        for _ in 0..extent_count {
            r.sized(index_size)?;
            let offset = r.sized(offset_size)?;
            let length = r.sized(length_size)?;
            if item != id {
                continue;
            }
            let source: &[u8] = match method {
                0 => file,
                1 => meta
                    .idat
                    .ok_or_else(|| bad("construction method 1 without idat"))?,
                _ => return Err(PipelineError::UnsupportedFormat),
            };
            let start = base
                .checked_add(offset)
                .ok_or_else(|| bad("extent offset overflows"))?;
            // Length 0 means "to the end of the source".
            let end = if length == 0 {
                source.len() as u64
            } else {
                start
                    .checked_add(length)
                    .ok_or_else(|| bad("extent overflows"))?
            };
            let extent = usize::try_from(start)
                .ok()
                .zip(usize::try_from(end).ok())
                .and_then(|(start, end)| source.get(start..end))
                .ok_or_else(|| bad("item extent outside the file"))?;
            total += extent.len() as u64;
            if total > file.len() as u64 {
                return Err(bad("item extents larger than the file"));
            }
            found.push(extent);
        }
        if item == id {
            if data_reference != 0 {
                return Err(PipelineError::UnsupportedFormat); // data in another file
            }
            if found.is_empty() || total == 0 {
                return Err(bad(format!("item {id} has no data")));
            }
            return Ok(found);
        }
    }
    Err(bad(format!("item {id} has no location")))
}

/// The boxes directly inside `data`: (type, body). Stops at the first malformed box (the
/// caller then misses what it needs and says so).
fn children(data: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let head = data.get(at..at.checked_add(8)?)?;
        let size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let kind = [head[4], head[5], head[6], head[7]];
        let (header_len, size) = match size {
            0 => (8, data.len() - at), // to the end
            1 => {
                let large = data.get(at + 8..at + 16)?;
                let mut be = [0u8; 8];
                be.copy_from_slice(large);
                (16, usize::try_from(u64::from_be_bytes(be)).ok()?)
            }
            size => (8, size),
        };
        let body = data.get(at + header_len..at.checked_add(size)?)?;
        at += size;
        Some((kind, body))
    })
}

fn child<'a>(data: &'a [u8], wanted: &[u8; 4]) -> Option<&'a [u8]> {
    children(data)
        .find(|(kind, _)| kind == wanted)
        .map(|(_, body)| body)
}

/// Big-endian field reader over one box body; every read is bounds-checked.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Reader { data, at: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PipelineError> {
        let end = self.at.checked_add(n).ok_or_else(|| bad("box overflows"))?;
        let out = self
            .data
            .get(self.at..end)
            .ok_or_else(|| bad("truncated box"))?;
        self.at = end;
        Ok(out)
    }

    fn rest(&mut self) -> &'a [u8] {
        let out = self.data.get(self.at..).unwrap_or(&[]);
        self.at = self.data.len();
        out
    }

    fn sized(&mut self, bytes: u8) -> Result<u64, PipelineError> {
        match bytes {
            0 => Ok(0),
            4 => self.u32().map(u64::from),
            8 => {
                let b = self.take(8)?;
                let mut be = [0u8; 8];
                be.copy_from_slice(b);
                Ok(u64::from_be_bytes(be))
            }
            n => Err(bad(format!("iloc field size {n}"))),
        }
    }

    fn u8(&mut self) -> Result<u8, PipelineError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, PipelineError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, PipelineError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn fourcc(&mut self) -> Result<[u8; 4], PipelineError> {
        let b = self.take(4)?;
        Ok([b[0], b[1], b[2], b[3]])
    }

    /// An item id: 32-bit in the newer box versions, 16-bit before.
    fn id(&mut self, large: bool) -> Result<u32, PipelineError> {
        if large {
            self.u32()
        } else {
            self.u16().map(u32::from)
        }
    }

    /// Full-box header: (version, flags).
    fn full_box(&mut self) -> Result<(u8, u32), PipelineError> {
        let v = self.u32()?;
        Ok(((v >> 24) as u8, v & 0x00FF_FFFF))
    }
}

// --- decoding -------------------------------------------------------------------------------

/// Decodes the primary item (and its alpha) into Rgb8/Rgba8. The container is parsed again
/// (the probe keeps no state); the caller checks the size against the probe.
pub(super) fn decode(bytes: &[u8], limits: &Limits) -> Result<Image, PipelineError> {
    let container = Container::parse(bytes)?;
    let (width, height) = (container.color.width, container.color.height);
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_source_pixels {
        return Err(PipelineError::SourceTooLarge(format!(
            "{width}x{height} = {pixels} pixels, limit {}",
            limits.max_source_pixels
        )));
    }
    let picture = decode_av1(&container.color, limits)?;
    // What the colour planes mean: `colr nclx` when present, else the AV1 sequence header's
    // colour config (as libavif does: ravif and avif-serialize leave `colr` out when it would
    // only repeat the stream's), else BT.601 limited range (libavif's "unspecified").
    let nclx = container
        .color
        .nclx
        .or_else(|| sequence_colour(container.color.extents.first()?))
        .unwrap_or(Nclx {
            primaries: 2,
            transfer: 2,
            matrix: 6,
            full_range: false,
        });
    let mut rgba = vec![
        0u8;
        pixels
            .checked_mul(4)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| bad("frame too large"))?
    ];
    picture_to_rgba(&picture, nclx, &mut rgba)?;
    drop(picture);

    let layout = if let Some(alpha_item) = &container.alpha {
        let alpha = decode_av1(alpha_item, limits)?;
        if (alpha.width(), alpha.height()) != (width, height) {
            return Err(bad(format!(
                "alpha is {}x{}, colour {width}x{height}",
                alpha.width(),
                alpha.height()
            )));
        }
        // AVIF requires full-range alpha in practice (libavif always writes it); an `nclx`
        // on the alpha item saying limited is honoured.
        let full = alpha_item.nclx.is_none_or(|n| n.full_range);
        let mut out = rgba.chunks_exact_mut(4).map(|p| &mut p[3]);
        for_each_sample(&alpha, Plane::Y, width, height, |row| {
            for (&s, a) in row.iter().zip(out.by_ref()) {
                *a = to_8bit(s, alpha.bit_depth(), full);
            }
        })?;
        if container.premultiplied {
            unpremultiply(&mut rgba);
        }
        PixelLayout::Rgba8
    } else {
        rgba = rgba
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect();
        PixelLayout::Rgb8
    };
    let mut image = Image::new(width, height, layout, rgba);
    image.icc = match container.color.icc {
        Some(icc) => Some(icc.to_vec()),
        None => icc_for_nclx(nclx),
    };
    Ok(image)
}

/// Decodes one AV1 item into a dav1d picture of exactly the item's `ispe` size.
/// The colour config (CICP and range) of the AV1 sequence header that opens `obus`, or `None`
/// when the stream does not start with one or it cannot be read. Only what precedes
/// `color_config` is walked (AV1 spec 5.5); dav1d validates the whole header when it decodes.
fn sequence_colour(obus: &[u8]) -> Option<Nclx> {
    let mut r = Bits::new(obus);
    // Skip temporal delimiters and padding to the first sequence header OBU.
    loop {
        let header = r.bits(8)?;
        let obu_type = (header >> 3) & 0xf;
        if header & 0x04 != 0 {
            r.bits(8)?; // extension: temporal and spatial ids
        }
        let size = if header & 0x02 != 0 {
            r.leb128()?
        } else {
            return None;
        };
        match obu_type {
            1 => break,
            2 | 15 => r.skip_bytes(size)?,
            _ => return None,
        }
    }
    let profile = r.bits(3)?;
    r.bits(1)?; // still_picture
    let reduced = r.bits(1)? == 1;
    if reduced {
        r.bits(5)?; // seq_level_idx[0]
    } else {
        let timing = r.bits(1)? == 1;
        let mut decoder_model = false;
        let mut delay_bits = 0;
        if timing {
            r.bits(32)?; // num_units_in_display_tick
            r.bits(32)?; // time_scale
            if r.bits(1)? == 1 {
                r.uvlc()?; // num_ticks_per_picture_minus_1
            }
            decoder_model = r.bits(1)? == 1;
            if decoder_model {
                delay_bits = r.bits(5)? + 1;
                r.bits(32)?; // num_units_in_decoding_tick
                r.bits(10)?; // buffer_removal_time and frame_presentation_time lengths
            }
        }
        let display_delay = r.bits(1)? == 1;
        for _ in 0..=r.bits(5)? {
            r.bits(12)?; // operating_point_idc
            if r.bits(5)? > 7 {
                r.bits(1)?; // seq_tier
            }
            if decoder_model && r.bits(1)? == 1 {
                r.bits(delay_bits * 2 + 1)?; // decoder and encoder buffer delays, low_delay_mode
            }
            if display_delay && r.bits(1)? == 1 {
                r.bits(4)?;
            }
        }
    }
    let width_bits = r.bits(4)? + 1;
    let height_bits = r.bits(4)? + 1;
    r.bits(width_bits + height_bits)?;
    if !reduced && r.bits(1)? == 1 {
        r.bits(7)?; // frame id lengths
    }
    r.bits(3)?; // 128x128 superblocks, filter intra, intra edge filter
    if !reduced {
        r.bits(4)?; // interintra, masked compound, warped motion, dual filter
        let order_hint = r.bits(1)? == 1;
        if order_hint {
            r.bits(2)?; // jnt_comp, ref_frame_mvs
        }
        let force_screen_content = if r.bits(1)? == 1 { 2 } else { r.bits(1)? };
        if force_screen_content > 0 && r.bits(1)? == 0 {
            r.bits(1)?; // seq_force_integer_mv
        }
        if order_hint {
            r.bits(3)?;
        }
    }
    r.bits(3)?; // superres, cdef, restoration
    // color_config
    let high_bitdepth = r.bits(1)? == 1;
    if profile == 2 && high_bitdepth {
        r.bits(1)?;
    }
    let mono = profile != 1 && r.bits(1)? == 1;
    let (primaries, transfer, matrix) = if r.bits(1)? == 1 {
        (r.bits(8)?, r.bits(8)?, r.bits(8)?)
    } else {
        (2, 2, 2)
    };
    let full_range = if !mono && (primaries, transfer, matrix) == (1, 13, 0) {
        true
    } else {
        r.bits(1)? == 1
    };
    Some(Nclx {
        primaries: primaries as u16,
        transfer: transfer as u16,
        matrix: matrix as u16,
        full_range,
    })
}

/// A big-endian bit reader over a byte slice; every read is `None` past the end.
struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bits { data, at: 0 }
    }

    /// The next `n` bits (at most 64) as a number.
    fn bits(&mut self, n: u64) -> Option<u64> {
        let mut value = 0u64;
        for _ in 0..n {
            let byte = self.data.get(self.at / 8)?;
            let bit = (byte >> (7 - self.at % 8)) & 1;
            value = (value << 1) | u64::from(bit);
            self.at += 1;
        }
        Some(value)
    }

    /// Unsigned LEB128 from a byte boundary (OBU sizes).
    fn leb128(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for i in 0..8 {
            let byte = self.bits(8)?;
            value |= (byte & 0x7f) << (i * 7);
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    /// Exp-Golomb-like `uvlc()` (AV1 spec 4.10.3).
    fn uvlc(&mut self) -> Option<u64> {
        let mut zeros = 0;
        while self.bits(1)? == 0 {
            zeros += 1;
            if zeros >= 32 {
                return None;
            }
        }
        Some(self.bits(zeros)? + (1 << zeros) - 1)
    }

    fn skip_bytes(&mut self, n: u64) -> Option<()> {
        let bits = usize::try_from(n).ok()?.checked_mul(8)?;
        self.at = self.at.checked_add(bits)?;
        (self.at <= self.data.len() * 8).then_some(())
    }
}

fn decode_av1(item: &Item<'_>, limits: &Limits) -> Result<dav1d::Picture, PipelineError> {
    let mut settings = dav1d::Settings::new();
    // One thread: the pipeline already runs one render per core on its rayon pool, so dav1d's
    // own thread pool would only oversubscribe the cores (and cost a thread spawn per image).
    settings.set_n_threads(1);
    settings.set_max_frame_delay(1);
    // The sequence header's frame size is refused by dav1d itself above the source limit,
    // before it allocates the frame. 0 would mean "no limit", hence the max(1).
    settings
        .set_frame_size_limit(u32::try_from(limits.max_source_pixels.max(1)).unwrap_or(u32::MAX));
    // Like libavif: the highest-quality operating point only, not every spatial layer.
    settings.set_all_layers(false);
    let mut decoder = dav1d::Decoder::with_settings(&settings)
        .map_err(|e| PipelineError::Internal(format!("dav1d init: {e}")))?;
    // dav1d keeps the buffer until it is done with it, so it must own it ('static): one copy
    // of the item, at most the file size (checked in `extents`).
    let data: Vec<u8> = item.extents.concat();
    let av1_error = |e: dav1d::Error| bad(format!("av1: {e}"));
    let mut pending = match decoder.send_data(data, None, None, None) {
        Ok(()) => false,
        Err(dav1d::Error::Again) => true,
        Err(e) => return Err(av1_error(e)),
    };
    // A still image is one temporal unit: a picture comes out once its data is consumed. The
    // bound only guards against a decoder that neither progresses nor fails.
    for _ in 0..64 {
        match decoder.get_picture() {
            Ok(picture) => {
                if (picture.width(), picture.height()) != (item.width, item.height) {
                    return Err(bad(format!(
                        "av1 frame is {}x{}, ispe says {}x{}",
                        picture.width(),
                        picture.height(),
                        item.width,
                        item.height
                    )));
                }
                if let Some(depth) = item.depth
                    && usize::from(depth) != picture.bit_depth()
                {
                    return Err(bad(format!(
                        "av1 frame is {}-bit, pixi says {depth}",
                        picture.bit_depth()
                    )));
                }
                return Ok(picture);
            }
            Err(dav1d::Error::Again) if pending => match decoder.send_pending_data() {
                Ok(()) => pending = false,
                Err(dav1d::Error::Again) => {}
                Err(e) => return Err(av1_error(e)),
            },
            Err(dav1d::Error::Again) => return Err(bad("av1 data ends before a frame")),
            Err(e) => return Err(av1_error(e)),
        }
    }
    Err(bad("av1 decoder made no progress"))
}

/// Calls `f` with each of the first `height` rows (the first `width` samples) of `plane`, as
/// native samples widened to u16. Checked against the plane length, not assumed.
fn for_each_sample(
    picture: &dav1d::Picture,
    plane: Plane,
    width: u32,
    height: u32,
    mut f: impl FnMut(&[u16]),
) -> Result<(), PipelineError> {
    let data = picture.plane(plane);
    let stride = picture.stride(plane) as usize;
    let bytes_per_sample = if picture.bit_depth() > 8 { 2 } else { 1 };
    let row_bytes = width as usize * bytes_per_sample;
    let mut row = Vec::with_capacity(width as usize);
    for y in 0..height as usize {
        let start = y * stride;
        let bytes = data
            .get(start..start + row_bytes)
            .ok_or_else(|| PipelineError::Internal("dav1d plane shorter than its size".into()))?;
        row.clear();
        if bytes_per_sample == 2 {
            row.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| u16::from_ne_bytes([b[0], b[1]])),
            );
        } else {
            row.extend(bytes.iter().map(|&b| u16::from(b)));
        }
        f(&row);
    }
    Ok(())
}

/// One `depth`-bit sample to 8 bits, expanding limited (video) range when `full` is false.
fn to_8bit(sample: u16, depth: usize, full: bool) -> u8 {
    let shift = depth.saturating_sub(8) as u32;
    let (offset, range) = if full {
        (0, (1u32 << depth) - 1)
    } else {
        (16 << shift, 219 << shift)
    };
    let v = u32::from(sample).saturating_sub(offset);
    ((v * 255 + range / 2) / range).min(255) as u8
}

/// The YUV→RGB matrix for an `nclx` matrix_coefficients code (H.273 table 4).
fn matrix(nclx: Nclx) -> Result<YuvStandardMatrix, PipelineError> {
    Ok(match nclx.matrix {
        1 => YuvStandardMatrix::Bt709,
        // 2 = unspecified (BT.601 as libavif), 5/6 = BT.470BG / BT.601.
        2 | 5 | 6 => YuvStandardMatrix::Bt601,
        4 => YuvStandardMatrix::Fcc,
        7 => YuvStandardMatrix::Smpte240,
        // 10 (constant luminance) is approximated by the non-constant-luminance one.
        9 | 10 => YuvStandardMatrix::Bt2020,
        // Chroma-derived: the matrix of the primaries; the common ones are listed.
        12 | 13 => match nclx.primaries {
            1 => YuvStandardMatrix::Bt709,
            9 => YuvStandardMatrix::Bt2020,
            _ => YuvStandardMatrix::Bt601,
        },
        // YCgCo, ICtCp and the reserved codes: nothing the encoders we see write.
        _ => return Err(PipelineError::UnsupportedFormat),
    })
}

/// Converts the decoded colour planes into `rgba` (alpha 255).
fn picture_to_rgba(
    picture: &dav1d::Picture,
    nclx: Nclx,
    rgba: &mut [u8],
) -> Result<(), PipelineError> {
    let (width, height) = (picture.width(), picture.height());
    let depth = picture.bit_depth();
    if !matches!(depth, 8 | 10 | 12) {
        return Err(bad(format!("{depth}-bit av1")));
    }
    let layout = picture.pixel_layout();
    let full = nclx.full_range;
    // Monochrome: Y is the gray level whatever the matrix. Dav1d has no chroma planes then
    // (null pointers), so they must never be asked for.
    if layout == Av1Layout::I400 {
        let mut out = rgba.chunks_exact_mut(4);
        return for_each_sample(picture, Plane::Y, width, height, |row| {
            for (&s, px) in row.iter().zip(out.by_ref()) {
                let g = to_8bit(s, depth, full);
                px.copy_from_slice(&[g, g, g, 255]);
            }
        });
    }
    // Identity (matrix 0, lossless files): the planes are G, B, R.
    if nclx.matrix == 0 {
        if layout != Av1Layout::I444 {
            return Err(bad("identity matrix with subsampled chroma"));
        }
        let mut planes = [Vec::new(), Vec::new(), Vec::new()];
        for (i, plane) in [Plane::Y, Plane::U, Plane::V].into_iter().enumerate() {
            let mut samples = Vec::with_capacity(width as usize * height as usize);
            for_each_sample(picture, plane, width, height, |row| {
                samples.extend(row.iter().map(|&s| to_8bit(s, depth, full)));
            })?;
            planes[i] = samples;
        }
        let [g, b, r] = &planes;
        for (((px, &r), &g), &b) in rgba.chunks_exact_mut(4).zip(r).zip(g).zip(b) {
            px.copy_from_slice(&[r, g, b, 255]);
        }
        return Ok(());
    }
    let matrix = matrix(nclx)?;
    let range = if full {
        YuvRange::Full
    } else {
        YuvRange::Limited
    };
    let stride = width * 4;
    let yuv_error = |e: yuv::YuvError| PipelineError::Internal(format!("yuv: {e}"));
    let (y, u, v) = (
        picture.plane(Plane::Y),
        picture.plane(Plane::U),
        picture.plane(Plane::V),
    );
    if depth == 8 {
        let image = YuvPlanarImage {
            y_plane: &y,
            y_stride: picture.stride(Plane::Y),
            u_plane: &u,
            u_stride: picture.stride(Plane::U),
            v_plane: &v,
            v_stride: picture.stride(Plane::V),
            width,
            height,
        };
        let convert = match layout {
            Av1Layout::I420 => yuv::yuv420_to_rgba,
            Av1Layout::I422 => yuv::yuv422_to_rgba,
            Av1Layout::I444 | Av1Layout::I400 => yuv::yuv444_to_rgba,
        };
        return convert(&image, rgba, stride, range, matrix).map_err(yuv_error);
    }
    // 10/12-bit: dav1d stores native-endian u16 samples (strides in bytes); the yuv crate
    // converts them straight to 8-bit RGB, rounding once at the end.
    let widen = |plane: &[u8]| -> Vec<u16> {
        plane
            .chunks_exact(2)
            .map(|b| u16::from_ne_bytes([b[0], b[1]]))
            .collect()
    };
    let (y16, u16_, v16) = (widen(&y), widen(&u), widen(&v));
    let image = YuvPlanarImage {
        y_plane: &y16,
        y_stride: picture.stride(Plane::Y) / 2,
        u_plane: &u16_,
        u_stride: picture.stride(Plane::U) / 2,
        v_plane: &v16,
        v_stride: picture.stride(Plane::V) / 2,
        width,
        height,
    };
    let convert = match (layout, depth) {
        (Av1Layout::I420, 10) => yuv::i010_to_rgba,
        (Av1Layout::I420, _) => yuv::i012_to_rgba,
        (Av1Layout::I422, 10) => yuv::i210_to_rgba,
        (Av1Layout::I422, _) => yuv::i212_to_rgba,
        (_, 10) => yuv::i410_to_rgba,
        (_, _) => yuv::i412_to_rgba,
    };
    convert(&image, rgba, stride, range, matrix).map_err(yuv_error)
}

/// Undoes premultiplied alpha (a `prem` reference): the pipeline keeps straight alpha.
pub(super) fn unpremultiply(rgba: &mut [u8]) {
    for px in rgba.chunks_exact_mut(4) {
        let a = u16::from(px[3]);
        if a > 0 && a < 255 {
            for c in &mut px[..3] {
                *c = ((u16::from(*c) * 255 + a / 2) / a).min(255) as u8;
            }
        }
    }
}

/// An ICC profile for `nclx` primaries/transfer that are not sRGB's, so `color::to_srgb`
/// converts them (Display P3 phone photos are the common case). `None` for sRGB-like or
/// unspecified values and for anything moxcms cannot describe (pixels are then kept as-is).
pub(super) fn icc_for_nclx(nclx: Nclx) -> Option<Vec<u8>> {
    use moxcms::{
        CicpColorPrimaries, CicpProfile, ColorProfile, MatrixCoefficients, TransferCharacteristics,
    };
    // BT.709 primaries (1) or unspecified (2) with the sRGB, BT.709/601 or unspecified curve:
    // treated as sRGB, as browsers do.
    let srgb_like =
        matches!(nclx.primaries, 1 | 2) && matches!(nclx.transfer, 1 | 2 | 6 | 13 | 14 | 15);
    if srgb_like {
        return None;
    }
    let primaries = CicpColorPrimaries::try_from(u8::try_from(nclx.primaries).ok()?).ok()?;
    let transfer = TransferCharacteristics::try_from(u8::try_from(nclx.transfer).ok()?).ok()?;
    let profile = ColorProfile::new_from_cicp(CicpProfile {
        color_primaries: primaries,
        transfer_characteristics: transfer,
        // The pixels handed on are already RGB: the profile describes RGB, not YUV.
        matrix_coefficients: MatrixCoefficients::Identity,
        full_range: true,
    });
    profile.red_trc.as_ref()?;
    profile.encode().ok()
}

#[cfg(test)]
mod tests {
    use super::super::super::probe::probe as probe_source;
    use super::super::super::{color, orient};
    use super::super::test_support::*;
    use super::*;

    const TRANSPARENT_CORNER: (u32, u32) = (56, 42);

    #[test]
    fn every_avif_variant_decodes_to_the_quadrants() {
        // (fixture, layout, tolerance): lossy at q≈100, lossless exact.
        let cases = [
            ("formats/avif_444.avif", PixelLayout::Rgb8, 8),
            ("formats/avif_420_limited.avif", PixelLayout::Rgb8, 16),
            ("formats/avif_10bit.avif", PixelLayout::Rgb8, 16),
            ("formats/avif_12bit_422.avif", PixelLayout::Rgb8, 16),
            ("formats/avif_lossless.avif", PixelLayout::Rgb8, 0),
            ("formats/avif_alpha.avif", PixelLayout::Rgba8, 8),
            ("formats/avif_alpha_10bit.avif", PixelLayout::Rgba8, 16),
        ];
        for (rel, layout, tolerance) in cases {
            let image = decode_fixture(rel).unwrap_or_else(|e| panic!("{rel}: {e}"));
            assert_eq!(image.layout, layout, "{rel}");
            assert_eq!(image.data.len(), 64 * 48 * layout.channels(), "{rel}");
            assert!(image.icc.is_none(), "{rel}: sRGB nclx needs no profile");
            assert_quadrants(&image, tolerance, rel);
            let (x, y) = TRANSPARENT_CORNER;
            let corner = pixel(&image, x, y);
            if layout == PixelLayout::Rgba8 {
                assert_eq!(corner[3], 0, "{rel}: bottom-right is transparent");
                // Every opaque corner is exactly opaque (alpha is lossless-ish at this quality).
                for (x, y) in [(0, 0), (63, 0), (0, 47)] {
                    assert_eq!(pixel(&image, x, y)[3], 255, "{rel} ({x}, {y})");
                }
            } else {
                assert_near(corner, [255, 255, 255, 255], tolerance, rel);
            }
        }
    }

    #[test]
    fn the_sequence_header_says_what_the_colr_box_says() {
        // Files written by libavif (avifenc) carry both; they must agree field by field.
        let mut checked = 0;
        for rel in [
            "formats/avif_444.avif",
            "formats/avif_420_limited.avif",
            "formats/avif_10bit.avif",
            "formats/avif_12bit_422.avif",
            "formats/avif_lossless.avif",
            "formats/avif_gray.avif",
            "formats/avif_odd.avif",
        ] {
            let bytes = fixture(rel);
            let container = Container::parse(&bytes).unwrap();
            let Some(nclx) = container.color.nclx else {
                continue;
            };
            let from_stream = sequence_colour(container.color.extents[0]);
            assert_eq!(from_stream, Some(nclx), "{rel}");
            checked += 1;
        }
        assert!(checked >= 4, "only {checked} fixtures carry an nclx box");
        // Cut anywhere, the reader gives up or has already read the whole colour config:
        // never a guess, never a panic.
        let bytes = fixture("formats/avif_420_limited.avif");
        let container = Container::parse(&bytes).unwrap();
        let obus = container.color.extents[0];
        let whole = sequence_colour(obus);
        assert!(whole.is_some_and(|n| !n.full_range));
        for end in 0..obus.len().min(64) {
            let cut = sequence_colour(&obus[..end]);
            assert!(cut.is_none() || cut == whole, "cut at {end}: {cut:?}");
        }
        assert_eq!(sequence_colour(&obus[..2]), None);
        // Any single flipped bit in the header: an answer or None, never a panic.
        let mut flipped = obus[..obus.len().min(48)].to_vec();
        for bit in 0..flipped.len() * 8 {
            flipped[bit / 8] ^= 1 << (bit % 8);
            let _ = sequence_colour(&flipped);
            flipped[bit / 8] ^= 1 << (bit % 8);
        }
    }

    #[test]
    fn probe_reads_size_alpha_and_orientation_from_the_same_parse() {
        let limits = Limits::default();
        for (rel, size, alpha, orientation) in [
            ("formats/avif_444.avif", (64, 48), false, 1),
            ("formats/avif_alpha.avif", (64, 48), true, 1),
            ("formats/avif_odd.avif", (33, 17), false, 1),
            ("orientation/orient_irot1.avif", (32, 48), false, 8),
            ("orientation/orient_imir1.avif", (48, 32), false, 2),
            ("orientation/orient_irot3_imir0.avif", (32, 48), false, 7),
        ] {
            let info =
                probe_source(&fixture(rel), &limits).unwrap_or_else(|e| panic!("{rel}: {e}"));
            assert_eq!((info.width, info.height), size, "{rel}");
            assert_eq!(info.has_alpha, alpha, "{rel}");
            assert_eq!(info.orientation, orientation, "{rel}");
        }
    }

    #[test]
    fn gray_avif_is_gray_rgb() {
        let image = decode_fixture("formats/avif_gray.avif").expect("gray");
        assert_eq!(image.layout, PixelLayout::Rgb8);
        // avifenc's luma uses the BT.601 weights of its nclx matrix: red is 76.
        assert_near(pixel(&image, 8, 6), [76, 76, 76, 255], 8, "red");
        assert_near(pixel(&image, 56, 42), [255, 255, 255, 255], 4, "white");
        assert!(
            image
                .data
                .chunks_exact(3)
                .all(|p| p[0] == p[1] && p[1] == p[2])
        );
    }

    #[test]
    fn odd_dimensions_with_subsampled_chroma() {
        let image = decode_fixture("formats/avif_odd.avif").expect("odd");
        assert_eq!((image.width, image.height), (33, 17));
        assert_eq!(image.data.len(), 33 * 17 * 3);
        assert_near(pixel(&image, 0, 0), [255, 0, 0, 255], 24, "red");
        assert_near(pixel(&image, 32, 0), [0, 255, 0, 255], 24, "green");
        assert_near(pixel(&image, 0, 16), [0, 0, 255, 255], 24, "blue");
        assert_near(pixel(&image, 32, 16), [255, 255, 255, 255], 24, "white");
    }

    #[test]
    fn irot_and_imir_end_upright_through_orient() {
        for rel in [
            "orientation/orient_irot1.avif",
            "orientation/orient_imir1.avif",
            "orientation/orient_irot3_imir0.avif",
        ] {
            let bytes = fixture(rel);
            let info = probe_source(&bytes, &Limits::default()).expect("probe");
            let image = orient::apply(decode_fixture(rel).expect("decode"), info.orientation);
            // Displayed: 48x32 white, red block top-left, blue block top-right.
            assert_eq!((image.width, image.height), (48, 32), "{rel}");
            assert_near(pixel(&image, 2, 2), [255, 0, 0, 255], 24, rel);
            assert_near(pixel(&image, 45, 2), [0, 0, 255, 255], 24, rel);
            assert_near(pixel(&image, 2, 29), [255, 255, 255, 255], 24, rel);
            assert_near(pixel(&image, 45, 29), [255, 255, 255, 255], 24, rel);
        }
    }

    /// The irot/imir table against the transforms themselves, on a 3x2 image whose pixel
    /// values are their stored index: rotate anti-clockwise, then mirror, by hand.
    #[test]
    fn orientation_table_matches_rotate_then_mirror() {
        let w = 3;
        let stored: Vec<u8> = (0..6).collect();
        for angle in 0..4u8 {
            for mirror in [None, Some(0), Some(1)] {
                // Reference: grid as rows, quarter turns anti-clockwise, then the mirror.
                let mut grid: Vec<Vec<u8>> = stored.chunks(w).map(<[u8]>::to_vec).collect();
                for _ in 0..angle {
                    let (rows, cols) = (grid.len(), grid[0].len());
                    grid = (0..cols)
                        .map(|r| (0..rows).map(|c| grid[c][cols - 1 - r]).collect())
                        .collect();
                }
                match mirror {
                    Some(0) => grid.reverse(),
                    Some(_) => grid.iter_mut().for_each(|row| row.reverse()),
                    None => {}
                }
                let expected: Vec<u8> = grid.concat();
                let data = stored.iter().flat_map(|&v| [v, v, v]).collect();
                let image = Image::new(3, 2, PixelLayout::Rgb8, data);
                let got = orient::apply(image, exif_orientation(angle, mirror));
                let got: Vec<u8> = got.data.chunks_exact(3).map(|p| p[0]).collect();
                assert_eq!(got, expected, "angle {angle}, mirror {mirror:?}");
            }
        }
    }

    #[test]
    fn nclx_display_p3_becomes_a_profile_that_color_converts() {
        let image = decode_fixture("color/p3_nclx.avif").expect("decode");
        assert!(image.icc.is_some(), "P3 primaries need a profile");
        assert_near(
            pixel(&image, 16, 16),
            [200, 60, 50, 255],
            3,
            "raw P3 samples",
        );
        let srgb = color::to_srgb(image).expect("to sRGB");
        // Exact: (217.5, 41.6, 38.8).
        assert_near(pixel(&srgb, 16, 16), [218, 42, 39, 255], 4, "converted");
    }

    #[test]
    fn grid_is_unsupported_not_corrupt() {
        // Refused as early as the probe, before any planning.
        let bytes = fixture("formats/avif_grid.avif");
        assert_eq!(
            probe_source(&bytes, &Limits::default()).err(),
            Some(PipelineError::UnsupportedFormat)
        );
        assert_eq!(
            decode_fixture("formats/avif_grid.avif").err(),
            Some(PipelineError::UnsupportedFormat)
        );
    }

    #[test]
    fn source_pixel_limit_is_checked_before_decoding() {
        let bytes = fixture("formats/avif_444.avif");
        let tight = Limits {
            max_source_pixels: 64 * 48 - 1,
            ..Limits::default()
        };
        assert!(matches!(
            decode(&bytes, &tight),
            Err(PipelineError::SourceTooLarge(_))
        ));
    }

    #[test]
    fn truncated_avif_is_corrupt() {
        let result = decode_fixture("hostile/truncated.avif");
        assert!(
            matches!(result, Err(PipelineError::Corrupt(_))),
            "{result:?}"
        );
        // Cut inside the AV1 payload (the mdat is last): the container parses, the frame not.
        for rel in ["formats/avif_444.avif", "formats/avif_alpha.avif"] {
            let bytes = fixture(rel);
            let cut = &bytes[..bytes.len() - 20];
            let result = decode(cut, &Limits::default());
            assert!(
                matches!(result, Err(PipelineError::Corrupt(_))),
                "{rel}: {result:?}"
            );
        }
    }

    /// Calls the AVIF decoder directly (outside `decode::decode`'s `catch_unwind`), so a panic
    /// fails the test instead of being reported as Corrupt.
    fn assert_sane(bytes: &[u8], what: &str) {
        match decode(bytes, &Limits::default()) {
            Ok(image) => assert_eq!(
                image.data.len(),
                image.width as usize * image.height as usize * image.channels(),
                "{what}"
            ),
            Err(
                PipelineError::Corrupt(_)
                | PipelineError::UnsupportedFormat
                | PipelineError::SourceTooLarge(_),
            ) => {}
            Err(e) => panic!("{what}: {e:?}"),
        }
    }

    #[test]
    fn every_prefix_errors_or_is_right_sized() {
        for rel in [
            "formats/avif_alpha.avif",
            "formats/avif_odd.avif",
            "formats/avif_10bit.avif",
        ] {
            let bytes = fixture(rel);
            for len in 0..bytes.len() {
                let prefix = &bytes[..len];
                assert_sane(prefix, &format!("{rel}[..{len}]"));
                // Any prefix that still decodes is the whole declared picture.
                if let Ok(image) = decode(prefix, &Limits::default()) {
                    assert_eq!((image.width, image.height), info_size(&bytes), "{rel}");
                }
            }
        }
    }

    fn info_size(bytes: &[u8]) -> (u32, u32) {
        let info = probe(bytes).expect("probe");
        (info.width, info.height)
    }

    #[test]
    fn bit_flips_never_panic() {
        for rel in ["formats/avif_alpha.avif", "formats/avif_12bit_422.avif"] {
            let mut bytes = fixture(rel);
            for at in 0..bytes.len() {
                for bit in [0x01u8, 0x80] {
                    bytes[at] ^= bit;
                    assert_sane(&bytes, &format!("{rel} byte {at} ^ {bit:#x}"));
                    bytes[at] ^= bit;
                }
            }
        }
    }

    #[test]
    fn sample_scaling() {
        assert_eq!(to_8bit(0, 8, true), 0);
        assert_eq!(to_8bit(255, 8, true), 255);
        assert_eq!(to_8bit(1023, 10, true), 255);
        assert_eq!(to_8bit(4095, 12, true), 255);
        assert_eq!(to_8bit(512, 10, true), 128);
        // Limited: 16..235 (8-bit), 64..940 (10-bit), clamped outside.
        assert_eq!(to_8bit(16, 8, false), 0);
        assert_eq!(to_8bit(235, 8, false), 255);
        assert_eq!(to_8bit(250, 8, false), 255);
        assert_eq!(to_8bit(3, 8, false), 0);
        assert_eq!(to_8bit(64, 10, false), 0);
        assert_eq!(to_8bit(940, 10, false), 255);
    }
}
