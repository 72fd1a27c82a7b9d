//! The binary's configuration handling and offline commands, run as a real process.

use std::process::Command;

use crate::harness::{ChildNode, TestNode, child_config, cli_create_account, dimensions, fixture};

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
    // The KEK where the node below finds it (on PostgreSQL a file must be named).
    let kek = crate::harness::test_kek_file(dir.path());
    let env = [
        ("IMGNODE_STORAGE__DATA_DIR", dir.path().to_str().unwrap()),
        ("IMGNODE_DEMO__SEED", "false"),
        ("IMGNODE_STORE__URL", store.as_str()),
        ("IMGNODE_STORAGE__KEK_FILE", kek.to_str().unwrap()),
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

    let import = || {
        let out = imgnode()
            .envs(env)
            .args(["import", "--account", "acme"])
            .arg(photos.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{stderr}");
        (String::from_utf8_lossy(&out.stdout).to_string(), stderr)
    };
    let (stdout, stderr) = import();
    assert!(
        stdout.contains("1 new, 1 deduplicated, 0 already imported, 1 skipped"),
        "{stdout}"
    );
    assert!(stderr.contains("notes.txt"), "{stderr}");
    // Not a terminal: progress as plain lines, the last one with every file counted.
    assert!(stderr.contains("import: 3/3 files"), "{stderr}");
    // A re-run (an interrupted import resumed) skips what is already there.
    let (stdout, _) = import();
    assert!(
        stdout.contains("0 new, 0 deduplicated, 2 already imported, 1 skipped"),
        "{stdout}"
    );
    // Offline commands never create (or open) the variant cache's folder.
    assert!(!dir.path().join("cache").exists());
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

/// `imgnode --config CONFIG ARGS...`, run to its end.
fn with_config(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    imgnode()
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

/// Polls `path` on `node` until it answers `status`: the change a command made beside the
/// node reaches it asynchronously (within about a second, `cluster::POLL_INTERVAL`). The
/// metadata TTLs of the node are an hour, so only the notice can make it happen in time.
async fn wait_for_status(node: &ChildNode, path: &str, status: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let got = reqwest::get(format!("{}{path}", node.base))
            .await
            .unwrap()
            .status()
            .as_u16();
        if got == status {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path} still answers {got}, not {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn commands_beside_a_running_node_reach_its_caches_and_never_share_its_cache_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = child_config(
        dir.path(),
        "[cache]\nmetadata_ttl = \"1h\"\nnegative_ttl = \"1h\"\n",
    )
    .await;
    cli_create_account(&config, "acme");
    let node = ChildNode::spawn(&config).await;
    let url = "/i/acme/dune.webp?w=120";
    // Not there yet, and the node remembers that for an hour.
    assert_eq!(
        reqwest::get(format!("{}{url}", node.base))
            .await
            .unwrap()
            .status(),
        404
    );

    let photos = tempfile::tempdir().unwrap();
    std::fs::write(photos.path().join("dune.jpg"), fixture("photos/dune.jpg")).unwrap();
    let photos_dir = photos.path().to_str().unwrap();
    let out = with_config(&config, &["import", "--account", "acme", photos_dir]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for_status(&node, url, 200).await;
    let hit = reqwest::get(format!("{}{url}", node.base)).await.unwrap();
    assert_eq!(hit.headers()["x-cache"], "HIT-MEMORY");

    // A second node on the same cache folder is refused with a clear error, and the running
    // node keeps serving.
    let out = with_config(&config, &["serve"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use by another process"), "{stderr}");
    assert_eq!(
        reqwest::get(format!("{}{url}", node.base))
            .await
            .unwrap()
            .status(),
        200
    );

    // Erased from the command line: the node stops serving the variant it holds in memory.
    let out = with_config(&config, &["account", "erase", "acme"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for_status(&node, url, 404).await;
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
