//! Output format negotiation for `format=auto`: the first of the account's `delivery_formats`
//! (in its order) that the client's `Accept` header lists with a non-zero quality, else the
//! extension's format. Only formats browsers announce take part (AVIF, WebP, JPEG XL); JPEG
//! and PNG in the list never replace the extension's format (a PNG with alpha stays a PNG).
//! JPEG XL is offered only when the account lists `jxl` (the default list does not: see
//! `store::settings::DEFAULT_DELIVERY_FORMATS`) and `Accept` names `image/jxl`.

use http::HeaderMap;
use http::header::ACCEPT;

use crate::pipeline::OutputFormat;

/// The best format the client accepts among `preferred` (the account's `delivery_formats`,
/// most preferred first). `*/*` and `image/*` are not taken as support for AVIF, WebP or JXL:
/// browsers that decode them list them explicitly.
pub(crate) fn best(
    headers: &HeaderMap,
    fallback: OutputFormat,
    preferred: &[String],
) -> OutputFormat {
    choose(headers, fallback, preferred, true)
}

/// [`best`] when AVIF is not an option (its lane is busy, or the output is over the unsigned
/// AVIF budget): the next preferred format the client takes, else `fallback` (JPEG when the
/// fallback itself is AVIF).
pub(crate) fn best_without_avif(
    headers: &HeaderMap,
    fallback: OutputFormat,
    preferred: &[String],
) -> OutputFormat {
    match choose(headers, fallback, preferred, false) {
        OutputFormat::Avif => OutputFormat::Jpeg,
        other => other,
    }
}

fn choose(
    headers: &HeaderMap,
    fallback: OutputFormat,
    preferred: &[String],
    avif_allowed: bool,
) -> OutputFormat {
    let taken = accepted(headers);
    for format in preferred {
        match format.as_str() {
            "avif" if taken.avif && avif_allowed => return OutputFormat::Avif,
            "webp" if taken.webp => return OutputFormat::Webp,
            "jxl" if taken.jxl => return OutputFormat::Jxl,
            _ => {}
        }
    }
    fallback
}

/// The negotiable formats an `Accept` header takes (q > 0).
#[derive(Default)]
struct Taken {
    avif: bool,
    webp: bool,
    jxl: bool,
}

fn accepted(headers: &HeaderMap) -> Taken {
    let mut taken = Taken::default();
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
                taken.avif = true;
            } else if media.eq_ignore_ascii_case("image/webp") {
                taken.webp = true;
            } else if media.eq_ignore_ascii_case("image/jxl") {
                taken.jxl = true;
            }
        }
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn formats(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn default_formats() -> Vec<String> {
        crate::store::AccountSettings::default().delivery_formats
    }

    fn accept(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn prefers_avif_then_webp_then_the_extension() {
        let chrome = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";
        assert_eq!(
            best(&accept(chrome), OutputFormat::Jpeg, &default_formats()),
            OutputFormat::Avif
        );
        assert_eq!(
            best(
                &accept("image/webp,*/*"),
                OutputFormat::Jpeg,
                &default_formats()
            ),
            OutputFormat::Webp
        );
        assert_eq!(
            best(&accept("*/*"), OutputFormat::Png, &default_formats()),
            OutputFormat::Png
        );
        assert_eq!(
            best(&HeaderMap::new(), OutputFormat::Jpeg, &default_formats()),
            OutputFormat::Jpeg
        );
    }

    #[test]
    fn quality_zero_means_not_accepted() {
        assert_eq!(
            best(
                &accept("image/avif;q=0, image/webp"),
                OutputFormat::Jpeg,
                &default_formats()
            ),
            OutputFormat::Webp
        );
    }

    #[test]
    fn the_accounts_order_decides_and_unlisted_formats_are_never_chosen() {
        let chrome = accept("image/avif,image/webp,image/apng,image/*,*/*;q=0.8");
        let webp_first = formats(&["webp", "avif", "jpeg"]);
        assert_eq!(
            best(&chrome, OutputFormat::Jpeg, &webp_first),
            OutputFormat::Webp
        );
        let no_avif = formats(&["webp", "jpeg"]);
        assert_eq!(
            best(&chrome, OutputFormat::Jpeg, &no_avif),
            OutputFormat::Webp
        );
        let avif_only = accept("image/avif");
        assert_eq!(
            best(&avif_only, OutputFormat::Png, &no_avif),
            OutputFormat::Png
        );
        let classic = formats(&["jpeg", "png"]);
        assert_eq!(
            best(&chrome, OutputFormat::Png, &classic),
            OutputFormat::Png
        );
        assert_eq!(
            best_without_avif(&chrome, OutputFormat::Jpeg, &default_formats()),
            OutputFormat::Webp
        );
        assert_eq!(
            best_without_avif(&avif_only, OutputFormat::Avif, &default_formats()),
            OutputFormat::Jpeg
        );
    }

    #[test]
    fn gif_is_never_negotiated() {
        // Not a delivery format an account can list, and not looked for in `Accept`: only the
        // extension (or `format=gif`) gives GIF.
        let gif_first = formats(&["gif", "webp", "jpeg"]);
        let only_gif = accept("image/gif");
        assert_eq!(
            best(&only_gif, OutputFormat::Jpeg, &gif_first),
            OutputFormat::Jpeg
        );
        assert_eq!(
            best(
                &accept("image/gif,image/webp"),
                OutputFormat::Png,
                &gif_first
            ),
            OutputFormat::Webp
        );
    }

    #[test]
    fn jxl_only_when_listed_by_the_account_and_the_client() {
        let safari = accept("image/webp,image/avif,image/jxl,image/heic,image/*;q=0.8,*/*;q=0.5");
        // The default list has no jxl: a client that takes it gets the usual choice.
        assert!(!default_formats().iter().any(|f| f == "jxl"));
        assert_eq!(
            best(&safari, OutputFormat::Jpeg, &default_formats()),
            OutputFormat::Avif
        );
        let jxl_first = formats(&["jxl", "avif", "webp", "jpeg", "png"]);
        assert_eq!(
            best(&safari, OutputFormat::Jpeg, &jxl_first),
            OutputFormat::Jxl
        );
        assert_eq!(
            best_without_avif(&safari, OutputFormat::Jpeg, &jxl_first),
            OutputFormat::Jxl
        );
        // Listed by the account but not by the client (Chrome), or refused with q=0.
        let chrome = accept("image/avif,image/webp,image/apng,image/*,*/*;q=0.8");
        assert_eq!(
            best(&chrome, OutputFormat::Jpeg, &jxl_first),
            OutputFormat::Avif
        );
        assert_eq!(
            best(&accept("image/jxl;q=0"), OutputFormat::Png, &jxl_first),
            OutputFormat::Png
        );
        assert_eq!(
            best(&accept("image/jxl"), OutputFormat::Png, &jxl_first),
            OutputFormat::Jxl
        );
    }
}
