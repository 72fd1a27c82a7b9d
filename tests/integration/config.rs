//! The binary's configuration handling and offline commands, run as a real process.

use std::process::Command;

use crate::harness::{TestNode, dimensions, fixture};

fn imgnode() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_imgnode"));
    // Start from a clean slate: no inherited IMGNODE_* from the developer's shell.
    for (k, _) in std::env::vars() {
        if k.starts_with("IMGNODE_") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn check_config_exits_78_and_lists_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[server]\npublic_listn = \"x\"\ndrain_timeout = \"later\"\n[limits]\nmax_source_bytes = \"huge\"\n",
    )
    .unwrap();
    let out = imgnode()
        .arg("--config")
        .arg(&file)
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "server.public_listn",
        "server.drain_timeout",
        "limits.max_source_bytes",
    ] {
        assert!(err.contains(needle), "{needle} missing from: {err}");
    }
}

#[test]
fn check_config_accepts_the_documented_file_and_env_overrides() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/config/imgnode.toml");
    let out = imgnode()
        .args(["--config", file, "check-config"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = imgnode()
        .env("IMGNODE_CPU__QUEUE", "lots")
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cpu"));
}

#[tokio::test]
async fn account_create_and_import_then_serve_the_imported_paths() {
    let dir = tempfile::tempdir().unwrap();
    let photos = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(photos.path().join("trips/2024")).unwrap();
    std::fs::write(
        photos.path().join("trips/2024/beach.jpg"),
        fixture("photos/dune.jpg"),
    )
    .unwrap();
    // The same bytes twice: stored once, two paths.
    std::fs::write(photos.path().join("copy.jpg"), fixture("photos/dune.jpg")).unwrap();
    std::fs::write(photos.path().join("notes.txt"), b"not an image at all, long enough to sniff.......................................................").unwrap();
    // The node below keeps its metadata where the harness puts it (SQLite in the directory,
    // or PostgreSQL): the CLI must use the same store.
    let store = imgnode::store::testing::store_url(dir.path(), "imgnode.db").await;
    let env = [
        ("IMGNODE_STORAGE__DATA_DIR", dir.path().to_str().unwrap()),
        ("IMGNODE_DEMO__SEED", "false"),
        ("IMGNODE_STORE__URL", store.as_str()),
    ];

    let out = imgnode()
        .envs(env)
        .args(["account", "create", "acme", "--plan", "pro"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("plan pro"), "{stdout}");
    let key = stdout
        .lines()
        .find_map(|l| l.strip_prefix("api key: "))
        .expect("the first API key is printed");
    assert!(key.starts_with("imgsrc_") && key.len() == 56, "{key}");
    let out = imgnode()
        .envs(env)
        .args(["account", "create", "acme"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a duplicate account must fail");
    let out = imgnode()
        .envs(env)
        .args(["account", "create", "Bad Name"])
        .output()
        .unwrap();
    assert!(!out.status.success());

    let out = imgnode()
        .envs(env)
        .args(["import", "--account", "acme"])
        .arg(photos.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("1 new, 1 deduplicated, 1 skipped"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("notes.txt"));
    // One object in the origin for two paths.
    let objects = walk_files(&dir.path().join("originals"));
    assert_eq!(objects, 1);

    let node = TestNode::start_in(dir, "[demo]\nseed = false\n").await;
    for path in [
        "/i/acme/trips/2024/beach.webp?w=120",
        "/i/acme/copy.webp?w=120",
    ] {
        let (status, _, body) = node.fetch(path).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(dimensions(&body), (120, 75));
    }
}

fn walk_files(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            n += walk_files(&e.path());
        } else {
            n += 1;
        }
    }
    n
}
