//! The tenant image API over HTTP, beyond what the SDK test drives: upload limits and
//! sniffing, hostile uploads, cross-account isolation, deletes that really delete, presets on
//! delivery URLs, signed URLs with rotation and `require_signature`, and the orphan sweep.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::harness::{TestNode, assert_json_error, dimensions, fixture, sign};

const PHOTO: &str = "photos/ladybird.jpg";

fn file_part(bytes: Vec<u8>, name: &str, content_type: &str) -> Part {
    Part::bytes(bytes)
        .file_name(name.to_string())
        .mime_str(content_type)
        .unwrap()
}

async fn upload(
    node: &TestNode,
    key: &str,
    form: Form,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let res = node
        .client
        .post(format!("{}/api/v1/images", node.base))
        .bearer_auth(key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, headers, res.json().await.unwrap_or(Value::Null))
}

async fn upload_file(
    node: &TestNode,
    key: &str,
    bytes: Vec<u8>,
    name: &str,
    target: Option<&str>,
) -> (u16, Value) {
    let mut form = Form::new().part("file", file_part(bytes, name, "application/octet-stream"));
    if let Some(t) = target {
        form = form.text("target_path", t.to_string());
    }
    let (status, _, body) = upload(node, key, form).await;
    (status, body)
}

async fn api(
    node: &TestNode,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let (status, _, value) = node.api(method, path, key, body).await;
    (status, value)
}

/// Path and query of an absolute URL the API returned, to fetch from this node.
fn local(url: &str) -> &str {
    let rest = url.strip_prefix("http://").unwrap();
    &rest[rest.find('/').unwrap()..]
}

#[tokio::test]
async fn uploads_are_sniffed_limited_and_placed_by_target_path() {
    let node = TestNode::start_with("[upload]\nmax_bytes = \"300KiB\"\n").await;
    let key = node.account_key("acme", "read,write").await;

    // A PNG named .jpg and sent as image/jpeg: stored and answered as the PNG it is.
    let png = fixture("formats/png_rgba.png");
    let form = Form::new()
        .part("file", file_part(png.clone(), "holiday.jpg", "image/jpeg"))
        .text("target_path", "trips/2024");
    let (status, _, body) = upload(&node, &key, form).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["format"], "png");
    assert_eq!(body["paths"], json!(["trips/2024/holiday.png"]));
    assert_eq!(body["is_new"], true);
    let (code, headers, bytes) = node.fetch(local(body["url"].as_str().unwrap())).await;
    assert_eq!(code, 200);
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(bytes.as_ref(), png.as_slice(), "the original, untouched");

    // Same bytes, another path: deduplicated, one object; same bytes, same path: 409.
    let (status, again) =
        upload_file(&node, &key, png.clone(), "x.png", Some("copies/cover.png")).await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["is_new"], false);
    assert_eq!(again["id"], body["id"]);
    assert_eq!(
        again["paths"],
        json!(["copies/cover.png", "trips/2024/holiday.png"])
    );
    let (status, conflict) =
        upload_file(&node, &key, png.clone(), "x.png", Some("copies/cover.png")).await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["error"]["code"], "CONFLICT");

    // Another image under an existing name (`cover.jpg` where `cover.png` is: URLs look up
    // the stem) is a 409 that deletes nothing...
    let jpeg = fixture("formats/jpeg_baseline.jpg");
    let (status, refused) = upload_file(
        &node,
        &key,
        jpeg.clone(),
        "cover.jpg",
        Some("copies/cover.jpg"),
    )
    .await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "CONFLICT");
    let (code, headers, bytes) = node.fetch("/i/acme/copies/cover.png").await;
    assert_eq!(
        (code, &headers["content-type"]),
        (200, &"image/png".parse().unwrap())
    );
    assert_eq!(bytes.as_ref(), png.as_slice(), "the PNG is still there");
    // ...unless the client asks for the replacement.
    let form = Form::new()
        .part("file", file_part(jpeg, "cover.jpg", "image/jpeg"))
        .text("target_path", "copies/cover.jpg")
        .text("overwrite", "true");
    let (status, _, replaced) = upload(&node, &key, form).await;
    assert_eq!(status, 201, "{replaced}");
    let (code, headers, _) = node.fetch("/i/acme/copies/cover.webp?w=10").await;
    assert_eq!(code, 200);
    assert_eq!(headers["content-type"], "image/webp");
    let (_, meta) = api(
        &node,
        reqwest::Method::GET,
        &format!("/api/v1/images/{}", body["id"].as_str().unwrap()),
        &key,
        None,
    )
    .await;
    assert_eq!(meta["metadata"]["mime_type"], "image/png");
    // (ours) The paths left to it: the replacement took `copies/cover`.
    assert_eq!(meta["paths"], json!(["trips/2024/holiday.png"]), "{meta}");
    let color = meta["metadata"]["dominant_color"].as_str().unwrap();
    assert!(
        color.len() == 6 && color.bytes().all(|b| b.is_ascii_hexdigit()),
        "{color}"
    );

    // Bad target paths never reach the store.
    for bad in ["../escape", "a/../../b", "a//b", "./a", "a\\b", "a/\u{1}/b"] {
        let (status, err) = upload_file(&node, &key, png.clone(), "x.png", Some(bad)).await;
        assert_eq!(status, 400, "{bad:?}: {err}");
        assert_eq!(err["error"]["code"], "VALIDATION_ERROR");
    }

    // Over the limit: 413, JSON. Under 100 bytes, no file, or not an image: 400.
    let big = vec![0xAB_u8; 400 * 1024];
    let (status, err) = upload_file(&node, &key, big, "big.jpg", None).await;
    assert_eq!(status, 413, "{err}");
    assert_eq!(err["error"]["code"], "PAYLOAD_TOO_LARGE");
    let (status, err) =
        upload_file(&node, &key, vec![0xFF, 0xD8, 0xFF, 0xE0], "tiny.jpg", None).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("VALIDATION_ERROR"))
    );
    let (status, _, err) = upload(&node, &key, Form::new().text("target_path", "a")).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("VALIDATION_ERROR"))
    );
    node.stop().await;
}

#[tokio::test]
async fn hostile_uploads_get_a_clear_4xx_and_store_nothing() {
    let node = TestNode::start_with("[demo]\nseed = false\n").await;
    let key = node.account_key("acme", "read,write").await;
    // A GIF header in front of a script: sniffed as GIF, refused when it does not decode.
    let mut polyglot = b"GIF89a\x01\x00\x01\x00".to_vec();
    polyglot.extend_from_slice(b"<script>alert(document.cookie)</script>");
    polyglot.resize(400, b' ');
    let mut truncated = fixture(PHOTO);
    truncated.truncate(truncated.len() / 3);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated.jpg", fixture("hostile/truncated.jpg")),
        ("truncated.png", fixture("hostile/truncated.png")),
        ("truncated.avif", fixture("hostile/truncated.avif")),
        ("photo-third.jpg", truncated),
        ("garbage.jpg", fixture("hostile/garbage.jpg")),
        ("wrong_magic.jpg", fixture("hostile/wrong_magic.bin")),
        ("huge.png", fixture("hostile/huge_dims.png")),
        ("polyglot.gif", polyglot),
    ];
    for (name, bytes) in cases {
        let (status, body) = upload_file(&node, &key, bytes, name, None).await;
        assert!((400..500).contains(&status), "{name}: {status} {body}");
        assert_eq!(body["error"]["status"], status, "{name}: {body}");
    }
    let (status, list) = api(&node, reqwest::Method::GET, "/api/v1/images", &key, None).await;
    assert_eq!(status, 200);
    assert_eq!(list["total"], 0, "{list}");
    node.stop().await;
}

/// Streams `total` bytes of a file part without a Content-Length, counting what the server
/// pulled; the node must answer 413 after reading about the limit, not the whole body.
#[tokio::test]
async fn an_oversized_streamed_upload_is_cut_off_early() {
    let node = TestNode::start_with("[upload]\nmax_bytes = \"1MiB\"\n").await;
    let key = node.account_key("acme", "read,write").await;
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    const TOTAL: u64 = 512 << 20;
    const CHUNK: usize = 64 << 10;
    let chunks = futures_util::stream::unfold(0u64, move |done| {
        let counter = counter.clone();
        async move {
            (done < TOTAL).then(|| {
                counter.fetch_add(CHUNK as u64, Ordering::Relaxed);
                let mut chunk = vec![0u8; CHUNK];
                if done == 0 {
                    chunk[..3].copy_from_slice(&[0xFF, 0xD8, 0xFF]);
                }
                (
                    Ok::<_, std::io::Error>(Bytes::from(chunk)),
                    done + CHUNK as u64,
                )
            })
        }
    });
    let part = Part::stream(reqwest::Body::wrap_stream(chunks)).file_name("huge.jpg");
    let res = node
        .client
        .post(format!("{}/api/v1/images", node.base))
        .bearer_auth(&key)
        .multipart(Form::new().part("file", part))
        .send()
        .await;
    // The node answers 413 and closes; depending on timing the client sees the answer or a
    // reset while it is still sending. Either way it stopped reading early.
    if let Ok(res) = res {
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res.bytes().await.unwrap_or_default();
        assert_json_error(status, &headers, &body, 413, "PAYLOAD_TOO_LARGE");
    }
    let pulled = sent.load(Ordering::Relaxed);
    assert!(
        pulled < 64 << 20,
        "the node read {pulled} bytes of a 512 MiB upload"
    );
    node.stop().await;
}

#[tokio::test]
async fn accounts_cannot_reach_each_others_images_presets_or_keys() {
    let node = TestNode::start().await;
    let a = node.account_key("alpha", "read,write").await;
    let b = node.account_key("bravo", "read,write").await;
    let (status, up) = upload_file(
        &node,
        &a,
        fixture(PHOTO),
        "bug.jpg",
        Some("private/bug.jpg"),
    )
    .await;
    assert_eq!(status, 201, "{up}");
    let id = up["id"].as_str().unwrap();
    let (status, preset) = api(
        &node,
        reqwest::Method::POST,
        "/api/v1/settings/presets",
        &a,
        Some(json!({"name": "thumb", "params": {"w": 64}})),
    )
    .await;
    assert_eq!(status, 201, "{preset}");
    let preset_id = preset["id"].as_str().unwrap();
    let (_, keys) = api(
        &node,
        reqwest::Method::GET,
        "/api/v1/settings/api-keys",
        &a,
        None,
    )
    .await;
    let a_key_id = keys["api_keys"][0]["id"].as_str().unwrap().to_string();

    use reqwest::Method as M;
    let attempts: Vec<(M, String, Option<Value>, u16)> = vec![
        (M::GET, format!("/api/v1/images/{id}"), None, 404),
        (M::DELETE, format!("/api/v1/images/{id}"), None, 404),
        (
            M::PATCH,
            format!("/api/v1/images/{id}/visibility"),
            Some(json!({"visibility": "public"})),
            404,
        ),
        (
            M::POST,
            format!("/api/v1/images/{id}/signed-url"),
            None,
            404,
        ),
        (
            M::DELETE,
            "/api/v1/images/path/alpha/private%2Fbug.jpg".into(),
            None,
            403,
        ),
        (
            M::DELETE,
            "/api/v1/images/path/alpha/private/bug.jpg".into(),
            None,
            403,
        ),
        (
            M::GET,
            format!("/api/v1/settings/presets/{preset_id}"),
            None,
            404,
        ),
        (
            M::PUT,
            format!("/api/v1/settings/presets/{preset_id}"),
            Some(json!({"params": {"w": 1}})),
            404,
        ),
        (
            M::DELETE,
            "/api/v1/settings/presets/thumb".into(),
            None,
            404,
        ),
        (
            M::DELETE,
            format!("/api/v1/settings/api-keys/{a_key_id}"),
            None,
            404,
        ),
    ];
    for (method, path, body, want) in attempts {
        let (status, err) = api(&node, method.clone(), &path, &b, body).await;
        assert_eq!(status, want, "{method} {path}: {err}");
    }
    let (_, listed) = api(&node, M::GET, "/api/v1/images/search?q=bug", &b, None).await;
    assert_eq!(listed["total"], 0);
    // Bravo's URL namespace does not see alpha's preset either.
    let (code, _, _) = node.fetch("/i/alpha/private/bug.jpg?p:thumb").await;
    assert_eq!(code, 200, "alpha's own preset works on alpha's image");
    // Everything of alpha is intact, and alpha's key still works.
    let (status, meta) = api(&node, M::GET, &format!("/api/v1/images/{id}"), &a, None).await;
    assert_eq!(status, 200, "{meta}");
    let (status, _) = api(&node, M::GET, "/api/v1/settings/presets", &a, None).await;
    assert_eq!(status, 200);
    // A read-only key reads but does not write; an unknown key is a 401.
    let reader = node.account_key("alpha", "read").await;
    assert_eq!(
        api(&node, M::GET, "/api/v1/images", &reader, None).await.0,
        200
    );
    assert_eq!(
        api(
            &node,
            M::DELETE,
            &format!("/api/v1/images/{id}"),
            &reader,
            None
        )
        .await
        .0,
        403
    );
    assert_eq!(
        api(&node, M::GET, "/api/v1/images", "imgsrc_nope", None)
            .await
            .0,
        401
    );
    node.stop().await;
}

#[tokio::test]
async fn deleting_means_gone_and_shared_bytes_survive() {
    let node = TestNode::start_with("[demo]\nseed = false\n").await;
    let a = node.account_key("alpha", "read,write").await;
    let b = node.account_key("bravo", "read,write").await;
    let photo = fixture(PHOTO);
    let (_, up) = upload_file(&node, &a, photo.clone(), "a.jpg", Some("x/a.jpg")).await;
    let (_, up2) = upload_file(&node, &a, photo.clone(), "a.jpg", Some("y/a b.jpg")).await;
    let (_, other) = upload_file(&node, &b, photo.clone(), "b.jpg", None).await;
    let id = up["id"].as_str().unwrap().to_string();
    let hash = up["hash"].as_str().unwrap().to_string();
    assert_eq!(up2["is_new"], false);
    assert_eq!(
        other["id"], up["id"],
        "same bytes, same id in every account"
    );

    // Warm a variant, so the purge has something to remove.
    let (code, headers, _) = node.fetch("/i/alpha/x/a.webp?w=100").await;
    assert_eq!((code, headers["x-cache"].to_str().unwrap()), (200, "MISS"));
    let (code, headers, _) = node.fetch("/i/alpha/x/a.webp?w=100").await;
    assert_eq!(
        (code, headers["x-cache"].to_str().unwrap()),
        (200, "HIT-MEMORY")
    );

    // Path delete in the `%2F` + `+` form removes one path; the image stays.
    let (status, res) = api(
        &node,
        reqwest::Method::DELETE,
        "/api/v1/images/path/alpha/y%2Fa+b.jpg",
        &a,
        None,
    )
    .await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["image_deleted"], false);
    assert_eq!(res["remaining_paths"], json!(["x/a.jpg"]));
    assert_eq!(node.fetch("/i/alpha/y/a%20b.jpg").await.0, 404);
    assert_eq!(node.fetch("/i/alpha/x/a.jpg").await.0, 200);
    let (status, _) = api(
        &node,
        reqwest::Method::DELETE,
        "/api/v1/images/path/alpha/y%2Fa+b.jpg",
        &a,
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = api(
        &node,
        reqwest::Method::DELETE,
        "/api/v1/images/path/alpha/..%2F..%2Fetc%2Fpasswd",
        &a,
        None,
    )
    .await;
    assert_eq!(status, 400);

    // Deleting the image: no URL of it answers, in any size or format.
    let (status, res) = api(
        &node,
        reqwest::Method::DELETE,
        &format!("/api/v1/images/{id}"),
        &a,
        None,
    )
    .await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["deleted_paths"], json!(["x/a.jpg"]));
    for url in [
        "/i/alpha/x/a.webp?w=100",
        "/i/alpha/x/a.jpg",
        "/i/alpha/x/a.avif?w=50",
    ] {
        assert_eq!(node.fetch(url).await.0, 404, "{url}");
    }
    // The variants' data key is gone: whatever the cache files hold can no longer be read.
    assert_eq!(node.app.state.store.cache_key(&hash).await.unwrap(), None);
    // Alpha's copy is shredded and deleted; bravo's, an unrelated object, stays and renders.
    let originals = &node.app.state.originals;
    assert_eq!(originals.object_name("alpha", &hash).await.unwrap(), None);
    assert!(!originals.stored("alpha", &hash).await.unwrap());
    let bravo_object = originals
        .object_name("bravo", &hash)
        .await
        .unwrap()
        .unwrap();
    assert!(
        originals
            .origin()
            .object_exists(&bravo_object)
            .await
            .unwrap()
    );
    assert_eq!(node.fetch("/i/bravo/b.webp?w=100").await.0, 200);
    // Bravo deletes its last path: no account references the bytes, the object is gone.
    let (status, res) = api(
        &node,
        reqwest::Method::DELETE,
        "/api/v1/images/path/bravo/b.jpg",
        &b,
        None,
    )
    .await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["image_deleted"], true);
    assert!(
        !originals
            .origin()
            .object_exists(&bravo_object)
            .await
            .unwrap()
    );
    assert_eq!(originals.object_name("bravo", &hash).await.unwrap(), None);
    assert_eq!(node.fetch("/i/bravo/b.webp?w=100").await.0, 404);
    node.stop().await;
}

#[tokio::test]
async fn presets_apply_in_every_spelling_and_edits_change_new_requests() {
    let node = TestNode::start_with("[demo]\nseed = false\n").await;
    let key = node.account_key("acme", "read,write").await;
    let (status, _) = upload_file(&node, &key, fixture(PHOTO), "bug.jpg", None).await;
    assert_eq!(status, 201);
    let (status, preset) = api(&node, reqwest::Method::POST, "/api/v1/settings/presets", &key, Some(json!({"name": "card", "description": null, "params": {"w": 120, "h": 80, "fit": "cover", "format": "webp"}}))).await;
    assert_eq!(status, 201, "{preset}");
    assert_eq!(preset["usage_count"], 0);
    assert_eq!(preset["description"], Value::Null);
    let id = preset["id"].as_str().unwrap().to_string();

    for spelling in ["p:card", "p:card=", "p%3Acard"] {
        let (code, headers, body) = node.fetch(&format!("/i/acme/bug.jpg?{spelling}")).await;
        assert_eq!(code, 200, "{spelling}");
        assert_eq!(
            headers["content-type"], "image/webp",
            "the preset's format wins over .jpg"
        );
        assert_eq!(dimensions(&body), (120, 80), "{spelling}");
    }
    // Explicit parameters override the preset's; the query's own format too.
    let (_, _, body) = node.fetch("/i/acme/bug.jpg?p:card&w=60").await;
    assert_eq!(dimensions(&body), (60, 80));
    let (_, headers, _) = node.fetch("/i/acme/bug.jpg?p:card&format=png").await;
    assert_eq!(headers["content-type"], "image/png");
    // The preset's format applies where the URL does not ask for another: on the original's
    // own extension (above) and with `format=auto`; another extension wins over it.
    for (url, media) in [
        ("/i/acme/bug.avif?p:card", "image/avif"),
        ("/i/acme/bug.png?p:card", "image/png"),
        ("/i/acme/bug.jpg?p:card&format=auto", "image/webp"),
    ] {
        let (code, headers, body) = node.fetch(url).await;
        assert_eq!(code, 200, "{url}");
        assert_eq!(headers["content-type"], media, "{url}");
        assert!(headers.get("vary").is_none(), "{url}");
        assert_eq!(dimensions(&body), (120, 80), "{url}");
    }
    // What the SDKs send: `null` unsets a key (and is not stored), `jxl` is an output format
    // like the others.
    let (status, sdk) = api(
        &node,
        reqwest::Method::POST,
        "/api/v1/settings/presets",
        &key,
        Some(json!({"name": "sdk", "params": {"w": 90, "h": null, "q": null, "format": "jxl"}})),
    )
    .await;
    assert_eq!(status, 201, "{sdk}");
    assert_eq!(sdk["params"], json!({"w": 90, "format": "jxl"}));
    let (code, headers, body) = node.fetch("/i/acme/bug.jpg?p:sdk").await;
    assert_eq!(code, 200);
    assert_eq!(headers["content-type"], "image/jxl");
    assert_eq!(dimensions(&body).0, 90);
    // An unknown preset, a bad one: 400.
    let (code, headers, body) = node.fetch("/i/acme/bug.jpg?p:nope").await;
    assert_json_error(code, &headers, &body, 400, "VALIDATION_ERROR");
    let (status, err) = api(
        &node,
        reqwest::Method::POST,
        "/api/v1/settings/presets",
        &key,
        Some(json!({"name": "bad", "params": {"w": 0}})),
    )
    .await;
    assert_eq!(status, 400, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("params.w")
    );
    let (status, _) = api(
        &node,
        reqwest::Method::POST,
        "/api/v1/settings/presets",
        &key,
        Some(json!({"name": "card", "params": {}})),
    )
    .await;
    assert_eq!(status, 409);
    let (status, _) = api(
        &node,
        reqwest::Method::POST,
        "/api/v1/settings/presets",
        &key,
        Some(json!({"name": "bad name!", "params": {}})),
    )
    .await;
    assert_eq!(status, 400);

    // Editing the preset changes what the same URL gets at once.
    let (status, edited) = api(
        &node,
        reqwest::Method::PUT,
        &format!("/api/v1/settings/presets/{id}"),
        &key,
        Some(json!({"params": {"w": 40, "h": 40, "format": "png"}})),
    )
    .await;
    assert_eq!(status, 200, "{edited}");
    let (_, headers, body) = node.fetch("/i/acme/bug.jpg?p:card").await;
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(dimensions(&body), (40, 40));
    // A cached repeat is not a render.
    let (_, headers, _) = node.fetch("/i/acme/bug.jpg?p:card").await;
    assert_eq!(headers["x-cache"], "HIT-MEMORY");

    // usage_count counts renders (3 spellings share one, the override, the query's PNG, the
    // AVIF, the edit: 5; `.png` and `format=auto` were cache hits of the PNG and the WebP;
    // `sdk`: 1), written at the usage flush: stop the node (which flushes) and read the
    // database.
    let dir = node.stop().await;
    let url = imgnode::store::testing::store_url(dir.path(), "imgnode.db").await;
    let store = imgnode::store::Store::open(&url).await.unwrap();
    let presets = store.presets("acme").await.unwrap();
    let count = |name: &str| {
        presets
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.usage_count)
    };
    assert_eq!(
        (presets.len(), count("card"), count("sdk")),
        (2, Some(5), Some(1))
    );
    store.close().await;
}

#[tokio::test]
async fn signatures_rotate_lock_the_node_and_guard_private_images() {
    let dir = tempfile::tempdir().unwrap();
    let old = b"old-signing-key-0123456789abcdefghijkl".to_vec();
    let new = b"new-signing-key-0123456789abcdefghijkl".to_vec();
    let file = dir.path().join("signing.keys");
    std::fs::write(
        &file,
        format!(
            "{}\n{}\n",
            String::from_utf8_lossy(&new),
            String::from_utf8_lossy(&old)
        ),
    )
    .unwrap();
    let node = TestNode::start_in(
        dir,
        &format!(
            "[delivery]\nrequire_signature = true\nsigning_keys_file = \"{}\"\n",
            file.display()
        ),
    )
    .await;
    let key = node.account_key("acme", "read,write").await;
    let (_, up) = upload_file(&node, &key, fixture(PHOTO), "bug.jpg", None).await;
    let id = up["id"].as_str().unwrap().to_string();
    let old_keys = imgnode::signing::SigningKeys::from_keys([old.clone()]);
    let new_keys = imgnode::signing::SigningKeys::from_keys([new.clone()]);
    let stranger = imgnode::signing::SigningKeys::from_keys([
        b"someone-elses-key-0123456789abcdefghij".to_vec(),
    ]);
    let later = imgnode::store::now_unix() + 600;

    // Unsigned: refused, transforms and originals alike (sign_originals defaults to true).
    for url in ["/i/acme/bug.webp?w=100", "/i/acme/bug.jpg"] {
        let (code, headers, body) = node.fetch(url).await;
        assert_json_error(code, &headers, &body, 403, "FORBIDDEN");
    }
    // Signed with either configured key: served.
    for keys in [&old_keys, &new_keys] {
        let (code, headers, body) = node.fetch(&sign(keys, "acme/bug.webp?w=100", later)).await;
        assert_eq!(code, 200);
        assert_eq!(headers["content-type"], "image/webp");
        assert_eq!(dimensions(&body).0, 100);
    }
    // The API signs with the first key (the new one).
    let (status, signed) = api(
        &node,
        reqwest::Method::POST,
        &format!("/api/v1/images/{id}/signed-url"),
        &key,
        Some(json!({"expires_in_seconds": 120})),
    )
    .await;
    assert_eq!(status, 200, "{signed}");
    let url = signed["signed_url"].as_str().unwrap();
    assert_eq!(node.fetch(local(url)).await.0, 200);
    let exp = signed["expires_at"].as_i64().unwrap();
    assert_eq!(local(url), sign(&new_keys, "acme/bug.jpg", exp));
    // Older clients name the transform the URL is for (`transform` or `transformation`, an
    // object or a query string): it is signed into the URL.
    for body in [
        json!({"transform": {"w": 150, "format": "webp", "q": null}}),
        json!({"transformation": "?format=webp&w=150"}),
    ] {
        let (status, signed) = signed_url(&node, &key, &id, body.clone()).await;
        assert_eq!(status, 200, "{body}: {signed}");
        let url = local(signed["signed_url"].as_str().unwrap()).to_string();
        assert!(
            url.starts_with("/i/acme/bug.jpg?format=webp&w=150&exp="),
            "{url}"
        );
        let (code, headers, image) = node.fetch(&url).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(headers["content-type"], "image/webp");
        assert_eq!(dimensions(&image).0, 150);
        let (code, _, _) = node.fetch(&url.replace("w=150", "w=151")).await;
        assert_eq!(code, 403, "the transform is signed");
    }
    for body in [
        json!({"transform": {"width": 150}}),
        json!({"transform": "w=0"}),
        json!({"transform": "w=10&sig=abc"}),
        json!({"transform": [1]}),
    ] {
        let (status, err) = signed_url(&node, &key, &id, body.clone()).await;
        assert_eq!(status, 400, "{body}: {err}");
        assert_eq!(err["error"]["code"], "VALIDATION_ERROR");
    }

    // Refused: a stranger's key, an expired URL, a changed parameter, a changed expiry.
    let refused = [
        sign(&stranger, "acme/bug.webp?w=100", later),
        sign(
            &old_keys,
            "acme/bug.webp?w=100",
            imgnode::store::now_unix() - 1,
        ),
        sign(&old_keys, "acme/bug.webp?w=100", later).replace("w=100", "w=101"),
        sign(&old_keys, "acme/bug.webp?w=100", later)
            .replace(&format!("exp={later}"), &format!("exp={}", later + 1)),
    ];
    for url in &refused {
        let (code, headers, body) = node.fetch(url).await;
        assert_json_error(code, &headers, &body, 403, "FORBIDDEN");
    }
    // A bad signature for a path that does not exist answers exactly as for one that does.
    let (_, _, missing) = node
        .fetch(&sign(&stranger, "acme/nothing-here.webp?w=100", later))
        .await;
    let (_, _, present) = node
        .fetch(&sign(&stranger, "acme/bug.webp?w=100", later))
        .await;
    let msg = |b: &[u8]| serde_json::from_slice::<Value>(b).unwrap()["error"]["message"].clone();
    assert_eq!(msg(&missing), msg(&present));
    node.stop().await;
}

#[tokio::test]
async fn private_images_need_a_signature_that_reveals_nothing() {
    let node = TestNode::start().await;
    let key = node.account_key("acme", "read,write").await;
    let form = Form::new()
        .part(
            "file",
            file_part(fixture(PHOTO), "secret.jpg", "image/jpeg"),
        )
        .text("visibility", "private");
    let (status, _, up) = upload(&node, &key, form).await;
    assert_eq!(status, 201, "{up}");
    assert_eq!(up["visibility"], "private");
    let id = up["id"].as_str().unwrap();
    // Unsigned: exactly the answer of a path that does not exist (status, body, headers).
    let (code, headers, unsigned) = node.fetch("/i/acme/secret.webp?w=80").await;
    assert_json_error(code, &headers, &unsigned, 404, "NOT_FOUND");
    let (code, missing_headers, missing) = node.fetch("/i/acme/absent.webp?w=80").await;
    assert_eq!(code, 404);
    let msg = |b: &[u8]| serde_json::from_slice::<Value>(b).unwrap()["error"]["message"].clone();
    assert_eq!(msg(&unsigned), msg(&missing));
    assert_eq!(headers["cache-control"], missing_headers["cache-control"]);
    // A wrong signature: 403 whether the image exists or not.
    let stranger = imgnode::signing::SigningKeys::from_keys([
        b"someone-elses-key-0123456789abcdefghij".to_vec(),
    ]);
    let later = imgnode::store::now_unix() + 60;
    let (code, _, absent) = node
        .fetch(&sign(&stranger, "acme/absent.webp?w=80", later))
        .await;
    let (code2, _, present) = node
        .fetch(&sign(&stranger, "acme/secret.webp?w=80", later))
        .await;
    assert_eq!((code, code2), (403, 403));
    assert_eq!(msg(&absent), msg(&present));
    // The API's signed URL opens it; making it public opens every URL.
    let (_, signed) = api(
        &node,
        reqwest::Method::POST,
        &format!("/api/v1/images/{id}/signed-url"),
        &key,
        None,
    )
    .await;
    assert_eq!(signed["expires_in_seconds"], 3600);
    assert_eq!(
        node.fetch(local(signed["signed_url"].as_str().unwrap()))
            .await
            .0,
        200
    );
    let (status, _) = api(
        &node,
        reqwest::Method::PATCH,
        &format!("/api/v1/images/{id}/visibility"),
        &key,
        Some(json!({"visibility": "public"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(node.fetch("/i/acme/secret.webp?w=80").await.0, 200);
    // And private again closes them at once, cached variants included.
    let (status, _) = api(
        &node,
        reqwest::Method::PATCH,
        &format!("/api/v1/images/{id}/visibility"),
        &key,
        Some(json!({"visibility": "private"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(node.fetch("/i/acme/secret.webp?w=80").await.0, 404);
    node.stop().await;
}

#[tokio::test]
async fn the_sweeper_deletes_only_unreferenced_originals() {
    let node = TestNode::start().await;
    let key = node.account_key("acme", "read,write").await;
    let (_, kept) = upload_file(&node, &key, fixture(PHOTO), "kept.jpg", None).await;
    let kept = kept["hash"].as_str().unwrap().to_string();
    // What a crash between writing the object and committing its metadata leaves behind.
    let orphan_bytes = fixture("formats/png_rgba.png");
    let orphan = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(&orphan_bytes))
    };
    let state = &node.app.state;
    let origin = state.originals.origin();
    // A plaintext object of an earlier version nothing reads any more.
    origin
        .put_plaintext_legacy(&orphan, Bytes::from(orphan_bytes))
        .await
        .unwrap();
    // A sealed object no key row names (its upload died before committing): a copy of the
    // kept one under another random name.
    let kept_object = node.object_of("acme", &kept).await;
    let originals_dir = node.dir.path().join("originals");
    let stray = "o/5e/5e0000000000000000000000000000ff";
    std::fs::create_dir_all(originals_dir.join("o/5e")).unwrap();
    std::fs::copy(originals_dir.join(&kept_object), originals_dir.join(stray)).unwrap();
    // Inside the grace period nothing goes.
    assert_eq!(
        state
            .ingest()
            .sweep_orphans(imgnode::store::now_unix() - 3600)
            .await
            .unwrap(),
        0
    );
    assert!(origin.plaintext_exists(&orphan).await.unwrap());
    assert!(origin.object_exists(stray).await.unwrap());
    // After it, only the orphans go.
    assert_eq!(
        state
            .ingest()
            .sweep_orphans(imgnode::store::now_unix() + 10)
            .await
            .unwrap(),
        2
    );
    assert!(!origin.plaintext_exists(&orphan).await.unwrap());
    assert!(!origin.object_exists(stray).await.unwrap());
    assert!(origin.object_exists(&kept_object).await.unwrap());
    assert!(state.originals.stored("acme", &kept).await.unwrap());
    assert_eq!(node.fetch("/i/acme/kept.webp?w=50").await.0, 200);
    node.stop().await;
}

#[tokio::test]
async fn listing_and_search_page_through_folders() {
    let node = TestNode::start_with("[demo]\nseed = false\n").await;
    let key = node.account_key("acme", "read,write").await;
    let sources = [
        "formats/jpeg_baseline.jpg",
        "formats/png_rgba.png",
        "formats/webp_lossy.webp",
        "formats/jpeg_progressive.jpg",
        "formats/png_palette.png",
    ];
    let targets = [
        "a/one.jpg",
        "a/two.png",
        "a/b/three.webp",
        "a/b/c/four.jpg",
        "top.png",
    ];
    for (src, target) in sources.iter().zip(targets) {
        let (status, body) = upload_file(&node, &key, fixture(src), "f.bin", Some(target)).await;
        assert_eq!(status, 201, "{target}: {body}");
    }
    let (_, root) = api(&node, reqwest::Method::GET, "/api/v1/images", &key, None).await;
    assert_eq!(root["total"], 1);
    assert_eq!(root["folders"], json!([{"name": "a", "image_count": 4}]));
    let (_, a) = api(
        &node,
        reqwest::Method::GET,
        "/api/v1/images?path=a&limit=1",
        &key,
        None,
    )
    .await;
    assert_eq!(
        (a["total"].as_u64(), a["has_more"].as_bool()),
        (Some(2), Some(true))
    );
    assert_eq!(a["images"][0]["paths"], json!(["a/one.jpg"]));
    assert_eq!(a["folders"], json!([{"name": "b", "image_count": 2}]));
    let (_, a2) = api(
        &node,
        reqwest::Method::GET,
        "/api/v1/images?folder=a&limit=1&offset=1",
        &key,
        None,
    )
    .await;
    assert_eq!(
        (a2["images"][0]["paths"].clone(), a2["has_more"].as_bool()),
        (json!(["a/two.png"]), Some(false))
    );
    let (status, _) = api(
        &node,
        reqwest::Method::GET,
        "/api/v1/images?limit=0",
        &key,
        None,
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = api(
        &node,
        reqwest::Method::GET,
        "/api/v1/images?path=a/../b",
        &key,
        None,
    )
    .await;
    assert_eq!(status, 400);
    // Search: by path fragment, case-insensitive; LIKE wildcards are literal.
    let (_, found) = api(
        &node,
        reqwest::Method::GET,
        "/api/v1/images/search?q=THREE",
        &key,
        None,
    )
    .await;
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(found["results"][0]["paths"], json!(["a/b/three.webp"]));
    let (_, none) = api(
        &node,
        reqwest::Method::GET,
        "/api/v1/images/search?q=%25",
        &key,
        None,
    )
    .await;
    assert_eq!(none["total"], 0, "{none}");
    let (status, _) = api(
        &node,
        reqwest::Method::GET,
        "/api/v1/images/search?q=",
        &key,
        None,
    )
    .await;
    assert_eq!(status, 400);
    node.stop().await;
}

/// `active_signed_url`: the latest unexpired signed URL issued for a private image, in listings
/// and search results; never for a public image, gone with the path it names.
#[tokio::test]
async fn listings_show_the_active_signed_url_of_private_images() {
    let node = TestNode::start_with("[demo]\nseed = false\n").await;
    let key = node.account_key("acme", "read,write").await;
    let (status, up) = upload_file(&node, &key, fixture(PHOTO), "bug.jpg", None).await;
    assert_eq!(status, 201, "{up}");
    let id = up["id"].as_str().unwrap().to_string();
    // Public: a signed URL is issued, but not shown.
    sign_once(&node, &key, &id, 600).await;
    let (listed, found) = list(&node, &key).await;
    assert!(listed.get("active_signed_url").is_none(), "{listed}");
    assert!(found.get("active_signed_url").is_none(), "{found}");
    // Private: the latest one issued is shown, in both, and it serves the image.
    let (status, _) = api(
        &node,
        reqwest::Method::PATCH,
        &format!("/api/v1/images/{id}/visibility"),
        &key,
        Some(json!({"visibility": "private"})),
    )
    .await;
    assert_eq!(status, 200);
    sign_once(&node, &key, &id, 900).await;
    let latest = sign_once(&node, &key, &id, 300).await;
    let (listed, found) = list(&node, &key).await;
    for item in [&listed, &found] {
        let active = &item["active_signed_url"];
        assert_eq!(active["signed_url"], latest["signed_url"], "{item}");
        assert_eq!(active["expires_at"], latest["expires_at"], "{item}");
    }
    let url = local(latest["signed_url"].as_str().unwrap()).to_string();
    assert_eq!(node.fetch(&url).await.0, 200);
    // Deleting the image takes its signed URL with it.
    let (status, _) = api(
        &node,
        reqwest::Method::DELETE,
        &format!("/api/v1/images/{id}"),
        &key,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, up) = upload_file(&node, &key, fixture(PHOTO), "bug.jpg", None).await;
    assert_eq!((status, up["id"].as_str()), (201, Some(id.as_str())));
    let (listed, _) = list(&node, &key).await;
    assert!(listed.get("active_signed_url").is_none(), "{listed}");
}

/// The first image of the listing and of a search for `bug`.
async fn list(node: &TestNode, key: &str) -> (Value, Value) {
    let (_, listed) = api(node, reqwest::Method::GET, "/api/v1/images", key, None).await;
    let (_, found) = api(
        node,
        reqwest::Method::GET,
        "/api/v1/images/search?q=bug",
        key,
        None,
    )
    .await;
    (listed["images"][0].clone(), found["results"][0].clone())
}

async fn sign_once(node: &TestNode, key: &str, id: &str, ttl: i64) -> Value {
    let (status, signed) = signed_url(node, key, id, json!({"expires_in_seconds": ttl})).await;
    assert_eq!(status, 200, "{signed}");
    signed
}

/// `POST /api/v1/images/{id}/signed-url` with `body`.
async fn signed_url(node: &TestNode, key: &str, id: &str, body: Value) -> (u16, Value) {
    api(
        node,
        reqwest::Method::POST,
        &format!("/api/v1/images/{id}/signed-url"),
        key,
        Some(body),
    )
    .await
}
