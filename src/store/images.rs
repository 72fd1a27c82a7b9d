//! Image queries of the tenant API: folder listing, search, delete, path delete, visibility.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::Row;

use super::{ImageRecord, Store, StoreError, Visibility, image_from_row, now_unix};
use crate::edge::tags as edge_tags;

const IMAGE_COLUMNS: &str = "i.account, i.id, i.hash, i.format, i.width, i.height, i.size,
     i.original_filename, i.uploaded_at, i.visibility, i.dominant_color";

/// One image with every path (with extension) that points at it, sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageWithPaths {
    pub(crate) image: ImageRecord,
    pub(crate) paths: Vec<String>,
}

/// One level of an account's folder tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FolderListing {
    /// One page of the images with a path directly in the folder, ordered by that path; each
    /// image once.
    pub(crate) images: Vec<ImageWithPaths>,
    /// Images directly in the folder, all pages.
    pub(crate) total: u64,
    /// Immediate subfolders and the number of images anywhere beneath each.
    pub(crate) folders: Vec<(String, u64)>,
}

/// What deleting an image removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeletedImage {
    pub(crate) hash: String,
    /// Paths with extension.
    pub(crate) paths: Vec<String>,
}

/// What removing one path did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeletedPath {
    pub(crate) image_id: String,
    pub(crate) hash: String,
    /// The path removed, with extension.
    path: String,
    pub(crate) remaining: Vec<String>,
    /// The removed path was the last one, so the image went with it.
    pub(crate) image_deleted: bool,
}

/// `%` and `_` are LIKE wildcards; `\` is the escape character declared in the queries.
fn like_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Store {
    /// Every path (with extension) of one image, sorted.
    pub(crate) async fn image_paths(
        &self,
        account: &str,
        id: &str,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT path FROM paths WHERE account = $1 AND image_id = $2 ORDER BY path",
        )
        .bind(account)
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| r.try_get("path").map_err(StoreError::from))
            .collect()
    }

    /// One page of the images whose paths sit directly in `folder` (`""` = the account's
    /// root), ordered by path, with their total, and the immediate subfolders with their image
    /// counts (an image with two paths counts once). Only the page's images are loaded in
    /// full; the rest of the folder costs one light row per path.
    pub(crate) async fn list_folder(
        &self,
        account: &str,
        folder: &str,
        limit: usize,
        offset: usize,
    ) -> Result<FolderListing, StoreError> {
        let prefix = if folder.is_empty() {
            String::new()
        } else {
            format!("{folder}/")
        };
        let rows = sqlx::query(
            "SELECT path, image_id FROM paths
             WHERE account = $1 AND path LIKE $2 ESCAPE '\\' ORDER BY path",
        )
        .bind(account)
        .bind(format!("{}%", like_escape(&prefix)))
        .fetch_all(&self.pool)
        .await?;
        let mut folders: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        let mut here: Vec<String> = Vec::new();
        for row in &rows {
            let path: String = row.try_get("path")?;
            let id: String = row.try_get("image_id")?;
            // LIKE is case-insensitive on SQLite: the prefix is checked exactly here.
            let Some(rest) = path.strip_prefix(&prefix) else {
                continue;
            };
            match rest.split_once('/') {
                Some((sub, _)) => {
                    folders.entry(sub.to_string()).or_default().insert(id);
                }
                None => {
                    if seen.insert(id.clone()) {
                        here.push(id);
                    }
                }
            }
        }
        let total = here.len() as u64;
        let mut images = Vec::new();
        for id in here.iter().skip(offset).take(limit) {
            if let Some(image) = self.image(account, id).await? {
                let paths = self.image_paths(account, id).await?;
                images.push(ImageWithPaths { image, paths });
            }
        }
        Ok(FolderListing {
            images,
            total,
            folders: folders
                .into_iter()
                .map(|(name, ids)| (name, ids.len() as u64))
                .collect(),
        })
    }

    /// Image rows (selected with `IMAGE_COLUMNS`) with every path of each.
    async fn with_paths(
        &self,
        account: &str,
        rows: &[sqlx::any::AnyRow],
    ) -> Result<Vec<ImageWithPaths>, StoreError> {
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let image = image_from_row(row)?;
            let paths = self.image_paths(account, &image.id).await?;
            out.push(ImageWithPaths { image, paths });
        }
        Ok(out)
    }

    /// Up to `limit` images of an account with ids after `after` (`""` = from the start),
    /// by id, with their paths: the export's pages.
    pub(crate) async fn images_after(
        &self,
        account: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<ImageWithPaths>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {IMAGE_COLUMNS} FROM images i WHERE i.account = $1 AND i.id > $2
             ORDER BY i.id LIMIT $3"
        )))
        .bind(account)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        self.with_paths(account, &rows).await
    }

    /// Records the signed URL just issued for an image, replacing the one before.
    pub(crate) async fn put_signed_url(
        &self,
        account: &str,
        image_id: &str,
        path: &str,
        url: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO signed_urls (account, image_id, path, url, expires_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (account, image_id) DO UPDATE
             SET path = excluded.path, url = excluded.url, expires_at = excluded.expires_at",
        )
        .bind(account)
        .bind(image_id)
        .bind(path)
        .bind(url)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The latest signed URL of each of `ids` that has not expired: image id -> (path, url,
    /// expires_at).
    pub(crate) async fn active_signed_urls(
        &self,
        account: &str,
        ids: &[&str],
    ) -> Result<BTreeMap<String, (String, String, i64)>, StoreError> {
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let placeholders: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 3)).collect();
        let sql = format!(
            "SELECT image_id, path, url, expires_at FROM signed_urls
             WHERE account = $1 AND expires_at > $2 AND image_id IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(account)
            .bind(now_unix());
        for id in ids {
            query = query.bind(*id);
        }
        let mut out = BTreeMap::new();
        for row in query.fetch_all(&self.pool).await? {
            out.insert(
                row.try_get("image_id")?,
                (
                    row.try_get("path")?,
                    row.try_get("url")?,
                    row.try_get("expires_at")?,
                ),
            );
        }
        Ok(out)
    }

    /// Images whose path or original filename contains `query` (case-insensitive), newest
    /// first; returns one page and the total.
    pub(crate) async fn search_images(
        &self,
        account: &str,
        query: &str,
        limit: u32,
        offset: u32,
    ) -> Result<(Vec<ImageWithPaths>, u64), StoreError> {
        let pattern = format!("%{}%", like_escape(&query.to_lowercase()));
        let matching = "FROM images i
             WHERE i.account = $1 AND (LOWER(i.original_filename) LIKE $2 ESCAPE '\\'
                OR EXISTS (SELECT 1 FROM paths p WHERE p.account = i.account
                           AND p.image_id = i.id AND LOWER(p.path) LIKE $2 ESCAPE '\\'))";
        let total: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) AS n {matching}"
        )))
        .bind(account)
        .bind(&pattern)
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {IMAGE_COLUMNS} {matching}
             ORDER BY i.uploaded_at DESC, i.id LIMIT $3 OFFSET $4"
        )))
        .bind(account)
        .bind(&pattern)
        .bind(i64::from(limit))
        .bind(i64::from(offset))
        .fetch_all(&self.pool)
        .await?;
        let out = self.with_paths(account, &rows).await?;
        Ok((out, u64::try_from(total).unwrap_or(0)))
    }

    /// Deletes an image and every path to it.
    pub(crate) async fn delete_image(
        &self,
        account: &str,
        id: &str,
    ) -> Result<Option<DeletedImage>, StoreError> {
        let mut tx = self.pool.begin().await?;
        lock_account(&mut tx, account).await?;
        // The paths go, and say what they were.
        let mut paths: Vec<String> =
            sqlx::query("DELETE FROM paths WHERE account = $1 AND image_id = $2 RETURNING path")
                .bind(account)
                .bind(id)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.try_get("path"))
                .collect::<Result<_, _>>()?;
        paths.sort();
        let hash: Option<String> =
            sqlx::query("DELETE FROM images WHERE account = $1 AND id = $2 RETURNING hash")
                .bind(account)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get("hash"))
                .transpose()?;
        sqlx::query("DELETE FROM signed_urls WHERE account = $1 AND image_id = $2")
            .bind(account)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let queued = match hash {
            Some(_) => {
                let tags = [edge_tags::image(account, id)];
                self.enqueue_purge(&mut tx, account, &tags, "image deleted")
                    .await?
            }
            None => false,
        };
        tx.commit().await?;
        self.purge_committed(queued);
        Ok(hash.map(|hash| DeletedImage { hash, paths }))
    }

    /// The stem of the path stored exactly as `path` (with its extension).
    pub(crate) async fn stem_for_path(
        &self,
        account: &str,
        path: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT stem FROM paths WHERE account = $1 AND path = $2")
            .bind(account)
            .bind(path)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("stem")).transpose()?)
    }

    /// Removes the path with this stem; the image goes too when it was its last path.
    pub(crate) async fn delete_path(
        &self,
        account: &str,
        stem: &str,
    ) -> Result<Option<DeletedPath>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Two paths of one image deleted at once must not each see the other still there
        // (and leave the image without a path).
        lock_account(&mut tx, account).await?;
        let Some(row) = sqlx::query(
            "DELETE FROM paths WHERE account = $1 AND stem = $2 RETURNING image_id, path",
        )
        .bind(account)
        .bind(stem)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let image_id: String = row.try_get("image_id")?;
        let path: String = row.try_get("path")?;
        let remaining: Vec<String> = sqlx::query(
            "SELECT path FROM paths WHERE account = $1 AND image_id = $2 ORDER BY path",
        )
        .bind(account)
        .bind(&image_id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get("path"))
        .collect::<Result<_, _>>()?;
        let hash: String = if remaining.is_empty() {
            sqlx::query("DELETE FROM signed_urls WHERE account = $1 AND image_id = $2")
                .bind(account)
                .bind(&image_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM images WHERE account = $1 AND id = $2 RETURNING hash")
                .bind(account)
                .bind(&image_id)
                .fetch_one(&mut *tx)
                .await?
                .try_get("hash")?
        } else {
            sqlx::query("SELECT hash FROM images WHERE account = $1 AND id = $2")
                .bind(account)
                .bind(&image_id)
                .fetch_one(&mut *tx)
                .await?
                .try_get("hash")?
        };
        let mut tags = vec![edge_tags::path(account, stem)];
        if remaining.is_empty() {
            tags.push(edge_tags::image(account, &image_id));
        }
        let queued = self
            .enqueue_purge(&mut tx, account, &tags, "path deleted")
            .await?;
        tx.commit().await?;
        self.purge_committed(queued);
        Ok(Some(DeletedPath {
            image_deleted: remaining.is_empty(),
            image_id,
            hash,
            path,
            remaining,
        }))
    }

    /// Sets an image's visibility; `false` when there is no such image.
    pub(crate) async fn set_visibility(
        &self,
        account: &str,
        id: &str,
        visibility: Visibility,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The write first: SQLite takes its write lock now instead of failing to upgrade a
        // read, and the row count says whether anything changed.
        let changed = sqlx::query(
            "UPDATE images SET visibility = $1 WHERE account = $2 AND id = $3 AND visibility <> $1",
        )
        .bind(visibility.as_str())
        .bind(account)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !changed {
            let exists = sqlx::query("SELECT 1 AS one FROM images WHERE account = $1 AND id = $2")
                .bind(account)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            tx.commit().await?;
            return Ok(exists);
        }
        // Made private: every public copy at the edge must go (the node answers 404 now).
        let queued = if visibility == Visibility::Private {
            let tags = [edge_tags::image(account, id)];
            self.enqueue_purge(&mut tx, account, &tags, "image made private")
                .await?
        } else {
            false
        };
        tx.commit().await?;
        self.purge_committed(queued);
        Ok(true)
    }
}

/// The first statement of a transaction that changes an account's images or paths: a write
/// to the account's row. PostgreSQL then holds that row's lock to the commit, so such
/// transactions of one account run one after the other on every node (what SQLite does for
/// every writer); SQLite takes its write lock here rather than failing to upgrade a read.
pub(super) async fn lock_account(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    account: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE accounts SET updated_at = updated_at WHERE name = $1")
        .bind(account)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_escapes() {
        assert_eq!(like_escape("50%_off\\"), "50\\%\\_off\\\\");
    }
}
