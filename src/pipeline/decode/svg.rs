//! SVG through resvg/usvg, sanitised by construction and bounded before rendering.
//!
//! What an SVG may reach: nothing outside its own bytes. usvg is given no resources
//! directory, an `<image>` resolver that refuses every `href` (files, URLs and `data:` alike,
//! so no raster or nested SVG is ever decoded on the side), no user style sheet, and a font
//! database holding only the bundled DejaVu Sans, which every `font-family` resolves to (no
//! system fonts, no fallback lookup). usvg runs no scripts, fetches no URLs and has no
//! `@import` or `@font-face` loading.
//!
//! What an SVG may cost, checked in two passes before any pixel buffer exists:
//! - `check` (also the probe's): roxmltree with a node limit; no `<!ENTITY` declarations
//!   (roxmltree's own guard bounds the references inside one entity, not how often a large
//!   entity is used, so any entity is refused); element nesting, counted through every
//!   `<use>` it instantiates, at most [`MAX_DEPTH`]; elements once every `<use>` and marker is
//!   instantiated at most [`MAX_EXPANDED`]; path data at most [`MAX_PATH_DATA`] bytes; text at
//!   most [`MAX_TEXT_CHARS`]; style sheet rules times elements at most [`MAX_CSS_WORK`].
//! - `budget`, on the converted tree at the render size and at the intrinsic size: nodes, path
//!   segments (dashes included), and the pixel work of every fill, stroke, layer, clip, mask,
//!   pattern tile and filter primitive (filter regions at resvg's own clamp, weighted by the
//!   primitive's per-pixel cost: morphology radius, convolution order, turbulence octaves).
//!
//! resvg cannot be interrupted, so rendering time is bounded by that construction: its work is
//! linear in the pixel work and segments counted, both capped: just under the caps, 60
//! half-transparent fills of a 16 MP canvas took 3.8 s of one core, 5 blurs over a 2000x2000
//! picture 2.5 s, 3 erosions of radius 3 over it 1.2 s (2-vCPU test machine, busy with other
//! builds at the time), well inside `cpu.transform_timeout`. Anything over a cap is
//! `SourceTooLarge` (422 `IMAGE_TOO_LARGE`); an entity declaration or a document usvg cannot
//! read is `Corrupt` (422 `CORRUPT_IMAGE`).

use std::sync::{Arc, LazyLock};

use resvg::tiny_skia;
use resvg::usvg::{self, fontdb, roxmltree};

use super::super::probe::ImageInfo;
use super::{DecodeHint, Image, PipelineError, PixelLayout, corrupt};
use crate::pipeline::spec::{Limits, SourceFormat};

/// roxmltree nodes (elements, text, comments) in the document.
const MAX_NODES: u32 = 100_000;
/// Element nesting, counting the elements every `<use>` instantiates.
const MAX_DEPTH: u32 = 64;
/// Elements once every `<use>` and marker is instantiated.
const MAX_EXPANDED: u64 = 200_000;
/// Bytes of path data (`d` and `points` attributes): usvg holds every segment it parses.
const MAX_PATH_DATA: usize = 8 << 20;
/// Characters of text (shaped one by one).
const MAX_TEXT_CHARS: usize = 100_000;
/// Style sheet rules times elements (usvg matches every rule against every element).
const MAX_CSS_WORK: u64 = 20_000_000;
/// Nodes of the converted tree, counting pattern contents once per use.
const MAX_RENDER_NODES: u64 = 300_000;
/// Path segments of the converted tree, dashes included.
const MAX_SEGMENTS: u64 = 4_000_000;
/// Pixel work (pixels touched by fills, strokes, layers and filter primitives).
const MAX_PIXEL_WORK: f64 = 1.0e9;
/// Size used when the root has neither a usable width/height nor a viewBox (usvg's too).
const DEFAULT_SIZE: f64 = 100.0;

/// The bundled fallback font: DejaVu Sans (Debian's fonts-dejavu-core 2.37; Bitstream Vera
/// licence with DejaVu's public-domain changes, see `src/pipeline/decode/fonts/LICENSE-DejaVu`).
static FONT: &[u8] = include_bytes!("fonts/DejaVuSans.ttf");

static FONTS: LazyLock<Arc<fontdb::Database>> = LazyLock::new(|| {
    let mut db = fontdb::Database::new();
    db.load_font_data(FONT.to_vec());
    Arc::new(db)
});

/// The intrinsic size of an SVG (its root's width and height, else its viewBox).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SvgHeader {
    pub(crate) width: u32,
    pub(crate) height: u32,
}

/// Whether `bytes` start like an SVG document: after an optional BOM, whitespace, the XML
/// declaration, comments, processing instructions and a doctype, the root element is `<svg`.
/// Looks at most 64 KiB in.
pub(crate) fn is_svg(bytes: &[u8]) -> bool {
    let mut rest = &bytes[..bytes.len().min(64 * 1024)];
    rest = rest.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(rest);
    loop {
        rest = rest.trim_ascii_start();
        let skip = |rest: &[u8], end: &[u8]| {
            rest.windows(end.len())
                .position(|w| w == end)
                .map(|at| at + end.len())
        };
        let next = if rest.starts_with(b"<?") {
            skip(rest, b"?>")
        } else if rest.starts_with(b"<!--") {
            skip(rest, b"-->")
        } else if rest.starts_with(b"<!DOCTYPE") {
            // An internal subset ends with `]>`; a plain doctype with `>`.
            let subset = rest.iter().position(|&c| c == b'[');
            let close = rest.iter().position(|&c| c == b'>');
            match (subset, close) {
                (Some(s), Some(c)) if s < c => skip(rest, b"]>"),
                (_, Some(c)) => Some(c + 1),
                _ => None,
            }
        } else {
            return rest.starts_with(b"<svg")
                && rest
                    .get(4)
                    .is_some_and(|c| c.is_ascii_whitespace() || matches!(c, b'>' | b'/'));
        };
        match next {
            Some(at) => rest = &rest[at..],
            None => return false,
        }
    }
}

/// The probe: the whole document checked by [`check`], and its intrinsic size.
pub(crate) fn header(bytes: &[u8]) -> Result<SvgHeader, PipelineError> {
    let text = text(bytes)?;
    let doc = check(text)?;
    Ok(intrinsic_size(doc.root_element()))
}

/// The size an SVG is rendered at: the output's scale of the whole picture
/// (`hint.render_size`), else its intrinsic size, reduced to fit `limits.max_source_pixels`
/// (keeping the aspect ratio) when larger.
pub(super) fn render_size(info: &ImageInfo, hint: DecodeHint, limits: &Limits) -> (u32, u32) {
    let (w, h) = hint.render_size.unwrap_or((info.width, info.height));
    let pixels = u64::from(w) * u64::from(h);
    if pixels <= limits.max_source_pixels {
        return (w, h);
    }
    let shrink = (limits.max_source_pixels as f64 / pixels as f64).sqrt();
    let side = |v: u32| ((f64::from(v) * shrink).floor() as u32).max(1);
    (side(w), side(h))
}

/// Renders the SVG at [`render_size`], RGBA with straight alpha (transparent where nothing
/// is drawn).
pub(super) fn decode(
    bytes: &[u8],
    info: &ImageInfo,
    limits: &Limits,
    hint: DecodeHint,
) -> Result<Image, PipelineError> {
    let (width, height) = render_size(info, hint, limits);
    let doc = check(text(bytes)?)?;
    let tree =
        usvg::Tree::from_xmltree(&doc, &options()).map_err(|e| corrupt(SourceFormat::Svg, e))?;
    drop(doc);
    let size = tree.size();
    let transform = tiny_skia::Transform::from_scale(
        width as f32 / size.width(),
        height as f32 / size.height(),
    );
    // The intrinsic size is checked too, whatever the request: an SVG is refused or not as a
    // file (at upload, by the dominant colour's small render), not per URL, and a URL asking
    // for its original size always works when the upload did.
    let intrinsic = render_size(info, DecodeHint::default(), limits);
    for (w, h) in [intrinsic, (width, height)] {
        let scale =
            tiny_skia::Transform::from_scale(w as f32 / size.width(), h as f32 / size.height());
        budget(&tree, scale, (w, h), limits)?;
    }
    let mut pixmap = tiny_skia::Pixmap::new(width, height).ok_or_else(|| {
        corrupt(
            SourceFormat::Svg,
            format!("cannot render at {width}x{height}"),
        )
    })?;
    resvg::render(&tree, transform, &mut pixmap.as_mut());
    let data = pixmap.take_demultiplied();
    let mut image = Image::new(width, height, PixelLayout::Rgba8, data);
    // The picture fills the buffer (never a partial DCT block: see geometry).
    image.whole_picture = true;
    Ok(image)
}

fn text(bytes: &[u8]) -> Result<&str, PipelineError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|_| corrupt(SourceFormat::Svg, "not UTF-8"))
}

fn too_large(why: impl std::fmt::Display) -> PipelineError {
    PipelineError::SourceTooLarge(format!("svg: {why}"))
}

/// usvg's options: nothing outside the document is reachable.
fn options() -> usvg::Options<'static> {
    usvg::Options {
        resources_dir: None,
        font_family: "DejaVu Sans".to_string(),
        image_href_resolver: usvg::ImageHrefResolver {
            resolve_data: Box::new(|_, _, _| None),
            resolve_string: Box::new(|_, _| None),
        },
        font_resolver: usvg::FontResolver {
            select_font: Box::new(|_, db| db.faces().next().map(|face| face.id)),
            select_fallback: Box::new(|_, _, _| None),
        },
        fontdb: FONTS.clone(),
        style_sheet: None,
        ..usvg::Options::default()
    }
}

// --- the document pass ------------------------------------------------------------------

/// Parses `text` and checks the document caps (see the module doc).
fn check(text: &str) -> Result<roxmltree::Document<'_>, PipelineError> {
    if text.contains("<!ENTITY") {
        return Err(corrupt(
            SourceFormat::Svg,
            "DTD entity declarations are refused",
        ));
    }
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        nodes_limit: MAX_NODES,
        ..roxmltree::ParsingOptions::default()
    };
    let doc = roxmltree::Document::parse_with_options(text, options).map_err(|e| match e {
        roxmltree::Error::NodesLimitReached => {
            too_large(format!("more than {MAX_NODES} XML nodes"))
        }
        e => corrupt(SourceFormat::Svg, e),
    })?;
    let root = doc.root_element();
    if root.tag_name().name() != "svg" || root.tag_name().namespace() != Some(SVG_NS) {
        return Err(corrupt(SourceFormat::Svg, "the root is not an SVG element"));
    }

    // Nesting as written, without recursion (a deep document must not overflow our stack):
    // each node's depth from its parent's, in document order.
    let mut depths = vec![0u32; doc.descendants().count() + 1];
    let mut elements = 0u64;
    let mut text_chars = 0usize;
    let mut css_rules = 0u64;
    let mut path_data = 0usize;
    for node in root.descendants() {
        let parent = node.parent().map_or(0, |p| depths[p.id().get() as usize]);
        if node.is_element() {
            let depth = parent + 1;
            depths[node.id().get() as usize] = depth;
            elements += 1;
            path_data += node.attribute("d").map_or(0, str::len)
                + node.attribute("points").map_or(0, str::len);
            if depth > MAX_DEPTH {
                return Err(too_large(format!("nested deeper than {MAX_DEPTH}")));
            }
        } else if let Some(text) = node.text().filter(|_| node.is_text()) {
            if node
                .parent_element()
                .is_some_and(|p| p.has_tag_name("style"))
            {
                css_rules += text.bytes().filter(|&c| c == b'{').count() as u64;
            } else {
                text_chars += text.trim().chars().count();
            }
        }
    }
    if path_data > MAX_PATH_DATA {
        return Err(too_large(format!(
            "{path_data} bytes of path data, limit {MAX_PATH_DATA}"
        )));
    }
    if text_chars > MAX_TEXT_CHARS {
        return Err(too_large(format!(
            "{text_chars} characters of text, limit {MAX_TEXT_CHARS}"
        )));
    }
    if css_rules.saturating_mul(elements) > MAX_CSS_WORK {
        return Err(too_large(format!(
            "{css_rules} style rules x {elements} elements, limit {MAX_CSS_WORK}"
        )));
    }
    Expansion::new(&doc).total(root)?;
    Ok(doc)
}

const SVG_NS: &str = "http://www.w3.org/2000/svg";
const XLINK_NS: &str = "http://www.w3.org/1999/xlink";

/// Counts elements and nesting once `<use>` references and markers are instantiated (what
/// usvg will build), memoised per element so that a chain of uses is counted, not walked.
struct Expansion<'a, 'input> {
    ids: std::collections::HashMap<&'a str, roxmltree::Node<'a, 'input>>,
    /// (elements, height) of each element's expanded subtree.
    memo: std::collections::HashMap<roxmltree::NodeId, (u64, u32)>,
    /// Elements of all markers together: what one vertex of a marked shape may add.
    marker_cost: u64,
}

impl<'a, 'input> Expansion<'a, 'input> {
    fn new(doc: &'a roxmltree::Document<'input>) -> Self {
        let ids = doc
            .descendants()
            .filter_map(|n| n.attribute("id").map(|id| (id, n)))
            .collect();
        Expansion {
            ids,
            memo: std::collections::HashMap::new(),
            marker_cost: 0,
        }
    }

    fn total(mut self, root: roxmltree::Node<'a, 'input>) -> Result<u64, PipelineError> {
        let markers: Vec<_> = root
            .descendants()
            .filter(|n| n.has_tag_name((SVG_NS, "marker")))
            .collect();
        let mut marker_cost = 0u64;
        for marker in markers {
            marker_cost = marker_cost.saturating_add(self.size(marker, 0)?.0);
        }
        // Shapes inside markers were counted without markers (usvg never nests markers).
        self.memo.clear();
        self.marker_cost = marker_cost;
        let (elements, _) = self.size(root, 0)?;
        Ok(elements)
    }

    fn size(
        &mut self,
        node: roxmltree::Node<'a, 'input>,
        depth: u32,
    ) -> Result<(u64, u32), PipelineError> {
        if depth >= MAX_DEPTH {
            return Err(too_large(format!(
                "nested deeper than {MAX_DEPTH} once <use> is expanded"
            )));
        }
        if let Some(&known) = self.memo.get(&node.id()) {
            if u64::from(depth) + u64::from(known.1) > u64::from(MAX_DEPTH) {
                return Err(too_large(format!(
                    "nested deeper than {MAX_DEPTH} once <use> is expanded"
                )));
            }
            return Ok(known);
        }
        let (mut elements, mut height) = (1u64, 1u32);
        for child in node.children().filter(|c| c.is_element()) {
            let (e, h) = self.size(child, depth + 1)?;
            elements = elements.saturating_add(e);
            height = height.max(h + 1);
        }
        if node.has_tag_name((SVG_NS, "use"))
            && let Some(target) = node
                .attribute((XLINK_NS, "href"))
                .or_else(|| node.attribute("href"))
                .and_then(|href| href.strip_prefix('#'))
                .and_then(|id| self.ids.get(id).copied())
        {
            let (e, h) = self.size(target, depth + 1)?;
            elements = elements.saturating_add(e);
            height = height.max(h + 1);
        }
        if self.marker_cost > 0 {
            let vertices = match node.tag_name().name() {
                "path" => node.attribute("d").map_or(0, str::len) as u64 / 2 + 2,
                "polyline" | "polygon" => {
                    node.attribute("points").map_or(0, str::len) as u64 / 2 + 2
                }
                "line" => 2,
                _ => 0,
            };
            elements = elements.saturating_add(vertices.saturating_mul(self.marker_cost));
        }
        if elements > MAX_EXPANDED {
            return Err(too_large(format!(
                "more than {MAX_EXPANDED} elements once <use> and markers are expanded"
            )));
        }
        self.memo.insert(node.id(), (elements, height));
        Ok((elements, height))
    }
}

/// The root's width and height in px (px, in, cm, mm, pt, pc, em, ex; a percentage or a
/// missing one follows the viewBox, keeping its ratio when the other side is given), else the
/// viewBox's size, else 100 px; rounded, at least 1.
fn intrinsic_size(root: roxmltree::Node<'_, '_>) -> SvgHeader {
    let view_box = root.attribute("viewBox").and_then(|v| {
        let n: Vec<f64> = v
            .split(|c: char| c.is_ascii_whitespace() || c == ',')
            .filter(|s| !s.is_empty())
            .filter_map(|s| s.parse().ok())
            .collect();
        match n[..] {
            [_, _, w, h] if w.is_finite() && h.is_finite() && w > 0.0 && h > 0.0 => Some((w, h)),
            _ => None,
        }
    });
    let width = root.attribute("width").and_then(length);
    let height = root.attribute("height").and_then(length);
    let (w, h) = match (width, height, view_box) {
        (Some(w), Some(h), _) => (w, h),
        (Some(w), None, Some((vw, vh))) => (w, w * vh / vw),
        (None, Some(h), Some((vw, vh))) => (h * vw / vh, h),
        (None, None, Some(vb)) => vb,
        (Some(w), None, None) => (w, DEFAULT_SIZE),
        (None, Some(h), None) => (DEFAULT_SIZE, h),
        (None, None, None) => (DEFAULT_SIZE, DEFAULT_SIZE),
    };
    let px = |v: f64| v.round().clamp(1.0, f64::from(u32::MAX)) as u32;
    SvgHeader {
        width: px(w),
        height: px(h),
    }
}

/// A positive absolute length in px; `None` for a percentage, zero, negative or unreadable.
fn length(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic() || c == '%')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.trim().parse().ok()?;
    let scale = match unit.trim() {
        "" | "px" => 1.0,
        "in" => 96.0,
        "cm" => 96.0 / 2.54,
        "mm" => 96.0 / 25.4,
        "pt" => 4.0 / 3.0,
        "pc" => 16.0,
        "em" => 16.0,
        "ex" => 8.0,
        _ => return None,
    };
    let px = value * scale;
    (px.is_finite() && px > 0.0).then_some(px)
}

// --- the tree pass ----------------------------------------------------------------------

/// What rendering `tree` with `transform` onto a `canvas` will cost, against the caps.
fn budget(
    tree: &usvg::Tree,
    transform: tiny_skia::Transform,
    canvas: (u32, u32),
    limits: &Limits,
) -> Result<(), PipelineError> {
    let canvas_pixels = f64::from(canvas.0) * f64::from(canvas.1);
    let mut budget = Budget {
        transform,
        // resvg clamps layers and filter regions to 5x the canvas each way.
        max_layer: canvas_pixels * 25.0,
        max_tile: limits.max_source_pixels as f64,
        nodes: 0,
        segments: 0,
        work: 0.0,
    };
    budget.group(tree.root())
}

struct Budget {
    transform: tiny_skia::Transform,
    max_layer: f64,
    max_tile: f64,
    nodes: u64,
    segments: u64,
    work: f64,
}

impl Budget {
    fn group(&mut self, group: &usvg::Group) -> Result<(), PipelineError> {
        self.node()?;
        if group.should_isolate() {
            let layer = self.area(group.abs_layer_bounding_box().to_rect());
            // A layer, plus a clip and a mask buffer of the same size when there are.
            let buffers = 1.0
                + f64::from(u8::from(group.clip_path().is_some()))
                + f64::from(u8::from(group.mask().is_some()));
            self.add(layer * buffers)?;
        }
        if let Some(clip) = group.clip_path() {
            self.clip(clip)?;
        }
        let mut mask = group.mask();
        while let Some(m) = mask {
            self.group(m.root())?;
            mask = m.mask();
        }
        for filter in group.filters() {
            let region = filter
                .rect()
                .transform(group.abs_transform())
                .map_or(0.0, |r| self.area(r.to_rect()));
            for primitive in filter.primitives() {
                self.add(region * primitive_cost(primitive.kind(), &self.transform, group))?;
                if let usvg::filter::Kind::Image(image) = primitive.kind() {
                    self.group(image.root())?;
                }
            }
        }
        for child in group.children() {
            match child {
                usvg::Node::Group(g) => self.group(g)?,
                usvg::Node::Path(p) => self.path(p)?,
                usvg::Node::Text(t) => self.group(t.flattened())?,
                // The resolver loads no image, so there is none to count.
                usvg::Node::Image(_) => self.node()?,
            }
        }
        Ok(())
    }

    fn clip(&mut self, clip: &usvg::ClipPath) -> Result<(), PipelineError> {
        self.group(clip.root())?;
        match clip.clip_path() {
            Some(inner) => self.clip(inner),
            None => Ok(()),
        }
    }

    fn path(&mut self, path: &usvg::Path) -> Result<(), PipelineError> {
        self.node()?;
        let verbs = path.data().verbs().len() as u64;
        let bbox = path.abs_stroke_bounding_box();
        let area = self.area(bbox);
        let mut segments = verbs;
        let mut passes = 0.0;
        if let Some(fill) = path.fill() {
            passes += 1.0;
            self.paint(fill.paint(), path)?;
        }
        if let Some(stroke) = path.stroke() {
            passes += 1.0;
            self.paint(stroke.paint(), path)?;
            if let Some(dashes) = stroke.dasharray() {
                // Each segment is at most the box's diagonal long; one dash per period.
                let scale = self.scale();
                let period: f32 = dashes.iter().sum::<f32>() * scale;
                let diagonal = f64::from(bbox.width().hypot(bbox.height()) * scale);
                let pieces = verbs as f64 * diagonal / f64::from(period.max(1e-3));
                segments = segments.saturating_add(pieces.min(u64::MAX as f64) as u64);
            }
        }
        self.segments = self.segments.saturating_add(segments);
        if self.segments > MAX_SEGMENTS {
            return Err(too_large(format!(
                "more than {MAX_SEGMENTS} path segments to render"
            )));
        }
        self.add(area * passes)
    }

    fn paint(&mut self, paint: &usvg::Paint, path: &usvg::Path) -> Result<(), PipelineError> {
        let usvg::Paint::Pattern(pattern) = paint else {
            return Ok(());
        };
        // resvg renders the tile into its own pixmap, once per use.
        let (sx, sy) = self
            .transform
            .pre_concat(path.abs_transform())
            .pre_concat(pattern.transform())
            .get_scale();
        let rect = pattern.rect();
        let tile = f64::from(rect.width() * sx) * f64::from(rect.height() * sy);
        if tile.is_nan() || tile > self.max_tile {
            return Err(too_large(format!(
                "a pattern tile of {tile:.0} pixels, limit {}",
                self.max_tile
            )));
        }
        self.add(tile)?;
        self.group(pattern.root())
    }

    fn node(&mut self) -> Result<(), PipelineError> {
        self.nodes += 1;
        if self.nodes > MAX_RENDER_NODES {
            return Err(too_large(format!(
                "more than {MAX_RENDER_NODES} nodes to render"
            )));
        }
        Ok(())
    }

    fn add(&mut self, work: f64) -> Result<(), PipelineError> {
        self.work += work;
        if self.work.is_nan() || self.work > MAX_PIXEL_WORK {
            return Err(too_large(format!(
                "more than {MAX_PIXEL_WORK:.0} pixels of rendering work (paths, layers, filters)"
            )));
        }
        Ok(())
    }

    /// Device pixels of a rectangle in canvas coordinates, at most a layer's clamp.
    fn area(&self, rect: usvg::Rect) -> f64 {
        let device = rect.transform(self.transform);
        device.map_or(0.0, |r| {
            (f64::from(r.width()) * f64::from(r.height())).min(self.max_layer)
        })
    }

    fn scale(&self) -> f32 {
        let (sx, sy) = self.transform.get_scale();
        sx.max(sy)
    }
}

/// Per-pixel cost of a filter primitive relative to one pass over its region.
fn primitive_cost(
    kind: &usvg::filter::Kind,
    transform: &tiny_skia::Transform,
    group: &usvg::Group,
) -> f64 {
    use usvg::filter::Kind;
    let (sx, sy) = transform.pre_concat(group.abs_transform()).get_scale();
    // Weights measured against a plain fill (one unit: about 4 ns a pixel on this machine):
    // a blur pass over a region costs about 30 units a pixel (colour space conversion and
    // three box passes each way), whatever its radius.
    match kind {
        Kind::GaussianBlur(_) | Kind::DropShadow(_) => 32.0,
        // A window of (2r+1)^2 pixels for each pixel (about half a unit each).
        Kind::Morphology(m) => {
            let rx = f64::from(m.radius_x().get() * sx);
            let ry = f64::from(m.radius_y().get() * sy);
            (2.0 * rx + 1.0) * (2.0 * ry + 1.0)
        }
        Kind::ConvolveMatrix(c) => {
            2.0 * f64::from(c.matrix().columns()) * f64::from(c.matrix().rows())
        }
        Kind::Turbulence(t) => 16.0 * f64::from(t.num_octaves().max(1)),
        Kind::DiffuseLighting(_) | Kind::SpecularLighting(_) => 32.0,
        _ => 8.0,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn sniffs_svg_after_prolog() {
        for text in [
            "<svg xmlns='http://www.w3.org/2000/svg'/>",
            "\u{feff}  <?xml version='1.0'?>\n<!-- c --><!DOCTYPE svg PUBLIC \"-//W3C//DTD SVG 1.1//EN\" \"x\">\n<svg\n>",
            "<!DOCTYPE svg [ <!ELEMENT x ANY> ]><svg>",
        ] {
            assert!(is_svg(text.as_bytes()), "{text}");
        }
        for text in [
            "<svgx>",
            "<html><svg>",
            "<?xml version='1.0'?><html/>",
            "svg",
        ] {
            assert!(!is_svg(text.as_bytes()), "{text}");
        }
    }

    #[test]
    fn intrinsic_size_from_width_height_or_view_box() {
        let size = |attrs: &str| {
            let text = format!("<svg xmlns='{SVG_NS}' {attrs}/>");
            let h = header(text.as_bytes()).expect("header");
            (h.width, h.height)
        };
        assert_eq!(size("width='120' height='80'"), (120, 80));
        assert_eq!(size("width='1in' height='72pt'"), (96, 96));
        assert_eq!(size("viewBox='0 0 40 30'"), (40, 30));
        assert_eq!(
            size("width='100%' height='100%' viewBox='0,0,40,30'"),
            (40, 30)
        );
        assert_eq!(size("width='80' viewBox='0 0 40 30'"), (80, 60));
        assert_eq!(size(""), (100, 100));
    }

    fn render(text: &str, size: (u32, u32)) -> Result<Image, PipelineError> {
        let limits = Limits::default();
        let info = super::super::super::probe::probe(text.as_bytes(), &limits)?;
        let hint = DecodeHint {
            render_size: Some(size),
            ..DecodeHint::default()
        };
        super::super::decode(text.as_bytes(), &info, &limits, hint)
    }

    #[test]
    fn fixtures_match_an_independent_renderer() {
        // rsvg-convert's renders (see the fixtures README): interiors agree, anti-aliased
        // edge pixels differ by a few coverage steps, so a small mean and a bounded maximum.
        for (name, max_mean, max_diff) in [
            ("svg_shapes.svg", 0.6, 40),
            ("svg_gradient.svg", 0.1, 16),
            ("svg_alpha.svg", 0.05, 16),
            // The same DejaVu Sans on both sides, hinted differently.
            ("svg_text.svg", 1.0, 64),
        ] {
            let image = decode_fixture(&format!("formats/{name}")).expect(name);
            assert_eq!(image.layout, PixelLayout::Rgba8, "{name}");
            let reference = format!("formats/ref_{}.png", name.replace('.', "_"));
            let expected = decode_fixture(&reference).expect("reference");
            let expected = if expected.layout == PixelLayout::Rgb8 {
                let data = expected
                    .data
                    .chunks_exact(3)
                    .flat_map(|p| [p[0], p[1], p[2], 255])
                    .collect();
                Image::new(expected.width, expected.height, PixelLayout::Rgba8, data)
            } else {
                expected
            };
            let (mean, max) = difference(&image, &expected);
            assert!(
                mean <= max_mean && max <= max_diff,
                "{name}: mean {mean}, max {max}"
            );
        }
    }

    #[test]
    fn renders_sharp_at_the_requested_size() {
        // A 16x16 icon rendered at 1600x1600: the edge of the square stays one pixel wide.
        let text = format!(
            "<svg xmlns='{SVG_NS}' width='16' height='16'>\
             <rect x='4' y='4' width='8' height='8' fill='#000'/></svg>"
        );
        let image = render(&text, (1600, 1600)).expect("render");
        assert_eq!((image.width, image.height), (1600, 1600));
        assert_eq!(pixel(&image, 399, 800), [0, 0, 0, 0]);
        assert_eq!(pixel(&image, 400, 800), [0, 0, 0, 255]);
        assert_eq!(pixel(&image, 1199, 800), [0, 0, 0, 255]);
        assert_eq!(pixel(&image, 1200, 800)[3], 0);
    }

    #[test]
    fn text_uses_the_bundled_font_whatever_the_family() {
        let text = |family: &str| {
            format!(
                "<svg xmlns='{SVG_NS}' width='200' height='40'><text x='4' y='30' \
                 font-family='{family}' font-size='24'>Hello</text></svg>"
            )
        };
        let dejavu = render(&text("DejaVu Sans"), (200, 40)).expect("render");
        let inked = dejavu.data.chunks_exact(4).filter(|p| p[3] > 0).count();
        assert!(inked > 200, "text drawn: {inked} pixels");
        for family in [
            "Times New Roman",
            "monospace",
            "NoSuchFont",
            "url(http://x/f.ttf)",
        ] {
            let other = render(&text(family), (200, 40)).expect("render");
            assert_eq!(other.data, dejavu.data, "{family}");
        }
    }

    #[test]
    fn no_href_is_followed() {
        // An absolute path to a real PNG, a relative one, a URL and a data: PNG: none is drawn.
        let png = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/formats/png_rgba.png");
        let data = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            std::fs::read(&png).expect("png"),
        );
        for href in [
            png.display().to_string(),
            format!("file://{}", png.display()),
            "tests/fixtures/formats/png_rgba.png".to_string(),
            "http://127.0.0.1:9/x.png".to_string(),
            format!("data:image/png;base64,{data}"),
        ] {
            let text = format!(
                "<svg xmlns='{SVG_NS}' xmlns:xlink='{XLINK_NS}' width='64' height='48'>\
                 <image width='64' height='48' href='{href}'/>\
                 <image width='64' height='48' xlink:href='{href}'/></svg>"
            );
            let image = render(&text, (64, 48)).expect("render");
            assert!(image.data.iter().all(|&v| v == 0), "{href} was drawn");
        }
    }

    #[test]
    fn path_data_is_capped_before_usvg_parses_it() {
        // 9 MB of segments (too big for a fixture file): refused by the probe.
        let text = format!(
            "<svg xmlns='{SVG_NS}' width='9' height='9'><path d='M0 0{}'/></svg>",
            "L1 1".repeat(2_300_000)
        );
        let result = header(text.as_bytes());
        assert!(
            matches!(&result, Err(PipelineError::SourceTooLarge(m)) if m.contains("path data")),
            "{result:?}"
        );
    }

    #[test]
    fn caps_are_422_before_rendering() {
        // Each hostile file is refused by the cap it is made for.
        for (rel, why) in [
            (
                "hostile/svg_billion_laughs.svg",
                "entity declarations are refused",
            ),
            ("hostile/svg_deep_nesting.svg", "nested deeper than 64"),
            ("hostile/svg_many_nodes.svg", "more than 100000 XML nodes"),
            (
                "hostile/svg_use_bomb.svg",
                "elements once <use> and markers",
            ),
            (
                "hostile/svg_marker_bomb.svg",
                "elements once <use> and markers",
            ),
            ("hostile/svg_huge_filter.svg", "pixels of rendering work"),
            ("hostile/svg_overdraw.svg", "pixels of rendering work"),
            ("hostile/svg_huge_size.svg", "100000x100000"),
            ("hostile/svg_dash_bomb.svg", "path segments"),
            ("hostile/svg_pattern_tile.svg", "pattern tile"),
            ("hostile/truncated_svg.svg", "unexpected end"),
        ] {
            let result = decode_fixture(rel);
            let refused = match &result {
                Err(PipelineError::SourceTooLarge(m) | PipelineError::Corrupt(m)) => {
                    m.contains(why)
                }
                _ => false,
            };
            assert!(refused, "{rel}: {result:?}, expected {why:?}");
        }
    }
}
