//! `TestNode`: the real app on 127.0.0.1:0 with its own temporary data directory, driven
//! over real HTTP.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use imgnode::app::{RunningApp, start};
use imgnode::ingest::Original;
use imgnode::store::{NewImage, Visibility};
use sha2::{Digest, Sha256};

pub struct TestNode {
    pub app: RunningApp,
    pub base: String,
    pub ops: String,
    pub client: reqwest::Client,
    /// Kept alive for the node's lifetime; removed on drop.
    pub dir: tempfile::TempDir,
}

/// The config every test node starts from; `extra` is appended (TOML, later keys in the same
/// section must not repeat these).
pub fn test_config(data_dir: &Path, extra: &str) -> String {
    format!(
        r#"
[server]
public_listen = "127.0.0.1:0"
ops_listen = "127.0.0.1:0"
drain_timeout = "5s"
[storage]
data_dir = "{}"
{extra}
"#,
        data_dir.display()
    )
}

/// The operator token of nodes started with [`TestNode::start_operated`].
pub const OPERATOR: &str = "op-token-for-tests-91c2-5e0b7a48d3f61c29";

impl TestNode {
    pub async fn start() -> TestNode {
        TestNode::start_with("").await
    }

    /// Starts a node with extra TOML appended to the test config.
    pub async fn start_with(extra: &str) -> TestNode {
        let dir = tempfile::tempdir().expect("tempdir");
        TestNode::start_in(dir, extra).await
    }

    /// A node whose operator API is on, with [`OPERATOR`] as its token.
    pub async fn start_operated(extra: &str) -> TestNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = dir.path().join("operator.token");
        std::fs::write(&token, OPERATOR).expect("token file");
        let admin = format!("[admin]\ntoken_file = \"{}\"\n", token.display());
        TestNode::start_in(dir, &format!("{admin}{extra}")).await
    }

    pub async fn start_in(dir: tempfile::TempDir, extra: &str) -> TestNode {
        TestNode::start_with_env(dir, extra, &[]).await
    }

    /// With `IMGNODE_*` overrides too (for keys of the `[server]` section the test config
    /// already opens).
    pub async fn start_with_env(
        dir: tempfile::TempDir,
        extra: &str,
        overrides: &[(&str, &str)],
    ) -> TestNode {
        let text = test_config(dir.path(), extra);
        // A small disk tier: the default (10 GiB) is sized for production, not for dozens of
        // nodes in one test run.
        // Render threads at normal priority: tests assert behaviour, not scheduling, and a
        // shared CI box must not starve a test's render (the niceness has its own unit test).
        let mut env = vec![
            ("IMGNODE_CACHE__DISK".to_string(), "128MiB".to_string()),
            ("IMGNODE_CPU__NICE".to_string(), "0".to_string()),
        ];
        // The same suite on PostgreSQL with TEST_IMGNODE_STORE=postgres: a database per data
        // directory (see imgnode::store::testing).
        if imgnode::store::testing::postgres_selected() {
            let url = imgnode::store::testing::store_url(dir.path(), "imgnode.db").await;
            env.push(("IMGNODE_STORE__URL".to_string(), url));
            // PostgreSQL means several nodes may share the database: the KEK is a file
            // they share, never generated per node.
            if !overrides
                .iter()
                .any(|(k, _)| *k == "IMGNODE_STORAGE__KEK_FILE")
            {
                let kek = test_kek_file(dir.path());
                env.push((
                    "IMGNODE_STORAGE__KEK_FILE".to_string(),
                    kek.display().to_string(),
                ));
            }
        }
        env.extend(
            overrides
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string())),
        );
        let config = imgnode::config::parse(&text, env).expect("test config is valid");
        let app = start(config).await.expect("node starts");
        TestNode {
            base: format!("http://{}", app.public_addr),
            ops: format!("http://{}", app.ops_addr),
            app,
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client"),
            dir,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request")
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.client.get(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("request")
    }

    /// GET and return status, headers and body.
    pub async fn fetch(&self, path: &str) -> (u16, reqwest::header::HeaderMap, Bytes) {
        let res = self.get(path).await;
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        (status, headers, res.bytes().await.expect("body"))
    }

    /// The ops listener's /metrics text.
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.ops))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// The value of one sample in the ops listener's /metrics (sum over matching label sets).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics_text().await, name, labels)
    }

    /// A tenant API call with `key`; every answer, errors included, must be JSON.
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("API request");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.expect("API body");
        assert_eq!(headers["content-type"], "application/json", "{path}");
        let value = serde_json::from_slice(&bytes).expect("API answers JSON");
        (status, headers, value)
    }

    /// Creates `account` (plan `pro`) if missing and issues it a key with `scopes`
    /// (`"read"`, `"write"`, `"read,write"`); returns the secret.
    pub async fn account_key(&self, account: &str, scopes: &str) -> String {
        let state = &self.app.state;
        if state.store.account(account).await.unwrap().is_none() {
            state.store.create_account(account, "pro").await.unwrap();
        }
        let scopes = imgnode::auth::Scopes::parse(scopes).expect("scopes");
        state
            .api_keys
            .issue(&state.store, account, "test", scopes, None)
            .await
            .expect("issue key")
            .secret
    }

    /// Adds an image through the same ingestion path as `imgnode import`; another image under
    /// the same name is replaced (as an upload with `overwrite=true`).
    pub async fn add_image(&self, account: &str, path: &str, bytes: &[u8], visibility: Visibility) {
        let state = &self.app.state;
        if state.store.account(account).await.unwrap().is_none() {
            state.store.create_account(account, "free").await.unwrap();
        }
        state
            .ingest()
            .add(Original {
                account: account.to_string(),
                path: path.to_string(),
                original_filename: path.rsplit('/').next().unwrap().to_string(),
                bytes: Bytes::copy_from_slice(bytes),
                visibility,
                placement: imgnode::store::Placement {
                    overwrite: true,
                    ..Default::default()
                },
            })
            .await
            .expect("ingest");
    }

    /// Stores bytes and metadata directly, bypassing ingestion checks: how a node meets
    /// originals that were valid for another node's limits, or damaged at rest.
    pub async fn add_raw(
        &self,
        account: &str,
        stem: &str,
        declared: imgnode::pipeline::SourceFormat,
        bytes: &[u8],
    ) {
        let state = &self.app.state;
        if state.store.account(account).await.unwrap().is_none() {
            state.store.create_account(account, "free").await.unwrap();
        }
        let hash = hex::encode(Sha256::digest(bytes));
        state
            .originals
            .origin()
            .put_plaintext_legacy(&hash, Bytes::copy_from_slice(bytes))
            .await
            .unwrap();
        let image = NewImage {
            account: account.to_string(),
            id: hash[..16].to_string(),
            hash,
            format: declared,
            width: 100,
            height: 100,
            size: bytes.len() as u64,
            original_filename: format!("{stem}.{}", declared.extension()),
            visibility: Visibility::Public,
            dominant_color: None,
            has_alpha: None,
            frames: None,
        };
        let path = format!("{stem}.{}", declared.extension());
        state
            .store
            .put_image(&image, &path, stem, Default::default())
            .await
            .unwrap();
    }

    /// An operator API call (token [`OPERATOR`]) on the ops listener.
    pub async fn ops_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.ops))
            .bearer_auth(OPERATOR);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// A multipart upload of `bytes` to `target_path` through the tenant API.
    pub async fn upload(
        &self,
        key: &str,
        bytes: Vec<u8>,
        target: &str,
    ) -> (u16, serde_json::Value) {
        self.upload_with(key, bytes, target, &[]).await
    }

    /// [`TestNode::upload`] with more form fields (`visibility`, `overwrite`).
    pub async fn upload_with(
        &self,
        key: &str,
        bytes: Vec<u8>,
        target: &str,
        fields: &[(&'static str, &'static str)],
    ) -> (u16, serde_json::Value) {
        let mut form = reqwest::multipart::Form::new()
            .part(
                "file",
                reqwest::multipart::Part::bytes(bytes).file_name("f.bin"),
            )
            .text("target_path", target.to_string());
        for (name, value) in fields {
            form = form.text(*name, *value);
        }
        let res = self
            .client
            .post(format!("{}/api/v1/images", self.base))
            .bearer_auth(key)
            .multipart(form)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// The sealed object of `account`'s original `hash` (panics if it has none).
    pub async fn object_of(&self, account: &str, hash: &str) -> String {
        self.app
            .state
            .originals
            .object_name(account, hash)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no sealed object for {account}/{hash}"))
    }

    pub async fn stop(self) -> tempfile::TempDir {
        self.app.shutdown();
        self.app.wait().await;
        self.dir
    }
}

pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            let series = l.split_whitespace().next().unwrap_or("");
            let base = series.split('{').next().unwrap_or("");
            base == name
                && labels
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

pub fn fixture(rel: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// Decodes a response body with the `image` crate (independent of the node's decoders).
pub fn decode(bytes: &[u8]) -> image::DynamicImage {
    image::load_from_memory(bytes).expect("response decodes")
}

/// Width and height from the header, for every output format including AVIF.
pub fn dimensions(bytes: &[u8]) -> (u32, u32) {
    let s = imagesize::blob_size(bytes).expect("image header");
    (s.width as u32, s.height as u32)
}

/// `/i/{target}` signed with `keys` to expire at `exp` (`target`: `{account}/{path}.{ext}?{query}`).
pub fn sign(keys: &imgnode::signing::SigningKeys, target: &str, exp: i64) -> String {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = if query.is_empty() {
        format!("exp={exp}")
    } else {
        format!("{query}&exp={exp}")
    };
    let url = imgnode::delivery::url::DeliveryUrl::parse(path, &query).unwrap();
    format!(
        "/i/{path}?{query}&sig={}",
        keys.sign(&url.signing_message())
    )
}

/// Whether any file under `dir` contains `needle`.
pub fn dir_contains(dir: &Path, needle: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let path = e.path();
        if path.is_dir() {
            dir_contains(&path, needle)
        } else {
            std::fs::read(&path)
                .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        }
    })
}

pub fn assert_json_error(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
    want_status: u16,
    want_code: &str,
) {
    assert_eq!(
        status,
        want_status,
        "body: {}",
        String::from_utf8_lossy(body)
    );
    assert_eq!(headers["content-type"], "application/json");
    let v: serde_json::Value = serde_json::from_slice(body).expect("JSON error body");
    assert_eq!(v["error"]["code"], want_code, "{v}");
    assert_eq!(v["error"]["status"], want_status, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    assert!(v["error"]["path"].as_str().is_some());
}

impl TestNode {
    /// Sends `GET {target}` exactly as written (no client-side normalisation of `..`), and
    /// returns the status and body.
    pub async fn raw_get(&self, target: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.app.public_addr)
            .await
            .unwrap();
        let req = format!("GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out).to_string();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    }
}

/// A moto server (a real S3-compatible server) on a free loopback port, killed on drop.
pub struct Moto {
    child: std::process::Child,
    pub endpoint: String,
}

impl Moto {
    pub async fn start() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("moto_server must be installed (pip install 'moto[server]'); .ci/run does it");
        let endpoint = format!("http://127.0.0.1:{port}");
        wait_for_port(port, "moto_server").await;
        Moto { child, endpoint }
    }

    /// A credentials file for `origin.credentials_file`. Every S3 test needs one: without
    /// explicit credentials the AWS client looks for instance credentials off the loopback.
    pub fn credentials() -> tempfile::NamedTempFile {
        let creds = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            creds.path(),
            "access_key_id = \"testing\"\nsecret_access_key = \"testing-secret\"\n",
        )
        .unwrap();
        creds
    }

    /// Creates `bucket` (moto accepts unsigned bucket creation).
    pub async fn create_bucket(&self, bucket: &str) {
        let created = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .put(format!("{}/{bucket}", self.endpoint))
            .send()
            .await
            .unwrap();
        assert!(created.status().is_success(), "{}", created.status());
    }

    /// The `[origin]` section of a node using `bucket` with `creds`.
    pub fn origin_config(&self, bucket: &str, creds: &Path) -> String {
        format!(
            "[origin]\nkind = \"s3\"\nbucket = \"{bucket}\"\nendpoint = \"{}\"\npath_style = true\n\
             allow_http = true\ncredentials_file = \"{}\"\n",
            self.endpoint,
            creds.display()
        )
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (at most `within`) until the metric `name{labels}` scraped from the ops listener at
/// `ops` (`http://host:port`) is at least `min`; panics naming `what` otherwise.
pub async fn wait_for_metric(
    ops: &str,
    name: &str,
    labels: &[(&str, &str)],
    min: f64,
    within: std::time::Duration,
    what: &str,
) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Ok(res) = client.get(format!("{ops}/metrics")).send().await
            && let Ok(text) = res.text().await
            && metric_value(&text, name, labels) >= min
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A config file for a [`ChildNode`] in `dir`: ports 0, JSON logs, no demo seed, data in
/// `dir/data` with the store the suite runs on (see `imgnode::store::testing`); `extra` is
/// TOML for the sections this does not open. Returns the file and the store URL.
/// A KEK file at `{dir}/originals.kek` (where a node would generate its own), made once with
/// a random key at mode 0600: the `storage.kek_file` of nodes on PostgreSQL.
pub fn test_kek_file(dir: &Path) -> PathBuf {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("originals.kek");
    if !path.exists() {
        let mut key = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .unwrap()
            .read_exact(&mut key)
            .unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(&path, format!("{}\n", hex::encode(key))).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

pub async fn child_config(dir: &Path, extra: &str) -> (PathBuf, String) {
    let data = dir.join("data");
    let store_url = imgnode::store::testing::store_url(&data, "imgnode.db").await;
    let kek = if imgnode::store::testing::postgres_selected() {
        format!("kek_file = \"{}\"\n", test_kek_file(&data).display())
    } else {
        String::new()
    };
    let config = dir.join("imgnode.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\npublic_listen = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\n\
             [storage]\ndata_dir = \"{}\"\n{kek}[store]\nurl = \"{store_url}\"\n[cpu]\nnice = 0\n\
             [log]\nformat = \"json\"\n[demo]\nseed = false\n{extra}",
            data.display()
        ),
    )
    .unwrap();
    (config, store_url)
}

/// The real `imgnode` binary serving `config` (which must log JSON and listen on port 0) as a
/// child process: its addresses read from its ready line; killed (SIGKILL) on drop.
pub struct ChildNode {
    pub child: std::process::Child,
    /// `http://127.0.0.1:port` of the public and ops listeners.
    pub base: String,
    pub ops: String,
}

impl ChildNode {
    #[expect(
        clippy::disallowed_methods,
        reason = "the child's stderr is read with blocking std calls on a thread of its own"
    )]
    pub async fn spawn(config: &Path) -> ChildNode {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_imgnode"))
            .args(["--config", config.to_str().unwrap(), "serve"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Blocking reads of the child's stderr, on a thread of their own.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                // Shown only when the test fails.
                eprintln!("child: {line}");
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if let (Some(public), Some(ops)) = (
                    v["fields"]["public_addr"].as_str(),
                    v["fields"]["ops_addr"].as_str(),
                ) && let Some(tx) = tx.take()
                {
                    let _ = tx.send((public.to_string(), ops.to_string()));
                }
            }
        });
        let (public, ops) = tokio::time::timeout(std::time::Duration::from_secs(60), rx)
            .await
            .expect("the child node starts within a minute")
            .expect("the child node starts (see its log above)");
        ChildNode {
            child,
            base: format!("http://{public}"),
            ops: format!("http://{ops}"),
        }
    }

    /// Peak resident set size of the child so far (VmHWM), from /proc: a large temporary
    /// allocation shows here even after it is freed.
    pub fn peak_rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS")
            * 1024
    }

    /// SIGKILL, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `imgnode account create NAME --plan pro` through the CLI (pro: every API feature);
/// returns the printed key.
pub fn cli_create_account(config: &Path, name: &str) -> String {
    let created = std::process::Command::new(env!("CARGO_BIN_EXE_imgnode"))
        .args([
            "--config",
            config.to_str().unwrap(),
            "account",
            "create",
            name,
            "--plan",
            "pro",
        ])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    String::from_utf8_lossy(&created.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("api key: "))
        .expect("the CLI prints a key")
        .to_string()
}

/// Varnish (Debian's, with vmod-xkey) on `port` in front of a node's public `backend_port`,
/// running `config/varnish.vcl`; stopped on drop.
pub struct Varnish {
    child: std::process::Child,
    pub base: String,
    _dir: tempfile::TempDir,
}

impl Varnish {
    pub async fn start(port: u16, backend_port: u16) -> Varnish {
        let dir = tempfile::tempdir().unwrap();
        let vcl = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/varnish.vcl"),
        )
        .unwrap()
        .replace(".port = \"8080\";", &format!(".port = \"{backend_port}\";"));
        let vcl_path = dir.path().join("imgnode.vcl");
        std::fs::write(&vcl_path, vcl).unwrap();
        let child = std::process::Command::new("/usr/sbin/varnishd")
            // Foreground, no privilege separation: the test's own user runs it, in a
            // private temporary folder.
            .args(["-F", "-j", "none"])
            .args(["-a", &format!("127.0.0.1:{port}")])
            .arg("-f")
            .arg(&vcl_path)
            .arg("-n")
            .arg(dir.path().join("work"))
            .args(["-s", "malloc,32m", "-T", "none"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("varnishd must be installed (apt install varnish varnish-modules); tests/setup.sh does it");
        let base = format!("http://127.0.0.1:{port}");
        wait_for_port(port, "varnishd").await;
        Varnish {
            child,
            base,
            _dir: dir,
        }
    }

    /// A free loopback port (bound and released).
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

impl Varnish {
    /// Stops Varnish and returns once its port refuses connections (the manager stops its
    /// cache process on SIGTERM; that process, not the manager, holds the listening socket).
    pub async fn stop(mut self) {
        self.terminate();
        let port: u16 = self.base.rsplit(':').next().unwrap().parse().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "varnishd did not stop"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    fn terminate(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Varnish {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Waits (at most 30 s) for an external process started by a test to listen on `port`.
async fn wait_for_port(port: u16, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(std::time::Instant::now() < deadline, "{what} did not start");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `promtool check rules FILE` must pass.
pub fn promtool_check_rules(file: &Path) {
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(file)
        .output()
        .expect("promtool is missing: run `bash tests/setup.sh`");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
