//! The delivery hot path: an image URL in, image bytes (or a JSON error) out.
//!
//! Owns the URL grammar (`url`), format negotiation, the order of lookups and the response
//! headers. Runs on async workers, so it does no CPU work itself: rendering goes through
//! `cpu::Pool`, bytes come from `origin`, metadata from `store`. Must never decode, resize or
//! run SQL directly.

pub mod negotiate;
pub mod url;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{
    CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LAST_MODIFIED, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::cpu::JobClass;
use crate::error::HttpError;
use crate::pipeline::{self, OutputFormat, StageTimings};
use crate::server::{Body, empty, full, response::NOSNIFF};
use crate::store::{AccountStatus, ImageRecord, Visibility};
use url::{TransformDefaults, TransformParams};

/// How the bytes of a response were obtained (the `X-Cache` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    HitMemory,
    HitDisk,
    Miss,
    Coalesced,
    Original,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::HitMemory => "HIT-MEMORY",
            CacheStatus::HitDisk => "HIT-DISK",
            CacheStatus::Miss => "MISS",
            CacheStatus::Coalesced => "COALESCED",
            CacheStatus::Original => "ORIGINAL",
        }
    }
}

/// A parsed request: the path part after the route prefix, and what the headers say.
pub struct DeliveryRequest<'a> {
    /// `{account}/{path}.{ext}`, still percent-encoded.
    pub target: &'a str,
    pub query: &'a str,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
}

/// Answers one image request. Errors are returned for the router to render.
pub async fn handle(
    state: &AppState,
    req: DeliveryRequest<'_>,
) -> Result<(Response<Body>, CacheStatus), HttpError> {
    let (account, path, ext) = url::parse_path(req.target)?;
    let params = url::parse_query(req.query)?.params;
    if let Some(name) = &params.preset {
        // Presets arrive with the management API; until then every name is unknown.
        return Err(HttpError::validation(format!("unknown preset `{name}`")));
    }

    let account = state
        .store
        .account(&account)
        .await?
        .ok_or_else(HttpError::not_found)?;
    if account.status == AccountStatus::Suspended {
        return Err(HttpError::forbidden("account suspended"));
    }
    let image = state
        .store
        .image_by_stem(&account.name, &path)
        .await?
        .ok_or_else(HttpError::not_found)?;
    if image.visibility == Visibility::Private {
        // Same answer whether or not the image exists: signed URLs come with the API.
        return Err(HttpError::forbidden("this image needs a valid signature"));
    }

    let (output, negotiated) = if params.format_auto {
        (negotiate::best(req.headers, ext), true)
    } else {
        (ext, false)
    };
    let head_only = req.method == Method::HEAD;
    let cache = &state.config.cache;

    // The original's own format and nothing to do: its bytes, untouched.
    let transforms = !TransformParams {
        format_auto: false,
        ..params.clone()
    }
    .is_empty();
    if !transforms && image.format.as_output() == Some(output) {
        let etag = etag(&[&image.hash, "original", &cache.buster]);
        let meta = ResponseMeta {
            format: output,
            etag: &etag,
            image: &image,
            vary_accept: negotiated,
            cache: CacheStatus::Original,
            timing: None,
        };
        if not_modified(req.headers, &etag) {
            return Ok((
                meta.build(state, StatusCode::NOT_MODIFIED, None),
                CacheStatus::Original,
            ));
        }
        let started = Instant::now();
        let bytes = state
            .origin
            .get(&image.hash, state.config.limits.max_source_bytes)
            .await?;
        let fetch = started.elapsed();
        let meta = ResponseMeta {
            timing: Some((fetch, StageTimings::default())),
            ..meta
        };
        let body = (!head_only).then_some(bytes.clone());
        let mut res = meta.build(state, StatusCode::OK, body);
        res.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        return Ok((res, CacheStatus::Original));
    }

    let transform = params.resolve(&TransformDefaults::default(), &state.config.limits);
    let canonical = url::canonical(&transform);
    let etag = etag(&[&image.hash, &canonical, output.extension(), &cache.buster]);
    let mut meta = ResponseMeta {
        format: output,
        etag: &etag,
        image: &image,
        vary_accept: negotiated,
        cache: CacheStatus::Miss,
        timing: None,
    };
    if not_modified(req.headers, &etag) {
        return Ok((
            meta.build(state, StatusCode::NOT_MODIFIED, None),
            CacheStatus::Miss,
        ));
    }

    let started = Instant::now();
    let source = state
        .origin
        .get(&image.hash, state.config.limits.max_source_bytes)
        .await?;
    let fetch = started.elapsed();

    let limits = state.config.limits.clone();
    let settings = state.config.encode.clone();
    let class = if output == OutputFormat::Avif {
        JobClass::Avif
    } else {
        JobClass::Normal
    };
    let render_transform = transform.clone();
    let rendered = state
        .cpu
        .run(class, state.config.cpu.transform_timeout, move || {
            pipeline::render(&source, &render_transform, output, &limits, &settings)
        })
        .await?;
    let rendered = match rendered {
        Ok(r) => {
            state.metrics.render.observe_ok(output, fetch, &r.timings);
            r
        }
        Err(e) => {
            state.metrics.render.observe_err(output, &e);
            return Err(e.into());
        }
    };
    meta.timing = Some((fetch, rendered.timings));
    let len = rendered.bytes.len();
    let body = (!head_only).then(|| Bytes::from(rendered.bytes));
    let mut res = meta.build(state, StatusCode::OK, body);
    res.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(len));
    Ok((res, CacheStatus::Miss))
}

/// A strong ETag over the inputs that decide the bytes. 128 bits of SHA-256 are plenty to
/// never collide between variants.
fn etag(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    let digest = h.finalize();
    format!("\"{}\"", hex::encode(&digest[..16]))
}

/// `If-None-Match` uses the weak comparison (RFC 9110 §13.1.2): `W/` prefixes are ignored.
fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

struct ResponseMeta<'a> {
    format: OutputFormat,
    etag: &'a str,
    image: &'a ImageRecord,
    vary_accept: bool,
    cache: CacheStatus,
    /// Fetch duration and the render's stage durations, on a miss.
    timing: Option<(Duration, StageTimings)>,
}

impl ResponseMeta<'_> {
    fn build(&self, state: &AppState, status: StatusCode, body: Option<Bytes>) -> Response<Body> {
        let mut res = Response::new(body.map_or_else(empty, full));
        *res.status_mut() = status;
        let h = res.headers_mut();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(self.format.media_type()),
        );
        if let Ok(v) = HeaderValue::from_str(&format!(
            "public, max-age={}",
            state.config.cache.http_max_age.as_secs()
        )) {
            h.insert(CACHE_CONTROL, v);
        }
        if let Ok(v) = HeaderValue::from_str(self.etag) {
            h.insert(ETAG, v);
        }
        let uploaded = UNIX_EPOCH + Duration::from_secs(self.image.uploaded_at.max(0) as u64);
        if let Ok(v) =
            HeaderValue::from_str(&httpdate::fmt_http_date(uploaded.min(SystemTime::now())))
        {
            h.insert(LAST_MODIFIED, v);
        }
        if self.vary_accept {
            h.insert(VARY, HeaderValue::from_static("Accept"));
        }
        h.insert("x-cache", HeaderValue::from_static(self.cache.as_str()));
        h.insert(NOSNIFF.0, HeaderValue::from_static(NOSNIFF.1));
        if let Some((fetch, t)) = &self.timing {
            let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
            let value = format!(
                "fetch;dur={:.2}, decode;dur={:.2}, resize;dur={:.2}, effects;dur={:.2}, encode;dur={:.2}",
                ms(fetch),
                ms(&t.decode),
                ms(&t.resize),
                ms(&t.effects),
                ms(&t.encode)
            );
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert("server-timing", v);
            }
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_strong_quoted_and_input_sensitive() {
        let a = etag(&["h", "w=100", "webp", ""]);
        assert!(a.starts_with('"') && a.ends_with('"') && a.len() == 34);
        assert_ne!(a, etag(&["h", "w=100", "avif", ""]));
        assert_ne!(a, etag(&["h", "w=100", "webp", "2"]));
        // Separators keep ("ab","c") and ("a","bc") apart.
        assert_ne!(etag(&["ab", "c"]), etag(&["a", "bc"]));
    }

    #[test]
    fn if_none_match_uses_weak_comparison_and_lists() {
        let mut h = HeaderMap::new();
        h.insert(IF_NONE_MATCH, HeaderValue::from_static("\"x\", W/\"abc\""));
        assert!(not_modified(&h, "\"abc\""));
        assert!(!not_modified(&h, "\"abd\""));
        h.insert(IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(not_modified(&h, "\"anything\""));
    }
}
