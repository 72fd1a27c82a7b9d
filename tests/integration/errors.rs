//! Every error code of the delivery spec, over HTTP, with its JSON body.

use imgnode::pipeline::SourceFormat;
use imgnode::store::Visibility;

use crate::harness::{TestNode, assert_json_error, fixture};

#[tokio::test]
async fn bad_parameter_values_are_400_naming_the_key() {
    let node = TestNode::start().await;
    for (query, key) in [
        ("w=0", "w"),
        ("w=10001", "w"),
        ("w=abc", "w"),
        ("h=-1", "h"),
        ("fit=squash", "fit"),
        ("q=101", "q"),
        ("dpr=5", "dpr"),
        ("crop=middle", "crop"),
        ("rotate=45", "rotate"),
        ("flip=x", "flip"),
        ("blur=101", "blur"),
        ("sharpen=-3", "sharpen"),
        ("aspect=0:1", "aspect"),
        ("grayscale=maybe", "grayscale"),
        ("format=bmp", "format"),
        ("frame=-1", "frame"),
        ("animated=maybe", "animated"),
        ("bg=zzzzzz", "bg"),
    ] {
        let (status, h, body) = node.fetch(&format!("/i/demo/ladybird.jpg?{query}")).await;
        assert_json_error(status, &h, &body, 400, "VALIDATION_ERROR");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(key), "{query}: {msg}");
        assert_eq!(h["cache-control"], "no-store");
    }
}

#[tokio::test]
async fn unknown_presets_are_400() {
    let node = TestNode::start().await;
    let (status, h, body) = node.fetch("/i/demo/ladybird.jpg?p:thumb").await;
    assert_json_error(status, &h, &body, 400, "VALIDATION_ERROR");
}

#[tokio::test]
async fn path_traversal_is_400_in_every_spelling_and_never_a_lookup() {
    let node = TestNode::start().await;
    for target in [
        "/i/demo/../demo/ladybird.jpg",
        "/i/demo/%2e%2e/ladybird.jpg",
        "/i/demo/a/%2E%2E/ladybird.jpg",
        "/i/demo/..%2fladybird.jpg",
        "/i/demo/a%5c..%5cladybird.jpg",
        "/i/demo/./ladybird.jpg",
        "/i/demo//ladybird.jpg",
        "/i/demo/a%00b.jpg",
    ] {
        let (status, body) = node.raw_get(target).await;
        assert_eq!(status, 400, "{target}: {body}");
        assert!(body.contains("VALIDATION_ERROR"), "{target}: {body}");
    }
}

#[tokio::test]
async fn bad_accounts_and_extensions_are_400() {
    let node = TestNode::start().await;
    for target in [
        "/i/Demo/ladybird.jpg",
        "/i/demo/ladybird.tiff",
        "/i/demo/ladybird",
    ] {
        let (status, h, body) = node.fetch(target).await;
        assert_json_error(status, &h, &body, 400, "VALIDATION_ERROR");
    }
}

#[tokio::test]
async fn missing_images_and_accounts_are_404_with_a_short_cache() {
    let node = TestNode::start().await;
    for target in [
        "/i/demo/nothing.jpg?w=10",
        "/i/nobody/ladybird.jpg",
        "/nope",
    ] {
        let (status, h, body) = node.fetch(target).await;
        assert_json_error(status, &h, &body, 404, "NOT_FOUND");
        assert_eq!(h["cache-control"], "public, max-age=60");
    }
}

#[tokio::test]
async fn tenant_api_answers_are_never_cacheable_errors_included() {
    let node = TestNode::start().await;
    let key = node.account_key("acme", "read,write").await;
    // A missing image id: a 404 like the image ones, but never `public`.
    let (status, h, v) = node
        .api(
            reqwest::Method::GET,
            "/api/v1/images/img_missing0000",
            &key,
            None,
        )
        .await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["code"], "NOT_FOUND");
    assert_eq!(h["cache-control"], "no-store");
    // An unknown API route, a refused key, and a success.
    let (status, h, _) = node
        .api(reqwest::Method::GET, "/api/v1/nothing", &key, None)
        .await;
    assert_eq!(status, 404);
    assert_eq!(h["cache-control"], "no-store");
    let (status, h, _) = node
        .api(
            reqwest::Method::GET,
            "/api/v1/images/x",
            "imgsrc_wrong",
            None,
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(h["cache-control"], "no-store");
    let (status, h, _) = node
        .api(reqwest::Method::GET, "/api/v1/images", &key, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(h["cache-control"], "no-store");
}

#[tokio::test]
async fn other_methods_are_405() {
    let node = TestNode::start().await;
    let res = node
        .client
        .post(format!("{}/i/demo/ladybird.jpg", node.base))
        .send()
        .await
        .unwrap();
    let (status, h) = (res.status().as_u16(), res.headers().clone());
    assert_json_error(
        status,
        &h,
        &res.bytes().await.unwrap(),
        405,
        "METHOD_NOT_ALLOWED",
    );
    assert_eq!(h["allow"], "GET, HEAD");

    // The tenant API: `Allow` names what the route takes, the answer comes after
    // authentication with the rate-limit headers, and HEAD works wherever GET does.
    let key = node.account_key("demo", "read,write").await;
    for (method, path, allow) in [
        (
            reqwest::Method::PUT,
            "/api/v1/settings/api-keys",
            "GET, HEAD, POST",
        ),
        (reqwest::Method::POST, "/api/v1/settings", "GET, HEAD, PUT"),
        (
            reqwest::Method::GET,
            "/api/v1/images/abc/signed-url",
            "POST",
        ),
        (reqwest::Method::PATCH, "/api/v1/usage", "GET, HEAD"),
    ] {
        let res = node
            .client
            .request(method.clone(), format!("{}{path}", node.base))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        let (status, h) = (res.status().as_u16(), res.headers().clone());
        let body = res.bytes().await.unwrap();
        assert_json_error(status, &h, &body, 405, "METHOD_NOT_ALLOWED");
        assert_eq!(h["allow"], allow, "{method} {path}");
        assert!(h.contains_key("x-ratelimit-limit"), "{method} {path}");
    }
    let res = node
        .client
        .head(format!("{}/api/v1/settings", node.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert!(res.bytes().await.unwrap().is_empty());
    // The operator API names its routes' methods too.
    let operated = TestNode::start_operated("").await;
    for (method, path, allow) in [
        (reqwest::Method::PUT, "/admin/v1/purge", "POST"),
        (
            reqwest::Method::POST,
            "/admin/v1/accounts/demo",
            "GET, HEAD, PATCH, DELETE",
        ),
        (
            reqwest::Method::DELETE,
            "/admin/v1/accounts",
            "GET, HEAD, POST",
        ),
        (reqwest::Method::POST, "/metrics", "GET, HEAD"),
    ] {
        let res = operated
            .client
            .request(method.clone(), format!("{}{path}", operated.ops))
            .bearer_auth(crate::harness::OPERATOR)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405, "{method} {path}");
        assert_eq!(res.headers()["allow"], allow, "{method} {path}");
    }
    // Without a key, the route's 405 is not reached: 401 first, as for every route.
    let res = node
        .client
        .put(format!("{}/api/v1/settings/api-keys", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn unsigned_private_images_answer_exactly_like_missing_ones() {
    let node = TestNode::start().await;
    node.add_image(
        "demo",
        "secret.jpg",
        &fixture("formats/jpeg_baseline.jpg"),
        Visibility::Private,
    )
    .await;
    for (private, missing) in [
        ("/i/demo/secret.webp?w=10", "/i/demo/nothing.webp?w=10"),
        ("/i/demo/secret.jpg", "/i/demo/nothing.jpg"),
    ] {
        let (status, h, body) = node.fetch(private).await;
        assert_json_error(status, &h, &body, 404, "NOT_FOUND");
        let (m_status, m_h, m_body) = node.fetch(missing).await;
        assert_eq!(status, m_status);
        let error = |b: &[u8]| {
            let mut v: serde_json::Value = serde_json::from_slice(b).unwrap();
            v["error"]["path"].take();
            v
        };
        assert_eq!(error(&body), error(&m_body), "{private}");
        for name in ["cache-control", "content-type", "vary"] {
            assert_eq!(h.get(name), m_h.get(name), "{private}: {name}");
        }
    }
}

#[tokio::test]
async fn an_undecodable_original_is_415() {
    let node = TestNode::start().await;
    // A JPEG 2000 signature box (not an input format) behind a record that says JPEG.
    let mut jp2 = b"\0\0\0\x0cjP  \r\n\x87\n".to_vec();
    jp2.resize(400, 0);
    node.add_raw("demo", "jp2", SourceFormat::Jpeg, &jp2).await;
    let (status, h, body) = node.fetch("/i/demo/jp2.png?w=10").await;
    assert_json_error(status, &h, &body, 415, "UNSUPPORTED_FORMAT");
}

#[tokio::test]
async fn a_truncated_jpeg_is_422_corrupt() {
    let node = TestNode::start().await;
    let full = fixture("photos/ladybird.jpg");
    node.add_raw("demo", "cut", SourceFormat::Jpeg, &full[..full.len() / 2])
        .await;
    let (status, h, body) = node.fetch("/i/demo/cut.png?w=100").await;
    assert_json_error(status, &h, &body, 422, "CORRUPT_IMAGE");
}

#[tokio::test]
async fn a_png_declaring_100000_squared_is_422_without_allocating_it() {
    let node = TestNode::start().await;
    let bomb = png_header(100_000, 100_000);
    node.add_raw("demo", "bomb", SourceFormat::Png, &bomb).await;
    let (status, h, body) = node.fetch("/i/demo/bomb.jpg?w=100").await;
    assert_json_error(status, &h, &body, 422, "IMAGE_TOO_LARGE");
    // 10^10 pixels would be 30 GB: had the node allocated it, it would not be answering.
    assert_eq!(node.get("/health").await.status(), 200);
}

#[tokio::test]
async fn source_pixel_limit_is_a_config_key() {
    let node = TestNode::start_with("[limits]\nmax_source_pixels = 100000\n").await;
    // The demo photos are 900000 pixels: stored before the limit was lowered.
    node.add_raw(
        "demo",
        "big",
        SourceFormat::Jpeg,
        &fixture("photos/ladybird.jpg"),
    )
    .await;
    let (status, h, body) = node.fetch("/i/demo/big.png?w=10").await;
    assert_json_error(status, &h, &body, 422, "IMAGE_TOO_LARGE");
}

#[tokio::test]
async fn output_over_the_limits_is_400_not_a_clamp() {
    let node = TestNode::start_with("[limits]\nmax_output_pixels = 1000000\n").await;
    let (status, h, body) = node.fetch("/i/demo/ladybird.jpg?w=2000&h=2000").await;
    assert_json_error(status, &h, &body, 400, "VALIDATION_ERROR");
}

#[tokio::test]
async fn a_broken_origin_is_502_without_internal_detail() {
    let node = TestNode::start().await;
    let state = &node.app.state;
    let image = state
        .store
        .image_by_stem("demo", "ladybird")
        .await
        .unwrap()
        .unwrap();
    // Replace the object's fan-out folder by a file: reads fail with ENOTDIR, which is
    // neither "not found" nor anything the client caused.
    let object = node.object_of("demo", &image.hash).await;
    let fanout = node
        .data_dir()
        .join("originals")
        .join(object.rsplit_once('/').unwrap().0);
    std::fs::remove_dir_all(&fanout).unwrap();
    std::fs::write(&fanout, b"not a folder").unwrap();
    let (status, h, body) = node.fetch("/i/demo/ladybird.png?w=10").await;
    assert_json_error(status, &h, &body, 502, "ORIGIN_UNAVAILABLE");
    let text = String::from_utf8_lossy(&body);
    assert!(!text.contains("originals/"), "{text}");
    assert!(!text.contains(&image.hash), "{text}");
}

#[tokio::test]
async fn a_full_queue_is_503_with_retry_after_and_the_node_keeps_serving() {
    // A generous deadline: the slow render must finish (200) however busy the machine is.
    let node =
        TestNode::start_with("[cpu]\nthreads = 1\nqueue = 0\ntransform_timeout = \"600s\"\n").await;
    // A slow render (a large AVIF) holds the only thread.
    let slow = {
        let client = node.client.clone();
        let url = format!("{}/i/demo/elephants.avif?w=640", node.base);
        tokio::spawn(async move { client.get(url).send().await.unwrap().status() })
    };
    while node.metric("imgnode_cpu_in_flight", &[]).await < 1.0 {
        tokio::task::yield_now().await;
    }
    let fetched = node
        .metric("imgnode_origin_fetches_total", &[("outcome", "ok")])
        .await;
    let (status, h, body) = node.fetch("/i/demo/ladybird.png?w=50").await;
    assert_json_error(status, &h, &body, 503, "OVERLOADED");
    // The place in the pool is asked for first: a refused render fetches no original.
    assert_eq!(
        node.metric("imgnode_origin_fetches_total", &[("outcome", "ok")])
            .await,
        fetched
    );
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry));
    assert_eq!(node.metric("imgnode_cpu_rejected_total", &[]).await, 1.0);
    // Originals and health do not need the pool.
    assert_eq!(node.get("/i/demo/ladybird.jpg").await.status(), 200);
    assert_eq!(slow.await.unwrap(), 200);
}

#[tokio::test]
async fn a_render_past_its_deadline_is_504() {
    // No demo seed: its probes would run under the same 1 ms deadline.
    let node =
        TestNode::start_with("[cpu]\ntransform_timeout = \"1ms\"\n[demo]\nseed = false\n").await;
    node.add_raw(
        "acme",
        "big",
        SourceFormat::Jpeg,
        &fixture("photos/elephants.jpg"),
    )
    .await;
    let (status, h, body) = node.fetch("/i/acme/big.avif?w=320").await;
    assert_json_error(status, &h, &body, 504, "TRANSFORM_TIMEOUT");
}

/// A PNG signature and IHDR chunk (valid CRC) declaring `w` x `h` RGB, then IEND.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    chunk(&mut out, b"IEND", &[]);
    out.resize(out.len().max(200), 0);
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
