//! Output format negotiation for `format=auto`: AVIF, then WebP, then the extension's format,
//! by what the client's `Accept` header lists with a non-zero quality.

use http::HeaderMap;
use http::header::ACCEPT;

use crate::pipeline::OutputFormat;

/// The best format the client accepts. `*/*` and `image/*` are not taken as support for
/// AVIF or WebP: browsers that decode them list them explicitly.
pub fn best(headers: &HeaderMap, fallback: OutputFormat) -> OutputFormat {
    let (avif, webp) = accepted(headers);
    if avif {
        OutputFormat::Avif
    } else if webp {
        OutputFormat::Webp
    } else {
        fallback
    }
}

/// [`best`] when AVIF is not an option (its lane is busy, or the output is over the unsigned
/// AVIF budget): WebP if the client takes it, else `fallback` (never AVIF).
pub fn best_without_avif(headers: &HeaderMap, fallback: OutputFormat) -> OutputFormat {
    match (accepted(headers).1, fallback) {
        (true, _) => OutputFormat::Webp,
        (false, OutputFormat::Avif) => OutputFormat::Jpeg,
        (false, other) => other,
    }
}

/// Whether `Accept` takes AVIF and WebP (q > 0).
fn accepted(headers: &HeaderMap) -> (bool, bool) {
    let (mut avif, mut webp) = (false, false);
    for value in headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for range in value.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .filter_map(|q| q.trim().parse::<f32>().ok())
                .next()
                .unwrap_or(1.0);
            if q <= 0.0 {
                continue;
            }
            if media.eq_ignore_ascii_case("image/avif") {
                avif = true;
            } else if media.eq_ignore_ascii_case("image/webp") {
                webp = true;
            }
        }
    }
    (avif, webp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn accept(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn prefers_avif_then_webp_then_the_extension() {
        let chrome = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";
        assert_eq!(
            best(&accept(chrome), OutputFormat::Jpeg),
            OutputFormat::Avif
        );
        assert_eq!(
            best(&accept("image/webp,*/*"), OutputFormat::Jpeg),
            OutputFormat::Webp
        );
        assert_eq!(best(&accept("*/*"), OutputFormat::Png), OutputFormat::Png);
        assert_eq!(
            best(&HeaderMap::new(), OutputFormat::Jpeg),
            OutputFormat::Jpeg
        );
    }

    #[test]
    fn quality_zero_means_not_accepted() {
        assert_eq!(
            best(&accept("image/avif;q=0, image/webp"), OutputFormat::Jpeg),
            OutputFormat::Webp
        );
    }
}
