//! The query grammar: `&`-separated pairs, decoded and validated into a [`DeliveryQuery`]
//! (transform parameters, preset, signature, expiry), and the accepted spellings of each
//! value, which `canonical::parse_canonical` reuses to read the cache-key form back.
//!
//! Owns what a client may write, and nothing else. Must never apply defaults or presets, fold
//! `dpr` into sizes (that is `resolve`), choose how a value is written back (that is
//! `canonical`), or refuse an unknown key: cache busters (`v=3`) pass unread.

use std::borrow::Cow;

use super::path::{hex_value, parse_ext};
use super::{Aspect, DeliveryQuery, Dpr, RotateParam, UrlError};
use crate::pipeline::spec::{Crop, Fit, Flip, Rgb, Rotate};

const MSG_W: &str = "w must be an integer from 1 to 10000";
const MSG_H: &str = "h must be an integer from 1 to 10000";
const MSG_FIT: &str = "fit must be one of cover, contain, fill, scale-down";
const MSG_ASPECT: &str = "aspect must be original or W:H with integers from 1 to 100";
const MSG_Q: &str = "q must be an integer from 1 to 100";
const MSG_DPR: &str = "dpr must be a number from 1 to 4 (e.g. 1.5)";
const MSG_CROP: &str = "crop must be one of center, top, bottom, left, right, top-left, \
                        top-right, bottom-left, bottom-right, attention, entropy";
const MSG_GRAYSCALE: &str = "grayscale must be one of true, false, 1, 0";
const MSG_BLUR: &str = "blur must be an integer from 0 to 100";
const MSG_SHARPEN: &str = "sharpen must be an integer from 0 to 100";
const MSG_ROTATE: &str = "rotate must be one of 0, 90, 180, 270, auto";
const MSG_FLIP: &str = "flip must be one of h, v, both";
const MSG_FORMAT: &str = "format must be auto, jpeg, jpg, png, webp, avif, jxl or gif";
const MSG_FRAME: &str = "frame must be an integer from 0 to 99999 (the first frame is 0)";
const MSG_ANIMATED: &str = "animated must be one of true, false, 1, 0";
const MSG_BG: &str = "bg must be 6 hex digits RRGGBB (optionally preceded by %23)";
const MSG_PRESET: &str = "preset must be p:{name} with a name of 1 to 50 characters from \
                          A-Z, a-z, 0-9, _ and -, and no value";
const MSG_SIG: &str = "signature must be 1 to 256 base64url characters (A-Z, a-z, 0-9, - and _)";
const MSG_EXP: &str = "expiry must be unix seconds, an integer from 0 to 9223372036854775807";

/// Parses the raw query string (after `?`, still encoded). Pairs are `&`-separated and
/// order-free; `+` and `%XX` are decoded in keys and values; empty pairs are skipped; unknown
/// keys are ignored without decoding their values (cache busters such as `v=3`). A known key
/// with a bad value is an error naming the key as written. A repeated key: the last valid
/// occurrence wins (every occurrence is validated). `sig`/`token` and `exp`/`expires` are
/// aliases of one another, so the last of either spelling wins.
///
/// Presets: `p:{name}`, `p:{name}=` and `p%3A{name}` are the same parameter; a value after
/// the `=` is an error.
pub fn parse_query(query: &str) -> Result<DeliveryQuery, UrlError> {
    let mut out = DeliveryQuery::default();
    for pair in query.split('&') {
        if pair.is_empty() {
            continue;
        }
        let (raw_key, raw_value) = match pair.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (pair, None),
        };
        let key = decode_component(raw_key);
        let Some(key) = Key::parse(&key) else {
            continue;
        };
        let value = raw_value.map_or(Cow::Borrowed(""), decode_component);
        apply(&mut out, key, &value)?;
    }
    Ok(out)
}

/// The known keys. Borrowing the preset name from the decoded key keeps the loop free of
/// allocation until a preset is actually stored.
#[derive(Clone, Copy)]
enum Key<'a> {
    W,
    H,
    Fit,
    Aspect,
    Q,
    Dpr,
    Crop,
    Grayscale,
    Blur,
    Sharpen,
    Rotate,
    Flip,
    Format,
    Bg,
    Frame,
    Animated,
    Preset(&'a str),
    Sig(&'static str),
    Exp(&'static str),
}

impl<'a> Key<'a> {
    fn parse(key: &'a str) -> Option<Key<'a>> {
        Some(match key {
            "w" => Key::W,
            "h" => Key::H,
            "fit" => Key::Fit,
            "aspect" => Key::Aspect,
            "q" => Key::Q,
            "dpr" => Key::Dpr,
            "crop" => Key::Crop,
            "grayscale" => Key::Grayscale,
            "blur" => Key::Blur,
            "sharpen" => Key::Sharpen,
            "rotate" => Key::Rotate,
            "flip" => Key::Flip,
            "format" => Key::Format,
            "bg" => Key::Bg,
            "frame" => Key::Frame,
            "animated" => Key::Animated,
            "sig" => Key::Sig("sig"),
            "token" => Key::Sig("token"),
            "exp" => Key::Exp("exp"),
            "expires" => Key::Exp("expires"),
            _ => Key::Preset(key.strip_prefix("p:")?),
        })
    }
}

fn apply(out: &mut DeliveryQuery, key: Key<'_>, value: &str) -> Result<(), UrlError> {
    let p = &mut out.params;
    match key {
        Key::W => p.w = Some(parse_int_u32(value, 1, 10_000).ok_or_else(|| err("w", MSG_W))?),
        Key::H => p.h = Some(parse_int_u32(value, 1, 10_000).ok_or_else(|| err("h", MSG_H))?),
        Key::Fit => p.fit = Some(parse_fit(value).ok_or_else(|| err("fit", MSG_FIT))?),
        Key::Aspect => {
            p.aspect = Some(parse_aspect(value).ok_or_else(|| err("aspect", MSG_ASPECT))?);
        }
        Key::Q => p.q = Some(parse_u8(value, 1).ok_or_else(|| err("q", MSG_Q))?),
        Key::Dpr => p.dpr = Some(Dpr::parse(value).ok_or_else(|| err("dpr", MSG_DPR))?),
        Key::Crop => p.crop = Some(parse_crop(value).ok_or_else(|| err("crop", MSG_CROP))?),
        Key::Grayscale => {
            p.grayscale = Some(parse_bool(value).ok_or_else(|| err("grayscale", MSG_GRAYSCALE))?);
        }
        Key::Blur => p.blur = Some(parse_u8(value, 0).ok_or_else(|| err("blur", MSG_BLUR))?),
        Key::Sharpen => {
            p.sharpen = Some(parse_u8(value, 0).ok_or_else(|| err("sharpen", MSG_SHARPEN))?);
        }
        Key::Rotate => {
            p.rotate = Some(parse_rotate(value).ok_or_else(|| err("rotate", MSG_ROTATE))?);
        }
        Key::Flip => p.flip = Some(parse_flip(value).ok_or_else(|| err("flip", MSG_FLIP))?),
        Key::Format => {
            if value == "auto" {
                (p.format_auto, p.format) = (true, None);
            } else {
                let format = parse_ext(value).map_err(|_| err("format", MSG_FORMAT))?;
                (p.format_auto, p.format) = (false, Some(format));
            }
        }
        Key::Bg => p.bg = Some(parse_bg(value).ok_or_else(|| err("bg", MSG_BG))?),
        Key::Frame => {
            p.frame = Some(parse_int_u32(value, 0, 99_999).ok_or_else(|| err("frame", MSG_FRAME))?);
        }
        Key::Animated => {
            p.animated = Some(parse_bool(value).ok_or_else(|| err("animated", MSG_ANIMATED))?);
        }
        Key::Preset(name) => {
            if !value.is_empty() || !is_preset_name(name) {
                return Err(err("p", MSG_PRESET));
            }
            // Reuse the previous allocation when a URL repeats presets.
            let slot = p.preset.get_or_insert_with(String::new);
            slot.clear();
            slot.push_str(name);
        }
        Key::Sig(spelling) => {
            if value.is_empty()
                || value.len() > 256
                || !value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(err(spelling, MSG_SIG));
            }
            out.signature = Some(value.to_owned());
        }
        Key::Exp(spelling) => {
            let exp = parse_int(value, 0, i64::MAX.unsigned_abs())
                .and_then(|v| i64::try_from(v).ok())
                .ok_or_else(|| err(spelling, MSG_EXP))?;
            out.expires = Some(exp);
        }
    }
    Ok(())
}

pub(super) fn err(key: &str, message: &str) -> UrlError {
    UrlError::new(key, message)
}

/// Decodes `+` as a space and `%XX` escapes; borrows when there is nothing to decode (the
/// usual case). Malformed escapes stay literal and invalid UTF-8 becomes U+FFFD: either way
/// the value then fails validation if its key is known, and unknown keys are ignored.
fn decode_component(raw: &str) -> Cow<'_, str> {
    if !raw.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(raw);
    }
    // One pass, one allocation: `+` first would need a second buffer.
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = match (b, bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) => hex_value(hi).zip(hex_value(lo)),
            _ => None,
        };
        match (b, escaped) {
            (_, Some((hi, lo))) => {
                out.push((hi << 4) | lo);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (b, None) => {
                out.push(b);
                i += 1;
            }
        }
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

/// Plain decimal digits only: no sign, no spaces, no leading `+`; leading zeros are accepted
/// (`w=0400` is 400) since they cannot be confused with anything else. Bounded in length so
/// overflow cannot happen.
fn parse_int(s: &str, min: u64, max: u64) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v = s
        .bytes()
        .fold(0u64, |acc, b| acc * 10 + u64::from(b - b'0'));
    (min..=max).contains(&v).then_some(v)
}

pub(super) fn parse_int_u32(s: &str, min: u32, max: u32) -> Option<u32> {
    parse_int(s, u64::from(min), u64::from(max)).and_then(|v| u32::try_from(v).ok())
}

pub(super) fn parse_u8(s: &str, min: u8) -> Option<u8> {
    parse_int(s, u64::from(min), 100).and_then(|v| u8::try_from(v).ok())
}

pub(super) fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

pub(super) fn parse_fit(s: &str) -> Option<Fit> {
    Some(match s {
        "cover" => Fit::Cover,
        "contain" => Fit::Contain,
        "fill" => Fit::Fill,
        "scale-down" => Fit::ScaleDown,
        _ => return None,
    })
}

pub(super) fn parse_crop(s: &str) -> Option<Crop> {
    Some(match s {
        "center" => Crop::Center,
        "top" => Crop::Top,
        "bottom" => Crop::Bottom,
        "left" => Crop::Left,
        "right" => Crop::Right,
        "top-left" => Crop::TopLeft,
        "top-right" => Crop::TopRight,
        "bottom-left" => Crop::BottomLeft,
        "bottom-right" => Crop::BottomRight,
        "attention" => Crop::Attention,
        "entropy" => Crop::Entropy,
        _ => return None,
    })
}

pub(super) fn parse_rotate_degrees(s: &str) -> Option<Rotate> {
    Some(match s {
        "0" => Rotate::R0,
        "90" => Rotate::R90,
        "180" => Rotate::R180,
        "270" => Rotate::R270,
        _ => return None,
    })
}

fn parse_rotate(s: &str) -> Option<RotateParam> {
    match s {
        "auto" => Some(RotateParam::Auto),
        _ => parse_rotate_degrees(s).map(RotateParam::Degrees),
    }
}

pub(super) fn parse_flip(s: &str) -> Option<Flip> {
    Some(match s {
        "h" => Flip::Horizontal,
        "v" => Flip::Vertical,
        "both" => Flip::Both,
        _ => return None,
    })
}

/// `W:H`, each 1..=100, kept as written.
pub(super) fn parse_ratio(s: &str) -> Option<(u8, u8)> {
    let (w, h) = s.split_once(':')?;
    Some((parse_u8(w, 1)?, parse_u8(h, 1)?))
}

fn parse_aspect(s: &str) -> Option<Aspect> {
    match s {
        "original" => Some(Aspect::Original),
        _ => parse_ratio(s).map(|(w, h)| Aspect::Ratio(w, h)),
    }
}

/// `RRGGBB`, hex digits in either case. A leading `#` is accepted because it can only arrive
/// escaped (`%23`): a raw `#` starts the fragment and never reaches the server.
pub(super) fn parse_bg(s: &str) -> Option<Rgb> {
    let hex = s.strip_prefix('#').unwrap_or(s).as_bytes();
    let &[a, b, c, d, e, f] = hex else {
        return None;
    };
    let byte = |hi: u8, lo: u8| Some((hex_value(hi)? << 4) | hex_value(lo)?);
    Some(Rgb([byte(a, b)?, byte(c, d)?, byte(e, f)?]))
}

fn is_preset_name(name: &str) -> bool {
    (1..=50).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Dpr {
    fn parse(s: &str) -> Option<Dpr> {
        let (int, frac) = match s.split_once('.') {
            Some((int, frac)) => (int, Some(frac)),
            None => (s, None),
        };
        // One integer digit covers 1..=4 and keeps "01" or "1e0" from being a second spelling.
        let &[digit] = int.as_bytes() else {
            return None;
        };
        let int = u16::from(digit.wrapping_sub(b'0'));
        if !(1..=4).contains(&int) {
            return None;
        }
        let mut hundredths = int * 100;
        if let Some(frac) = frac {
            let frac = frac.as_bytes();
            if frac.is_empty() || !frac.iter().all(u8::is_ascii_digit) {
                return None;
            }
            // 4.000 is 4, 4.001 is over the range even though it rounds to 4.00.
            if int == 4 && frac.iter().any(|&d| d != b'0') {
                return None;
            }
            let digit = |i: usize| frac.get(i).map_or(0, |&d| u16::from(d - b'0'));
            hundredths += digit(0) * 10 + digit(1);
            if digit(2) >= 5 {
                hundredths += 1;
            }
        }
        Dpr::from_hundredths(hundredths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::url::test_support::params;

    fn key_of_error(query: &str) -> String {
        parse_query(query).expect_err(query).key
    }

    /// Every key: accepted spellings with the parsed value, rejected spellings.
    #[test]
    fn every_key_accepts_and_rejects() {
        /// (key, [(accepted value, its signing form)], [rejected values]). Parsed values are
        /// compared through `signing_query`, which spells out each one.
        type KeyCases = (
            &'static str,
            &'static [(&'static str, &'static str)],
            &'static [&'static str],
        );
        let table: &[KeyCases] = &[
            (
                "w",
                &[("1", "w=1"), ("10000", "w=10000"), ("0400", "w=400")],
                &[
                    "0",
                    "10001",
                    "-1",
                    "+5",
                    "1.5",
                    "",
                    " 5",
                    "abc",
                    "99999999999999999999999",
                ],
            ),
            (
                "h",
                &[("1", "h=1"), ("10000", "h=10000"), ("250", "h=250")],
                &["0", "10001", "-1", "", "2e3", "0x10"],
            ),
            (
                "fit",
                &[
                    ("cover", "fit=cover"),
                    ("contain", "fit=contain"),
                    ("fill", "fit=fill"),
                    ("scale-down", "fit=scale-down"),
                ],
                &["", "Cover", "crop", "scale_down", "pad"],
            ),
            (
                "aspect",
                &[
                    ("original", "aspect=original"),
                    ("16:9", "aspect=16:9"),
                    ("1:100", "aspect=1:100"),
                    ("100:1", "aspect=100:1"),
                    ("32%3A18", "aspect=32:18"),
                ],
                &[
                    "", "0:1", "1:0", "101:1", "16x9", "16:", ":9", "1.5:1", "16:9:1", "Original",
                ],
            ),
            (
                "q",
                &[("1", "q=1"), ("80", "q=80"), ("100", "q=100")],
                &["0", "101", "", "high", "-5", "50.5"],
            ),
            (
                "dpr",
                &[
                    ("1", "dpr=1"),
                    ("1.0", "dpr=1"),
                    ("1.5", "dpr=1.5"),
                    ("2.25", "dpr=2.25"),
                    ("2.625", "dpr=2.63"),
                    ("1.3333333", "dpr=1.33"),
                    ("3.999", "dpr=4"),
                    ("4", "dpr=4"),
                    ("4.000", "dpr=4"),
                ],
                &[
                    "0", "0.5", "0.999", "4.001", "5", "", "1.", ".5", "01", "1e0", "-1", "1,5",
                    "2x",
                ],
            ),
            (
                "crop",
                &[
                    ("center", "crop=center"),
                    ("top", "crop=top"),
                    ("bottom", "crop=bottom"),
                    ("left", "crop=left"),
                    ("right", "crop=right"),
                    ("top-left", "crop=top-left"),
                    ("top-right", "crop=top-right"),
                    ("bottom-left", "crop=bottom-left"),
                    ("bottom-right", "crop=bottom-right"),
                    ("attention", "crop=attention"),
                    ("entropy", "crop=entropy"),
                ],
                &["", "centre", "middle", "top_left", "Top", "smart"],
            ),
            (
                "grayscale",
                &[
                    ("true", "grayscale=true"),
                    ("1", "grayscale=true"),
                    ("false", "grayscale=false"),
                    ("0", "grayscale=false"),
                ],
                &["", "yes", "TRUE", "2", "on"],
            ),
            (
                "blur",
                &[("0", "blur=0"), ("100", "blur=100"), ("7", "blur=7")],
                &["101", "-1", "", "1.5"],
            ),
            (
                "sharpen",
                &[("0", "sharpen=0"), ("100", "sharpen=100")],
                &["101", "-1", "", "x"],
            ),
            (
                "rotate",
                &[
                    ("0", "rotate=0"),
                    ("90", "rotate=90"),
                    ("180", "rotate=180"),
                    ("270", "rotate=270"),
                    ("auto", "rotate=auto"),
                ],
                &["", "45", "360", "-90", "Auto"],
            ),
            (
                "flip",
                &[("h", "flip=h"), ("v", "flip=v"), ("both", "flip=both")],
                &["", "x", "hv", "horizontal"],
            ),
            (
                "format",
                &[
                    ("auto", "format=auto"),
                    ("webp", "format=webp"),
                    ("jpg", "format=jpeg"),
                    ("JPEG", "format=jpeg"),
                    ("avif", "format=avif"),
                    ("jxl", "format=jxl"),
                    ("gif", "format=gif"),
                ],
                &["", "bmp", "jpegxl", "webp2"],
            ),
            (
                "frame",
                &[("0", "frame=0"), ("7", "frame=7"), ("99999", "frame=99999")],
                &["", "-1", "100000", "1.0", "first"],
            ),
            (
                "animated",
                &[
                    ("true", "animated=true"),
                    ("0", "animated=false"),
                    ("false", "animated=false"),
                ],
                &["", "no", "2"],
            ),
            (
                "bg",
                &[
                    ("ff0000", "bg=ff0000"),
                    ("FFAA00", "bg=ffaa00"),
                    ("%23123abc", "bg=123abc"),
                ],
                &["", "fff", "ff00000", "gg0000", "%23%23ff0000", "rgb(0,0,0)"],
            ),
        ];
        for (key, ok, bad) in table {
            for (value, signed) in *ok {
                let query = format!("{key}={value}");
                assert_eq!(params(&query).signing_query(), *signed, "{query}");
            }
            for value in *bad {
                let query = format!("{key}={value}");
                let error = parse_query(&query).expect_err(&query);
                assert_eq!(error.key, *key, "{query}");
                assert!(error.message.starts_with(key), "{query}: {}", error.message);
            }
            // A key with no `=` is an empty value: a bad value for every key but presets.
            assert_eq!(key_of_error(key), *key);
        }
    }

    #[test]
    fn signature_and_expiry_with_aliases() {
        let q = parse_query("sig=abc-_XYZ09&exp=1700000000").unwrap();
        assert_eq!(q.signature.as_deref(), Some("abc-_XYZ09"));
        assert_eq!(q.expires, Some(1_700_000_000));
        assert!(q.params.is_empty());
        let q = parse_query("token=t0k&expires=5").unwrap();
        assert_eq!(q.signature.as_deref(), Some("t0k"));
        assert_eq!(q.expires, Some(5));
        assert_eq!(key_of_error("sig="), "sig");
        assert_eq!(key_of_error("token=a+b"), "token");
        assert_eq!(key_of_error("sig=a%2Fb"), "sig");
        assert_eq!(key_of_error("exp=-1"), "exp");
        assert_eq!(key_of_error("expires=soon"), "expires");
        assert_eq!(key_of_error("exp=9223372036854775808"), "exp");
        assert_eq!(
            parse_query("exp=9223372036854775807").unwrap().expires,
            Some(i64::MAX)
        );
        // Neither is part of the signing form.
        assert_eq!(params("w=5&sig=abc&exp=1").signing_query(), "w=5");
    }

    #[test]
    fn preset_in_all_three_spellings() {
        for query in [
            "p:thumb",
            "p:thumb=",
            "p%3Athumb",
            "p%3athumb=",
            "w=5&p:thumb",
        ] {
            assert_eq!(params(query).preset.as_deref(), Some("thumb"), "{query}");
        }
        assert_eq!(params("p:a-B_9").preset.as_deref(), Some("a-B_9"));
        let fifty = "x".repeat(50);
        assert_eq!(params(&format!("p:{fifty}")).preset, Some(fifty.clone()));
        for bad in [
            "p:",
            "p:=",
            "p:a.b",
            "p:a%20b",
            "p:thumb=1",
            &format!("p:{fifty}x"),
        ] {
            assert_eq!(key_of_error(bad), "p", "{bad}");
        }
        // `p` alone and `P:x` are not presets: unknown keys, ignored.
        assert!(params("p=thumb&P:x").is_empty());
    }

    #[test]
    fn query_component_decoding() {
        assert_eq!(decode_component("plain"), "plain");
        assert!(matches!(decode_component("plain"), Cow::Borrowed(_)));
        assert_eq!(decode_component("a+b%20c%2Bd"), "a b c+d");
        // Malformed escapes stay literal; invalid UTF-8 becomes U+FFFD.
        assert_eq!(decode_component("%zz%4%"), "%zz%4%");
        assert_eq!(decode_component("%FFx"), "\u{FFFD}x");
        assert_eq!(decode_component("caf%C3%A9"), "café");
    }

    #[test]
    fn query_decoding_and_shape() {
        // `+` and escapes in keys and values; empty pairs are skipped.
        assert_eq!(params("&&fit=scale%2Ddown&&").fit, Some(Fit::ScaleDown));
        assert_eq!(params("%77=12").w, Some(12));
        assert_eq!(key_of_error("w=1+2"), "w");
        assert_eq!(key_of_error("w=%31%30%zz"), "w");
        assert!(parse_query("").unwrap().params.is_empty());
        // Keys are case-sensitive: `W` is an unknown key.
        assert!(params("W=5").is_empty());
    }

    #[test]
    fn repeated_key_last_wins_but_every_value_is_validated() {
        assert_eq!(params("w=100&w=200").w, Some(200));
        assert_eq!(params("p:a&p:b").preset.as_deref(), Some("b"));
        assert_eq!(key_of_error("w=abc&w=100"), "w");
        assert_eq!(key_of_error("w=100&w=abc"), "w");
        assert_eq!(
            parse_query("sig=a&token=b").unwrap().signature.as_deref(),
            Some("b")
        );
    }

    #[test]
    fn unknown_keys_are_ignored_even_with_bad_values() {
        let q = params("v=3&cb=%zz&utm_source=x+y&foo&w=10");
        assert_eq!(q.w, Some(10));
        assert_eq!(q.signing_query(), "w=10");
    }
}
