//! The delivery URL grammar: turns `/i/{account}/{path}.{ext}?{params}` into validated,
//! exhaustive types ([`DeliveryUrl`], [`TransformParams`]), resolves parameters into a
//! [`Transform`], and writes the two canonical strings the node keys on: the cache-key form
//! ([`canonical`], inverted by [`parse_canonical`]) and the signing form
//! ([`TransformParams::signing_query`]).
//!
//! Owns syntax and validation only. Must never do I/O, look up presets, accounts or images,
//! verify signatures, or know about HTTP status codes: every failure is a [`UrlError`] that
//! the server maps to `400 VALIDATION_ERROR`. Runs on every request on the async workers, so
//! it must stay allocation-light and must never panic on any input.
//!
//! Decisions where the delivery spec (`spec/delivery.md`) leaves room, each also documented
//! where it is implemented:
//! - The account is matched as written (never percent-decoded); the rest of the path is
//!   percent-decoded exactly once, then split on `/`, so `%2F` is a separator and `%2e%2e`
//!   is a `..` segment (refused). A malformed escape (`%zz`) is refused rather than guessed.
//! - The extension is case-insensitive (`photo.JPG` is common from cameras); `jpeg` and `jpg`
//!   are both [`OutputFormat::Jpeg`].
//! - Query keys and enumerated values are case-sensitive (lower case), as img-src documents
//!   them; only `bg` hex digits are case-insensitive.
//! - A repeated key: the last occurrence wins, as with imgproxy options and most web
//!   frameworks; every occurrence is still validated, so a bad value is never hidden.
//! - `dpr` accepts any number of decimals (browsers report `devicePixelRatio` values such as
//!   `2.625`) and is rounded half-up to hundredths; the unrounded value must lie in 1..=4.
//! - `dpr` pushing a side past `limits.max_output_side` is clamped (shape kept); `w`/`h` over
//!   the limit on their own are left for the pipeline's 400. See [`TransformParams::resolve`].
//! - Signatures cover the normal spelling of each value, see
//!   [`TransformParams::signing_query`] and [`DeliveryUrl::signing_message`].

use std::borrow::Cow;

use crate::pipeline::spec::{Crop, Fit, Flip, Limits, OutputFormat, Rgb, Rotate, Transform};

/// A bad path or parameter. `key` is the query key as the client wrote it (or `"path"`), and
/// `message` names the accepted values, so the 400 body tells the client how to fix the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UrlError {
    pub key: String,
    pub message: String,
}

impl UrlError {
    fn new(key: &str, message: &str) -> UrlError {
        UrlError {
            key: key.to_owned(),
            message: message.to_owned(),
        }
    }

    fn path(message: &str) -> UrlError {
        UrlError::new("path", message)
    }
}

/// A fully parsed delivery URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryUrl {
    /// `[a-z0-9_-]{1,64}`.
    pub account: String,
    /// Folders and stem, percent-decoded, `/`-separated, without the extension. Never empty,
    /// never has `.`/`..`/empty segments, backslashes or control characters.
    pub path: String,
    /// The requested output format.
    pub ext: OutputFormat,
    /// The extension as written, after decoding (`JPEG`, `jpg`, ...): the signed message
    /// covers the URL as the signer wrote it, see [`DeliveryUrl::signing_message`].
    pub ext_raw: String,
    pub query: DeliveryQuery,
}

impl DeliveryUrl {
    /// Parses the part after `/i/` (or the whole path, without its leading `/`, in the
    /// CDN-host form) and the raw query string (without the `?`; empty when absent).
    pub fn parse(path: &str, query: &str) -> Result<DeliveryUrl, UrlError> {
        let PathParts {
            account,
            mut decoded,
            dot,
            ext,
        } = split_path(path)?;
        let query = parse_query(query)?;
        let ext_raw = decoded[dot + 1..].to_owned();
        decoded.truncate(dot);
        Ok(DeliveryUrl {
            account,
            path: decoded,
            ext,
            ext_raw,
            query,
        })
    }

    /// The HMAC input of the spec, `{account}/{path}.{ext}?{canonical}:{exp}`, with the
    /// decoded path, the extension as written, [`TransformParams::signing_query`] as
    /// `canonical`, and an empty `{exp}` when the URL has none. Signers must sign the normal
    /// spelling of each value (see `signing_query`), which is what SDKs emit anyway.
    pub fn signing_message(&self) -> String {
        let canonical = self.query.params.signing_query();
        let mut out = String::with_capacity(
            self.account.len() + self.path.len() + self.ext_raw.len() + canonical.len() + 24,
        );
        out.push_str(&self.account);
        out.push('/');
        out.push_str(&self.path);
        out.push('.');
        out.push_str(&self.ext_raw);
        out.push('?');
        out.push_str(&canonical);
        out.push(':');
        if let Some(exp) = self.query.expires {
            // Parsing guarantees 0..=i64::MAX.
            push_decimal(&mut out, exp.unsigned_abs());
        }
        out
    }
}

/// The query string: transform parameters plus the signature pair, which is never part of a
/// cache key or of the signed `canonical` itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryQuery {
    pub params: TransformParams,
    /// `sig` or its alias `token`: base64url without padding, as the spec's signature is.
    pub signature: Option<String>,
    /// `exp` or its alias `expires`: unix seconds.
    pub expires: Option<i64>,
}

/// The transform parameters exactly as the URL (or a preset) gave them: `None` means "not
/// given", so presets can be overlaid and the signing form can list what was given.
/// Every value held here is already valid; [`TransformParams::resolve`] applies defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TransformParams {
    /// CSS pixels 1..=10000, before `dpr`.
    pub w: Option<u32>,
    /// CSS pixels 1..=10000, before `dpr`.
    pub h: Option<u32>,
    pub fit: Option<Fit>,
    pub aspect: Option<Aspect>,
    /// 1..=100.
    pub q: Option<u8>,
    pub dpr: Option<Dpr>,
    pub crop: Option<Crop>,
    pub grayscale: Option<bool>,
    /// 0..=100.
    pub blur: Option<u8>,
    /// 0..=100.
    pub sharpen: Option<u8>,
    pub rotate: Option<RotateParam>,
    pub flip: Option<Flip>,
    /// `[A-Za-z0-9_-]{1,50}`; resolved by the caller (an unknown preset is its 400).
    pub preset: Option<String>,
    /// `format=auto`: negotiate the output format from `Accept`.
    pub format_auto: bool,
    /// `format=jpeg|jpg|png|webp|avif`: this output format, whatever the extension says (an
    /// alias of the extension, as img-src's SDKs send it). Exclusive with `format_auto`.
    pub format: Option<OutputFormat>,
    pub bg: Option<Rgb>,
}

/// The `aspect` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Aspect {
    /// Keep the source's ratio (the default, resolves to no forced ratio).
    Original,
    /// `W:H`, each 1..=100, as written (reduced only when resolved).
    Ratio(u8, u8),
}

/// The `rotate` parameter: `auto` is accepted for img-src compatibility and means "EXIF
/// orientation only", which is always applied, so it resolves to [`Rotate::R0`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RotateParam {
    Degrees(Rotate),
    Auto,
}

/// Device pixel ratio in hundredths, 100..=400, so it is exact, `Eq` and `Hash`able.
///
/// Parsed from `1`, `1.5`, `2.25`, `2.625`, ...: any number of decimals is accepted (browsers
/// report such ratios) and rounded half-up to hundredths; the written value must lie in 1..=4.
/// The normal spelling is the shortest decimal (`1`, `1.5`, `2.63`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dpr(u16);

impl Dpr {
    pub const MIN: u16 = 100;
    pub const MAX: u16 = 400;

    /// `None` outside 100..=400.
    pub fn from_hundredths(hundredths: u16) -> Option<Dpr> {
        (Dpr::MIN..=Dpr::MAX)
            .contains(&hundredths)
            .then_some(Dpr(hundredths))
    }

    pub fn hundredths(self) -> u16 {
        self.0
    }

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

/// Per-account settings that fill parameters the URL leaves out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformDefaults {
    /// Quality when `q` is absent (1..=100; out-of-range values are clamped).
    pub quality: u8,
    /// Fit when `fit` is absent.
    pub fit: Fit,
    /// Bound for requests that give neither `w` nor `h` (device pixels).
    pub max_width: Option<u32>,
    /// Bound for requests that give neither `w` nor `h` (device pixels).
    pub max_height: Option<u32>,
}

impl Default for TransformDefaults {
    /// The node defaults: quality 80, `cover`, no size bound.
    fn default() -> Self {
        TransformDefaults {
            quality: Transform::DEFAULT_QUALITY,
            fit: Fit::Cover,
            max_width: None,
            max_height: None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Path
// ---------------------------------------------------------------------------------------------

const MSG_SHAPE: &str = "path must be {account}/{path}.{ext}";
const MSG_ACCOUNT: &str = "account must be 1 to 64 characters from a-z, 0-9, _ and -";
const MSG_ESCAPE: &str =
    "path has a malformed percent escape (% must be followed by two hex digits)";
const MSG_UTF8: &str = "path must be UTF-8 after percent-decoding";
const MSG_CONTROL: &str = "path must not contain control characters";
const MSG_BACKSLASH: &str = "path must not contain backslashes";
const MSG_SEGMENT: &str = "path must not contain empty, . or .. segments";
const MSG_STEM: &str = "file name must be {stem}.{ext} with a non-empty stem";
const MSG_EXT: &str = "extension must be one of jpg, jpeg, png, webp, avif";

/// A split path: `decoded` is `folders/stem.ext` decoded, `dot` the index of the extension's
/// dot, so both the lookup path and the extension as written are slices of one allocation.
struct PathParts {
    account: String,
    decoded: String,
    dot: usize,
    ext: OutputFormat,
}

/// Parses `{account}/{path}.{ext}`: the part after `/i/`, or the whole path (without its
/// leading `/`) in the CDN-host form, still percent-encoded. Returns the account, the decoded
/// `folders/stem` lookup path and the output format.
///
/// The account is matched as written: its alphabet needs no escaping, so an escaped account
/// is refused rather than given a second spelling. The rest is percent-decoded exactly once
/// and then split on `/`: `%2F` separates segments (so `..%2Fx` is a `..` segment) and a `%`
/// left after decoding is a literal character (`%252e%252e` names the file `%2e%2e`, never a
/// traversal). `+` is a literal plus in a path. The stem keeps inner dots
/// (`photo.v2.webp` → stem `photo.v2`); a stem of `.` or `..` is refused like a segment.
pub fn parse_path(path: &str) -> Result<(String, String, OutputFormat), UrlError> {
    let PathParts {
        account,
        mut decoded,
        dot,
        ext,
    } = split_path(path)?;
    decoded.truncate(dot);
    Ok((account, decoded, ext))
}

fn split_path(raw: &str) -> Result<PathParts, UrlError> {
    let (account, rest) = raw
        .split_once('/')
        .ok_or_else(|| UrlError::path(MSG_SHAPE))?;
    if account.is_empty()
        || account.len() > 64
        || !account
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
    {
        return Err(UrlError::path(MSG_ACCOUNT));
    }

    // Decode first, then validate: every check sees what the store lookup would see.
    let decoded = percent_decode_strict(rest)?;
    for segment in decoded.split('/') {
        check_segment(segment)?;
    }
    let last_start = decoded.rfind('/').map_or(0, |i| i + 1);
    let dot = decoded[last_start..]
        .rfind('.')
        .map(|i| last_start + i)
        .ok_or_else(|| UrlError::path(MSG_STEM))?;
    match &decoded[last_start..dot] {
        "" => return Err(UrlError::path(MSG_STEM)),
        // `...jpg` would look up `{folders}/..`.
        "." | ".." => return Err(UrlError::path(MSG_SEGMENT)),
        _ => {}
    }
    let ext = parse_ext(&decoded[dot + 1..])?;
    Ok(PathParts {
        account: account.to_owned(),
        decoded,
        dot,
        ext,
    })
}

fn check_segment(segment: &str) -> Result<(), UrlError> {
    if matches!(segment, "" | "." | "..") {
        return Err(UrlError::path(MSG_SEGMENT));
    }
    // Byte-wise, which is `char::is_control` without decoding UTF-8: C0 controls and DEL are
    // single bytes, C1 controls (U+0080..=U+009F) are exactly `C2 80..=C2 9F`.
    let bytes = segment.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\\' => return Err(UrlError::path(MSG_BACKSLASH)),
            0x00..=0x1F | 0x7F => return Err(UrlError::path(MSG_CONTROL)),
            0xC2 if matches!(bytes.get(i + 1), Some(0x80..=0x9F)) => {
                return Err(UrlError::path(MSG_CONTROL));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Case-insensitive: URLs copied from camera file names end in `.JPG`.
fn parse_ext(ext: &str) -> Result<OutputFormat, UrlError> {
    const NAMES: [(&str, OutputFormat); 5] = [
        ("jpg", OutputFormat::Jpeg),
        ("jpeg", OutputFormat::Jpeg),
        ("png", OutputFormat::Png),
        ("webp", OutputFormat::Webp),
        ("avif", OutputFormat::Avif),
    ];
    NAMES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(ext))
        .map(|&(_, format)| format)
        .ok_or_else(|| UrlError::path(MSG_EXT))
}

/// Decodes `%XX` escapes once, refusing malformed ones and non-UTF-8 results. Borrows
/// nothing and allocates one `String`, which becomes the lookup path.
fn percent_decode_strict(raw: &str) -> Result<String, UrlError> {
    if !raw.contains('%') {
        return Ok(raw.to_owned());
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|&h| hex_value(h));
            let lo = bytes.get(i + 2).and_then(|&l| hex_value(l));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(UrlError::path(MSG_ESCAPE));
            };
            out.push((hi << 4) | lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UrlError::path(MSG_UTF8))
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Query
// ---------------------------------------------------------------------------------------------

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
const MSG_FORMAT: &str = "format must be auto, jpeg, jpg, png, webp or avif";
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

fn err(key: &str, message: &str) -> UrlError {
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

fn parse_int_u32(s: &str, min: u32, max: u32) -> Option<u32> {
    parse_int(s, u64::from(min), u64::from(max)).and_then(|v| u32::try_from(v).ok())
}

fn parse_u8(s: &str, min: u8) -> Option<u8> {
    parse_int(s, u64::from(min), 100).and_then(|v| u8::try_from(v).ok())
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

fn parse_fit(s: &str) -> Option<Fit> {
    Some(match s {
        "cover" => Fit::Cover,
        "contain" => Fit::Contain,
        "fill" => Fit::Fill,
        "scale-down" => Fit::ScaleDown,
        _ => return None,
    })
}

fn fit_name(fit: Fit) -> &'static str {
    match fit {
        Fit::Cover => "cover",
        Fit::Contain => "contain",
        Fit::Fill => "fill",
        Fit::ScaleDown => "scale-down",
    }
}

fn parse_crop(s: &str) -> Option<Crop> {
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

fn parse_rotate_degrees(s: &str) -> Option<Rotate> {
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

fn rotate_name(rotate: Rotate) -> &'static str {
    match rotate {
        Rotate::R0 => "0",
        Rotate::R90 => "90",
        Rotate::R180 => "180",
        Rotate::R270 => "270",
    }
}

fn parse_flip(s: &str) -> Option<Flip> {
    Some(match s {
        "h" => Flip::Horizontal,
        "v" => Flip::Vertical,
        "both" => Flip::Both,
        _ => return None,
    })
}

fn flip_name(flip: Flip) -> &'static str {
    match flip {
        Flip::Horizontal => "h",
        Flip::Vertical => "v",
        Flip::Both => "both",
    }
}

/// `W:H`, each 1..=100, kept as written.
fn parse_ratio(s: &str) -> Option<(u8, u8)> {
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
fn parse_bg(s: &str) -> Option<Rgb> {
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

// ---------------------------------------------------------------------------------------------
// Resolution and the two canonical forms
// ---------------------------------------------------------------------------------------------

impl TransformParams {
    /// No transform parameter at all, not even a preset or `format=auto`: the request may be
    /// answered with the stored original's bytes (when the extension matches). Note that a
    /// parameter equal to its default (`q=80`) still counts: it asks for a re-encode. Call this
    /// after presets have been overlaid.
    pub fn is_empty(&self) -> bool {
        *self == TransformParams::default()
    }

    /// `self` (a preset's values) overridden by every parameter `over` (the URL) gives.
    /// `format=auto` from either side applies unless the URL names a format; the preset name
    /// is `over`'s, else `self`'s.
    pub fn overlay(&self, over: &TransformParams) -> TransformParams {
        TransformParams {
            w: over.w.or(self.w),
            h: over.h.or(self.h),
            fit: over.fit.or(self.fit),
            aspect: over.aspect.or(self.aspect),
            q: over.q.or(self.q),
            dpr: over.dpr.or(self.dpr),
            crop: over.crop.or(self.crop),
            grayscale: over.grayscale.or(self.grayscale),
            blur: over.blur.or(self.blur),
            sharpen: over.sharpen.or(self.sharpen),
            rotate: over.rotate.or(self.rotate),
            flip: over.flip.or(self.flip),
            preset: over.preset.clone().or_else(|| self.preset.clone()),
            format_auto: over.format_auto || (self.format_auto && over.format.is_none()),
            format: over
                .format
                .or(if over.format_auto { None } else { self.format }),
            bg: over.bg.or(self.bg),
        }
    }

    /// Applies account defaults and folds `dpr` into pixel sizes.
    ///
    /// - `q`/`fit` fall back to `defaults`; everything else to [`Transform::default`].
    /// - `rotate=auto` is `R0` (EXIF orientation is always applied); `aspect=original` is no
    ///   forced ratio; `W:H` is reduced (`32:18` → `16:9`) so equal ratios share a cache entry.
    /// - `dpr` multiplies `w` and `h` (rounded to nearest). When that product exceeds
    ///   `limits.max_output_side`, the ratio is lowered so the larger side lands on the limit
    ///   (both sides by the same factor, keeping the requested shape), but never below 1: a
    ///   `w`/`h` over the limit on its own is left for the pipeline to refuse with a 400, as
    ///   the spec wants for over-limit output, while `dpr`'s excess is silently clamped.
    /// - With neither `w` nor `h`, `dpr` has no effect, and when the account sets
    ///   `max_width`/`max_height` the output is bounded by them with [`Fit::ScaleDown`]
    ///   (never enlarged, aspect kept), whatever `fit` says: `fit` means nothing without a box.
    pub fn resolve(&self, defaults: &TransformDefaults, limits: &Limits) -> Transform {
        let (mut width, mut height) = (self.w, self.h);
        if let Some(dpr) = self.dpr {
            // Integer arithmetic: `10 * 1.15` must be 11.5 and round to 12, which f64 misses.
            let largest = u128::from(width.unwrap_or(0).max(height.unwrap_or(0)));
            let limit = u128::from(limits.max_output_side);
            let dpr = u128::from(dpr.hundredths());
            // The factor as a fraction: dpr, or limit/largest when dpr overshoots the limit,
            // but never below 1.
            let (num, den) = if largest * dpr <= limit * 100 {
                (dpr, 100)
            } else if limit > largest {
                (limit, largest)
            } else {
                (1, 1)
            };
            if den > 0 {
                // Round half up: (2·s·num + den) / (2·den).
                let scale = |side: u32| {
                    let scaled = (2 * u128::from(side) * num + den) / (2 * den);
                    u32::try_from(scaled).unwrap_or(u32::MAX)
                };
                width = width.map(scale);
                height = height.map(scale);
            }
        }
        let mut fit = self.fit.unwrap_or(defaults.fit);
        if width.is_none()
            && height.is_none()
            && (defaults.max_width.is_some() || defaults.max_height.is_some())
        {
            width = defaults.max_width;
            height = defaults.max_height;
            fit = Fit::ScaleDown;
        }
        Transform {
            width,
            height,
            fit,
            aspect: match self.aspect {
                Some(Aspect::Ratio(w, h)) => Some(reduce_ratio(w, h)),
                Some(Aspect::Original) | None => None,
            },
            quality: self.q.unwrap_or(defaults.quality).clamp(1, 100),
            crop: self.crop.unwrap_or_default(),
            grayscale: self.grayscale.unwrap_or(false),
            blur: self.blur.unwrap_or(0),
            sharpen: self.sharpen.unwrap_or(0),
            rotate: match self.rotate {
                Some(RotateParam::Degrees(r)) => r,
                Some(RotateParam::Auto) | None => Rotate::R0,
            },
            flip: self.flip,
            background: self.bg.unwrap_or_default(),
        }
    }

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
        // Written in sorted key order: aspect, bg, blur, crop, dpr, fit, flip, format,
        // grayscale, h, p:{name}, q, rotate, sharpen, w.
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

fn gcd(mut a: u8, mut b: u8) -> u8 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn reduce_ratio(w: u8, h: u8) -> (u8, u8) {
    match gcd(w, h) {
        0 => (w, h),
        g => (w / g, h / g),
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
fn push_decimal(out: &mut String, value: u64) {
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
    // Sorted: aspect, bg, blur, crop, fit, flip, grayscale, h, q, rotate, sharpen, w.
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
            "aspect" => parse_ratio(value).map(|r| t.aspect = Some(r)),
            "bg" => parse_bg(value).map(|c| t.background = c),
            "blur" => parse_u8(value, 0).map(|v| t.blur = v),
            "crop" => parse_crop(value).map(|c| t.crop = c),
            "fit" => parse_fit(value).map(|f| t.fit = f),
            "flip" => parse_flip(value).map(|f| t.flip = Some(f)),
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
    use proptest::prelude::*;

    fn params(query: &str) -> TransformParams {
        parse_query(query).expect(query).params
    }

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
                ],
                &["", "gif", "jxl", "webp2"],
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
    fn error_messages_name_the_range() {
        let e = parse_query("w=0").unwrap_err();
        assert_eq!(e.message, "w must be an integer from 1 to 10000");
        assert_eq!(e.to_string(), e.message);
        let e = parse_query("dpr=9").unwrap_err();
        assert!(e.message.contains("1 to 4"));
        let e = parse_path("acme/x.gif").unwrap_err();
        assert!(e.message.contains("jpg, jpeg, png, webp, avif"));
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
    fn resolve_applies_defaults_and_dpr() {
        let limits = Limits::default();
        let account = TransformDefaults {
            quality: 65,
            fit: Fit::Contain,
            max_width: None,
            max_height: None,
        };
        let t = params("w=333&dpr=1.5&rotate=auto&aspect=32:18").resolve(&account, &limits);
        assert_eq!(t.width, Some(500)); // 499.5 rounds to nearest (half away from zero)
        assert_eq!(t.height, None);
        assert_eq!(t.quality, 65);
        assert_eq!(t.fit, Fit::Contain);
        assert_eq!(t.rotate, Rotate::R0);
        assert_eq!(t.aspect, Some((16, 9)));
        let t = params("q=90&fit=fill&rotate=90").resolve(&account, &limits);
        assert_eq!((t.quality, t.fit, t.rotate), (90, Fit::Fill, Rotate::R90));
        // dpr without a size does nothing.
        assert_eq!(
            params("dpr=3").resolve(&TransformDefaults::default(), &limits),
            Transform::default()
        );
    }

    #[test]
    fn dpr_excess_is_clamped_keeping_the_shape() {
        let defaults = TransformDefaults::default();
        let limits = Limits {
            max_output_side: 5000,
            ..Limits::default()
        };
        let t = params("w=4000&h=1000&dpr=3").resolve(&defaults, &limits);
        assert_eq!((t.width, t.height), (Some(5000), Some(1250)));
        let t = params("h=2000&dpr=4").resolve(&defaults, &limits);
        assert_eq!(t.height, Some(5000));
        // A size over the limit by itself is not clamped: the pipeline refuses it with a 400.
        let t = params("w=8000&h=100&dpr=2").resolve(&defaults, &limits);
        assert_eq!((t.width, t.height), (Some(8000), Some(100)));
        let t = params("w=8000").resolve(&defaults, &limits);
        assert_eq!(t.width, Some(8000));
        // Exactly at the limit.
        let t = params("w=2500&dpr=2").resolve(&defaults, &limits);
        assert_eq!(t.width, Some(5000));
    }

    #[test]
    fn account_max_size_bounds_unsized_requests() {
        let limits = Limits::default();
        let account = TransformDefaults {
            max_width: Some(2000),
            max_height: None,
            ..TransformDefaults::default()
        };
        let t = params("q=70&fit=cover").resolve(&account, &limits);
        assert_eq!(
            (t.width, t.height, t.fit),
            (Some(2000), None, Fit::ScaleDown)
        );
        let t = params("h=300").resolve(&account, &limits);
        assert_eq!((t.width, t.height, t.fit), (None, Some(300), Fit::Cover));
    }

    #[test]
    fn overlay_prefers_explicit_values() {
        let preset = params("w=100&h=100&q=50&format=auto&grayscale=1");
        let url = params("w=300&grayscale=0&p:thumb");
        let merged = preset.overlay(&url);
        assert_eq!(merged.w, Some(300));
        assert_eq!(merged.h, Some(100));
        assert_eq!(merged.q, Some(50));
        assert_eq!(merged.grayscale, Some(false));
        assert!(merged.format_auto);
        assert_eq!(merged.preset.as_deref(), Some("thumb"));
    }

    #[test]
    fn is_empty_only_without_any_parameter() {
        assert!(params("").is_empty());
        assert!(params("v=1&sig=abc").is_empty());
        assert!(!params("q=80").is_empty());
        assert!(!params("format=auto").is_empty());
        assert!(!params("p:x").is_empty());
    }

    fn path_err(path: &str) -> UrlError {
        parse_path(path).expect_err(path)
    }

    #[test]
    fn path_splits_account_folders_stem_and_ext() {
        let ok = |p: &str| parse_path(p).expect(p);
        assert_eq!(
            ok("acme/a/b/photo.webp"),
            ("acme".into(), "a/b/photo".into(), OutputFormat::Webp)
        );
        assert_eq!(ok("acme/photo.v2.webp").1, "photo.v2");
        assert_eq!(ok("a_b-9/x.jpeg").2, OutputFormat::Jpeg);
        assert_eq!(ok("acme/x.jpg").2, OutputFormat::Jpeg);
        assert_eq!(ok("acme/x.JPG").2, OutputFormat::Jpeg);
        assert_eq!(ok("acme/x.Png").2, OutputFormat::Png);
        assert_eq!(ok("acme/x.avif").2, OutputFormat::Avif);
        assert_eq!(ok("acme/summer%20sale/caf%C3%A9.png").1, "summer sale/café");
        assert_eq!(ok("acme/a+b.png").1, "a+b");
        assert_eq!(ok("acme/photo%2Ejpg").1, "photo");
        // Decoded once: a second layer of escaping is a literal file name, not a traversal.
        assert_eq!(ok("acme/%252e%252e/x.png").1, "%2e%2e/x");
        // `%2F` is a separator after decoding.
        assert_eq!(ok("acme/a%2Fb.png").1, "a/b");
        assert_eq!(ok(&format!("{}/x.png", "a".repeat(64))).0.len(), 64);
    }

    #[test]
    fn path_traversal_in_every_encoding_is_refused() {
        for path in [
            "acme/../x.jpg",
            "acme/a/../../x.jpg",
            "acme/./x.jpg",
            "acme/%2e%2e/x.jpg",
            "acme/%2E%2E/x.jpg",
            "acme/.%2e/x.jpg",
            "acme/%2e./x.jpg",
            "acme/%2e/x.jpg",
            "acme/..%2Fx.jpg",
            "acme/a%2F..%2F..%2Fx.jpg",
            "acme/a%2f%2e%2e%2fx.jpg",
            "acme/...jpg", // stem `..`
            "acme/..jpg",  // stem `.`
            "acme/a/%2e%2e.png",
        ] {
            assert_eq!(path_err(path).message, MSG_SEGMENT, "{path}");
        }
    }

    #[test]
    fn path_rejects_bad_characters_and_shapes() {
        let cases: &[(&str, &str)] = &[
            ("acme/a\\b.jpg", MSG_BACKSLASH),
            ("acme/a%5Cb.jpg", MSG_BACKSLASH),
            ("acme/..%5Cx.jpg", MSG_BACKSLASH),
            ("acme/a%00b.jpg", MSG_CONTROL),
            ("acme/a%0Ab.jpg", MSG_CONTROL),
            ("acme/a%7Fb.jpg", MSG_CONTROL),
            ("acme/a%C2%85b.jpg", MSG_CONTROL),
            ("acme/a\tb.jpg", MSG_CONTROL),
            ("acme/x.jpg%00", MSG_CONTROL),
            ("acme//x.jpg", MSG_SEGMENT),
            ("acme/a//x.jpg", MSG_SEGMENT),
            ("acme/a/", MSG_SEGMENT),
            ("acme/", MSG_SEGMENT),
            ("acme/a%2F%2Fx.jpg", MSG_SEGMENT),
            ("acme/%zz.jpg", MSG_ESCAPE),
            ("acme/a%2.jpg", MSG_ESCAPE),
            ("acme/a.jpg%", MSG_ESCAPE),
            ("acme/%FF.jpg", MSG_UTF8),
            ("acme/x.gif", MSG_EXT),
            ("acme/x.jpg2", MSG_EXT),
            ("acme/x.", MSG_EXT),
            ("acme/x", MSG_STEM),
            ("acme/.jpg", MSG_STEM),
            ("acme", MSG_SHAPE),
            ("", MSG_SHAPE),
            ("Acme/x.jpg", MSG_ACCOUNT),
            ("/x.jpg", MSG_ACCOUNT),
            ("ac.me/x.jpg", MSG_ACCOUNT),
            ("%61cme/x.jpg", MSG_ACCOUNT),
            ("acmé/x.jpg", MSG_ACCOUNT),
        ];
        for (path, message) in cases {
            let e = path_err(path);
            assert_eq!(
                (e.key.as_str(), e.message.as_str()),
                ("path", *message),
                "{path}"
            );
        }
        assert_eq!(
            path_err(&format!("{}/x.png", "a".repeat(65))).message,
            MSG_ACCOUNT
        );
    }

    #[test]
    fn delivery_url_keeps_the_extension_as_written_for_signing() {
        let url = DeliveryUrl::parse("acme/a/Photo.JPEG", "w=10&sig=abc&exp=99&v=2").unwrap();
        assert_eq!(url.ext, OutputFormat::Jpeg);
        assert_eq!(url.ext_raw, "JPEG");
        assert_eq!(url.signing_message(), "acme/a/Photo.JPEG?w=10:99");
        let url = DeliveryUrl::parse("acme/x%2Epng", "").unwrap();
        assert_eq!(url.ext_raw, "png");
        assert_eq!(url.signing_message(), "acme/x.png?:");
        assert_eq!(
            DeliveryUrl::parse("acme/x.png", "w=0").unwrap_err().key,
            "w"
        );
    }

    /// The byte-wise check must agree with `char::is_control` on every scalar value.
    #[test]
    fn control_check_matches_char_is_control() {
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            let mut buf = [0u8; 4];
            let refused = check_segment(c.encode_utf8(&mut buf)).is_err();
            let expected = c.is_control() || c == '\\' || c == '.';
            assert_eq!(refused, expected, "U+{:04X}", u32::from(c));
        }
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
        )
            .prop_map(
                |(
                    (width, height, fit, aspect, quality, crop),
                    (grayscale, blur, sharpen, rotate, flip, background),
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
        )
            .prop_map(
                |(
                    (w, h, fit, aspect, q, dpr, crop, grayscale),
                    (blur, sharpen, rotate, flip, preset, format_auto, bg),
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
                },
            )
    }

    proptest! {
        // Failing seeds are kept beside this file, not in a top-level folder.
        #![proptest_config(ProptestConfig {
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
            )),
            ..ProptestConfig::default()
        })]

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

        /// Arbitrary input never panics, and an accepted path is always safe to look up.
        #[test]
        fn arbitrary_input_never_panics(path in ".{0,40}", query in ".{0,60}") {
            let _ = parse_query(&query);
            let _ = parse_canonical(&query);
            if let Ok((account, path, _)) = parse_path(&path) {
                prop_assert!(!account.is_empty());
                for segment in path.split('/') {
                    prop_assert!(!segment.is_empty() && segment != "." && segment != "..");
                    prop_assert!(!segment.chars().any(|c| c.is_control() || c == '\\'));
                }
            }
        }

        /// Escaped paths built from risky pieces are refused unless every segment is safe.
        #[test]
        fn encoded_paths_never_escape(pieces in prop::collection::vec(
            prop::sample::select(vec![
                "a", ".", "..", "%2e", "%2E", "/", "%2F", "%2f", "%5C", "%00", "%25", "b.png",
            ]),
            1..8,
        )) {
            let raw = format!("acme/{}.png", pieces.concat());
            if let Ok((_, path, _)) = parse_path(&raw) {
                for segment in path.split('/') {
                    prop_assert!(segment != "." && segment != ".." && !segment.is_empty());
                    prop_assert!(!segment.contains('\\') && !segment.contains('\0'));
                }
            }
        }
    }
}
