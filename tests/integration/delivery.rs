//! The delivery contract over HTTP: every parameter and fit mode, output formats,
//! negotiation, headers, 304 and HEAD. Sizes are read back from the decoded responses.

use crate::harness::{TestNode, assert_json_error, decode, dimensions, fixture};
use image::GenericImageView;

/// ladybird.jpg is 1200x750 (8:5).
const PHOTO: &str = "/i/demo/ladybird";

#[tokio::test]
async fn the_readme_url_gives_a_resized_webp() {
    let node = TestNode::start().await;
    let (status, headers, body) = node.fetch("/i/demo/ladybird.webp?w=800").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "image/webp");
    assert_eq!(dimensions(&body), (800, 500));
    assert_eq!(decode(&body).dimensions(), (800, 500));
}

#[tokio::test]
async fn every_fit_mode_and_size_parameter_gives_the_specified_dimensions() {
    let node = TestNode::start().await;
    let cases: &[(&str, (u32, u32))] = &[
        ("w=400&h=400", (400, 400)),
        ("w=400&h=400&fit=cover", (400, 400)),
        ("w=400&h=400&fit=contain", (400, 250)),
        ("w=400&h=400&fit=fill", (400, 400)),
        ("w=2000&h=2000&fit=scale-down", (1200, 750)),
        ("w=600&h=600&fit=scale-down", (600, 375)),
        ("w=2400&fit=scale-down", (1200, 750)),
        ("w=2400", (2400, 1500)),
        ("w=300", (300, 188)),
        ("h=150", (240, 150)),
        ("w=200&aspect=1:1", (200, 200)),
        ("h=90&aspect=16:9", (160, 90)),
        ("aspect=1:1", (750, 750)),
        ("w=300&aspect=original", (300, 188)),
        ("w=100&dpr=2", (200, 125)),
        ("w=100&dpr=1.5", (150, 94)),
        ("w=400&rotate=90", (250, 400)),
        ("w=400&rotate=270", (250, 400)),
        ("w=400&rotate=180", (400, 250)),
        ("w=400&rotate=auto", (400, 250)),
        ("w=400&flip=h", (400, 250)),
        ("w=400&flip=both", (400, 250)),
    ];
    for (query, want) in cases {
        let (status, _, body) = node.fetch(&format!("{PHOTO}.jpg?{query}")).await;
        assert_eq!(status, 200, "{query}: {}", String::from_utf8_lossy(&body));
        assert_eq!(decode(&body).dimensions(), *want, "{query}");
    }
}

#[tokio::test]
async fn every_crop_anchor_gives_the_box() {
    let node = TestNode::start().await;
    for crop in [
        "center",
        "top",
        "bottom",
        "left",
        "right",
        "top-left",
        "top-right",
        "bottom-left",
        "bottom-right",
        "attention",
        "entropy",
    ] {
        let (status, _, body) = node
            .fetch(&format!("{PHOTO}.png?w=200&h=300&crop={crop}"))
            .await;
        assert_eq!(status, 200, "{crop}");
        assert_eq!(decode(&body).dimensions(), (200, 300), "{crop}");
    }
}

/// The demo ladybird (red, at x 785-900 of 1200) is in every attention crop the img-src
/// parity report found it missing from, counted by its red pixels in the decoded output; a
/// crop anchored left, which cannot hold it, shows that the count tells.
#[tokio::test]
async fn attention_crops_keep_the_ladybird() {
    let node = TestNode::start().await;
    let red = |body: &[u8]| {
        decode(body)
            .to_rgb8()
            .pixels()
            .filter(|p| p[0] > 140 && p[1] < 80 && p[2] < 80)
            .count()
    };
    for (w, h) in [(300, 300), (200, 300), (300, 500), (100, 100)] {
        let (status, _, body) = node
            .fetch(&format!("{PHOTO}.png?w={w}&h={h}&crop=attention"))
            .await;
        assert_eq!(status, 200);
        assert_eq!(decode(&body).dimensions(), (w, h));
        // Its red shell: 80 pixels at 300x300, 12 at 100x100 (looked at: it is in each).
        let kept = red(&body);
        assert!(
            kept >= (w * h / 2000) as usize,
            "{w}x{h}: {kept} red pixels"
        );
        let (_, _, left) = node
            .fetch(&format!("{PHOTO}.png?w={w}&h={h}&crop=left"))
            .await;
        assert_eq!(red(&left), 0, "{w}x{h} anchored left holds no ladybird");
    }
}

#[tokio::test]
async fn crop_anchors_pick_different_regions() {
    let node = TestNode::start().await;
    let left = decode(
        &node
            .fetch(&format!("{PHOTO}.png?w=100&h=200&crop=left"))
            .await
            .2,
    )
    .to_rgb8();
    let right = decode(
        &node
            .fetch(&format!("{PHOTO}.png?w=100&h=200&crop=right"))
            .await
            .2,
    )
    .to_rgb8();
    assert_ne!(left.as_raw(), right.as_raw());
}

#[tokio::test]
async fn every_output_format_has_its_media_type_and_size() {
    let node = TestNode::start().await;
    for (ext, media) in [
        ("jpg", "image/jpeg"),
        ("jpeg", "image/jpeg"),
        ("png", "image/png"),
        ("webp", "image/webp"),
        ("avif", "image/avif"),
    ] {
        let (status, headers, body) = node.fetch(&format!("{PHOTO}.{ext}?w=320")).await;
        assert_eq!(status, 200, "{ext}");
        assert_eq!(headers["content-type"], media, "{ext}");
        assert_eq!(dimensions(&body), (320, 200), "{ext}");
        if ext != "avif" {
            assert_eq!(decode(&body).dimensions(), (320, 200), "{ext}");
        } else {
            assert_eq!(&body[4..12], b"ftypavif");
        }
    }
}

#[tokio::test]
async fn grayscale_blur_sharpen_and_quality_change_the_pixels_as_asked() {
    let node = TestNode::start().await;
    let base = decode(&node.fetch(&format!("{PHOTO}.png?w=300")).await.2).to_rgb8();

    let gray = decode(
        &node
            .fetch(&format!("{PHOTO}.png?w=300&grayscale=true"))
            .await
            .2,
    )
    .to_rgb8();
    assert!(gray.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
    assert!(base.pixels().any(|p| p[0] != p[1]));

    let blurred = decode(&node.fetch(&format!("{PHOTO}.png?w=300&blur=30")).await.2).to_rgb8();
    let sharpened = decode(&node.fetch(&format!("{PHOTO}.png?w=300&sharpen=80")).await.2).to_rgb8();
    let (b, s, o) = (
        edge_energy(&blurred),
        edge_energy(&sharpened),
        edge_energy(&base),
    );
    assert!(b < o * 0.5, "blur should remove detail: {b} vs {o}");
    assert!(s > o * 1.1, "sharpen should add edge contrast: {s} vs {o}");

    let low = node.fetch(&format!("{PHOTO}.jpg?w=600&q=10")).await.2;
    let high = node.fetch(&format!("{PHOTO}.jpg?w=600&q=95")).await.2;
    assert!(
        low.len() * 2 < high.len(),
        "{} vs {}",
        low.len(),
        high.len()
    );
}

#[tokio::test]
async fn flips_and_rotations_move_pixels() {
    let node = TestNode::start().await;
    let base = decode(&node.fetch(&format!("{PHOTO}.png?w=120")).await.2).to_rgb8();
    let flipped = decode(&node.fetch(&format!("{PHOTO}.png?w=120&flip=h")).await.2).to_rgb8();
    let (w, h) = base.dimensions();
    for (x, y) in [(0, 0), (10, 20), (w - 1, h - 1)] {
        assert_eq!(base.get_pixel(x, y), flipped.get_pixel(w - 1 - x, y));
    }
    let rotated = decode(&node.fetch(&format!("{PHOTO}.png?w=120&rotate=90")).await.2).to_rgb8();
    // Clockwise: the source's bottom-left corner becomes the top-left.
    assert_eq!(rotated.dimensions(), (h, w));
    assert_eq!(rotated.get_pixel(0, 0), base.get_pixel(0, h - 1));
}

#[tokio::test]
async fn alpha_is_flattened_onto_bg_for_jpeg_and_kept_for_png() {
    let node = TestNode::start().await;
    // arc-colors.png is RGBA; its pixel (5,5) is fully transparent.
    let jpg = decode(
        &node
            .fetch("/i/demo/arc-colors.jpg?bg=ff0000&q=95&w=640")
            .await
            .2,
    )
    .to_rgb8();
    let p = jpg.get_pixel(5, 5);
    assert!(p[0] > 230 && p[1] < 30 && p[2] < 30, "{p:?}");
    let white = decode(&node.fetch("/i/demo/arc-colors.jpg?q=95&w=640").await.2).to_rgb8();
    assert!(white.get_pixel(5, 5).0.iter().all(|c| *c > 240));
    let png = decode(&node.fetch("/i/demo/arc-colors.png?w=320").await.2).to_rgba8();
    assert_eq!(png.get_pixel(2, 2)[3], 0);
}

#[tokio::test]
async fn the_original_extension_without_parameters_serves_the_stored_bytes() {
    let node = TestNode::start().await;
    let (status, headers, body) = node.fetch("/i/demo/ladybird.jpg").await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-cache"], "ORIGINAL");
    assert_eq!(&body[..], &fixture("photos/ladybird.jpg")[..]);
    // An ignored key is not a transform.
    let (_, headers, body) = node.fetch("/i/demo/ladybird.jpg?v=3").await;
    assert_eq!(headers["x-cache"], "ORIGINAL");
    assert_eq!(&body[..], &fixture("photos/ladybird.jpg")[..]);
    // Another extension converts.
    let (_, headers, _) = node.fetch("/i/demo/ladybird.png").await;
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(headers["x-cache"], "MISS");
}

/// `dpr` beyond the output pixel limit is clamped (shape kept), as beyond the side limit; an
/// explicit size over the limit stays a 400.
#[tokio::test]
async fn dpr_past_the_output_pixel_limit_is_clamped() {
    let node = TestNode::start_with(
        "[limits]\nmax_output_pixels = 2000000\n[delivery]\nunsigned_max_pixels = 2000000\n",
    )
    .await;
    let (status, headers, body) = node.fetch(&format!("{PHOTO}.jpg?w=1000&dpr=2")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "image/jpeg");
    let (w, h) = dimensions(&body);
    assert!(u64::from(w) * u64::from(h) <= 2_000_000, "{w}x{h}");
    assert!(
        w >= 1780 && (f64::from(w) / f64::from(h) - 1.6).abs() < 0.01,
        "{w}x{h}"
    );
    let (status, headers, body) = node.fetch(&format!("{PHOTO}.jpg?w=2000")).await;
    assert_json_error(status, &headers, &body, 400, "VALIDATION_ERROR");
}

/// `format=webp` (what img-src's SDKs put on the query) names the output format like the
/// extension does; the original's own format asked that way is still its untouched bytes.
#[tokio::test]
async fn an_explicit_format_parameter_is_an_alias_of_the_extension() {
    let node = TestNode::start().await;
    for (query, media) in [
        ("format=webp", "image/webp"),
        ("format=png&w=300", "image/png"),
        ("format=JPG&w=300", "image/jpeg"),
    ] {
        let (status, headers, body) = node.fetch(&format!("{PHOTO}.avif?{query}")).await;
        assert_eq!(status, 200, "{query}");
        assert_eq!(headers["content-type"], media, "{query}");
        assert!(headers.get("vary").is_none(), "{query}");
        let width = decode(&body).width();
        assert_eq!(
            width,
            if query.contains("w=") { 300 } else { 1200 },
            "{query}"
        );
    }
    let (_, headers, body) = node.fetch("/i/demo/ladybird.webp?format=jpeg").await;
    assert_eq!(headers["x-cache"], "ORIGINAL");
    assert_eq!(&body[..], &fixture("photos/ladybird.jpg")[..]);
    let (status, headers, body) = node.fetch(&format!("{PHOTO}.jpg?format=bmp")).await;
    assert_json_error(status, &headers, &body, 400, "VALIDATION_ERROR");
    assert!(String::from_utf8_lossy(&body).contains("format must be auto, jpeg"));
}

#[tokio::test]
async fn format_auto_negotiates_from_accept_and_varies() {
    // AVIF encoded in the request (the background encode is the next test).
    let node = TestNode::start_with("[delivery]\navif_background = false\n").await;
    let cases = [
        ("image/avif,image/webp,*/*;q=0.8", "image/avif"),
        ("image/webp,*/*", "image/webp"),
        ("*/*", "image/jpeg"),
    ];
    for (accept, want) in cases {
        let res = node
            .get_with(
                &format!("{PHOTO}.jpg?w=200&format=auto"),
                &[("accept", accept)],
            )
            .await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], want, "{accept}");
        assert_eq!(res.headers()["vary"], "Accept");
    }
    let (_, headers, _) = node.fetch(&format!("{PHOTO}.jpg?w=200")).await;
    assert!(headers.get("vary").is_none());

    // The account's `delivery_formats` decide, in their order: a format it does not list is
    // never chosen, whatever the client accepts.
    let key = node.account_key("demo", "read,write").await;
    let chrome = "image/avif,image/webp,image/apng,image/*,*/*;q=0.8";
    for (formats, want) in [
        (serde_json::json!(["webp", "jpeg"]), "image/webp"),
        (serde_json::json!(["webp", "avif"]), "image/webp"),
        (serde_json::json!(["jpeg", "png"]), "image/jpeg"),
        (serde_json::json!(["avif", "webp"]), "image/avif"),
    ] {
        let body = serde_json::json!({"delivery_formats": formats});
        let (status, _, _) = node
            .api(reqwest::Method::PUT, "/api/v1/settings", &key, Some(body))
            .await;
        assert_eq!(status, 200);
        let res = node
            .get_with(
                &format!("{PHOTO}.jpg?w=210&format=auto"),
                &[("accept", chrome)],
            )
            .await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], want, "{formats}");
        let bytes = res.bytes().await.unwrap();
        assert_eq!(dimensions(&bytes).0, 210, "{formats}");
    }
}

/// `format=auto` for an AVIF-capable client whose AVIF is not cached: a WebP stand-in at once,
/// briefly cacheable, while the AVIF is encoded in the background; then the AVIF, full TTL.
#[tokio::test]
async fn format_auto_answers_a_stand_in_while_the_avif_encodes_in_the_background() {
    let node = TestNode::start().await;
    let url = format!("{PHOTO}.jpg?w=240&format=auto");
    let avif_first = [("accept", "image/avif,image/webp,*/*")];
    let first = node.get_with(&url, &avif_first).await;
    assert_eq!(first.status(), 200);
    let h = first.headers();
    assert_eq!(h["content-type"], "image/webp");
    assert_eq!(h["cache-control"], "public, max-age=300");
    assert_eq!(h["vary"], "Accept");
    let stand_in = first.bytes().await.unwrap();
    assert_eq!(crate::harness::dimensions(&stand_in), (240, 150));
    crate::harness::wait_for_metric(
        &node.ops,
        "imgnode_delivery_avif_background_total",
        &[("outcome", "stored")],
        1.0,
        std::time::Duration::from_secs(60),
        "the background AVIF stored",
    )
    .await;
    let second = node.get_with(&url, &avif_first).await;
    let h = second.headers().clone();
    assert_eq!(h["content-type"], "image/avif");
    assert_eq!(h["cache-control"], "public, max-age=31536000");
    assert_eq!(h["vary"], "Accept");
    assert_eq!(h["x-cache"], "HIT-MEMORY");
    let avif = second.bytes().await.unwrap();
    assert_eq!(&avif[4..12], b"ftypavif");
    assert_eq!(crate::harness::dimensions(&avif), (240, 150));
    // One stand-in was given.
    assert_eq!(
        node.metric("imgnode_delivery_avif_fallbacks_total", &[])
            .await,
        1.0
    );
    // A WebP-only client gets the WebP the stand-in was, with the full TTL.
    let webp = node.get_with(&url, &[("accept", "image/webp,*/*")]).await;
    assert_eq!(webp.headers()["content-type"], "image/webp");
    assert_eq!(webp.headers()["cache-control"], "public, max-age=31536000");
    assert_eq!(webp.headers()["x-cache"], "HIT-MEMORY");
}

#[tokio::test]
async fn responses_carry_the_spec_headers() {
    let node = TestNode::start().await;
    let (status, h, _) = node.fetch(&format!("{PHOTO}.webp?w=100")).await;
    assert_eq!(status, 200);
    assert_eq!(h["cache-control"], "public, max-age=31536000");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-cache"], "MISS");
    let etag = h["etag"].to_str().unwrap();
    assert!(etag.starts_with('"') && !etag.starts_with("W/"), "{etag}");
    assert!(h.contains_key("last-modified"));
    let timing = h["server-timing"].to_str().unwrap();
    for stage in ["fetch;dur=", "decode;dur=", "resize;dur=", "encode;dur="] {
        assert!(timing.contains(stage), "{timing}");
    }
}

#[tokio::test]
async fn parameter_order_and_ignored_keys_do_not_change_the_etag() {
    let node = TestNode::start().await;
    let a = node
        .fetch(&format!("{PHOTO}.webp?w=100&h=80&fit=contain"))
        .await
        .1;
    let b = node
        .fetch(&format!("{PHOTO}.webp?fit=contain&utm=x&h=80&w=100&v=2"))
        .await
        .1;
    let c = node.fetch(&format!("{PHOTO}.webp?w=100&h=80")).await.1;
    assert_eq!(a["etag"], b["etag"]);
    assert_ne!(a["etag"], c["etag"]);
    // Explicit defaults are dropped from the canonical form.
    let d = node
        .fetch(&format!("{PHOTO}.webp?w=100&q=80&fit=cover&dpr=1"))
        .await
        .1;
    let e = node.fetch(&format!("{PHOTO}.webp?w=100")).await.1;
    assert_eq!(d["etag"], e["etag"]);
}

#[tokio::test]
async fn if_none_match_answers_304_without_a_body() {
    let node = TestNode::start().await;
    for path in [format!("{PHOTO}.webp?w=120"), format!("{PHOTO}.jpg")] {
        let first = node.get(&path).await;
        let etag = first.headers()["etag"].to_str().unwrap().to_string();
        let res = node.get_with(&path, &[("if-none-match", &etag)]).await;
        assert_eq!(res.status(), 304, "{path}");
        assert_eq!(res.headers()["etag"].to_str().unwrap(), etag);
        assert_eq!(res.headers()["cache-control"], "public, max-age=31536000");
        assert!(res.bytes().await.unwrap().is_empty());
        let res = node
            .get_with(&path, &[("if-none-match", "\"something-else\"")])
            .await;
        assert_eq!(res.status(), 200);
    }
}

#[tokio::test]
async fn head_answers_the_get_headers_without_a_body() {
    let node = TestNode::start().await;
    let path = format!("{}{PHOTO}.webp?w=150", node.base);
    let get = node.client.get(&path).send().await.unwrap();
    let get_headers = get.headers().clone();
    let get_len = get.bytes().await.unwrap().len();
    let head = node.client.head(&path).send().await.unwrap();
    assert_eq!(head.status(), 200);
    for h in ["content-type", "etag", "cache-control", "content-length"] {
        assert_eq!(head.headers()[h], get_headers[h], "{h}");
    }
    assert_eq!(
        head.headers()["content-length"].to_str().unwrap(),
        get_len.to_string()
    );
    assert!(head.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn progressive_sources_and_png_sources_render() {
    let node = TestNode::start().await;
    let (status, _, body) = node.fetch("/i/demo/dune.webp?w=300&h=300").await;
    assert_eq!(status, 200);
    assert_eq!(dimensions(&body), (300, 300));
    let (status, _, body) = node.fetch("/i/demo/arc-colors.avif?w=100").await;
    assert_eq!(status, 200);
    assert_eq!(dimensions(&body), (100, 56));
}

#[tokio::test]
async fn the_bare_form_answers_only_on_cdn_hosts() {
    let node = TestNode::start_with("[delivery]\ncdn_hosts = [\"img.example.com\"]\n").await;
    let on_cdn = node
        .get_with("/demo/ladybird.webp?w=64", &[("host", "img.example.com")])
        .await;
    assert_eq!(on_cdn.status(), 200);
    assert_eq!(dimensions(&on_cdn.bytes().await.unwrap()), (64, 40));
    let elsewhere = node.get("/demo/ladybird.webp?w=64").await;
    assert_eq!(elsewhere.status(), 404);
}

/// Sum of absolute horizontal and vertical neighbour differences, per pixel.
fn edge_energy(img: &image::RgbImage) -> f64 {
    let (w, h) = img.dimensions();
    let mut sum = 0u64;
    for y in 0..h - 1 {
        for x in 0..w - 1 {
            let p = img.get_pixel(x, y)[1] as i32;
            sum += (p - img.get_pixel(x + 1, y)[1] as i32).unsigned_abs() as u64;
            sum += (p - img.get_pixel(x, y + 1)[1] as i32).unsigned_abs() as u64;
        }
    }
    sum as f64 / f64::from(w * h)
}
