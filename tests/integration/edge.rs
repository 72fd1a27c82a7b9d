//! Behind a CDN: cache tags on every image answer, and purges that reach the edge for every
//! change that makes an answer change or go away, through the outbox, with retries. The
//! purge endpoints are real HTTP servers on loopback that record each request exactly.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use reqwest::Method;
use serde_json::json;
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::harness::{TestNode, fixture};

const PHOTO: &str = "photos/ladybird.jpg";

/// One request a recorder received.
#[derive(Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// An HTTP server on 127.0.0.1:0 that records every request and answers from a script
/// (then `fallback`).
pub struct Recorder {
    pub url: String,
    rx: mpsc::UnboundedReceiver<Recorded>,
    script: Arc<Mutex<VecDeque<(u16, String)>>>,
}

impl Recorder {
    pub async fn start(fallback: (u16, &str)) -> Recorder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::unbounded_channel();
        let script: Arc<Mutex<VecDeque<(u16, String)>>> = Arc::default();
        let fallback = (fallback.0, fallback.1.to_string());
        let answers = script.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (tx, answers, fallback) = (tx.clone(), answers.clone(), fallback.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (tx, answers, fallback) =
                            (tx.clone(), answers.clone(), fallback.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let _ = tx.send(Recorded {
                                method: parts.method.to_string(),
                                path: parts.uri.path().to_string(),
                                headers: parts.headers,
                                body,
                            });
                            let (status, text) =
                                answers.lock().unwrap().pop_front().unwrap_or(fallback);
                            let mut res = hyper::Response::new(Full::new(Bytes::from(text)));
                            *res.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(res)
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Recorder { url, rx, script }
    }

    /// The next answers, before the fallback.
    pub fn answer_next(&self, answers: &[(u16, &str)]) {
        let mut s = self.script.lock().unwrap();
        s.extend(answers.iter().map(|(c, t)| (*c, t.to_string())));
    }

    /// The next request, waiting at most 20 s (an event, not a delay: it returns as soon as
    /// the request arrives).
    pub async fn next(&mut self) -> Recorded {
        tokio::time::timeout(Duration::from_secs(20), self.rx.recv())
            .await
            .expect("a purge request within 20 s")
            .expect("recorder running")
    }

    /// No request arrived (the queue is empty right now).
    pub fn none_yet(&mut self) -> bool {
        self.rx.try_recv().is_err()
    }
}

/// A purge counter of `target`, scraped from the node.
async fn edge_metric(node: &TestNode, name: &str, target: &str) -> f64 {
    crate::harness::metric_value(&node.metrics_text().await, name, &[("target", target)])
}

/// A credential file (mode 0600, as tempfile makes them) holding `content`.
fn secret_file(dir: &std::path::Path, name: &str, content: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

const SECRET: &str = "whsec-test-2f9c1a";

/// A node whose only purge target is a webhook to `hook`, retrying quickly.
async fn node_with_webhook(hook: &Recorder, extra: &str) -> (TestNode, tempfile::TempDir) {
    let creds = tempfile::tempdir().unwrap();
    // With its trailing newline, as `echo` writes it: the key is the content without it.
    let secret = secret_file(creds.path(), "hook.secret", &format!("{SECRET}\n"));
    let node = TestNode::start_operated(&format!(
        r#"
[edge]
purge_retry_base = "50ms"
purge_retry_max = "200ms"
erasure_wait = "10s"
{extra}
[[edge.purge]]
kind = "webhook"
url = "{}/hook"
secret_file = "{}"
"#,
        hook.url,
        secret.display()
    ))
    .await;
    (node, creds)
}

/// Asserts `r` is a correctly signed webhook call and returns its JSON body.
fn signed_body(r: &Recorded) -> serde_json::Value {
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/hook");
    assert_eq!(r.headers["content-type"], "application/json");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&r.body);
    let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(r.headers["x-imgnode-signature"], want.as_str());
    r.json()
}

/// The next webhook call is a signed purge of `tags` for `reason`.
async fn expect_purge(hook: &mut Recorder, reason: &str, tags: &[&str]) {
    let body = signed_body(&hook.next().await);
    assert_eq!(body["reason"], reason);
    assert_eq!(tags_of(&body), tags);
}

fn tags_of(v: &serde_json::Value) -> Vec<String> {
    v["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn image_answers_carry_their_tags_in_the_configured_headers() {
    let node =
        TestNode::start_with("[edge]\nstale_while_revalidate = \"60s\"\nstale_if_error = \"1d\"\n")
            .await;
    let key = node.account_key("acme", "read,write").await;
    let (status, up) = node.upload(&key, fixture(PHOTO), "shop/red-bag.jpg").await;
    assert_eq!(status, 201, "{up}");
    let id = up["id"].as_str().unwrap();
    node.api(
        Method::POST,
        "/api/v1/settings/presets",
        &key,
        Some(json!({"name": "thumb", "params": {"w": 40}})),
    )
    .await;
    let folder_tag = {
        let d = <Sha256 as sha2::Digest>::digest(b"shop/red-bag");
        format!("ph.acme.{}", hex::encode(&d[..16]))
    };

    let res = node.get("/i/acme/shop/red-bag.webp?w=50").await;
    assert_eq!(res.status(), 200);
    let h = res.headers().clone();
    assert_eq!(
        h["surrogate-key"],
        format!("a.acme i.acme.{id} {folder_tag}").as_str()
    );
    assert_eq!(
        h["cache-tag"],
        format!("a.acme,i.acme.{id},{folder_tag}").as_str()
    );
    assert!(
        h.get("edge-cache-tag").is_none(),
        "not configured by default"
    );
    assert_eq!(
        h["cache-control"],
        "public, max-age=31536000, stale-while-revalidate=60, stale-if-error=86400"
    );
    // A revalidation answers the same tags (the CDN refreshes its stored headers from a 304).
    let etag = h["etag"].to_str().unwrap().to_string();
    let res = node
        .get_with(
            "/i/acme/shop/red-bag.webp?w=50",
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(res.status(), 304);
    assert_eq!(res.headers()["cache-tag"], h["cache-tag"]);
    // A preset adds its own tag; the original's bytes carry the tags too.
    let res = node.get("/i/acme/shop/red-bag.jpg?p:thumb").await;
    assert_eq!(res.status(), 200);
    let keys = res.headers()["surrogate-key"].to_str().unwrap().to_string();
    assert!(keys.ends_with(" r.acme.thumb"), "{keys}");

    // Only the headers an operator lists.
    let node2 = TestNode::start_with("[edge]\ntag_headers = [\"Edge-Cache-Tag\"]\n").await;
    let key2 = node2.account_key("shop", "read,write").await;
    let (_, up2) = node2.upload(&key2, fixture(PHOTO), "bag.jpg").await;
    let res = node2.get("/i/shop/bag.webp?w=30").await;
    assert_eq!(res.status(), 200);
    let h = res.headers();
    assert!(h.get("surrogate-key").is_none() && h.get("cache-tag").is_none());
    assert_eq!(
        h["edge-cache-tag"],
        format!("a.shop,i.shop.{},p.shop.bag", up2["id"].as_str().unwrap()).as_str()
    );
    assert_eq!(h["cache-control"], "public, max-age=31536000");
}

#[tokio::test]
async fn every_change_that_alters_an_answer_reaches_the_webhook_signed() {
    let mut hook = Recorder::start((200, "{}")).await;
    let (node, _creds) = node_with_webhook(&hook, "").await;
    let key = node.account_key("acme", "read,write").await;
    let photo = fixture(PHOTO);
    let png = fixture("formats/png_rgba.png");

    // Uploading a new path changes no cached answer: nothing is sent.
    let (_, a) = node.upload(&key, photo.clone(), "a.jpg").await;
    let a_id = a["id"].as_str().unwrap().to_string();
    let (_, b) = node.upload(&key, png.clone(), "b.png").await;
    let b_id = b["id"].as_str().unwrap().to_string();

    // Image made private: its tag.
    let (s, _, _) = node
        .api(
            Method::PATCH,
            &format!("/api/v1/images/{a_id}/visibility"),
            &key,
            Some(json!({"visibility": "private"})),
        )
        .await;
    assert_eq!(s, 200);
    let body = signed_body(&hook.next().await);
    assert_eq!(
        body,
        json!({"tags": [format!("i.acme.{a_id}")], "reason": "image made private", "account": "acme"})
    );
    // Back to public: nothing stale at the edge (it answered 404 meanwhile), nothing sent.
    node.api(
        Method::PATCH,
        &format!("/api/v1/images/{a_id}/visibility"),
        &key,
        Some(json!({"visibility": "public"})),
    )
    .await;

    // A path re-pointed at other bytes: the path's tag, and the old image's (no path left).
    let (s, _) = node
        .upload_with(&key, png.clone(), "a.png", &[("overwrite", "true")])
        .await;
    assert_eq!(s, 201);
    let body = signed_body(&hook.next().await);
    assert_eq!(body["reason"], "path re-pointed");
    assert_eq!(
        tags_of(&body),
        ["p.acme.a".to_string(), format!("i.acme.{a_id}")]
    );

    // A path deleted: its tag (the image keeps another path, so not the image's).
    node.upload(&key, png.clone(), "c.png").await;
    let (s, _, _) = node
        .api(Method::DELETE, "/api/v1/images/path/acme/c.png", &key, None)
        .await;
    assert_eq!(s, 200);
    expect_purge(&mut hook, "path deleted", &["p.acme.c"]).await;

    // Presets: an edit and a delete purge what named the preset.
    let (s, _, p) = node
        .api(
            Method::POST,
            "/api/v1/settings/presets",
            &key,
            Some(json!({"name": "card", "params": {"w": 30}})),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    let pid = p["id"].as_str().unwrap().to_string();
    node.api(
        Method::PUT,
        &format!("/api/v1/settings/presets/{pid}"),
        &key,
        Some(json!({"params": {"w": 60}})),
    )
    .await;
    expect_purge(&mut hook, "preset changed", &["r.acme.card"]).await;
    node.api(
        Method::DELETE,
        &format!("/api/v1/settings/presets/{pid}"),
        &key,
        None,
    )
    .await;
    let body = signed_body(&hook.next().await);
    assert_eq!(body["reason"], "preset deleted");

    // Settings: the console's theme changes no answer; the default quality changes them all.
    let (s, _, _) = node
        .api(
            Method::PUT,
            "/api/v1/settings",
            &key,
            Some(json!({"theme": "dark"})),
        )
        .await;
    assert_eq!(s, 200);
    node.api(
        Method::PUT,
        "/api/v1/settings",
        &key,
        Some(json!({"default_quality": 70})),
    )
    .await;
    expect_purge(&mut hook, "settings changed", &["a.acme"]).await;

    // Image deleted.
    let (s, _, _) = node
        .api(
            Method::DELETE,
            &format!("/api/v1/images/{b_id}"),
            &key,
            None,
        )
        .await;
    assert_eq!(s, 200);
    let body = signed_body(&hook.next().await);
    assert_eq!(
        body,
        json!({"tags": [format!("i.acme.{b_id}")], "reason": "image deleted", "account": "acme"})
    );

    // Suspension, then erasure: the account's tag each time; the erasure reports the purge
    // delivered and itself complete.
    let (s, _) = node
        .ops_call(Method::POST, "/admin/v1/accounts/acme/suspend", None)
        .await;
    assert_eq!(s, 200);
    expect_purge(&mut hook, "account suspended", &["a.acme"]).await;
    let (s, erased) = node
        .ops_call(Method::DELETE, "/admin/v1/accounts/acme", None)
        .await;
    assert_eq!(s, 200, "{erased}");
    let body = signed_body(&hook.next().await);
    assert_eq!(body["reason"], "account erased");
    assert_eq!(erased["edge_purge"], "delivered");
    assert_eq!(erased["complete"], true);
    // Nothing else was sent (the theme change, the re-publication, the uploads).
    assert!(hook.none_yet());
    assert_eq!(
        edge_metric(&node, "imgnode_edge_purges_delivered_total", "webhook").await,
        9.0
    );
}

#[tokio::test]
async fn a_purge_that_fails_is_retried_until_delivered_and_listed_meanwhile() {
    let mut hook = Recorder::start((200, "{}")).await;
    // The CDN's endpoint is down for the first three attempts.
    hook.answer_next(&[(503, "down"), (503, "down"), (503, "down")]);
    let (node, _creds) = node_with_webhook(&hook, "").await;
    let key = node.account_key("acme", "read,write").await;
    let (_, up) = node.upload(&key, fixture(PHOTO), "x.jpg").await;
    let id = up["id"].as_str().unwrap().to_string();
    node.api(Method::DELETE, &format!("/api/v1/images/{id}"), &key, None)
        .await;
    for _ in 0..3 {
        let r = hook.next().await;
        assert_eq!(signed_body(&r)["reason"], "image deleted");
    }
    // The fourth attempt succeeds, with the same purge.
    let body = signed_body(&hook.next().await);
    assert_eq!(tags_of(&body), [format!("i.acme.{id}")]);
    assert_eq!(
        edge_metric(&node, "imgnode_edge_purge_failures_total", "webhook").await,
        3.0
    );
    // Delivered: the outbox no longer lists it (the row goes in the same pass that got the
    // answer, before the next request could be made; poll the operator API for it).
    let mut listed = serde_json::Value::Null;
    for _ in 0..100 {
        let (_, v) = node
            .ops_call(Method::GET, "/admin/v1/edge/purges", None)
            .await;
        listed = v;
        if listed["total"] == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(listed["total"], 0, "{listed}");
}

#[tokio::test]
async fn a_purge_the_edge_keeps_refusing_is_given_up_listed_and_the_erasure_says_so() {
    let mut hook = Recorder::start((500, "no")).await;
    let (node, _creds) = node_with_webhook(&hook, "purge_attempts = 2\n").await;
    let key = node.account_key("acme", "read,write").await;
    node.upload(&key, fixture(PHOTO), "x.jpg").await;
    let (s, erased) = node
        .ops_call(Method::DELETE, "/admin/v1/accounts/acme", None)
        .await;
    assert_eq!(s, 200, "{erased}");
    for _ in 0..2 {
        assert_eq!(signed_body(&hook.next().await)["reason"], "account erased");
    }
    assert_eq!(erased["edge_purge"], "failed");
    assert_eq!(erased["complete"], true);
    let (_, listed) = node
        .ops_call(Method::GET, "/admin/v1/edge/purges?account=acme", None)
        .await;
    assert_eq!(listed["total"], 1, "{listed}");
    let p = &listed["purges"][0];
    assert_eq!(p["state"], "failed");
    assert_eq!(p["attempts"], 2);
    assert_eq!(p["tags"], json!(["a.acme"]));
    assert!(
        p["last_error"].as_str().unwrap().contains("HTTP 500"),
        "{p}"
    );
    assert_eq!(
        edge_metric(&node, "imgnode_edge_purges_given_up_total", "webhook").await,
        1.0
    );
}

#[tokio::test]
async fn cloudflare_and_fastly_get_their_documented_requests() {
    let mut cf = Recorder::start((
        200,
        r#"{"success": true, "errors": [], "result": {"id": "z"}}"#,
    ))
    .await;
    let mut fastly = Recorder::start((200, r#"{"status": "ok"}"#)).await;
    let creds = tempfile::tempdir().unwrap();
    let cf_token = secret_file(creds.path(), "cf", "cf-token-123\n");
    let fastly_token = secret_file(creds.path(), "fastly", "fastly-token-456");
    let node = TestNode::start_with(&format!(
        r#"
[edge]
purge_retry_base = "50ms"
[[edge.purge]]
kind = "cloudflare"
zone_id = "zone9"
token_file = "{}"
api_base = "{}/"
[[edge.purge]]
kind = "fastly"
name = "fastly-eu"
service_id = "svc7"
token_file = "{}"
soft = true
api_base = "{}"
"#,
        cf_token.display(),
        cf.url,
        fastly_token.display(),
        fastly.url
    ))
    .await;
    let key = node.account_key("acme", "read,write").await;
    let (_, up) = node.upload(&key, fixture(PHOTO), "x.jpg").await;
    let id = up["id"].as_str().unwrap().to_string();
    node.api(Method::DELETE, &format!("/api/v1/images/{id}"), &key, None)
        .await;

    let r = cf.next().await;
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/client/v4/zones/zone9/purge_cache");
    assert_eq!(r.headers["authorization"], "Bearer cf-token-123");
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.json(), json!({"tags": [format!("i.acme.{id}")]}));

    let r = fastly.next().await;
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/service/svc7/purge");
    assert_eq!(r.headers["fastly-key"], "fastly-token-456");
    assert_eq!(r.headers["fastly-soft-purge"], "1");
    assert_eq!(
        r.json(),
        json!({"surrogate_keys": [format!("i.acme.{id}")]})
    );

    // Cloudflare answering 200 without `success` is a failure, retried.
    cf.answer_next(&[(200, r#"{"success": false, "errors": [{"code": 1134}]}"#)]);
    node.api(
        Method::PUT,
        "/api/v1/settings",
        &key,
        Some(json!({"default_quality": 60})),
    )
    .await;
    assert_eq!(cf.next().await.json(), json!({"tags": ["a.acme"]}));
    assert_eq!(
        cf.next().await.json(),
        json!({"tags": ["a.acme"]}),
        "retried"
    );
    assert_eq!(
        fastly.next().await.json(),
        json!({"surrogate_keys": ["a.acme"]})
    );
    assert!(
        fastly.none_yet(),
        "the target that acknowledged is not sent it again"
    );
}

#[tokio::test]
async fn check_config_refuses_bad_purge_targets() {
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open.token");
    std::fs::write(&open, "t").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let text = format!(
        r#"
[edge]
tag_headers = ["Surrogate-Key", "X-Tags"]
[[edge.purge]]
kind = "akamai"
[[edge.purge]]
kind = "cloudflare"
zone_id = "z"
token_file = "{}"
urls = ["http://127.0.0.1:1/"]
[[edge.purge]]
kind = "webhook"
url = "ftp://example.com/"
"#,
        open.display()
    );
    let err = imgnode::config::parse(&text, Vec::new())
        .unwrap_err()
        .to_string();
    for needle in [
        "edge.tag_headers: `X-Tags`",
        "edge.purge[0].kind: `akamai`",
        "edge.purge[1].urls: does not apply",
        "readable by other users",
        "edge.purge[2].url: `ftp://example.com/` is not an http(s) URL",
        "edge.purge[2].secret_file: required",
    ] {
        assert!(err.contains(needle), "{needle} not in {err}");
    }
}

/// Polls `check` until it holds, for at most 20 s: the purge is delivered by a background
/// worker, and what the test waits for is its effect, observed.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "not within 20 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn delivered(node: &TestNode) -> f64 {
    edge_metric(node, "imgnode_edge_purges_delivered_total", "varnish").await
}

/// Waits until the Varnish target acknowledged one purge more than `count`, and counts it.
async fn one_more_delivered(node: &TestNode, count: &mut f64) {
    *count += 1.0;
    let want = *count;
    eventually("purge delivered", || async move {
        delivered(node).await >= want
    })
    .await;
}

/// GETs `path` through Varnish: (status, X-Edge-Cache).
async fn via(edge: &crate::harness::Varnish, path: &str) -> (u16, String) {
    let res = reqwest::get(format!("{}{path}", edge.base)).await.unwrap();
    let state = res
        .headers()
        .get("x-edge-cache")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (res.status().as_u16(), state)
}

#[tokio::test]
async fn varnish_drops_a_variant_as_soon_as_its_change_commits() {
    use crate::harness::Varnish;
    let port = Varnish::free_port();
    let node = TestNode::start_operated(&format!(
        r#"
[edge]
purge_retry_base = "50ms"
purge_retry_max = "200ms"
[[edge.purge]]
kind = "varnish"
urls = ["http://127.0.0.1:{port}/"]
"#
    ))
    .await;
    let edge = Varnish::start(port, node.app.public_addr.port()).await;
    let key = node.account_key("acme", "read,write").await;
    let photo = fixture(PHOTO);
    let png = fixture("formats/png_rgba.png");
    let (_, a) = node.upload(&key, photo.clone(), "a.jpg").await;
    let a_id = a["id"].as_str().unwrap().to_string();
    node.upload(&key, png.clone(), "b.png").await;
    node.api(
        Method::POST,
        "/api/v1/settings/presets",
        &key,
        Some(json!({"name": "card", "params": {"w": 30}})),
    )
    .await;

    let mut count = 0.0;

    // Image made private: gone from Varnish (the node now answers 404).
    warm(&edge, "/i/acme/a.webp?w=40").await;
    node.api(
        Method::PATCH,
        &format!("/api/v1/images/{a_id}/visibility"),
        &key,
        Some(json!({"visibility": "private"})),
    )
    .await;
    one_more_delivered(&node, &mut count).await;
    assert_eq!(via(&edge, "/i/acme/a.webp?w=40").await.0, 404);

    // A preset edited: URLs naming it render anew.
    warm(&edge, "/i/acme/b.png?p:card").await;
    let (_, _, presets) = node
        .api(Method::GET, "/api/v1/settings/presets", &key, None)
        .await;
    let pid = presets["presets"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{presets}"))
        .to_string();
    node.api(
        Method::PUT,
        &format!("/api/v1/settings/presets/{pid}"),
        &key,
        Some(json!({"params": {"w": 20}})),
    )
    .await;
    one_more_delivered(&node, &mut count).await;
    let res = reqwest::get(format!("{}/i/acme/b.png?p:card", edge.base))
        .await
        .unwrap();
    assert_eq!(res.headers()["x-edge-cache"], "MISS");
    assert_eq!(
        crate::harness::dimensions(&res.bytes().await.unwrap()).0,
        20
    );

    // A path re-pointed at other bytes.
    node.upload(&key, fixture("photos/dune.jpg"), "c.jpg").await;
    warm(&edge, "/i/acme/c.webp?w=40").await;
    node.upload_with(&key, png.clone(), "c.png", &[("overwrite", "true")])
        .await;
    one_more_delivered(&node, &mut count).await;
    let again = reqwest::get(format!("{}/i/acme/c.webp?w=40", edge.base))
        .await
        .unwrap();
    assert_eq!(again.headers()["x-edge-cache"], "MISS");
    let (w, h) = crate::harness::dimensions(&again.bytes().await.unwrap());
    let (pw, ph) = crate::harness::dimensions(&png);
    assert_eq!(
        (w, h),
        (40, (40 * ph + pw / 2) / pw),
        "the new bytes' shape"
    );

    // Settings that change rendering.
    warm(&edge, "/i/acme/b.webp?w=41").await;
    node.api(
        Method::PUT,
        "/api/v1/settings",
        &key,
        Some(json!({"default_quality": 55})),
    )
    .await;
    one_more_delivered(&node, &mut count).await;
    assert_eq!(
        via(&edge, "/i/acme/b.webp?w=41").await,
        (200, "MISS".into())
    );

    // Varnish down while a delete commits: the purge waits in the outbox and is delivered
    // once Varnish is back (a restarted Varnish has an empty cache: what is checked is that
    // the purge arrives, from the outbox, without another change).
    edge.stop().await;
    let (_, _, b) = node
        .api(Method::GET, "/api/v1/images?limit=10", &key, None)
        .await;
    let b_id = b["images"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{b}"))
        .to_string();
    let (s, _, _) = node
        .api(
            Method::DELETE,
            &format!("/api/v1/images/{b_id}"),
            &key,
            None,
        )
        .await;
    assert_eq!(s, 200);
    eventually("a failed attempt", || async {
        edge_metric(&node, "imgnode_edge_purge_failures_total", "varnish").await >= 1.0
    })
    .await;
    let (_, listed) = node
        .ops_call(Method::GET, "/admin/v1/edge/purges", None)
        .await;
    assert_eq!(listed["total"], 1, "{listed}");
    assert_eq!(listed["purges"][0]["state"], "pending");
    let edge = Varnish::start(port, node.app.public_addr.port()).await;
    count += 1.0;
    eventually("purge delivered after Varnish came back", || async {
        delivered(&node).await >= count
    })
    .await;
    let (_, listed) = node
        .ops_call(Method::GET, "/admin/v1/edge/purges", None)
        .await;
    assert_eq!(listed["total"], 0, "{listed}");

    // A path deleted (its image keeps another path).
    let garden = fixture("photos/garden.jpg");
    node.upload(&key, garden.clone(), "e.jpg").await;
    node.upload(&key, garden, "e2.jpg").await;
    warm(&edge, "/i/acme/e.webp?w=40").await;
    let (s, _, _) = node
        .api(Method::DELETE, "/api/v1/images/path/acme/e.jpg", &key, None)
        .await;
    assert_eq!(s, 200);
    one_more_delivered(&node, &mut count).await;
    assert_eq!(via(&edge, "/i/acme/e.webp?w=40").await.0, 404);

    // A preset deleted: URLs naming it are refused now.
    warm(&edge, "/i/acme/e2.png?p:card").await;
    node.api(Method::DELETE, "/api/v1/settings/presets/card", &key, None)
        .await;
    one_more_delivered(&node, &mut count).await;
    assert_eq!(via(&edge, "/i/acme/e2.png?p:card").await.0, 400);

    // The account suspended: nothing of it is served from the edge.
    warm(&edge, "/i/acme/e2.webp?w=41").await;
    let (s, _) = node
        .ops_call(Method::POST, "/admin/v1/accounts/acme/suspend", None)
        .await;
    assert_eq!(s, 200);
    one_more_delivered(&node, &mut count).await;
    assert_eq!(via(&edge, "/i/acme/e2.webp?w=41").await.0, 403);

    // Resumed, then erased: the erasure answers once the edge has dropped the account.
    node.ops_call(Method::POST, "/admin/v1/accounts/acme/resume", None)
        .await;
    warm(&edge, "/i/acme/e2.webp?w=42").await;
    let (s, erased) = node
        .ops_call(Method::DELETE, "/admin/v1/accounts/acme", None)
        .await;
    assert_eq!(s, 200, "{erased}");
    assert_eq!(erased["edge_purge"], "delivered");
    assert_eq!(via(&edge, "/i/acme/e2.webp?w=42").await.0, 404);
    drop(edge);
}

/// Cached at the edge: the first request misses, the second does not reach the node.
async fn warm(edge: &crate::harness::Varnish, path: &str) {
    assert_eq!(via(edge, path).await, (200, "MISS".into()), "{path}");
    assert_eq!(via(edge, path).await, (200, "HIT".into()), "{path}");
}

/// Every `expr` in a Grafana dashboard (panels and variables).
fn dashboard_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| dashboard_exprs(i, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_dashboard_queries_only_metrics_a_node_exports_in_valid_promql() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/grafana/imgnode.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 20, "{}", exprs.len());

    // A node with a purge target, after real traffic: an upload, a render, a hit, a 404 and
    // a purge.
    let mut hook = Recorder::start((200, "{}")).await;
    let (node, _creds) = node_with_webhook(&hook, "").await;
    let key = node.account_key("acme", "read,write").await;
    let (_, up) = node.upload(&key, fixture(PHOTO), "x.jpg").await;
    assert_eq!(node.get("/i/acme/x.webp?w=60").await.status(), 200);
    assert_eq!(node.get("/i/acme/x.webp?w=60").await.status(), 200);
    assert_eq!(node.get("/i/acme/missing.webp").await.status(), 404);
    node.api(
        Method::DELETE,
        &format!("/api/v1/images/{}", up["id"].as_str().unwrap()),
        &key,
        None,
    )
    .await;
    hook.next().await;
    let scraped = node.metrics_text().await;
    let exported: std::collections::BTreeSet<&str> = scraped
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();

    let mut named = std::collections::BTreeSet::new();
    for expr in &exprs {
        let mut rest = expr.as_str();
        while let Some(i) = rest.find("imgnode_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name)
                .to_string();
            named.insert(base);
        }
    }
    assert!(named.len() >= 15, "{named:?}");
    let missing: Vec<&String> = named
        .iter()
        .filter(|n| !exported.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics no node exports: {missing:?}"
    );

    // Valid PromQL: every query as a recording rule, with Grafana's variables filled in,
    // through promtool.
    let dir = tempfile::tempdir().unwrap();
    let rules: Vec<serde_json::Value> = exprs
        .iter()
        .filter(|e| !e.starts_with("label_values("))
        .enumerate()
        .map(|(i, e)| {
            let e = e
                .replace("$__rate_interval", "5m")
                .replace("$instance", ".*");
            json!({"record": format!("imgnode:dashboard_{i}"), "expr": e})
        })
        .collect();
    let file = dir.path().join("dashboard-rules.yml");
    // JSON is YAML: promtool reads it as a rules file.
    std::fs::write(
        &file,
        serde_json::to_string(&json!({"groups": [{"name": "dashboard", "rules": rules}]})).unwrap(),
    )
    .unwrap();
    crate::harness::promtool_check_rules(&file);
}

#[tokio::test]
async fn a_purge_left_in_the_outbox_by_a_stopped_node_is_delivered_after_its_restart() {
    let creds = tempfile::tempdir().unwrap();
    let secret = secret_file(creds.path(), "hook.secret", SECRET);
    let config = |url: &str| {
        format!(
            "[edge]\npurge_retry_base = \"50ms\"\npurge_retry_max = \"100ms\"\n\
             [[edge.purge]]\nkind = \"webhook\"\nurl = \"{url}/hook\"\nsecret_file = \"{}\"\n",
            secret.display()
        )
    };
    // The first run's webhook receiver is down (nothing listens on a released port).
    let dead = format!("http://127.0.0.1:{}", crate::harness::Varnish::free_port());
    let node = TestNode::start_with(&config(&dead)).await;
    let key = node.account_key("acme", "read,write").await;
    let (_, up) = node.upload(&key, fixture(PHOTO), "x.jpg").await;
    let id = up["id"].as_str().unwrap().to_string();
    node.api(Method::DELETE, &format!("/api/v1/images/{id}"), &key, None)
        .await;
    eventually("a failed attempt", || async {
        edge_metric(&node, "imgnode_edge_purge_failures_total", "webhook").await >= 1.0
    })
    .await;
    let dir = node.stop().await;

    // The same data directory (and database) with the receiver up: the purge goes out.
    let mut hook = Recorder::start((200, "{}")).await;
    let node = TestNode::start_in(dir, &config(&hook.url)).await;
    expect_purge(&mut hook, "image deleted", &[&format!("i.acme.{id}")]).await;
    node.stop().await;
}
