//! imgnode: an image-transform CDN node. See `README.md` and `../shared/design.md` for the
//! architecture; each module's doc says what it owns and what it must never do.

pub mod accounts;
pub mod admin;
pub mod api;
pub mod app;
pub mod auth;
pub mod cache;
pub mod cluster;
pub mod config;
pub mod cpu;
pub mod delivery;
pub mod demo;
pub mod error;
pub mod fsperm;
pub mod ingest;
pub mod metrics;
pub mod origin;
pub mod pipeline;
pub mod ratelimit;
pub mod render;
pub mod server;
pub mod signing;
pub mod state;
pub mod store;
pub mod usage;

#[cfg(test)]
mod layering;
