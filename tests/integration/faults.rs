//! Faults injected into the real parts a node depends on: the S3 origin (moto behind a
//! fault-injecting TCP proxy) down, slow, failing and cutting responses off; the SQLite
//! database locked by another writer; the disk cache's filesystem full or read-only; the
//! process killed with SIGKILL during uploads and renders. Each time: clear errors with the
//! spec's codes, cached variants still served, recovery without a restart, nothing lost or
//! half-written.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{
    ChildNode, Moto, TestNode, assert_json_error, child_config, cli_create_account, decode,
    fixture, wait_for_metric,
};

/// What the proxy does to the connections it accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Pass,
    /// Accepts and closes at once (a stopped server behind a balancer).
    Down,
    /// Waits this long before passing the request on.
    Slow(Duration),
    /// Answers every request `500 Internal Server Error`.
    Fail500,
    /// Passes the request, then cuts the answer off after its first 600 bytes.
    CutOff,
}

/// A TCP proxy in front of an upstream, with a switchable fault. Switching closes every open
/// connection, so pooled keep-alive connections meet the new mode too.
struct FaultProxy {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    generation: tokio::sync::watch::Sender<u64>,
}

impl FaultProxy {
    async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(Mutex::new(Mode::Pass));
        let (generation, watch) = tokio::sync::watch::channel(0u64);
        let shared = mode.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mode = *shared.lock().unwrap();
                let mut reset = watch.clone();
                reset.mark_unchanged();
                tokio::spawn(async move {
                    tokio::select! {
                        () = serve(client, upstream, mode) => {}
                        _ = reset.changed() => {}
                    }
                });
            }
        });
        FaultProxy {
            addr,
            mode,
            generation,
        }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
        self.generation.send_modify(|g| *g += 1);
    }
}

async fn serve(mut client: TcpStream, upstream: SocketAddr, mode: Mode) {
    match mode {
        Mode::Down => {}
        Mode::Fail500 => loop {
            // One 500 per request head; bodies (uploads) are not expected in this mode.
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match client.read(&mut byte).await {
                    Ok(1) => head.push(byte[0]),
                    _ => return,
                }
            }
            let answer = b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n";
            if client.write_all(answer).await.is_err() {
                return;
            }
        },
        Mode::Slow(delay) => {
            tokio::time::sleep(delay).await;
            pass(client, upstream, None).await;
        }
        Mode::Pass => pass(client, upstream, None).await,
        Mode::CutOff => pass(client, upstream, Some(600)).await,
    }
}

async fn pass(client: TcpStream, upstream: SocketAddr, cut_after: Option<usize>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async { tokio::io::copy(&mut cr, &mut sw).await };
    let down = async {
        match cut_after {
            None => {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
            }
            Some(limit) => {
                let mut buf = vec![0u8; limit];
                let mut sent = 0;
                while sent < limit {
                    match sr.read(&mut buf[sent..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if cw.write_all(&buf[sent..sent + n]).await.is_err() {
                                return;
                            }
                            sent += n;
                        }
                    }
                }
                // Then the connection drops mid-answer.
            }
        }
    };
    tokio::select! {
        _ = up => {}
        () = down => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_origin_down_slow_or_failing_gives_502_or_504_and_recovers_without_restart() {
    let moto = Moto::start().await;
    moto.create_bucket("faulty").await;
    let upstream: SocketAddr = moto.endpoint.trim_start_matches("http://").parse().unwrap();
    let proxy = FaultProxy::start(upstream).await;
    let creds = Moto::credentials();
    let node = TestNode::start_with(&format!(
        "[origin]\nkind = \"s3\"\nbucket = \"faulty\"\nendpoint = \"http://{}\"\npath_style = true\n\
         allow_http = true\ntimeout = \"1s\"\ncredentials_file = \"{}\"\n\
         [cache]\noriginals_memory = \"0\"\n[demo]\nseed = false\n",
        proxy.addr,
        creds.path().display()
    ))
    .await;
    node.add_image(
        "acme",
        "bug.jpg",
        &fixture("photos/ladybird.jpg"),
        imgnode::store::Visibility::Public,
    )
    .await;
    let cached = "/i/acme/bug.jpg?w=100";
    assert_eq!(node.fetch(cached).await.0, 200);
    assert_eq!(node.fetch(cached).await.1["x-cache"], "HIT-MEMORY");

    // Each fault: a new variant (it needs the original) fails with the spec's code, the
    // cached one is still served.
    let cases = [
        (Mode::Down, 502, "ORIGIN_UNAVAILABLE"),
        (Mode::Slow(Duration::from_secs(3)), 504, "ORIGIN_TIMEOUT"),
        (Mode::Fail500, 502, "ORIGIN_UNAVAILABLE"),
        (Mode::CutOff, 502, "ORIGIN_UNAVAILABLE"),
    ];
    for (i, (mode, status, code)) in cases.into_iter().enumerate() {
        proxy.set(mode);
        let started = std::time::Instant::now();
        let (got, headers, body) = node.fetch(&format!("/i/acme/bug.webp?w={}", 60 + i)).await;
        eprintln!("{mode:?}: {got} after {:?}", started.elapsed());
        assert_json_error(got, &headers, &body, status, code);
        let (got, headers, _) = node.fetch(cached).await;
        assert_eq!(
            (got, &headers["x-cache"]),
            (200, &"HIT-MEMORY".parse().unwrap()),
            "{mode:?}"
        );
    }

    // The origin is back: the same node renders again, nothing restarted.
    proxy.set(Mode::Pass);
    let (got, headers, body) = node.fetch("/i/acme/bug.webp?w=60").await;
    assert_eq!(got, 200);
    assert_eq!(headers["content-type"], "image/webp");
    assert_eq!(decode(&body).width(), 60);
    let unavailable = node
        .metric(
            "imgnode_origin_fetches_total",
            &[("outcome", "unavailable")],
        )
        .await;
    let timeouts = node
        .metric("imgnode_origin_fetches_total", &[("outcome", "timeout")])
        .await;
    assert!(
        unavailable >= 3.0 && timeouts >= 1.0,
        "{unavailable} {timeouts}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_sqlite_database_makes_writers_wait_then_answers_503_and_recovers() {
    use sqlx::Connection;
    if imgnode::store::testing::postgres_selected() {
        // SQLite's own locking; PostgreSQL's row locks are covered by the cluster tests.
        return;
    }
    let node = TestNode::start_with("[demo]\nseed = false\n").await;
    let key = node.account_key("acme", "read,write").await;
    let url = format!("sqlite://{}", node.data_dir().join("imgnode.db").display());
    let mut other = sqlx::sqlite::SqliteConnection::connect(&url).await.unwrap();
    let create = |name: &str| {
        let client = node.client.clone();
        let url = format!("{}/api/v1/settings/presets", node.base);
        let key = key.clone();
        let body = json!({"name": name, "params": {"w": 10}});
        tokio::spawn(async move {
            let res = client
                .post(url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            let retry = res.headers().get("retry-after").cloned();
            (status, retry, res.bytes().await.unwrap())
        })
    };

    // Another process holds the write lock for a second: writers wait, readers do not.
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let writers: Vec<_> = (0..4).map(|i| create(&format!("p{i}"))).collect();
    let (status, _, _) = node.api(Method::GET, "/api/v1/images", &key, None).await;
    assert_eq!(status, 200, "reads go on under a write lock (WAL)");
    tokio::time::sleep(Duration::from_secs(1)).await; // the fault's duration
    assert!(
        writers.iter().all(|w| !w.is_finished()),
        "a write went through a held lock"
    );
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    for w in writers {
        let (status, _, body) = w.await.unwrap();
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    }

    // Held past the busy timeout (5 s): a clear 503 with Retry-After, then recovery.
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let (status, retry, body) = create("late").await.unwrap();
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert_eq!(retry.unwrap(), "1");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "OVERLOADED");
    let (status, _, _) = create("late").await.unwrap();
    assert_eq!(status, 201);
}

/// A tmpfs mounted for the test, unmounted on drop; `None` where mounting is not allowed.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(Tmpfs(dir.to_path_buf()));
        }
        assert!(
            std::env::var("TEST_IMGNODE_STRICT").is_err(),
            "cannot mount a tmpfs (needs root and mount rights)"
        );
        eprintln!(
            "\n******** SKIPPED the disk-cache fault test: cannot mount a tmpfs here (needs \
             root and mount rights).\n"
        );
        None
    }

    fn read_only(&self, on: bool) {
        immutable(&self.0, on);
    }
}

/// Makes a folder read-only (`chattr +i`: root ignores permission bits) or writable again.
fn immutable(dir: &std::path::Path, on: bool) {
    let ok = std::process::Command::new("chattr")
        .arg(if on { "+i" } else { "-i" })
        .arg(dir)
        .status()
        .unwrap();
    assert!(ok.success());
}

/// A read-only folder, writable again on drop.
struct ReadOnly(std::path::PathBuf);

impl Drop for ReadOnly {
    fn drop(&mut self) {
        immutable(&self.0, false);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Waits (bounded) until the node's periodic disk probe reports `want`.
async fn disk_available(node: &TestNode, want: f64) {
    let deadline = std::time::Instant::now() + imgnode::app::DISK_PROBE_INTERVAL * 3;
    while node.metric("imgnode_cache_disk_available", &[]).await != want {
        assert!(
            std::time::Instant::now() < deadline,
            "imgnode_cache_disk_available never became {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A new variant renders (200, right width) and its repeat is a memory hit.
async fn renders_from_memory(node: &TestNode, width: u32) {
    let target = format!("/i/demo/ladybird.webp?w={width}");
    let (status, _, body) = node.fetch(&target).await;
    assert_eq!(status, 200, "{target}");
    assert_eq!(decode(&body).width(), width);
    assert_eq!(
        node.fetch(&target).await.1["x-cache"],
        "HIT-MEMORY",
        "{target}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_or_read_only_disk_cache_leaves_renders_served_from_memory() {
    let cache = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(cache.path(), "256m") else {
        return;
    };
    let dir = cache.path().to_str().unwrap().to_string();
    // For a second node, made read-only before it starts (on the tmpfs: chattr needs a
    // filesystem that has the flag).
    let empty = cache.path().join("second");
    std::fs::create_dir(&empty).unwrap();
    let node = TestNode::start_with_env(
        tempfile::tempdir().unwrap(),
        "",
        &[("IMGNODE_CACHE__DIR", &dir)],
    )
    .await;
    disk_available(&node, 1.0).await;
    renders_from_memory(&node, 101).await;

    // The filesystem fills up.
    let filler = cache.path().join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 1 << 20];
    while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
    drop(file);
    disk_available(&node, 0.0).await;
    renders_from_memory(&node, 102).await;
    std::fs::remove_file(&filler).unwrap();
    disk_available(&node, 1.0).await;

    // The folder turns read-only (an operator's mistake, a remount after I/O errors).
    fs.read_only(true);
    disk_available(&node, 0.0).await;
    renders_from_memory(&node, 103).await;
    // A node started on a read-only cache folder caches in memory only, and says so.
    immutable(&empty, true);
    let locked = ReadOnly(empty.clone());
    let second = TestNode::start_with_env(
        tempfile::tempdir().unwrap(),
        "",
        &[("IMGNODE_CACHE__DIR", empty.to_str().unwrap())],
    )
    .await;
    assert_eq!(
        second.metric("imgnode_cache_disk_available", &[]).await,
        0.0
    );
    renders_from_memory(&second, 104).await;
    drop(second);
    drop(locked);
    fs.read_only(false);
    disk_available(&node, 1.0).await;
    renders_from_memory(&node, 105).await;
    node.stop().await;
}

/// Distinct valid JPEGs: the same photo with `n` appended after its end marker.
fn variant_of(photo: &[u8], n: usize) -> Vec<u8> {
    let mut bytes = photo.to_vec();
    bytes.extend_from_slice(format!("imgnode-test-{n}").as_bytes());
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_uploads_and_renders_loses_nothing_committed_and_leaves_no_half_object() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (config, _) = child_config(dir.path(), "[cache]\ndisk = \"128MiB\"\n").await;
    let key = cli_create_account(&config, "acme");
    let photo = fixture("photos/elephants.jpg");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    let mut node = ChildNode::spawn(&config).await;
    let upload = |base: String, n: usize| {
        let client = client.clone();
        let key = key.clone();
        let bytes = variant_of(&photo, n);
        async move {
            let form = reqwest::multipart::Form::new()
                .part(
                    "file",
                    reqwest::multipart::Part::bytes(bytes).file_name("e.jpg"),
                )
                .text("target_path", format!("e/{n}.jpg"));
            client
                .post(format!("{base}/api/v1/images"))
                .bearer_auth(key)
                .multipart(form)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };
    assert_eq!(upload(node.base.clone(), 0).await.unwrap(), 201);
    // A variant rendered and cached before the crash.
    let before = format!("{}/i/acme/e/0.webp?w=200", node.base);
    assert_eq!(client.get(&before).send().await.unwrap().status(), 200);

    // Uploads and slow renders in flight, then SIGKILL while the CPU pool is busy.
    let mut inflight = tokio::task::JoinSet::new();
    for n in 1..=8 {
        inflight.spawn(upload(node.base.clone(), n));
    }
    for w in [900, 901, 902] {
        let url = format!("{}/i/acme/e/0.avif?w={w}", node.base);
        let client = client.clone();
        inflight.spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) });
    }
    wait_for_metric(
        &node.ops,
        "imgnode_cpu_in_flight",
        &[],
        1.0,
        Duration::from_secs(30),
        "a render starting",
    )
    .await;
    node.kill();
    let mut answered = 0;
    while let Some(done) = inflight.join_next().await {
        if matches!(done.unwrap(), Ok(201)) {
            answered += 1;
        }
    }

    // Restarted on the same data: the disk cache recovers and the node serves.
    let node = ChildNode::spawn(&config).await;
    let ready = client
        .get(format!("{}/ready", node.ops))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let res = client
        .get(format!("{}/i/acme/e/0.webp?w=200", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // Every path the database has points to an original that is there and whole.
    let listing: serde_json::Value = client
        .get(format!("{}/api/v1/images?folder=e&limit=100", node.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let images = listing["images"].as_array().unwrap();
    assert!(
        images.len() > answered,
        "{} listed, {answered} answered 201",
        images.len()
    );
    for image in images {
        let path = image["paths"][0].as_str().unwrap();
        let stem = path.strip_suffix(".jpg").unwrap();
        let res = client
            .get(format!("{}/i/acme/{stem}.png?w=40", node.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(decode(&res.bytes().await.unwrap()).width(), 40);
    }
    // Every listed image rendered above from its sealed object, so none that a row names is
    // half-written. The objects on disk are all whole sealed objects (object_store writes a
    // temporary file and renames it): the header, and a length that is a whole number of
    // segments. Plaintext objects named by a content hash (none here) must hold those bytes.
    let mut checked = 0;
    let mut pending = vec![data.join("originals")];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            } else if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                let bytes = std::fs::read(entry.path()).unwrap();
                assert_eq!(
                    hex::encode(Sha256::digest(&bytes)),
                    name,
                    "a damaged object"
                );
            } else if name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                let bytes = std::fs::read(entry.path()).unwrap();
                assert!(
                    bytes.starts_with(b"IMGNOBJ1"),
                    "{name}: not a sealed object"
                );
                // 16-byte header, then segments of 64 KiB + 16, the last shorter.
                let last = (bytes.len() - 16) % (65536 + 16);
                assert!(last == 0 || last >= 16, "{name}: cut short");
                checked += 1;
            }
        }
    }
    assert!(
        checked >= images.len(),
        "{checked} objects for {} images",
        images.len()
    );
}
