//! Tenant isolation, route by route: every tenant API route called with another account's
//! key and with a read-only key of the owner, every answer asserted, and afterwards the
//! owner's data checked untouched.

use reqwest::Method as M;
use serde_json::{Value, json};

use crate::harness::{TestNode, dimensions, fixture};

/// One tenant route: how another account's full key and the owner's read-only key must be
/// answered.
struct Row {
    method: M,
    path: String,
    body: Option<Value>,
    /// Another account's key (every scope: read, write, account).
    stranger: u16,
    /// The owner's read-only key.
    reader: u16,
}

fn row(method: M, path: impl Into<String>, body: Option<Value>, stranger: u16, reader: u16) -> Row {
    Row {
        method,
        path: path.into(),
        body,
        stranger,
        reader,
    }
}

/// Any call, JSON or not (export is a tar stream): status and body bytes.
async fn call(node: &TestNode, key: &str, row: &Row) -> (u16, Vec<u8>) {
    let mut req = node
        .client
        .request(row.method.clone(), format!("{}{}", node.base, row.path))
        .bearer_auth(key);
    if row.path == "/api/v1/images" && row.method == M::POST {
        let form = reqwest::multipart::Form::new()
            .part(
                "file",
                reqwest::multipart::Part::bytes(fixture("photos/dune.jpg")).file_name("bug.jpg"),
            )
            .text("target_path", "private/bug.jpg");
        req = req.multipart(form);
    } else if let Some(b) = &row.body {
        req = req.json(b);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn every_tenant_route_refuses_strangers_and_read_only_keys() {
    let node = TestNode::start_with("[demo]\nseed = false\n").await;
    let owner = node.account_key("alpha", "read,write").await;
    let reader = node.account_key("alpha", "read").await;
    let stranger = node.account_key("bravo", "read,write,account").await;

    // The owner's things: a private image, a preset, a second key, settings.
    let (s, up) = node
        .upload(&owner, fixture("photos/ladybird.jpg"), "private/bug.jpg")
        .await;
    assert_eq!(s, 201, "{up}");
    let image = up["id"].as_str().unwrap().to_string();
    let (s, _, preset) = node
        .api(
            M::POST,
            "/api/v1/settings/presets",
            &owner,
            Some(json!({"name": "thumb", "params": {"w": 64}})),
        )
        .await;
    assert_eq!(s, 201, "{preset}");
    let preset = preset["id"].as_str().unwrap().to_string();
    let (s, _, key) = node
        .api(
            M::POST,
            "/api/v1/settings/api-keys",
            &owner,
            Some(json!({"name": "ci"})),
        )
        .await;
    assert_eq!(s, 201, "{key}");
    let key_id = key["id"].as_str().unwrap().to_string();
    let key_secret = key["key"].as_str().unwrap().to_string();
    let (s, _, _) = node
        .api(
            M::PATCH,
            &format!("/api/v1/images/{image}/visibility"),
            &owner,
            Some(json!({"visibility": "private"})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _, _) = node
        .api(
            M::PUT,
            "/api/v1/settings",
            &owner,
            Some(json!({"default_quality": 33})),
        )
        .await;
    assert_eq!(s, 200);

    // Every route of the tenant API (src/api/mod.rs, ApiRoute). Collection routes answer a
    // stranger with its own (empty) collection; routes naming the owner's things answer 404
    // (or 403 where the URL names the owner's account); writes refuse the read-only key.
    let table = vec![
        row(M::POST, "/api/v1/images", None, 201, 403),
        row(M::GET, "/api/v1/images", None, 200, 200),
        row(M::GET, "/api/v1/images/search?q=bug", None, 200, 200),
        row(M::GET, format!("/api/v1/images/{image}"), None, 404, 200),
        row(
            M::POST,
            format!("/api/v1/images/{image}/signed-url"),
            None,
            404,
            403,
        ),
        row(
            M::PATCH,
            format!("/api/v1/images/{image}/visibility"),
            Some(json!({"visibility": "public"})),
            404,
            403,
        ),
        row(M::DELETE, format!("/api/v1/images/{image}"), None, 404, 403),
        row(
            M::DELETE,
            "/api/v1/images/path/alpha/private%2Fbug.jpg",
            None,
            403,
            403,
        ),
        row(M::GET, "/api/v1/settings/presets", None, 200, 200),
        row(
            M::POST,
            "/api/v1/settings/presets",
            Some(json!({"name": "thumb", "params": {"w": 10}})),
            201,
            403,
        ),
        row(
            M::GET,
            format!("/api/v1/settings/presets/{preset}"),
            None,
            404,
            200,
        ),
        row(
            M::PUT,
            format!("/api/v1/settings/presets/{preset}"),
            Some(json!({"params": {"w": 1}})),
            404,
            403,
        ),
        row(
            M::DELETE,
            format!("/api/v1/settings/presets/{preset}"),
            None,
            404,
            403,
        ),
        row(M::GET, "/api/v1/usage", None, 200, 200),
        row(M::GET, "/api/v1/settings", None, 200, 200),
        row(
            M::PUT,
            "/api/v1/settings",
            Some(json!({"default_quality": 90})),
            200,
            403,
        ),
        row(M::GET, "/api/v1/settings/api-keys", None, 200, 200),
        row(
            M::POST,
            "/api/v1/settings/api-keys",
            Some(json!({"name": "x"})),
            201,
            403,
        ),
        row(
            M::DELETE,
            format!("/api/v1/settings/api-keys/{key_id}"),
            None,
            404,
            403,
        ),
        // Export and erasure need the `account` scope: a read-only key exports nothing.
        row(M::GET, "/api/v1/account/export", None, 200, 403),
        // Last: the stranger erases its own account, nothing of the owner's.
        row(
            M::DELETE,
            "/api/v1/account",
            Some(json!({"confirm": "bravo"})),
            200,
            403,
        ),
    ];
    let secrets = [image.as_str(), preset.as_str(), key_id.as_str(), "alpha/"];
    for r in &table {
        let (status, body) = call(&node, &reader, r).await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(
            status, r.reader,
            "read-only key: {} {}: {text}",
            r.method, r.path
        );
        let (status, mut body) = call(&node, &stranger, r).await;
        // An error body echoes the request's own path (which names the owner's id): that is
        // the stranger's input, not the owner's data.
        if let Ok(mut v) = serde_json::from_slice::<Value>(&body)
            && let Some(error) = v.get_mut("error").and_then(Value::as_object_mut)
        {
            error.remove("path");
            body = serde_json::to_vec(&v).unwrap();
        }
        let text = String::from_utf8_lossy(&body);
        assert_eq!(
            status, r.stranger,
            "stranger: {} {}: {text}",
            r.method, r.path
        );
        for secret in secrets {
            assert!(
                !body.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "stranger: {} {} answered with the owner's {secret}: {text}",
                r.method,
                r.path
            );
        }
    }

    // The owner's things are all still there and unchanged.
    let (s, _, got) = node
        .api(M::GET, &format!("/api/v1/images/{image}"), &owner, None)
        .await;
    assert_eq!(s, 200, "{got}");
    assert_eq!(got["visibility"], "private");
    let (s, _, got) = node
        .api(
            M::GET,
            &format!("/api/v1/settings/presets/{preset}"),
            &owner,
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(got["params"]["w"], 64);
    let (s, _, got) = node.api(M::GET, "/api/v1/settings", &owner, None).await;
    assert_eq!(s, 200);
    assert_eq!(got["settings"]["default_quality"], 33);
    let (s, _, _) = node.api(M::GET, "/api/v1/usage", &key_secret, None).await;
    assert_eq!(s, 200, "the owner's second key still works");
    let (s, _, _) = node.api(M::GET, "/api/v1/usage", &stranger, None).await;
    assert_eq!(s, 401, "the stranger's account is erased");
    // The private image renders for the owner's signed URL only: a plain URL is answered as
    // for a missing image.
    assert_eq!(node.fetch("/i/alpha/private/bug.jpg?w=32").await.0, 404);
    let (s, _, signed) = node
        .api(
            M::POST,
            &format!("/api/v1/images/{image}/signed-url"),
            &owner,
            Some(json!({"expires_in": 60})),
        )
        .await;
    assert_eq!(s, 200, "{signed}");
    let url = signed["signed_url"]
        .as_str()
        .or(signed["url"].as_str())
        .unwrap();
    let target = &url[url.find("/i/").unwrap()..];
    let (s, _, body) = node.fetch(target).await;
    assert_eq!(s, 200);
    assert!(dimensions(&body).0 > 0);
}
