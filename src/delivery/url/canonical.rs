//! The two canonical strings, in the normal spelling of every value: the cache-key form of a
//! resolved [`Transform`] ([`canonical`], inverted by [`parse_canonical`]) and the signing form
//! of the parameters a URL gave ([`TransformParams::signing_query`]).
//!
//! Owns how values are written back, by hand rather than through `fmt`, since both strings
//! are built on every request. Must never change what an existing transform or URL writes
//! (the cache-key form names every stored variant, the signing form every issued signature),
//! and `parse_canonical` must never accept a second spelling of a transform.

use super::query::{
    err, parse_bg, parse_bool, parse_crop, parse_fit, parse_flip, parse_int_u32, parse_ratio,
    parse_rotate_degrees, parse_u8,
};
use super::{Aspect, Dpr, RotateParam, TransformParams, UrlError};
use crate::pipeline::spec::{Crop, Fit, Flip, OutputFormat, Rgb, Rotate, Transform};

impl TransformParams {
    /// The spec's `canonical` for signatures: every transform parameter the URL gave (defaults
    /// included, unknown keys, `sig` and `exp` excluded), sorted by key, `k=v` joined with `&`.
    ///
    /// Values are written in their normal spelling, which is what SDKs emit: integers in
    /// decimal without leading zeros, `true`/`false`, `dpr` as the shortest decimal of its
    /// hundredths (`1.5`, `2.63` for `2.625`), `bg` as lower-case hex without `#`, and the
    /// preset as the bare key `p:{name}`. A URL already in normal spelling signs to the same
    /// string as its literal query (sorted).
    pub fn signing_query(&self) -> String {
        let mut out = String::with_capacity(128);
        // Written in sorted key order: animated, aspect, bg, blur, crop, dpr, fit, flip,
        // format, frame, grayscale, h, p:{name}, q, rotate, sharpen, w.
        if let Some(animated) = self.animated {
            push_str_pair(
                &mut out,
                "animated",
                if animated { "true" } else { "false" },
            );
        }
        if let Some(aspect) = self.aspect {
            match aspect {
                Aspect::Original => push_str_pair(&mut out, "aspect", "original"),
                Aspect::Ratio(w, h) => push_ratio(&mut out, w, h),
            }
        }
        if let Some(bg) = self.bg {
            push_bg(&mut out, bg);
        }
        if let Some(blur) = self.blur {
            push_num(&mut out, "blur", blur.into());
        }
        if let Some(crop) = self.crop {
            push_str_pair(&mut out, "crop", crop_name(crop));
        }
        if let Some(dpr) = self.dpr {
            start_pair(&mut out, "dpr");
            dpr.write(&mut out);
        }
        if let Some(fit) = self.fit {
            push_str_pair(&mut out, "fit", fit_name(fit));
        }
        if let Some(flip) = self.flip {
            push_str_pair(&mut out, "flip", flip_name(flip));
        }
        if self.format_auto {
            push_str_pair(&mut out, "format", "auto");
        } else if let Some(format) = self.format {
            // `jpeg` is the normal spelling of JPEG here (the preset API's), `jpg` is accepted.
            let name = match format {
                OutputFormat::Jpeg => "jpeg",
                other => other.extension(),
            };
            push_str_pair(&mut out, "format", name);
        }
        if let Some(frame) = self.frame {
            push_num(&mut out, "frame", frame);
        }
        if let Some(gray) = self.grayscale {
            push_str_pair(&mut out, "grayscale", if gray { "true" } else { "false" });
        }
        if let Some(h) = self.h {
            push_num(&mut out, "h", h);
        }
        if let Some(preset) = &self.preset {
            if !out.is_empty() {
                out.push('&');
            }
            out.push_str("p:");
            out.push_str(preset);
        }
        if let Some(q) = self.q {
            push_num(&mut out, "q", q.into());
        }
        if let Some(rotate) = self.rotate {
            let name = match rotate {
                RotateParam::Degrees(r) => rotate_name(r),
                RotateParam::Auto => "auto",
            };
            push_str_pair(&mut out, "rotate", name);
        }
        if let Some(sharpen) = self.sharpen {
            push_num(&mut out, "sharpen", sharpen.into());
        }
        if let Some(w) = self.w {
            push_num(&mut out, "w", w);
        }
        out
    }
}

impl Dpr {
    fn write(self, out: &mut String) {
        let (int, frac) = (self.0 / 100, self.0 % 100);
        push_decimal(out, int.into());
        if frac != 0 {
            out.push('.');
            push_decimal(out, (frac / 10).into());
            if frac % 10 != 0 {
                push_decimal(out, (frac % 10).into());
            }
        }
    }
}

fn fit_name(fit: Fit) -> &'static str {
    match fit {
        Fit::Cover => "cover",
        Fit::Contain => "contain",
        Fit::Fill => "fill",
        Fit::ScaleDown => "scale-down",
    }
}

fn crop_name(crop: Crop) -> &'static str {
    match crop {
        Crop::Center => "center",
        Crop::Top => "top",
        Crop::Bottom => "bottom",
        Crop::Left => "left",
        Crop::Right => "right",
        Crop::TopLeft => "top-left",
        Crop::TopRight => "top-right",
        Crop::BottomLeft => "bottom-left",
        Crop::BottomRight => "bottom-right",
        Crop::Attention => "attention",
        Crop::Entropy => "entropy",
    }
}

fn rotate_name(rotate: Rotate) -> &'static str {
    match rotate {
        Rotate::R0 => "0",
        Rotate::R90 => "90",
        Rotate::R180 => "180",
        Rotate::R270 => "270",
    }
}

fn flip_name(flip: Flip) -> &'static str {
    match flip {
        Flip::Horizontal => "h",
        Flip::Vertical => "v",
        Flip::Both => "both",
    }
}

fn start_pair(out: &mut String, key: &str) {
    if !out.is_empty() {
        out.push('&');
    }
    out.push_str(key);
    out.push('=');
}

fn push_str_pair(out: &mut String, key: &str, value: &str) {
    start_pair(out, key);
    out.push_str(value);
}

/// Decimal digits without `fmt` machinery: the canonical forms are built on every request and
/// `write!` costs several times more than the rest of the string.
pub(super) fn push_decimal(out: &mut String, value: u64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    let mut v = value;
    loop {
        at -= 1;
        // `v % 10` < 10, so the narrowing is exact.
        buf[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for &digit in &buf[at..] {
        out.push(char::from(digit));
    }
}

fn push_num(out: &mut String, key: &str, value: u32) {
    start_pair(out, key);
    push_decimal(out, value.into());
}

fn push_ratio(out: &mut String, w: u8, h: u8) {
    start_pair(out, "aspect");
    push_decimal(out, w.into());
    out.push(':');
    push_decimal(out, h.into());
}

fn push_bg(out: &mut String, Rgb(rgb): Rgb) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    start_pair(out, "bg");
    for byte in rgb {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
}

/// The cache-key form of a resolved transform: keys sorted, values equal to
/// [`Transform::default`] left out (so `q=80` and no `q` share an entry), normal spellings
/// only (see [`TransformParams::signing_query`]). Sizes are device pixels (`dpr` is folded
/// in); `preset` and `format=auto` are gone by now (the output format is keyed separately).
/// The default transform is the empty string. Stable: changing it invalidates every cache.
pub fn canonical(t: &Transform) -> String {
    let d = Transform::default();
    let mut out = String::with_capacity(64);
    // Sorted: animated, aspect, bg, blur, crop, fit, flip, frame, grayscale, h, q, rotate,
    // sharpen, w.
    if t.animated != d.animated {
        push_str_pair(&mut out, "animated", "false");
    }
    if let Some((w, h)) = t.aspect {
        push_ratio(&mut out, w, h);
    }
    if t.background != d.background {
        push_bg(&mut out, t.background);
    }
    if t.blur != d.blur {
        push_num(&mut out, "blur", t.blur.into());
    }
    if t.crop != d.crop {
        push_str_pair(&mut out, "crop", crop_name(t.crop));
    }
    if t.fit != d.fit {
        push_str_pair(&mut out, "fit", fit_name(t.fit));
    }
    if let Some(flip) = t.flip {
        push_str_pair(&mut out, "flip", flip_name(flip));
    }
    if let Some(frame) = t.frame {
        push_num(&mut out, "frame", frame);
    }
    if t.grayscale != d.grayscale {
        push_str_pair(&mut out, "grayscale", "true");
    }
    if let Some(h) = t.height {
        push_num(&mut out, "h", h);
    }
    if t.quality != d.quality {
        push_num(&mut out, "q", t.quality.into());
    }
    if t.rotate != d.rotate {
        push_str_pair(&mut out, "rotate", rotate_name(t.rotate));
    }
    if t.sharpen != d.sharpen {
        push_num(&mut out, "sharpen", t.sharpen.into());
    }
    if let Some(w) = t.width {
        push_num(&mut out, "w", w);
    }
    out
}

const MSG_CANONICAL: &str = "not a canonical transform (keys sorted, normal spellings, \
                             no defaults, no unknown keys)";

/// Inverse of [`canonical`]: accepts exactly the strings `canonical` produces, so each
/// transform has one spelling. Sizes are device pixels and may exceed the URL's 10000 (the
/// output limit is the operator's), so any positive `u32` is accepted for `w`/`h`.
pub fn parse_canonical(s: &str) -> Result<Transform, UrlError> {
    let mut t = Transform::default();
    for pair in s.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| err(pair, MSG_CANONICAL))?;
        let parsed = match key {
            "animated" => parse_bool(value).map(|a| t.animated = a),
            "aspect" => parse_ratio(value).map(|r| t.aspect = Some(r)),
            "bg" => parse_bg(value).map(|c| t.background = c),
            "blur" => parse_u8(value, 0).map(|v| t.blur = v),
            "crop" => parse_crop(value).map(|c| t.crop = c),
            "fit" => parse_fit(value).map(|f| t.fit = f),
            "flip" => parse_flip(value).map(|f| t.flip = Some(f)),
            "frame" => parse_int_u32(value, 1, u32::MAX).map(|n| t.frame = Some(n)),
            "grayscale" => parse_bool(value).map(|g| t.grayscale = g),
            "h" => parse_int_u32(value, 1, u32::MAX).map(|h| t.height = Some(h)),
            "q" => parse_u8(value, 1).map(|q| t.quality = q),
            "rotate" => parse_rotate_degrees(value).map(|r| t.rotate = r),
            "sharpen" => parse_u8(value, 0).map(|v| t.sharpen = v),
            "w" => parse_int_u32(value, 1, u32::MAX).map(|w| t.width = Some(w)),
            _ => None,
        };
        if parsed.is_none() {
            return Err(err(key, MSG_CANONICAL));
        }
    }
    // Order, duplicates, defaults and spellings are all checked at once by re-rendering.
    if canonical(&t) != s {
        return Err(err("canonical", MSG_CANONICAL));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::url::resolve::reduce_ratio;
    use crate::delivery::url::test_support::{params, proptest_config};
    use crate::delivery::url::{TransformDefaults, parse_query};
    use crate::pipeline::spec::Limits;
    use proptest::prelude::*;

    #[test]
    fn order_and_unknown_keys_do_not_change_canonical() {
        let limits = Limits::default();
        let defaults = TransformDefaults::default();
        let a = params("w=400&h=300&fit=contain&q=70&dpr=2&grayscale=1&bg=00ff00");
        let b = params("v=9&bg=00FF00&grayscale=true&dpr=2.0&q=70&fit=contain&h=300&w=400&x=1");
        assert_eq!(a, b);
        let ta = a.resolve(&defaults, &limits);
        assert_eq!(canonical(&ta), canonical(&b.resolve(&defaults, &limits)));
        assert_eq!(
            canonical(&ta),
            "bg=00ff00&fit=contain&grayscale=true&h=600&q=70&w=800"
        );
    }

    #[test]
    fn frame_spellings_share_one_entry() {
        let limits = Limits::default();
        let defaults = TransformDefaults::default();
        let key = |q: &str| canonical(&params(q).resolve(&defaults, &limits));
        for first in [
            "animated=false",
            "animated=0",
            "frame=0",
            "frame=0&animated=true",
        ] {
            assert_eq!(key(first), "animated=false", "{first}");
        }
        assert_eq!(key("animated=true"), "");
        assert_eq!(key("animated=1&w=10"), "w=10");
        assert_eq!(key("w=10&frame=2"), "frame=2&w=10");
        assert_eq!(key("frame=2&animated=false"), "frame=2");
        assert_eq!(key("animated=0&w=10"), "animated=false&w=10");
        assert!(parse_canonical("frame=0").is_err());
        assert!(parse_canonical("animated=true").is_err());
        let t = parse_canonical("animated=false&frame=3").expect("canonical");
        assert_eq!((t.frame, t.animated), (Some(3), false));
        assert_eq!(
            params("frame=7&animated=0").signing_query(),
            "animated=false&frame=7"
        );
    }

    #[test]
    fn canonical_drops_defaults() {
        let limits = Limits::default();
        let defaults = TransformDefaults::default();
        let t = params("q=80&fit=cover&crop=center&rotate=auto&aspect=original&blur=0&bg=ffffff")
            .resolve(&defaults, &limits);
        assert_eq!(t, Transform::default());
        assert_eq!(canonical(&t), "");
        assert_eq!(parse_canonical(""), Ok(Transform::default()));
    }

    #[test]
    fn parse_canonical_accepts_only_canonical_spellings() {
        assert!(parse_canonical("h=10&w=20").is_ok());
        for bad in [
            "w=20&h=10",   // unsorted
            "q=80",        // default value
            "w=10&w=10",   // duplicate
            "grayscale=1", // non-normal spelling
            "dpr=2",       // not part of a resolved transform
            "rotate=auto", // resolved away
            "w=010",       // leading zero
            "v=1",         // unknown key
            "w",           // no value
            "bg=FFAA00",   // upper-case hex
            "aspect=original",
        ] {
            assert!(parse_canonical(bad).is_err(), "{bad}");
        }
        // Device-pixel sizes may exceed the URL grammar's 10000.
        assert_eq!(parse_canonical("w=20000").unwrap().width, Some(20_000));
    }

    #[test]
    fn signing_query_sorts_by_key() {
        let p = params(
            "w=100&sharpen=5&rotate=auto&q=80&p:card&h=50&grayscale=0&format=auto&flip=both\
             &fit=fill&dpr=1.5&crop=top&blur=2&bg=%23ABCDEF&aspect=4:3&sig=x&exp=9&zz=1",
        );
        assert_eq!(
            p.signing_query(),
            "aspect=4:3&bg=abcdef&blur=2&crop=top&dpr=1.5&fit=fill&flip=both&format=auto\
             &grayscale=false&h=50&p:card&q=80&rotate=auto&sharpen=5&w=100"
        );
        assert_eq!(TransformParams::default().signing_query(), "");
    }

    #[test]
    fn decimal_writer() {
        for v in [0, 7, 10, 99, 10_000, u64::from(u32::MAX), u64::MAX] {
            let mut s = String::from("x");
            push_decimal(&mut s, v);
            assert_eq!(s, format!("x{v}"));
        }
    }

    #[test]
    fn dpr_normal_spelling() {
        let spell = |h: u16| {
            let mut s = String::new();
            Dpr::from_hundredths(h).unwrap().write(&mut s);
            s
        };
        assert_eq!(spell(100), "1");
        assert_eq!(spell(150), "1.5");
        assert_eq!(spell(205), "2.05");
        assert_eq!(spell(400), "4");
        assert_eq!(Dpr::from_hundredths(99), None);
        assert_eq!(Dpr::from_hundredths(401), None);
    }

    // ---- properties ----

    fn fit() -> impl Strategy<Value = Fit> {
        prop_oneof![
            Just(Fit::Cover),
            Just(Fit::Contain),
            Just(Fit::Fill),
            Just(Fit::ScaleDown)
        ]
    }

    fn crop() -> impl Strategy<Value = Crop> {
        prop::sample::select(vec![
            Crop::Center,
            Crop::Top,
            Crop::Bottom,
            Crop::Left,
            Crop::Right,
            Crop::TopLeft,
            Crop::TopRight,
            Crop::BottomLeft,
            Crop::BottomRight,
            Crop::Attention,
            Crop::Entropy,
        ])
    }

    fn rotate() -> impl Strategy<Value = Rotate> {
        prop_oneof![
            Just(Rotate::R0),
            Just(Rotate::R90),
            Just(Rotate::R180),
            Just(Rotate::R270)
        ]
    }

    fn flip() -> impl Strategy<Value = Flip> {
        prop_oneof![
            Just(Flip::Horizontal),
            Just(Flip::Vertical),
            Just(Flip::Both)
        ]
    }

    fn rgb() -> impl Strategy<Value = Rgb> {
        any::<[u8; 3]>().prop_map(Rgb)
    }

    /// Resolved transforms as `resolve` can produce them: ratios reduced, quality 1..=100,
    /// strengths 0..=100, sizes any positive `u32` (device pixels under any operator limit).
    fn transform() -> impl Strategy<Value = Transform> {
        (
            (
                prop::option::of(1..=u32::MAX),
                prop::option::of(1..=u32::MAX),
                fit(),
                prop::option::of((1u8..=100, 1u8..=100).prop_map(|(w, h)| reduce_ratio(w, h))),
                1u8..=100,
                crop(),
            ),
            (
                any::<bool>(),
                0u8..=100,
                0u8..=100,
                rotate(),
                prop::option::of(flip()),
                rgb(),
            ),
            (prop::option::of(1..=99_999u32), any::<bool>()),
        )
            .prop_map(
                |(
                    (width, height, fit, aspect, quality, crop),
                    (grayscale, blur, sharpen, rotate, flip, background),
                    (frame, animated),
                )| Transform {
                    width,
                    height,
                    fit,
                    aspect,
                    quality,
                    crop,
                    grayscale,
                    blur,
                    sharpen,
                    rotate,
                    flip,
                    background,
                    frame,
                    animated: frame.is_some() || animated,
                },
            )
    }

    /// Every field independently absent or any valid value.
    fn transform_params() -> impl Strategy<Value = TransformParams> {
        use prop::option::of;
        let aspect = prop_oneof![
            Just(Aspect::Original),
            (1u8..=100, 1u8..=100).prop_map(|(w, h)| Aspect::Ratio(w, h)),
        ];
        let rotate_param = prop_oneof![
            Just(RotateParam::Auto),
            rotate().prop_map(RotateParam::Degrees)
        ];
        (
            (
                of(1u32..=10_000),
                of(1u32..=10_000),
                of(fit()),
                of(aspect),
                of(1u8..=100),
                of((Dpr::MIN..=Dpr::MAX).prop_map(Dpr)),
                of(crop()),
                of(any::<bool>()),
            ),
            (
                of(0u8..=100),
                of(0u8..=100),
                of(rotate_param),
                of(flip()),
                of("[A-Za-z0-9_-]{1,50}"),
                any::<bool>(),
                of(rgb()),
            ),
            (of(0u32..=99_999), of(any::<bool>())),
        )
            .prop_map(
                |(
                    (w, h, fit, aspect, q, dpr, crop, grayscale),
                    (blur, sharpen, rotate, flip, preset, format_auto, bg),
                    (frame, animated),
                )| TransformParams {
                    w,
                    h,
                    fit,
                    aspect,
                    q,
                    dpr,
                    crop,
                    grayscale,
                    blur,
                    sharpen,
                    rotate,
                    flip,
                    preset,
                    format_auto,
                    format: None,
                    bg,
                    frame,
                    animated,
                },
            )
    }

    proptest! {
        #![proptest_config(proptest_config())]

        #[test]
        fn canonical_round_trips(t in transform()) {
            prop_assert_eq!(parse_canonical(&canonical(&t)), Ok(t));
        }

        #[test]
        fn signing_query_round_trips(p in transform_params()) {
            let parsed = parse_query(&p.signing_query()).map(|q| q.params);
            prop_assert_eq!(parsed, Ok(p));
        }

        /// Shuffled pairs plus cache busters resolve to the same canonical form.
        #[test]
        fn order_and_unknown_keys_never_change_canonical(
            (p, shuffled) in transform_params().prop_flat_map(|p| {
                let signing = p.signing_query();
                let mut pairs: Vec<String> =
                    signing.split('&').filter(|s| !s.is_empty()).map(String::from).collect();
                pairs.push("v=3".into());
                pairs.push("utm_campaign=spring+sale".into());
                (Just(p), Just(pairs).prop_shuffle())
            })
        ) {
            let limits = Limits::default();
            let defaults = TransformDefaults::default();
            let reparsed = parse_query(&shuffled.join("&")).map(|q| q.params);
            prop_assert_eq!(reparsed.as_ref(), Ok(&p));
            let expected = canonical(&p.resolve(&defaults, &limits));
            let got = reparsed.map(|r| canonical(&r.resolve(&defaults, &limits)));
            prop_assert_eq!(got, Ok(expected));
        }
    }
}
