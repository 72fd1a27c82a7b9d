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

type H2Body = http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>;

/// An h2c connection to `node`, driven on a task of its own: the request sender and the
/// connection task, which ends when the server closes the connection.
async fn h2c_connection(
    node: &TestNode,
) -> (
    hyper::client::conn::http2::SendRequest<H2Body>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    let stream = TcpStream::connect(node.app.public_addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    (send, tokio::spawn(conn))
}

fn h2_get(node: &TestNode, path: &str) -> http::Request<H2Body> {
    use http_body_util::BodyExt;
    http::Request::get(format!("{}{path}", node.base))
        .body(
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap()
}

/// Waits (bounded) for an HTTP/2 connection task to end: the server closed the connection.
async fn closed_by_the_server(conn: tokio::task::JoinHandle<Result<(), hyper::Error>>) {
    match tokio::time::timeout(Duration::from_secs(30), conn).await {
        Ok(ended) => ended.unwrap().expect("a clean close after GOAWAY"),
        Err(_) => panic!("the server kept the idle HTTP/2 connection open"),
    }
}

#[tokio::test]
async fn an_idle_h2_connection_gets_goaway_and_is_closed() {
    use http_body_util::BodyExt;
    let node = server_node(("IMGNODE_SERVER__H2_IDLE_TIMEOUT", "1s")).await;
    // One request, answered in full, then nothing but (automatic) answers to the server's
    // pings: the connection that used to hold a slot forever.
    let (mut send, conn) = h2c_connection(&node).await;
    let res = send.send_request(h2_get(&node, "/health")).await.unwrap();
    assert_eq!(res.status(), 200);
    res.into_body().collect().await.unwrap();
    closed_by_the_server(conn).await;
    assert!(send.is_closed());
    // The bare preface and SETTINGS, never a request: closed too.
    let (send, conn) = h2c_connection(&node).await;
    closed_by_the_server(conn).await;
    assert!(send.is_closed());
    node.stop().await;
}

#[tokio::test]
async fn an_h2_request_in_flight_keeps_its_connection_open() {
    use http_body_util::BodyExt;
    let node = server_node(("IMGNODE_SERVER__H2_IDLE_TIMEOUT", "1s")).await;
    let key = node.account_key("acme", "read,write").await;
    let (mut send, conn) = h2c_connection(&node).await;
    // An upload whose body arrives only when this test sends it: in flight until then.
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(1);
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok(hyper::body::Frame::data(chunk)), rx))
    });
    let req = http::Request::post(format!("{}/api/v1/images", node.base))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "multipart/form-data; boundary=b")
        .body(http_body_util::StreamBody::new(body).boxed())
        .unwrap();
    let response = tokio::spawn(send.send_request(req));
    tx.send(bytes::Bytes::from_static(b"--b\r\n"))
        .await
        .unwrap();
    // Three other connections, one after the other and each opened after the upload began,
    // idle out: more than three idle timeouts (GOAWAY, then the close one timeout later) have
    // passed with the upload in flight.
    for _ in 0..3 {
        let (_idle, idle_conn) = h2c_connection(&node).await;
        closed_by_the_server(idle_conn).await;
    }
    assert!(
        !conn.is_finished(),
        "the connection with an upload in flight was closed"
    );
    // The rest of the (broken) form: the upload is answered on the same connection.
    tx.send(bytes::Bytes::from_static(b"garbage"))
        .await
        .unwrap();
    drop(tx);
    let res = response.await.unwrap().unwrap();
    assert_eq!(res.status(), 400);
    res.into_body().collect().await.unwrap();
    // Idle from then on: closed like any other.
    closed_by_the_server(conn).await;
    node.stop().await;
}

/// A connection from `local` (a loopback address) to the node, with one request answered;
/// returned open.
async fn held_connection(node: &TestNode, local: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(node.app.public_addr).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 12];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
    stream
}

async fn refused(node: &TestNode, reason: &str) -> f64 {
    node.metric(
        "imgnode_http_refused_connections_total",
        &[("listener", "public"), ("reason", reason)],
    )
    .await
}

#[tokio::test]
async fn connections_over_the_per_address_limit_get_a_503() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start_with_env(
        dir,
        "[demo]\nseed = false\n",
        &[("IMGNODE_SERVER__MAX_CONNECTIONS_PER_IP", "2")],
    )
    .await;
    let held = vec![
        held_connection(&node, "127.0.0.1").await,
        held_connection(&node, "127.0.0.1").await,
    ];
    // The third from the same address: the same clean 503 as over max_connections.
    let mut third = TcpStream::connect(node.app.public_addr).await.unwrap();
    let answer = read_until_closed(&mut third).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap();
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"]["code"], "OVERLOADED");
    assert_eq!(refused(&node, "max_connections_per_ip").await, 1.0);
    assert_eq!(refused(&node, "max_connections").await, 0.0);
    // Another address (127.0.0.2 is loopback too) is served meanwhile.
    let other = held_connection(&node, "127.0.0.2").await;
    drop(other);
    // Closed connections give their slots back.
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut again = TcpStream::connect(node.app.public_addr).await.unwrap();
        again
            .write_all(b"GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap_or_default();
        let mut answer = Vec::new();
        let _ = again.read_to_end(&mut answer).await;
        if answer.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the closed connections' slots were not given back"
        );
    }
    node.stop().await;
}

#[tokio::test]
async fn trusted_proxies_are_exempt_from_the_per_address_limit() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start_with_env(
        dir,
        "[demo]\nseed = false\n",
        &[
            ("IMGNODE_SERVER__MAX_CONNECTIONS_PER_IP", "1"),
            ("IMGNODE_SERVER__TRUSTED_PROXIES", "[\"127.0.0.1/32\"]"),
        ],
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(held_connection(&node, "127.0.0.1").await);
    }
    // 127.0.0.2 is not a proxy: its one connection is its limit.
    let _one = held_connection(&node, "127.0.0.2").await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut second = socket.connect(node.app.public_addr).await.unwrap();
    assert!(
        read_until_closed(&mut second)
            .await
            .starts_with("HTTP/1.1 503")
    );
    node.stop().await;
}
