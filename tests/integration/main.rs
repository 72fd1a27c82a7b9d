//! The one integration test binary: real nodes on 127.0.0.1:0, real HTTP, real images.

mod harness;

mod abuse;
mod accounts;
mod api;
mod at_rest;
mod browser;
mod cache;
mod cluster;
mod config;
mod connections;
mod console;
mod delivery;
mod edge;
mod errors;
mod faults;
mod formats;
mod hardening;
mod hostile;
mod images;
mod isolation;
mod jwt;
mod keys;
mod lifecycle;
mod lockout;
mod ops;
mod s3;
mod sdk;
mod tls;
