//! Crop anchors: where a `crop_w` x `crop_h` window goes on an image, for the nine fixed
//! positions and the two content-aware ones (`entropy`, `attention`).
//!
//! Owns window placement only. Must never crop, resize or allocate anything proportional to
//! the full image: the content-aware searches run on a box-downsampled copy of at most
//! [`ANALYSIS_SIDE`] pixels a side, so their cost stays small and bounded whatever the source.
//!
//! - `Entropy` keeps the window whose luminance histogram has the highest Shannon entropy
//!   (the busiest region), like libvips' `VIPS_INTERESTING_ENTROPY`.
//! - `Attention` keeps the most salient window. The saliency map is the one libvips'
//!   `VIPS_INTERESTING_ATTENTION` uses (libvips `libvips/conversion/smartcrop.c`), itself
//!   taken from smartcrop.js (github.com/jwagner/smartcrop.js): the sum of
//!   1. edge energy: the absolute 4-neighbour Laplacian of luminance, times 5;
//!   2. a skin-tone mask: closeness of the normalised RGB vector to smartcrop.js' skin colour
//!      (0.78, 0.57, 0.44), kept above 0.8 similarity and scaled to 0-255, only where
//!      lightness is 0.2-1.0;
//!   3. a saturation mask: HSL saturation above 0.4, scaled to 0-255, only where lightness is
//!      0.05-0.9 (smartcrop.js' thresholds).
//!
//!   libvips blurs this map and centres the crop on its maximum; here the window with the
//!   largest total saliency is chosen with a summed-area table (every placement in O(1)),
//!   which also accounts for salient regions larger than one point. Among windows within 2 %
//!   of the best total, the one whose centre is nearest the saliency centroid inside it wins,
//!   so a small salient object ends up centred rather than pushed to an edge.

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

/// The saliency map of the module doc, one value per analysis cell.
fn saliency(a: &Analysis) -> Vec<f64> {
    const SKIN: [f32; 3] = [0.78, 0.57, 0.44];
    let (w, h) = (a.width, a.height);
    let mut map = vec![0f64; w * h];
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let l = a.luma[i];
            // Edge energy: 4-neighbour Laplacian with replicated borders.
            let up = a.luma[y.saturating_sub(1) * w + x];
            let down = a.luma[(y + 1).min(h - 1) * w + x];
            let left = a.luma[y * w + x.saturating_sub(1)];
            let right = a.luma[y * w + (x + 1).min(w - 1)];
            let edge = (4.0 * l - up - down - left - right).abs() * 5.0;

            let [r, g, b] = [
                a.rgb[i * 3] / 255.0,
                a.rgb[i * 3 + 1] / 255.0,
                a.rgb[i * 3 + 2] / 255.0,
            ];
            let max = r.max(g).max(b);
            let min = r.min(g).min(b);
            let lightness = (max + min) / 2.0;

            let mag = (r * r + g * g + b * b).sqrt();
            let skin = if mag > 0.0 && (0.2..=1.0).contains(&lightness) {
                let d = [r / mag - SKIN[0], g / mag - SKIN[1], b / mag - SKIN[2]];
                let similarity = 1.0 - (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
                if similarity > 0.8 {
                    (similarity - 0.8) * (255.0 / 0.2)
                } else {
                    0.0
                }
            } else {
                0.0
            };

            let saturation = if max == min {
                0.0
            } else if lightness > 0.5 {
                (max - min) / (2.0 - max - min)
            } else {
                (max - min) / (max + min)
            };
            let saturated = if saturation > 0.4 && (0.05..=0.9).contains(&lightness) {
                (saturation - 0.4) * (255.0 / 0.6)
            } else {
                0.0
            };
            map[i] = f64::from(edge + skin + saturated);
        }
    }
    map
}

/// Summed-area table with a zero first row and column: `sat[(y+1)*(w+1) + x+1]` is the sum
/// of `v` over `[0..=x] x [0..=y]`.
fn summed_area(v: &[f64], w: usize, h: usize, weight: impl Fn(usize, usize) -> f64) -> Vec<f64> {
    let stride = w + 1;
    let mut sat = vec![0f64; stride * (h + 1)];
    for y in 0..h {
        let mut row_sum = 0.0;
        for x in 0..w {
            row_sum += v[y * w + x] * weight(x, y);
            sat[(y + 1) * stride + x + 1] = sat[y * stride + x + 1] + row_sum;
        }
    }
    sat
}

fn window_sum(sat: &[f64], stride: usize, x: usize, y: usize, ww: usize, wh: usize) -> f64 {
    sat[(y + wh) * stride + x + ww] - sat[y * stride + x + ww] - sat[(y + wh) * stride + x]
        + sat[y * stride + x]
}

fn attention_window(a: &Analysis, ww: usize, wh: usize) -> (usize, usize) {
    let map = saliency(a);
    let (w, h) = (a.width, a.height);
    let stride = w + 1;
    let total = summed_area(&map, w, h, |_, _| 1.0);
    let moment_x = summed_area(&map, w, h, |x, _| x as f64);
    let moment_y = summed_area(&map, w, h, |_, y| y as f64);

    let (slack_x, slack_y) = (w - ww, h - wh);
    let mut best_total = 0.0f64;
    for y in 0..=slack_y {
        for x in 0..=slack_x {
            best_total = best_total.max(window_sum(&total, stride, x, y, ww, wh));
        }
    }
    if best_total <= 0.0 {
        // Nothing salient anywhere: fall back to the centre.
        return (slack_x / 2, slack_y / 2);
    }

    let mut best = (f64::INFINITY, slack_x / 2, slack_y / 2);
    for y in 0..=slack_y {
        for x in 0..=slack_x {
            let s = window_sum(&total, stride, x, y, ww, wh);
            if s < best_total * 0.98 {
                continue;
            }
            let cx = window_sum(&moment_x, stride, x, y, ww, wh) / s;
            let cy = window_sum(&moment_y, stride, x, y, ww, wh) / s;
            let centre_x = x as f64 + (ww as f64 - 1.0) / 2.0;
            let centre_y = y as f64 + (wh as f64 - 1.0) / 2.0;
            let d = (cx - centre_x).powi(2) + (cy - centre_y).powi(2);
            if d < best.0 {
                best = (d, x, y);
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
}
