//! imgnode: an image-transform CDN node. The architecture (layers, a request's path, where
//! state lives, how to add a route, parameter, format or metric) is `docs/architecture.md`;
//! each module's doc says what it owns and what it must never do.

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
pub mod routes;
pub mod server;
pub mod signing;
pub mod state;
pub mod store;
pub mod usage;

#[cfg(test)]
mod layering;
