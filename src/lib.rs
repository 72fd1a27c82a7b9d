//! imgnode: an image-transform CDN node. The architecture (layers, a request's path, where
//! state lives, how to add a route, parameter, format or metric) is `docs/architecture.md`;
//! each module's doc says what it owns and what it must never do.

// Everything is crate-private unless the binary, the integration tests, the benches or the
// fuzz targets use it: then the dead-code lint sees what nothing uses.
#![warn(unreachable_pub)]

pub mod accounts;
pub(crate) mod admin;
pub mod api;
pub mod app;
pub mod auth;
pub(crate) mod cache;
pub mod cluster;
pub mod config;
pub(crate) mod console;
pub(crate) mod cpu;
pub mod delivery;
pub(crate) mod demo;
pub(crate) mod edge;
pub(crate) mod error;
pub mod fsperm;
pub mod ingest;
pub(crate) mod metrics;
pub mod origin;
pub mod pipeline;
pub(crate) mod ratelimit;
pub(crate) mod render;
pub(crate) mod routes;
pub mod server;
pub mod signing;
pub mod state;
pub mod store;
pub mod usage;

#[cfg(test)]
mod layering;
