//! The official img-src Rust SDK (`img_src` 0.3.2) driven against a real node: every call it
//! makes must be answered in the shape its models deserialize, with img-src's status codes,
//! and every delivery URL the API hands out must serve a real image of the format its
//! extension names.
//!
//! The SDK turns any 2xx into `Ok` without exposing the code, so each successful call is
//! wrapped in [`status_of`], which reads the node's request counter around it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use image::ImageFormat;
use img_src::apis::configuration::Configuration;
use img_src::apis::{Error, images_api, presets_api, settings_api};
use img_src::models::{
    CreatePresetRequest, CreateSignedUrlRequest, ErrorDetail, ErrorResponse, UpdatePresetRequest,
    UpdateSettingsRequest, UpdateVisibilityRequest,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::harness::{OPERATOR, TestNode, assert_json_error, decode, dimensions, fixture};

/// The fixture uploaded through the SDK: a 1200x750 baseline JPEG.
const PHOTO: &str = "photos/ladybird.jpg";
const PHOTO_SIZE: (u32, u32) = (1200, 750);

/// Creates a `pro` account through the operator API and returns its first key.
async fn account(node: &TestNode, name: &str) -> String {
    let res = node
        .client
        .post(format!("{}/admin/v1/accounts", node.ops))
        .bearer_auth(OPERATOR)
        .json(&json!({"name": name, "plan": "pro"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    body["api_key"]["key"].as_str().unwrap().to_string()
}

/// The SDK configured the way its README says: base path and bearer token. The client is the
/// harness's (no system proxy), the one the SDK would otherwise build for itself.
fn sdk(node: &TestNode, key: Option<&str>) -> Configuration {
    let mut config = Configuration::new();
    config.base_path = node.base.clone();
    config.bearer_access_token = key.map(str::to_string);
    config.client = node.client.clone();
    config
}

fn fixture_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

/// An image timestamp: RFC 3339, and about now.
fn assert_rfc3339_now(s: &str) -> i64 {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("`{s}` is not an RFC 3339 timestamp: {e}"))
        .unix_timestamp();
    assert!((t - now()).abs() < 300, "`{s}` is not about now");
    t
}

/// Every other time: integer unix seconds, about now.
fn assert_unix_now(t: i64) {
    assert!((t - now()).abs() < 300, "{t} is not about now");
}

/// Requests answered so far by status, leaving out the `/metrics` scrapes themselves.
async fn answered(node: &TestNode) -> BTreeMap<String, f64> {
    let text = node.metrics_text().await;
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("imgnode_http_requests_total{"))
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        if series.contains("route=\"metrics\"") {
            continue;
        }
        let status = series
            .split("status=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("status label");
        *out.entry(status.to_string()).or_insert(0.0) += value.parse::<f64>().expect("value");
    }
    out
}

/// Awaits one SDK call and checks that the node answered exactly one request, with `status`.
async fn status_of<T>(node: &TestNode, status: u16, call: impl Future<Output = T>) -> T {
    let before = answered(node).await;
    let out = call.await;
    let after = answered(node).await;
    let diff: Vec<(String, f64)> = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d != 0.0)
        .collect();
    assert_eq!(
        diff,
        vec![(status.to_string(), 1.0)],
        "expected one request answered {status}"
    );
    out
}

/// An SDK call that must fail with `status` and an img-src error body with `code`; the body
/// must parse as the SDK's `ErrorResponse`.
fn assert_api_error<R: std::fmt::Debug, E: std::fmt::Debug>(
    result: Result<R, Error<E>>,
    status: u16,
    code: &str,
) -> ErrorDetail {
    let rc = match result {
        Err(Error::ResponseError(rc)) => rc,
        other => panic!("expected HTTP {status} {code}, got {other:?}"),
    };
    assert_eq!(rc.status.as_u16(), status, "{}", rc.content);
    assert!(
        rc.entity.is_some(),
        "error body is not JSON: {}",
        rc.content
    );
    let body: ErrorResponse = serde_json::from_str(&rc.content)
        .unwrap_or_else(|e| panic!("error body {} is not an ErrorResponse: {e}", rc.content));
    let detail = *body.error;
    assert_eq!(detail.code, code, "{detail:?}");
    assert_eq!(detail.status, i32::from(status), "{detail:?}");
    assert!(!detail.message.is_empty(), "{detail:?}");
    detail
}

/// The part of an absolute URL the API returned that follows this node's base.
fn local<'a>(node: &TestNode, url: &'a str) -> &'a str {
    url.strip_prefix(node.base.as_str())
        .filter(|rest| rest.starts_with('/'))
        .unwrap_or_else(|| panic!("`{url}` is not an absolute URL on {}", node.base))
}

/// The format a delivery URL's extension names, and its media type.
fn format_of(url: &str) -> (ImageFormat, &'static str) {
    let path = url.split(['?', '#']).next().unwrap();
    let file = path.rsplit('/').next().unwrap();
    let ext = file
        .rsplit_once('.')
        .unwrap_or_else(|| panic!("`{url}` has no extension"))
        .1;
    match ext {
        "jpg" | "jpeg" => (ImageFormat::Jpeg, "image/jpeg"),
        "png" => (ImageFormat::Png, "image/png"),
        "webp" => (ImageFormat::WebP, "image/webp"),
        "avif" => (ImageFormat::Avif, "image/avif"),
        other => panic!("`{url}`: unexpected extension `{other}`"),
    }
}

/// Fetches a delivery URL over plain HTTP: 200, the media type of its extension, a body
/// that is that format and decodes to `size`.
async fn fetch_image(node: &TestNode, url: &str, size: (u32, u32)) -> Bytes {
    let (status, headers, body) = node.fetch(local(node, url)).await;
    assert_eq!(
        status,
        200,
        "{url}: {}",
        String::from_utf8_lossy(&body[..body.len().min(400)])
    );
    let (format, media) = format_of(url);
    assert_eq!(headers["content-type"], media, "{url}");
    assert_eq!(image::guess_format(&body).ok(), Some(format), "{url}");
    assert_eq!(dimensions(&body), size, "{url}");
    if format != ImageFormat::Avif {
        // An independent decoder (no AVIF in the dev-dependency's features).
        let img = decode(&body);
        assert_eq!((img.width(), img.height()), size, "{url}");
    }
    body
}

/// The URL answers the JSON error `status`/`code` (404 for private or deleted).
async fn assert_refused(node: &TestNode, url: &str, status: u16, code: &str) {
    let (got, headers, body) = node.fetch(local(node, url)).await;
    assert_json_error(got, &headers, &body, status, code);
}

/// A delivery URL of this account's `stem` (`{base}/i/acme/{stem}.`), with the extension
/// for `key` (the `available_formats`/`urls` key).
fn assert_delivery_url(node: &TestNode, url: &str, stem: &str, key: &str) {
    let prefix = format!("{}/i/acme/{stem}.", node.base);
    let rest = url
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{key}: `{url}` does not start with `{prefix}`"));
    let ext = rest.split(['?', '#']).next().unwrap();
    let ok = match key {
        "jpeg" => ext == "jpg" || ext == "jpeg",
        _ => ext == key,
    };
    assert!(ok, "{key}: `{url}` has extension `{ext}`");
}

#[tokio::test]
async fn the_official_sdk_manages_images_settings_and_presets() {
    let node = TestNode::start_operated("[demo]\nseed = false\n").await;
    let key = account(&node, "acme").await;
    let config = sdk(&node, Some(&key));
    let photo = fixture(PHOTO);
    let hash = hex::encode(Sha256::digest(&photo));
    let id = hash[..16].to_string();
    let size = i64::try_from(photo.len()).unwrap();
    let path = "sdk/photos/ladybird.jpg";
    let stem = "sdk/photos/ladybird";

    // Upload into a folder (the last segment has no image extension).
    let upload = status_of(
        &node,
        201,
        images_api::upload_image(
            &config,
            Some(fixture_path(PHOTO)),
            Some("sdk/photos"),
            Some("public"),
        ),
    )
    .await
    .expect("upload_image");
    assert_eq!(upload.id, id);
    assert_eq!(upload.hash, hash);
    assert_eq!(upload.paths, [path]);
    assert_eq!(upload.is_new, Some(true));
    assert_eq!(upload.visibility, "public");
    assert_eq!(upload.size, size);
    // `format`: "Detected image format"; neither the SDK nor the spec fixes the spelling.
    assert!(
        matches!(upload.format.as_str(), "jpeg" | "jpg"),
        "{}",
        upload.format
    );
    let dims = upload.dimensions.as_deref().expect("dimensions");
    assert_eq!((dims.width, dims.height), (1200, 750));
    assert_rfc3339_now(&upload.uploaded_at);
    assert!(
        upload
            ._links
            .param_self
            .ends_with(&format!("/api/v1/images/{id}"))
    );
    assert!(
        upload
            ._links
            .delete
            .ends_with(&format!("/api/v1/images/{id}"))
    );
    let formats = &upload.available_formats;
    let mut delivery_urls = vec![upload.url.clone()];
    assert_delivery_url(&node, &upload.url, stem, "jpeg");
    for (k, url) in [
        ("webp", &formats.webp),
        ("avif", &formats.avif),
        ("jpeg", &formats.jpeg),
        ("png", &formats.png),
    ] {
        assert_delivery_url(&node, url, stem, k);
        delivery_urls.push(url.clone());
    }
    assert_delivery_url(&node, &formats.jxl, stem, "jxl");
    for url in &delivery_urls {
        fetch_image(&node, url, PHOTO_SIZE).await;
    }

    // Same bytes at the same path: 409. Bad target paths and a missing file: 400.
    assert_api_error(
        images_api::upload_image(&config, Some(fixture_path(PHOTO)), Some("sdk/photos"), None)
            .await,
        409,
        "CONFLICT",
    );
    for bad in ["sdk/../x", "sdk//x", "sdk\\x"] {
        assert_api_error(
            images_api::upload_image(&config, Some(fixture_path(PHOTO)), Some(bad), None).await,
            400,
            "VALIDATION_ERROR",
        );
    }
    assert_api_error(
        images_api::upload_image(&config, None, Some("sdk"), None).await,
        400,
        "VALIDATION_ERROR",
    );

    // List: the folder, its parent, the root; default and explicit paging.
    let list = status_of(
        &node,
        200,
        images_api::list_images(&config, None, None, Some("sdk/photos")),
    )
    .await
    .expect("list_images");
    assert_eq!(
        (list.total, list.limit, list.offset, list.has_more),
        (1, 50, 0, false)
    );
    assert!(list.folders.is_empty(), "{:?}", list.folders);
    assert_eq!(list.path_filter.as_deref(), Some("sdk/photos"));
    assert_eq!(list.images.len(), 1);
    let item = &list.images[0];
    assert_eq!(item.id, id);
    assert_eq!(item.original_filename, "ladybird.jpg");
    assert_eq!(item.sanitized_filename.as_deref(), Some("ladybird.jpg"));
    assert_eq!(item.visibility, "public");
    assert_eq!(item.size, size);
    assert_eq!(item.uploaded_at, upload.uploaded_at);
    assert!(
        item.url.ends_with(&format!("/api/v1/images/{id}")),
        "{}",
        item.url
    );
    assert_eq!(item.paths, [path]);
    assert!(item.active_signed_url.is_none());
    let cdn_url = item.cdn_url.clone().expect("cdn_url");
    fetch_image(&node, &cdn_url, PHOTO_SIZE).await;
    delivery_urls.push(cdn_url);

    let paged = status_of(
        &node,
        200,
        images_api::list_images(&config, Some(10), Some(1), Some("sdk/photos")),
    )
    .await
    .expect("list_images page 2");
    assert_eq!(
        (paged.total, paged.limit, paged.offset, paged.has_more),
        (1, 10, 1, false)
    );
    assert!(paged.images.is_empty());

    let parent = status_of(
        &node,
        200,
        images_api::list_images(&config, Some(10), Some(0), Some("sdk")),
    )
    .await
    .expect("list_images sdk");
    assert!(parent.images.is_empty());
    assert_eq!(parent.total, 0);
    assert_eq!(parent.folders.len(), 1);
    assert_eq!(
        (
            parent.folders[0].name.as_str(),
            parent.folders[0].image_count
        ),
        ("photos", 1)
    );
    let root = status_of(
        &node,
        200,
        images_api::list_images(&config, None, None, None),
    )
    .await
    .expect("list_images root");
    assert!(root.images.is_empty());
    assert_eq!(root.path_filter, None);
    assert_eq!(root.folders.len(), 1);
    assert_eq!(
        (root.folders[0].name.as_str(), root.folders[0].image_count),
        ("sdk", 1)
    );
    assert_api_error(
        images_api::list_images(&config, Some(101), None, None).await,
        400,
        "VALIDATION_ERROR",
    );

    // Search by filename.
    let found = status_of(
        &node,
        200,
        images_api::search_images(&config, "ladybird", Some(10)),
    )
    .await
    .expect("search_images");
    assert_eq!((found.total, found.query.as_str()), (1, "ladybird"));
    assert_eq!(found.results.len(), 1);
    let hit = &found.results[0];
    assert_eq!(hit.id, id);
    assert_eq!(hit.original_filename, "ladybird.jpg");
    assert_eq!(hit.paths, [path]);
    assert_eq!(hit.visibility, "public");
    assert_eq!(hit.size, size);
    assert_eq!(hit.uploaded_at, upload.uploaded_at);
    assert!(
        hit.url.ends_with(&format!("/api/v1/images/{id}")),
        "{}",
        hit.url
    );
    let cdn_url = hit.cdn_url.clone().expect("cdn_url");
    fetch_image(&node, &cdn_url, PHOTO_SIZE).await;
    delivery_urls.push(cdn_url);
    let none = status_of(
        &node,
        200,
        images_api::search_images(&config, "no-such-picture", None),
    )
    .await
    .expect("search_images (no hit)");
    assert_eq!((none.total, none.results.len()), (0, 0));
    assert_api_error(
        images_api::search_images(&config, "", None).await,
        400,
        "VALIDATION_ERROR",
    );

    // Metadata.
    let meta = status_of(&node, 200, images_api::get_image(&config, &id))
        .await
        .expect("get_image");
    assert_eq!(
        (meta.id.as_str(), meta.visibility.as_str()),
        (id.as_str(), "public")
    );
    let m = &meta.metadata;
    assert_eq!(m.hash, hash);
    assert_eq!(m.original_filename, "ladybird.jpg");
    assert_eq!(m.size, size);
    assert_eq!(m.uploaded_at, upload.uploaded_at);
    assert_eq!(m.mime_type, "image/jpeg");
    assert_eq!((m.width, m.height), (Some(1200), Some(750)));
    let color = m.dominant_color.as_deref().expect("dominant_color");
    assert!(
        color.len() == 6 && color.bytes().all(|b| b.is_ascii_hexdigit()),
        "dominant_color `{color}`"
    );
    assert!(
        meta._links
            .param_self
            .ends_with(&format!("/api/v1/images/{id}"))
    );
    assert!(
        meta._links
            .delete
            .ends_with(&format!("/api/v1/images/{id}"))
    );
    let urls = &meta.urls;
    assert_delivery_url(&node, &urls.original, stem, "jpeg");
    // The original's own extension, no parameters: the stored bytes, unchanged.
    let original = fetch_image(&node, &urls.original, PHOTO_SIZE).await;
    assert!(
        original[..] == photo[..],
        "urls.original is not the uploaded file"
    );
    delivery_urls.push(urls.original.clone());
    for (k, url) in [
        ("webp", &urls.webp),
        ("avif", &urls.avif),
        ("jpeg", &urls.jpeg),
        ("png", &urls.png),
    ] {
        assert_delivery_url(&node, url, stem, k);
        fetch_image(&node, url, PHOTO_SIZE).await;
        delivery_urls.push(url.clone());
    }
    assert_delivery_url(&node, &urls.jxl, stem, "jxl");
    assert_api_error(
        images_api::get_image(&config, "0000000000000000").await,
        404,
        "NOT_FOUND",
    );

    // Signed URLs: no body (the SDK sends JSON `null`), then an explicit lifetime.
    let signed = status_of(
        &node,
        200,
        images_api::create_signed_url(&config, &id, None),
    )
    .await
    .expect("create_signed_url");
    assert_eq!(signed.expires_in_seconds, 3600);
    assert!(
        (signed.expires_at - (now() + 3600)).abs() < 60,
        "expires_at {}",
        signed.expires_at
    );
    let short = status_of(
        &node,
        200,
        images_api::create_signed_url(
            &config,
            &id,
            Some(CreateSignedUrlRequest {
                expires_in_seconds: Some(120),
            }),
        ),
    )
    .await
    .expect("create_signed_url 120 s");
    assert_eq!(short.expires_in_seconds, 120);
    assert!((short.expires_at - (now() + 120)).abs() < 60);
    for s in [&signed.signed_url, &short.signed_url] {
        fetch_image(&node, s, PHOTO_SIZE).await;
    }
    for bad in [59, 604_801] {
        assert_api_error(
            images_api::create_signed_url(
                &config,
                &id,
                Some(CreateSignedUrlRequest {
                    expires_in_seconds: Some(bad),
                }),
            )
            .await,
            400,
            "VALIDATION_ERROR",
        );
    }

    // Private: every unsigned URL is refused (also those already in the caches), signed
    // ones are served.
    let private = status_of(
        &node,
        200,
        images_api::update_visibility(&config, &id, UpdateVisibilityRequest::new("private".into())),
    )
    .await
    .expect("update_visibility private");
    assert_eq!(
        (private.id.as_str(), private.visibility.as_str()),
        (id.as_str(), "private")
    );
    assert!(!private.message.is_empty());
    for url in &delivery_urls {
        // Unsigned: answered exactly as a missing image, so private paths do not show.
        assert_refused(&node, url, 404, "NOT_FOUND").await;
    }
    let fresh = status_of(
        &node,
        200,
        images_api::create_signed_url(&config, &id, None),
    )
    .await
    .expect("create_signed_url (private)");
    for s in [&signed.signed_url, &short.signed_url, &fresh.signed_url] {
        fetch_image(&node, s, PHOTO_SIZE).await;
    }
    let meta = images_api::get_image(&config, &id)
        .await
        .expect("get_image");
    assert_eq!(meta.visibility, "private");
    let list = images_api::list_images(&config, None, None, Some("sdk/photos"))
        .await
        .expect("list_images (private)");
    assert_eq!(list.images[0].visibility, "private");
    // Optional in the SDK; when given it must be a working signed URL.
    if let Some(active) = &list.images[0].active_signed_url {
        assert!(active.expires_at > now(), "{active:?}");
        fetch_image(&node, &active.signed_url, PHOTO_SIZE).await;
    }
    assert_api_error(
        images_api::update_visibility(&config, &id, UpdateVisibilityRequest::new("secret".into()))
            .await,
        400,
        "VALIDATION_ERROR",
    );
    let public = status_of(
        &node,
        200,
        images_api::update_visibility(&config, &id, UpdateVisibilityRequest::new("public".into())),
    )
    .await
    .expect("update_visibility public");
    assert_eq!(public.visibility, "public");
    for url in &delivery_urls {
        fetch_image(&node, url, PHOTO_SIZE).await;
    }

    // Settings.
    let got = status_of(&node, 200, settings_api::get_settings(&config))
        .await
        .expect("get_settings");
    let s = &got.settings;
    assert_eq!(
        (s.id.as_str(), s.username.as_str(), s.plan.as_str()),
        ("acme", "acme", "pro")
    );
    assert_eq!(s.delivery_formats, ["avif", "webp", "jpeg", "png"]);
    assert_eq!(
        (s.default_quality, s.default_fit_mode.as_str()),
        (80, "cover")
    );
    assert_eq!((s.default_max_width, s.default_max_height), (None, None));
    assert_eq!((s.theme.as_str(), s.language.as_str()), ("system", "en"));
    assert_unix_now(s.created_at);
    assert!(s.updated_at >= s.created_at);
    assert_eq!((s.total_uploads, s.storage_used_bytes), (1, size));
    let updated = status_of(
        &node,
        200,
        settings_api::update_settings(
            &config,
            Some(UpdateSettingsRequest {
                default_quality: Some(55),
                ..UpdateSettingsRequest::new()
            }),
        ),
    )
    .await
    .expect("update_settings");
    assert_eq!(updated.message, "Settings updated");
    assert_eq!(updated.settings.default_quality, 55);
    assert_eq!(updated.settings.default_fit_mode, "cover");
    assert_eq!(updated.settings.theme, "system");
    let again = settings_api::get_settings(&config)
        .await
        .expect("get_settings");
    assert_eq!(again.settings.default_quality, 55);
    assert_api_error(
        settings_api::update_settings(
            &config,
            Some(UpdateSettingsRequest {
                default_quality: Some(0),
                ..UpdateSettingsRequest::new()
            }),
        )
        .await,
        400,
        "VALIDATION_ERROR",
    );

    // Presets: create, list, get, use, update, delete (by name and by id).
    let listed = status_of(&node, 200, presets_api::list_presets(&config))
        .await
        .expect("list_presets");
    assert_eq!((listed.total, listed.presets.len()), (0, 0));
    let thumb_params = HashMap::from([
        ("w".to_string(), json!(200)),
        ("h".to_string(), json!(200)),
        ("fit".to_string(), json!("cover")),
    ]);
    let thumb = status_of(
        &node,
        201,
        presets_api::create_preset(
            &config,
            Some(CreatePresetRequest {
                name: "sdk_thumb".into(),
                description: Some("square thumbnail".into()),
                params: thumb_params.clone(),
            }),
        ),
    )
    .await
    .expect("create_preset");
    assert!(!thumb.id.is_empty());
    assert_eq!(thumb.name, "sdk_thumb");
    assert_eq!(thumb.description.as_deref(), Some("square thumbnail"));
    assert_eq!(thumb.params, thumb_params);
    assert_unix_now(thumb.created_at);
    assert!(thumb.updated_at >= thumb.created_at);
    assert_eq!(thumb.usage_count, 0);
    let tiny_params = HashMap::from([("w".to_string(), json!(64)), ("q".to_string(), json!(50))]);
    let tiny = status_of(
        &node,
        201,
        presets_api::create_preset(
            &config,
            Some(CreatePresetRequest::new(
                "sdk-tiny".into(),
                tiny_params.clone(),
            )),
        ),
    )
    .await
    .expect("create_preset without description");
    assert_eq!(tiny.description, None);
    assert_eq!(tiny.params, tiny_params);
    assert_api_error(
        presets_api::create_preset(
            &config,
            Some(CreatePresetRequest::new(
                "sdk_thumb".into(),
                thumb_params.clone(),
            )),
        )
        .await,
        409,
        "CONFLICT",
    );
    assert_api_error(
        presets_api::create_preset(
            &config,
            Some(CreatePresetRequest::new(
                "bad name".into(),
                thumb_params.clone(),
            )),
        )
        .await,
        400,
        "VALIDATION_ERROR",
    );
    let listed = status_of(&node, 200, presets_api::list_presets(&config))
        .await
        .expect("list_presets");
    assert_eq!(listed.total, 2);
    let mut names: Vec<&str> = listed.presets.iter().map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["sdk-tiny", "sdk_thumb"]);
    let fetched = status_of(&node, 200, presets_api::get_preset(&config, &thumb.id))
        .await
        .expect("get_preset");
    assert_eq!(
        (
            &fetched.id,
            &fetched.name,
            &fetched.description,
            &fetched.params,
            fetched.created_at
        ),
        (
            &thumb.id,
            &thumb.name,
            &thumb.description,
            &thumb.params,
            thumb.created_at
        )
    );
    let via_preset = format!("{}/i/acme/{stem}.webp?p:sdk_thumb", node.base);
    fetch_image(&node, &via_preset, (200, 200)).await;
    let smaller = HashMap::from([
        ("w".to_string(), json!(100)),
        ("h".to_string(), json!(100)),
        ("fit".to_string(), json!("cover")),
    ]);
    let edited = status_of(
        &node,
        200,
        presets_api::update_preset(
            &config,
            &thumb.id,
            Some(UpdatePresetRequest {
                name: None,
                description: Some("smaller".into()),
                params: Some(smaller.clone()),
            }),
        ),
    )
    .await
    .expect("update_preset");
    assert_eq!(
        (edited.id.as_str(), edited.name.as_str()),
        (thumb.id.as_str(), "sdk_thumb")
    );
    assert_eq!(edited.description.as_deref(), Some("smaller"));
    assert_eq!(edited.params, smaller);
    assert_eq!(edited.created_at, thumb.created_at);
    assert!(edited.updated_at >= thumb.updated_at);
    // Editing a preset changes new requests.
    fetch_image(&node, &via_preset, (100, 100)).await;
    let gone = status_of(&node, 200, presets_api::delete_preset(&config, "sdk_thumb"))
        .await
        .expect("delete_preset by name");
    assert!(gone.success && !gone.message.is_empty(), "{gone:?}");
    let gone = status_of(&node, 200, presets_api::delete_preset(&config, &tiny.id))
        .await
        .expect("delete_preset by id");
    assert!(gone.success, "{gone:?}");
    assert_api_error(
        presets_api::get_preset(&config, &thumb.id).await,
        404,
        "NOT_FOUND",
    );
    assert_api_error(
        presets_api::delete_preset(&config, "sdk_thumb").await,
        404,
        "NOT_FOUND",
    );
    let listed = presets_api::list_presets(&config)
        .await
        .expect("list_presets");
    assert_eq!((listed.total, listed.presets.len()), (0, 0));
    // An unknown preset in a delivery URL is a 400.
    assert_refused(&node, &via_preset, 400, "VALIDATION_ERROR").await;

    // A second path for the same bytes (a full file path): no new image.
    let copy = status_of(
        &node,
        201,
        images_api::upload_image(
            &config,
            Some(fixture_path(PHOTO)),
            Some("sdk/photos/copy.jpg"),
            None,
        ),
    )
    .await
    .expect("upload_image (second path)");
    assert_eq!((copy.id.as_str(), copy.is_new), (id.as_str(), Some(false)));
    let mut paths = copy.paths.clone();
    paths.sort_unstable();
    assert_eq!(paths, ["sdk/photos/copy.jpg", path]);
    assert_delivery_url(&node, &copy.url, "sdk/photos/copy", "jpeg");
    let copy_urls = [copy.url.clone(), copy.available_formats.webp.clone()];
    for url in &copy_urls {
        fetch_image(&node, url, PHOTO_SIZE).await;
    }

    // Deleting one path (the SDK sends it as one `%2F`-encoded segment); another account's
    // name is refused.
    assert_api_error(
        images_api::delete_image_path(&config, "other", "sdk/photos/copy.jpg").await,
        403,
        "FORBIDDEN",
    );
    let removed = status_of(
        &node,
        200,
        images_api::delete_image_path(&config, "acme", "sdk/photos/copy.jpg"),
    )
    .await
    .expect("delete_image_path");
    assert!(
        removed.success && !removed.message.is_empty(),
        "{removed:?}"
    );
    assert!(!removed.image_deleted);
    assert_eq!(removed.remaining_paths, [path]);
    assert_rfc3339_now(&removed.deleted_at);
    for url in &copy_urls {
        assert_refused(&node, url, 404, "NOT_FOUND").await;
    }
    fetch_image(&node, &upload.url, PHOTO_SIZE).await;
    assert_api_error(
        images_api::delete_image_path(&config, "acme", "sdk/photos/copy.jpg").await,
        404,
        "NOT_FOUND",
    );

    // Deleting the image: gone from the API and from delivery, signed URLs included.
    let deleted = status_of(&node, 200, images_api::delete_image(&config, &id))
        .await
        .expect("delete_image");
    assert!(
        deleted.success && !deleted.message.is_empty(),
        "{deleted:?}"
    );
    assert_eq!(
        deleted.deleted_paths.as_deref(),
        Some(&[path.to_string()][..])
    );
    assert_rfc3339_now(&deleted.deleted_at);
    for url in
        delivery_urls
            .iter()
            .chain([&signed.signed_url, &short.signed_url, &fresh.signed_url])
    {
        assert_refused(&node, url, 404, "NOT_FOUND").await;
    }
    assert_api_error(images_api::get_image(&config, &id).await, 404, "NOT_FOUND");
    assert_api_error(
        images_api::delete_image(&config, &id).await,
        404,
        "NOT_FOUND",
    );
    let list = images_api::list_images(&config, None, None, Some("sdk/photos"))
        .await
        .expect("list_images after delete");
    assert_eq!((list.total, list.images.len()), (0, 0));
    let found = images_api::search_images(&config, "ladybird", None)
        .await
        .expect("search_images after delete");
    assert_eq!((found.total, found.results.len()), (0, 0));
}

#[tokio::test]
async fn sdk_errors_are_typed_and_removing_the_last_path_deletes_the_image() {
    let node = TestNode::start_operated("[demo]\nseed = false\n").await;
    let key = account(&node, "acme").await;
    let config = sdk(&node, Some(&key));

    // No key, an unknown key: 401 in the img-src error shape.
    assert_api_error(
        images_api::list_images(&sdk(&node, None), None, None, None).await,
        401,
        "UNAUTHORIZED",
    );
    assert_api_error(
        settings_api::get_settings(&sdk(&node, Some("imgsrc_0000"))).await,
        401,
        "UNAUTHORIZED",
    );

    // A read-only key lists but cannot upload.
    let res = node
        .client
        .post(format!("{}/api/v1/settings/api-keys", node.base))
        .bearer_auth(&key)
        .json(&json!({"name": "ro", "scopes": "read"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    let reader = sdk(&node, created["key"].as_str());
    let empty = status_of(
        &node,
        200,
        images_api::list_images(&reader, None, None, None),
    )
    .await
    .expect("list_images with a read key");
    assert_eq!(
        (empty.total, empty.images.len(), empty.folders.len()),
        (0, 0, 0)
    );
    assert_api_error(
        images_api::upload_image(&reader, Some(fixture_path(PHOTO)), None, None).await,
        403,
        "FORBIDDEN",
    );

    // A full file path as target; no visibility given.
    let upload = status_of(
        &node,
        201,
        images_api::upload_image(
            &config,
            Some(fixture_path("photos/elephants.jpg")),
            Some("solo/elephant.jpg"),
            None,
        ),
    )
    .await
    .expect("upload_image");
    assert_eq!(upload.paths, ["solo/elephant.jpg"]);
    assert_eq!(upload.visibility, "public");
    let dims = upload.dimensions.as_deref().expect("dimensions");
    assert_eq!((dims.width, dims.height), (1200, 675));
    assert_delivery_url(&node, &upload.url, "solo/elephant", "jpeg");
    fetch_image(&node, &upload.url, (1200, 675)).await;
    fetch_image(&node, &upload.available_formats.png, (1200, 675)).await;

    // Its only path removed: the image is deleted.
    let removed = status_of(
        &node,
        200,
        images_api::delete_image_path(&config, "acme", "solo/elephant.jpg"),
    )
    .await
    .expect("delete_image_path");
    assert!(removed.success, "{removed:?}");
    assert!(removed.image_deleted);
    assert!(removed.remaining_paths.is_empty());
    assert_rfc3339_now(&removed.deleted_at);
    for url in [&upload.url, &upload.available_formats.png] {
        assert_refused(&node, url, 404, "NOT_FOUND").await;
    }
    assert_api_error(
        images_api::get_image(&config, &upload.id).await,
        404,
        "NOT_FOUND",
    );
}
