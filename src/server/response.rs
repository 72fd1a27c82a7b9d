//! Building responses that every route shares: JSON bodies and the one error rendering.

use std::time::Duration;

use http::header::{
    CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, X_CONTENT_TYPE_OPTIONS,
};
use http::{HeaderName, HeaderValue, Response, StatusCode};

use super::{Body, empty, full};
use crate::error::{ErrorCode, HttpError};

pub(crate) const NOSNIFF: (HeaderName, &str) = (X_CONTENT_TYPE_OPTIONS, "nosniff");

/// A JSON response with `no-store`.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let body = value.to_string();
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(NOSNIFF.0, HeaderValue::from_static(NOSNIFF.1));
    res
}

/// An account export: the tar archive streamed as an attachment. A stream error aborts the
/// response, so the client sees a truncated transfer.
pub(crate) fn export(export: crate::accounts::Export) -> Response<Body> {
    use futures_util::StreamExt;
    use http_body_util::{BodyExt, StreamBody};
    let frames = export
        .archive
        .map(|chunk| chunk.map(hyper::body::Frame::data));
    let mut res = Response::new(StreamBody::new(frames).boxed_unsync());
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}\"", export.file_name))
    {
        h.insert(http::header::CONTENT_DISPOSITION, v);
    }
    res
}

/// The JSON error body of the spec. 404s may be cached briefly (`not_found_max_age`) so a
/// CDN absorbs scans for missing images; every other error is `no-store`.
pub(crate) fn error(
    err: &HttpError,
    path: &str,
    head_only: bool,
    not_found_max_age: Duration,
) -> Response<Body> {
    let body = err.body(path);
    let len = body.len();
    let mut res = Response::new(if head_only { empty() } else { full(body) });
    *res.status_mut() = err.status();
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(NOSNIFF.0, HeaderValue::from_static(NOSNIFF.1));
    let cache = if err.code == ErrorCode::NotFound && !not_found_max_age.is_zero() {
        format!("public, max-age={}", not_found_max_age.as_secs())
    } else {
        "no-store".to_string()
    };
    if let Ok(v) = HeaderValue::from_str(&cache) {
        h.insert(CACHE_CONTROL, v);
    }
    if let Some(secs) = err.retry_after {
        h.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    if err.code == ErrorCode::MethodNotAllowed {
        let allow = err.allow.unwrap_or("GET, HEAD");
        h.insert(http::header::ALLOW, HeaderValue::from_static(allow));
    }
    res
}
