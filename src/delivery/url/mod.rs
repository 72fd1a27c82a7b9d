//! The delivery URL grammar: turns `/i/{account}/{path}.{ext}?{params}` into validated,
//! exhaustive types ([`DeliveryUrl`], [`TransformParams`]), resolves parameters into a
//! [`Transform`](crate::pipeline::spec::Transform), and writes the two canonical strings the
//! node keys on: the cache-key form ([`canonical()`], inverted by [`parse_canonical`]) and the
//! signing form ([`TransformParams::signing_query`]).
//!
//! Owns syntax and validation only. Must never do I/O, look up presets, accounts or images,
//! verify signatures, or know about HTTP status codes: every failure is a [`UrlError`] that
//! the server maps to `400 VALIDATION_ERROR`. Runs on every request on the async workers, so
//! it must stay allocation-light and must never panic on any input.
//!
//! One file per concern, each saying what it must never do: `path` (the path grammar),
//! `query` (the query grammar and the accepted spellings of each value), `resolve` (presets
//! overlaid, account defaults, `dpr`) and `canonical` (the two canonical strings). This file
//! holds the types they share and [`DeliveryUrl`], which joins path and query; the public
//! functions are re-exported here, so callers name everything `delivery::url::...`.
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

mod canonical;
mod path;
mod query;
mod resolve;

pub use canonical::{canonical, parse_canonical};
pub use path::parse_path;
pub use query::parse_query;
pub use resolve::TransformDefaults;

use crate::pipeline::spec::{Crop, Fit, Flip, OutputFormat, Rgb, Rotate};
use canonical::push_decimal;
use path::{PathParts, split_path};

/// A bad path or parameter. `key` is the query key as the client wrote it (or `"path"`), and
/// `message` names the accepted values, so the 400 body tells the client how to fix the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UrlError {
    pub(crate) key: String,
    pub(crate) message: String,
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
    pub(crate) account: String,
    /// Folders and stem, percent-decoded, `/`-separated, without the extension. Never empty,
    /// never has `.`/`..`/empty segments, backslashes or control characters.
    pub(crate) path: String,
    /// The requested output format.
    pub(crate) ext: OutputFormat,
    /// The extension as written, after decoding (`JPEG`, `jpg`, ...): the signed message
    /// covers the URL as the signer wrote it, see [`DeliveryUrl::signing_message`].
    ext_raw: String,
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
    pub(crate) signature: Option<String>,
    /// `exp` or its alias `expires`: unix seconds.
    pub(crate) expires: Option<i64>,
}

/// The transform parameters exactly as the URL (or a preset) gave them: `None` means "not
/// given", so presets can be overlaid and the signing form can list what was given.
/// Every value held here is already valid; [`TransformParams::resolve`] applies defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TransformParams {
    /// CSS pixels 1..=10000, before `dpr`.
    pub(crate) w: Option<u32>,
    /// CSS pixels 1..=10000, before `dpr`.
    pub(crate) h: Option<u32>,
    pub(crate) fit: Option<Fit>,
    pub(crate) aspect: Option<Aspect>,
    /// 1..=100.
    pub(crate) q: Option<u8>,
    pub(crate) dpr: Option<Dpr>,
    pub(crate) crop: Option<Crop>,
    pub(crate) grayscale: Option<bool>,
    /// 0..=100.
    pub(crate) blur: Option<u8>,
    /// 0..=100.
    pub(crate) sharpen: Option<u8>,
    pub(crate) rotate: Option<RotateParam>,
    pub(crate) flip: Option<Flip>,
    /// `[A-Za-z0-9_-]{1,50}`; resolved by the caller (an unknown preset is its 400).
    pub(crate) preset: Option<String>,
    /// `format=auto`: negotiate the output format from `Accept`.
    pub(crate) format_auto: bool,
    /// `format=jpeg|jpg|png|webp|avif`: this output format, whatever the extension says (an
    /// alias of the extension, as img-src's SDKs send it). Exclusive with `format_auto`.
    pub(crate) format: Option<OutputFormat>,
    pub(crate) bg: Option<Rgb>,
    /// `frame=N`: one frame of an animation, 0-based (as imgproxy's `page`).
    pub(crate) frame: Option<u32>,
    /// `animated=false`: the first frame of an animation, whatever the format.
    pub(crate) animated: Option<bool>,
}

/// The `aspect` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Aspect {
    /// Keep the source's ratio (the default, resolves to no forced ratio).
    Original,
    /// `W:H`, each 1..=100, as written (reduced only when resolved).
    Ratio(u8, u8),
}

/// The `rotate` parameter: `auto` is accepted for img-src compatibility and means "EXIF
/// orientation only", which is always applied, so it resolves to [`Rotate::R0`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RotateParam {
    Degrees(Rotate),
    Auto,
}

/// Device pixel ratio in hundredths, 100..=400, so it is exact, `Eq` and `Hash`able.
///
/// Parsed from `1`, `1.5`, `2.25`, `2.625`, ...: any number of decimals is accepted (browsers
/// report such ratios) and rounded half-up to hundredths; the written value must lie in 1..=4.
/// The normal spelling is the shortest decimal (`1`, `1.5`, `2.63`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Dpr(u16);

impl Dpr {
    pub(crate) const MIN: u16 = 100;
    const MAX: u16 = 400;

    /// `None` outside 100..=400.
    fn from_hundredths(hundredths: u16) -> Option<Dpr> {
        (Dpr::MIN..=Dpr::MAX)
            .contains(&hundredths)
            .then_some(Dpr(hundredths))
    }

    pub(crate) fn hundredths(self) -> u16 {
        self.0
    }
}

/// What the submodules' tests share.
#[cfg(test)]
mod test_support {
    use proptest::prelude::ProptestConfig;
    use proptest::test_runner::FileFailurePersistence;

    use super::{TransformParams, parse_query};

    /// The parameters `query` gives; panics naming the query when it does not parse.
    pub(super) fn params(query: &str) -> TransformParams {
        parse_query(query).expect(query).params
    }

    /// Proptest's defaults, except that failing seeds are kept beside the source file, not in a
    /// top-level folder.
    pub(super) fn proptest_config() -> ProptestConfig {
        ProptestConfig {
            failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
                "proptest-regressions",
            ))),
            ..ProptestConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::proptest_config;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn error_messages_name_the_range() {
        let e = parse_query("w=0").unwrap_err();
        assert_eq!(e.message, "w must be an integer from 1 to 10000");
        assert_eq!(e.to_string(), e.message);
        let e = parse_query("dpr=9").unwrap_err();
        assert!(e.message.contains("1 to 4"));
        let e = parse_path("acme/x.bmp").unwrap_err();
        assert!(e.message.contains("jpg, jpeg, png, webp, avif, jxl, gif"));
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

    proptest! {
        #![proptest_config(proptest_config())]

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
    }
}
