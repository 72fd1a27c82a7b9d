//! Tenant API keys and the operator's account/key routes, over HTTP.

use serde_json::{Value, json};

use crate::harness::{TestNode, assert_json_error};

async fn api(
    node: &TestNode,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    node.api(method, path, key, body).await
}

/// `GET /api/v1/settings/api-keys` with `key`.
async fn list_keys(node: &TestNode, key: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    api(
        node,
        reqwest::Method::GET,
        "/api/v1/settings/api-keys",
        key,
        None,
    )
    .await
}

/// Creates an account through the operator API and returns its first key.
async fn account(node: &TestNode, name: &str) -> String {
    let (status, body) = node
        .ops_call(
            reqwest::Method::POST,
            "/admin/v1/accounts",
            Some(json!({"name": name, "plan": "pro"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["account"]["plan"], "pro");
    body["api_key"]["key"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn operator_creates_accounts_with_a_first_key() {
    let node = TestNode::start_operated("").await;
    let key = account(&node, "acme").await;
    assert!(key.starts_with("imgsrc_"));
    let (status, body) = node
        .ops_call(
            reqwest::Method::POST,
            "/admin/v1/accounts",
            Some(json!({"name": "acme"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    for bad in ["Acme", "api", "a b", ""] {
        let (status, _) = node
            .ops_call(
                reqwest::Method::POST,
                "/admin/v1/accounts",
                Some(json!({"name": bad})),
            )
            .await;
        assert_eq!(status, 400, "{bad}");
    }
    let (status, body) = node
        .ops_call(reqwest::Method::GET, "/admin/v1/accounts", None)
        .await;
    assert_eq!(status, 200);
    let names: Vec<&str> = body["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme", "demo"]);
    let (status, body) = node
        .ops_call(reqwest::Method::GET, "/admin/v1/accounts/acme", None)
        .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("active")));
    // No token, wrong token: refused.
    let res = node
        .client
        .get(format!("{}/admin/v1/accounts", node.ops))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn keys_are_listed_without_secrets_created_with_scopes_and_revoked_at_once() {
    let node = TestNode::start_operated("").await;
    let key = account(&node, "acme").await;
    let (status, headers, body) = list_keys(&node, &key).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body["total"], 1);
    assert!(
        body["api_keys"][0].get("key").is_none(),
        "a listed key must not carry its secret"
    );
    assert!(!body.to_string().contains(&key[7..]));

    let (status, _, created) = api(
        &node,
        reqwest::Method::POST,
        "/api/v1/settings/api-keys",
        &key,
        Some(json!({"name": "reader", "scopes": "read", "expires_in_days": 30})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["scopes"], "read");
    assert!(created["expires_at"].as_i64().unwrap() > created["created_at"].as_i64().unwrap());
    let reader = created["key"].as_str().unwrap().to_string();
    assert!(reader.starts_with(created["key_prefix"].as_str().unwrap()));

    // A read-only key reads but cannot write.
    assert_eq!(list_keys(&node, &reader).await.0, 200);
    let (status, h, body) = api(
        &node,
        reqwest::Method::POST,
        "/api/v1/settings/api-keys",
        &reader,
        Some(json!({"name": "x"})),
    )
    .await;
    assert_json_error(status, &h, body.to_string().as_bytes(), 403, "FORBIDDEN");

    // Bad bodies are 400 with the field named.
    let (status, _, body) = api(
        &node,
        reqwest::Method::POST,
        "/api/v1/settings/api-keys",
        &key,
        Some(json!({"name": "x", "expires_in_days": 400})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expires_in_days")
    );

    // Revoked: refused on the very next call.
    let id = created["id"].as_str().unwrap();
    let (status, _, _) = api(
        &node,
        reqwest::Method::DELETE,
        &format!("/api/v1/settings/api-keys/{id}"),
        &key,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, h, body) = list_keys(&node, &reader).await;
    assert_json_error(status, &h, body.to_string().as_bytes(), 401, "UNAUTHORIZED");
}

#[tokio::test]
async fn one_account_cannot_touch_anothers_keys() {
    let node = TestNode::start_operated("").await;
    let acme = account(&node, "acme").await;
    let other = account(&node, "other").await;
    let (_, _, listed) = list_keys(&node, &acme).await;
    let acme_key_id = listed["api_keys"][0]["id"].as_str().unwrap().to_string();
    let (status, _, _) = api(
        &node,
        reqwest::Method::DELETE,
        &format!("/api/v1/settings/api-keys/{acme_key_id}"),
        &other,
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (_, _, theirs) = list_keys(&node, &other).await;
    assert!(!theirs.to_string().contains(&acme_key_id));
    // acme's key still works.
    assert_eq!(list_keys(&node, &acme).await.0, 200);
}

#[tokio::test]
async fn missing_and_invalid_keys_are_401_json() {
    let node = TestNode::start_operated("").await;
    for auth in [None, Some("Bearer imgsrc_0000"), Some("Basic dXNlcjpwYXNz")] {
        let mut req = node
            .client
            .get(format!("{}/api/v1/settings/api-keys", node.base));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let res = req.send().await.unwrap();
        let (status, h) = (res.status().as_u16(), res.headers().clone());
        assert_json_error(status, &h, &res.bytes().await.unwrap(), 401, "UNAUTHORIZED");
    }
}

#[tokio::test]
async fn suspension_stops_the_api_and_delivery_without_deleting_anything() {
    let node = TestNode::start_operated("").await;
    let key = account(&node, "acme").await;
    node.add_image(
        "acme",
        "pic.jpg",
        &crate::harness::fixture("photos/dune.jpg"),
        imgnode::store::Visibility::Public,
    )
    .await;
    assert_eq!(node.fetch("/i/acme/pic.webp?w=50").await.0, 200);
    let (status, body) = node
        .ops_call(
            reqwest::Method::POST,
            "/admin/v1/accounts/acme/suspend",
            None,
        )
        .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("suspended")));
    assert_eq!(list_keys(&node, &key).await.0, 403);
    assert_eq!(node.fetch("/i/acme/pic.webp?w=50").await.0, 403);
    let (status, _) = node
        .ops_call(
            reqwest::Method::POST,
            "/admin/v1/accounts/acme/resume",
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(list_keys(&node, &key).await.0, 200);
    assert_eq!(node.fetch("/i/acme/pic.webp?w=50").await.0, 200);
}

#[tokio::test]
async fn operator_issues_and_revokes_keys_and_usage_survives_a_restart() {
    let node = TestNode::start_operated("").await;
    account(&node, "acme").await;
    let (status, issued) = node
        .ops_call(
            reqwest::Method::POST,
            "/admin/v1/accounts/acme/keys",
            Some(json!({"name": "deploy", "scopes": "read,write"})),
        )
        .await;
    assert_eq!(status, 201);
    let key = issued["key"].as_str().unwrap().to_string();
    for _ in 0..3 {
        assert_eq!(list_keys(&node, &key).await.0, 200);
    }
    // Usage is flushed on shutdown and read back after the restart.
    let dir = node.stop().await;
    let node = TestNode::start_in(dir, "").await;
    let (_, _, listed) = list_keys(&node, &key).await;
    let deploy = listed["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "deploy")
        .unwrap()
        .clone();
    assert!(deploy["total_requests"].as_i64().unwrap() >= 3, "{deploy}");
    assert!(deploy["last_used_at"].as_i64().is_some());
    let id = deploy["id"].as_str().unwrap();
    let dir = node.stop().await;
    let token = dir.path().join("operator.token");
    let node = TestNode::start_in(
        dir,
        &format!("[admin]\ntoken_file = \"{}\"\n", token.display()),
    )
    .await;
    let (status, _) = node
        .ops_call(
            reqwest::Method::DELETE,
            &format!("/admin/v1/accounts/acme/keys/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(list_keys(&node, &key).await.0, 401);
}

#[tokio::test]
async fn settings_defaults_apply_to_delivery_urls_that_do_not_set_them() {
    let node = TestNode::start_operated("").await;
    let key = account(&node, "acme").await;
    let (status, _, body) = api(&node, reqwest::Method::GET, "/api/v1/settings", &key, None).await;
    assert_eq!(status, 200);
    let s = &body["settings"];
    assert_eq!(
        (s["id"].as_str(), s["plan"].as_str()),
        (Some("acme"), Some("pro"))
    );
    assert_eq!(
        (
            s["default_quality"].as_i64(),
            s["default_fit_mode"].as_str()
        ),
        (Some(80), Some("cover"))
    );
    assert_eq!(s["total_uploads"], 0);
    assert!(s["default_max_width"].is_null());

    let photo = crate::harness::fixture("photos/ladybird.jpg");
    node.add_image(
        "acme",
        "pic.jpg",
        &photo,
        imgnode::store::Visibility::Public,
    )
    .await;
    let before = node.fetch("/i/acme/pic.webp?w=200").await.1["etag"].clone();
    let (_, _, plain_before) = node.fetch("/i/acme/pic.png").await;
    assert_eq!(crate::harness::decode(&plain_before).width(), 1200);

    let (status, _, body) = api(
        &node,
        reqwest::Method::PUT,
        "/api/v1/settings",
        &key,
        Some(json!({"default_quality": 30, "default_max_width": 300, "theme": "dark"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "Settings updated");
    let s = &body["settings"];
    assert_eq!(
        (
            s["default_quality"].as_i64(),
            s["default_max_width"].as_i64()
        ),
        (Some(30), Some(300))
    );
    assert_eq!(s["theme"], "dark");
    assert_eq!(s["total_uploads"], 1);
    assert_eq!(s["storage_used_bytes"].as_u64(), Some(photo.len() as u64));

    // No size in the URL: bounded by the account's maximum (never enlarged).
    let (_, _, plain) = node.fetch("/i/acme/pic.png").await;
    assert_eq!(crate::harness::decode(&plain).width(), 300);
    // An explicit size wins; the default quality is part of the cache key.
    let after = node.fetch("/i/acme/pic.webp?w=200").await;
    assert_ne!(after.1["etag"], before);
    let low = node.fetch("/i/acme/pic.jpg?w=600").await.2;
    let high = node.fetch("/i/acme/pic.jpg?w=600&q=95").await.2;
    assert_eq!(crate::harness::decode(&low).width(), 600);
    assert!(
        low.len() * 2 < high.len(),
        "{} vs {}",
        low.len(),
        high.len()
    );

    // The stored extension without parameters is bounded too: rendered within the maximum,
    // not the original's bytes; those take a signed URL, or `serve_originals`.
    let (_, headers, body) = node.fetch("/i/acme/pic.jpg").await;
    assert_eq!(crate::harness::decode(&body).width(), 300);
    assert_ne!(headers["x-cache"], "ORIGINAL");
    let (_, _, list) = api(&node, reqwest::Method::GET, "/api/v1/images", &key, None).await;
    let id = list["images"][0]["id"].as_str().unwrap().to_string();
    let (status, _, signed) = api(
        &node,
        reqwest::Method::POST,
        &format!("/api/v1/images/{id}/signed-url"),
        &key,
        None,
    )
    .await;
    assert_eq!(status, 200, "{signed}");
    let url = signed["signed_url"].as_str().unwrap();
    let (_, headers, body) = node.fetch(&url[url.find("/i/").unwrap()..]).await;
    assert_eq!(headers["x-cache"], "ORIGINAL");
    assert_eq!(&body[..], &photo[..]);
    for (serve, cache) in [(true, "ORIGINAL"), (false, "HIT-MEMORY")] {
        let (status, _, body) = api(
            &node,
            reqwest::Method::PUT,
            "/api/v1/settings",
            &key,
            Some(json!({"serve_originals": serve})),
        )
        .await;
        assert_eq!(
            (status, &body["settings"]["serve_originals"]),
            (200, &json!(serve))
        );
        let (_, headers, _) = node.fetch("/i/acme/pic.jpg").await;
        assert_eq!(headers["x-cache"], cache, "serve_originals {serve}");
    }

    // `null` clears a nullable setting (what the SDKs send to remove a bound); the URL with
    // no size is full size again, and the other settings are untouched.
    let (status, _, body) = api(
        &node,
        reqwest::Method::PUT,
        "/api/v1/settings",
        &key,
        Some(json!({"default_max_width": null, "theme": null})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["settings"]["default_max_width"].is_null(), "{body}");
    assert_eq!(body["settings"]["theme"], "dark");
    assert_eq!(body["settings"]["default_quality"], 30);
    let (_, _, plain) = node.fetch("/i/acme/pic.png").await;
    assert_eq!(crate::harness::decode(&plain).width(), 1200);
    let (_, headers, _) = node.fetch("/i/acme/pic.jpg").await;
    assert_eq!(headers["x-cache"], "ORIGINAL");

    // Validation and scopes.
    let (status, _, body) = api(
        &node,
        reqwest::Method::PUT,
        "/api/v1/settings",
        &key,
        Some(json!({"default_fit_mode": "squash"})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("default_fit_mode")
    );
    let (_, _, created) = api(
        &node,
        reqwest::Method::POST,
        "/api/v1/settings/api-keys",
        &key,
        Some(json!({"name": "ro", "scopes": "read"})),
    )
    .await;
    let reader = created["key"].as_str().unwrap();
    // img-src's documented key format: `imgsrc_` and a secret, 56 characters.
    assert_eq!((reader.len(), &reader[..7]), (56, "imgsrc_"));
    assert_eq!(
        api(
            &node,
            reqwest::Method::GET,
            "/api/v1/settings",
            reader,
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        api(
            &node,
            reqwest::Method::PUT,
            "/api/v1/settings",
            reader,
            Some(json!({"theme": "light"}))
        )
        .await
        .0,
        403
    );
}
