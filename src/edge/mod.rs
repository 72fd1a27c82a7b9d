//! The edge: what a CDN in front of the node needs to keep its copies right.
//!
//! Owns the cache tags every image answer carries (`tags`: which tags, in which headers, within
//! each CDN's limits), the purge drivers that reach the CDNs (`drivers`), and the worker that
//! delivers the purge outbox the store fills in the same transaction as each change
//! (`worker`). Must never decide *when* something is purged (the store does, where the
//! change commits) and never block a request on a CDN.

pub(crate) mod drivers;
pub(crate) mod tags;
pub(crate) mod worker;

pub(crate) use tags::{TagHeader, TagSet};
