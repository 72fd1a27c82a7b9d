//! API key abuse, over HTTP against real nodes: what a key may do (the `account` scope), what
//! a key may create (expiry, scopes, count), what revoking it takes with it, and the rate one
//! account gets however many keys it holds.

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{TestNode, assert_json_error, fixture};
use crate::jwt::{b64, serve_jwks, sign};

/// Creates an account through the operator API; returns its first key's answer.
async fn account(node: &TestNode, name: &str) -> Value {
    let (status, body) = node
        .ops_call(
            Method::POST,
            "/admin/v1/accounts",
            Some(json!({"name": name, "plan": "pro"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["api_key"].clone()
}

/// `POST /api/v1/settings/api-keys` with `key`: status and answer.
async fn create_key(node: &TestNode, key: &str, body: Value) -> (u16, Value) {
    let (status, _, created) = node
        .api(Method::POST, "/api/v1/settings/api-keys", key, Some(body))
        .await;
    (status, created)
}

/// A key `key` creates with `body`; panics unless it is a 201.
async fn child(node: &TestNode, key: &str, body: Value) -> Value {
    let (status, created) = create_key(node, key, body).await;
    assert_eq!(status, 201, "{created}");
    created
}

fn secret(created: &Value) -> String {
    created["key"].as_str().unwrap().to_string()
}

/// `GET /api/v1/account/export` with `key`: status, content type and body (a tar or JSON).
async fn export(node: &TestNode, key: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let res = node
        .client
        .get(format!("{}/api/v1/account/export", node.base))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, headers, res.bytes().await.unwrap().to_vec())
}

async fn erase(node: &TestNode, key: &str, account: &str) -> (u16, Value) {
    let (status, _, body) = node
        .api(
            Method::DELETE,
            "/api/v1/account",
            key,
            Some(json!({"confirm": account})),
        )
        .await;
    (status, body)
}

#[tokio::test]
async fn export_and_erasure_need_the_account_scope() {
    let node = TestNode::start_operated("[demo]\nseed = false\n").await;
    // The operator's first key is the owner's: it holds `account`.
    let owner = account(&node, "acme").await;
    assert_eq!(owner["scopes"], "read,write,account");
    let owner = secret(&owner);
    let photo = fixture("photos/ladybird.jpg");
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(photo.clone()).file_name("p.jpg"),
        )
        .text("target_path", "private/p.jpg")
        .text("visibility", "private");
    let res = node
        .client
        .post(format!("{}/api/v1/images", node.base))
        .bearer_auth(&owner)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);

    // Keys created without scopes get read and write, never `account`.
    let reader = secret(&child(&node, &owner, json!({"name": "r", "scopes": "read"})).await);
    let plain = child(&node, &owner, json!({"name": "rw"})).await;
    assert_eq!(plain["scopes"], "read,write");
    let plain = secret(&plain);

    // The attack: a read key downloads every private original. Refused, and so is a key with
    // read and write (export and erasure are not writes either).
    for key in [&reader, &plain] {
        let (status, headers, body) = export(&node, key).await;
        assert_json_error(status, &headers, &body, 403, "FORBIDDEN");
        assert!(
            String::from_utf8_lossy(&body).contains("`account` scope"),
            "{}",
            String::from_utf8_lossy(&body)
        );
        let (status, body) = erase(&node, key, "acme").await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"]["code"], "FORBIDDEN");
    }
    // Neither can hand itself the scope through a new key.
    for key in [&reader, &plain] {
        let (status, body) = create_key(
            &node,
            key,
            json!({"name": "up", "scopes": "read,write,account"}),
        )
        .await;
        assert_eq!(status, 403, "{body}");
    }
    let (status, body) = create_key(
        &node,
        &plain,
        json!({"name": "up", "scopes": ["read", "account"]}),
    )
    .await;
    assert_eq!(status, 403, "{body}");

    // `account` asked for by name (as an array, too), by a key that has it.
    let exporter = child(
        &node,
        &owner,
        json!({"name": "backup", "scopes": ["account", "read"]}),
    )
    .await;
    assert_eq!(exporter["scopes"], "read,account");
    let exporter = secret(&exporter);
    let (status, headers, archive) = export(&node, &exporter).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&archive));
    assert_eq!(headers["content-type"], "application/x-tar");
    assert!(
        archive.windows(64).any(|w| w == &photo[1000..1064]),
        "the archive holds the private original"
    );
    // The operator's keys: read and write unless `account` is asked for.
    let (status, issued) = node
        .ops_call(
            Method::POST,
            "/admin/v1/accounts/acme/keys",
            Some(json!({"name": "ops"})),
        )
        .await;
    assert_eq!(
        (status, issued["scopes"].as_str()),
        (201, Some("read,write"))
    );
    let (status, issued) = node
        .ops_call(
            Method::POST,
            "/admin/v1/accounts/acme/keys",
            Some(json!({"name": "ops-owner", "scopes": "account,read,write"})),
        )
        .await;
    assert_eq!(
        (status, issued["scopes"].as_str()),
        (201, Some("read,write,account"))
    );

    // Nothing was erased by the refused calls; the `account` key erases.
    assert_eq!(
        node.api(Method::GET, "/api/v1/settings", &plain, None)
            .await
            .0,
        200
    );
    let (status, body) = erase(&node, &exporter, "acme").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        node.api(Method::GET, "/api/v1/settings", &owner, None)
            .await
            .0,
        401
    );
    node.stop().await;
}

#[tokio::test]
async fn tokens_grant_the_account_scope_only_by_name() {
    let signer = Ed25519KeyPair::generate().unwrap();
    let jwks = json!({"keys": [{
        "kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "use": "sig",
        "x": b64(signer.public_key().as_ref()),
    }]});
    let url = serve_jwks(jwks.to_string()).await;
    let node = TestNode::start_operated(&format!(
        "[auth.jwt]\njwks_url = \"{url}\"\nissuer = \"https://id.example\"\n\
         audience = \"imgnode\"\n[demo]\nseed = false\n"
    ))
    .await;
    account(&node, "acme").await;
    let now = imgnode::store::now_unix();
    let token = |scope: Option<&str>| {
        let mut claims = json!({
            "iss": "https://id.example", "aud": "imgnode", "sub": "user-1",
            "account": "acme", "exp": now + 600, "iat": now,
        });
        if let Some(scope) = scope {
            claims["scope"] = json!(scope);
        }
        sign(&signer, &claims)
    };
    for refused in [token(None), token(Some("read write"))] {
        let (status, headers, body) = export(&node, &refused).await;
        assert_json_error(status, &headers, &body, 403, "FORBIDDEN");
    }
    let (status, _, body) = export(&node, &token(Some("read account"))).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    node.stop().await;
}

/// A node accepting tokens signed by the returned key (issuer `https://id.example`, audience
/// `imgnode`, account claim `account`), with `extra` TOML.
async fn node_with_tokens(extra: &str) -> (TestNode, Ed25519KeyPair) {
    let signer = Ed25519KeyPair::generate().unwrap();
    let jwks = json!({"keys": [{
        "kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "use": "sig",
        "x": b64(signer.public_key().as_ref()),
    }]});
    let url = serve_jwks(jwks.to_string()).await;
    let node = TestNode::start_operated(&format!(
        "[auth.jwt]\njwks_url = \"{url}\"\nissuer = \"https://id.example\"\n\
         audience = \"imgnode\"\n[demo]\nseed = false\n{extra}"
    ))
    .await;
    (node, signer)
}

fn token(signer: &Ed25519KeyPair, exp: i64, scope: Option<&str>) -> String {
    let mut claims = json!({
        "iss": "https://id.example", "aud": "imgnode", "sub": "user-1",
        "account": "acme", "exp": exp, "iat": imgnode::store::now_unix(),
    });
    if let Some(scope) = scope {
        claims["scope"] = json!(scope);
    }
    sign(signer, &claims)
}

#[tokio::test]
async fn a_key_never_outlives_the_key_or_token_that_created_it() {
    let (node, signer) = node_with_tokens("").await;
    let owner = secret(&account(&node, "acme").await);

    // A key that expires tomorrow...
    let short = child(
        &node,
        &owner,
        json!({"name": "tomorrow", "expires_in_days": 1}),
    )
    .await;
    let tomorrow = short["expires_at"].as_i64().unwrap();
    let short = secret(&short);
    // ...cannot make one that lasts a month, or forever: capped, and the answer says so.
    for body in [
        json!({"name": "month", "expires_in_days": 30}),
        json!({"name": "forever"}),
    ] {
        let made = child(&node, &short, body).await;
        assert_eq!(made["expires_at"], tomorrow, "{made}");
    }
    // An earlier expiry than the creator's is kept as asked.
    let (_, _, listed) = node
        .api(Method::GET, "/api/v1/settings/api-keys", &owner, None)
        .await;
    let stored: Vec<Option<i64>> = listed["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["name"] == "month" || k["name"] == "forever")
        .map(|k| k["expires_at"].as_i64())
        .collect();
    assert_eq!(stored, [Some(tomorrow), Some(tomorrow)], "{listed}");
    let sooner = child(&node, &owner, json!({"name": "week", "expires_in_days": 7})).await;
    let week = secret(&sooner);
    let made = child(&node, &week, json!({"name": "day", "expires_in_days": 1})).await;
    assert!(made["expires_at"].as_i64() < sooner["expires_at"].as_i64());

    // A 60-second token: its keys expire with it.
    let exp = imgnode::store::now_unix() + 60;
    let jwt = token(&signer, exp, None);
    for body in [
        json!({"name": "from-token"}),
        json!({"name": "from-token-30d", "expires_in_days": 30}),
    ] {
        let made = child(&node, &jwt, body).await;
        assert_eq!(made["expires_at"], exp, "{made}");
    }
    // And no more scopes than it has.
    let reader = token(&signer, exp, Some("read write"));
    let (status, body) = create_key(
        &node,
        &reader,
        json!({"name": "x", "scopes": "read,account"}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    node.stop().await;
}

#[tokio::test]
async fn revoking_a_key_revokes_every_key_below_it_at_once() {
    let node = TestNode::start_operated("[demo]\nseed = false\n").await;
    let owner = secret(&account(&node, "acme").await);
    let parent = child(&node, &owner, json!({"name": "parent"})).await;
    let parent_id = parent["id"].as_str().unwrap().to_string();
    let parent = secret(&parent);
    let kid = secret(&child(&node, &parent, json!({"name": "child"})).await);
    let grandchild = secret(&child(&node, &kid, json!({"name": "grandchild"})).await);
    let sibling = secret(&child(&node, &owner, json!({"name": "sibling"})).await);
    let settings = |key: String| {
        let node = &node;
        async move {
            node.api(Method::GET, "/api/v1/settings", &key, None)
                .await
                .0
        }
    };
    // Each is in this node's key cache now.
    for key in [&parent, &kid, &grandchild, &sibling] {
        assert_eq!(settings(key.clone()).await, 200);
    }

    let (status, _, body) = node
        .api(
            Method::DELETE,
            &format!("/api/v1/settings/api-keys/{parent_id}"),
            &owner,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // The very next calls: the whole branch is refused, the rest works.
    for key in [&parent, &kid, &grandchild] {
        assert_eq!(settings(key.clone()).await, 401);
    }
    assert_eq!(settings(sibling.clone()).await, 200);
    assert_eq!(settings(owner.clone()).await, 200);
    let (_, _, listed) = node
        .api(Method::GET, "/api/v1/settings/api-keys", &owner, None)
        .await;
    let mut names: Vec<&str> = listed["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["default", "sibling"]);

    // The operator's revocation takes the branch below too.
    let branch = child(&node, &sibling, json!({"name": "branch"})).await;
    let branch = secret(&branch);
    let leaf = secret(&child(&node, &branch, json!({"name": "leaf"})).await);
    assert_eq!(settings(leaf.clone()).await, 200);
    let sibling_id = listed["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "sibling")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = node
        .ops_call(
            Method::DELETE,
            &format!("/admin/v1/accounts/acme/keys/{sibling_id}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for key in [&sibling, &branch, &leaf] {
        assert_eq!(settings(key.clone()).await, 401);
    }
    assert_eq!(settings(owner).await, 200);
    node.stop().await;
}

#[tokio::test]
async fn an_account_holds_at_most_max_keys_per_account_live_keys() {
    let node =
        TestNode::start_operated("[auth]\nmax_keys_per_account = 3\n[demo]\nseed = false\n").await;
    let owner = secret(&account(&node, "acme").await);
    let second = child(&node, &owner, json!({"name": "2"})).await;
    child(&node, &owner, json!({"name": "3"})).await;
    // The fourth: refused, by the tenant API and the operator's alike.
    let (status, headers, body) = node
        .api(
            Method::POST,
            "/api/v1/settings/api-keys",
            &owner,
            Some(json!({"name": "4"})),
        )
        .await;
    assert_json_error(
        status,
        &headers,
        body.to_string().as_bytes(),
        409,
        "CONFLICT",
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("auth.max_keys_per_account"),
        "{body}"
    );
    let (status, body) = node
        .ops_call(
            Method::POST,
            "/admin/v1/accounts/acme/keys",
            Some(json!({"name": "4"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("CONFLICT"))
    );
    // Another account has its own count.
    let other = secret(&account(&node, "bravo").await);
    child(&node, &other, json!({"name": "2"})).await;

    // Revoked and expired keys do not count.
    let second_id = second["id"].as_str().unwrap();
    let (status, _, _) = node
        .api(
            Method::DELETE,
            &format!("/api/v1/settings/api-keys/{second_id}"),
            &owner,
            None,
        )
        .await;
    assert_eq!(status, 200);
    node.app
        .state
        .store
        .create_api_key(
            &imgnode::store::NewApiKey {
                id: "key_expired".into(),
                account: "acme".into(),
                name: "expired".into(),
                key_hash: "0".repeat(64),
                key_prefix: "imgsrc_00000000".into(),
                scopes: "read".into(),
                expires_at: Some(imgnode::store::now_unix() - 1),
                parent: None,
            },
            3,
        )
        .await
        .unwrap();
    child(&node, &owner, json!({"name": "4"})).await;
    let (status, _) = create_key(&node, &owner, json!({"name": "5"})).await;
    assert_eq!(status, 409);
    node.stop().await;
}

#[tokio::test]
async fn more_keys_do_not_multiply_an_accounts_rate_limit() {
    // 6 a minute: one more every 10 s, far longer than this test's few calls take.
    let node =
        TestNode::start_with("[plans.six]\nrequests_per_minute = 6\n[demo]\nseed = false\n").await;
    node.app
        .state
        .store
        .create_account("acme", "six")
        .await
        .unwrap();
    let first = node.account_key("acme", "read,write").await;
    let second = node.account_key("acme", "read").await;
    let call = |key: String| {
        let node = &node;
        async move {
            let (status, headers, _) = node.api(Method::GET, "/api/v1/settings", &key, None).await;
            let remaining = headers["x-ratelimit-remaining"]
                .to_str()
                .unwrap()
                .to_string();
            assert_eq!(headers["x-ratelimit-limit"], "6");
            (status, remaining)
        }
    };
    // The two keys draw on one allowance of 6, and the headers show the account's figure.
    for (key, remaining) in [
        (&first, "5"),
        (&second, "4"),
        (&first, "3"),
        (&second, "2"),
        (&second, "1"),
        (&second, "0"),
    ] {
        assert_eq!(call(key.clone()).await, (200, remaining.to_string()));
    }
    for key in [&first, &second] {
        let (status, remaining) = call(key.clone()).await;
        assert_eq!((status, remaining.as_str()), (429, "0"));
    }
    // A third key made now does no better.
    let third = node.account_key("acme", "read").await;
    assert_eq!(call(third).await.0, 429);
    // Another account on the same plan is not affected.
    node.app
        .state
        .store
        .create_account("bravo", "six")
        .await
        .unwrap();
    let other = node.account_key("bravo", "read").await;
    assert_eq!(call(other).await, (200, "5".to_string()));
    node.stop().await;
}
