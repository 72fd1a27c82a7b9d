//! Originals encrypted at rest: sealed per account under data keys wrapped by the KEK, no
//! plaintext byte in the data directory or the bucket, tampering refused, the KEK checked at
//! start-up and rotated, erasure that shreds, and plaintext of an earlier version sealed in
//! the background. Real nodes, the real binary, a real moto bucket.

use std::path::Path;
use std::process::Command;

use crate::harness::{Moto, TestNode, dimensions, dir_contains, fixture, test_config};

const PHOTO: &str = "photos/ladybird.jpg";
const NO_DEMO: &str = "[demo]\nseed = false\n";

/// 64 bytes from the middle of `bytes`: found in any file that holds them in plaintext.
fn sample(bytes: &[u8]) -> &[u8] {
    &bytes[bytes.len() / 2..bytes.len() / 2 + 64]
}

fn hash_of(up: &serde_json::Value) -> String {
    up["hash"]
        .as_str()
        .expect("hash in the upload answer")
        .to_string()
}

/// The node binary on the test config of `dir` (and its database on PostgreSQL runs).
async fn imgnode_in(dir: &Path) -> Command {
    let config = dir.join("node.toml");
    std::fs::write(&config, test_config(dir, NO_DEMO)).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_imgnode"));
    for (k, _) in std::env::vars() {
        if k.starts_with("IMGNODE_") {
            c.env_remove(k);
        }
    }
    if imgnode::store::testing::postgres_selected() {
        let url = imgnode::store::testing::store_url(dir, "imgnode.db").await;
        c.env("IMGNODE_STORE__URL", url);
        c.env("IMGNODE_STORAGE__KEK_FILE", dir.join("originals.kek"));
    }
    c.arg("--config").arg(config);
    c
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn random_key_line() -> String {
    let mut k = [0u8; 32];
    getrandom_fill(&mut k);
    hex::encode(k)
}

fn getrandom_fill(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(buf)
        .unwrap();
}

#[tokio::test]
async fn originals_are_sealed_per_account_and_no_plaintext_reaches_the_disk() {
    let node = TestNode::start_with(NO_DEMO).await;
    let a = node.account_key("alpha", "read,write").await;
    let b = node.account_key("bravo", "read,write").await;
    let photo = fixture(PHOTO);
    let (status, up_a) = node.upload(&a, photo.clone(), "a.jpg").await;
    assert_eq!(status, 201, "{up_a}");
    let (status, up_b) = node.upload(&b, photo.clone(), "b.jpg").await;
    assert_eq!(status, 201, "{up_b}");
    let hash = hash_of(&up_a);

    // Everything still answers from the sealed objects: a render and the original.
    let (status, headers, body) = node.fetch("/i/alpha/a.webp?w=200").await;
    assert_eq!(
        (status, &headers["content-type"]),
        (200, &"image/webp".parse().unwrap())
    );
    assert_eq!(dimensions(&body).0, 200);
    let (status, _, body) = node.fetch("/i/bravo/b.jpg").await;
    assert_eq!(status, 200);
    assert_eq!(dimensions(&body), dimensions(&photo));

    // Two accounts, the same bytes: two unrelated objects under random names, each under its
    // own data key.
    let originals = &node.app.state.originals;
    let row_a = originals.key_row("alpha", &hash).await.unwrap().unwrap();
    let row_b = originals.key_row("bravo", &hash).await.unwrap().unwrap();
    assert_ne!(row_a.object, row_b.object);
    assert_ne!(row_a.wrapped, row_b.wrapped);
    assert_eq!(row_a.kek_id, row_b.kek_id, "one KEK wraps both");
    for object in [&row_a.object, &row_b.object] {
        assert!(
            object.starts_with("o/") && !object.contains(&hash[..16]),
            "{object}"
        );
    }
    let dir = node.data_dir().join("originals");
    let file_a = std::fs::read(dir.join(&row_a.object)).unwrap();
    let file_b = std::fs::read(dir.join(&row_b.object)).unwrap();
    assert_eq!(file_a.len(), file_b.len());
    assert_ne!(file_a, file_b);
    assert!(file_a.len() > photo.len() && file_a.len() < photo.len() + photo.len() / 100);

    // The KEK file is private and no name under the data directory tells the content hash.
    let kek = node.data_dir().join("originals.kek");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&kek).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let data = node.stop().await;
    assert!(
        !dir_contains(data.path(), sample(&photo)),
        "plaintext of an original under the data directory"
    );
    let mut names = Vec::new();
    let mut stack = vec![data.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            names.push(e.file_name().to_string_lossy().to_string());
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    assert!(!names.iter().any(|n| n.contains(&hash[..16])), "{names:?}");
}

#[tokio::test]
async fn a_tampered_or_moved_original_is_refused_never_served() {
    let node = TestNode::start_with(NO_DEMO).await;
    let key = node.account_key("acme", "read,write").await;
    let photo = fixture(PHOTO);
    let (_, up) = node.upload(&key, photo.clone(), "t.jpg").await;
    let (_, other) = node
        .upload(&key, fixture("formats/png_rgba.png"), "u.png")
        .await;
    let object = node.object_of("acme", &hash_of(&up)).await;
    let other_object = node.object_of("acme", &hash_of(&other)).await;
    let dir = node.data_dir().join("originals");
    let mut bytes = std::fs::read(dir.join(&object)).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(dir.join(&object), &bytes).unwrap();
    // Another object of the same account put in the PNG's place: bound to its own name.
    std::fs::copy(dir.join(&object), dir.join(&other_object)).unwrap();

    for url in [
        "/i/acme/t.webp?w=120",
        "/i/acme/t.jpg",
        "/i/acme/u.png?w=50",
    ] {
        let (status, headers, body) = node.fetch(url).await;
        assert_eq!(status, 502, "{url}");
        assert_eq!(headers["content-type"], "application/json", "{url}");
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            json["error"].is_object() || json["error"].is_string(),
            "{json}"
        );
        assert!(!body.windows(3).any(|w| w == [0xff, 0xd8, 0xff]), "{url}");
    }
    assert!(
        node.metric("imgnode_origin_fetches_total", &[("outcome", "refused")])
            .await
            >= 3.0
    );
    node.stop().await;
}

#[tokio::test]
async fn a_missing_wrong_or_exposed_kek_stops_the_node_with_a_config_error() {
    let node = TestNode::start_with(NO_DEMO).await;
    let key = node.account_key("acme", "read,write").await;
    let (status, _) = node.upload(&key, fixture(PHOTO), "a.jpg").await;
    assert_eq!(status, 201);
    let dir = node.stop().await;
    let kek = dir.path().join("originals.kek");
    let good = std::fs::read_to_string(&kek).unwrap();

    let run = |mut c: Command, what: &str| {
        let out = c.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        (out.status.code(), stderr, what.to_string())
    };
    let expect_78 = |(code, stderr, what): (Option<i32>, String, String), needle: &str| {
        assert_eq!(code, Some(78), "{what}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{what}: `{needle}` not in {stderr}"
        );
        assert!(
            !stderr.contains(good.lines().last().unwrap()),
            "{what}: key in output"
        );
    };

    // Gone: never silently replaced by a new key while encrypted originals exist.
    std::fs::remove_file(&kek).unwrap();
    let mut serve = imgnode_in(dir.path()).await;
    serve.arg("serve");
    // (Generated by default: "does not exist"; named by storage.kek_file: "No such file".)
    expect_78(run(serve, "missing"), "originals.kek");
    assert!(!kek.exists(), "no new key generated");
    let mut check = imgnode_in(dir.path()).await;
    check.arg("check-config");
    expect_78(run(check, "check-config, missing"), "originals.kek");

    // Another key: refused before serving anything.
    write_private(&kek, &format!("{}\n", random_key_line()));
    let mut serve = imgnode_in(dir.path()).await;
    serve.arg("serve");
    expect_78(run(serve, "wrong"), "is not in");

    // The right key, readable by others.
    std::fs::write(&kek, &good).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&kek, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut serve = imgnode_in(dir.path()).await;
    serve.arg("serve");
    expect_78(run(serve, "mode 0644"), "chmod 600");

    // Restored: check-config agrees, and the node serves the original again.
    std::fs::set_permissions(&kek, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut check = imgnode_in(dir.path()).await;
    check.arg("check-config");
    let (code, stderr, _) = run(check, "check-config");
    assert_eq!(code, Some(0), "{stderr}");
    let node = TestNode::start_in(dir, NO_DEMO).await;
    assert_eq!(node.fetch("/i/acme/a.webp?w=64").await.0, 200);
    node.stop().await;
}

#[tokio::test]
async fn rotating_the_kek_keeps_every_original_readable() {
    let node = TestNode::start_with(NO_DEMO).await;
    let a = node.account_key("alpha", "read,write").await;
    let b = node.account_key("bravo", "read,write").await;
    let (_, up) = node.upload(&a, fixture(PHOTO), "a.jpg").await;
    node.upload(&b, fixture("formats/png_rgba.png"), "b.png")
        .await;
    let hash = hash_of(&up);
    let old_id = node
        .app
        .state
        .originals
        .key_row("alpha", &hash)
        .await
        .unwrap()
        .unwrap()
        .kek_id;
    let dir = node.stop().await;

    // A new first line wraps; the old one still unwraps until the rewrap has run.
    let kek = dir.path().join("originals.kek");
    let old = std::fs::read_to_string(&kek).unwrap();
    let new = random_key_line();
    write_private(&kek, &format!("{new}\n{old}"));
    let mut rotate = imgnode_in(dir.path()).await;
    rotate.arg("rotate-kek");
    let out = rotate.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rewrapped 2 data keys"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The old key can leave the file now.
    write_private(&kek, &format!("{new}\n"));
    let node = TestNode::start_in(dir, NO_DEMO).await;
    assert_eq!(node.fetch("/i/alpha/a.webp?w=80").await.0, 200);
    assert_eq!(node.fetch("/i/bravo/b.png?w=40").await.0, 200);
    let row = node
        .app
        .state
        .originals
        .key_row("alpha", &hash)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(row.kek_id, old_id);
    let dir = node.stop().await;
    let mut again = imgnode_in(dir.path()).await;
    again.arg("rotate-kek");
    let out = again.output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("rewrapped 0 data keys"));
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[tokio::test]
async fn erasure_shreds_so_a_copy_of_the_bucket_taken_before_reads_nothing() {
    let node = TestNode::start_with(NO_DEMO).await;
    let key = node.account_key("acme", "read,write").await;
    let photo = fixture(PHOTO);
    let (_, up) = node.upload(&key, photo.clone(), "a.jpg").await;
    let hash = hash_of(&up);
    let originals = &node.app.state.originals;
    let row = originals.key_row("acme", &hash).await.unwrap().unwrap();
    // The backup an attacker (or a subpoena) finds later.
    let backup = tempfile::tempdir().unwrap();
    copy_tree(&node.data_dir().join("originals"), backup.path());
    assert!(backup.path().join(&row.object).is_file());

    let erased = imgnode::accounts::erase(&node.app.state, "acme")
        .await
        .unwrap();
    assert_eq!(erased.originals_deleted, 1);
    assert_eq!(originals.key_row("acme", &hash).await.unwrap(), None);
    assert!(!node.data_dir().join("originals").join(&row.object).exists());
    let data = node.stop().await;
    // The copy holds ciphertext only, and its key exists nowhere any more: not in the
    // database (SQLite overwrites deleted rows), not anywhere under the data directory.
    assert!(!dir_contains(backup.path(), sample(&photo)));
    assert!(!dir_contains(data.path(), row.wrapped.as_bytes()));
    assert!(!dir_contains(
        data.path(),
        &hex::decode(&row.wrapped).unwrap()
    ));
    assert!(!dir_contains(data.path(), sample(&photo)));
    // Restoring the copy brings nothing back: no row names its object.
    copy_tree(backup.path(), &data.path().join("originals"));
    let node = TestNode::start_in(data, NO_DEMO).await;
    assert_eq!(
        node.app
            .state
            .originals
            .key_row("acme", &hash)
            .await
            .unwrap(),
        None
    );
    assert_eq!(node.fetch("/i/acme/a.jpg").await.0, 404);
    node.stop().await;
}

#[tokio::test]
async fn plaintext_originals_of_an_earlier_version_are_served_then_sealed() {
    let node = TestNode::start_with(NO_DEMO).await;
    let photo = fixture(PHOTO);
    // What an earlier version left: plaintext objects named by their hash, shared between
    // accounts.
    node.add_raw(
        "alpha",
        "old",
        imgnode::pipeline::SourceFormat::Jpeg,
        &photo,
    )
    .await;
    node.add_raw(
        "bravo",
        "old",
        imgnode::pipeline::SourceFormat::Jpeg,
        &photo,
    )
    .await;
    let hash = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(&photo))
    };
    // Served as it is (or already sealed: this node's pass may run at any time now).
    assert_eq!(node.fetch("/i/alpha/old.webp?w=100").await.0, 200);
    let dir = node.stop().await;

    // The next start seals them in the background (if the first node had not already).
    let node = TestNode::start_in(dir, NO_DEMO).await;
    let originals = &node.app.state.originals;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let sealed = originals
            .object_name("alpha", &hash)
            .await
            .unwrap()
            .is_some()
            && originals
                .object_name("bravo", &hash)
                .await
                .unwrap()
                .is_some()
            && !originals.origin().plaintext_exists(&hash).await.unwrap();
        if sealed {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the plaintext originals were not sealed within 60 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let a = node.object_of("alpha", &hash).await;
    let b = node.object_of("bravo", &hash).await;
    assert_ne!(a, b);
    assert!(!originals.origin().plaintext_exists(&hash).await.unwrap());
    for url in ["/i/alpha/old.webp?w=100", "/i/bravo/old.jpg"] {
        assert_eq!(node.fetch(url).await.0, 200, "{url}");
    }
    let data = node.stop().await;
    assert!(!dir_contains(data.path(), sample(&photo)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_originals_in_s3_with_server_side_encryption() {
    let moto = Moto::start().await;
    moto.create_bucket("sealed").await;
    let creds = Moto::credentials();
    let node = TestNode::start_with(&format!(
        "{NO_DEMO}{}sse = \"AES256\"\n",
        moto.origin_config("sealed", creds.path())
    ))
    .await;
    let key = node.account_key("acme", "read,write").await;
    let photo = fixture(PHOTO);
    let (status, up) = node.upload(&key, photo.clone(), "a.jpg").await;
    assert_eq!(status, 201, "{up}");
    let hash = hash_of(&up);
    let object = node.object_of("acme", &hash).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let listing = client
        .get(format!("{}/sealed?list-type=2", moto.endpoint))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listing.contains(&object), "{listing}");
    assert!(!listing.contains(&hash[..16]), "{listing}");
    // A signed GET (moto wants one for an encrypted object), as any bucket reader would.
    use object_store::signer::Signer;
    let s3 = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name("sealed")
        .with_region("us-east-1")
        .with_endpoint(&moto.endpoint)
        .with_allow_http(true)
        .with_access_key_id("testing")
        .with_secret_access_key("testing-secret")
        .build()
        .unwrap();
    let url = s3
        .signed_url(
            http::Method::GET,
            &object_store::path::Path::from(object.as_str()),
            std::time::Duration::from_secs(60),
        )
        .await
        .unwrap();
    let stored = client.get(url).send().await.unwrap();
    assert_eq!(stored.status(), 200);
    assert_eq!(stored.headers()["x-amz-server-side-encryption"], "AES256");
    let bytes = stored.bytes().await.unwrap();
    assert!(bytes.starts_with(b"IMGNOBJ1"));
    assert!(!bytes.windows(64).any(|w| w == sample(&photo)));
    let (status, _, body) = node.fetch("/i/acme/a.webp?w=150").await;
    assert_eq!(status, 200);
    assert_eq!(dimensions(&body).0, 150);
    node.stop().await;
}
