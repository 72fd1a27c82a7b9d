//! Taking in an original: validate its path, sniff and probe the bytes (limits before any
//! decode), hash them, write them to the origin, then commit the metadata.
//!
//! Owns the order that keeps the store consistent with the origin: the object is written
//! before the metadata commits, so a crash in between leaves at most an unreferenced object,
//! never a path pointing at nothing. Shared by `imgnode import`, demo seeding and uploads.
//! Must never do CPU work on the async worker: probing and hashing run on `cpu::Pool`.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::cache::Caches;
use crate::cpu::{CpuError, JobClass, Pool};
use crate::origin::{Listed, OriginGetError, Originals, OriginalsError};
use crate::pipeline::{self, Limits, PipelineError};
use crate::store::{NewImage, PathOutcome, Placement, Store, StoreError, Visibility};

/// Longest stored path, in bytes.
const MAX_PATH_LEN: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("invalid path: {0}")]
    InvalidPath(String),
    #[error("{0}")]
    Image(#[from] PipelineError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Origin(#[from] crate::origin::OriginError),
    #[error("{0}")]
    Originals(#[from] OriginalsError),
    #[error("{0}")]
    Read(#[from] OriginGetError),
    #[error("{0}")]
    Cpu(#[from] CpuError),
}

/// One original to take in.
#[derive(Debug, Clone)]
pub struct Original {
    pub account: String,
    /// Relative path with extension, `/`-separated (e.g. `trips/2024/beach.jpg`).
    pub path: String,
    pub original_filename: String,
    pub bytes: Bytes,
    pub visibility: Visibility,
    /// What the upload may do to what the account holds already.
    pub placement: Placement,
}

/// What was stored.
#[derive(Debug, Clone)]
pub struct Ingested {
    pub(crate) image: NewImage,
    pub(crate) outcome: PathOutcome,
}

/// The parts ingestion needs.
pub struct Ingest<'a> {
    pub(crate) store: &'a Store,
    pub(crate) originals: &'a Originals,
    pub(crate) caches: &'a Caches,
    pub(crate) cpu: &'a Pool,
    pub(crate) limits: &'a Limits,
    pub(crate) deadline: std::time::Duration,
}

impl Ingest<'_> {
    pub async fn add(&self, original: Original) -> Result<Ingested, IngestError> {
        let stem = path_stem(&original.path)?.to_string();
        if original.bytes.len() as u64 > self.limits.max_source_bytes {
            return Err(PipelineError::SourceTooLarge(format!(
                "{} bytes is over limits.max_source_bytes ({})",
                original.bytes.len(),
                self.limits.max_source_bytes
            ))
            .into());
        }
        let bytes = original.bytes.clone();
        let limits = self.limits.clone();
        let (info, hash, color) = self
            .cpu
            .run(JobClass::Normal, self.deadline, move || {
                let info = pipeline::probe(&bytes, &limits)?;
                let hash = hex::encode(Sha256::digest(&bytes));
                // Also proves the whole file decodes: a truncated upload is refused here,
                // not on its first delivery.
                let color = pipeline::dominant_color(&bytes, &info, &limits)?;
                Ok::<_, PipelineError>((info, hash, color))
            })
            .await??;
        let (width, height) = info.oriented_size();
        let image = NewImage {
            account: original.account,
            id: hash[..16].to_string(),
            hash,
            format: info.format,
            width,
            height,
            size: original.bytes.len() as u64,
            original_filename: original.original_filename,
            visibility: original.visibility,
            dominant_color: Some(hex::encode(color.0)),
            has_alpha: Some(info.has_alpha),
            frames: Some(info.frames),
        };
        let outcome = {
            // Held from the object write to the commit: a concurrent delete of these bytes'
            // last reference cannot remove the object in between, on this node (the
            // in-process lock) or any other (the database's).
            self.with_hash_locks(&image.hash, async {
                self.originals
                    .write(&image.account, &image.hash, &original.bytes)
                    .await?;
                Ok(self
                    .store
                    .put_image(&image, &original.path, &stem, original.placement)
                    .await?)
            })
            .await?
        };
        // The path may have pointed elsewhere: it must answer with the new image at once.
        self.caches
            .meta
            .invalidate_path(&image.account, &stem)
            .await;
        if let Some((_, old_hash)) = &outcome.orphaned {
            // The upload has committed: a failed cleanup must not turn it into an error (a
            // retry would then be a 409). What is left is unreachable and swept later.
            if let Err(e) = self
                .caches
                .purge_originals(self.store, &image.account, std::slice::from_ref(old_hash))
                .await
            {
                tracing::warn!(error = %e, "purging a replaced image's variants failed");
            }
            if let Err(e) = self.release_original(&image.account, old_hash).await {
                tracing::warn!(error = %e, "deleting a replaced image's original failed");
            }
        }
        Ok(Ingested { image, outcome })
    }
}

impl Ingest<'_> {
    /// Runs `work` (a future, so nothing of it runs before) holding `hash`'s locks: this
    /// node's in-process one and every node's in the database.
    async fn with_hash_locks<T>(
        &self,
        hash: &str,
        work: impl Future<Output = Result<T, IngestError>>,
    ) -> Result<T, IngestError> {
        let _guard = self.originals.origin().lock(hash).await;
        let node_lock = self.store.lock_hash(hash).await?;
        let done = work.await;
        node_lock.release().await;
        done
    }

    /// Deletes `account`'s original `hash` when none of its images references it any more
    /// (checked under the hash's locks, so a concurrent upload of the same bytes wins): its
    /// data key, then its object. Returns whether something was deleted.
    pub(crate) async fn release_original(
        &self,
        account: &str,
        hash: &str,
    ) -> Result<bool, IngestError> {
        let deleted = self
            .with_hash_locks(hash, async {
                Ok(self.originals.release(account, hash).await?)
            })
            .await?;
        if !deleted {
            return Ok(false);
        }
        // Variants are purged per account when an image goes (see `Caches::purge_originals`);
        // what is left here is the bytes.
        self.caches
            .forget_original(&crate::cache::scope(account, hash))
            .await;
        Ok(true)
    }

    /// What an erasure leaves to delete once the account's keys are shredded: its sealed
    /// object, and the plaintext of an earlier version when nothing reads it any more.
    pub(crate) async fn release_erased(
        &self,
        hash: &str,
        object: Option<&str>,
    ) -> Result<bool, IngestError> {
        self.with_hash_locks(hash, async {
            let mut deleted = false;
            if let Some(object) = object {
                self.originals
                    .origin()
                    .delete_object(object)
                    .await
                    .map_err(OriginalsError::from)?;
                deleted = true;
            }
            Ok(self.originals.release_plaintext(hash).await? || deleted)
        })
        .await
    }

    /// Deletes what no image references that was written before `before_unix`: the key rows
    /// and objects of uploads that crashed between writing the object and committing the
    /// metadata, of deletes whose object removal failed, and plaintext objects of an earlier
    /// version nothing reads any more. Returns how many objects went.
    pub async fn sweep_orphans(&self, before_unix: i64) -> Result<usize, IngestError> {
        let mut deleted = 0;
        for (account, hash) in self.store.unreferenced_original_keys(before_unix).await? {
            match self.release_original(&account, &hash).await {
                Ok(true) => deleted += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(hash = %hash, error = %e, "orphan sweep: skipped"),
            }
        }
        for listed in self
            .originals
            .origin()
            .objects_older_than(before_unix)
            .await?
        {
            // One failure must not stop the sweep; the next run retries it.
            let outcome = match &listed {
                Listed::Plaintext(hash) => self.release_erased(hash, None).await,
                Listed::Sealed(object) => self.delete_unreferenced_object(object).await,
            };
            match outcome {
                Ok(true) => {
                    tracing::info!(object = ?listed, "deleted an unreferenced original");
                    deleted += 1;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(object = ?listed, error = %e, "orphan sweep: skipped"),
            }
        }
        Ok(deleted)
    }

    async fn delete_unreferenced_object(&self, object: &str) -> Result<bool, IngestError> {
        if self.store.object_referenced(object).await? {
            return Ok(false);
        }
        self.originals
            .origin()
            .delete_object(object)
            .await
            .map_err(OriginalsError::from)?;
        Ok(true)
    }

    /// Seals `account`'s original `hash`, stored in plaintext by an earlier version: reads
    /// it, checks it against its hash (on the CPU pool), writes it sealed, and deletes the
    /// plaintext once no image reads it. Returns whether it sealed it (false: done already).
    pub(crate) async fn encrypt_plaintext(
        &self,
        account: &str,
        hash: &str,
    ) -> Result<bool, IngestError> {
        self.with_hash_locks(hash, async {
            if self.originals.object_name(account, hash).await?.is_some() {
                return Ok(false);
            }
            // What an earlier version accepted may be over today's limit: a generous bound
            // still keeps one object from taking the memory.
            let max = self.limits.max_source_bytes.saturating_mul(4);
            let plain = self.originals.origin().get_plaintext(hash, max).await?;
            let check = plain.clone();
            let expected = hash.to_string();
            let matches = self
                .cpu
                // A render's lane, not the background one (which waits for an idle pool):
                // a node that is never idle must still get through its originals, at the
                // pass's bounded rate; a full queue refuses it and the pass retries.
                .run(JobClass::Normal, self.deadline, move || {
                    hex::encode(Sha256::digest(&check)) == expected
                })
                .await?;
            if !matches {
                return Err(IngestError::Originals(OriginalsError::Origin(
                    crate::origin::OriginError::Unavailable(format!(
                        "plaintext original {hash} does not match its content hash; left as is"
                    )),
                )));
            }
            self.originals.write(account, hash, &plain).await?;
            self.originals.release_plaintext(hash).await?;
            Ok(true)
        })
        .await
    }
}

/// What `import_dir` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// Originals stored for the first time in this account.
    pub added: usize,
    /// Paths added to bytes the account already had (SHA-256 dedup).
    pub deduplicated: usize,
    /// Files already imported: their path holds the same bytes (a re-run of an import).
    pub unchanged: usize,
    /// Files refused, with the reason.
    pub skipped: Vec<(String, String)>,
}

/// What an import reports as it goes; the command line draws it (a progress bar on a
/// terminal, periodic lines otherwise).
pub trait ImportProgress {
    /// The folder has been listed: this many files and bytes to go through.
    fn start(&mut self, files: u64, bytes: u64);
    /// One file done (imported, unchanged or skipped) of this many bytes.
    fn done(&mut self, bytes: u64);
}

/// Progress nobody watches.
impl ImportProgress for () {
    fn start(&mut self, _: u64, _: u64) {}
    fn done(&mut self, _: u64) {}
}

impl Ingest<'_> {
    /// Imports every file under `dir` into `account`, each at its path relative to `dir`.
    /// Files that are not acceptable images are reported, not fatal; files whose path already
    /// holds the same bytes are counted as unchanged without being probed again, so a re-run
    /// of an interrupted import resumes where it stopped.
    pub async fn import_dir(
        &self,
        account: &str,
        dir: &std::path::Path,
        progress: &mut dyn ImportProgress,
    ) -> Result<ImportReport, std::io::Error> {
        let mut report = ImportReport::default();
        let mut pending = vec![dir.to_path_buf()];
        let mut files = Vec::new();
        let mut total_bytes = 0u64;
        while let Some(folder) = pending.pop() {
            let mut entries = tokio::fs::read_dir(&folder).await?;
            while let Some(entry) = entries.next_entry().await? {
                let kind = entry.file_type().await?;
                if kind.is_dir() {
                    pending.push(entry.path());
                } else if kind.is_file() {
                    let len = entry.metadata().await.map_or(0, |m| m.len());
                    total_bytes += len;
                    files.push((entry.path(), len));
                }
            }
        }
        files.sort();
        progress.start(files.len() as u64, total_bytes);
        for (file, len) in files {
            let rel = file
                .strip_prefix(dir)
                .unwrap_or(&file)
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            match self.import_file(account, &file, rel.clone()).await {
                Ok(Imported::Added) => report.added += 1,
                Ok(Imported::Deduplicated) => report.deduplicated += 1,
                Ok(Imported::Unchanged) => report.unchanged += 1,
                Err(why) => report.skipped.push((rel, why)),
            }
            progress.done(len);
        }
        Ok(report)
    }

    async fn import_file(
        &self,
        account: &str,
        file: &std::path::Path,
        rel: String,
    ) -> Result<Imported, String> {
        let bytes = Bytes::from(tokio::fs::read(file).await.map_err(|e| e.to_string())?);
        if let Ok(stem) = path_stem(&rel)
            && let Ok(Some(existing)) = self.store.image_by_stem(account, stem).await
            && existing.size == bytes.len() as u64
        {
            let hashed = bytes.clone();
            let hash = self
                .cpu
                .run(JobClass::Normal, self.deadline, move || {
                    hex::encode(Sha256::digest(&hashed))
                })
                .await
                .map_err(|e| e.to_string())?;
            let paths = self
                .store
                .image_paths(account, &existing.id)
                .await
                .map_err(|e| e.to_string())?;
            if hash == existing.hash && paths.contains(&rel) {
                return Ok(Imported::Unchanged);
            }
        }
        let name = rel.rsplit('/').next().unwrap_or(&rel).to_string();
        let original = Original {
            account: account.to_string(),
            path: rel,
            original_filename: name,
            bytes,
            visibility: Visibility::Public,
            // A folder holding `a.jpg` and `a.png` must not have one delete the other.
            placement: Placement::default(),
        };
        match self.add(original).await {
            Ok(done) if done.outcome.is_new => Ok(Imported::Added),
            Ok(_) => Ok(Imported::Deduplicated),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// What became of one imported file.
enum Imported {
    Added,
    Deduplicated,
    Unchanged,
}

/// Characters no stored path may hold: backslashes, control characters (Cc), and format
/// characters (Cf: bidirectional overrides and isolates U+202A–U+202E, U+2066–U+2069, the
/// zero-width U+200B–U+200F, U+FEFF, U+061C, the soft hyphen U+00AD, ...), which make a path
/// display as something it is not (`a\u{202E}gpj.exe` shows as `aexe.jpg`).
pub(crate) fn refused_path_char(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    c == '\\' || c.is_control() || c.general_category() == GeneralCategory::Format
}

/// Checks a stored path and returns its stem (the path without the last extension), which
/// is what delivery URLs look up. Refuses anything that could mean another place or display
/// as another name: `.`, `..`, empty segments, [`refused_path_char`]s.
pub(crate) fn path_stem(path: &str) -> Result<&str, IngestError> {
    let bad = |why: &str| {
        Err(IngestError::InvalidPath(format!(
            "`{}`: {why}",
            path.escape_debug()
        )))
    };
    if path.is_empty() || path.len() > MAX_PATH_LEN {
        return bad("must be 1 to 1024 bytes");
    }
    if path.chars().any(refused_path_char) {
        return bad("control characters, format characters and backslashes are not allowed");
    }
    for segment in path.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return bad("empty, `.` and `..` segments are not allowed");
        }
    }
    let last = path.rsplit('/').next().unwrap_or(path);
    match last.rfind('.') {
        Some(dot) if dot > 0 && dot + 1 < last.len() => {
            Ok(&path[..path.len() - (last.len() - dot)])
        }
        _ => bad("the file name needs an extension"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_characters_are_refused_in_paths() {
        for c in [
            '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}',
            '\u{2068}', '\u{2069}', '\u{200B}', '\u{200C}', '\u{200D}', '\u{200E}', '\u{200F}',
            '\u{FEFF}', '\u{061C}', '\u{00AD}', '\u{2060}', '\u{0000}', '\u{007F}', '\\',
        ] {
            assert!(refused_path_char(c), "U+{:04X}", u32::from(c));
            let path = format!("a{c}b.jpg");
            assert!(path_stem(&path).is_err(), "U+{:04X}", u32::from(c));
        }
        // Letters of any script, spaces, emoji and ordinary punctuation stay allowed.
        for ok in [
            "café/ünïcödé.jpg",
            "日本/写真.png",
            "a b (1).jpg",
            "🐞.webp",
            "ا/ب.jpg",
        ] {
            assert!(path_stem(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn stems_drop_only_the_last_extension() {
        assert_eq!(path_stem("a.jpg").unwrap(), "a");
        assert_eq!(
            path_stem("trips/2024/beach.v2.png").unwrap(),
            "trips/2024/beach.v2"
        );
    }

    #[test]
    fn dangerous_paths_are_refused() {
        for p in [
            "",
            "../a.jpg",
            "a/../b.jpg",
            "./a.jpg",
            "a//b.jpg",
            "/a.jpg",
            "a\\b.jpg",
            "a\u{0}.jpg",
            "noext",
            ".jpg",
            "a.",
        ] {
            assert!(path_stem(p).is_err(), "{p:?} was accepted");
        }
    }
}
