//! JPEG decoded at 1/2, 1/4 or 1/8 scale, doing only the work the smaller picture needs
//! (shrink-on-load).
//!
//! Under DCT scaling (libjpeg's `scale_denom`) an 8x8 block becomes an NxN block (N is 4, 2
//! or 1) through an N-point inverse DCT of its top-left NxN coefficients; the other
//! coefficients are never needed. So:
//! - a sequential (baseline) file is Huffman-decoded in full, because the format interleaves
//!   every coefficient, but only the kept coefficients are stored (16, 4 or 1 per block
//!   instead of 64) and transformed; nothing is transformed, upsampled or colour-converted at
//!   full size;
//! - a progressive file is read scan by scan, and a scan is Huffman-decoded only when it is a
//!   first pass carrying a kept coefficient, or a DC refinement (one bit per block). Every other
//!   scan (AC bands above the kept ones, and the AC refinement scans, which hold half to three
//!   quarters of a real file's bytes) is skipped by looking for the marker that ends it. A
//!   coefficient whose refinement was skipped lacks its last bit or two; it is reconstructed
//!   at the middle of the interval it is known to lie in, and the loss is within what the
//!   downscale after it averages away (the reserve in `jpeg.rs`, chosen by measurement).
//!
//! Subsampled chroma takes a larger transform where it can (4:2:0 at 1/4: a 4x4 chroma IDCT
//! lands on the luma grid, as libjpeg does), capped at 4x4; what is left is upsampled with
//! triangle (libjpeg's "fancy") weights. At 1/8 chroma stays DC-only, so no AC scan of a
//! progressive file is read at all.
//!
//! The memory kept follows the reduced picture: N*N coefficients per block, never 64.
//!
//! Used for 8-bit Huffman-coded files with 1, 3 or 4 components and power-of-two sampling
//! ratios; everything else answers `None`. The caller sends every refusal and every error here
//! to the full decoder, so what a client sees is always the full decoder's verdict. The file
//! is walked to its EOI, so a truncated file is refused; corrupt data inside a skipped scan is
//! not seen. Colour is the caller's: this returns one plane per component.

use super::super::PipelineError;
use super::super::probe::jpeg_segment as segment_at;
use super::super::spec::SourceFormat;
use super::corrupt;

/// One plane per frame component, in frame order, each `width * height` samples on the reduced
/// luma grid (`ceil(w / d)` x `ceil(h / d)` for the denominator `d`).
pub(super) struct Planes {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) planes: Vec<Vec<u8>>,
}

/// Decodes `bytes` at 1/`denominator` scale (2, 4 or 8), or `None` when this file is not one
/// this decoder handles. `expected` is the probed size: the frame must match it, so nothing is
/// allocated from a header the limits did not check.
pub(super) fn decode(
    bytes: &[u8],
    expected: (u32, u32),
    denominator: u32,
) -> Result<Option<Planes>, PipelineError> {
    let size = match denominator {
        2 => 4,
        4 => 2,
        8 => 1,
        _ => return Ok(None),
    };
    let Some(mut state) = Decoder::new(bytes, expected, size)? else {
        return Ok(None);
    };
    state.run()?;
    state.into_planes().map(Some)
}

/// The lowest bit an AC refinement scan is decoded down to (at 1/2; at 1/4 and 1/8 none is).
/// The last bit's scans cost as much as the others and, measured on the comparison corpus,
/// moved the output's DSSIM by under 1 % where the first refinement moved it by 5 to 8 %
/// (benches/RESULTS.md, "Reduced-scale JPEG decode").
const REFINE_DOWN_TO: u8 = 1;

fn bad(why: impl std::fmt::Display) -> PipelineError {
    corrupt(SourceFormat::Jpeg, why)
}

/// Zigzag index to natural (row-major 8x8) index (T.81 figure A.6).
const ZIGZAG: [u8; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

const NOT_KEPT: u8 = u8::MAX;

/// Where a coefficient whose last `low` bits were skipped is placed in the interval of width
/// `2^low - 1` it is known to lie in, as a fraction from its lower end. AC coefficients are
/// roughly Laplacian, so their values crowd the lower end; on the test photos a quarter gave
/// the smallest error against the full decode (0 and a half were both worse at 1/2 and 1/4).
const SKIPPED_BITS_OFFSET: f32 = 0.25;

/// One frame component and the coefficients it keeps.
struct Component {
    id: u8,
    h: usize,
    v: usize,
    quant_table: usize,
    /// Quantisers in zigzag order, latched when the component's first scan starts (as libjpeg
    /// does).
    quant: Option<[u16; 64]>,
    /// Transform size: each 8x8 block becomes `n` x `n` samples.
    n: usize,
    /// Per zigzag index, the coefficient's place in a kept block (`row * n + col`), or
    /// `NOT_KEPT`.
    slot: [u8; 64],
    /// The highest kept zigzag index.
    last_kept: usize,
    /// Blocks per row of the MCU-padded grid.
    grid_w: usize,
    /// Kept coefficients, `n * n` per block, block rows of the padded grid in order.
    coefs: Vec<i16>,
    /// Per zigzag index, the lowest bit known so far (`None`: no scan carried it yet).
    known: [Option<u8>; 64],
    /// Per block, which AC coefficients (bit = zigzag index) are nonzero so far, kept or not:
    /// what decoding an AC refinement scan needs. Empty unless refinements are decoded.
    nonzero: Vec<u64>,
}

struct Frame {
    width: usize,
    height: usize,
    progressive: bool,
    /// The luma transform size (8 / denominator).
    n: usize,
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
    quant: [Option<[u16; 64]>; 4],
    restart_interval: usize,
    /// `REFINE_DOWN_TO`, or 0 for the tests that check refinement decoding bit-exactly.
    refine_down_to: u8,
}

/// Per-scan decoding state, reset at every restart marker.
#[derive(Default)]
struct ScanState {
    predictors: [i32; 4],
    eob_run: u32,
}

/// The segments before the frame header, the frame header itself.
impl<'a> Decoder<'a> {
    fn new(
        bytes: &'a [u8],
        expected: (u32, u32),
        n: usize,
    ) -> Result<Option<Decoder<'a>>, PipelineError> {
        if bytes.get(..2) != Some(&[0xFF, 0xD8]) {
            return Err(bad("no SOI"));
        }
        let mut dc_tables = [None, None, None, None];
        let mut ac_tables = [None, None, None, None];
        let mut quant = [None; 4];
        let mut restart_interval = 0;
        let mut at = 2;
        loop {
            let (marker, segment, next) = segment_at(bytes, at)?;
            at = next;
            match marker {
                0xC4 => read_dht(segment, &mut dc_tables, &mut ac_tables)?,
                0xDB => read_dqt(segment, &mut quant)?,
                0xDD => restart_interval = read_dri(segment)?,
                // Baseline, extended sequential, progressive; all Huffman-coded.
                0xC0..=0xC2 => {
                    let Some(frame) = read_sof(segment, marker == 0xC2, expected, n)? else {
                        return Ok(None);
                    };
                    return Ok(Some(Decoder {
                        bytes,
                        at,
                        frame,
                        dc_tables,
                        ac_tables,
                        quant,
                        restart_interval,
                        refine_down_to: REFINE_DOWN_TO,
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
                0xDB => read_dqt(segment, &mut self.quant)?,
                0xDD => self.restart_interval = read_dri(segment)?,
                0xDA => {
                    let scan = read_sos(segment, &self.frame)?;
                    self.at = if self.needs(&scan) {
                        self.decode_scan(&scan)?
                    } else {
                        skip_entropy_data(self.bytes, self.at)
                    };
                }
                0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                    return Err(bad("second frame header"));
                }
                _ => {}
            }
        }
        for c in &self.frame.components {
            if c.known[0].is_none() {
                return Err(bad(format!("no DC scan for component {}", c.id)));
            }
        }
        Ok(())
    }

    /// Whether a scan carries bits of kept coefficients that are worth reading: every
    /// sequential scan; progressive DC scans until the DC is complete; progressive AC first
    /// passes whose band starts at or below a kept coefficient. AC refinements never are.
    fn needs(&self, scan: &Scan) -> bool {
        let component = |s: &ScanComponent| &self.frame.components[s.index];
        if !self.frame.progressive {
            return true;
        }
        if scan.start == 0 {
            return scan
                .components
                .iter()
                .any(|s| component(s).known[0] != Some(0));
        }
        let band = usize::from(scan.start)..=usize::from(scan.end);
        scan.components.iter().any(|s| {
            let c = component(s);
            let kept = usize::from(scan.start) <= c.last_kept;
            if scan.high == 0 {
                return kept;
            }
            // Refinements down to `refine_down_to` are decoded at 1/2 (where `nonzero`
            // exists); a refinement needs every first pass of its band decoded (it refines
            // the coefficients they made nonzero).
            kept && scan.low >= self.refine_down_to
                && !c.nonzero.is_empty()
                && band.clone().all(|k| c.known[k].is_some())
        })
    }

    /// Decodes one scan; returns the position of the marker that ends it.
    fn decode_scan(&mut self, scan: &Scan) -> Result<usize, PipelineError> {
        let progressive = self.frame.progressive;
        let (start, end) = (usize::from(scan.start), usize::from(scan.end));
        let refine = progressive && scan.high != 0;
        // Latch quantisers and check the successive-approximation sequence per component.
        for s in &scan.components {
            let c = &mut self.frame.components[s.index];
            if c.quant.is_none() {
                c.quant = Some(
                    self.quant[c.quant_table]
                        .ok_or_else(|| bad("scan before its quantisation table"))?,
                );
            }
            let fits = |k: usize| match (c.known[k], refine) {
                (None, false) => true,
                (Some(known), true) => known == scan.high && scan.low + 1 == scan.high,
                _ => false,
            };
            if !(start..=end).all(fits) || (start > 0 && c.known[0].is_none()) {
                return Err(bad("scans out of sequence"));
            }
            let dc_needed = start == 0 && !refine;
            let ac_needed = end > 0;
            if (dc_needed && self.dc_tables[s.dc_table].is_none())
                || (ac_needed && self.ac_tables[s.ac_table].is_none())
            {
                return Err(bad("scan uses an undefined Huffman table"));
            }
        }
        // Tables per scan component (checked above).
        let dc: Vec<Option<&Huffman>> = scan
            .components
            .iter()
            .map(|s| self.dc_tables[s.dc_table].as_ref())
            .collect();
        let ac: Vec<Option<&Huffman>> = scan
            .components
            .iter()
            .map(|s| self.ac_tables[s.ac_table].as_ref())
            .collect();
        fn table(t: Option<&Huffman>) -> Result<&Huffman, PipelineError> {
            t.ok_or_else(|| bad("no Huffman table"))
        }
        let low = u32::from(scan.low);
        let walk = Walk {
            bytes: self.bytes,
            at: self.at,
            restart_interval: self.restart_interval,
        };
        let frame = &mut self.frame;
        let data_end = match (progressive, start, refine) {
            (false, _, _) => walk.blocks(frame, scan, |bits, state, i, c, block| {
                let base = block * c.n * c.n;
                c.coefs[base] = decode_dc(bits, table(dc[i])?, &mut state.predictors[i])? as i16;
                decode_ac(bits, table(ac[i])?, c, base, (1, 63), 0, None)
            })?,
            (true, 0, false) => walk.blocks(frame, scan, |bits, state, i, c, block| {
                let dc = decode_dc(bits, table(dc[i])?, &mut state.predictors[i])?;
                c.coefs[block * c.n * c.n] = dc.wrapping_shl(low) as i16;
                Ok(())
            })?,
            (true, 0, true) => walk.blocks(frame, scan, |bits, _, _, c, block| {
                if bits.take(1) == 1 {
                    c.coefs[block * c.n * c.n] |= 1 << low;
                }
                Ok(())
            })?,
            (true, _, false) => walk.blocks(frame, scan, |bits, state, i, c, block| {
                if state.eob_run > 0 {
                    state.eob_run -= 1;
                    return Ok(());
                }
                let base = block * c.n * c.n;
                let eob_run = Some(&mut state.eob_run);
                decode_ac(bits, table(ac[i])?, c, base, (start, end), low, eob_run)
            })?,
            (true, _, true) => walk.blocks(frame, scan, |bits, state, i, c, block| {
                refine_ac(
                    bits,
                    table(ac[i])?,
                    c,
                    block,
                    (start, end),
                    low,
                    &mut state.eob_run,
                )
            })?,
        };
        for s in &scan.components {
            let c = &mut frame.components[s.index];
            c.known[start..=end].fill(Some(scan.low));
        }
        Ok(data_end)
    }

    /// Transforms the kept coefficients into planes on the reduced luma grid.
    fn into_planes(self) -> Result<Planes, PipelineError> {
        let frame = self.frame;
        let out_w = (frame.width * frame.n).div_ceil(8);
        let out_h = (frame.height * frame.n).div_ceil(8);
        let planes = frame
            .components
            .iter()
            .map(|c| {
                // The component's own size in full-scale samples, and at its transform size.
                let comp_w = (frame.width * c.h).div_ceil(frame.h_max);
                let comp_h = (frame.height * c.v).div_ceil(frame.v_max);
                let plane = transform(c, (comp_w, comp_h));
                let plane_size = ((comp_w * c.n).div_ceil(8), (comp_h * c.n).div_ceil(8));
                let factor = (
                    frame.n * frame.h_max / (c.h * c.n),
                    frame.n * frame.v_max / (c.v * c.n),
                );
                upsample(plane, plane_size, factor, (out_w, out_h))
            })
            .collect();
        Ok(Planes {
            width: u32::try_from(out_w).map_err(bad)?,
            height: u32::try_from(out_h).map_err(bad)?,
            planes,
        })
    }
}

/// One block's DC difference added to its predictor; returns the new DC value.
#[inline(always)]
fn decode_dc(bits: &mut Bits, table: &Huffman, predictor: &mut i32) -> Result<i32, PipelineError> {
    let size = table.decode(bits)?;
    if size > 11 {
        return Err(bad("DC difference wider than 11 bits"));
    }
    *predictor = predictor.wrapping_add(bits.extend(u32::from(size)));
    Ok(*predictor)
}

/// One block's AC coefficients in the band `start..=end`, shifted up by `low` (a progressive
/// first pass), keeping those the component keeps. `eob_run` is a progressive scan's
/// end-of-band run, which an end-of-band code sets; `None` for a sequential scan, whose
/// end-of-block code ends this block only.
#[inline(always)]
fn decode_ac(
    bits: &mut Bits,
    table: &Huffman,
    c: &mut Component,
    base: usize,
    (start, end): (usize, usize),
    low: u32,
    mut eob_run: Option<&mut u32>,
) -> Result<(), PipelineError> {
    let mut k = start;
    while k <= end {
        bits.refill();
        let (run, value) = match bits.fast_ac(table) {
            Some(coefficient) => coefficient,
            None => {
                let rs = table.decode(bits)?;
                let (run, size) = (u32::from(rs >> 4), u32::from(rs & 15));
                if size == 0 && run == 15 {
                    k += 16; // sixteen zeros
                    continue;
                }
                if size == 0 {
                    match eob_run.as_deref_mut() {
                        None if run == 0 => {}
                        None => return Err(bad("end-of-band run in a sequential scan")),
                        // This block and 2^run - 1 + the next `run` bits more.
                        Some(eob_run) => *eob_run = (1 << run) - 1 + bits.take_up_to(run),
                    }
                    return Ok(());
                }
                (run as usize, bits.extend(size))
            }
        };
        k += run;
        if k > end {
            return Err(bad("AC coefficients past the band's end"));
        }
        let slot = c.slot[k];
        if slot != NOT_KEPT {
            c.coefs[base + usize::from(slot)] = value.wrapping_shl(low) as i16;
        }
        if let Some(mask) = c.nonzero.get_mut(base / (c.n * c.n)) {
            *mask |= 1 << k;
        }
        k += 1;
    }
    if k > end + 1 {
        return Err(bad("AC coefficients past the band's end"));
    }
    Ok(())
}

/// One block of an AC refinement scan (T.81 G.1.2.3): a correction bit for every coefficient
/// of the band that is already nonzero, and new coefficients of magnitude `1 << low` placed
/// among the zero ones. `eob_run` counts the blocks left in an end-of-band run; a block in
/// the run still carries its correction bits.
#[inline(always)]
fn refine_ac(
    bits: &mut Bits,
    table: &Huffman,
    c: &mut Component,
    block: usize,
    (start, end): (usize, usize),
    low: u32,
    eob_run: &mut u32,
) -> Result<(), PipelineError> {
    let base = block * c.n * c.n;
    let bit = 1i16.wrapping_shl(low);
    let mut mask = *c
        .nonzero
        .get(block)
        .ok_or_else(|| bad("refinement without a first pass"))?;
    // Bits k..=end of a mask.
    let from = |k: usize| {
        if k > end {
            0
        } else {
            (u64::MAX << k) & (u64::MAX >> (63 - end))
        }
    };
    let mut k = start;
    if *eob_run == 0 {
        while k <= end {
            bits.refill();
            let rs = table.decode(bits)?;
            let (run, size) = (u32::from(rs >> 4), rs & 15);
            let value = match size {
                0 if run != 15 => {
                    *eob_run = (1 << run) + bits.take_up_to(run);
                    break;
                }
                0 => 0,
                1 => {
                    if bits.take(1) == 1 {
                        bit
                    } else {
                        -bit
                    }
                }
                _ => return Err(bad("refinement coefficient wider than one bit")),
            };
            // The target is the (run + 1)-th zero coefficient from k; the nonzero ones before
            // it get their correction bits.
            let mut zeros = !mask & from(k);
            for _ in 0..run {
                zeros &= zeros.wrapping_sub(1);
            }
            if zeros == 0 {
                // The band ends first.
                correct(bits, c, base, bit, mask & from(k));
                if value != 0 {
                    return Err(bad("refinement coefficient past the band's end"));
                }
                k = end + 1;
                break;
            }
            let target = zeros.trailing_zeros() as usize;
            correct(bits, c, base, bit, mask & from(k) & !from(target));
            if value != 0 {
                let slot = c.slot[target];
                if slot != NOT_KEPT {
                    c.coefs[base + usize::from(slot)] = value;
                }
                mask |= 1 << target;
            }
            k = target + 1;
        }
    }
    if *eob_run > 0 {
        if k <= end {
            correct(bits, c, base, bit, mask & from(k));
        }
        *eob_run -= 1;
    }
    c.nonzero[block] = mask;
    Ok(())
}

/// Correction bits of an AC refinement for the nonzero coefficients in `targets` (bit =
/// zigzag index), in zigzag order: each sets bit `bit` of its coefficient's magnitude.
#[inline(always)]
fn correct(bits: &mut Bits, c: &mut Component, base: usize, bit: i16, mut targets: u64) {
    while targets != 0 {
        let k = targets.trailing_zeros() as usize;
        targets &= targets - 1;
        bits.refill();
        if bits.take(1) == 1 {
            let slot = c.slot[k];
            if slot != NOT_KEPT {
                let coef = &mut c.coefs[base + usize::from(slot)];
                if *coef & bit == 0 {
                    *coef = if *coef >= 0 { *coef + bit } else { *coef - bit };
                }
            }
        }
    }
}

/// Where a scan's entropy-coded data starts and how it is cut by restart markers.
struct Walk<'a> {
    bytes: &'a [u8],
    at: usize,
    restart_interval: usize,
}

impl Walk<'_> {
    /// Calls `block(bits, state, scan component, component, block index)` for every block of
    /// the scan in coding order, handling restart intervals; returns the position of the
    /// marker that ends the scan.
    fn blocks<F>(
        &self,
        frame: &mut Frame,
        scan: &Scan,
        mut block: F,
    ) -> Result<usize, PipelineError>
    where
        F: FnMut(
            &mut Bits,
            &mut ScanState,
            usize,
            &mut Component,
            usize,
        ) -> Result<(), PipelineError>,
    {
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
        let mut bits = Bits::new(self.bytes, self.at);
        let mut state = ScanState::default();
        for unit in 0..units_x * units_y {
            if self.restart_interval > 0 && unit > 0 && unit % self.restart_interval == 0 {
                if bits.overran() {
                    return Err(bad("truncated restart interval"));
                }
                let expected = (unit / self.restart_interval - 1) % 8;
                bits = Bits::new(self.bytes, restart(self.bytes, bits.pos, expected)?);
                state = ScanState::default();
            }
            let (ux, uy) = (unit % units_x, unit / units_x);
            for (i, s) in scan.components.iter().enumerate() {
                let c = &mut frame.components[s.index];
                let (bw, bh) = if single { (1, 1) } else { (c.h, c.v) };
                for v in 0..bh {
                    for h in 0..bw {
                        let index = (uy * bh + v) * c.grid_w + ux * bw + h;
                        bits.refill();
                        block(&mut bits, &mut state, i, c, index)?;
                    }
                }
            }
        }
        if bits.overran() {
            return Err(bad("truncated scan"));
        }
        Ok(skip_entropy_data(self.bytes, bits.pos))
    }
}

/// The component's plane at its transform size (`ceil(comp_w * n / 8)` x ...), from its kept
/// coefficients.
fn transform(c: &Component, (comp_w, comp_h): (usize, usize)) -> Vec<u8> {
    // Dequantiser and reconstruction offset per kept place. A coefficient known down to bit
    // `low` > 0 lies in an interval 2^low wide, away from zero for AC (coded as magnitudes),
    // upwards for DC (an arithmetic shift); see `SKIPPED_BITS_OFFSET` for where in it.
    let quant = c.quant.unwrap_or([1; 64]);
    let mut scale = [0f32; 16];
    let mut offset = [0f32; 16];
    for (k, &slot) in c.slot.iter().enumerate() {
        if slot != NOT_KEPT {
            let slot = usize::from(slot);
            scale[slot] = f32::from(quant[k]);
            offset[slot] = match c.known[k] {
                Some(low) if low > 0 => ((1u32 << low) - 1) as f32 * SKIPPED_BITS_OFFSET,
                _ => 0.0,
            };
        }
    }
    let blocks = (comp_w.div_ceil(8), comp_h.div_ceil(8));
    let size = ((comp_w * c.n).div_ceil(8), (comp_h * c.n).div_ceil(8));
    // Sequential files and fully refined scans have no offsets: a plain dequantisation.
    let offsets = offset.iter().any(|&o| o != 0.0);
    match (c.n, offsets) {
        (1, _) => transform_blocks::<1, true>(c, blocks, size, &scale, &offset),
        (2, false) => transform_blocks::<2, false>(c, blocks, size, &scale, &offset),
        (2, true) => transform_blocks::<2, true>(c, blocks, size, &scale, &offset),
        (_, false) => transform_blocks::<4, false>(c, blocks, size, &scale, &offset),
        (_, true) => transform_blocks::<4, true>(c, blocks, size, &scale, &offset),
    }
}

/// The N-point inverse DCT basis, scaled so that the N x N output of a block's top-left
/// coefficients is the block reduced N/8 times: `table[x][u] = sqrt(N/8) * a(u) *
/// cos((2x + 1) u pi / 2N)`, with a(0) = sqrt(1/N), a(u) = sqrt(2/N).
fn idct_table<const N: usize>() -> [[f32; N]; N] {
    let mut table = [[0f32; N]; N];
    let n = N as f64;
    for (x, row) in table.iter_mut().enumerate() {
        for (u, cell) in row.iter_mut().enumerate() {
            let a = if u == 0 {
                (1.0 / n).sqrt()
            } else {
                (2.0 / n).sqrt()
            };
            let angle = (2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / (2.0 * n);
            *cell = ((n / 8.0).sqrt() * a * angle.cos()) as f32;
        }
    }
    table
}

fn transform_blocks<const N: usize, const OFFSET: bool>(
    c: &Component,
    (blocks_w, blocks_h): (usize, usize),
    (plane_w, plane_h): (usize, usize),
    scale: &[f32; 16],
    offset: &[f32; 16],
) -> Vec<u8> {
    let table = idct_table::<N>();
    let mut basis = [[0f32; N]; N];
    for (x, row) in table.iter().enumerate() {
        for (u, &value) in row.iter().enumerate() {
            basis[u][x] = value;
        }
    }
    let mut plane = vec![0u8; plane_w * plane_h];
    let to_u8 = |v: f32| (v + 128.5).clamp(0.0, 255.0) as u8;
    for by in 0..blocks_h {
        let rows = N.min(plane_h - by * N);
        for bx in 0..blocks_w {
            let cols = N.min(plane_w - bx * N);
            let coefs = &c.coefs[(by * c.grid_w + bx) * N * N..][..N * N];
            let first = by * N * plane_w + bx * N;
            if coefs[1..].iter().all(|&q| q == 0) {
                // Flat block: every sample is DC / 8.
                let dc = (f32::from(coefs[0]) + offset[0]) * scale[0];
                let value = to_u8(dc / 8.0);
                for y in 0..rows {
                    plane[first + y * plane_w..][..cols].fill(value);
                }
                continue;
            }
            // Dequantise, with the skipped-bits offset away from zero (DC: upwards).
            let mut f = [[0f32; N]; N];
            for (i, &q) in coefs.iter().enumerate() {
                let q = f32::from(q);
                f[i / N][i % N] = if !OFFSET {
                    q * scale[i]
                } else if i == 0 {
                    (q + offset[0]) * scale[0]
                } else {
                    let sign = f32::from(i8::from(q > 0.0) - i8::from(q < 0.0));
                    (q + sign * offset[i]) * scale[i]
                };
            }
            // Rows, then columns, as sums of scaled basis rows (so each step is one vector
            // operation): tmp[v] = sum_u f[v][u] * basis[u]; out[y] = sum_v T[y][v] * tmp[v],
            // where basis[u][x] = T[x][u].
            let mut tmp = [[0f32; N]; N];
            for (tmp_row, f_row) in tmp.iter_mut().zip(&f) {
                for (&coefficient, basis_row) in f_row.iter().zip(&basis) {
                    for (t, &b) in tmp_row.iter_mut().zip(basis_row) {
                        *t += coefficient * b;
                    }
                }
            }
            for (y, table_row) in table.iter().enumerate().take(rows) {
                let mut out = [0f32; N];
                for (&weight, tmp_row) in table_row.iter().zip(&tmp) {
                    for (o, &t) in out.iter_mut().zip(tmp_row) {
                        *o += weight * t;
                    }
                }
                let samples = out.map(|v| ((v + 128.5) as i32).clamp(0, 255) as u8);
                let row = &mut plane[first + y * plane_w..][..cols];
                for (sample, &value) in row.iter_mut().zip(&samples) {
                    *sample = value;
                }
            }
        }
    }
    plane
}

/// Upsamples a plane by integer factors with centre-aligned linear weights (for 2x: the 3/4,
/// 1/4 "triangle" filter libjpeg calls fancy upsampling), cropped to `out`.
fn upsample(
    plane: Vec<u8>,
    size: (usize, usize),
    factor: (usize, usize),
    out: (usize, usize),
) -> Vec<u8> {
    if factor == (1, 1) && size == out {
        return plane;
    }
    if matches!(factor, (2, 1) | (2, 2)) && size.0 * 2 >= out.0 && size.1 * factor.1 >= out.1 {
        return upsample_2x(&plane, size, factor.1 == 2, out);
    }
    upsample_linear(&plane, size, factor, out)
}

/// `upsample` for any integer factors.
fn upsample_linear(
    plane: &[u8],
    size: (usize, usize),
    factor: (usize, usize),
    out: (usize, usize),
) -> Vec<u8> {
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

/// `upsample` for 2x horizontally, and vertically too if `vertical`: the same centred
/// triangle weights (3/4 nearer, 1/4 farther sample, per axis) in integers, one output row
/// at a time.
fn upsample_2x(
    plane: &[u8],
    (w, h): (usize, usize),
    vertical: bool,
    out: (usize, usize),
) -> Vec<u8> {
    let mut result = vec![0u8; out.0 * out.1];
    // Column sums in 1/4 units: 3 * nearer row + farther row (or 4 * row without vertical).
    let mut sums = vec![0u16; w];
    for (y, out_row) in result.chunks_exact_mut(out.0).enumerate() {
        if vertical {
            let near = (y / 2).min(h - 1);
            let far = if y % 2 == 0 {
                near.saturating_sub(1)
            } else {
                (near + 1).min(h - 1)
            };
            let (near, far) = (&plane[near * w..][..w], &plane[far * w..][..w]);
            for ((sum, &n), &f) in sums.iter_mut().zip(near).zip(far) {
                *sum = 3 * u16::from(n) + u16::from(f);
            }
        } else {
            let row = &plane[y.min(h - 1) * w..][..w];
            for (sum, &v) in sums.iter_mut().zip(row) {
                *sum = 4 * u16::from(v);
            }
        }
        // Horizontally: output 2i leans towards i - 1, 2i + 1 towards i + 1; in 1/16 units.
        // The edges repeat the first and last sample.
        let at = |i: usize| u32::from(sums[i.min(w - 1)]);
        let mix = |near: u32, far: u32| ((3 * near + far + 8) >> 4) as u8;
        let (first, rest) = out_row.split_at_mut(out.0.min(2));
        first[0] = mix(at(0), at(0));
        if let Some(second) = first.get_mut(1) {
            *second = mix(at(0), at(1));
        }
        // Interior pairs: sums[i - 1], sums[i], sums[i + 1] for i = 1, 2, ...
        let mut pairs = rest.chunks_exact_mut(2);
        for (pair, window) in pairs.by_ref().zip(sums.windows(3)) {
            let (left, middle, right) = (
                u32::from(window[0]),
                u32::from(window[1]),
                u32::from(window[2]),
            );
            pair[0] = mix(middle, left);
            pair[1] = mix(middle, right);
        }
        // What the windows did not reach: the last sample's pair (cropped or not).
        let done = 2 + 2 * w.saturating_sub(2).min(rest.len() / 2);
        for (x, sample) in out_row.iter_mut().enumerate().skip(done) {
            let i = x / 2;
            let other = if x % 2 == 0 {
                i.saturating_sub(1)
            } else {
                i + 1
            };
            *sample = mix(at(i), at(other));
        }
    }
    result
}

// --- Segments -------------------------------------------------------------------------------

fn read_sof(
    s: &[u8],
    progressive: bool,
    expected: (u32, u32),
    n: usize,
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
    if !matches!(count, 1 | 3 | 4) || s.len() < 6 + 3 * count {
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
    let h_max = components.iter().map(|c| c.1).max().unwrap_or(1);
    let v_max = components.iter().map(|c| c.2).max().unwrap_or(1);
    // Power-of-two ratios only (3:1 and the like go to the full decoder).
    let ratio = |max: usize, own: usize| max.is_multiple_of(own).then(|| max / own);
    if components.iter().any(|c| {
        !ratio(h_max, c.1).is_some_and(usize::is_power_of_two)
            || !ratio(v_max, c.2).is_some_and(usize::is_power_of_two)
    }) {
        return Ok(None);
    }
    let mcus_x = width.div_ceil(8 * h_max);
    let mcus_y = height.div_ceil(8 * v_max);
    let components = components
        .into_iter()
        .map(|(id, h, v, quant_table)| {
            // Subsampled components take a larger transform instead of being upsampled, up to
            // 4x4; at 1/8 every component stays DC-only.
            let c_n = if n == 1 {
                1
            } else {
                (n * (h_max / h).min(v_max / v)).min(4)
            };
            let mut slot = [NOT_KEPT; 64];
            let mut last_kept = 0;
            for (k, &natural) in ZIGZAG.iter().enumerate() {
                let (row, col) = (usize::from(natural / 8), usize::from(natural % 8));
                if row < c_n && col < c_n {
                    slot[k] = (row * c_n + col) as u8;
                    last_kept = k;
                }
            }
            let (grid_w, grid_h) = (mcus_x * h, mcus_y * v);
            Component {
                id,
                h,
                v,
                quant_table,
                quant: None,
                n: c_n,
                slot,
                last_kept,
                grid_w,
                coefs: vec![0; grid_w * grid_h * c_n * c_n],
                known: [None; 64],
                // At 1/2 the refinement scans are decoded (measured: skipping them cost 5 to 8 %
                // of DSSIM on progressive photos at 400 px from 2560); at 1/4 and 1/8 they are
                // skipped.
                nonzero: if progressive && n == 4 {
                    vec![0; grid_w * grid_h]
                } else {
                    Vec::new()
                },
            }
        })
        .collect();
    Ok(Some(Frame {
        width,
        height,
        progressive,
        n,
        h_max,
        v_max,
        mcus_x,
        mcus_y,
        components,
    }))
}

fn read_dqt(mut s: &[u8], quant: &mut [Option<[u16; 64]>; 4]) -> Result<(), PipelineError> {
    while let Some((&pq_tq, rest)) = s.split_first() {
        let (wide, id) = (pq_tq >> 4, usize::from(pq_tq & 15));
        let size = if wide == 0 { 64 } else { 128 };
        if wide > 1 || id > 3 || rest.len() < size {
            return Err(bad("bad quantisation table"));
        }
        // In zigzag order, as the coefficients are decoded.
        let mut table = [0u16; 64];
        for (k, entry) in table.iter_mut().enumerate() {
            *entry = if wide == 0 {
                u16::from(rest[k])
            } else {
                u16::from_be_bytes([rest[2 * k], rest[2 * k + 1]])
            };
        }
        quant[id] = Some(table);
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
    end: u8,
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
        end,
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

    /// Tops the buffer up to at least 32 bits when it holds fewer: enough for a code (16) and
    /// its extra bits (11 at most for 8-bit samples), or a code and an end-of-band run (14).
    #[inline(always)]
    fn refill(&mut self) {
        if self.count >= 32 {
            return;
        }
        // Fast path: the next 8 bytes hold no 0xFF (no stuffing, no marker), so as many whole
        // bytes as fit go in at once. The bits of the byte that only partly fits land below
        // `count`, exactly where the next refill puts that byte again: ORing them twice is
        // harmless, and nothing reads below `count`.
        if self.zeros == 0
            && let Some(chunk) = self.bytes.get(self.pos..self.pos + 8)
        {
            let word = u64::from_be_bytes(chunk.try_into().unwrap_or([0xFF; 8]));
            let has_ff = (!word).wrapping_sub(0x0101_0101_0101_0101) & word & 0x8080_8080_8080_8080;
            if has_ff == 0 {
                self.acc |= word >> self.count;
                let whole = (63 - self.count) / 8;
                self.count += whole * 8;
                self.pos += whole as usize;
                return;
            }
        }
        self.refill_slow();
    }

    #[cold]
    fn refill_slow(&mut self) {
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

    /// `take` that also accepts 0 bits.
    #[inline]
    fn take_up_to(&mut self, n: u32) -> u32 {
        if n == 0 { 0 } else { self.take(n) }
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
        extend(self.take(size), size)
    }

    /// One AC coefficient by the table's one-step lookup: `(run, value)`, or `None` when its
    /// code and extra bits do not fit the lookup (then nothing is consumed).
    #[inline(always)]
    fn fast_ac(&mut self, table: &Huffman) -> Option<(usize, i32)> {
        let fast = table.fast_ac[self.peek(LOOKUP_BITS) as usize];
        if fast == 0 {
            return None;
        }
        self.consume((fast & 15) as u32);
        Some((((fast >> 4) & 15) as usize, i32::from(fast >> 8)))
    }

    /// Whether the decoding used bits past the end of the data.
    fn overran(&self) -> bool {
        self.count < self.zeros
    }
}

/// T.81 `EXTEND`: the `size`-bit pattern `v` as a signed value.
#[inline]
fn extend(v: u32, size: u32) -> i32 {
    let v = v as i32;
    if v < 1 << (size - 1) {
        v - (1 << size) + 1
    } else {
        v
    }
}

const LOOKUP_BITS: u32 = 9;

/// A canonical Huffman table: codes up to 9 bits by one lookup, longer ones by `max_code`.
struct Huffman {
    /// `length << 8 | value`, 0 for codes longer than the lookup.
    lookup: Box<[u16; 1 << LOOKUP_BITS]>,
    /// For AC tables: an AC coefficient whose code and extra bits both fit in the lookup,
    /// decoded in one step, as `value << 8 | run << 4 | bits used`; 0 where it does not fit.
    fast_ac: Box<[i16; 1 << LOOKUP_BITS]>,
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
        let mut fast_ac = Box::new([0i16; 1 << LOOKUP_BITS]);
        for (index, (&entry, fast)) in lookup.iter().zip(fast_ac.iter_mut()).enumerate() {
            let (len, rs) = (u32::from(entry >> 8), entry & 0xFF);
            let (run, size) = (rs >> 4, u32::from(rs & 15));
            if entry == 0 || size == 0 || len + size > LOOKUP_BITS {
                continue;
            }
            let extra = (index as u32 >> (LOOKUP_BITS - len - size)) & ((1 << size) - 1);
            let value = extend(extra, size);
            if let Ok(value) = i8::try_from(value) {
                *fast = i16::from(value) << 8 | (run << 4) as i16 | (len + size) as i16;
            }
        }
        Ok(Huffman {
            lookup,
            fast_ac,
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
    use super::super::super::{Image, PixelLayout};
    use super::super::test_support::{box_reduce, difference, fixture};
    use super::*;

    /// The full decode reduced by `d`x`d` box averages: what a 1/`d` decode should show.
    fn box_reduced(rel: &str, d: usize) -> Image {
        let bytes = fixture(rel);
        let limits = Limits::default();
        let info = probe(&bytes, &limits).expect("probe");
        let full = super::super::decode(&bytes, &info, &limits, Default::default()).expect("full");
        assert_eq!(full.layout, PixelLayout::Rgb8);
        box_reduce(&full, d)
    }

    /// The decode at 1/`d` through `jpeg::decode` (colour included); panics when the file
    /// fell back to the full decoder.
    fn scaled(rel: &str, d: u32) -> Image {
        let bytes = fixture(rel);
        let limits = Limits::default();
        let info = probe(&bytes, &limits).expect("probe");
        let image = super::super::jpeg::decode(&bytes, &info, &limits, d)
            .unwrap_or_else(|e| panic!("{rel} at 1/{d}: {e}"));
        assert_eq!(
            (image.width, image.height),
            (info.width.div_ceil(d), info.height.div_ceil(d)),
            "{rel} at 1/{d}: decoded at this scale"
        );
        image
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

    #[test]
    fn every_scale_matches_the_box_reduced_full_decode() {
        // (fixture, what it covers, largest mean difference allowed: luma, RGB). A DCT-scaled
        // picture is sharper than a box average (up to 2.5 on the detailed 4:4:4 photo at
        // 1/2, measured), and a progressive one lacks its refinement bits (about +1).
        let photo = (2.75, 4.0);
        let cases = [
            ("photos/dune.jpg", "progressive 4:2:2", photo),
            ("photos/elephants.jpg", "baseline 4:4:4", photo),
            ("photos/ladybird.jpg", "baseline 4:2:0", photo),
            (
                "jpeg_scaled/ladybird_progressive_restart.jpg",
                "progressive, restarts",
                photo,
            ),
            (
                "jpeg_scaled/ladybird_odd_progressive.jpg",
                "progressive, 1003x749",
                photo,
            ),
            (
                "jpeg_scaled/ladybird_gray_progressive.jpg",
                "progressive gray",
                photo,
            ),
            ("formats/jpeg_gray.jpg", "baseline gray 64x48", (2.0, 4.0)),
            (
                "jpeg_scaled/ladybird_odd_restart.jpg",
                "baseline, 999x601, restarts",
                photo,
            ),
            (
                "jpeg_scaled/ladybird_dc_per_component.jpg",
                "progressive, a DC scan per component, refinements after the AC scans",
                photo,
            ),
            // Saturated quadrants 64x48: 4:2:0 chroma is one DC per 16x16 at 1/8, so colour
            // edges bleed into luma after clamping.
            (
                "formats/jpeg_non_interleaved.jpg",
                "baseline, one scan per component",
                (4.0, 32.0),
            ),
            (
                "formats/jpeg_progressive.jpg",
                "progressive 4:4:4, 64x48",
                (1.0, 2.0),
            ),
            ("formats/jpeg_cmyk.jpg", "CMYK, Adobe", (2.0, 4.0)),
            ("formats/jpeg_ycck.jpg", "YCCK, Adobe", (2.0, 4.0)),
            ("color/cmyk_profile.jpg", "CMYK with a profile", (2.0, 4.0)),
        ];
        for (rel, what, (luma_limit, rgb_limit)) in cases {
            for d in [2, 4, 8] {
                let image = scaled(rel, d);
                let reference = box_reduced(rel, d as usize);
                // Luma is close to the box mean; chroma, upsampled from a coarser grid at 1/8
                // and from skipped refinement bits, is softer than the full decode's.
                let (luma_mean, luma_max) = difference(&luma(&image), &luma(&reference));
                let (mean, _) = difference(&image, &reference);
                assert!(
                    luma_mean < luma_limit && luma_max < 64 && mean < rgb_limit,
                    "{rel} ({what}) at 1/{d}: luma mean {luma_mean:.2}, max {luma_max}; \
                     RGB mean {mean:.2}"
                );
            }
        }
    }

    fn raw_decode(bytes: &[u8], size: (u32, u32)) -> Result<Option<Planes>, PipelineError> {
        decode(bytes, size, 8)
    }

    #[test]
    fn files_it_does_not_handle_answer_none() {
        let bytes = fixture("formats/jpeg_baseline.jpg");
        let sof = bytes
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .expect("SOF0");
        assert!(raw_decode(&bytes, (64, 48)).expect("baseline").is_some());
        // 12-bit samples.
        let mut twelve = bytes.clone();
        twelve[sof + 4] = 12;
        assert!(raw_decode(&twelve, (64, 48)).expect("12-bit").is_none());
        // Arithmetic coding (SOF9) and lossless (SOF3).
        for marker in [0xC9, 0xC3] {
            let mut other = bytes.clone();
            other[sof + 1] = marker;
            assert!(
                raw_decode(&other, (64, 48)).expect("SOF").is_none(),
                "{marker:x}"
            );
        }
    }

    #[test]
    fn restart_markers_must_come_in_sequence() {
        let bytes = fixture("jpeg_scaled/ladybird_odd_restart.jpg");
        assert!(raw_decode(&bytes, (999, 601)).is_ok());
        // The first restart marker (RST0) relabelled RST1: an interval went missing.
        let first = bytes
            .windows(2)
            .position(|w| w[0] == 0xFF && (0xD0..=0xD7).contains(&w[1]))
            .expect("a restart marker");
        assert_eq!(bytes[first + 1], 0xD0);
        let mut skipped = bytes.clone();
        skipped[first + 1] = 0xD1;
        assert!(raw_decode(&skipped, (999, 601)).is_err());
    }

    #[test]
    fn damaged_files_are_corrupt_never_a_panic() {
        let bytes = fixture("jpeg_scaled/ladybird_progressive_restart.jpg");
        let size = (1200, 750);
        // Truncated anywhere, even in an AC scan this decoder only skips: refused, because
        // the full decoder refuses it too.
        for cut in (0..bytes.len())
            .step_by(997)
            .chain([bytes.len() - 2, bytes.len() - 1])
        {
            assert!(
                raw_decode(&bytes[..cut], size).is_err(),
                "cut at {cut} of {}",
                bytes.len()
            );
        }
        // Flipped bytes anywhere: an answer, never a panic, never a wrong-sized image.
        let mut damaged = bytes.clone();
        for at in (20..bytes.len()).step_by(131) {
            damaged[at] ^= 0x5A;
            for d in [2, 4, 8] {
                if let Ok(Some(image)) = decode(&damaged, size, d) {
                    let (w, h) = (
                        1200usize.div_ceil(d as usize),
                        750usize.div_ceil(d as usize),
                    );
                    assert_eq!((image.width, image.height), (w as u32, h as u32));
                    assert!(image.planes.iter().all(|p| p.len() == w * h));
                }
            }
            damaged[at] = bytes[at];
        }
        // A frame that disagrees with the probed size is refused before allocating.
        assert!(raw_decode(&bytes, (1200, 751)).is_err());
    }

    /// An EXIF-rotated file: the scale is chosen on the upright axes and the scaled decode,
    /// turned upright, matches the box-reduced upright photo it was made from.
    #[test]
    fn an_exif_rotated_file_scales_like_its_upright_source() {
        use super::super::super::{DecodeHint, decode_upright};
        let limits = Limits::default();
        let upright_of = |rel: &str, hint: DecodeHint| {
            let bytes = fixture(rel);
            let info = probe(&bytes, &limits).expect("probe");
            let image = decode_upright(&bytes, &info, &limits, hint).expect("decode");
            (info, image)
        };
        // dune_orient6.jpg stores dune.jpg turned a quarter (750x1200); EXIF 6 turns it back.
        let (_, source) = upright_of("photos/dune.jpg", DecodeHint::default());
        for d in [2, 4, 8] {
            let hint = DecodeHint {
                min_size: Some((1, 1)),
                denominator: Some(d),
                ..DecodeHint::default()
            };
            let (info, image) = upright_of("jpeg_scaled/dune_orient6.jpg", hint);
            assert_eq!((info.orientation, info.oriented_size()), (6, (1200, 750)));
            assert_eq!(
                (image.width, image.height),
                (1200 / d, 750u32.div_ceil(d)),
                "1/{d}, upright"
            );
            let reference = box_reduce(&source, d as usize);
            let (mean, _) = difference(&luma(&image), &luma(&reference));
            assert!(mean < 2.75, "1/{d}: luma differs by {mean:.2} on average");
        }
        // The planner asks for the scale on the upright axes: a 300x187 thumbnail of the
        // 1200x750 picture can come from 1/2 (600x375) but not from 1/4.
        let bytes = fixture("jpeg_scaled/dune_orient6.jpg");
        let info = probe(&bytes, &limits).expect("probe");
        let hint = |w, h| DecodeHint {
            min_size: Some((w, h)),
            denominator: None,
            ..DecodeHint::default()
        };
        let decoded = decode_upright(&bytes, &info, &limits, hint(300, 187)).expect("decode");
        assert_eq!((decoded.width, decoded.height), (600, 375));
    }

    /// At 1/2 every refinement scan is decoded, so a progressive re-coding decodes to exactly
    /// the pixels of the baseline file it was made from (jpegtran keeps the coefficients); at
    /// 1/4 and 1/8 the skipped refinements show, within bounds.
    #[test]
    fn a_progressive_recoding_decodes_like_its_baseline_source() {
        for rel in [
            "jpeg_scaled/ladybird_progressive_restart.jpg",
            "jpeg_scaled/ladybird_dc_per_component.jpg",
        ] {
            let crop = |image: &Image, w: u32, h: u32| {
                let c = image.channels();
                let mut data = Vec::new();
                for y in 0..h as usize {
                    let row = y * image.width as usize * c;
                    data.extend_from_slice(&image.data[row..row + w as usize * c]);
                }
                Image::new(w, h, image.layout, data)
            };
            for d in [2, 4, 8] {
                let progressive = scaled(rel, d);
                let baseline = scaled("photos/ladybird.jpg", d);
                // The second file is cropped to 1001x751 by jpegtran, which left its last
                // block row (from y = 736) grey: compare the common interior above it.
                let (w, h) = (
                    progressive.width.min(baseline.width) - 1,
                    progressive.height.min(baseline.height).min(720 / d) - 1,
                );
                let (mean, _) = difference(&crop(&progressive, w, h), &crop(&baseline, w, h));
                let limit = if d == 2 { 1.5 } else { 2.5 };
                assert!(mean < limit, "{rel} at 1/{d}: mean difference {mean:.2}");
            }
            // With every refinement decoded, 1/2 is exact: the same planes as the baseline's.
            let planes = |rel: &str, refine_down_to: u8| {
                let bytes = fixture(rel);
                let info = probe(&bytes, &Limits::default()).expect("probe");
                let mut decoder = Decoder::new(&bytes, (info.width, info.height), 4)
                    .expect("header")
                    .expect("handled");
                decoder.refine_down_to = refine_down_to;
                decoder.run().expect("scans");
                decoder.into_planes().expect("planes")
            };
            let (all, exact) = (
                planes(rel, 0),
                planes("photos/ladybird.jpg", REFINE_DOWN_TO),
            );
            let (w, h) = (
                exact.width.min(all.width) as usize - 1,
                (720 / 2).min(all.height) as usize - 1,
            );
            for (i, (ours, theirs)) in all.planes.iter().zip(&exact.planes).enumerate() {
                for y in 0..h {
                    let row = |p: &[u8], width: u32| p[y * width as usize..][..w].to_vec();
                    assert_eq!(
                        row(ours, all.width),
                        row(theirs, exact.width),
                        "{rel}: plane {i}, row {y}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_2x_upsampler_is_the_linear_one() {
        // Odd sizes, cropped and uncropped outputs, a pseudo-random plane.
        for (w, h) in [(1usize, 1usize), (5, 3), (16, 9), (31, 17)] {
            let plane: Vec<u8> = (0..w * h).map(|i| (i * 73 % 251) as u8).collect();
            for vertical in [false, true] {
                let fy = if vertical { 2 } else { 1 };
                for out in [
                    (2 * w, fy * h),
                    (2 * w - 1, (fy * h).saturating_sub(1).max(1)),
                ] {
                    assert_eq!(
                        upsample_2x(&plane, (w, h), vertical, out),
                        upsample_linear(&plane, (w, h), (2, fy), out),
                        "{w}x{h} to {out:?}"
                    );
                }
            }
        }
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
