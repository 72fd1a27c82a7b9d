//! JPEG at 1/8 scale from the DC coefficients alone: shrink-on-load's largest step.
//!
//! Under DCT scaling, a 1/8-scale pixel is its 8x8 block's DC coefficient (libjpeg's 1x1
//! inverse DCT: `dc * q / 8 + 128`), so the 1/8-scale image needs the DC of every block and
//! nothing else. A progressive JPEG stores those in its first scan (plus, usually, one
//! refinement scan of one bit per block); every AC scan — the bulk of the file — is skipped
//! by looking for its end marker, never Huffman-decoded. That makes the most expensive kind
//! of real photo (a progressive one) the cheapest to thumbnail. A sequential (baseline) JPEG
//! interleaves DC and AC, so its AC codes are still read to find the next DC, but never
//! dequantised, transformed, upsampled or colour-converted at full size.
//!
//! Used only where it is the whole answer: 8-bit Huffman-coded gray or YCbCr. Everything else
//! (arithmetic coding, 12-bit, CMYK/YCCK, RGB-coded, odd sampling ratios) answers `None`, and
//! the caller sends whatever this refuses to the full decoder too, so every refusal the client
//! sees is the full decoder's. The file is walked to its EOI, so a truncated file is refused
//! here; corrupt data inside a progressive file's AC scans is not seen (they are skipped). Chroma is upsampled to the 1/8-scale luma grid with
//! triangle (bilinear, centre-aligned) weights, as libjpeg's "fancy" upsampling.

use super::super::probe::jpeg_segment as segment_at;
use super::super::spec::SourceFormat;
use super::super::{Image, PipelineError, PixelLayout};
use super::corrupt;

/// Decodes `bytes` at 1/8 scale (`ceil(w / 8)` x `ceil(h / 8)`), or `None` when this file is
/// not one this decoder handles. `expected` is the probed size: the frame must match it, so
/// nothing is allocated from a header the limits did not check.
pub(super) fn decode(bytes: &[u8], expected: (u32, u32)) -> Result<Option<Image>, PipelineError> {
    let mut state = match Decoder::new(bytes, expected)? {
        Some(state) => state,
        None => return Ok(None),
    };
    state.run()?;
    Ok(Some(state.into_image()?))
}

fn bad(why: impl std::fmt::Display) -> PipelineError {
    corrupt(SourceFormat::Jpeg, why)
}

/// One frame component with the DC coefficient of every block (MCU-padded grid).
struct Component {
    id: u8,
    h: usize,
    v: usize,
    quant_table: usize,
    /// DC quantiser, latched when the component's first scan starts (as libjpeg does).
    quant: Option<u16>,
    /// Blocks per row of the padded grid.
    grid_w: usize,
    dc: Vec<i32>,
    /// The lowest bit position of the DC values known so far (`None`: no DC scan yet).
    known_bit: Option<u8>,
}

struct Frame {
    width: usize,
    height: usize,
    progressive: bool,
    h_max: usize,
    v_max: usize,
    mcus_x: usize,
    mcus_y: usize,
    components: Vec<Component>,
}

struct Decoder<'a> {
    bytes: &'a [u8],
    /// Position of the next marker (after the frame header once `new` returns).
    at: usize,
    frame: Frame,
    dc_tables: [Option<Huffman>; 4],
    ac_tables: [Option<Huffman>; 4],
    quant_dc: [Option<u16>; 4],
    restart_interval: usize,
}

/// The segments before the frame header, the frame header itself.
impl<'a> Decoder<'a> {
    fn new(bytes: &'a [u8], expected: (u32, u32)) -> Result<Option<Decoder<'a>>, PipelineError> {
        if bytes.get(..2) != Some(&[0xFF, 0xD8]) {
            return Err(bad("no SOI"));
        }
        let mut dc_tables = [None, None, None, None];
        let mut ac_tables = [None, None, None, None];
        let mut quant_dc = [None; 4];
        let mut restart_interval = 0;
        let mut at = 2;
        loop {
            let (marker, segment, next) = segment_at(bytes, at)?;
            at = next;
            match marker {
                0xC4 => read_dht(segment, &mut dc_tables, &mut ac_tables)?,
                0xDB => read_dqt(segment, &mut quant_dc)?,
                0xDD => restart_interval = read_dri(segment)?,
                // Baseline, extended sequential, progressive; all Huffman-coded.
                0xC0..=0xC2 => {
                    let Some(frame) = read_sof(segment, marker == 0xC2, expected)? else {
                        return Ok(None);
                    };
                    return Ok(Some(Decoder {
                        bytes,
                        at,
                        frame,
                        dc_tables,
                        ac_tables,
                        quant_dc,
                        restart_interval,
                    }));
                }
                // Lossless, hierarchical, arithmetic-coded: the full decoder's business.
                0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => return Ok(None),
                0xDA | 0xD9 => return Err(bad("no frame header before the scan data")),
                _ => {}
            }
        }
    }

    /// Every segment and scan after the frame header, up to EOI.
    fn run(&mut self) -> Result<(), PipelineError> {
        loop {
            let (marker, segment, next) = segment_at(self.bytes, self.at)?;
            self.at = next;
            match marker {
                0xD9 => break,
                0xC4 => read_dht(segment, &mut self.dc_tables, &mut self.ac_tables)?,
                0xDB => read_dqt(segment, &mut self.quant_dc)?,
                0xDD => self.restart_interval = read_dri(segment)?,
                0xDA => {
                    let scan = read_sos(segment, &self.frame)?;
                    let data_end = if self.needs(&scan) {
                        self.decode_scan(&scan)?
                    } else {
                        skip_entropy_data(self.bytes, self.at)
                    };
                    self.at = data_end;
                }
                0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                    return Err(bad("second frame header"));
                }
                _ => {}
            }
        }
        for c in &self.frame.components {
            if c.known_bit.is_none() {
                return Err(bad(format!("no DC scan for component {}", c.id)));
            }
        }
        Ok(())
    }

    /// Whether a scan carries DC bits not known yet.
    fn needs(&self, scan: &Scan) -> bool {
        scan.start == 0
            && scan
                .components
                .iter()
                .any(|s| self.frame.components[s.index].known_bit != Some(0))
    }

    /// Decodes the DC part of one scan; returns the position of the marker that ends it.
    fn decode_scan(&mut self, scan: &Scan) -> Result<usize, PipelineError> {
        let frame = &mut self.frame;
        let refine = frame.progressive && scan.high != 0;
        let baseline = !frame.progressive;
        // Latch quantisers and check the successive-approximation sequence per component.
        for s in &scan.components {
            let c = &mut frame.components[s.index];
            if c.quant.is_none() {
                c.quant = Some(
                    self.quant_dc[c.quant_table]
                        .ok_or_else(|| bad("scan before its quantisation table"))?,
                );
            }
            let fits = match (c.known_bit, refine) {
                (None, false) => true,
                (Some(known), true) => known == scan.high && scan.low + 1 == scan.high,
                _ => false,
            };
            if !fits {
                return Err(bad("DC scans out of sequence"));
            }
            if !refine && self.dc_tables[s.dc_table].is_none() {
                return Err(bad("scan uses an undefined DC table"));
            }
            if baseline && self.ac_tables[s.ac_table].is_none() {
                return Err(bad("scan uses an undefined AC table"));
            }
        }

        let single = scan.components.len() == 1;
        let (units_x, units_y) = if single {
            let c = &frame.components[scan.components[0].index];
            (
                (frame.width * c.h).div_ceil(frame.h_max).div_ceil(8),
                (frame.height * c.v).div_ceil(frame.v_max).div_ceil(8),
            )
        } else {
            (frame.mcus_x, frame.mcus_y)
        };
        let total = units_x * units_y;
        let mut bits = Bits::new(self.bytes, self.at);
        let mut predictors = [0i32; 4];
        for unit in 0..total {
            if self.restart_interval > 0 && unit > 0 && unit % self.restart_interval == 0 {
                if bits.overran() {
                    return Err(bad("truncated restart interval"));
                }
                let expected = (unit / self.restart_interval - 1) % 8;
                bits = Bits::new(self.bytes, restart(self.bytes, bits.pos, expected)?);
                predictors = [0; 4];
            }
            let (ux, uy) = (unit % units_x, unit / units_x);
            for (slot, s) in scan.components.iter().enumerate() {
                let c = &mut frame.components[s.index];
                let (bw, bh) = if single { (1, 1) } else { (c.h, c.v) };
                for v in 0..bh {
                    for h in 0..bw {
                        let index = (uy * bh + v) * c.grid_w + ux * bw + h;
                        bits.refill();
                        if refine {
                            if bits.take(1) == 1 {
                                c.dc[index] |= 1 << scan.low;
                            }
                            continue;
                        }
                        let dc_table = self.dc_tables[s.dc_table].as_ref();
                        let size = dc_table
                            .ok_or_else(|| bad("no DC table"))?
                            .decode(&mut bits)?;
                        if size > 11 {
                            return Err(bad("DC difference wider than 11 bits"));
                        }
                        let diff = bits.extend(u32::from(size));
                        predictors[slot] = predictors[slot].wrapping_add(diff);
                        c.dc[index] = predictors[slot].wrapping_shl(u32::from(scan.low));
                        if baseline {
                            let ac_table = self.ac_tables[s.ac_table].as_ref();
                            skip_ac(&mut bits, ac_table.ok_or_else(|| bad("no AC table"))?)?;
                        }
                    }
                }
            }
        }
        if bits.overran() {
            return Err(bad("truncated scan"));
        }
        for s in &scan.components {
            frame.components[s.index].known_bit = Some(scan.low);
        }
        Ok(skip_entropy_data(self.bytes, bits.pos))
    }

    /// Dequantises the DC values into planes, upsamples chroma, converts to RGB.
    fn into_image(self) -> Result<Image, PipelineError> {
        let frame = self.frame;
        let out_w = frame.width.div_ceil(8);
        let out_h = frame.height.div_ceil(8);
        let planes: Vec<Vec<u8>> = frame
            .components
            .iter()
            .map(|c| {
                let quant = i64::from(c.quant.unwrap_or(1));
                let plane_w = (frame.width * c.h).div_ceil(frame.h_max).div_ceil(8);
                let plane_h = (frame.height * c.v).div_ceil(frame.v_max).div_ceil(8);
                let mut plane = Vec::with_capacity(plane_w * plane_h);
                for row in c.dc.chunks_exact(c.grid_w).take(plane_h) {
                    plane.extend(row[..plane_w].iter().map(|&dc| {
                        // libjpeg's 1x1 IDCT: DESCALE(dc * q, 3) + 128, clamped.
                        let value = (i64::from(dc) * quant + 4) >> 3;
                        (value + 128).clamp(0, 255) as u8
                    }));
                }
                upsample(
                    &plane,
                    (plane_w, plane_h),
                    (frame.h_max / c.h, frame.v_max / c.v),
                    (out_w, out_h),
                )
            })
            .collect();
        let pixels = out_w * out_h;
        let mut data = Vec::with_capacity(pixels * 3);
        match planes.as_slice() {
            [gray] => data.extend(gray.iter().flat_map(|&v| [v, v, v])),
            [y, cb, cr] => {
                for ((&y, &cb), &cr) in y.iter().zip(cb).zip(cr) {
                    data.extend_from_slice(&ycbcr_to_rgb(y, cb, cr));
                }
            }
            _ => return Err(bad("component count")),
        }
        let (w, h) = (
            u32::try_from(out_w).map_err(bad)?,
            u32::try_from(out_h).map_err(bad)?,
        );
        Ok(Image::new(w, h, PixelLayout::Rgb8, data))
    }
}

/// JFIF YCbCr (BT.601, full range) to RGB in 16.16 fixed point.
fn ycbcr_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    let y = i32::from(y) << 16;
    let cb = i32::from(cb) - 128;
    let cr = i32::from(cr) - 128;
    let clamp = |v: i32| ((v + (1 << 15)) >> 16).clamp(0, 255) as u8;
    [
        clamp(y + 91_881 * cr),
        clamp(y - 22_554 * cb - 46_802 * cr),
        clamp(y + 116_130 * cb),
    ]
}

/// Upsamples a plane by integer factors with centre-aligned linear weights (for 2x: the 3/4,
/// 1/4 "triangle" filter libjpeg calls fancy upsampling), cropped to `out`.
fn upsample(
    plane: &[u8],
    size: (usize, usize),
    factor: (usize, usize),
    out: (usize, usize),
) -> Vec<u8> {
    if factor == (1, 1) && size == out {
        return plane.to_vec();
    }
    // Per output coordinate: the two source indexes and the weight of the second, in 1/256.
    let taps = |n_out: usize, n_in: usize, f: usize| -> Vec<(usize, usize, u32)> {
        (0..n_out)
            .map(|o| {
                let src = ((o as f64 + 0.5) / f as f64 - 0.5).clamp(0.0, (n_in - 1) as f64);
                let i0 = src.floor() as usize;
                let i1 = (i0 + 1).min(n_in - 1);
                (i0, i1, ((src - i0 as f64) * 256.0).round() as u32)
            })
            .collect()
    };
    let xs = taps(out.0, size.0, factor.0);
    let ys = taps(out.1, size.1, factor.1);
    let mut result = Vec::with_capacity(out.0 * out.1);
    let mut row = vec![0u32; out.0];
    for &(y0, y1, wy) in &ys {
        let (r0, r1) = (&plane[y0 * size.0..], &plane[y1 * size.0..]);
        for (acc, &(x0, x1, wx)) in row.iter_mut().zip(&xs) {
            let top = u32::from(r0[x0]) * (256 - wx) + u32::from(r0[x1]) * wx;
            let bottom = u32::from(r1[x0]) * (256 - wx) + u32::from(r1[x1]) * wx;
            *acc = top * (256 - wy) + bottom * wy;
        }
        result.extend(row.iter().map(|&v| ((v + (1 << 15)) >> 16) as u8));
    }
    result
}

// --- Segments -------------------------------------------------------------------------------

fn read_sof(
    s: &[u8],
    progressive: bool,
    expected: (u32, u32),
) -> Result<Option<Frame>, PipelineError> {
    if s.len() < 6 {
        return Err(bad("short frame header"));
    }
    if s[0] != 8 {
        return Ok(None); // 12-bit
    }
    let height = usize::from(u16::from_be_bytes([s[1], s[2]]));
    let width = usize::from(u16::from_be_bytes([s[3], s[4]]));
    if (width as u64, height as u64) != (u64::from(expected.0), u64::from(expected.1)) {
        return Err(bad("frame size differs from the probed size"));
    }
    if width == 0 || height == 0 {
        return Err(bad("zero-sized frame"));
    }
    let count = usize::from(s[5]);
    if !matches!(count, 1 | 3) || s.len() < 6 + 3 * count {
        return Ok(None);
    }
    let mut components = Vec::with_capacity(count);
    for raw in s[6..6 + 3 * count].chunks_exact(3) {
        let (h, v) = (usize::from(raw[1] >> 4), usize::from(raw[1] & 15));
        if !(1..=4).contains(&h) || !(1..=4).contains(&v) || raw[2] > 3 {
            return Err(bad("bad component sampling or table"));
        }
        components.push((raw[0], h, v, usize::from(raw[2])));
    }
    // Component ids 'R', 'G', 'B' mean RGB-coded (libjpeg's rule): not YCbCr.
    if components.iter().map(|c| c.0).eq(*b"RGB") {
        return Ok(None);
    }
    let h_max = components.iter().map(|c| c.1).max().unwrap_or(1);
    let v_max = components.iter().map(|c| c.2).max().unwrap_or(1);
    if components
        .iter()
        .any(|c| h_max % c.1 != 0 || v_max % c.2 != 0)
    {
        return Ok(None);
    }
    let mcus_x = width.div_ceil(8 * h_max);
    let mcus_y = height.div_ceil(8 * v_max);
    let components = components
        .into_iter()
        .map(|(id, h, v, quant_table)| {
            let (grid_w, grid_h) = (mcus_x * h, mcus_y * v);
            Component {
                id,
                h,
                v,
                quant_table,
                quant: None,
                grid_w,
                dc: vec![0; grid_w * grid_h],
                known_bit: None,
            }
        })
        .collect();
    Ok(Some(Frame {
        width,
        height,
        progressive,
        h_max,
        v_max,
        mcus_x,
        mcus_y,
        components,
    }))
}

fn read_dqt(mut s: &[u8], quant_dc: &mut [Option<u16>; 4]) -> Result<(), PipelineError> {
    while let Some((&pq_tq, rest)) = s.split_first() {
        let (wide, id) = (pq_tq >> 4, usize::from(pq_tq & 15));
        let size = if wide == 0 { 64 } else { 128 };
        if wide > 1 || id > 3 || rest.len() < size {
            return Err(bad("bad quantisation table"));
        }
        // Tables are in zigzag order: the first entry is the DC quantiser.
        quant_dc[id] = Some(if wide == 0 {
            u16::from(rest[0])
        } else {
            u16::from_be_bytes([rest[0], rest[1]])
        });
        s = &rest[size..];
    }
    Ok(())
}

fn read_dri(s: &[u8]) -> Result<usize, PipelineError> {
    match s {
        [hi, lo] => Ok(usize::from(u16::from_be_bytes([*hi, *lo]))),
        _ => Err(bad("bad restart interval")),
    }
}

fn read_dht(
    mut s: &[u8],
    dc: &mut [Option<Huffman>; 4],
    ac: &mut [Option<Huffman>; 4],
) -> Result<(), PipelineError> {
    while let Some((&tc_th, rest)) = s.split_first() {
        let (class, id) = (tc_th >> 4, usize::from(tc_th & 15));
        if class > 1 || id > 3 || rest.len() < 16 {
            return Err(bad("bad Huffman table"));
        }
        let counts: [u8; 16] = rest[..16].try_into().map_err(bad)?;
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        if total > 256 {
            return Err(bad("Huffman table of more than 256 codes"));
        }
        let values = rest
            .get(16..16 + total)
            .ok_or_else(|| bad("short Huffman table"))?;
        let table = Huffman::new(&counts, values)?;
        if class == 0 {
            dc[id] = Some(table);
        } else {
            ac[id] = Some(table);
        }
        s = &rest[16 + total..];
    }
    Ok(())
}

struct ScanComponent {
    index: usize,
    dc_table: usize,
    ac_table: usize,
}

struct Scan {
    components: Vec<ScanComponent>,
    start: u8,
    high: u8,
    low: u8,
}

fn read_sos(s: &[u8], frame: &Frame) -> Result<Scan, PipelineError> {
    let count = usize::from(*s.first().ok_or_else(|| bad("empty scan header"))?);
    if !(1..=4).contains(&count) || s.len() != 1 + 2 * count + 3 {
        return Err(bad("bad scan header"));
    }
    let mut components: Vec<ScanComponent> = Vec::with_capacity(count);
    for raw in s[1..1 + 2 * count].chunks_exact(2) {
        let index = frame
            .components
            .iter()
            .position(|c| c.id == raw[0])
            .ok_or_else(|| bad("scan names an unknown component"))?;
        if components.iter().any(|c| c.index == index) {
            return Err(bad("scan names a component twice"));
        }
        let (dc_table, ac_table) = (usize::from(raw[1] >> 4), usize::from(raw[1] & 15));
        if dc_table > 3 || ac_table > 3 {
            return Err(bad("bad scan table selector"));
        }
        components.push(ScanComponent {
            index,
            dc_table,
            ac_table,
        });
    }
    // T.81 B.2.3: at most 10 blocks in an interleaved MCU.
    let blocks: usize = components
        .iter()
        .map(|c| frame.components[c.index].h * frame.components[c.index].v)
        .sum();
    if count > 1 && blocks > 10 {
        return Err(bad("more than 10 blocks per MCU"));
    }
    let tail = &s[1 + 2 * count..];
    let (start, end, high, low) = (tail[0], tail[1], tail[2] >> 4, tail[2] & 15);
    let valid = if frame.progressive {
        // DC scans hold only coefficient 0; AC scans one component.
        start <= end && end <= 63 && (start == 0) == (end == 0) && (start == 0 || count == 1)
    } else {
        start == 0 && end == 63 && high == 0 && low == 0
    };
    if !valid || low > 13 || high > 13 {
        return Err(bad("bad spectral selection"));
    }
    Ok(Scan {
        components,
        start,
        high,
        low,
    })
}

/// The position of the first marker at or after `at` that is neither a stuffed 0xFF nor a
/// restart marker: the end of a scan's entropy-coded data. AC scans are skipped this way.
fn skip_entropy_data(bytes: &[u8], mut at: usize) -> usize {
    while let Some(offset) = memchr::memchr(0xFF, &bytes[at.min(bytes.len())..]) {
        let ff = at + offset;
        let mut next = ff + 1;
        while bytes.get(next) == Some(&0xFF) {
            next += 1;
        }
        match bytes.get(next) {
            Some(0x00 | 0xD0..=0xD7) => at = next + 1,
            // A marker (or the end of the file, which `segment_at` reports).
            _ => return next - 1,
        }
    }
    bytes.len()
}

/// Finds the restart marker ending an interval at or after `at`, which must be RST`number`
/// (they count 0 to 7 and wrap); returns the position after it.
fn restart(bytes: &[u8], at: usize, number: usize) -> Result<usize, PipelineError> {
    let offset = memchr::memchr(0xFF, &bytes[at.min(bytes.len())..])
        .ok_or_else(|| bad("truncated before a restart marker"))?;
    let mut next = at + offset + 1;
    // Stuffed bytes here would be data past the interval's end; fill bytes are allowed.
    while bytes.get(next) == Some(&0xFF) {
        next += 1;
    }
    match bytes.get(next) {
        Some(&m) if usize::from(m) == 0xD0 + number => Ok(next + 1),
        _ => Err(bad("expected the next restart marker")),
    }
}

/// Reads past one block's AC coefficients (sequential JPEGs).
fn skip_ac(bits: &mut Bits, table: &Huffman) -> Result<(), PipelineError> {
    let mut k = 1;
    while k < 64 {
        bits.refill();
        let rs = table.decode(bits)?;
        let (run, size) = (usize::from(rs >> 4), u32::from(rs & 15));
        if size == 0 {
            if run != 15 {
                return Ok(()); // end of block
            }
            k += 16;
            continue;
        }
        bits.consume(size);
        k += run + 1;
    }
    if k > 64 {
        return Err(bad("AC coefficients past the block's end"));
    }
    Ok(())
}

// --- Entropy decoding -----------------------------------------------------------------------

/// Bits of entropy-coded data, most significant first, with 0xFF00 unstuffed. At a marker or
/// the end of the data it feeds zeros and counts them, so a scan that needed them is found
/// truncated afterwards (`overran`) instead of checking on every read.
struct Bits<'a> {
    bytes: &'a [u8],
    pos: usize,
    acc: u64,
    count: u32,
    zeros: u32,
}

impl<'a> Bits<'a> {
    fn new(bytes: &'a [u8], pos: usize) -> Bits<'a> {
        Bits {
            bytes,
            pos,
            acc: 0,
            count: 0,
            zeros: 0,
        }
    }

    /// Tops the buffer up to at least 57 bits: enough for a code (16) and its extra bits (16).
    #[inline]
    fn refill(&mut self) {
        while self.count <= 56 {
            let byte = match self.bytes.get(self.pos) {
                Some(&0xFF) if self.zeros == 0 && self.bytes.get(self.pos + 1) == Some(&0) => {
                    self.pos += 2;
                    0xFF
                }
                // Any other 0xFF is a marker: the data ends here.
                Some(&b) if self.zeros == 0 && b != 0xFF => {
                    self.pos += 1;
                    b
                }
                _ => {
                    self.zeros += 8;
                    0
                }
            };
            self.acc |= u64::from(byte) << (56 - self.count);
            self.count += 8;
        }
    }

    #[inline]
    fn peek(&self, n: u32) -> u32 {
        (self.acc >> (64 - n)) as u32
    }

    #[inline]
    fn consume(&mut self, n: u32) {
        self.acc <<= n;
        self.count -= n;
    }

    #[inline]
    fn take(&mut self, n: u32) -> u32 {
        let v = self.peek(n);
        self.consume(n);
        v
    }

    /// The JPEG `RECEIVE` + `EXTEND` of a `size`-bit signed difference.
    #[inline]
    fn extend(&mut self, size: u32) -> i32 {
        if size == 0 {
            return 0;
        }
        let v = self.take(size) as i32;
        if v < 1 << (size - 1) {
            v - (1 << size) + 1
        } else {
            v
        }
    }

    /// Whether the decoding used bits past the end of the data.
    fn overran(&self) -> bool {
        self.count < self.zeros
    }
}

const LOOKUP_BITS: u32 = 9;

/// A canonical Huffman table: codes up to 9 bits by one lookup, longer ones by `max_code`.
struct Huffman {
    /// `length << 8 | value`, 0 for codes longer than the lookup.
    lookup: Box<[u16; 1 << LOOKUP_BITS]>,
    max_code: [i32; 17],
    value_offset: [i32; 17],
    values: Vec<u8>,
}

impl Huffman {
    fn new(counts: &[u8; 16], values: &[u8]) -> Result<Huffman, PipelineError> {
        let mut lookup = Box::new([0u16; 1 << LOOKUP_BITS]);
        let mut max_code = [-1i32; 17];
        let mut value_offset = [0i32; 17];
        let (mut code, mut k) = (0u32, 0usize);
        for len in 1..=16u32 {
            let count = u32::from(counts[len as usize - 1]);
            value_offset[len as usize] = k as i32 - code as i32;
            for _ in 0..count {
                if code >= 1 << len {
                    return Err(bad("over-subscribed Huffman table"));
                }
                if len <= LOOKUP_BITS {
                    let shift = LOOKUP_BITS - len;
                    let entry = (len as u16) << 8 | u16::from(values[k]);
                    let first = (code << shift) as usize;
                    lookup[first..first + (1 << shift)].fill(entry);
                }
                code += 1;
                k += 1;
            }
            if count > 0 {
                max_code[len as usize] = code as i32 - 1;
            }
            code <<= 1;
        }
        Ok(Huffman {
            lookup,
            max_code,
            value_offset,
            values: values.to_vec(),
        })
    }

    /// Decodes one symbol; the caller has refilled `bits`.
    #[inline]
    fn decode(&self, bits: &mut Bits) -> Result<u8, PipelineError> {
        let entry = self.lookup[bits.peek(LOOKUP_BITS) as usize];
        if entry != 0 {
            bits.consume(u32::from(entry >> 8));
            return Ok(entry as u8);
        }
        for len in LOOKUP_BITS + 1..=16 {
            let code = bits.peek(len) as i32;
            if code <= self.max_code[len as usize] {
                bits.consume(len);
                let index = code + self.value_offset[len as usize];
                return usize::try_from(index)
                    .ok()
                    .and_then(|i| self.values.get(i).copied())
                    .ok_or_else(|| bad("bad Huffman code"));
            }
        }
        Err(bad("bad Huffman code"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::probe::probe;
    use super::super::super::spec::Limits;
    use super::super::test_support::fixture;
    use super::*;

    /// The full decode reduced by 8x8 box averages over the real pixels (partial blocks at the
    /// right and bottom edges average what they have): what the DC image should show.
    fn box_reduced(rel: &str) -> Image {
        let bytes = fixture(rel);
        let limits = Limits::default();
        let info = probe(&bytes, &limits).expect("probe");
        let full = super::super::decode(&bytes, &info, &limits, Default::default()).expect("full");
        assert_eq!(full.layout, PixelLayout::Rgb8);
        let (w, h) = (full.width as usize, full.height as usize);
        let (ow, oh) = (w.div_ceil(8), h.div_ceil(8));
        let mut data = Vec::with_capacity(ow * oh * 3);
        for by in 0..oh {
            for bx in 0..ow {
                let mut sum = [0u32; 3];
                let mut n = 0;
                for y in by * 8..(by * 8 + 8).min(h) {
                    for x in bx * 8..(bx * 8 + 8).min(w) {
                        let p = &full.data[(y * w + x) * 3..][..3];
                        sum.iter_mut().zip(p).for_each(|(s, &v)| *s += u32::from(v));
                        n += 1;
                    }
                }
                data.extend(sum.map(|s| ((s + n / 2) / n) as u8));
            }
        }
        Image::new(ow as u32, oh as u32, PixelLayout::Rgb8, data)
    }

    fn dc_decode(rel: &str) -> Result<Option<Image>, PipelineError> {
        let bytes = fixture(rel);
        let info = probe(&bytes, &Limits::default()).expect("probe");
        decode(&bytes, (info.width, info.height))
    }

    /// BT.601 luma of an Rgb8 image, as a one-channel buffer in an Image.
    fn luma(image: &Image) -> Image {
        let data: Vec<u8> = image
            .data
            .chunks_exact(3)
            .flat_map(|p| {
                let y = 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]);
                [y.round() as u8; 3]
            })
            .collect();
        Image::new(image.width, image.height, PixelLayout::Rgb8, data)
    }

    /// (mean, max) absolute difference over every channel of every pixel.
    fn difference(a: &Image, b: &Image) -> (f64, u8) {
        assert_eq!((a.width, a.height), (b.width, b.height));
        let diffs = a.data.iter().zip(&b.data).map(|(&x, &y)| x.abs_diff(y));
        let (sum, max) = diffs.fold((0u64, 0u8), |(s, m), d| (s + u64::from(d), m.max(d)));
        (sum as f64 / a.data.len() as f64, max)
    }

    #[test]
    fn dc_image_matches_the_box_reduced_full_decode() {
        // (fixture, what it covers)
        // (fixture, what it covers, largest mean difference allowed: luma, RGB)
        let photo = (0.5, 4.0);
        let cases = [
            ("photos/dune.jpg", "progressive 4:2:2", photo),
            ("photos/elephants.jpg", "baseline 4:4:4", photo),
            ("photos/ladybird.jpg", "baseline 4:2:0", photo),
            (
                "jpeg_dc/ladybird_progressive_restart.jpg",
                "progressive, restarts",
                photo,
            ),
            (
                "jpeg_dc/ladybird_odd_progressive.jpg",
                "progressive, 1003x749",
                photo,
            ),
            (
                "jpeg_dc/ladybird_gray_progressive.jpg",
                "progressive gray",
                photo,
            ),
            (
                "jpeg_dc/ladybird_odd_restart.jpg",
                "baseline, 999x601, restarts",
                photo,
            ),
            (
                "jpeg_dc/ladybird_dc_per_component.jpg",
                "progressive, a DC scan per component, refinements after the AC scans",
                photo,
            ),
            // Saturated quadrants 64x48: 4:2:0 chroma is one DC per 16x16 here, so colour
            // edges bleed into luma after clamping.
            (
                "formats/jpeg_non_interleaved.jpg",
                "baseline, one scan per component",
                (4.0, 32.0),
            ),
            (
                "formats/jpeg_progressive.jpg",
                "progressive 4:4:4, 64x48",
                (0.5, 1.0),
            ),
        ];
        for (rel, what, (luma_limit, rgb_limit)) in cases {
            let dc = dc_decode(rel)
                .unwrap_or_else(|e| panic!("{rel}: {e}"))
                .unwrap_or_else(|| panic!("{rel}: not handled"));
            let reference = box_reduced(rel);
            // Luma is the block mean up to rounding (and clamping at extremes); chroma comes
            // from the chroma DC grid, upsampled, so it is softer than the full decode's.
            let (luma_mean, luma_max) = difference(&luma(&dc), &luma(&reference));
            let (mean, _) = difference(&dc, &reference);
            assert!(
                luma_mean < luma_limit && luma_max < 40 && mean < rgb_limit,
                "{rel} ({what}): luma mean {luma_mean:.2}, max {luma_max}; RGB mean {mean:.2}"
            );
        }
    }

    #[test]
    fn files_it_does_not_handle_answer_none() {
        for rel in ["formats/jpeg_cmyk.jpg", "formats/jpeg_ycck.jpg"] {
            assert!(dc_decode(rel).expect(rel).is_none(), "{rel}");
        }
        let bytes = fixture("formats/jpeg_baseline.jpg");
        let sof = bytes
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .expect("SOF0");
        assert!(decode(&bytes, (64, 48)).expect("baseline").is_some());
        // 12-bit samples.
        let mut twelve = bytes.clone();
        twelve[sof + 4] = 12;
        assert!(decode(&twelve, (64, 48)).expect("12-bit").is_none());
        // Arithmetic coding (SOF9) and lossless (SOF3).
        for marker in [0xC9, 0xC3] {
            let mut other = bytes.clone();
            other[sof + 1] = marker;
            assert!(
                decode(&other, (64, 48)).expect("SOF").is_none(),
                "{marker:x}"
            );
        }
    }

    #[test]
    fn restart_markers_must_come_in_sequence() {
        let bytes = fixture("jpeg_dc/ladybird_odd_restart.jpg");
        assert!(decode(&bytes, (999, 601)).is_ok());
        // The first restart marker (RST0) relabelled RST1: an interval went missing.
        let first = bytes
            .windows(2)
            .position(|w| w[0] == 0xFF && (0xD0..=0xD7).contains(&w[1]))
            .expect("a restart marker");
        assert_eq!(bytes[first + 1], 0xD0);
        let mut skipped = bytes.clone();
        skipped[first + 1] = 0xD1;
        assert!(decode(&skipped, (999, 601)).is_err());
    }

    #[test]
    fn damaged_files_are_corrupt_never_a_panic() {
        let bytes = fixture("jpeg_dc/ladybird_progressive_restart.jpg");
        let size = (1200, 750);
        // Truncated anywhere, even in an AC scan this decoder only skips: refused, because
        // the full decoder refuses it too.
        for cut in (0..bytes.len())
            .step_by(997)
            .chain([bytes.len() - 2, bytes.len() - 1])
        {
            assert!(
                decode(&bytes[..cut], size).is_err(),
                "cut at {cut} of {}",
                bytes.len()
            );
        }
        // Flipped bytes anywhere: an answer, never a panic, never a wrong-sized image.
        let mut damaged = bytes.clone();
        for at in (20..bytes.len()).step_by(131) {
            damaged[at] ^= 0x5A;
            if let Ok(Some(image)) = decode(&damaged, size) {
                assert_eq!((image.width, image.height), (150, 94));
            }
            damaged[at] = bytes[at];
        }
        // A frame that disagrees with the probed size is refused before allocating.
        assert!(decode(&bytes, (1200, 751)).is_err());
    }

    #[test]
    fn over_subscribed_huffman_table_is_refused() {
        let mut counts = [0u8; 16];
        counts[0] = 3; // three 1-bit codes
        assert!(Huffman::new(&counts, &[1, 2, 3]).is_err());
        counts[0] = 2;
        assert!(Huffman::new(&counts, &[1, 2]).is_ok());
    }
}
