//! The path grammar: `{account}/{path}.{ext}`, the part after `/i/` (or the whole path in the
//! CDN-host form), split into the account, the percent-decoded `folders/stem` lookup path and
//! the output format its extension names.
//!
//! Owns the path's syntax only: the account's alphabet, the one decoding pass, and what a
//! segment, a stem and an extension may be. Must never decode a second time, let a `.`, `..`
//! or empty segment, a backslash or a control character through (the store looks up exactly
//! the path returned here), read the query, or do I/O.

use super::UrlError;
use crate::pipeline::spec::OutputFormat;

const MSG_SHAPE: &str = "path must be {account}/{path}.{ext}";
const MSG_ACCOUNT: &str = "account must be 1 to 64 characters from a-z, 0-9, _ and -";
const MSG_ESCAPE: &str =
    "path has a malformed percent escape (% must be followed by two hex digits)";
const MSG_UTF8: &str = "path must be UTF-8 after percent-decoding";
const MSG_CONTROL: &str = "path must not contain control characters";
const MSG_BACKSLASH: &str = "path must not contain backslashes";
const MSG_SEGMENT: &str = "path must not contain empty, . or .. segments";
const MSG_STEM: &str = "file name must be {stem}.{ext} with a non-empty stem";
const MSG_EXT: &str = "extension must be one of jpg, jpeg, png, webp, avif, jxl, gif";

/// A split path: `decoded` is `folders/stem.ext` decoded, `dot` the index of the extension's
/// dot, so both the lookup path and the extension as written are slices of one allocation.
pub(super) struct PathParts {
    pub(super) account: String,
    pub(super) decoded: String,
    pub(super) dot: usize,
    pub(super) ext: OutputFormat,
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

pub(super) fn split_path(raw: &str) -> Result<PathParts, UrlError> {
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
pub(super) fn parse_ext(ext: &str) -> Result<OutputFormat, UrlError> {
    const NAMES: [(&str, OutputFormat); 7] = [
        ("jpg", OutputFormat::Jpeg),
        ("jpeg", OutputFormat::Jpeg),
        ("png", OutputFormat::Png),
        ("webp", OutputFormat::Webp),
        ("avif", OutputFormat::Avif),
        ("jxl", OutputFormat::Jxl),
        ("gif", OutputFormat::Gif),
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

pub(super) fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::url::test_support::proptest_config;
    use proptest::prelude::*;

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
        assert_eq!(ok("acme/x.JXL").2, OutputFormat::Jxl);
        assert_eq!(ok("acme/x.gif").2, OutputFormat::Gif);
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
            ("acme/x.bmp", MSG_EXT),
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

    proptest! {
        #![proptest_config(proptest_config())]

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
