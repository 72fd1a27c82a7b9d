//! Routing: a request becomes a route of its listener's table before any handler runs, and
//! every route runs inside one request envelope ([`envelope::Envelope`]).
//!
//! The public listener answers `/health`, the tenant API (`/api/v1/`, routed further by
//! `api::ApiRoute`), the console (`/console/`, `console::ConsoleRoute`) and image URLs
//! (`delivery`); the ops listener answers metrics, probes and
//! the operator API (`admin::OpsRoute`). Sits above the handlers and below the wiring: it
//! picks a handler, never decides an answer itself.

mod envelope;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::header::HOST;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::delivery::{self, DeliveryRequest};
use crate::error::{ErrorCode, HttpError};
use crate::server::{Body, Handler, response};
use crate::state::AppState;
use envelope::{Answer, Envelope};

/// Routes of the public listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PublicRoute<'a> {
    Health,
    /// The tenant API under `/api/v1/`.
    Api,
    /// The tenant console: `/console` and everything under `/console/`.
    Console,
    /// `/i/{account}/{path}.{ext}`, or the bare form on a CDN host; holds what follows the
    /// prefix.
    Image(&'a str),
    NotFound,
}

impl PublicRoute<'_> {
    fn label(self) -> &'static str {
        match self {
            PublicRoute::Health => "health",
            PublicRoute::Api => "api",
            PublicRoute::Console => "console",
            PublicRoute::Image(_) => "image",
            PublicRoute::NotFound => "not_found",
        }
    }
}

pub(crate) fn public_route<'a>(
    path: &'a str,
    host: Option<&str>,
    state: &AppState,
) -> PublicRoute<'a> {
    if path == "/health" {
        return PublicRoute::Health;
    }
    if path.starts_with("/api/v1/") {
        return PublicRoute::Api;
    }
    if path == "/console" || path.starts_with("/console/") {
        return PublicRoute::Console;
    }
    if let Some(rest) = path.strip_prefix("/i/") {
        return PublicRoute::Image(rest);
    }
    let d = &state.config.delivery;
    let bare = d.bare_paths
        || host.is_some_and(|h| {
            let h = h.split(':').next().unwrap_or(h);
            d.cdn_hosts.iter().any(|c| c.eq_ignore_ascii_case(h))
        });
    if bare {
        // Top-level routes are matched above, and account names that could collide with
        // them are refused at creation (`store::validate_account_name`).
        let rest = path.strip_prefix('/').unwrap_or(path);
        if rest.contains('/') {
            return PublicRoute::Image(rest);
        }
    }
    PublicRoute::NotFound
}

/// The public listener's handler.
#[derive(Clone)]
pub(crate) struct PublicHandler(pub(crate) Arc<AppState>);

impl Handler for PublicHandler {
    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let state = &self.0;
        let envelope = Envelope::open(state, &req, peer);
        let answer = public(state, req, envelope.client, &envelope.path).await;
        envelope.close(state, answer)
    }
}

async fn public(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    client: IpAddr,
    path: &str,
) -> Answer {
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host());
    let route = public_route(path, host, state);
    let method = req.method();
    let get_like = method == Method::GET || method == Method::HEAD;
    match route {
        PublicRoute::Api => {
            let api = crate::api::ApiRoute::parse(method, path);
            let label = api.label();
            let outcome = crate::api::handle(state, api, req, client).await;
            Answer {
                rate: outcome.rate,
                // Tenant API answers are per account and credential: never stored by a
                // shared cache, errors included (the brief public caching of 404s is for
                // image URLs).
                private: true,
                ..Answer::new(outcome.result, label)
            }
        }
        PublicRoute::Console => {
            let console = crate::console::ConsoleRoute::parse(method, path);
            let label = console.label();
            let result = crate::console::handle(state, console, req, client).await;
            Answer {
                // Pages and answers are per session: `no-store`, errors included.
                private: true,
                console: true,
                ..Answer::new(result, label)
            }
        }
        _ if !get_like => Answer::new(
            Err(HttpError::new(
                ErrorCode::MethodNotAllowed,
                "use GET or HEAD",
            )),
            route.label(),
        ),
        PublicRoute::Health => Answer::new(
            Ok(response::json(
                StatusCode::OK,
                &serde_json::json!({"status": "ok", "timestamp": rfc3339_now()}),
            )),
            route.label(),
        ),
        PublicRoute::Image(target) => {
            let r = delivery::handle(
                state,
                DeliveryRequest {
                    target,
                    query: req.uri().query().unwrap_or(""),
                    method,
                    headers: req.headers(),
                    client,
                },
            )
            .await;
            match r {
                Ok((res, cache)) => Answer {
                    cache: Some(cache.as_str()),
                    ..Answer::new(Ok(res), route.label())
                },
                Err(e) => Answer::new(Err(e), route.label()),
            }
        }
        PublicRoute::NotFound => Answer::new(
            Err(HttpError::new(ErrorCode::NotFound, "no such route")),
            route.label(),
        ),
    }
}

/// The ops listener's handler.
#[derive(Clone)]
pub(crate) struct OpsHandler(pub(crate) Arc<AppState>);

impl Handler for OpsHandler {
    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let state = &self.0;
        let envelope = Envelope::open(state, &req, peer);
        let answer = match crate::admin::OpsRoute::parse(req.method(), &envelope.path) {
            Ok(route) => {
                let label = route.label();
                let result = crate::admin::handle(state, route, req, envelope.client).await;
                Answer::new(result, label)
            }
            Err(e) => Answer::new(Err(e), "ops_bad_method"),
        };
        envelope.close(state, answer)
    }
}

fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
