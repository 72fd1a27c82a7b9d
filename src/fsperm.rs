//! Permissions of what the node writes under its data directory: the metadata database (and
//! its `-wal`/`-shm`), originals, the disk cache, signing keys. None of it is anyone else's
//! business on a shared machine, so files are created 0600 and folders 0700.
//!
//! Two layers: the process umask is 0o077 from start-up (it covers every file a library
//! creates on our behalf: SQLite, object_store's temporary files, foyer's cache files), and the
//! folders the node creates are made 0700 explicitly, whatever the umask. Folders that already
//! exist are left as they are: they are the operator's.

use std::path::Path;

/// Sets the process umask to 077 (nothing for group or others). Process-wide and idempotent;
/// called at start-up, before anything is created.
pub fn restrict_umask() {
    use nix::sys::stat::{Mode, umask};
    umask(Mode::S_IRWXG | Mode::S_IRWXO);
}

/// `create_dir_all` with every folder it creates at mode 0700.
pub(crate) fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path)
}

/// Writes `contents` to a new file at mode 0600 (its folder created private), synced: the
/// generated key files. Fails if the file exists, so a key is never overwritten.
pub(crate) fn create_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_folders_are_private_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b/c");
        create_private_dir(&nested).unwrap();
        for p in ["a", "a/b", "a/b/c"] {
            let mode = std::fs::metadata(dir.path().join(p))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "{p}");
        }
        // Existing: fine, and left alone.
        create_private_dir(&nested).unwrap();
    }
}
