//! Abuse resistance, each test an attack reproduced against a real node: quota burning by
//! new variants, CPU amplification, existence and visibility leaks of private images, and
//! what one tenant could learn or break of another's cached variants.

use reqwest::Method as M;

use crate::harness::{TestNode, fixture};

/// Two tenants upload the same bytes: neither learns from a cache hit that the other serves
/// them at a given size, and one tenant's delete purges nothing of the other's.
#[tokio::test]
async fn variants_of_the_same_bytes_are_not_shared_between_tenants() {
    let node = TestNode::start_with("[demo]\nseed = false\n").await;
    let alpha = node.account_key("alpha", "read,write").await;
    let bravo = node.account_key("bravo", "read,write").await;
    let bytes = fixture("photos/ladybird.jpg");
    let (s, _) = node.upload(&alpha, bytes.clone(), "p/bug.jpg").await;
    assert_eq!(s, 201);
    let (s, up) = node.upload(&bravo, bytes, "q/bug.jpg").await;
    assert_eq!(s, 201);
    let bravo_id = up["id"].as_str().unwrap().to_string();

    let cache_of = |res: &reqwest::Response| res.headers()["x-cache"].to_str().unwrap().to_string();
    let a = node.get("/i/alpha/p/bug.webp?w=123").await;
    assert_eq!((a.status().as_u16(), cache_of(&a)), (200, "MISS".into()));
    // Before the fix this was a HIT: bravo learnt that alpha serves these bytes at 123 px.
    let b = node.get("/i/bravo/q/bug.webp?w=123").await;
    assert_eq!((b.status().as_u16(), cache_of(&b)), (200, "MISS".into()));
    assert_ne!(a.headers()["etag"], b.headers()["etag"]);

    // bravo deletes its image: alpha's variant is still cached.
    let (s, _, body) = node
        .api(
            M::DELETE,
            &format!("/api/v1/images/{bravo_id}"),
            &bravo,
            None,
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let a = node.get("/i/alpha/p/bug.webp?w=123").await;
    assert_eq!(
        (a.status().as_u16(), cache_of(&a)),
        (200, "HIT-MEMORY".into())
    );
    assert_eq!(node.get("/i/bravo/q/bug.webp?w=123").await.status(), 404);
}

/// A node started with `extra` config whose account `acme` holds `bug.jpg` (a real photo),
/// and a read/write key of that account.
async fn with_photo(extra: &str) -> (TestNode, String) {
    let node = TestNode::start_with(&format!("[demo]\nseed = false\n{extra}")).await;
    let key = node.account_key("acme", "read,write").await;
    let (s, body) = node
        .upload(&key, fixture("photos/ladybird.jpg"), "bug.jpg")
        .await;
    assert_eq!(s, 201, "{body}");
    (node, key)
}

fn cache_of(res: &reqwest::Response) -> String {
    res.headers()["x-cache"].to_str().unwrap().to_string()
}

/// This month's transformations of `account`, as the usage API reports them.
async fn transformations(node: &TestNode, key: &str) -> u64 {
    let (s, _, usage) = node.api(M::GET, "/api/v1/usage", key, None).await;
    assert_eq!(s, 200, "{usage}");
    usage["current_period"]["transformations"]
        .as_u64()
        .unwrap_or_else(|| panic!("no transformations in {usage}"))
}

/// A 30-frame 16x16 GIF made here (each frame another grey), infinite loop.
fn thirty_frame_gif() -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = gif::Encoder::new(&mut out, 16, 16, &[]).unwrap();
        encoder.set_repeat(gif::Repeat::Infinite).unwrap();
        for n in 0..30u8 {
            let mut rgba = vec![n * 8; 16 * 16 * 4];
            rgba.chunks_exact_mut(4).for_each(|p| p[3] = 255);
            let mut frame = gif::Frame::from_rgba_speed(16, 16, &mut rgba, 10);
            frame.delay = 5;
            encoder.write_frame(&frame).unwrap();
        }
    }
    out
}

/// An animation is priced by its frames in the per-client render budget (one render per ten
/// frames): a client cannot buy a hundred frames of work for the price of one still.
#[tokio::test]
async fn animated_renders_cost_the_client_budget_by_their_frames() {
    let (node, key) =
        with_photo("[delivery]\nclient_renders_per_minute = 4\nclient_render_burst = 4\n").await;
    let (s, body) = node.upload(&key, thirty_frame_gif(), "anim.gif").await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["frame_count"], 30, "{body}");
    assert_eq!(body["has_alpha"], false, "{body}");
    // 30 frames kept animated: 3 of the 4.
    let res = node.get("/i/acme/anim.webp?w=10").await;
    assert_eq!(res.status(), 200);
    // Another animated size does not fit in what is left...
    let refused = node.get("/i/acme/anim.gif?w=11").await;
    assert_eq!(refused.status(), 429);
    // ...one frame (or a still) does: it costs one.
    let res = node.get("/i/acme/anim.png?w=12").await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        node.metric(
            "imgnode_delivery_renders_refused_total",
            &[("budget", "client")]
        )
        .await,
        1.0
    );
}

/// Quota burning: one client making new sizes (`?w=101`, `?w=102`, ...) is refused with 429
/// once over its render budget; refusals are not charged to the tenant, cache hits are never
/// refused, and another client address still gets its renders.
#[tokio::test]
async fn a_client_over_its_render_budget_gets_429_and_the_tenant_pays_nothing_for_it() {
    let (node, key) =
        with_photo("[delivery]\nclient_renders_per_minute = 4\nclient_render_burst = 4\n").await;
    for w in 101..105 {
        let res = node.get(&format!("/i/acme/bug.webp?w={w}")).await;
        assert_eq!(
            (res.status().as_u16(), cache_of(&res)),
            (200, "MISS".into())
        );
    }
    let before = transformations(&node, &key).await;
    assert_eq!(before, 4);
    let refused = node.get("/i/acme/bug.webp?w=105").await;
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(refused.headers()["cache-control"], "no-store");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "RATE_LIMITED", "{body}");
    // Hits are not renders.
    let hit = node.get("/i/acme/bug.webp?w=101").await;
    assert_eq!(
        (hit.status().as_u16(), cache_of(&hit)),
        (200, "HIT-MEMORY".into())
    );
    assert_eq!(
        transformations(&node, &key).await,
        before,
        "refusals are free"
    );
    assert_eq!(
        node.metric(
            "imgnode_delivery_renders_refused_total",
            &[("budget", "client")]
        )
        .await,
        1.0
    );
    // Another address (127.0.0.2 is loopback too) has its own budget.
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let res = other
        .get(format!("{}/i/acme/bug.webp?w=105", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// Anyone can ask one image for 1 000 sizes: past the hourly cap of new variants per image,
/// unsigned new sizes are refused with 429 while existing ones, signed URLs and other
/// images are still served.
#[tokio::test]
async fn new_variants_of_one_image_are_capped_per_hour() {
    let node = TestNode::start_with(
        "[demo]\nseed = false\n[delivery]\nclient_renders_per_minute = 0\nimage_variants_per_hour = 3\n",
    )
    .await;
    let key = node.account_key("acme", "read,write").await;
    for (bytes, path) in [
        (fixture("photos/ladybird.jpg"), "bug.jpg"),
        (fixture("photos/dune.jpg"), "dune.jpg"),
    ] {
        let (s, body) = node.upload(&key, bytes, path).await;
        assert_eq!(s, 201, "{body}");
    }
    for w in 101..104 {
        assert_eq!(
            node.get(&format!("/i/acme/bug.webp?w={w}")).await.status(),
            200
        );
    }
    let refused = node.get("/i/acme/bug.webp?w=104").await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(
        node.get("/i/acme/bug.webp?w=102").await.status(),
        200,
        "cached"
    );
    assert_eq!(
        node.get("/i/acme/dune.webp?w=104").await.status(),
        200,
        "another image"
    );
    let signed = crate::harness::sign(
        &node.app.state.signing,
        "acme/bug.webp?w=104",
        imgnode::store::now_unix() + 600,
    );
    assert_eq!(
        node.get(&signed).await.status(),
        200,
        "signed URLs are the tenant's"
    );
    assert_eq!(
        node.metric(
            "imgnode_delivery_renders_refused_total",
            &[("budget", "image")]
        )
        .await,
        1.0
    );
}

/// The account's size policy: widths snap up to the allowed ones (one variant for many
/// URLs), or are refused; `max_quality` bounds `q`.
#[tokio::test]
async fn an_account_size_policy_snaps_or_refuses_widths_and_bounds_quality() {
    let (node, key) = with_photo("").await;
    let (s, _, got) = node
        .api(
            M::PUT,
            "/api/v1/settings",
            &key,
            Some(serde_json::json!({"allowed_widths": [200, 100, 200], "max_quality": 60})),
        )
        .await;
    assert_eq!(s, 200, "{got}");
    assert_eq!(
        got["settings"]["allowed_widths"],
        serde_json::json!([100, 200])
    );
    assert_eq!(got["settings"]["widths_policy"], "snap");
    assert_eq!(got["settings"]["max_quality"], 60);

    let snapped = node.get("/i/acme/bug.jpg?w=150&q=95").await;
    assert_eq!(snapped.status(), 200);
    let etag = snapped.headers()["etag"].clone();
    let bytes = snapped.bytes().await.unwrap();
    assert_eq!(crate::harness::dimensions(&bytes).0, 200);
    // The same variant as the allowed width at the bounded quality.
    let direct = node.get("/i/acme/bug.jpg?w=200&q=60").await;
    assert_eq!(
        (direct.headers()["etag"].clone(), cache_of(&direct)),
        (etag, "HIT-MEMORY".into())
    );

    let (s, _, _) = node
        .api(
            M::PUT,
            "/api/v1/settings",
            &key,
            Some(serde_json::json!({"widths_policy": "refuse", "max_quality": null})),
        )
        .await;
    assert_eq!(s, 200);
    let (code, h, body) = node.fetch("/i/acme/bug.jpg?w=150").await;
    crate::harness::assert_json_error(code, &h, &body, 400, "VALIDATION_ERROR");
    assert_eq!(node.get("/i/acme/bug.jpg?w=100").await.status(), 200);
    let (s, _, bad) = node
        .api(
            M::PUT,
            "/api/v1/settings",
            &key,
            Some(serde_json::json!({"allowed_widths": [0]})),
        )
        .await;
    assert_eq!(s, 400, "{bad}");
}

/// CPU amplification: an unsigned `w=2828&h=2828&fit=fill&q=100` AVIF is rendered within the
/// unsigned budget (fewer pixels, bounded quality); `format=auto` over the budget answers
/// WebP; a signed URL gets what it asks.
#[tokio::test]
async fn unsigned_avif_is_bounded_in_pixels_and_quality() {
    // A small budget keeps the test's encodes cheap; the rule is the same at 2 MP.
    let (node, _) =
        with_photo("[delivery]\nunsigned_avif_max_pixels = 40000\nunsigned_max_pixels = 90000\nunsigned_max_quality = 50\navif_background = false\n")
            .await;
    let (code, h, body) = node
        .fetch("/i/acme/bug.avif?w=2828&h=2828&fit=fill&q=100")
        .await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(h["content-type"], "image/avif");
    assert_eq!(crate::harness::dimensions(&body), (200, 200));
    // The bounded request is the same variant as asking for the bounded size directly.
    let direct = node.get("/i/acme/bug.avif?w=200&h=200&fit=fill&q=50").await;
    assert_eq!(cache_of(&direct), "HIT-MEMORY");
    // Every format has its (larger) budget: 600x600 is 360 000 pixels, over 90 000.
    let (code, h, body) = node.fetch("/i/acme/bug.webp?w=600&h=600&fit=fill").await;
    assert_eq!(
        (code, &h["content-type"]),
        (200, &"image/webp".parse().unwrap())
    );
    assert_eq!(crate::harness::dimensions(&body), (300, 300));

    let auto = node
        .get_with(
            "/i/acme/bug.jpg?w=400&format=auto",
            &[("accept", "image/avif,image/webp,*/*")],
        )
        .await;
    assert_eq!(auto.status(), 200);
    assert_eq!(auto.headers()["content-type"], "image/webp");
    assert_eq!(auto.headers()["vary"], "Accept");
    let auto = node
        .get_with(
            "/i/acme/bug.jpg?w=150&format=auto",
            &[("accept", "image/avif,image/webp,*/*")],
        )
        .await;
    assert_eq!(
        auto.headers()["content-type"],
        "image/avif",
        "within the budget"
    );

    let signed = crate::harness::sign(
        &node.app.state.signing,
        "acme/bug.avif?w=300&h=300&fit=fill",
        imgnode::store::now_unix() + 600,
    );
    let (code, _, body) = node.fetch(&signed).await;
    assert_eq!(code, 200);
    assert_eq!(crate::harness::dimensions(&body), (300, 300));
}

/// With its one AVIF lane taken, a `format=auto` request that would encode AVIF answers WebP
/// at once instead of queueing behind it, and its background AVIF encode is dropped, not
/// queued behind the lane.
#[tokio::test]
async fn format_auto_answers_webp_while_the_avif_lane_is_busy() {
    let (node, _) = with_photo("[cpu]\navif_concurrency = 1\n").await;
    // A signed, large AVIF holds the lane for a while.
    let slow = crate::harness::sign(
        &node.app.state.signing,
        "acme/bug.avif?w=640",
        imgnode::store::now_unix() + 600,
    );
    let client = node.client.clone();
    let url = format!("{}{slow}", node.base);
    let holder = tokio::spawn(async move { client.get(url).send().await.unwrap().status() });
    // The lane is taken before the job reaches a CPU thread: once one runs, it is held.
    crate::harness::wait_for_metric(
        &node.ops,
        "imgnode_cpu_in_flight",
        &[],
        1.0,
        std::time::Duration::from_secs(30),
        "the AVIF render starting",
    )
    .await;
    let auto = node
        .get_with(
            "/i/acme/bug.jpg?w=120&format=auto",
            &[("accept", "image/avif,image/webp")],
        )
        .await;
    assert_eq!(auto.status(), 200);
    assert_eq!(auto.headers()["content-type"], "image/webp");
    // A stand-in: a CDN keeps it five minutes, not a year, under `Vary: Accept`.
    assert_eq!(auto.headers()["cache-control"], "public, max-age=300");
    assert_eq!(auto.headers()["vary"], "Accept");
    assert_eq!(
        node.metric("imgnode_delivery_avif_fallbacks_total", &[])
            .await,
        1.0
    );
    // The pool was busy: the background encode is dropped (counted by its task).
    crate::harness::wait_for_metric(
        &node.ops,
        "imgnode_delivery_avif_background_total",
        &[("outcome", "dropped")],
        1.0,
        std::time::Duration::from_secs(30),
        "the background AVIF dropped",
    )
    .await;
    assert_eq!(holder.await.unwrap(), 200);
    // Nothing was queued: the lane's one job was the holder's.
    assert_eq!(
        node.metric(
            "imgnode_delivery_avif_background_total",
            &[("outcome", "stored")]
        )
        .await,
        0.0
    );
}

/// Bytes held as private, uploaded again to a new path as explicitly public, must not become
/// reachable unsigned: the upload is refused and nothing changes.
#[tokio::test]
async fn an_upload_cannot_change_the_visibility_of_bytes_already_held() {
    let node = TestNode::start_with("[demo]\nseed = false\n").await;
    let key = node.account_key("acme", "read,write").await;
    let bytes = fixture("photos/ladybird.jpg");
    let upload = |path: &'static str, visibility: Option<&'static str>| {
        let fields: Vec<_> = visibility.map(|v| ("visibility", v)).into_iter().collect();
        let (node, key, bytes) = (&node, &key, bytes.clone());
        async move { node.upload_with(key, bytes, path, &fields).await }
    };
    let (s, body) = upload("secret.jpg", Some("private")).await;
    assert_eq!((s, body["visibility"].as_str()), (201, Some("private")));
    let (s, body) = upload("open.jpg", Some("public")).await;
    assert_eq!(s, 409, "{body}");
    assert_eq!(body["error"]["code"], "CONFLICT");
    assert_eq!(node.get("/i/acme/open.webp?w=50").await.status(), 404);
    // No visibility given: the path joins the image, which stays private.
    let (s, body) = upload("alias.jpg", None).await;
    assert_eq!(
        (s, body["visibility"].as_str()),
        (201, Some("private")),
        "{body}"
    );
    assert_eq!(node.get("/i/acme/alias.webp?w=50").await.status(), 404);
}

/// Uploading `amb/a.jpg` must not delete the different image stored at `amb/a.png` (URLs
/// look images up by the name without extension): 409 unless `overwrite=true`.
#[tokio::test]
async fn an_upload_under_a_taken_name_deletes_nothing_without_overwrite() {
    let node = TestNode::start_with("[demo]\nseed = false\n").await;
    let key = node.account_key("acme", "read,write").await;
    let (s, png) = node
        .upload(&key, fixture("formats/png_rgba.png"), "amb/a.png")
        .await;
    assert_eq!(s, 201, "{png}");
    let png_id = png["id"].as_str().unwrap().to_string();
    let (s, refused) = node
        .upload(&key, fixture("photos/ladybird.jpg"), "amb/a.jpg")
        .await;
    assert_eq!(s, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "CONFLICT");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("amb/a.png"),
        "{refused}"
    );
    let (s, _, _) = node
        .api(M::GET, &format!("/api/v1/images/{png_id}"), &key, None)
        .await;
    assert_eq!(s, 200, "the PNG is still there");
    let (code, h, _) = node.fetch("/i/acme/amb/a.png").await;
    assert_eq!(
        (code, h["content-type"].to_str().unwrap()),
        (200, "image/png")
    );

    let (s, body) = node
        .upload_with(
            &key,
            fixture("photos/ladybird.jpg"),
            "amb/a.jpg",
            &[("overwrite", "true")],
        )
        .await;
    assert_eq!(s, 201, "{body}");
    let (s, _, _) = node
        .api(M::GET, &format!("/api/v1/images/{png_id}"), &key, None)
        .await;
    assert_eq!(s, 404, "replaced on request");
}
