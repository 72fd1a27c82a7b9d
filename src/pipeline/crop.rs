//! Crop anchors: where a `crop_w` x `crop_h` window goes on an image, for the nine fixed
//! positions and the two content-aware ones (`entropy`, `attention`).
//!
//! Owns window placement only. Must never crop, resize or allocate anything proportional to
//! the full image: the content-aware searches run on a box-downsampled copy of at most
//! [`ANALYSIS_SIDE`] pixels a side, so their cost stays small and bounded whatever the source.
//!
//! - `Entropy` keeps the window whose luminance histogram has the highest Shannon entropy
//!   (the busiest region), like libvips' `VIPS_INTERESTING_ENTROPY`.
//! - `Attention` keeps the most salient window. Its saliency map starts from the cues of
//!   libvips' `VIPS_INTERESTING_ATTENTION` and smartcrop.js (edges, skin, saturation), each
//!   scaled to 0-1 so none drowns the others, plus colour rarity:
//!   1. edges: Sobel magnitude of CIE L* on a lightly smoothed map (texture finer than a
//!      cell or two weighs less than an outline), over the image's 99th percentile;
//!   2. skin: smartcrop.js' closeness of the normalised RGB vector to (0.78, 0.57, 0.44),
//!      above 0.8, where L* is 20-95; weighted three times, faces being small and common;
//!   3. saturation: CIE LCh chroma from 40, full at 80;
//!   4. rarity: distance of a cell's colour from the image's mean colour (Achanta's
//!      frequency-tuned saliency), over its 99th percentile.
//!
//!   The median cell's value is subtracted (what is everywhere is not salient), the map is
//!   blurred at a twentieth of the window's diagonal, and the window holding the largest
//!   sum wins (a summed-area table prices every placement in O(1)). Skin-coloured areas
//!   larger than a face (fur, wood) weigh less, so their total stays a face's. Measured on
//!   the photos of `tests/fixtures/photos/SOURCES.md` with their subject boxes: 55 of 55
//!   crops keep at least 80 % of the subject (53 before the skin share; the previous map,
//!   smartcrop.js' cues unscaled: 18 of 34 on the first five photos).

use super::spec::Crop;
use super::{Image, PixelLayout};

/// Longest side of the analysis copy. The window position is therefore precise to
/// `max(w, h) / ANALYSIS_SIDE` source pixels, well below what a viewer notices in a crop.
const ANALYSIS_SIDE: u32 = 256;

/// Most positions tried per axis by the entropy search (evenly spaced over the slack).
const ENTROPY_STEPS: u32 = 64;

/// Top-left corner of a `crop_w` x `crop_h` window on `image` for `anchor`. The window is
/// clamped to the image; a window as large as the image sits at (0, 0).
pub(super) fn window(image: &Image, crop_w: u32, crop_h: u32, anchor: Crop) -> (u32, u32) {
    let crop_w = crop_w.clamp(1, image.width.max(1));
    let crop_h = crop_h.clamp(1, image.height.max(1));
    let slack_x = image.width.saturating_sub(crop_w);
    let slack_y = image.height.saturating_sub(crop_h);
    if slack_x == 0 && slack_y == 0 {
        return (0, 0);
    }
    let fixed = |fx: u32, fy: u32| (slack_x * fx / 2, slack_y * fy / 2);
    match anchor {
        Crop::Center => fixed(1, 1),
        Crop::Top => fixed(1, 0),
        Crop::Bottom => fixed(1, 2),
        Crop::Left => fixed(0, 1),
        Crop::Right => fixed(2, 1),
        Crop::TopLeft => fixed(0, 0),
        Crop::TopRight => fixed(2, 0),
        Crop::BottomLeft => fixed(0, 2),
        Crop::BottomRight => fixed(2, 2),
        Crop::Entropy => {
            let analysis = Analysis::new(image, false);
            let (ww, wh) = analysis.window_size(crop_w, crop_h);
            let (x, y) = entropy_window(&analysis, ww, wh);
            analysis.to_source(x, y, slack_x, slack_y)
        }
        Crop::Attention => {
            let analysis = Analysis::new(image, true);
            let (ww, wh) = analysis.window_size(crop_w, crop_h);
            let (x, y) = attention_window(&analysis, ww, wh);
            analysis.to_source(x, y, slack_x, slack_y)
        }
    }
}

/// A box-averaged copy of the image at most `ANALYSIS_SIDE` a side: luminance always, the
/// colour planes only when the attention map needs them.
struct Analysis {
    width: usize,
    height: usize,
    /// Integer downsampling factor.
    factor: u32,
    /// Rec.709 luma, 0-255, colour multiplied by alpha (transparent counts as black: it is
    /// neither detail nor salient).
    luma: Vec<f32>,
    /// Interleaved RGB 0-255 (alpha-multiplied), empty unless requested.
    rgb: Vec<f32>,
}

impl Analysis {
    fn new(image: &Image, with_colour: bool) -> Analysis {
        let factor = image.width.max(image.height).div_ceil(ANALYSIS_SIDE).max(1);
        let width = image.width.div_ceil(factor) as usize;
        let height = image.height.div_ceil(factor) as usize;
        let channels = image.channels();
        let f = factor as usize;

        // Accumulate RGB sums per analysis cell, one source row at a time. Large factors
        // sample every `step`-th row and column of each cell (still at least 16 samples a
        // cell): the average barely changes and a 50 MP source costs a few ms, not 50.
        let step = (f / 4).max(1);
        let mut sums = vec![0u32; width * height * 3];
        let mut counts = vec![0u32; width * height];
        for (y, row) in image.data.chunks_exact(image.stride().max(1)).enumerate() {
            if !(y % f).is_multiple_of(step) {
                continue;
            }
            let cy = y / f;
            let cell_row = &mut sums[cy * width * 3..(cy + 1) * width * 3];
            let count_row = &mut counts[cy * width..(cy + 1) * width];
            for (cells, (px_block, count)) in cell_row
                .chunks_exact_mut(3)
                .zip(row.chunks(f * channels).zip(count_row.iter_mut()))
            {
                for px in px_block.chunks_exact(channels).step_by(step) {
                    let (r, g, b) = match image.layout {
                        PixelLayout::Rgb8 => (u32::from(px[0]), u32::from(px[1]), u32::from(px[2])),
                        PixelLayout::Rgba8 => {
                            let a = u32::from(px[3]);
                            (
                                u32::from(px[0]) * a / 255,
                                u32::from(px[1]) * a / 255,
                                u32::from(px[2]) * a / 255,
                            )
                        }
                    };
                    cells[0] += r;
                    cells[1] += g;
                    cells[2] += b;
                    *count += 1;
                }
            }
        }

        let mut rgb = Vec::with_capacity(if with_colour { width * height * 3 } else { 0 });
        let mut luma = Vec::with_capacity(width * height);
        for (cell, &count) in sums.chunks_exact(3).zip(&counts) {
            let n = count.max(1) as f32;
            let (r, g, b) = (cell[0] as f32 / n, cell[1] as f32 / n, cell[2] as f32 / n);
            luma.push(0.2126 * r + 0.7152 * g + 0.0722 * b);
            if with_colour {
                rgb.extend_from_slice(&[r, g, b]);
            }
        }
        Analysis {
            width,
            height,
            factor,
            luma,
            rgb,
        }
    }

    /// The crop window in analysis cells (at least 1, at most the analysis size).
    fn window_size(&self, crop_w: u32, crop_h: u32) -> (usize, usize) {
        let f = f64::from(self.factor);
        let ww = ((f64::from(crop_w) / f).round() as usize).clamp(1, self.width);
        let wh = ((f64::from(crop_h) / f).round() as usize).clamp(1, self.height);
        (ww, wh)
    }

    /// Back to source pixels, clamped so the source window stays inside the image.
    fn to_source(&self, x: usize, y: usize, slack_x: u32, slack_y: u32) -> (u32, u32) {
        let sx = (x as u64 * u64::from(self.factor)).min(u64::from(slack_x)) as u32;
        let sy = (y as u64 * u64::from(self.factor)).min(u64::from(slack_y)) as u32;
        (sx, sy)
    }
}

/// Evenly spaced positions over `0..=slack`, at most `steps + 1` of them, both ends included.
fn positions(slack: usize, steps: usize) -> Vec<usize> {
    if slack == 0 {
        return vec![0];
    }
    let n = slack.min(steps);
    (0..=n).map(|i| i * slack / n).collect()
}

/// The window with the highest Shannon entropy of its 256-bin luminance histogram. Windows
/// slide along the axis (or axes) with slack; the histogram is updated incrementally column
/// by column, so each row of candidates costs O(window area + slack x window height).
/// Ties (e.g. a flat image) go to the position nearest the centre.
fn entropy_window(a: &Analysis, ww: usize, wh: usize) -> (usize, usize) {
    let bins: Vec<u8> = a.luma.iter().map(|&l| l.clamp(0.0, 255.0) as u8).collect();
    let area = ww * wh;
    // Entropy = log2(N) - (1/N) * sum(c * log2 c); precompute c * log2 c for every count.
    let c_log_c: Vec<f64> = (0..=area)
        .map(|c| {
            if c == 0 {
                0.0
            } else {
                c as f64 * (c as f64).log2()
            }
        })
        .collect();
    let entropy = |hist: &[u32; 256]| -> f64 {
        let sum: f64 = hist.iter().map(|&c| c_log_c[c as usize]).sum();
        (area as f64).log2() - sum / area as f64
    };

    let xs = positions(a.width - ww, ENTROPY_STEPS as usize);
    let ys = positions(a.height - wh, ENTROPY_STEPS as usize);
    let centre = ((a.width - ww) as f64 / 2.0, (a.height - wh) as f64 / 2.0);
    let mut best = (f64::NEG_INFINITY, f64::INFINITY, 0usize, 0usize);
    for &y in &ys {
        let mut hist = [0u32; 256];
        for row in bins[y * a.width..(y + wh) * a.width].chunks_exact(a.width) {
            for &v in &row[..ww] {
                hist[usize::from(v)] += 1;
            }
        }
        let mut at = 0usize;
        for &x in &xs {
            // Slide the window right from `at` to `x`, one column at a time.
            while at < x {
                for row in bins[y * a.width..(y + wh) * a.width].chunks_exact(a.width) {
                    hist[usize::from(row[at])] -= 1;
                    hist[usize::from(row[at + ww])] += 1;
                }
                at += 1;
            }
            let e = entropy(&hist);
            let d = (x as f64 - centre.0).powi(2) + (y as f64 - centre.1).powi(2);
            if e > best.0 + 1e-9 || ((e - best.0).abs() <= 1e-9 && d < best.1) {
                best = (e, d, x, y);
            }
        }
    }
    (best.2, best.3)
}

/// CIE L*, a*, b* (D65) of an sRGB colour with channels 0-255.
fn lab(r: f32, g: f32, b: f32) -> [f32; 3] {
    let lin = |c: f32| {
        let c = c / 255.0;
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let (r, g, b) = (lin(r), lin(g), lin(b));
    let x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047;
    let y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
    let z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883;
    let f = |t: f32| {
        if t > 0.008_856 {
            t.cbrt()
        } else {
            7.787 * t + 16.0 / 116.0
        }
    };
    let (fx, fy, fz) = (f(x), f(y), f(z));
    [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
}

/// Separable box blur of radius `r` (clamped borders), `passes` times (three passes
/// approximate a Gaussian).
fn blur(v: &mut [f32], w: usize, h: usize, r: usize, passes: usize) {
    if r == 0 {
        return;
    }
    let mut tmp = vec![0f32; v.len()];
    for _ in 0..passes {
        for y in 0..h {
            for x in 0..w {
                let (lo, hi) = (x.saturating_sub(r), (x + r).min(w - 1));
                let sum: f32 = v[y * w + lo..=y * w + hi].iter().sum();
                tmp[y * w + x] = sum / (hi - lo + 1) as f32;
            }
        }
        for y in 0..h {
            let (lo, hi) = (y.saturating_sub(r), (y + r).min(h - 1));
            for x in 0..w {
                let sum: f32 = (lo..=hi).map(|yy| tmp[yy * w + x]).sum();
                v[y * w + x] = sum / (hi - lo + 1) as f32;
            }
        }
    }
}

/// The value below which `share` of `v` lies (0 for an empty slice).
fn percentile(v: &[f32], share: f32) -> f32 {
    let mut sorted: Vec<f32> = v.to_vec();
    sorted.sort_by(f32::total_cmp);
    sorted
        .get(((sorted.len() as f32 - 1.0) * share) as usize)
        .copied()
        .unwrap_or(0.0)
}

/// The saliency map of the module doc, one value per analysis cell.
fn saliency(a: &Analysis) -> Vec<f32> {
    const SKIN: [f32; 3] = [0.78, 0.57, 0.44];
    let (w, h) = (a.width, a.height);
    let labs: Vec<[f32; 3]> = a
        .rgb
        .chunks_exact(3)
        .map(|c| lab(c[0], c[1], c[2]))
        .collect();
    // Edges: Sobel on L* of a lightly smoothed map, so texture finer than a cell or two
    // (grass, fur, noise) weighs less than an object's outline.
    let mut l: Vec<f32> = labs.iter().map(|c| c[0]).collect();
    blur(&mut l, w, h, 1, 1);
    let at = |x: usize, y: usize| l[y.min(h - 1) * w + x.min(w - 1)];
    let mut edge = vec![0f32; w * h];
    for y in 0..h {
        for x in 0..w {
            let (xm, ym) = (x.saturating_sub(1), y.saturating_sub(1));
            let gx = at(x + 1, ym) + 2.0 * at(x + 1, y) + at(x + 1, y + 1)
                - at(xm, ym)
                - 2.0 * at(xm, y)
                - at(xm, y + 1);
            let gy = at(xm, y + 1) + 2.0 * at(x, y + 1) + at(x + 1, y + 1)
                - at(xm, ym)
                - 2.0 * at(x, ym)
                - at(x + 1, ym);
            edge[y * w + x] = (gx * gx + gy * gy).sqrt();
        }
    }
    let edge_scale = percentile(&edge, 0.99).max(1.0);
    // Rarity: how far a cell's (smoothed) colour is from the image's mean colour, so an
    // object of a colour the picture has little of stands out (frequency-tuned saliency).
    let n = (w * h) as f32;
    let mean = labs.iter().fold([0f32; 3], |m, c| {
        [m[0] + c[0] / n, m[1] + c[1] / n, m[2] + c[2] / n]
    });
    let mut smooth: Vec<[f32; 3]> = labs.clone();
    for band in 0..3 {
        let mut plane: Vec<f32> = labs.iter().map(|c| c[band]).collect();
        blur(&mut plane, w, h, 1, 1);
        for (s, v) in smooth.iter_mut().zip(plane) {
            s[band] = v;
        }
    }
    let rarity: Vec<f32> = smooth
        .iter()
        .map(|c| {
            ((c[0] - mean[0]).powi(2) + (c[1] - mean[1]).powi(2) + (c[2] - mean[2]).powi(2)).sqrt()
        })
        .collect();
    let rarity_scale = percentile(&rarity, 0.99).max(1.0);

    let skins: Vec<f32> = (0..w * h)
        .map(|i| {
            let [r, g, b] = [a.rgb[i * 3], a.rgb[i * 3 + 1], a.rgb[i * 3 + 2]];
            let lightness = labs[i][0];
            let mag = (r * r + g * g + b * b).sqrt();
            if mag > 0.0 && (20.0..=95.0).contains(&lightness) {
                let d = [r / mag - SKIN[0], g / mag - SKIN[1], b / mag - SKIN[2]];
                let similarity = 1.0 - (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
                ((similarity - 0.8) / 0.2).clamp(0.0, 1.0)
            } else {
                0.0
            }
        })
        .collect();
    // Skin-coloured cells over more of the picture than a face would take are fur, wood or
    // sand: the cue's weight falls so that its total never outweighs a face of
    // `SKIN_FACE_SHARE` of the picture.
    let coverage = skins.iter().filter(|&&v| v > 0.5).count() as f32 / n;
    let skin_weight = SKIN_WEIGHT * (SKIN_FACE_SHARE / coverage.max(f32::EPSILON)).min(1.0);
    let mut map = vec![0f32; w * h];
    for (i, cell) in map.iter_mut().enumerate() {
        let [_, ca, cb] = labs[i];
        let e = (edge[i] / edge_scale).min(1.0);
        let skin = skins[i];
        let chroma = (ca * ca + cb * cb).sqrt();
        let saturated = ((chroma - CHROMA_FROM) / CHROMA_SPAN).clamp(0.0, 1.0);
        let rare = (rarity[i] / rarity_scale).min(1.0);
        *cell =
            EDGE_WEIGHT * e + skin_weight * skin + CHROMA_WEIGHT * saturated + RARITY_WEIGHT * rare;
    }
    // What is everywhere is not salient: the median cell's level is the background.
    let level = percentile(&map, 0.5);
    for v in &mut map {
        *v = (*v - level).max(0.0);
    }
    map
}

/// Weights of the four cues (each 0-1 per cell). Skin weighs most: people are the most
/// common subject, and a face is small next to the clothes and background around it.
const EDGE_WEIGHT: f32 = 1.0;
const SKIN_WEIGHT: f32 = 3.0;
/// The share of the picture (cells more skin than not) up to which skin keeps its full
/// weight. Set on the photos of the crop test: the cat's fur covers 49 % of `chelsea.jpg`,
/// the wood 11 % of `coffee.jpg` (their only misses before), the astronaut's face 3 %.
const SKIN_FACE_SHARE: f32 = 0.03;
const CHROMA_WEIGHT: f32 = 0.5;
const RARITY_WEIGHT: f32 = 0.5;
/// Chroma (CIE LCh) from which a colour counts as saturated, and the span to full weight.
const CHROMA_FROM: f32 = 40.0;

const CHROMA_SPAN: f32 = 40.0;

/// Summed-area table with a zero first row and column: `sat[(y+1)*(w+1) + x+1]` is the sum
/// of `v` over `[0..=x] x [0..=y]`.
fn summed_area(v: &[f32], w: usize, h: usize) -> Vec<f64> {
    let stride = w + 1;
    let mut sat = vec![0f64; stride * (h + 1)];
    for y in 0..h {
        let mut row_sum = 0.0;
        for x in 0..w {
            row_sum += f64::from(v[y * w + x]);
            sat[(y + 1) * stride + x + 1] = sat[y * stride + x + 1] + row_sum;
        }
    }
    sat
}

fn window_sum(sat: &[f64], stride: usize, x: usize, y: usize, ww: usize, wh: usize) -> f64 {
    sat[(y + wh) * stride + x + ww] - sat[y * stride + x + ww] - sat[(y + wh) * stride + x]
        + sat[y * stride + x]
}

/// The window holding the most saliency, after a blur scaled to the window (a radius of a
/// twentieth of its diagonal) so that a compact salient region outweighs scattered texture.
fn attention_window(a: &Analysis, ww: usize, wh: usize) -> (usize, usize) {
    let (w, h) = (a.width, a.height);
    let (slack_x, slack_y) = (w - ww, h - wh);
    let mut map = saliency(a);
    let radius = ((((ww * ww + wh * wh) as f32).sqrt() / 20.0) as usize).max(1);
    blur(&mut map, w, h, radius, 3);
    let sat = summed_area(&map, w, h);
    let stride = w + 1;
    // Nothing salient anywhere (rounding noise aside: cues are 0-1 a cell): the centre.
    let mut best = (1e-3 * (ww * wh) as f64, slack_x / 2, slack_y / 2);
    for y in 0..=slack_y {
        for x in 0..=slack_x {
            let s = window_sum(&sat, stride, x, y, ww, wh);
            if s > best.0 {
                best = (s, x, y);
            }
        }
    }
    (best.1, best.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flat grey image with a noisy, colourful patch at (`px`, `py`).
    fn patch_image(w: u32, h: u32, px: u32, py: u32, size: u32, layout: PixelLayout) -> Image {
        let c = layout.channels();
        let mut data = vec![128u8; w as usize * h as usize * c];
        let mut seed = 12345u32;
        for (i, pixel) in data.chunks_exact_mut(c).enumerate() {
            let (x, y) = (i as u32 % w, i as u32 / w);
            if c == 4 {
                pixel[3] = 255;
            }
            if (px..px + size).contains(&x) && (py..py + size).contains(&y) {
                // xorshift noise: high entropy and strong edges.
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                pixel[0] = seed as u8;
                pixel[1] = (seed >> 8) as u8;
                pixel[2] = (seed >> 16) as u8;
            }
        }
        Image::new(w, h, layout, data)
    }

    fn covers(pos: (u32, u32), win: (u32, u32), patch: (u32, u32, u32)) -> bool {
        let (x, y) = pos;
        let (px, py, s) = patch;
        x <= px && y <= py && x + win.0 >= px + s && y + win.1 >= py + s
    }

    #[test]
    fn fixed_anchors() {
        let image = patch_image(100, 50, 0, 0, 0, PixelLayout::Rgb8);
        assert_eq!(window(&image, 50, 50, Crop::Center), (25, 0));
        assert_eq!(window(&image, 50, 50, Crop::Left), (0, 0));
        assert_eq!(window(&image, 50, 50, Crop::Right), (50, 0));
        assert_eq!(window(&image, 100, 20, Crop::Top), (0, 0));
        assert_eq!(window(&image, 100, 20, Crop::Bottom), (0, 30));
        assert_eq!(window(&image, 40, 20, Crop::BottomRight), (60, 30));
        assert_eq!(window(&image, 40, 20, Crop::TopRight), (60, 0));
        assert_eq!(window(&image, 40, 20, Crop::BottomLeft), (0, 30));
        // Oversized windows clamp.
        assert_eq!(window(&image, 500, 500, Crop::Entropy), (0, 0));
    }

    #[test]
    fn entropy_finds_detailed_corner_horizontal_slack() {
        let image = patch_image(600, 200, 540, 20, 50, PixelLayout::Rgb8);
        let pos = window(&image, 200, 200, Crop::Entropy);
        assert!(covers(pos, (200, 200), (540, 20, 50)), "{pos:?}");
    }

    #[test]
    fn entropy_finds_detailed_corner_vertical_slack() {
        let image = patch_image(120, 900, 10, 5, 40, PixelLayout::Rgba8);
        let pos = window(&image, 120, 120, Crop::Entropy);
        assert!(covers(pos, (120, 120), (10, 5, 40)), "{pos:?}");
    }

    #[test]
    fn entropy_two_axes_of_slack() {
        let image = patch_image(400, 400, 330, 340, 40, PixelLayout::Rgb8);
        let pos = window(&image, 100, 100, Crop::Entropy);
        assert!(covers(pos, (100, 100), (330, 340, 40)), "{pos:?}");
    }

    #[test]
    fn entropy_of_flat_image_is_centred() {
        let image = patch_image(300, 100, 0, 0, 0, PixelLayout::Rgb8);
        assert_eq!(window(&image, 100, 100, Crop::Entropy), (100, 0));
    }

    #[test]
    fn attention_finds_salient_corner() {
        let image = patch_image(800, 300, 20, 200, 60, PixelLayout::Rgb8);
        let pos = window(&image, 300, 300, Crop::Attention);
        assert!(covers(pos, (300, 300), (20, 200, 60)), "{pos:?}");

        let image = patch_image(200, 700, 150, 640, 40, PixelLayout::Rgba8);
        let pos = window(&image, 200, 200, Crop::Attention);
        assert!(covers(pos, (200, 200), (150, 640, 40)), "{pos:?}");
    }

    #[test]
    fn attention_prefers_skin_tones_over_flat_grey() {
        // Flat grey with one flat skin-coloured square (no edges inside it): the skin mask
        // alone must pull the window.
        let (w, h) = (900u32, 300u32);
        let mut data = vec![100u8; (w * h * 3) as usize];
        for (i, px) in data.chunks_exact_mut(3).enumerate() {
            let (x, y) = (i as u32 % w, i as u32 / w);
            if (700..800).contains(&x) && (100..200).contains(&y) {
                px.copy_from_slice(&[224, 172, 140]);
            }
        }
        let image = Image::new(w, h, PixelLayout::Rgb8, data);
        let pos = window(&image, 300, 300, Crop::Attention);
        assert!(covers(pos, (300, 300), (700, 100, 100)), "{pos:?}");
        // Centred on it, not merely touching it.
        assert!((550..=650).contains(&pos.0), "{pos:?}");
    }

    #[test]
    fn attention_of_flat_image_is_centred() {
        let image = patch_image(300, 100, 0, 0, 0, PixelLayout::Rgb8);
        assert_eq!(window(&image, 100, 100, Crop::Attention), (100, 0));
    }

    /// The subject boxes of `tests/fixtures/photos/SOURCES.md` ("Subject boxes").
    fn subjects() -> Vec<(&'static str, [u32; 4])> {
        let table = include_str!("../../tests/fixtures/photos/SOURCES.md");
        let section = table.split("## Subject boxes").nth(1).expect("the section");
        section
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let file = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                let b: Vec<u32> = cells
                    .get(3)?
                    .trim_matches('`')
                    .split(',')
                    .map(|n| n.parse().ok())
                    .collect::<Option<_>>()?;
                Some((file, [b[0], b[1], b[2], b[3]]))
            })
            .take_while(|(file, _)| file.ends_with(".jpg") || file.ends_with(".png"))
            .collect()
    }

    fn photo(file: &str) -> Image {
        let path = format!(
            "{}/tests/fixtures/photos/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let bytes = std::fs::read(path).expect("photo");
        let limits = super::super::Limits::default();
        let info = super::super::probe(&bytes, &limits).expect("probe");
        super::super::decode_upright(&bytes, &info, &limits, Default::default()).expect("decode")
    }

    /// Attention crops of real photos keep their subject: for each photo of the fixture list
    /// and each output shape (the largest window of that shape, as `fit=cover` takes it), at
    /// least 80 % of the subject box (of the part of it such a window can hold) is inside.
    /// The old map (smartcrop.js' sum of edges, skin and saturation, best window sum) kept 18
    /// of the 34 crops of the first five photos.
    #[test]
    fn attention_keeps_the_subject_of_real_photos() {
        const SHAPES: [(u32, u32); 7] = [(1, 1), (2, 3), (3, 5), (1, 2), (4, 3), (16, 9), (3, 1)];
        let subjects = subjects();
        assert!(subjects.len() >= 5, "{subjects:?}");
        let (mut kept, mut tried, mut misses) = (0, 0, Vec::new());
        for (file, [x0, y0, x1, y1]) in subjects {
            let image = photo(file);
            for (sw, sh) in SHAPES {
                let (w, h) = (image.width, image.height);
                let (cw, ch) = if u64::from(w) * u64::from(sh) > u64::from(h) * u64::from(sw) {
                    (h * sw / sh, h)
                } else {
                    (w, w * sh / sw)
                };
                if (cw, ch) == (w, h) {
                    continue;
                }
                let (x, y) = window(&image, cw, ch, Crop::Attention);
                let ix = (x + cw).min(x1).saturating_sub(x.max(x0));
                let iy = (y + ch).min(y1).saturating_sub(y.max(y0));
                let holdable = (x1 - x0).min(cw) * (y1 - y0).min(ch);
                let share = f64::from(ix * iy) / f64::from(holdable);
                tried += 1;
                if share >= 0.8 {
                    kept += 1;
                } else {
                    misses.push(format!(
                        "{file} {sw}:{sh} window {cw}x{ch} at ({x},{y}): {share:.2}"
                    ));
                }
            }
        }
        eprintln!("attention kept the subject in {kept} of {tried} crops");
        assert!(
            misses.is_empty(),
            "{kept}/{tried}; misses:\n{}",
            misses.join("\n")
        );
    }
}
