//! The console in real browsers, headless, against the real node on loopback: Debian's
//! `chromium` through `chromium-driver` and `firefox-esr` through Mozilla's `geckodriver`,
//! both driven over WebDriver by fantoccini, the same flow in each. The passkey is the
//! WebDriver virtual authenticator (in Firefox, with its soft token switched on: with the
//! virtual authenticator alone, Firefox ESR 153 headless never finished the ceremony).
//! Screenshots of every page are written to
//! `{CARGO_TARGET_TMPDIR}/console-screenshots/{chromium,firefox}/` (the committed set is in
//! `docs/console/`).
//!
//! Without a browser or its driver the test says so and returns, except under
//! `TEST_IMGNODE_STRICT=1` (CI, which installs them through `tests/setup.sh`), where it
//! fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::harness::{TestNode, Varnish, fixture};

/// The browsers the console is tested in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Browser {
    /// Debian's `chromium`, through `chromedriver` (`chromium-driver`).
    Chromium,
    /// Debian's `firefox-esr`, through Mozilla's `geckodriver`.
    Firefox,
}

impl Browser {
    fn binaries(self) -> [&'static str; 2] {
        match self {
            Browser::Chromium => ["chromium", "chromedriver"],
            Browser::Firefox => ["firefox-esr", "geckodriver"],
        }
    }
}

/// A WebDriver server on a loopback port, stopped on drop.
struct Driver {
    browser: Browser,
    child: Child,
    url: String,
}

impl Driver {
    /// `None` when the browser or its driver is not installed.
    #[expect(
        clippy::disallowed_methods,
        reason = "the driver's stdout is drained with blocking std reads on a thread of its own"
    )]
    fn start(browser: Browser) -> Option<Driver> {
        let installed = |bin: &str| {
            Command::new(bin)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let [app, driver] = browser.binaries();
        if !installed(driver) || !installed(app) {
            return None;
        }
        let port = Varnish::free_port();
        let mut cmd = Command::new(driver);
        cmd.arg(format!("--port={port}"));
        // Each says when it listens, on stdout: read up to that line.
        let ready_line = match browser {
            Browser::Chromium => "started successfully",
            Browser::Firefox => "Listening on",
        };
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the WebDriver server");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = lines.any(|l| l.is_ok_and(|l| l.contains(ready_line)));
        assert!(ready, "{driver} ended before it listened");
        std::thread::spawn(move || lines.for_each(drop));
        Some(Driver {
            browser,
            child,
            url: format!("http://127.0.0.1:{port}"),
        })
    }

    async fn session(&self) -> Client {
        let caps = match self.browser {
            Browser::Chromium => json!({
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--window-size=1280,1000",
                             "--force-device-scale-factor=1", "--lang=en-US"],
                },
                "unhandledPromptBehavior": "ignore",
            }),
            Browser::Firefox => json!({
                "moz:firefoxOptions": {
                    "binary": "/usr/bin/firefox-esr",
                    "args": ["-headless", "--width=1280", "--height=1000"],
                    "prefs": {"intl.accept_languages": "en-US", "layout.css.devPixelsPerPx": "1.0", "security.webauth.webauthn_enable_softtoken": true, "security.webauth.webauthn_enable_usbtoken": false},
                },
                "unhandledPromptBehavior": "ignore",
            }),
        };
        let caps = caps.as_object().unwrap().clone();
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a browser session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// WebDriver's `Add Virtual Authenticator` (WebAuthn Level 2 §11.3): a platform
/// authenticator that holds resident keys and verifies its user.
#[derive(Debug)]
struct AddVirtualAuthenticator;

impl WebDriverCompatibleCommand for AddVirtualAuthenticator {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/webauthn/authenticator",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({
            "protocol": "ctap2",
            "transport": "internal",
            "hasResidentKey": true,
            "hasUserVerification": true,
            "isUserVerified": true,
            "isUserConsenting": true,
        });
        (http::Method::POST, Some(body.to_string()))
    }
}

/// A page open in the browser, with the waits and reads the test needs.
struct Page {
    c: Client,
    origin: String,
    shots: PathBuf,
}

const WAIT: Duration = Duration::from_secs(30);

impl Page {
    async fn js(&self, script: &str) -> Value {
        self.c.execute(script, vec![]).await.expect(script)
    }

    /// Waits until `expr` (a JavaScript expression) is truthy; panics with `what` after
    /// [`WAIT`]. The browser works on its own: this only looks at its DOM.
    async fn until(&self, expr: &str, what: &str) {
        let script = format!("return !!({expr});");
        let start = Instant::now();
        loop {
            if self.js(&script).await == Value::Bool(true) {
                return;
            }
            if start.elapsed() > WAIT {
                let status = self
                    .js("return document.getElementById('status').textContent")
                    .await;
                panic!("waited {WAIT:?} for {what} ({expr}); status line: {status}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `body` (JavaScript that ends by calling `done(value)`) and returns the value.
    /// (Chromium runs an `execute` script as an async function, Firefox does not: this is
    /// the form both take.)
    async fn run_async(&self, body: &str) -> Value {
        let script = format!("const done = arguments[arguments.length - 1]; {body}");
        self.c.execute_async(&script, vec![]).await.expect(body)
    }

    /// `GET path` from the page (with its session cookie): its JSON.
    async fn fetch_json(&self, path: &str) -> Value {
        self.run_async(&format!(
            "fetch({}).then((r) => r.json()).then(done, (e) => done(String(e)));",
            json!(path)
        ))
        .await
    }

    async fn go(&self, hash: &str) {
        self.c
            .goto(&format!("{}/console/{hash}", self.origin))
            .await
            .unwrap();
        // Collects what the content security policy blocks from here on (see `csp_clean`).
        self.js("if (!window.__csp) { window.__csp = []; document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`)); }").await;
    }

    /// Nothing the page did was blocked by its content security policy.
    async fn csp_clean(&self) {
        let seen = self.js("return window.__csp || []").await;
        assert_eq!(seen, json!([]), "blocked by the CSP");
    }

    /// Goes to the page at `hash` and waits for its element `id`.
    async fn open(&self, hash: &str, id: &str, what: &str) {
        self.go(hash).await;
        self.until(&format!("document.getElementById({})", json!(id)), what)
            .await;
    }

    async fn fill(&self, css: &str, text: &str) {
        let e = self.c.find(Locator::Css(css)).await.expect(css);
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.c
            .find(Locator::Css(css))
            .await
            .expect(css)
            .click()
            .await
            .expect(css);
    }

    async fn text(&self, css: &str) -> String {
        self.c
            .find(Locator::Css(css))
            .await
            .expect(css)
            .text()
            .await
            .unwrap()
    }

    async fn shot(&self, name: &str) {
        let png = self.c.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    /// Accepts the `confirm()` the page opened (it waits for it first).
    async fn accept(&self) {
        let start = Instant::now();
        while self.c.get_alert_text().await.is_err() {
            assert!(start.elapsed() < WAIT, "no confirm dialog opened");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.c.accept_alert().await.unwrap();
    }

    async fn sign_in_with_key(&self, key: &str) {
        self.go("").await;
        self.until("!document.getElementById('signed-out').hidden || !document.getElementById('nav').hidden", "the console to load").await;
        if self
            .js("return !document.getElementById('nav').hidden")
            .await
            == Value::Bool(true)
        {
            self.sign_out().await;
        }
        self.fill("#key", key).await;
        self.click("#key-form button").await;
        self.until(
            "!document.getElementById('nav').hidden",
            "the signed-in console",
        )
        .await;
    }

    async fn sign_out(&self) {
        self.click("#sign-out").await;
        self.until(
            "!document.getElementById('signed-out').hidden",
            "the sign-in form",
        )
        .await;
    }

    /// The number of cards in the grid once the images page shows.
    async fn cards(&self) -> u64 {
        self.until("document.getElementById('image-grid')", "the image grid")
            .await;
        self.js("return document.querySelectorAll('#image-grid .card').length")
            .await
            .as_u64()
            .unwrap()
    }
}

/// File names that must show as text: markup, quotes, a right-to-left override.
const HOSTILE: [&str; 3] = [
    "<img src=x onerror=alert(1)><b id=\"injected\">bold.jpg",
    "it's a \"quoted\" name.jpg",
    "photo-\u{202E}gpj.exe.jpg",
];

/// How the console shows `name`: bidirectional controls as visible `[U+XXXX]` markers.
fn shown(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '\u{061C}'
            | '\u{200E}'
            | '\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}' => {
                format!("[U+{:04X}]", u32::from(c))
            }
            c => c.to_string(),
        })
        .collect()
}

fn write_uploads(dir: &Path) -> Vec<PathBuf> {
    // Three photos (the same bytes would be one image under three paths).
    let photos = ["ladybird.jpg", "chelsea.jpg", "coffee.jpg"];
    let mut paths: Vec<PathBuf> = HOSTILE
        .iter()
        .zip(photos)
        .map(|(name, photo)| {
            let p = dir.join(name);
            std::fs::write(&p, fixture(&format!("photos/{photo}"))).unwrap();
            p
        })
        .collect();
    let bad = dir.join("not-an-image.jpg");
    std::fs::write(&bad, vec![b'x'; 500]).unwrap();
    paths.push(bad);
    paths
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_chromium() {
    console_in(Browser::Chromium).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_firefox() {
    console_in(Browser::Firefox).await;
}

/// Every page of the console, driven as a tenant would in `browser`.
async fn console_in(browser: Browser) {
    let Some(driver) = Driver::start(browser) else {
        let [app, driver] = browser.binaries();
        assert!(
            !std::env::var("TEST_IMGNODE_STRICT").is_ok_and(|v| v == "1"),
            "{app} and {driver} are required (bash tests/setup.sh installs them)"
        );
        eprintln!("SKIPPED console_in({browser:?}): {app} or {driver} is not installed");
        return;
    };
    let node = TestNode::start().await;
    let alpha = node.account_key("alpha", "read,write,account").await;
    let beta = node.account_key("beta", "read,write,account").await;
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("console-screenshots")
        .join(format!("{browser:?}").to_lowercase());
    std::fs::create_dir_all(&shots).unwrap();
    let c = driver.session().await;
    c.issue_cmd(AddVirtualAuthenticator)
        .await
        .expect("a virtual authenticator");
    let page = Page {
        c,
        origin: format!("http://localhost:{}", node.app.public_addr.port()),
        shots,
    };

    // Sign in with the API key, register a passkey, sign out, sign in with the passkey.
    page.go("").await;
    page.until(
        "!document.getElementById('signed-out').hidden",
        "the sign-in form",
    )
    .await;
    page.shot("sign-in").await;
    page.sign_in_with_key(&alpha).await;
    page.open("#/passkeys", "register-form", "the passkeys page")
        .await;
    page.fill("#passkey-name", "ci laptop").await;
    page.click("#register-form button").await;
    page.until(
        "document.getElementById('passkeys').textContent.includes('ci laptop')",
        "the new passkey in the list",
    )
    .await;
    page.shot("passkeys").await;
    page.sign_out().await;
    page.fill("#account", "alpha").await;
    page.click("#passkey-form button").await;
    page.until(
        "!document.getElementById('nav').hidden",
        "the passkey sign-in",
    )
    .await;
    let session = page.fetch_json("/console/api/session").await;
    assert_eq!(session["account"], "alpha");
    assert_eq!(session["signed_in_with"], "passkey", "{session}");

    // Upload by the file input: three photos under hostile names and one file that is not
    // an image, which shows the API's error on its own row.
    let files = tempfile::tempdir().unwrap();
    let uploads = write_uploads(files.path());
    page.open("#/upload", "upload-files", "the upload page")
        .await;
    page.fill("#upload-folder", "trip").await;
    let list: Vec<String> = uploads.iter().map(|p| p.display().to_string()).collect();
    page.c
        .find(Locator::Id("upload-files"))
        .await
        .unwrap()
        .send_keys(&list.join("\n"))
        .await
        .unwrap();
    page.until(
        "document.querySelectorAll('#upload-list .upload').length === 4 && \
         [...document.querySelectorAll('#upload-list .upload')].every((r) => r.dataset.state === 'done' || r.dataset.state === 'error')",
        "every upload to finish",
    )
    .await;
    let states = page
        .js("return [...document.querySelectorAll('#upload-list .upload')].map((r) => [r.querySelector('.name').textContent, r.dataset.state, r.querySelector('.state').textContent, r.querySelector('progress').value])")
        .await;
    let states = states.as_array().unwrap();
    for (i, name) in HOSTILE.iter().enumerate() {
        // The row shows the local file's name as text.
        assert_eq!(states[i][0], shown(name), "row {i}: {states:?}");
        assert_eq!(states[i][1], "done", "row {i}: {states:?}");
        assert_eq!(states[i][3], 100, "row {i}: {states:?}");
    }
    assert_eq!(states[3][1], "error", "{states:?}");
    assert!(
        states[3][2].as_str().unwrap().contains("VALIDATION_ERROR")
            || states[3][2].as_str().unwrap().contains("UNSUPPORTED"),
        "the API's error shows on the row: {states:?}"
    );
    page.shot("upload").await;
    // Dropped files take the same path: a drop event carrying a file (a WebP the node
    // delivers, fetched by the page) into another folder.
    page.fill("#upload-folder", "dropped").await;
    let dropped = page
        .run_async(
            "fetch('/i/alpha/trip/photo-gpj.exe.webp?w=320').then((r) => r.blob()).then((b) => { \
               const dt = new DataTransfer(); \
               dt.items.add(new File([b], 'dropped.webp', { type: 'image/webp' })); \
               const zone = document.getElementById('dropzone'); \
               zone.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true })); \
               zone.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true })); \
               done(b.size); }, (e) => done(String(e)));",
        )
        .await;
    assert!(dropped.as_u64().is_some_and(|n| n > 1000), "{dropped}");
    page.until(
        "[...document.querySelectorAll('#upload-list .upload')].some((r) => r.querySelector('.name').textContent === 'dropped.webp' && r.dataset.state === 'done')",
        "the dropped file's upload",
    )
    .await;
    let (_, _, listed) = node
        .api(
            reqwest::Method::GET,
            "/api/v1/images?path=dropped",
            &alpha,
            None,
        )
        .await;
    assert_eq!(
        listed["images"][0]["original_filename"], "dropped.webp",
        "{listed}"
    );

    // The grid: every hostile name as text, nothing injected, thumbnails delivered by the
    // node at the size asked for.
    page.go("#/images?path=trip").await;
    assert_eq!(page.cards().await, 3);
    let names = page
        .js("return [...document.querySelectorAll('#image-grid .card .name')].map((n) => n.textContent).sort()")
        .await;
    // Exactly the names the API stored (a browser sends `"` in a multipart file name as
    // `%22`, as HTML says, so the stored name is what to compare with).
    let (_, _, listed) = node
        .api(
            reqwest::Method::GET,
            "/api/v1/images?path=trip",
            &alpha,
            None,
        )
        .await;
    let mut stored: Vec<Value> = listed["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| Value::from(shown(i["original_filename"].as_str().unwrap())))
        .collect();
    stored.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    assert_eq!(
        names,
        Value::Array(stored),
        "the grid shows the stored names as text"
    );
    for needle in [
        "<img src=x onerror=alert(1)><b id=",
        "it's a ",
        "photo-[U+202E]gpj",
    ] {
        assert!(
            names
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n.as_str().unwrap().contains(needle)),
            "{needle:?} in {names}"
        );
    }
    assert_eq!(
        page.js("return document.getElementById('injected') === null && document.querySelectorAll('#image-grid b, #image-grid img:not(.thumb)').length === 0").await,
        Value::Bool(true),
        "markup in a file name became elements"
    );
    page.until(
        "[...document.querySelectorAll('#image-grid img.thumb')].every((i) => i.complete && i.naturalWidth > 0)",
        "the thumbnails",
    )
    .await;
    let widths = page
        .js("return [...document.querySelectorAll('#image-grid img.thumb')].map((i) => [i.naturalWidth, i.naturalHeight])")
        .await;
    for wh in widths.as_array().unwrap() {
        // 200 px boxes, at the window's device pixel ratio of 1.
        assert_eq!(wh, &json!([200, 200]), "{widths}");
    }
    page.shot("images").await;
    page.csp_clean().await;
    // On a phone's width, nothing wider than the screen.
    page.c.set_window_size(390, 844).await.unwrap();
    // (Firefox keeps a window at least 450 px wide.)
    page.until(
        "document.documentElement.clientWidth < 500",
        "the narrow window",
    )
    .await;
    assert_eq!(
        page.js(
            "return document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        )
        .await,
        Value::Bool(true),
        "the images page scrolls sideways on a phone"
    );
    page.shot("images-phone").await;
    page.c.set_window_size(1280, 1000).await.unwrap();

    // A preset made with the builder, then the image page: build a URL, check the preview's
    // natural size, then the preset's.
    page.open("#/presets", "preset-form", "the presets page")
        .await;
    page.fill("#preset-name", "thumb").await;
    page.fill("#preset-form input[name=w]", "120").await;
    page.fill("#preset-form input[name=h]", "80").await;
    page.click("#preset-form button[type=submit]").await;
    page.until("document.getElementById('presets-table') && document.getElementById('presets-table').textContent.includes('w=120&h=80')", "the new preset").await;
    // Edited with the same builder.
    page.click("#presets-table a.button").await;
    page.until(
        "document.querySelector('#preset-form h3').textContent === 'Edit thumb'",
        "the preset editor",
    )
    .await;
    page.fill("#preset-form input[name=h]", "90").await;
    page.click("#preset-form button[type=submit]").await;
    page.until("document.getElementById('presets-table') && document.getElementById('presets-table').textContent.includes('w=120&h=90')", "the edited preset").await;
    page.shot("presets").await;

    page.go("#/images?path=trip").await;
    page.cards().await;
    // The first hostile name is ladybird.jpg.
    let first = page
        .js("return [...document.querySelectorAll('#image-grid .card')].findIndex((c) => c.querySelector('.name').textContent.startsWith('<img src=x')) + 1")
        .await;
    page.click(&format!(
        "#image-grid .card:nth-child({first}) a.thumb-link"
    ))
    .await;
    page.until("document.getElementById('preview')", "the image page")
        .await;
    page.fill("fieldset.builder input[name=w]", "300").await;
    page.c
        .find(Locator::Css("fieldset.builder select[name=format]"))
        .await
        .unwrap()
        .select_by_value("webp")
        .await
        .unwrap();
    page.until(
        "document.getElementById('url-output').value.includes('.webp?w=300')",
        "the built URL",
    )
    .await;
    page.until("document.getElementById('preview').currentSrc.includes('w=300') && document.getElementById('preview').complete && document.getElementById('preview').naturalWidth > 0", "the preview at 300 px").await;
    let natural = page
        .js("const i = document.getElementById('preview'); return [i.naturalWidth, i.naturalHeight]")
        .await;
    // ladybird.jpg is 1200 x 750: 300 x 187.5.
    assert_eq!(natural[0], 300, "the preview's natural size: {natural}");
    assert!(matches!(natural[1].as_u64(), Some(187 | 188)), "{natural}");
    assert!(page.text("#srcset-snippet").await.contains("320w"));
    page.shot("image").await;
    page.csp_clean().await;
    page.fill("fieldset.builder input[name=w]", "").await;
    page.c
        .find(Locator::Id("url-preset"))
        .await
        .unwrap()
        .select_by_value("thumb")
        .await
        .unwrap();
    page.until("document.getElementById('url-output').value.includes('p:thumb') && document.getElementById('preview').currentSrc.includes('p:thumb') && document.getElementById('preview').complete && document.getElementById('preview').naturalWidth === 120", "the preset's preview").await;
    assert_eq!(
        page.js("return document.getElementById('preview').naturalHeight")
            .await,
        90
    );

    // Visibility toggle and multi-select delete in the grid.
    page.go("#/images?path=trip").await;
    page.cards().await;
    page.click("#image-grid .card:nth-child(2) .card-actions button")
        .await;
    page.until(
        "document.querySelectorAll('#image-grid .thumb.private').length === 1",
        "the private placeholder",
    )
    .await;
    page.click("#image-grid .card:nth-child(3) input.select")
        .await;
    page.click("#delete-selected").await;
    page.accept().await;
    page.until(
        "document.querySelectorAll('#image-grid .card').length === 2",
        "the grid after the delete",
    )
    .await;

    // Keys: create one (its secret shown once, and it works), then revoke it (and it no
    // longer does).
    page.open("#/keys", "key-form-create", "the keys page")
        .await;
    page.fill("#key-name", "from the console").await;
    page.click("#key-form-create button[type=submit]").await;
    page.until(
        "document.getElementById('new-key-secret')",
        "the new key's secret",
    )
    .await;
    let secret = page
        .js("return document.getElementById('new-key-secret').value")
        .await;
    let secret = secret.as_str().unwrap().to_string();
    let call = |key: String| {
        let url = format!("{}/api/v1/images", node.base);
        let client = node.client.clone();
        async move {
            client
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(call(secret.clone()).await, 200);
    page.shot("keys").await;
    let row = page
        .js("return [...document.querySelectorAll('#keys-table tbody tr')].findIndex((r) => r.textContent.includes('from the console')) + 1")
        .await;
    page.click(&format!("#keys-table tbody tr:nth-child({row}) button"))
        .await;
    page.accept().await;
    page.until(
        "!document.getElementById('keys-table').textContent.includes('from the console')",
        "the revoked key gone",
    )
    .await;
    assert_eq!(call(secret).await, 401);

    // Usage and settings show; screenshots of them.
    page.go("#/usage").await;
    page.until("document.querySelectorAll('#usage-current .usage-row').length === 5 && document.querySelectorAll('.chart svg').length === 4", "the usage page").await;
    page.shot("usage").await;
    page.csp_clean().await;
    page.open("#/settings", "settings-form", "the settings page")
        .await;
    page.fill("#set-max-width", "800").await;
    page.c
        .find(Locator::Id("set-theme"))
        .await
        .unwrap()
        .select_by_value("dark")
        .await
        .unwrap();
    page.click("#settings-form button[type=submit]").await;
    // The page is drawn again from the stored settings.
    page.until("document.getElementById('status').textContent === 'Settings updated' && document.getElementById('set-max-width').value === '800' && document.getElementById('set-theme').value === 'dark' && document.documentElement.dataset.theme === 'dark'", "the saved settings, in the dark theme").await;
    let (_, _, stored) = node
        .api(reqwest::Method::GET, "/api/v1/settings", &alpha, None)
        .await;
    assert_eq!(stored["settings"]["default_max_width"], 800, "{stored}");
    assert_eq!(stored["settings"]["theme"], "dark", "{stored}");
    page.shot("settings").await;
    let alpha_image = page.fetch_json("/api/v1/images?path=trip").await["images"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // A second account's session sees none of the first's images, by the grid, the search
    // and the image's own address.
    page.sign_in_with_key(&beta).await;
    page.go("#/images").await;
    assert_eq!(page.cards().await, 0);
    assert_eq!(
        page.js("return document.querySelectorAll('.folders li').length")
            .await,
        0
    );
    page.go("#/images?q=quoted").await;
    // (The folder's grid was there a moment ago: wait for the search's own page.)
    page.until(
        "document.getElementById('page-title').textContent === 'Search' && document.getElementById('search-q').value === 'quoted'",
        "the search results",
    )
    .await;
    assert_eq!(page.cards().await, 0);
    // The same search as the first account finds its image: the empty answer is the
    // account's, not the search's.
    let (_, _, found) = node
        .api(
            reqwest::Method::GET,
            "/api/v1/images/search?q=quoted",
            &alpha,
            None,
        )
        .await;
    assert_eq!(found["total"], 1, "{found}");
    page.go(&format!("#/image/{alpha_image}")).await;
    page.until("document.querySelector('#page .error')", "the refusal")
        .await;
    assert!(page.text("#page .error").await.contains("no such image"));

    // The export downloads with the session (a GET of the tenant API, no token needed).
    let export = page
        .run_async("fetch('/api/v1/account/export').then(async (r) => done([r.status, r.headers.get('content-type'), (await r.arrayBuffer()).byteLength]), (e) => done(String(e)));")
        .await;
    assert_eq!(export[0], 200, "{export}");
    assert_eq!(export[1], "application/x-tar", "{export}");
    assert!(export[2].as_u64().unwrap() >= 1024, "{export}");

    // Erasure behind a typed confirmation.
    page.open("#/account", "erase-form", "the account page")
        .await;
    page.shot("account").await;
    page.fill("#erase-confirm", "alpha").await;
    assert_eq!(
        page.js("return document.getElementById('erase-button').disabled")
            .await,
        Value::Bool(true),
        "another account's name does not unlock erasure"
    );
    page.fill("#erase-confirm", "beta").await;
    page.click("#erase-button").await;
    page.until(
        "!document.getElementById('signed-out').hidden",
        "the sign-in form after erasure",
    )
    .await;
    assert_eq!(call(beta).await, 401);
    assert_eq!(call(alpha).await, 200, "the other account is untouched");

    page.c.close().await.unwrap();
}
