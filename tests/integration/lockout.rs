//! The failed-authentication lockout: keyed on the client's address (through trusted proxies
//! only), counting failures only, never refusing a valid credential.

use crate::harness::{OPERATOR, TestNode};

/// A key of the issued shape (`imgsrc_` and 64 hex digits) that no account has: every one is
/// looked up.
fn bad_key(n: usize) -> String {
    format!("imgsrc_{n:064x}")
}

/// `GET /api/v1/settings` with `key` and extra headers; the status and the error code.
async fn settings(node: &TestNode, key: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = node
        .client
        .get(format!("{}/api/v1/settings", node.base))
        .bearer_auth(key);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let has_retry_after = res.headers().contains_key("retry-after");
    let body: serde_json::Value = res.json().await.unwrap();
    let code = body["error"]["code"].as_str().unwrap_or("").to_string();
    if status == 429 {
        assert!(has_retry_after, "a 429 says when to retry");
    }
    (status, code)
}

/// Sends `n` bad keys with `headers`; the statuses.
async fn bad_keys(node: &TestNode, n: usize, headers: &[(&str, &str)]) -> Vec<u16> {
    let mut statuses = Vec::new();
    for i in 0..n {
        statuses.push(settings(node, &bad_key(i), headers).await.0);
    }
    statuses
}

#[tokio::test]
async fn a_valid_key_is_served_from_an_address_locked_out_for_bad_keys() {
    let node = TestNode::start_with("[demo]\nseed = false\n").await;
    let key = node.account_key("acme", "read").await;
    let statuses = bad_keys(&node, 25, &[]).await;
    assert!(statuses[..20].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[20..].iter().all(|s| *s == 429), "{statuses:?}");
    // Another tenant behind the same address (a NAT, an office) is not locked out.
    assert_eq!(settings(&node, &key, &[]).await.0, 200);
    // The address itself still is, for a key of the right shape and for junk alike.
    assert_eq!(
        settings(&node, &bad_key(99), &[]).await,
        (429, "RATE_LIMITED".into())
    );
    assert_eq!(settings(&node, "imgsrc_guess", &[]).await.0, 429);
    assert_eq!(settings(&node, &key, &[]).await.0, 200);
    node.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_locked_out_not_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start_with_env(
        dir,
        "[demo]\nseed = false\n",
        &[("IMGNODE_SERVER__TRUSTED_PROXIES", "[\"127.0.0.1/32\"]")],
    )
    .await;
    let key = node.account_key("acme", "read").await;
    let attacker = [("x-forwarded-for", "198.51.100.7")];
    let statuses = bad_keys(&node, 25, &attacker).await;
    assert!(statuses[20..].iter().all(|s| *s == 429), "{statuses:?}");
    // Other clients of the same proxy: their own allowance.
    let neighbour = [("x-forwarded-for", "198.51.100.8")];
    assert_eq!(
        settings(&node, &bad_key(1), &neighbour).await,
        (401, "UNAUTHORIZED".into())
    );
    // The proxy's own address (no header) is not blocked either.
    assert_eq!(settings(&node, &bad_key(2), &[]).await.0, 401);
    // A client-written hop to the left of the proxy's does not change who is counted.
    let spoofed = [("x-forwarded-for", "203.0.113.1, 198.51.100.7")];
    assert_eq!(settings(&node, &bad_key(3), &spoofed).await.0, 429);
    // And the attacker's valid key (if it had one) still works.
    assert_eq!(settings(&node, &key, &attacker).await.0, 200);
    node.stop().await;
}

#[tokio::test]
async fn without_trusted_proxies_a_forwarded_address_is_ignored() {
    let node = TestNode::start_with("[demo]\nseed = false\n").await;
    // Rotating made-up addresses does not give the attacker fresh allowances.
    let mut statuses = Vec::new();
    for i in 0..25 {
        let xff = format!("198.51.100.{i}");
        let fwd = format!("for={xff}");
        let headers = [
            ("x-forwarded-for", xff.as_str()),
            ("forwarded", fwd.as_str()),
        ];
        statuses.push(settings(&node, &bad_key(i), &headers).await.0);
    }
    assert!(statuses[..20].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[20..].iter().all(|s| *s == 429), "{statuses:?}");
    let fresh = [("x-forwarded-for", "192.0.2.200")];
    assert_eq!(settings(&node, &bad_key(30), &fresh).await.0, 429);
    node.stop().await;
}

/// `GET /admin/v1/accounts` with `token`: status, code, whether Retry-After is set.
async fn operator_call(node: &TestNode, token: &str) -> (u16, String, bool) {
    let res = node
        .client
        .get(format!("{}/admin/v1/accounts", node.ops))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let retry_after = res.headers().contains_key("retry-after");
    let body: serde_json::Value = res.json().await.unwrap();
    let code = body["error"]["code"].as_str().unwrap_or("").to_string();
    (status, code, retry_after)
}

#[tokio::test]
async fn bad_operator_tokens_are_rate_limited_and_the_right_one_still_works() {
    let node = TestNode::start_operated("[demo]\nseed = false\n").await;
    for i in 0..20 {
        let guess = format!("{OPERATOR}-{i}");
        assert_eq!(operator_call(&node, &guess).await.0, 401);
    }
    let (status, code, retry_after) = operator_call(&node, "another-guess").await;
    assert_eq!(
        (status, code.as_str(), retry_after),
        (429, "RATE_LIMITED", true)
    );
    // The operator, from the same address, is not locked out.
    assert_eq!(operator_call(&node, OPERATOR).await.0, 200);
    assert_eq!(operator_call(&node, "").await.0, 429);
    node.stop().await;
}

#[tokio::test]
async fn a_short_operator_token_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("operator.token");
    std::fs::write(&token, "short-token-31-bytes-0123456789\n").unwrap();
    let text = crate::harness::test_config(
        dir.path(),
        &format!("[admin]\ntoken_file = \"{}\"\n", token.display()),
    );
    let config = imgnode::config::parse(&text, Vec::new()).unwrap();
    match imgnode::app::start(config).await {
        Ok(_) => panic!("a node started with a 31-byte operator token"),
        Err(e) => {
            let message = e.to_string();
            assert!(matches!(
                e,
                imgnode::app::AppError::TokenTooShort { len: 31, .. }
            ));
            assert!(message.contains("at least 32"), "{message}");
        }
    }
}
