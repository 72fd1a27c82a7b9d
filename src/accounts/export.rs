//! Export (access and portability): a tar archive streamed from the database and the
//! object store. One JSON document first, then each image's metadata and original, read a
//! page at a time, so memory stays flat whatever the account's size.

use std::io;

use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use serde_json::{Value, json};

use super::AccountError;
use crate::origin::Originals;
use crate::state::AppState;
use crate::store::{AccountStatus, ImageRecord};

/// The archive name of an image's original.
fn original_entry(image: &ImageRecord) -> String {
    format!("originals/{}.{}", image.id, image.format.extension())
}

/// The metadata document of an export: everything stored about the account but secrets.
async fn document(state: &AppState, name: &str) -> Result<Value, AccountError> {
    let account = state
        .store
        .account(name)
        .await?
        .filter(|a| a.status != AccountStatus::Erasing)
        .ok_or(AccountError::NoSuchAccount)?;
    let settings = super::settings_document(state, name).await?;
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
        .map(super::key_document)
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

/// An account's export: a tar archive (`application/x-tar`) to stream under `file_name`.
pub(crate) struct Export {
    pub(crate) file_name: String,
    /// `account.json`, then `images/{id}.json` and `originals/{id}.{ext}` per image. A failure
    /// mid-stream ends it with an error (the client must see a truncated transfer, never a
    /// well-formed archive with entries missing).
    pub(crate) archive: Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>,
}

/// Exports `name`: its metadata document is built now (so a missing account fails before
/// any byte), the images as the archive is read.
pub(crate) async fn export(state: &AppState, name: &str) -> Result<Export, AccountError> {
    let doc = document(state, name).await?;
    let json = serde_json::to_vec_pretty(&doc)
        .map_err(|e| AccountError::Export(format!("document: {e}")))?;
    let now = u64::try_from(crate::store::now_unix()).unwrap_or(0);
    let first = tar_entry("account.json", &json, now)
        .map_err(|e| AccountError::Export(format!("header: {e}")))?;
    let cursor = Cursor {
        store: state.store.clone(),
        originals: state.originals.clone(),
        account: name.to_string(),
        after: String::new(),
        queue: std::collections::VecDeque::new(),
        listed_all: false,
        max: state.config.limits.max_source_bytes,
        mtime: now,
    };
    Ok(Export {
        file_name: format!("imgnode-export-{name}.tar"),
        archive: Box::pin(export_stream(first, cursor)),
    })
}

/// Images of an export read a page at a time (by id), so memory does not grow with the
/// account: at most one page of metadata and one original are held.
struct Cursor {
    store: crate::store::Store,
    originals: Originals,
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
            "dominant_color": image.dominant_color, "has_alpha": image.has_alpha,
            "frame_count": image.frames, "paths": item.paths,
            "archive_entry": original_entry(image),
        });
        let meta = serde_json::to_vec_pretty(&meta).map_err(io::Error::other)?;
        let data = self
            .originals
            .read(&image.account, &image.hash, self.max)
            .await
            .map_err(|e| {
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
