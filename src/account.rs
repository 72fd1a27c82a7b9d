//! The privacy operations on a whole account: export (access and portability) and erasure.
//!
//! Owns their order. Erasure first marks the account `erasing` (from then on nothing of it is
//! served and its keys are refused), purges its cached variants (data keys first), deletes its
//! metadata in one transaction, deletes the originals no other account references, and only
//! then deletes the account row; an erasure interrupted by a crash is resumed at start-up
//! because the row is still there, marked. Export streams a tar archive: one JSON document,
//! then each image's metadata and original, read a page at a time, so memory stays flat
//! whatever the account's size.
//! Must never decide HTTP routes or authentication.

use std::io;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};

use crate::error::{ErrorCode, HttpError};
use crate::origin::Origin;
use crate::server::Body;
use crate::state::AppState;
use crate::store::{AccountStatus, ImageRecord};

/// What an erasure removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Erased {
    pub images: usize,
    /// Originals deleted from object storage (those no other account references).
    pub originals_deleted: usize,
}

/// Erases `name` completely (see the module doc for the order). Idempotent: running it again
/// on a half-erased account finishes the job.
pub async fn erase(state: &AppState, name: &str) -> Result<Erased, HttpError> {
    if !state
        .store
        .set_account_status(name, AccountStatus::Erasing)
        .await?
    {
        return Err(HttpError::new(ErrorCode::NotFound, "no such account"));
    }
    state.caches.meta.invalidate_account(name).await;
    state.caches.purge_account(&state.store, name).await?;
    // Saves the hashes to release in the same transaction: a resume after this point still
    // finds them.
    state.store.delete_account_data(name).await?;
    state.caches.meta.invalidate_account(name).await;
    state.api_keys.forget_account(name);
    state.usage.forget(name);
    let hashes = state.store.erasure_originals(name).await?;
    let mut originals_deleted = 0;
    for hash in &hashes {
        // A failure here leaves an unreferenced object, which the orphan sweep deletes.
        match state.ingest().release_original(hash).await {
            Ok(true) => originals_deleted += 1,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "erasure: deleting an original failed"),
        }
    }
    state.store.delete_account(name).await?;
    state.caches.meta.invalidate_account(name).await;
    tracing::info!(
        account = name,
        images = hashes.len(),
        originals_deleted,
        "account erased"
    );
    Ok(Erased {
        images: hashes.len(),
        originals_deleted,
    })
}

/// Finishes every erasure a crash (or a cancelled request) interrupted; run at start-up
/// before serving, and with every retention pass.
pub async fn resume_erasures(state: &AppState) -> Result<usize, HttpError> {
    let pending = state.store.accounts_in(AccountStatus::Erasing).await?;
    for name in &pending {
        tracing::warn!(account = %name, "resuming an interrupted account erasure");
        erase(state, name).await?;
    }
    Ok(pending.len())
}

/// The archive name of an image's original.
fn original_entry(image: &ImageRecord) -> String {
    format!("originals/{}.{}", image.id, image.format.extension())
}

/// The metadata document of an export: everything stored about the account but secrets.
async fn document(state: &AppState, name: &str) -> Result<Value, HttpError> {
    let account = state
        .store
        .account(name)
        .await?
        .filter(|a| a.status != AccountStatus::Erasing)
        .ok_or_else(|| HttpError::new(ErrorCode::NotFound, "no such account"))?;
    let settings = crate::api::settings::settings_json(state, name).await?;
    let presets: Vec<Value> = state
        .store
        .presets(name)
        .await?
        .iter()
        .map(|p| {
            json!({
                "id": p.id, "name": p.name, "description": p.description,
                "params": serde_json::from_str::<Value>(&p.params).unwrap_or(Value::Null),
                "created_at": p.created_at, "updated_at": p.updated_at, "usage_count": p.usage_count,
            })
        })
        .collect();
    let keys: Vec<Value> = state
        .store
        .api_keys(name)
        .await?
        .iter()
        .map(crate::api::key_json)
        .collect();
    let usage: Vec<Value> = state
        .store
        .usage_history(name)
        .await?
        .iter()
        .map(|(period, u)| {
            json!({
                "period": period, "uploads": u.uploads, "api_requests": u.api_requests,
                "bandwidth_bytes": u.bandwidth_bytes, "transformations": u.transformations,
            })
        })
        .collect();
    let (image_count, _) = state.store.account_totals(name).await?;
    let doc = json!({
        "format": "imgnode-account-export/1",
        "exported_at": crate::store::rfc3339(crate::store::now_unix()),
        "account": {
            "name": account.name, "plan": account.plan,
            "status": account.status.as_str(), "created_at": account.created_at,
        },
        "settings": settings,
        "presets": presets,
        "api_keys": keys,
        "usage": usage,
        "image_count": image_count,
        "images": "one images/{id}.json per image (metadata and paths), beside originals/{id}.{ext}",
    });
    Ok(doc)
}

/// One tar entry: header, data, padding to the 512-byte block.
fn tar_entry(path: &str, data: &[u8], mtime: u64) -> io::Result<Bytes> {
    let mut header = tar::Header::new_ustar();
    header.set_path(path)?;
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(mtime);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let padding = (512 - data.len() % 512) % 512;
    let mut out = BytesMut::with_capacity(512 + data.len() + padding);
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len() + padding, 0);
    Ok(out.freeze())
}

/// `GET .../export`: `application/x-tar` with `account.json` and `originals/{id}.{ext}`.
/// A failure mid-stream aborts the response (the client sees a truncated transfer, never a
/// well-formed archive with entries missing).
pub async fn export(state: &AppState, name: &str) -> Result<Response<Body>, HttpError> {
    let doc = document(state, name).await?;
    let json = serde_json::to_vec_pretty(&doc)
        .map_err(|e| HttpError::internal(format!("export document: {e}")))?;
    let now = u64::try_from(crate::store::now_unix()).unwrap_or(0);
    let first = tar_entry("account.json", &json, now)
        .map_err(|e| HttpError::internal(format!("export header: {e}")))?;
    let cursor = Cursor {
        store: state.store.clone(),
        origin: state.origin.clone(),
        account: name.to_string(),
        after: String::new(),
        queue: std::collections::VecDeque::new(),
        listed_all: false,
        max: state.config.limits.max_source_bytes,
        mtime: now,
    };
    let body = export_stream(first, cursor);
    let mut res =
        Response::new(StreamBody::new(body.map(|chunk| chunk.map(Frame::data))).boxed_unsync());
    *res.status_mut() = StatusCode::OK;
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"imgnode-export-{name}.tar\""
    )) {
        h.insert(CONTENT_DISPOSITION, v);
    }
    Ok(res)
}

/// Images of an export read a page at a time (by id), so memory does not grow with the
/// account: at most one page of metadata and one original are held.
struct Cursor {
    store: crate::store::Store,
    origin: Origin,
    account: String,
    /// The last image id sent.
    after: String,
    queue: std::collections::VecDeque<crate::store::ImageWithPaths>,
    listed_all: bool,
    max: u64,
    mtime: u64,
}

const EXPORT_PAGE: u32 = 100;

impl Cursor {
    /// The next image's two entries (`images/{id}.json`, `originals/{id}.{ext}`), or `None`
    /// at the end.
    async fn next_entries(&mut self) -> io::Result<Option<Bytes>> {
        if self.queue.is_empty() && !self.listed_all {
            let page = self
                .store
                .images_after(&self.account, &self.after, EXPORT_PAGE)
                .await
                .map_err(|e| io::Error::other(format!("export: listing images: {e}")))?;
            self.listed_all = page.len() < EXPORT_PAGE as usize;
            self.queue.extend(page);
        }
        let Some(item) = self.queue.pop_front() else {
            return Ok(None);
        };
        let image = &item.image;
        self.after = image.id.clone();
        let meta = json!({
            "id": image.id, "hash": image.hash, "format": image.format.extension(),
            "mime_type": image.format.media_type(), "width": image.width,
            "height": image.height, "size": image.size,
            "original_filename": image.original_filename,
            "uploaded_at": crate::store::rfc3339(image.uploaded_at), "visibility": image.visibility.as_str(),
            "dominant_color": image.dominant_color, "paths": item.paths,
            "archive_entry": original_entry(image),
        });
        let meta = serde_json::to_vec_pretty(&meta).map_err(io::Error::other)?;
        let data = self.origin.get(&image.hash, self.max).await.map_err(|e| {
            io::Error::other(format!("export: original {} unavailable: {e}", image.id))
        })?;
        let mut out = BytesMut::new();
        out.extend_from_slice(&tar_entry(
            &format!("images/{}.json", image.id),
            &meta,
            self.mtime,
        )?);
        out.extend_from_slice(&tar_entry(&original_entry(image), &data, self.mtime)?);
        Ok(Some(out.freeze()))
    }
}

fn export_stream(
    first: Bytes,
    cursor: Cursor,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    enum Step {
        First(Bytes, Cursor),
        Next(Cursor),
        Done,
    }
    futures_util::stream::unfold(Step::First(first, cursor), |step| async move {
        match step {
            Step::First(bytes, cursor) => Some((Ok(bytes), Step::Next(cursor))),
            Step::Next(mut cursor) => match cursor.next_entries().await {
                Ok(Some(bytes)) => Some((Ok(bytes), Step::Next(cursor))),
                // Two zero blocks end a tar archive.
                Ok(None) => Some((Ok(Bytes::from(vec![0u8; 1024])), Step::Done)),
                Err(e) => {
                    tracing::error!(error = %e, "account export aborted");
                    Some((Err(e), Step::Done))
                }
            },
            Step::Done => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_entries_are_block_aligned_and_readable() {
        let mut archive = Vec::new();
        archive.extend_from_slice(&tar_entry("account.json", b"{}", 1).unwrap());
        archive.extend_from_slice(&tar_entry("originals/a.jpg", &[7u8; 700], 1).unwrap());
        archive.extend_from_slice(&[0u8; 1024]);
        assert_eq!(archive.len() % 512, 0);
        let mut reader = tar::Archive::new(archive.as_slice());
        let names: Vec<(String, u64)> = reader
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().display().to_string(), e.size())
            })
            .collect();
        assert_eq!(
            names,
            [
                ("account.json".to_string(), 2),
                ("originals/a.jpg".to_string(), 700)
            ]
        );
    }
}
