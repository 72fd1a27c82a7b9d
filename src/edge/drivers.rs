//! Purge drivers: one request shape per CDN, as each one's public API documents it.
//!
//! | kind | request | batch |
//! |---|---|---|
//! | `varnish` | `PURGE /` with the keys space separated in the `xkey` header (vmod-xkey), to every configured instance | 50 keys (Varnish's default 8 KB header limit) |
//! | `fastly` | `POST {api_base}/service/{id}/purge`, `Fastly-Key`, JSON `{"surrogate_keys": [...]}`, `Fastly-Soft-Purge: 1` when soft | 256 keys |
//! | `cloudflare` | `POST {api_base}/client/v4/zones/{zone}/purge_cache`, bearer token, JSON `{"tags": [...]}`, answer `"success": true` | 100 tags |
//! | `webhook` | `POST {url}`, JSON `{"tags", "reason", "account"}`, `X-Imgnode-Signature: sha256=<hex HMAC-SHA256 of the body>` | one purge |
//!
//! A purge counts as delivered to a target when every request carrying its tags answered 2xx
//! (and, for Cloudflare, `success`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{PurgeDriver, PurgeTarget};
use crate::store::PendingPurge;

/// Keys per request of each kind.
fn batch_limit(driver: &PurgeDriver) -> usize {
    match driver {
        PurgeDriver::Varnish { .. } => 50,
        PurgeDriver::Fastly { .. } => 256,
        PurgeDriver::Cloudflare { .. } => 100,
        PurgeDriver::Webhook { .. } => usize::MAX,
    }
}

/// Sends `purges` (each owed to `target`) and returns, per purge in the same order, `Ok` or
/// the reason it failed.
pub(crate) async fn deliver(
    client: &reqwest::Client,
    target: &PurgeTarget,
    purges: &[&PendingPurge],
) -> Vec<Result<(), String>> {
    let mut results: Vec<Result<(), String>> = vec![Ok(()); purges.len()];
    if let PurgeDriver::Webhook { url, secret } = &target.driver {
        for (i, p) in purges.iter().enumerate() {
            results[i] = webhook(client, url, &secret.0, p).await;
        }
        return results;
    }
    // The tags of all the purges, in order, cut into requests of at most `limit`; each
    // request remembers whose tags it carries (a purge may span two requests).
    let limit = batch_limit(&target.driver);
    let flat: Vec<(usize, &str)> = purges
        .iter()
        .enumerate()
        .flat_map(|(i, p)| p.tags.iter().map(move |t| (i, t.as_str())))
        .collect();
    let chunks = flat.chunks(limit).map(|chunk| {
        let mut owners: Vec<usize> = chunk.iter().map(|(i, _)| *i).collect();
        owners.dedup();
        let tags: Vec<&str> = chunk.iter().map(|(_, t)| *t).collect();
        (owners, tags)
    });
    for (owners, tags) in chunks {
        if let Err(e) = send(client, &target.driver, &tags).await {
            for i in owners {
                results[i] = Err(e.clone());
            }
        }
    }
    results
}

async fn send(client: &reqwest::Client, driver: &PurgeDriver, tags: &[&str]) -> Result<(), String> {
    match driver {
        PurgeDriver::Varnish { urls, header } => {
            let method = reqwest::Method::from_bytes(b"PURGE").map_err(|e| e.to_string())?;
            let mut errors = Vec::new();
            for url in urls {
                let sent = client
                    .request(method.clone(), url)
                    .header(header.as_str(), tags.join(" "))
                    .send()
                    .await;
                if let Err(e) = check(sent).await {
                    errors.push(format!("{url}: {e}"));
                }
            }
            if errors.is_empty() {
                Ok(())
            } else {
                Err(errors.join("; "))
            }
        }
        PurgeDriver::Fastly {
            service_id,
            token,
            api_base,
            soft,
        } => {
            let mut req = client
                .post(format!("{api_base}/service/{service_id}/purge"))
                .header("Fastly-Key", &token.0)
                .header("Accept", "application/json")
                .header("Content-Type", "application/json")
                .body(serde_json::json!({ "surrogate_keys": tags }).to_string());
            if *soft {
                req = req.header("Fastly-Soft-Purge", "1");
            }
            check(req.send().await).await.map(drop)
        }
        PurgeDriver::Cloudflare {
            zone_id,
            token,
            api_base,
        } => {
            let sent = client
                .post(format!("{api_base}/client/v4/zones/{zone_id}/purge_cache"))
                .bearer_auth(&token.0)
                .header("Content-Type", "application/json")
                .body(serde_json::json!({ "tags": tags }).to_string())
                .send()
                .await;
            let body = check(sent).await?;
            let answer: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| format!("answer is not JSON: {e}"))?;
            if answer["success"] == serde_json::Value::Bool(true) {
                Ok(())
            } else {
                Err(format!(
                    "answer without success: {}",
                    truncate(&answer["errors"].to_string())
                ))
            }
        }
        PurgeDriver::Webhook { .. } => unreachable!("webhooks are sent one purge at a time"),
    }
}

/// The webhook's body and signature: `{"tags": [...], "reason": "...", "account": "..."}`,
/// signed as `sha256=<hex HMAC-SHA256(secret, body)>`.
pub(crate) fn webhook_request(secret: &str, purge: &PendingPurge) -> (Vec<u8>, String) {
    let body = serde_json::to_vec(&serde_json::json!({
        "tags": purge.tags,
        "reason": purge.reason,
        "account": purge.account,
    }))
    .unwrap_or_default();
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any size");
    mac.update(&body);
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    (body, signature)
}

async fn webhook(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    purge: &PendingPurge,
) -> Result<(), String> {
    let (body, signature) = webhook_request(secret, purge);
    let sent = client
        .post(url)
        .header("Content-Type", "application/json")
        .header("X-Imgnode-Signature", signature)
        .body(body)
        .send()
        .await;
    check(sent).await.map(drop)
}

/// The body of a 2xx answer, else a short description of what went wrong (status and the
/// start of the body; never the request, which holds the token).
async fn check(sent: Result<reqwest::Response, reqwest::Error>) -> Result<bytes::Bytes, String> {
    let res = sent.map_err(describe)?;
    let status = res.status();
    let body = res.bytes().await.map_err(describe)?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!(
            "HTTP {status}: {}",
            truncate(&String::from_utf8_lossy(&body))
        ))
    }
}

/// A reqwest error with its causes (timeout, refused, TLS, ...), without the URL's query.
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn truncate(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purge(tags: &[&str]) -> PendingPurge {
        PendingPurge {
            id: "x".into(),
            account: "acme".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            reason: "image deleted".into(),
            created_at_ms: 0,
            targets: vec!["webhook".into()],
            attempts: 0,
            last_error: None,
            failed: false,
        }
    }

    #[test]
    fn webhook_signature_is_the_hmac_of_the_exact_body() {
        let (body, sig) = webhook_request("s3cret", &purge(&["i.acme.00ff"]));
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"account":"acme","reason":"image deleted","tags":["i.acme.00ff"]}"#
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(&body);
        assert_eq!(
            sig,
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        );
        let (_, other) = webhook_request("other", &purge(&["i.acme.00ff"]));
        assert_ne!(sig, other);
    }
}

/// The batching of each driver against a real HTTP server on loopback.
#[cfg(test)]
mod batching {
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    use super::*;
    use crate::config::Secret;

    /// (method, path, xkey header, body) of each request.
    type Seen = Arc<Mutex<Vec<(String, String, String, String)>>>;

    /// Serves `answer` to every request and keeps what it saw.
    async fn recorder(answer: &'static str) -> (String, Seen) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen: Seen = Arc::default();
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let log = log.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let xkey = parts
                                    .headers
                                    .get("xkey")
                                    .map(|v| v.to_str().unwrap().to_string())
                                    .unwrap_or_default();
                                log.lock().unwrap().push((
                                    parts.method.to_string(),
                                    parts.uri.path().to_string(),
                                    xkey,
                                    String::from_utf8_lossy(&body).into_owned(),
                                ));
                                Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                    Bytes::from_static(answer.as_bytes()),
                                )))
                            }
                        },
                    );
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        (url, seen)
    }

    fn purges(n: usize, tags_each: usize) -> Vec<PendingPurge> {
        (0..n)
            .map(|i| PendingPurge {
                id: format!("p{i}"),
                account: "acme".into(),
                tags: (0..tags_each)
                    .map(|j| format!("i.acme.{i:04}{j:04}"))
                    .collect(),
                reason: "image deleted".into(),
                created_at_ms: 0,
                targets: vec!["t".into()],
                attempts: 0,
                last_error: None,
                failed: false,
            })
            .collect()
    }

    #[tokio::test]
    async fn each_driver_packs_tags_up_to_its_limit() {
        let client = reqwest::Client::new();
        // 150 one-tag purges and one with 120 tags: 270 tags in all.
        let mut all = purges(150, 1);
        all.extend(purges(1, 120).into_iter().map(|mut p| {
            p.id = "big".into();
            p
        }));
        let refs: Vec<&PendingPurge> = all.iter().collect();

        let (url, seen) = recorder(r#"{"success": true}"#).await;
        let target = PurgeTarget {
            name: "t".into(),
            driver: PurgeDriver::Cloudflare {
                zone_id: "z".into(),
                token: Secret("k".into()),
                api_base: url,
            },
        };
        let results = deliver(&client, &target, &refs).await;
        assert!(results.iter().all(Result::is_ok));
        let bodies: Vec<serde_json::Value> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, _, _, b)| serde_json::from_str(b).unwrap())
            .collect();
        let sizes: Vec<usize> = bodies
            .iter()
            .map(|b| b["tags"].as_array().unwrap().len())
            .collect();
        assert!(sizes.iter().all(|&n| n <= 100), "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), 270);
        assert_eq!(sizes.len(), 3, "{sizes:?}");

        let (url, seen) = recorder("{}").await;
        let target = PurgeTarget {
            name: "t".into(),
            driver: PurgeDriver::Fastly {
                service_id: "s".into(),
                token: Secret("k".into()),
                api_base: url,
                soft: false,
            },
        };
        deliver(&client, &target, &refs).await;
        let sizes: Vec<usize> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, _, _, b)| {
                serde_json::from_str::<serde_json::Value>(b).unwrap()["surrogate_keys"]
                    .as_array()
                    .unwrap()
                    .len()
            })
            .collect();
        assert_eq!(sizes, [256, 14], "at most 256 keys a request");

        let (url_a, seen_a) = recorder("ok").await;
        let (url_b, seen_b) = recorder("ok").await;
        let target = PurgeTarget {
            name: "t".into(),
            driver: PurgeDriver::Varnish {
                urls: vec![format!("{url_a}/"), format!("{url_b}/")],
                header: "xkey".into(),
            },
        };
        deliver(&client, &target, &refs[..60]).await;
        for seen in [seen_a, seen_b] {
            let seen = seen.lock().unwrap();
            assert_eq!(seen.len(), 2, "50 keys a request, to every instance");
            assert_eq!(seen[0].0, "PURGE");
            assert_eq!(seen[0].2.split(' ').count(), 50);
            assert_eq!(seen[1].2.split(' ').count(), 10);
        }
    }

    #[tokio::test]
    async fn a_failed_batch_fails_only_the_purges_it_carried() {
        let client = reqwest::Client::new();
        let all = purges(3, 1);
        let refs: Vec<&PendingPurge> = all.iter().collect();
        let (url, _) = recorder(r#"{"success": false}"#).await;
        let target = PurgeTarget {
            name: "t".into(),
            driver: PurgeDriver::Cloudflare {
                zone_id: "z".into(),
                token: Secret("k".into()),
                api_base: url,
            },
        };
        let results = deliver(&client, &target, &refs).await;
        assert!(results.iter().all(Result::is_err));
        // An unreachable webhook fails each purge on its own.
        let target = PurgeTarget {
            name: "t".into(),
            driver: PurgeDriver::Webhook {
                url: "http://127.0.0.1:9/".into(),
                secret: Secret("s".into()),
            },
        };
        let results = deliver(&client, &target, &refs[..2]).await;
        assert_eq!(results.len(), 2);
        assert!(results.iter().all(Result::is_err));
    }
}
