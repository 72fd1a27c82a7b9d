//! Plans, quotas, usage metering, rate limits, the audit log and retention, export and
//! erasure, over HTTP against real nodes.

use std::io::Read;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{OPERATOR, TestNode, assert_json_error, dimensions, dir_contains, fixture};

const PHOTO: &str = "photos/ladybird.jpg";

/// A plan small enough to reach every limit in a test.
const TINY: &str = "[plans.tiny]\nmax_uploads_per_month = 2\nmax_storage_bytes = 120000\n\
max_transformations_per_month = 3\nmax_api_requests_per_month = 1000\nrequests_per_minute = 1000\n\
[plans.slow]\nrequests_per_minute = 3\n[demo]\nseed = false\n";

/// `POST /api/v1/images/{id}/signed-url` with the defaults; asserts a 200.
async fn signed_url_of(node: &TestNode, key: &str, id: &str) -> Value {
    let (status, _, signed) = node
        .api(
            Method::POST,
            &format!("/api/v1/images/{id}/signed-url"),
            key,
            None,
        )
        .await;
    assert_eq!(status, 200, "{signed}");
    signed
}

async fn set_plan(node: &TestNode, account: &str, plan: &str) {
    let (status, body) = node
        .ops_call(
            Method::PATCH,
            &format!("/admin/v1/accounts/{account}"),
            Some(json!({"plan": plan})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["plan"], plan);
}

#[tokio::test]
async fn quotas_stop_uploads_and_renders_but_not_cached_variants() {
    let node = TestNode::start_operated(TINY).await;
    let key = node.account_key("acme", "read,write").await;
    set_plan(&node, "acme", "tiny").await;
    let (status, err) = node
        .ops_call(
            Method::PATCH,
            "/admin/v1/accounts/acme",
            Some(json!({"plan": "platinum"})),
        )
        .await;
    assert_eq!(status, 400, "{err}");

    // Storage: the 70 KB photo fits 120 000 bytes once, not twice.
    let (status, first) = node.upload(&key, fixture(PHOTO), "a.jpg").await;
    assert_eq!(status, 201, "{first}");
    let (status, err) = node.upload(&key, fixture("photos/dune.jpg"), "b.jpg").await;
    assert_eq!(status, 413, "{err}");
    assert_eq!(err["error"]["code"], "PAYLOAD_TOO_LARGE");
    // Uploads: the second upload counts (refused ones do not), the third is over.
    let small = fixture("formats/png_palette.png");
    let (status, body) = node.upload(&key, small.clone(), "c.png").await;
    assert_eq!(status, 201, "{body}");
    let (status, err) = node.upload(&key, small, "d.png").await;
    assert_eq!(status, 429, "{err}");
    assert_eq!(err["error"]["code"], "QUOTA_EXCEEDED");

    // Transformations: three renders, then 429 for a new one while cached ones still answer.
    let mut delivered = 0u64;
    for w in [100, 110, 120] {
        let (code, _, body) = node.fetch(&format!("/i/acme/a.webp?w={w}")).await;
        assert_eq!(code, 200);
        delivered += body.len() as u64;
    }
    let (code, headers, body) = node.fetch("/i/acme/a.webp?w=130").await;
    assert_json_error(code, &headers, &body, 429, "QUOTA_EXCEEDED");
    let (code, headers, body) = node.fetch("/i/acme/a.webp?w=100").await;
    assert_eq!(
        (code, &headers["x-cache"]),
        (200, &"HIT-MEMORY".parse().unwrap())
    );
    delivered += body.len() as u64;
    // The untouched original is not a render either.
    let (code, _, body) = node.fetch("/i/acme/a.jpg").await;
    assert_eq!(code, 200);
    delivered += body.len() as u64;

    // Usage: exact, before any flush (memory counts are included).
    let (status, _, usage) = node.api(Method::GET, "/api/v1/usage", &key, None).await;
    assert_eq!(status, 200, "{usage}");
    // The official SDK's model reads it (every required field, the right types).
    let typed: img_src::models::UsageResponse = serde_json::from_value(usage.clone()).unwrap();
    assert_eq!(typed.current_period.transformations, 3);
    assert_eq!(usage["plan"], "tiny");
    assert_eq!(usage["plan_status"], "active");
    assert_eq!(usage["subscription_ends_at"], Value::Null);
    let limits = &usage["plan_limits"];
    assert_eq!(limits["max_uploads_per_month"], 2);
    assert_eq!(
        limits["max_bandwidth_per_month"],
        Value::Null,
        "absent = unlimited"
    );
    let period = &usage["current_period"];
    assert_eq!(period["uploads"], 2);
    assert_eq!(period["transformations"], 3);
    assert_eq!(period["bandwidth_bytes"], delivered);
    // Five API calls so far (two admitted uploads, two refused ones, this one): all count.
    assert_eq!(period["api_requests"], 5);
    assert_eq!(usage["total_images"], 2);
    assert!(usage["storage_used_mb"].is_f64());
    let period_name = period["period"].as_str().unwrap().to_string();
    assert_eq!(period_name.len(), 7);
    assert!(period["period_start"].as_i64() < period["period_end"].as_i64());

    // The counts survive a restart (flushed at shutdown) and add up after it.
    let dir = node.stop().await;
    let node = TestNode::start_in(dir, TINY).await;
    let (_, _, usage) = node.api(Method::GET, "/api/v1/usage", &key, None).await;
    assert_eq!(usage["current_period"]["transformations"], 3);
    assert_eq!(usage["current_period"]["bandwidth_bytes"], delivered);
    assert_eq!(usage["current_period"]["api_requests"], 6);

    // `history` (ours): the months on record before this one, oldest first, then this one.
    let earlier = imgnode::store::UsageCounts {
        uploads: 7,
        transformations: 40,
        ..Default::default()
    };
    for past in ["2019-03", "2019-01"] {
        node.app
            .state
            .store
            .add_usage("acme", past, &earlier)
            .await
            .unwrap();
    }
    let (_, _, usage) = node.api(Method::GET, "/api/v1/usage", &key, None).await;
    let history = usage["history"].as_array().unwrap();
    let periods: Vec<&str> = history
        .iter()
        .map(|m| m["period"].as_str().unwrap())
        .collect();
    assert_eq!(
        periods,
        ["2019-01", "2019-03", period_name.as_str()],
        "{usage}"
    );
    assert_eq!(history[0]["uploads"], 7);
    assert_eq!(history[1]["transformations"], 40);
    let now = &history[2];
    for field in [
        "uploads",
        "bandwidth_bytes",
        "api_requests",
        "transformations",
    ] {
        assert_eq!(now[field], usage["current_period"][field], "{field}");
    }
    node.stop().await;
}

#[tokio::test]
async fn the_bandwidth_quota_stops_originals_variants_and_cache_hits() {
    let plan = "[plans.metered]\nmax_bandwidth_per_month = 30000\nrequests_per_minute = 1000\n[demo]\nseed = false\n";
    let node = TestNode::start_operated(plan).await;
    let key = node.account_key("acme", "read,write").await;
    set_plan(&node, "acme", "metered").await;
    let (status, body) = node.upload(&key, fixture(PHOTO), "a.jpg").await;
    assert_eq!(status, 201, "{body}");
    // A variant (rendered, then from the cache) until the 30 000 bytes are used up; the
    // response that crosses the limit is still served whole.
    let mut delivered = 0u64;
    let mut served = 0;
    while delivered < 30_000 {
        let (code, _, body) = node.fetch("/i/acme/a.webp?w=200").await;
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        delivered += body.len() as u64;
        served += 1;
        assert!(served < 1000, "the variant is not empty");
    }
    assert!(served >= 2, "a cache hit was served while under the quota");
    // Then every delivery is refused: the cached variant, a new one, the original.
    for target in [
        "/i/acme/a.webp?w=200",
        "/i/acme/a.webp?w=150",
        "/i/acme/a.jpg",
    ] {
        let (code, headers, body) = node.fetch(target).await;
        assert_json_error(code, &headers, &body, 429, "QUOTA_EXCEEDED");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("bandwidth"),
            "{v}"
        );
    }
    // Refusals carry no image bytes: the meter has not moved.
    let (_, _, usage) = node.api(Method::GET, "/api/v1/usage", &key, None).await;
    assert_eq!(usage["current_period"]["bandwidth_bytes"], delivered);
    assert_eq!(usage["plan_limits"]["max_bandwidth_per_month"], 30000);
    // Another account is not affected.
    node.add_image(
        "other",
        "a.jpg",
        &fixture(PHOTO),
        imgnode::store::Visibility::Public,
    )
    .await;
    let (code, _, _) = node.fetch("/i/other/a.webp?w=200").await;
    assert_eq!(code, 200);
    node.stop().await;
}

#[tokio::test]
async fn rate_limits_by_plan_and_for_failed_authentication() {
    let node = TestNode::start_operated(TINY).await;
    let key = node.account_key("acme", "read,write").await;
    set_plan(&node, "acme", "slow").await;
    for remaining in [2, 1, 0] {
        let (status, headers, _) = node.api(Method::GET, "/api/v1/settings", &key, None).await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-ratelimit-limit"], "3");
        assert_eq!(
            headers["x-ratelimit-remaining"],
            remaining.to_string().as_str()
        );
        let reset: i64 = headers["x-ratelimit-reset"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(reset >= imgnode::store::now_unix());
    }
    let (status, headers, body) = node.api(Method::GET, "/api/v1/settings", &key, None).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    // Another key of another account is not affected.
    let other = node.account_key("bravo", "read").await;
    assert_eq!(
        node.api(Method::GET, "/api/v1/settings", &other, None)
            .await
            .0,
        200
    );

    // Guessing keys: 401s with the client address's numbers, then 429s.
    for _ in 0..20 {
        let (status, headers, _) = node
            .api(Method::GET, "/api/v1/settings", "imgsrc_guess", None)
            .await;
        assert_eq!(status, 401);
        assert!(headers.contains_key("x-ratelimit-remaining"));
    }
    let (status, headers, body) = node
        .api(Method::GET, "/api/v1/settings", "imgsrc_guess", None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("RATE_LIMITED"))
    );
    assert!(headers.contains_key("retry-after"));
    // From then on the address is turned away for every bad key; a valid key still works
    // (see lockout.rs).
    assert_eq!(
        node.api(Method::GET, "/api/v1/settings", "imgsrc_guess", None)
            .await
            .0,
        429
    );
    assert_eq!(
        node.api(Method::GET, "/api/v1/settings", &other, None)
            .await
            .0,
        200
    );
    node.stop().await;
}

#[tokio::test]
async fn mutating_calls_are_audited_and_retention_removes_old_records() {
    let node = TestNode::start_operated("[demo]\nseed = false\n").await;
    let (status, created) = node
        .ops_call(
            Method::POST,
            "/admin/v1/accounts",
            Some(json!({"name": "acme", "plan": "pro"})),
        )
        .await;
    assert_eq!(status, 201);
    let key = created["api_key"]["key"].as_str().unwrap().to_string();
    let key_id = created["api_key"]["id"].as_str().unwrap().to_string();
    let (status, _, preset) = node
        .api(
            Method::POST,
            "/api/v1/settings/presets",
            &key,
            Some(json!({"name": "t", "params": {"w": 10}})),
        )
        .await;
    assert_eq!(status, 201);
    // A refused mutation is recorded with its outcome; reads are not recorded.
    let (status, _, _) = node
        .api(
            Method::DELETE,
            "/api/v1/images/0000000000000000",
            &key,
            None,
        )
        .await;
    assert_eq!(status, 404);
    node.api(Method::GET, "/api/v1/settings/presets", &key, None)
        .await;
    node.ops_call(Method::POST, "/admin/v1/accounts/acme/suspend", None)
        .await;

    let (status, audit) = node
        .ops_call(Method::GET, "/admin/v1/audit?account=acme", None)
        .await;
    assert_eq!(status, 200, "{audit}");
    let records = audit["records"].as_array().unwrap();
    let actions: Vec<(&str, &str, i64)> = records
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["actor"].as_str().unwrap(),
                r["outcome"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("admin_accounts_status", "operator", 200),
            ("api_images_delete", key_id.as_str(), 404),
            ("api_presets_create", key_id.as_str(), 201),
        ],
        "newest first; the account's creation has no account yet"
    );
    assert!(records.iter().all(|r| r["client_ip"] == "127.0.0.1"));
    assert_eq!(records[2]["account"], "acme");
    let (_, created_only) = node
        .ops_call(
            Method::GET,
            "/admin/v1/audit?action=admin_accounts_create",
            None,
        )
        .await;
    assert_eq!(created_only["total"], 1);
    let _ = preset;

    // Retention: a 3-year-old audit record and a 2020 usage row go; today's stay.
    let state = &node.app.state;
    state
        .store
        .append_audit(&imgnode::store::AuditRecord {
            id: "0000000000000001-old".into(),
            at: imgnode::store::now_unix() - 3 * 365 * 86_400,
            account: Some("acme".into()),
            actor: "operator".into(),
            action: "old".into(),
            target: None,
            client_ip: None,
            outcome: 200,
        })
        .await
        .unwrap();
    let counts = imgnode::store::UsageCounts {
        uploads: 1,
        ..Default::default()
    };
    state
        .store
        .add_usage("acme", "2020-01", &counts)
        .await
        .unwrap();
    let today = imgnode::usage::period_of(imgnode::store::now_unix());
    state
        .store
        .add_usage("acme", &today, &counts)
        .await
        .unwrap();
    let (usage_removed, audit_removed) = imgnode::app::apply_retention(state).await.unwrap();
    assert_eq!((usage_removed, audit_removed), (1, 1));
    assert_eq!(state.store.usage("acme", &today).await.unwrap().uploads, 1);
    let (_, audit) = node
        .ops_call(Method::GET, "/admin/v1/audit?account=acme", None)
        .await;
    assert_eq!(audit["total"], 3);
    node.stop().await;
}

#[tokio::test]
async fn export_streams_metadata_and_every_original() {
    let node = TestNode::start_operated("[demo]\nseed = false\n").await;
    let key = node.account_key("acme", "read,write,account").await;
    let photo = fixture(PHOTO);
    let png = fixture("formats/png_rgba.png");
    node.upload(&key, photo.clone(), "trips/a.jpg").await;
    node.upload(&key, photo.clone(), "copies/a.jpg").await;
    let (_, second) = node.upload(&key, png.clone(), "b.png").await;
    node.api(
        Method::POST,
        "/api/v1/settings/presets",
        &key,
        Some(json!({"name": "t", "params": {"w": 10}})),
    )
    .await;

    for (base, path, token) in [
        (&node.base, "/api/v1/account/export", key.as_str()),
        (&node.ops, "/admin/v1/accounts/acme/export", OPERATOR),
    ] {
        let res = node
            .client
            .get(format!("{base}{path}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["content-type"], "application/x-tar");
        let archive = res.bytes().await.unwrap();
        let mut entries = std::collections::BTreeMap::new();
        let mut reader = tar::Archive::new(archive.as_ref());
        for entry in reader.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            entries.insert(name, data);
        }
        let doc: Value = serde_json::from_slice(&entries["account.json"]).unwrap();
        assert_eq!(doc["account"]["name"], "acme");
        assert_eq!(doc["presets"][0]["name"], "t");
        assert!(doc["api_keys"][0]["key_prefix"].is_string());
        assert!(
            !String::from_utf8_lossy(&entries["account.json"]).contains(&key[8..]),
            "no secret in the export"
        );
        assert_eq!(doc["image_count"], 2);
        let images: Vec<Value> = entries
            .iter()
            .filter(|(name, _)| name.starts_with("images/"))
            .map(|(_, data)| serde_json::from_slice(data).unwrap())
            .collect();
        assert_eq!(images.len(), 2, "one entry per image, however many paths");
        for image in &images {
            let entry = image["archive_entry"].as_str().unwrap();
            let expected = if image["id"] == second["id"] {
                &png
            } else {
                &photo
            };
            assert_eq!(&entries[entry], expected, "{entry}");
        }
        let photo_meta = images.iter().find(|i| i["id"] != second["id"]).unwrap();
        assert_eq!(photo_meta["paths"], json!(["copies/a.jpg", "trips/a.jpg"]));
        assert_eq!(entries.len(), 5);
    }
    node.stop().await;
}

#[tokio::test]
async fn erasure_leaves_nothing_servable_or_readable() {
    let node = TestNode::start_operated("[demo]\nseed = false\n").await;
    let key = node.account_key("acme", "read,write,account").await;
    let other = node.account_key("bravo", "read,write").await;
    let photo = fixture(PHOTO);
    let png = fixture("formats/png_rgba.png");
    let (_, up) = node.upload(&key, photo.clone(), "a.jpg").await;
    let up_hash = up["hash"].as_str().unwrap().to_string();
    node.upload(&key, png.clone(), "b.png").await;
    // Bravo shares the PNG's bytes: they must survive acme's erasure.
    node.upload(&other, png.clone(), "shared.png").await;
    node.api(
        Method::POST,
        "/api/v1/settings/presets",
        &key,
        Some(json!({"name": "t", "params": {"w": 10}})),
    )
    .await;
    let (_, _, variant) = node.fetch("/i/acme/a.webp?w=300").await;
    let (code, _, _) = node.fetch("/i/acme/b.webp?w=50").await;
    assert_eq!(code, 200);
    // A signed URL issued for a private image is kept for `active_signed_url`: erased too.
    let (_, _, listed) = node.api(Method::GET, "/api/v1/images", &key, None).await;
    let id = listed["images"][0]["id"].as_str().unwrap().to_string();
    let signed = signed_url_of(&node, &key, &id).await;
    let signature = signed["signed_url"]
        .as_str()
        .unwrap()
        .rsplit("sig=")
        .next()
        .unwrap()
        .to_string();
    let data_dir = node.data_dir();
    let photo_sample = &photo[photo.len() / 2..photo.len() / 2 + 64];
    let variant_sample = variant[variant.len() / 2..variant.len() / 2 + 32].to_vec();
    // The original is on disk before, sealed: never in plaintext.
    let hash = up_hash.clone();
    let object = node.object_of("acme", &hash).await;
    assert!(data_dir.join("originals").join(&object).is_file());
    assert!(!dir_contains(&data_dir, photo_sample));

    let (status, _, err) = node
        .api(
            Method::DELETE,
            "/api/v1/account",
            &key,
            Some(json!({"confirm": "acm"})),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    let (status, _, done) = node
        .api(
            Method::DELETE,
            "/api/v1/account",
            &key,
            Some(json!({"confirm": "acme"})),
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["images_deleted"], 2);
    // Both of acme's sealed objects (bravo's copy of the PNG is its own object).
    assert_eq!(done["originals_deleted"], 2);
    assert!(!data_dir.join("originals").join(&object).exists());

    for url in [
        "/i/acme/a.jpg",
        "/i/acme/a.webp?w=300",
        "/i/acme/b.webp?w=50",
        "/i/acme/b.png",
    ] {
        assert_eq!(node.fetch(url).await.0, 404, "{url}");
    }
    assert_eq!(
        node.api(Method::GET, "/api/v1/settings", &key, None)
            .await
            .0,
        401
    );
    let (status, _) = node
        .ops_call(Method::GET, "/admin/v1/accounts/acme", None)
        .await;
    assert_eq!(status, 404);
    // Bravo's copy of the shared bytes is untouched.
    assert_eq!(node.fetch("/i/bravo/shared.webp?w=50").await.0, 200);
    // No byte of acme's own original or of its variant is readable anywhere on disk.
    let dir = node.stop().await;
    assert!(
        !dir_contains(dir.path(), photo_sample),
        "the original's bytes remain"
    );
    assert!(
        !dir_contains(dir.path(), &variant_sample),
        "a variant's bytes remain"
    );
    assert!(
        !dir_contains(dir.path(), signature.as_bytes()),
        "an issued signed URL remains"
    );
}

#[tokio::test]
async fn an_interrupted_erasure_resumes_at_start_up() {
    let node = TestNode::start_with("[demo]\nseed = false\n").await;
    let key = node.account_key("acme", "read,write").await;
    let (_, up) = node.upload(&key, fixture(PHOTO), "a.jpg").await;
    let hash = up["hash"].as_str().unwrap().to_string();
    let object = node.object_of("acme", &hash).await;
    // What a crash (or a cancelled request) in the middle of an erasure leaves: marked, the
    // metadata and the original's key gone, its object not deleted yet.
    let store = &node.app.state.store;
    store
        .set_account_status("acme", imgnode::store::AccountStatus::Erasing)
        .await
        .unwrap();
    store.delete_account_data("acme").await.unwrap();
    // Nothing revives an account being erased.
    assert!(
        !store
            .set_account_status("acme", imgnode::store::AccountStatus::Active)
            .await
            .unwrap()
    );
    let originals = &node.app.state.originals;
    assert!(originals.origin().object_exists(&object).await.unwrap());
    assert_eq!(originals.object_name("acme", &hash).await.unwrap(), None);
    let dir = node.stop().await;
    let node = TestNode::start_in(dir, "[demo]\nseed = false\n").await;
    let state = &node.app.state;
    assert!(state.store.account("acme").await.unwrap().is_none());
    assert!(
        !state
            .originals
            .origin()
            .object_exists(&object)
            .await
            .unwrap()
    );
    assert_eq!(node.fetch("/i/acme/a.jpg").await.0, 404);
    node.stop().await;
}

#[tokio::test]
async fn suspended_accounts_can_answer_404_on_delivery() {
    let node = TestNode::start_operated("[delivery]\nsuspended_status = 404\n").await;
    node.ops_call(Method::POST, "/admin/v1/accounts/demo/suspend", None)
        .await;
    let (code, headers, body) = node.fetch("/i/demo/ladybird.webp?w=50").await;
    assert_json_error(code, &headers, &body, 404, "NOT_FOUND");
    node.ops_call(Method::POST, "/admin/v1/accounts/demo/resume", None)
        .await;
    assert_eq!(node.fetch("/i/demo/ladybird.webp?w=50").await.0, 200);
    node.stop().await;
}

/// Private images, signed URLs and presets are paid features: the free plan's calls answer
/// 403 naming the plan, a plan's `max_presets` is a 403 too, and what an account made on a
/// higher plan keeps being served after it moves down.
#[tokio::test]
async fn plan_features_gate_new_uses_and_keep_what_exists() {
    let node = TestNode::start_operated("[demo]\nseed = false\n").await;
    let key = node.account_key("acme", "read,write").await;
    let photo = fixture(PHOTO);

    // On pro: a private image, its signed URL, a preset; the 51st preset is refused.
    let (status, body) = node
        .upload_with(
            &key,
            photo.clone(),
            "secret.jpg",
            &[("visibility", "private")],
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let signed = signed_url_of(&node, &key, &id).await;
    let signed_url = signed["signed_url"].as_str().unwrap().to_string();
    let signed_path = &signed_url[signed_url.find("/i/").unwrap()..];
    for n in 0..50 {
        let (status, _, body) = node
            .api(
                Method::POST,
                "/api/v1/settings/presets",
                &key,
                Some(json!({"name": format!("p{n}"), "params": {"w": 20 + n}})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, headers, body) = node
        .api(
            Method::POST,
            "/api/v1/settings/presets",
            &key,
            Some(json!({"name": "p50", "params": {"w": 80}})),
        )
        .await;
    assert_json_error(
        status,
        &headers,
        body.to_string().as_bytes(),
        403,
        "FORBIDDEN",
    );
    assert!(
        body.to_string().contains("pro plan allows at most 50"),
        "{body}"
    );

    // Down to free: every new use is refused, naming the plan.
    set_plan(&node, "acme", "free").await;
    let (status, body) = node
        .upload_with(
            &key,
            fixture("formats/png_rgba.png"),
            "b.png",
            &[("visibility", "private")],
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.to_string()
            .contains("the free plan does not include private images")
    );
    let (status, body) = node
        .upload(&key, fixture("formats/png_rgba.png"), "b.png")
        .await;
    assert_eq!(status, 201, "{body}");
    let public_id = body["id"].as_str().unwrap().to_string();
    let refused = [
        (
            Method::PATCH,
            format!("/api/v1/images/{public_id}/visibility"),
            Some(json!({"visibility": "private"})),
            "private images",
        ),
        (
            Method::POST,
            format!("/api/v1/images/{id}/signed-url"),
            None,
            "signed URLs",
        ),
        (
            Method::POST,
            "/api/v1/settings/presets".to_string(),
            Some(json!({"name": "late", "params": {"w": 10}})),
            "presets",
        ),
    ];
    for (method, path, body, feature) in refused {
        let (status, headers, answer) = node.api(method, &path, &key, body).await;
        assert_json_error(
            status,
            &headers,
            answer.to_string().as_bytes(),
            403,
            "FORBIDDEN",
        );
        let message = answer.to_string();
        assert!(
            message.contains(&format!("the free plan does not include {feature}")),
            "{message}"
        );
    }

    // What exists keeps being served: the private image through its signed URL (and not
    // without it), a preset in a URL.
    let (status, headers, bytes) = node.fetch(signed_path).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "image/jpeg");
    assert_eq!(dimensions(&bytes), (1200, 750));
    let (status, _, _) = node.fetch("/i/acme/secret.jpg").await;
    assert_eq!(status, 404);
    let (status, _, bytes) = node.fetch("/i/acme/b.png?p:p3").await;
    assert_eq!(status, 200);
    assert_eq!(dimensions(&bytes).0, 23);
    // Back on pro, the features return.
    set_plan(&node, "acme", "pro").await;
    let (status, _, _) = node
        .api(
            Method::PATCH,
            &format!("/api/v1/images/{public_id}/visibility"),
            &key,
            Some(json!({"visibility": "private"})),
        )
        .await;
    assert_eq!(status, 200);
}
