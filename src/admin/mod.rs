//! The ops listener: `/metrics`, `/live`, `/ready` (operator API routes come with it later).
//!
//! Must never run on the public listener: it exposes internals and, later, operator powers.

use std::sync::atomic::Ordering;

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Response, StatusCode};

use crate::app::AppState;
use crate::error::{ErrorCode, HttpError};
use crate::server::{Body, full, response};

/// Answers one ops request; errors come back for the router to render.
pub fn handle(state: &AppState, method: &Method, path: &str) -> Result<Response<Body>, HttpError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(HttpError::new(ErrorCode::MethodNotAllowed, "use GET"));
    }
    match path {
        "/metrics" => {
            let mut res = Response::new(full(state.metrics.render_text()));
            res.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(res)
        }
        "/live" => Ok(response::json(
            StatusCode::OK,
            &serde_json::json!({"status": "ok"}),
        )),
        "/ready" => {
            let ready = state.ready.load(Ordering::Acquire);
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            Ok(response::json(
                status,
                &serde_json::json!({"status": if ready { "ready" } else { "starting" }}),
            ))
        }
        _ => Err(HttpError::new(ErrorCode::NotFound, "no such route")),
    }
}
