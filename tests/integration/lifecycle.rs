//! The real binary as systemd runs it: `Type=notify` messages on `$NOTIFY_SOCKET`, a request
//! in flight when SIGTERM arrives completes, exit 0; and the shipped unit file verifies and
//! is hardened.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixDatagram;

use crate::harness::fixture;

const BIN: &str = env!("CARGO_BIN_EXE_imgnode");

fn write_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("imgnode.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\npublic_listen = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\n\
             drain_timeout = \"20s\"\n[storage]\ndata_dir = \"{}\"\n[cache]\ndisk = \"128MiB\"\n\
             [cpu]\nnice = 0\n[log]\nformat = \"json\"\n[demo]\nseed = false\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

async fn next_notification(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(60), socket.recv(&mut buf))
        .await
        .expect("a notification within 60 s")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
#[expect(
    clippy::disallowed_methods,
    reason = "the child's stderr pipe and its exit are read with blocking std calls"
)]
async fn notifies_systemd_and_drains_a_request_in_flight_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let created = Command::new(BIN)
        .args([
            "--config",
            config.to_str().unwrap(),
            "account",
            "create",
            "acme",
        ])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let stdout = String::from_utf8_lossy(&created.stdout);
    let key = stdout
        .lines()
        .find_map(|l| l.strip_prefix("api key: "))
        .expect("the CLI prints a key")
        .to_string();

    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let mut child = Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "serve"])
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The ready line carries the bound address (port 0 was asked for).
    let stderr = child.stderr.take().unwrap();
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let mut addr_tx = Some(addr_tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if let Some(addr) = v["fields"]["public_addr"].as_str()
                && let Some(tx) = addr_tx.take()
            {
                let _ = tx.send(addr.to_string());
            }
        }
    });
    let ready = next_notification(&socket).await;
    assert!(ready.contains("READY=1"), "{ready}");
    let addr = tokio::time::timeout(Duration::from_secs(10), addr_rx)
        .await
        .unwrap()
        .unwrap();

    // An upload whose body is only half sent when SIGTERM arrives.
    let photo = fixture("photos/ladybird.jpg");
    let boundary = "imgnode-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&photo);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/images HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let half = body.len() / 2;
    stream.write_all(&body[..half]).await.unwrap();

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let stopping = next_notification(&socket).await;
    assert!(stopping.contains("STOPPING=1"), "{stopping}");
    stream.write_all(&body[half..]).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert!(response.contains("\"is_new\":true"), "{response}");

    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// `systemd-analyze` is part of systemd; on a machine without it this test says so and
/// checks nothing else.
#[test]
fn the_unit_file_verifies_and_is_hardened() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: systemd-analyze is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/imgnode.service"),
    )
    .unwrap();
    assert!(unit.contains("RestartPreventExitStatus=78"));
    assert!(unit.contains("Type=notify"));
    // `verify` checks that ExecStart exists: point it at the binary under test.
    let path = dir.path().join("imgnode.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/imgnode", BIN)).unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(verify.status.success(), "{verify:?}");
    assert!(
        verify.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&security.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for imgnode.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("an exposure score");
    assert!(score <= 2.0, "exposure {score}:\n{text}");
}
