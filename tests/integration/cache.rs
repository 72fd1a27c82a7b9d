//! The result cache over real HTTP: key normalisation, TTL, coalescing, restart, damaged
//! files, purge (bytes unreadable on disk), and the operator purge route.

use std::path::Path;

use imgnode::store::Visibility;

use crate::harness::{TestNode, decode, dir_contains, fixture};

const OPERATOR_TOKEN: &str = "test-operator-token-7f3a-b14c90d2e8a6f357";

async fn node_with_token(extra: &str) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("operator.token");
    std::fs::write(&token, format!("{OPERATOR_TOKEN}\n")).unwrap();
    TestNode::start_in(
        dir,
        &format!("[admin]\ntoken_file = \"{}\"\n{extra}", token.display()),
    )
    .await
}

async fn renders(node: &TestNode) -> f64 {
    node.metric("imgnode_render_renders_total", &[]).await
}

async fn purge(node: &TestNode, body: serde_json::Value, token: Option<&str>) -> reqwest::Response {
    let mut req = node
        .client
        .post(format!("{}/admin/v1/purge", node.ops))
        .json(&body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn order_and_ignored_keys_hit_the_same_entry() {
    let node = TestNode::start().await;
    let (_, first, a) = node
        .fetch("/i/demo/ladybird.webp?w=120&h=90&fit=contain")
        .await;
    assert_eq!(first["x-cache"], "MISS");
    let (_, second, b) = node
        .fetch("/i/demo/ladybird.webp?utm_source=x&fit=contain&h=90&v=3&w=120")
        .await;
    assert_eq!(second["x-cache"], "HIT-MEMORY");
    assert_eq!(a, b);
    assert_eq!(first["etag"], second["etag"]);
    assert_eq!(renders(&node).await, 1.0);
    // A different output format is a different entry.
    let (_, third, _) = node
        .fetch("/i/demo/ladybird.png?w=120&h=90&fit=contain")
        .await;
    assert_eq!(third["x-cache"], "MISS");
}

#[tokio::test]
async fn the_ttl_bounds_entries_and_sets_max_age() {
    let node = TestNode::start_with("[cache]\nttl = \"2h\"\n").await;
    let (_, h, _) = node.fetch("/i/demo/dune.webp?w=50").await;
    assert_eq!(h["cache-control"], "public, max-age=7200");
    assert_eq!(
        node.fetch("/i/demo/dune.webp?w=50").await.1["x-cache"],
        "HIT-MEMORY"
    );

    // The shortest TTL (1 s; entries are stamped in whole seconds). Waiting out the TTL is the
    // behaviour under test here, not a synchronisation; the clock-driven cases are unit tests
    // of cache::variants.
    let node = TestNode::start_with("[cache]\nttl = \"1s\"\n").await;
    assert_eq!(
        node.fetch("/i/demo/dune.webp?w=50").await.1["x-cache"],
        "MISS"
    );
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(
        node.fetch("/i/demo/dune.webp?w=50").await.1["x-cache"],
        "MISS"
    );
    assert_eq!(renders(&node).await, 2.0);
    assert!(node.metric("imgnode_cache_expired_total", &[]).await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_identical_requests_render_once() {
    let node = TestNode::start().await;
    let url = format!("{}/i/demo/elephants.webp?w=700&sharpen=20", node.base);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (client, url) = (node.client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let res = client.get(url).send().await.unwrap();
            let status = res.status().as_u16();
            let cache = res.headers()["x-cache"].to_str().unwrap().to_string();
            (status, cache, res.bytes().await.unwrap())
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert!(results.iter().all(|(s, _, _)| *s == 200));
    let first = &results[0].2;
    assert!(
        results.iter().all(|(_, _, b)| b == first),
        "every waiter gets the same bytes"
    );
    let misses = results.iter().filter(|(_, c, _)| c == "MISS").count();
    let coalesced = results.iter().filter(|(_, c, _)| c == "COALESCED").count();
    assert_eq!(
        misses,
        1,
        "{:?}",
        results.iter().map(|r| &r.1).collect::<Vec<_>>()
    );
    assert!(coalesced >= 1);
    assert_eq!(renders(&node).await, 1.0);
    assert_eq!(
        node.metric("imgnode_cache_coalesced_total", &[]).await,
        coalesced as f64
    );
}

#[tokio::test]
async fn a_restart_serves_earlier_renders_from_disk_without_rendering() {
    let node = TestNode::start().await;
    let (_, _, before) = node.fetch("/i/demo/ladybird.avif?w=160").await;
    let (_, _, before_jpg) = node.fetch("/i/demo/ladybird.jpg?w=300&grayscale=1").await;
    let dir = node.stop().await;

    let node = TestNode::start_in(dir, "").await;
    let ready = node
        .client
        .get(format!("{}/ready", node.ops))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let (status, h, after) = node.fetch("/i/demo/ladybird.avif?w=160").await;
    assert_eq!(status, 200);
    assert_eq!(h["x-cache"], "HIT-DISK");
    assert_eq!(before, after);
    let (_, h, after_jpg) = node.fetch("/i/demo/ladybird.jpg?w=300&grayscale=1").await;
    assert_eq!(h["x-cache"], "HIT-DISK");
    assert_eq!(before_jpg, after_jpg);
    assert_eq!(
        node.metric("imgnode_cache_hits_total", &[("tier", "disk")])
            .await,
        2.0
    );
    assert!(
        node.metric("imgnode_cache_disk_read_bytes_total", &[])
            .await
            > 0.0
    );
    // Back in memory after the first disk hit.
    assert_eq!(
        node.fetch("/i/demo/ladybird.avif?w=160").await.1["x-cache"],
        "HIT-MEMORY"
    );
    assert_eq!(renders(&node).await, 0.0);
}

#[tokio::test]
async fn damaged_cache_files_are_misses_never_damaged_bytes() {
    let node = TestNode::start().await;
    let widths = [100, 140, 180, 220, 260, 300];
    let mut originals = Vec::new();
    for w in widths {
        originals.push(node.fetch(&format!("/i/demo/elephants.png?w={w}")).await.2);
    }
    let dir = node.stop().await;
    // Flip bytes all through every cache file, and truncate the largest.
    let cache_dir = dir.path().join("cache");
    let mut files: Vec<_> = walk(&cache_dir);
    files.sort_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
    for path in &files {
        let mut bytes = std::fs::read(path).unwrap();
        let step = (bytes.len() / 64).max(1);
        for i in (step / 2..bytes.len()).step_by(step) {
            bytes[i] ^= 0x5a;
        }
        std::fs::write(path, &bytes).unwrap();
    }
    if let Some(largest) = files.last() {
        let len = std::fs::metadata(largest).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(largest)
            .unwrap()
            .set_len(len / 3)
            .unwrap();
    }

    let node = TestNode::start_in(dir, "").await;
    for (w, original) in widths.iter().zip(&originals) {
        let (status, h, body) = node.fetch(&format!("/i/demo/elephants.png?w={w}")).await;
        assert_eq!(status, 200);
        let how = h["x-cache"].to_str().unwrap();
        assert!(how == "HIT-DISK" || how == "MISS", "{how}");
        if how == "HIT-DISK" {
            assert_eq!(&body, original, "a disk hit must be the exact bytes");
        }
        assert_eq!(decode(&body).width(), *w);
    }
    assert_eq!(node.get("/health").await.status(), 200);
}

#[tokio::test]
async fn purged_variants_are_gone_from_memory_disk_and_restarts() {
    let node = node_with_token("").await;
    let image = node
        .app
        .state
        .store
        .image_by_stem("demo", "dune")
        .await
        .unwrap()
        .unwrap();
    let (_, _, variant) = node.fetch("/i/demo/dune.png?w=210").await;
    let (_, _, other) = node.fetch("/i/demo/ladybird.png?w=210").await;
    let cache_dir = node.data_dir().join("cache");
    // Variant bytes are never on disk in the clear (encrypted with the original's data key).
    let needle = &variant[variant.len() / 2..variant.len() / 2 + 64];
    assert!(!dir_contains(&cache_dir, needle));

    assert_eq!(
        purge(
            &node,
            serde_json::json!({"account": "demo", "image_id": image.id}),
            None
        )
        .await
        .status(),
        401
    );
    assert_eq!(
        purge(
            &node,
            serde_json::json!({"account": "demo", "image_id": image.id}),
            Some("wrong")
        )
        .await
        .status(),
        401
    );
    let res = purge(
        &node,
        serde_json::json!({"account": "demo", "image_id": image.id}),
        Some(OPERATOR_TOKEN),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        node.fetch("/i/demo/dune.png?w=210").await.1["x-cache"],
        "MISS"
    );
    // Other images keep their variants.
    assert_eq!(
        node.fetch("/i/demo/ladybird.png?w=210").await.1["x-cache"],
        "HIT-MEMORY"
    );

    // Purge again (the re-render above cached it anew), restart: it must not come back.
    purge(
        &node,
        serde_json::json!({"account": "demo", "image_id": image.id}),
        Some(OPERATOR_TOKEN),
    )
    .await;
    let dir = node.stop().await;
    let node = TestNode::start_in(dir, "").await;
    assert_eq!(
        node.fetch("/i/demo/dune.png?w=210").await.1["x-cache"],
        "MISS"
    );
    let (_, h, again) = node.fetch("/i/demo/ladybird.png?w=210").await;
    assert_eq!(h["x-cache"], "HIT-DISK");
    assert_eq!(again, other);
}

#[tokio::test]
async fn purge_by_account_and_everything() {
    let node = node_with_token("").await;
    node.fetch("/i/demo/dune.webp?w=90").await;
    node.fetch("/i/demo/ladybird.webp?w=90").await;
    let res = purge(
        &node,
        serde_json::json!({"account": "demo"}),
        Some(OPERATOR_TOKEN),
    )
    .await;
    assert_eq!(res.status(), 200);
    for path in ["/i/demo/dune.webp?w=90", "/i/demo/ladybird.webp?w=90"] {
        assert_eq!(node.fetch(path).await.1["x-cache"], "MISS", "{path}");
    }
    let res = purge(
        &node,
        serde_json::json!({"all": true}),
        Some(OPERATOR_TOKEN),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        node.fetch("/i/demo/dune.webp?w=90").await.1["x-cache"],
        "MISS"
    );
    let res = purge(
        &node,
        serde_json::json!({"account": "nobody"}),
        Some(OPERATOR_TOKEN),
    )
    .await;
    assert_eq!(res.status(), 404);
    let res = purge(&node, serde_json::json!({"bogus": 1}), Some(OPERATOR_TOKEN)).await;
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn the_operator_api_is_off_without_a_token_file() {
    let node = TestNode::start().await;
    let res = purge(&node, serde_json::json!({"all": true}), Some("anything")).await;
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn a_repointed_path_serves_the_new_image_at_once() {
    let node = TestNode::start().await;
    node.add_image(
        "acme",
        "pic.jpg",
        &fixture("photos/ladybird.jpg"),
        Visibility::Public,
    )
    .await;
    let (_, _, body) = node.fetch("/i/acme/pic.png?h=100").await;
    assert_eq!(decode(&body).width(), 160);
    // Same path, other bytes (elephants is 16:9): the old variants must not be served.
    node.add_image(
        "acme",
        "pic.jpg",
        &fixture("photos/elephants.jpg"),
        Visibility::Public,
    )
    .await;
    let (_, h, body) = node.fetch("/i/acme/pic.png?h=100").await;
    assert_eq!(h["x-cache"], "MISS");
    assert_eq!(decode(&body).width(), 178);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
