//! Connection hygiene on the public listener: slow request heads are cut off, oversized heads
//! refused, and connections beyond the limit get a clean 503.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::TestNode;

async fn server_node(setting: (&str, &str)) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    TestNode::start_with_env(dir, "[demo]\nseed = false\n", &[setting]).await
}

/// Everything the server sends until it closes (bounded: a server that never closes fails).
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = stream.read_to_end(&mut out);
    match tokio::time::timeout(Duration::from_secs(20), read).await {
        Ok(_) => String::from_utf8_lossy(&out).into_owned(),
        Err(_) => panic!("the server kept the connection open"),
    }
}

#[tokio::test]
async fn a_slow_request_head_is_cut_off() {
    let node = server_node(("IMGNODE_SERVER__HEADER_READ_TIMEOUT", "1s")).await;
    let mut stream = TcpStream::connect(node.app.public_addr).await.unwrap();
    // Half a request head, then nothing: the slowloris pattern.
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: test\r\nX-Slow: ")
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert!(!answer.contains("200 OK"), "{answer}");
    // The node still serves everyone else.
    assert_eq!(node.fetch("/health").await.0, 200);
    node.stop().await;
}

#[tokio::test]
async fn an_oversized_request_head_is_refused() {
    let node = server_node(("IMGNODE_SERVER__MAX_HEADER_BYTES", "16KiB")).await;
    let mut stream = TcpStream::connect(node.app.public_addr).await.unwrap();
    let big = "a".repeat(64 * 1024);
    let request = format!("GET /health HTTP/1.1\r\nHost: test\r\nX-Big: {big}\r\n\r\n");
    // The server may close while the client is still writing: that is a refusal too.
    let _ = stream.write_all(request.as_bytes()).await;
    let answer = read_until_closed(&mut stream).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    let mut ok = TcpStream::connect(node.app.public_addr).await.unwrap();
    let fine = format!(
        "GET /health HTTP/1.1\r\nHost: test\r\nX-Small: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(4096)
    );
    ok.write_all(fine.as_bytes()).await.unwrap();
    assert!(read_until_closed(&mut ok).await.starts_with("HTTP/1.1 200"));
    node.stop().await;
}

#[tokio::test]
async fn connections_over_the_limit_get_a_clean_503() {
    let node = server_node(("IMGNODE_SERVER__MAX_CONNECTIONS", "2")).await;
    // Two connections held open with a request answered on each (so both are established
    // and counted before the third arrives).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(node.app.public_addr).await.unwrap();
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(stream);
    }
    assert_eq!(
        node.metric("imgnode_http_open_connections", &[("listener", "public")])
            .await,
        2.0
    );
    let mut third = TcpStream::connect(node.app.public_addr).await.unwrap();
    let answer = read_until_closed(&mut third).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap();
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"]["code"], "OVERLOADED");
    assert_eq!(
        node.metric(
            "imgnode_http_refused_connections_total",
            &[("listener", "public")]
        )
        .await,
        1.0
    );
    drop(held);
    node.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let node = server_node(("IMGNODE_SERVER__HEADER_READ_TIMEOUT", "1s")).await;
    let mut stream = TcpStream::connect(node.app.public_addr).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    // One full answer, then the idle connection is closed by the server, not kept forever.
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1").count(), 1);
    node.stop().await;
}

/// The HTTP/2 SETTINGS the node sends on an h2c (prior knowledge) connection, as
/// `(id, value)` pairs.
async fn h2c_settings(node: &TestNode) -> Vec<(u16, u32)> {
    let mut stream = TcpStream::connect(node.app.public_addr).await.unwrap();
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // an empty SETTINGS frame
    stream.write_all(&hello).await.unwrap();
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head[3], 4, "the server's first frame is SETTINGS");
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.unwrap();
    payload
        .chunks_exact(6)
        .map(|p| {
            (
                u16::from_be_bytes([p[0], p[1]]),
                u32::from_be_bytes([p[2], p[3], p[4], p[5]]),
            )
        })
        .collect()
}

#[tokio::test]
async fn h2c_is_served_with_the_configured_stream_limit() {
    let node = server_node(("IMGNODE_SERVER__H2_MAX_CONCURRENT_STREAMS", "7")).await;
    // SETTINGS_MAX_CONCURRENT_STREAMS is id 3.
    assert!(h2c_settings(&node).await.contains(&(3, 7)));
    let client = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let res = client
        .get(format!("{}/health", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    node.stop().await;
    // With h2c off, the same preface is not HTTP/2.
    let node = server_node(("IMGNODE_SERVER__H2C", "false")).await;
    assert!(
        client
            .get(format!("{}/health", node.base))
            .send()
            .await
            .is_err()
    );
    node.stop().await;
}

#[tokio::test]
async fn a_silent_connection_is_cut_off() {
    let node = server_node(("IMGNODE_SERVER__HEADER_READ_TIMEOUT", "1s")).await;
    // Connects and sends nothing at all (before hyper knows HTTP/1 from HTTP/2).
    let mut stream = TcpStream::connect(node.app.public_addr).await.unwrap();
    assert_eq!(read_until_closed(&mut stream).await, "");
    node.stop().await;
}
