//! Hardening of a node's surroundings: what it writes to disk, what it trusts from the
//! request, what it seeds, over HTTP against real nodes.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::harness::{TestNode, fixture};

/// Every file and folder under `dir`, with its mode bits.
fn walk(dir: &Path, out: &mut Vec<(std::path::PathBuf, u32, bool)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        let mode = meta.permissions().mode() & 0o777;
        out.push((entry.path(), mode, meta.is_dir()));
        if meta.is_dir() {
            walk(&entry.path(), out);
        }
    }
}

#[tokio::test]
async fn everything_under_the_data_dir_is_private_to_the_node_user() {
    let node = TestNode::start().await;
    let key = node.account_key("acme", "read,write").await;
    let (status, body) = node
        .upload(&key, fixture("photos/ladybird.jpg"), "a/b/ladybird.jpg")
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, _, _) = node.fetch("/i/acme/a/b/ladybird.webp?w=100").await;
    assert_eq!(status, 200);
    // The store flushes usage and the cache writes its files at shutdown.
    let dir = node.stop().await;
    let mut entries = Vec::new();
    walk(dir.path(), &mut entries);
    let files = entries.iter().filter(|(_, _, is_dir)| !is_dir).count();
    let folders = entries.iter().filter(|(_, _, is_dir)| *is_dir).count();
    // The originals, the signing keys, the cache (and the database, on SQLite).
    assert!(files >= 2 && folders >= 2, "{entries:?}");
    let open: Vec<_> = entries
        .iter()
        .filter(|(_, mode, _)| mode & 0o077 != 0)
        .map(|(path, mode, _)| format!("{} {mode:o}", path.display()))
        .collect();
    assert!(open.is_empty(), "readable by group or others: {open:#?}");
}

/// An upload, a listing and a metadata read with `Host: evil.example`: the answer's text.
async fn api_answers_with_host(node: &TestNode, key: &str, host: &str) -> Vec<String> {
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(fixture("photos/ladybird.jpg")).file_name("l.jpg"),
        )
        .text("target_path", "h/ladybird.jpg");
    let res = node
        .client
        .post(format!("{}/api/v1/images", node.base))
        .header("host", host)
        .bearer_auth(key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let upload: serde_json::Value = res.json().await.unwrap();
    let id = upload["id"].as_str().expect("id").to_string();
    let mut answers = vec![upload.to_string()];
    for path in [
        "/api/v1/images".to_string(),
        "/api/v1/images?path=h".to_string(),
        format!("/api/v1/images/{id}"),
    ] {
        let res = node
            .client
            .get(format!("{}{path}", node.base))
            .header("host", host)
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        answers.push(res.text().await.unwrap());
    }
    answers
}

#[tokio::test]
async fn a_forged_host_never_reaches_the_urls_the_api_hands_out() {
    let node = TestNode::start().await;
    let key = node.account_key("acme", "read,write").await;
    for answer in api_answers_with_host(&node, &key, "evil.example").await {
        assert!(!answer.contains("evil.example"), "{answer}");
        // The listener's own address instead (no `server.public_url` here).
        if answer.contains("http") {
            assert!(
                answer.contains(&format!("{}/i/acme/h/", node.base)),
                "{answer}"
            );
        }
    }
    node.stop().await;

    // A host the operator listed is trusted.
    let node = TestNode::start_with("[delivery]\ncdn_hosts = [\"evil.example\"]\n").await;
    let key = node.account_key("acme", "read,write").await;
    for answer in api_answers_with_host(&node, &key, "evil.example").await {
        if answer.contains("http") {
            assert!(answer.contains("http://evil.example/i/acme/h/"), "{answer}");
        }
    }
    node.stop().await;
}

#[tokio::test]
async fn the_demo_account_is_seeded_on_free_and_only_on_loopback_unless_asked() {
    // No `demo.seed`, listening on 127.0.0.1: seeded, on the free plan.
    let node = TestNode::start().await;
    let demo = node.app.state.store.account("demo").await.unwrap();
    assert_eq!(demo.expect("demo account seeded").plan, "free");
    let (status, _, _) = node.fetch("/i/demo/ladybird.webp?w=50").await;
    assert_eq!(status, 200);
    node.stop().await;
    // On every interface: not seeded unless `demo.seed = true`.
    let dir = tempfile::tempdir().unwrap();
    let listen = [("IMGNODE_SERVER__PUBLIC_LISTEN", "0.0.0.0:0")];
    let node = TestNode::start_with_env(dir, "", &listen).await;
    assert!(
        node.app
            .state
            .store
            .account("demo")
            .await
            .unwrap()
            .is_none()
    );
    node.stop().await;
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start_with_env(dir, "[demo]\nseed = true\n", &listen).await;
    assert!(
        node.app
            .state
            .store
            .account("demo")
            .await
            .unwrap()
            .is_some()
    );
    node.stop().await;
}

#[tokio::test]
async fn paths_with_bidi_overrides_or_other_format_characters_are_refused_at_upload() {
    let node = TestNode::start().await;
    let key = node.account_key("acme", "read,write").await;
    for target in [
        "a\u{202E}gpj.exe",
        "photos/a\u{202E}gpj.jpg",
        "x\u{2066}y/z.jpg",
        "zero\u{200B}width.jpg",
        "byte\u{FEFF}order.jpg",
        "soft\u{00AD}hyphen.png",
        "arabic\u{061C}mark.jpg",
    ] {
        let (status, body) = node
            .upload(&key, fixture("photos/ladybird.jpg"), target)
            .await;
        assert_eq!(status, 400, "{target:?}: {body}");
        assert_eq!(body["error"]["code"], "VALIDATION_ERROR", "{target:?}");
    }
    // Nothing was stored; ordinary non-ASCII names still are.
    let (status, _, list) = node
        .api(reqwest::Method::GET, "/api/v1/images", &key, None)
        .await;
    assert_eq!(status, 200);
    assert!(!list.to_string().contains("gpj"), "{list}");
    let (status, body) = node
        .upload(&key, fixture("photos/ladybird.jpg"), "café/日本.jpg")
        .await;
    assert_eq!(status, 201, "{body}");
}
