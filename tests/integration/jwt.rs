//! JWT bearer tokens through a real node: a JWKS served by the test on 127.0.0.1, an Ed25519
//! key generated here, tokens signed here. The verifier's own edge cases (algorithms,
//! rotation, refresh floor) are unit-tested in `src/auth/jwt.rs`.

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::TestNode;

pub(crate) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Serves `body` as the JWKS at `http://127.0.0.1:port/jwks.json` until the test ends.
pub(crate) async fn serve_jwks(body: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    url
}

pub(crate) fn sign(key: &Ed25519KeyPair, claims: &Value) -> String {
    let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": "ed-1"});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    format!("{input}.{}", b64(key.sign(input.as_bytes()).as_ref()))
}

#[tokio::test]
async fn tokens_from_the_identity_provider_act_as_their_account() {
    let key = Ed25519KeyPair::generate().unwrap();
    let jwks = json!({"keys": [{
        "kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "use": "sig",
        "x": b64(key.public_key().as_ref()),
    }]});
    let url = serve_jwks(jwks.to_string()).await;
    let node = TestNode::start_operated(&format!(
        "[auth.jwt]\njwks_url = \"{url}\"\nissuer = \"https://id.example\"\n\
         audience = \"imgnode\"\naccount_claim = \"tenant\"\n[demo]\nseed = false\n"
    ))
    .await;
    node.account_key("acme", "read").await;
    let now = imgnode::store::now_unix();
    let claims = |overrides: Value| {
        let mut c = json!({
            "iss": "https://id.example", "aud": "imgnode", "sub": "user-1",
            "tenant": "acme", "exp": now + 600, "iat": now,
        });
        for (k, v) in overrides.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };

    let good = sign(&key, &claims(json!({})));
    let (status, headers, settings) = node.api(Method::GET, "/api/v1/settings", &good, None).await;
    assert_eq!(status, 200, "{settings}");
    assert_eq!(settings["settings"]["username"], "acme");
    assert!(headers.contains_key("x-ratelimit-limit"));
    // A write is audited under the token's subject.
    let (status, _, _) = node
        .api(
            Method::POST,
            "/api/v1/settings/presets",
            &good,
            Some(json!({"name": "t", "params": {"w": 10}})),
        )
        .await;
    assert_eq!(status, 201);
    let audit: Value = node
        .client
        .get(format!("{}/admin/v1/audit?account=acme", node.ops))
        .bearer_auth(crate::harness::OPERATOR)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(audit["records"][0]["actor"], "jwt:user-1");

    // Scopes from the token: read only cannot write.
    let reader = sign(&key, &claims(json!({"scope": "read"})));
    assert_eq!(
        node.api(Method::GET, "/api/v1/images", &reader, None)
            .await
            .0,
        200
    );
    let (status, _, _) = node
        .api(Method::DELETE, "/api/v1/settings/presets/t", &reader, None)
        .await;
    assert_eq!(status, 403);

    // Refused: expired, wrong issuer, wrong audience, unknown account, another key's signature.
    let stranger = Ed25519KeyPair::generate().unwrap();
    let refused = [
        sign(&key, &claims(json!({"exp": now - 600}))),
        sign(&key, &claims(json!({"iss": "https://evil.example"}))),
        sign(&key, &claims(json!({"aud": "someone-else"}))),
        sign(&key, &claims(json!({"tenant": "nobody"}))),
        sign(&stranger, &claims(json!({}))),
    ];
    for token in &refused {
        let (status, _, body) = node.api(Method::GET, "/api/v1/settings", token, None).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"]["code"], "UNAUTHORIZED");
    }
    // API keys keep working beside tokens.
    let api_key = node.account_key("acme", "read").await;
    assert_eq!(
        node.api(Method::GET, "/api/v1/settings", &api_key, None)
            .await
            .0,
        200
    );
    node.stop().await;
}
