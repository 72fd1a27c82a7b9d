//! The `demo` account seeded on first start, so the README's first URL answers at once.
//!
//! The photos are compiled into the binary (about 570 KB), so seeding works wherever the
//! binary runs. Sources and licences: `tests/fixtures/photos/SOURCES.md`.

use bytes::Bytes;

use crate::ingest::{Ingest, IngestError, Original};
use crate::store::{StoreError, Visibility};

pub(crate) const ACCOUNT: &str = "demo";

/// The `free` plan's quotas: the demo account's photos are public, so whoever reaches the
/// node can make it render them; a quota bounds what that costs.
pub(crate) const PLAN: &str = "free";

const PHOTOS: &[(&str, &[u8])] = &[
    (
        "ladybird.jpg",
        include_bytes!("../tests/fixtures/photos/ladybird.jpg"),
    ),
    (
        "dune.jpg",
        include_bytes!("../tests/fixtures/photos/dune.jpg"),
    ),
    (
        "elephants.jpg",
        include_bytes!("../tests/fixtures/photos/elephants.jpg"),
    ),
    (
        "arc-colors.png",
        include_bytes!("../tests/fixtures/photos/arc-colors.png"),
    ),
];

/// Creates the `demo` account with its photos unless the account exists. Returns whether it
/// seeded anything.
pub(crate) async fn seed(ingest: &Ingest<'_>) -> Result<bool, IngestError> {
    match ingest.store.create_account(ACCOUNT, PLAN).await {
        Ok(_) => {}
        Err(StoreError::Conflict(_)) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    for (name, bytes) in PHOTOS {
        let added = ingest
            .add(Original {
                account: ACCOUNT.to_string(),
                path: (*name).to_string(),
                original_filename: (*name).to_string(),
                bytes: Bytes::from_static(bytes),
                visibility: Visibility::Public,
                placement: Default::default(),
            })
            .await;
        match added {
            Ok(_) => {}
            // A node configured with tighter limits than the demo photos still starts.
            Err(IngestError::Image(e)) => {
                tracing::warn!(photo = name, error = %e, "demo photo not seeded");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}
