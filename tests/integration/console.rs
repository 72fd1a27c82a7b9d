//! The console's sign-in and session layer through real HTTP: API-key and passkey sign-in
//! (WebAuthn ceremonies driven by webauthn-rs's software passkey), sessions authorising the
//! tenant API as their key, CSRF and Origin, timeouts, revocation, the failure limiter, and
//! the security headers.

use reqwest::Method as M;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};

use crate::harness::{TestNode, assert_json_error, fixture};

const CSP: &str = "default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; \
                   frame-ancestors 'none'; form-action 'self'";

/// A signed-in browser: its session cookie (`name=value`) and CSRF token.
#[derive(Clone, Debug)]
struct Session {
    cookie: String,
    csrf: String,
}

/// What a console page would send: the console's Origin, the session's cookie and token.
struct Browser<'a> {
    node: &'a TestNode,
    origin: String,
}

impl<'a> Browser<'a> {
    fn new(node: &'a TestNode) -> Browser<'a> {
        Browser {
            node,
            origin: format!("http://localhost:{}", node.app.public_addr.port()),
        }
    }

    fn origin_url(&self) -> Url {
        Url::parse(&self.origin).unwrap()
    }

    /// Sends a request as written: `origin`/`session`/`csrf` each left out when `None`.
    async fn raw(
        &self,
        method: M,
        path: &str,
        origin: Option<&str>,
        cookie: Option<&str>,
        csrf: Option<&str>,
        body: Option<Value>,
    ) -> (u16, HeaderMap, Value) {
        let mut req = self
            .node
            .client
            .request(method, format!("{}{path}", self.node.base));
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        if let Some(t) = csrf {
            req = req.header("x-csrf-token", t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.unwrap();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, headers, value)
    }

    /// A call of the console's page with `session` (or none).
    async fn call(
        &self,
        method: M,
        path: &str,
        session: Option<&Session>,
        body: Option<Value>,
    ) -> (u16, HeaderMap, Value) {
        self.raw(
            method,
            path,
            Some(&self.origin),
            session.map(|s| s.cookie.as_str()),
            session.map(|s| s.csrf.as_str()),
            body,
        )
        .await
    }

    fn session_of(headers: &HeaderMap, body: &Value) -> Session {
        let set = headers["set-cookie"].to_str().unwrap();
        Session {
            cookie: set.split(';').next().unwrap().to_string(),
            csrf: body["csrf_token"].as_str().unwrap().to_string(),
        }
    }

    async fn key_sign_in(&self, key: &str) -> Session {
        let (s, h, body) = self
            .call(
                M::POST,
                "/console/api/session/key",
                None,
                Some(json!({"key": key})),
            )
            .await;
        assert_eq!(s, 201, "{body}");
        Browser::session_of(&h, &body)
    }

    /// Registers a passkey of `authenticator` named `name`; the answer.
    async fn register(
        &self,
        session: &Session,
        authenticator: &mut SoftPasskey,
        name: &str,
    ) -> (u16, Value) {
        let (s, _, start) = self
            .call(
                M::POST,
                "/console/api/passkeys/options",
                Some(session),
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(s, 200, "{start}");
        let options: CreationChallengeResponse =
            serde_json::from_value(start["options"].clone()).unwrap();
        let credential = authenticator
            .do_registration(self.origin_url(), options)
            .expect("the soft passkey registers");
        let (s, _, body) = self
            .call(
                M::POST,
                "/console/api/passkeys",
                Some(session),
                Some(json!({"ceremony": start["ceremony"], "credential": credential})),
            )
            .await;
        (s, body)
    }

    /// Starts a passkey sign-in to `account` and has `authenticator` answer it: the
    /// ceremony id and the credential to send.
    async fn passkey_assertion(
        &self,
        account: &str,
        authenticator: &mut SoftPasskey,
    ) -> (Value, Value) {
        let (s, _, start) = self
            .call(
                M::POST,
                "/console/api/session/passkey/options",
                None,
                Some(json!({"account": account})),
            )
            .await;
        assert_eq!(s, 200, "{start}");
        let options: RequestChallengeResponse =
            serde_json::from_value(start["options"].clone()).unwrap();
        let credential = authenticator
            .do_authentication(self.origin_url(), options)
            .expect("the soft passkey signs");
        (
            start["ceremony"].clone(),
            serde_json::to_value(credential).unwrap(),
        )
    }

    async fn passkey_sign_in(&self, account: &str, authenticator: &mut SoftPasskey) -> Session {
        let (ceremony, credential) = self.passkey_assertion(account, authenticator).await;
        let (s, h, body) = self
            .call(
                M::POST,
                "/console/api/session/passkey",
                None,
                Some(json!({"ceremony": ceremony, "credential": credential})),
            )
            .await;
        assert_eq!(s, 201, "{body}");
        assert_eq!(body["signed_in_with"], "passkey");
        Browser::session_of(&h, &body)
    }

    async fn session_status(&self, session: &Session) -> u16 {
        self.call(M::GET, "/console/api/session", Some(session), None)
            .await
            .0
    }
}

/// The soft passkey claims user verification (webauthn-rs's passkeys require it).
fn authenticator() -> SoftPasskey {
    SoftPasskey::new(true)
}

#[tokio::test]
async fn passkeys_are_registered_listed_used_and_removed() {
    let node = TestNode::start().await;
    let browser = Browser::new(&node);
    let key = node.account_key("acme", "read,write").await;
    let session = browser.key_sign_in(&key).await;

    let mut laptop = authenticator();
    let mut phone = authenticator();
    let (s, added) = browser.register(&session, &mut laptop, "laptop").await;
    assert_eq!(s, 201, "{added}");
    assert_eq!(added["name"], "laptop");
    let (s, added) = browser
        .register(&session, &mut phone, "phone <b>&</b>")
        .await;
    assert_eq!(s, 201, "{added}");
    let phone_id = added["id"].as_str().unwrap().to_string();
    let (s, _, list) = browser
        .call(M::GET, "/console/api/passkeys", Some(&session), None)
        .await;
    assert_eq!(s, 200);
    let mut names: Vec<&str> = list["passkeys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["laptop", "phone <b>&</b>"]);

    // Signed out, then in again with the phone: a session of the same account and key.
    let (s, _, _) = browser
        .call(M::DELETE, "/console/api/session", Some(&session), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(browser.session_status(&session).await, 401);
    let by_phone = browser.passkey_sign_in("acme", &mut phone).await;
    let (s, _, me) = browser
        .call(M::GET, "/console/api/session", Some(&by_phone), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(me["account"], "acme");
    assert_eq!(me["scopes"], "read,write");
    let (s, _, _) = browser
        .call(M::GET, "/api/v1/settings/api-keys", Some(&by_phone), None)
        .await;
    assert_eq!(s, 200, "the passkey's session calls the tenant API");
    let (_, _, list) = browser
        .call(M::GET, "/console/api/passkeys", Some(&by_phone), None)
        .await;
    let phone = list["passkeys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == phone_id.as_str())
        .unwrap();
    assert!(phone["last_used_at"].is_string(), "{list}");

    // A ceremony is used once: the same assertion again is refused.
    let (ceremony, credential) = browser.passkey_assertion("acme", &mut laptop).await;
    let finish = json!({"ceremony": ceremony, "credential": credential});
    let (s, _, _) = browser
        .call(
            M::POST,
            "/console/api/session/passkey",
            None,
            Some(finish.clone()),
        )
        .await;
    assert_eq!(s, 201);
    let (s, h, body) = browser
        .call(M::POST, "/console/api/session/passkey", None, Some(finish))
        .await;
    assert_json_error(s, &h, body.to_string().as_bytes(), 401, "UNAUTHORIZED");

    // Removing the phone ends the sessions it opened.
    let by_key = browser.key_sign_in(&key).await;
    let (s, _, _) = browser
        .call(
            M::DELETE,
            &format!("/console/api/passkeys/{phone_id}"),
            Some(&by_key),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(browser.session_status(&by_phone).await, 401);
    let (_, _, list) = browser
        .call(M::GET, "/console/api/passkeys", Some(&by_key), None)
        .await;
    assert_eq!(list["total"], 1);
    let (s, _, _) = browser
        .call(
            M::DELETE,
            &format!("/console/api/passkeys/{phone_id}"),
            Some(&by_key),
            None,
        )
        .await;
    assert_eq!(s, 404);
    // An account without passkeys has nothing to sign in with.
    let (s, _, _) = browser
        .call(
            M::POST,
            "/console/api/session/passkey/options",
            None,
            Some(json!({"account": "nobody"})),
        )
        .await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn pending_ceremonies_are_bounded_per_address() {
    let node = TestNode::start().await;
    let browser = Browser::new(&node);
    let key = node.account_key("acme", "read,write").await;
    let session = browser.key_sign_in(&key).await;
    let (s, _) = browser.register(&session, &mut authenticator(), "k").await;
    assert_eq!(s, 201);
    let start = json!({"account": "acme"});
    for i in 0..16 {
        let (s, _, b) = browser
            .call(
                M::POST,
                "/console/api/session/passkey/options",
                None,
                Some(start.clone()),
            )
            .await;
        assert_eq!(s, 200, "ceremony {i}: {b}");
    }
    let (s, h, body) = browser
        .call(
            M::POST,
            "/console/api/session/passkey/options",
            None,
            Some(start),
        )
        .await;
    assert_json_error(s, &h, body.to_string().as_bytes(), 429, "RATE_LIMITED");
    assert!(h.contains_key("retry-after"));
}

#[tokio::test]
async fn a_session_acts_as_its_key_and_never_for_another_account() {
    let node = TestNode::start_with("[demo]\nseed = false\n").await;
    let browser = Browser::new(&node);
    let acme = node.account_key("acme", "read,write").await;
    let reader = node.account_key("acme", "read").await;
    let bravo = node.account_key("bravo", "read,write").await;
    let (s, up) = node
        .upload(&bravo, fixture("photos/ladybird.jpg"), "secret/bug.jpg")
        .await;
    assert_eq!(s, 201, "{up}");
    let bravo_image = up["id"].as_str().unwrap().to_string();
    let (s, up) = node
        .upload(&acme, fixture("photos/dune.jpg"), "mine/dune.jpg")
        .await;
    assert_eq!(s, 201, "{up}");

    let session = browser.key_sign_in(&acme).await;
    let (s, _, list) = browser
        .call(M::GET, "/api/v1/images?path=mine", Some(&session), None)
        .await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["total"], 1, "{list}");
    let (s, _, list) = browser
        .call(M::GET, "/api/v1/images?path=secret", Some(&session), None)
        .await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["total"], 0, "{list}");
    let (_, _, root) = browser
        .call(M::GET, "/api/v1/images", Some(&session), None)
        .await;
    assert!(!root.to_string().contains("secret"), "{root}");
    let (s, _, _) = browser
        .call(
            M::GET,
            &format!("/api/v1/images/{bravo_image}"),
            Some(&session),
            None,
        )
        .await;
    assert_eq!(s, 404, "another account's image is not there");
    let (s, _, _) = browser
        .call(
            M::DELETE,
            &format!("/api/v1/images/{bravo_image}"),
            Some(&session),
            None,
        )
        .await;
    assert_eq!(s, 404);
    let (s, _, _) = node
        .api(
            M::GET,
            &format!("/api/v1/images/{bravo_image}"),
            &bravo,
            None,
        )
        .await;
    assert_eq!(s, 200, "bravo's image is untouched");

    // A bearer key wins over the cookie: the request is the key's, not the session's.
    let mut req = node
        .client
        .get(format!("{}/api/v1/images", node.base))
        .bearer_auth(&bravo)
        .header("cookie", &session.cookie);
    req = req.header("origin", &browser.origin);
    let text = req.send().await.unwrap().text().await.unwrap();
    assert!(text.contains("secret") && !text.contains("mine"), "{text}");

    // The key's scopes are the session's: a read key's session cannot write.
    let read_session = browser.key_sign_in(&reader).await;
    let (s, h, body) = browser
        .call(
            M::POST,
            "/api/v1/settings/api-keys",
            Some(&read_session),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_json_error(s, &h, body.to_string().as_bytes(), 403, "FORBIDDEN");
    let (s, _, _) = browser
        .call(
            M::POST,
            "/console/api/passkeys/options",
            Some(&read_session),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(s, 403, "adding a credential needs write");
    // A key made in the console is the session key's child: revoked with it.
    let (s, _, made) = browser
        .call(
            M::POST,
            "/api/v1/settings/api-keys",
            Some(&session),
            Some(json!({"name": "from the console"})),
        )
        .await;
    assert_eq!(s, 201, "{made}");
    let (s, h, _) = browser
        .call(M::GET, "/api/v1/settings", Some(&session), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(h["cache-control"], "no-store");

    // A session's calls are its key's use: the sign-in and three calls, four requests
    // (counted in memory, written at shutdown).
    let counted = node.account_key("acme", "read").await;
    let counted_session = browser.key_sign_in(&counted).await;
    for _ in 0..3 {
        let (s, _, _) = browser
            .call(M::GET, "/api/v1/images", Some(&counted_session), None)
            .await;
        assert_eq!(s, 200);
    }
    let dir = node.stop().await;
    let node = TestNode::start_in(dir, "[demo]\nseed = false\n").await;
    let (_, _, keys) = node
        .api(M::GET, "/api/v1/settings/api-keys", &acme, None)
        .await;
    let key = keys["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| counted.starts_with(k["key_prefix"].as_str().unwrap()))
        .expect("the key");
    assert_eq!(key["total_requests"], 4, "{key}");
    assert!(key["last_used_at"].is_number(), "{key}");
}

#[tokio::test]
async fn state_changes_need_the_sessions_token_and_the_consoles_origin() {
    let node = TestNode::start().await;
    let browser = Browser::new(&node);
    let key = node.account_key("acme", "read,write").await;
    let session = browser.key_sign_in(&key).await;
    let other = browser.key_sign_in(&key).await;
    assert_ne!(session.csrf, other.csrf);
    let body = json!({"name": "k"});
    let origin = browser.origin.clone();
    let loopback = format!("http://127.0.0.1:{}", node.app.public_addr.port());
    let cases: [(Option<&str>, Option<&str>, &str); 5] = [
        (Some(&origin), None, "no token"),
        (Some(&origin), Some(&other.csrf), "another session's token"),
        (
            Some("http://evil.example"),
            Some(&session.csrf),
            "a foreign origin",
        ),
        (Some("null"), Some(&session.csrf), "an opaque origin"),
        (None, Some(&session.csrf), "no origin"),
    ];
    for (origin, csrf, what) in cases {
        for path in ["/api/v1/settings/api-keys", "/console/api/passkeys/options"] {
            let (s, h, b) = browser
                .raw(
                    M::POST,
                    path,
                    origin,
                    Some(&session.cookie),
                    csrf,
                    Some(body.clone()),
                )
                .await;
            assert_eq!(s, 403, "{what} on {path}: {b}");
            assert_json_error(s, &h, b.to_string().as_bytes(), 403, "FORBIDDEN");
        }
        let (s, _, _) = browser
            .raw(
                M::DELETE,
                "/console/api/session",
                origin,
                Some(&session.cookie),
                csrf,
                None,
            )
            .await;
        assert_eq!(s, 403, "{what}: sign-out");
    }
    assert_eq!(
        browser.session_status(&session).await,
        200,
        "still signed in"
    );
    // Sign-in itself needs the console's Origin (no login CSRF).
    let (s, _, _) = browser
        .raw(
            M::POST,
            "/console/api/session/key",
            Some("http://evil.example"),
            None,
            None,
            Some(json!({"key": key})),
        )
        .await;
    assert_eq!(s, 403);
    // The token and the origin (localhost, or the loopback address) together pass.
    for o in [&origin, &loopback] {
        let (s, _, b) = browser
            .raw(
                M::POST,
                "/api/v1/settings/api-keys",
                Some(o),
                Some(&session.cookie),
                Some(&session.csrf),
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, 201, "{o}: {b}");
    }
}

#[tokio::test]
async fn sessions_end_when_idle_and_after_their_absolute_limit() {
    let node =
        TestNode::start_with("[console]\nidle_timeout = \"2s\"\nabsolute_timeout = \"5s\"\n").await;
    let browser = Browser::new(&node);
    let key = node.account_key("acme", "read,write").await;
    let now = imgnode::store::now_unix;
    /// Lets the wall clock pass `deadline` (the timeouts are in whole seconds).
    async fn until(deadline: i64) {
        while imgnode::store::now_unix() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    // Idle: unused from sign-in (at `before` or later) for 2 s.
    let before = now();
    let idle = browser.key_sign_in(&key).await;
    let after = now();
    until(after + 1).await;
    assert_eq!(browser.session_status(&idle).await, 200, "used within 2 s");
    let used = now();
    until(used + 3).await;
    let (s, h, b) = browser
        .call(M::GET, "/api/v1/settings", Some(&idle), None)
        .await;
    assert_json_error(s, &h, b.to_string().as_bytes(), 401, "UNAUTHORIZED");
    assert_eq!(browser.session_status(&idle).await, 401);
    assert!(before <= after);

    // Absolute: used every 100 ms, still over 5 s after sign-in.
    let before = now();
    let busy = browser.key_sign_in(&key).await;
    loop {
        let asked = now();
        let status = browser.session_status(&busy).await;
        if status == 401 {
            assert!(
                now() >= before + 5,
                "ended early, at {asked} (signed in at {before})"
            );
            break;
        }
        assert_eq!(status, 200);
        assert!(asked < before + 8, "never ended");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn sign_out_key_revocation_suspension_and_erasure_end_sessions() {
    let node = TestNode::start_operated("").await;
    let browser = Browser::new(&node);
    let owner = node.account_key("acme", "read,write,account").await;
    let (s, _, made) = node
        .api(
            M::POST,
            "/api/v1/settings/api-keys",
            &owner,
            Some(json!({"name": "laptop"})),
        )
        .await;
    assert_eq!(s, 201, "{made}");
    let laptop_key = made["key"].as_str().unwrap().to_string();
    let laptop_id = made["id"].as_str().unwrap().to_string();

    // Sign-out clears the cookie and ends the session for the API too.
    let session = browser.key_sign_in(&laptop_key).await;
    let (s, h, _) = browser
        .call(M::DELETE, "/console/api/session", Some(&session), None)
        .await;
    assert_eq!(s, 200);
    let cleared = h["set-cookie"].to_str().unwrap();
    assert!(cleared.starts_with("imgnode_session=;") && cleared.contains("Max-Age=0"));
    let (s, _, _) = browser
        .call(M::GET, "/api/v1/settings", Some(&session), None)
        .await;
    assert_eq!(s, 401);

    // Revoking the key ends its sessions and removes the passkeys registered under it.
    let on_laptop = browser.key_sign_in(&laptop_key).await;
    let (s, _) = browser
        .register(&on_laptop, &mut authenticator(), "laptop")
        .await;
    assert_eq!(s, 201);
    let on_owner = browser.key_sign_in(&owner).await;
    let (_, _, list) = browser
        .call(M::GET, "/console/api/passkeys", Some(&on_owner), None)
        .await;
    assert_eq!(list["total"], 1);
    let (s, _, _) = node
        .api(
            M::DELETE,
            &format!("/api/v1/settings/api-keys/{laptop_id}"),
            &owner,
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(browser.session_status(&on_laptop).await, 401);
    let (_, _, list) = browser
        .call(M::GET, "/console/api/passkeys", Some(&on_owner), None)
        .await;
    assert_eq!(list["total"], 0, "{list}");
    assert_eq!(browser.session_status(&on_owner).await, 200);

    // Suspension ends every session of the account, for good.
    let (s, _) = node
        .ops_call(M::POST, "/admin/v1/accounts/acme/suspend", None)
        .await;
    assert_eq!(s, 200);
    assert_ne!(browser.session_status(&on_owner).await, 200);
    let (s, h, b) = browser
        .call(
            M::POST,
            "/console/api/session/key",
            None,
            Some(json!({"key": owner})),
        )
        .await;
    assert_json_error(s, &h, b.to_string().as_bytes(), 403, "FORBIDDEN");
    let (s, _) = node
        .ops_call(M::POST, "/admin/v1/accounts/acme/resume", None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(browser.session_status(&on_owner).await, 401);

    // Erasure (from the console itself, with the owner key's `account` scope).
    let session = browser.key_sign_in(&owner).await;
    let (s, _, b) = browser
        .call(
            M::DELETE,
            "/api/v1/account",
            Some(&session),
            Some(json!({"confirm": "acme"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(browser.session_status(&session).await, 401);
}

#[tokio::test]
async fn failed_sign_ins_count_against_the_address_as_the_apis_do() {
    let node = TestNode::start().await;
    let browser = Browser::new(&node);
    let key = node.account_key("acme", "read,write").await;
    let wrong = format!("imgsrc_{}", "0".repeat(49));
    let mut refused = None;
    for i in 0..40 {
        let (s, h, b) = browser
            .call(
                M::POST,
                "/console/api/session/key",
                None,
                Some(json!({"key": wrong})),
            )
            .await;
        if s == 429 {
            assert_json_error(s, &h, b.to_string().as_bytes(), 429, "RATE_LIMITED");
            assert!(h.contains_key("retry-after"));
            refused = Some(i);
            break;
        }
        assert_json_error(s, &h, b.to_string().as_bytes(), 401, "UNAUTHORIZED");
    }
    assert!(refused.is_some_and(|i| i >= 10), "{refused:?}");
    // The same allowance as the API's: a bad key there is refused too now.
    let (s, _, _) = node.api(M::GET, "/api/v1/settings", &wrong, None).await;
    assert_eq!(s, 429);
    // A forged session cookie is a failure as well.
    let forged = format!("imgnode_session={}", "ab".repeat(32));
    let (s, _, _) = browser
        .raw(
            M::GET,
            "/console/api/session",
            None,
            Some(&forged),
            None,
            None,
        )
        .await;
    assert_eq!(s, 429);
    // A valid key still signs in from the blocked address.
    browser.key_sign_in(&key).await;
}

#[tokio::test]
async fn every_console_answer_carries_the_security_headers() {
    let node = TestNode::start().await;
    let browser = Browser::new(&node);
    let key = node.account_key("acme", "read,write").await;
    let check = |what: &str, h: &HeaderMap| {
        assert_eq!(h["content-security-policy"], CSP, "{what}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{what}");
    };
    for (path, status, kind) in [
        ("/console/", 200, "text/html; charset=utf-8"),
        ("/console/console.js", 200, "text/javascript; charset=utf-8"),
        ("/console/console.css", 200, "text/css; charset=utf-8"),
        ("/console/api/session", 401, "application/json"),
        ("/console/nothing", 404, "application/json"),
        ("/console/api/passkeys/options", 405, "application/json"),
    ] {
        let res = node.get(path).await;
        assert_eq!(res.status().as_u16(), status, "{path}");
        assert_eq!(res.headers()["content-type"], kind, "{path}");
        check(path, res.headers());
        if kind == "application/json" {
            assert_eq!(res.headers()["cache-control"], "no-store", "{path}");
        }
    }
    let res = node
        .client
        .get(format!("{}/console", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status().as_u16(),
        200,
        "/console redirects to /console/"
    );
    check("redirected", res.headers());

    // The page loads its one module and has no inline script or handler.
    let page = node.get("/console/").await.text().await.unwrap();
    assert_eq!(page.matches("<script").count(), 1);
    assert!(page.contains(r#"<script type="module" src="/console/console.js"></script>"#));
    for handler in ["onclick=", "onload=", "onsubmit=", "javascript:"] {
        assert!(!page.contains(handler), "{handler}");
    }
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no third-party asset"
    );

    let (s, h, b) = browser
        .call(
            M::POST,
            "/console/api/session/key",
            None,
            Some(json!({"key": key})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    check("sign-in", &h);
    assert_eq!(h["cache-control"], "no-store");
    let cookie = h["set-cookie"].to_str().unwrap();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "a loopback http console: {cookie}"
    );
    let (s, h, b) = browser
        .call(
            M::POST,
            "/console/api/session/key",
            None,
            Some(json!({"key": "nope"})),
        )
        .await;
    assert_eq!(s, 401, "{b}");
    check("failed sign-in", &h);
}

#[tokio::test]
async fn a_switched_off_console_answers_nothing_and_its_cookies_are_ignored() {
    let node = TestNode::start_with("[console]\nenabled = false\n").await;
    let (s, h, b) = node.fetch("/console/").await;
    assert_json_error(s, &h, &b, 404, "NOT_FOUND");
    let res = node
        .client
        .get(format!("{}/api/v1/settings", node.base))
        .header("cookie", format!("imgnode_session={}", "ab".repeat(32)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
}
