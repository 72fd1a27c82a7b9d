//! Several nodes on one PostgreSQL database and one S3 bucket (moto), as the scale-out guide
//! runs them: a change through one node is honoured by the others within the documented
//! bound, an erasure reaches all of them, usage adds up, background tasks take turns, and a
//! node killed mid-render leaves the others serving.
//!
//! Needs the PostgreSQL server of `tests/pg.sh` (`.ci/run` starts it). Without it these tests
//! say so loudly and return, except under `TEST_IMGNODE_STRICT=1` (CI), where they fail.

use std::future::Future;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::harness::{ChildNode, Moto, OPERATOR, TestNode, dimensions, fixture};
use imgnode::store::testing;

/// The bound the README promises: a change made through one node is honoured by the others
/// within this time (one NOTIFY round trip; generous for a loaded CI machine).
const BOUND: Duration = Duration::from_secs(3);

/// Waits until `check` holds, at most [`BOUND`]: the propagation being tested is
/// asynchronous by design, and its bound is what is asserted.
async fn within_bound<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + BOUND;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what}: not honoured by the other node within {BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fresh database shared by the nodes of one test, or `None` (after saying so loudly) when
/// no test PostgreSQL server runs.
async fn shared_database(test: &str) -> Option<String> {
    let name = format!("imgnode_t_{test}_{}", imgnode::cluster::node_id());
    match testing::postgres_database(&name).await {
        Ok(url) => Some(url),
        Err(e) if std::env::var("TEST_IMGNODE_STRICT").is_ok_and(|v| v == "1") => {
            panic!("PostgreSQL is required here: {e}")
        }
        Err(e) => {
            eprintln!(
                "\n******** SKIPPED {test}: no PostgreSQL at {} ({e}).\n\
                 ******** Start it with `bash tests/pg.sh` to run the multi-node tests.\n",
                testing::admin_url()
            );
            None
        }
    }
}

/// The shared parts of a cluster: one database, one bucket.
struct Shared {
    url: String,
    moto: Moto,
    creds: tempfile::NamedTempFile,
    /// The KEK every node shares (`storage.kek_file`).
    kek: tempfile::TempDir,
}

impl Shared {
    async fn start(test: &str) -> Option<Shared> {
        let url = shared_database(test).await?;
        let moto = Moto::start().await;
        moto.create_bucket("shared").await;
        let kek = tempfile::tempdir().unwrap();
        crate::harness::test_kek_file(kek.path());
        Some(Shared {
            url,
            moto,
            creds: Moto::credentials(),
            kek,
        })
    }

    fn kek_file(&self) -> String {
        self.kek.path().join("originals.kek").display().to_string()
    }

    /// The config of every node: the shared bucket, no demo seed.
    fn extra(&self) -> String {
        format!(
            "{}[demo]\nseed = false\n",
            self.moto.origin_config("shared", self.creds.path())
        )
    }

    /// A node in this process, with the operator API on.
    async fn node(&self) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("operator.token");
        std::fs::write(&token, OPERATOR).unwrap();
        let extra = format!(
            "{}[admin]\ntoken_file = \"{}\"\n",
            self.extra(),
            token.display()
        );
        let kek = self.kek_file();
        TestNode::start_with_env(
            dir,
            &extra,
            &[
                ("IMGNODE_STORE__URL", &self.url),
                ("IMGNODE_STORAGE__KEK_FILE", &kek),
            ],
        )
        .await
    }

    /// Names of the objects in the bucket.
    async fn objects(&self) -> String {
        reqwest::get(format!("{}/shared?list-type=2", self.moto.endpoint))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

async fn status(node: &TestNode, target: &str) -> u16 {
    node.fetch(target).await.0
}

/// The width of the `thumb` preset's rendering through `node`; 0 when it does not answer 200.
async fn preset_width(node: &TestNode) -> u32 {
    let (status, _, body) = node.fetch("/i/acme/shots/bug.png?p:thumb").await;
    if status == 200 {
        dimensions(&body).0
    } else {
        0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_through_one_node_are_honoured_by_the_others() {
    let Some(shared) = Shared::start("changes").await else {
        return;
    };
    let (a, b, c) = (
        shared.node().await,
        shared.node().await,
        shared.node().await,
    );
    let key = a.account_key("acme", "read,write").await;
    let url = "/i/acme/shots/bug.webp?w=64";

    // B has looked for the path before it exists: a cached negative answer.
    assert_eq!(status(&b, url).await, 404);
    let (s, uploaded) = a
        .upload(&key, fixture("photos/ladybird.jpg"), "shots/bug.jpg")
        .await;
    assert_eq!(s, 201, "{uploaded}");
    within_bound("upload", || async { status(&b, url).await == 200 }).await;
    let (_, headers, body) = b.fetch(url).await;
    assert_eq!(headers["content-type"], "image/webp");
    assert_eq!(dimensions(&body).0, 64);
    assert_eq!(b.fetch(url).await.1["x-cache"], "HIT-MEMORY");

    // A preset created, then edited, through A.
    let (s, _, preset) = a
        .api(
            Method::POST,
            "/api/v1/settings/presets",
            &key,
            Some(json!({"name": "thumb", "params": {"w": 40}})),
        )
        .await;
    assert_eq!(s, 201, "{preset}");
    within_bound("preset creation", || async { preset_width(&b).await == 40 }).await;
    let (s, _, _) = a
        .api(
            Method::PUT,
            &format!(
                "/api/v1/settings/presets/{}",
                preset["id"].as_str().unwrap()
            ),
            &key,
            Some(json!({"name": "thumb", "params": {"w": 30}})),
        )
        .await;
    assert_eq!(s, 200);
    within_bound("preset edit", || async { preset_width(&b).await == 30 }).await;

    // A key revoked through A, after B has cached it.
    let reader = a.account_key("acme", "read").await;
    assert_eq!(
        b.api(Method::GET, "/api/v1/images", &reader, None).await.0,
        200
    );
    let records = a.app.state.store.api_keys("acme").await.unwrap();
    let reader_id = &records
        .iter()
        .find(|r| reader.starts_with(&r.key_prefix) && r.scopes == "read")
        .unwrap()
        .id;
    let path = format!("/api/v1/settings/api-keys/{reader_id}");
    assert_eq!(a.api(Method::DELETE, &path, &key, None).await.0, 200);
    within_bound("key revocation", || async {
        b.api(Method::GET, "/api/v1/images", &reader, None).await.0 == 401
    })
    .await;

    // Suspended and resumed through A's operator API; a plan change too.
    let suspend = "/admin/v1/accounts/acme/suspend";
    assert_eq!(a.ops_call(Method::POST, suspend, None).await.0, 200);
    within_bound("suspension", || async { status(&b, url).await == 403 }).await;
    let resume = "/admin/v1/accounts/acme/resume";
    assert_eq!(a.ops_call(Method::POST, resume, None).await.0, 200);
    within_bound("resumption", || async { status(&b, url).await == 200 }).await;
    let plan = json!({"plan": "free"});
    assert_eq!(
        a.ops_call(Method::PATCH, "/admin/v1/accounts/acme", Some(plan))
            .await
            .0,
        200
    );
    within_bound("plan change", || async {
        let s = &b.app.state;
        let account = s.caches.meta.account(&s.store, "acme").await.unwrap();
        account.is_some_and(|a| a.plan == "free")
    })
    .await;

    // Deleted through C: neither A nor B serves it (B had it in memory), and the object is
    // gone from the bucket.
    let id = uploaded["id"].as_str().unwrap();
    let hash = a
        .app
        .state
        .store
        .image("acme", id)
        .await
        .unwrap()
        .unwrap()
        .hash;
    let object = a.object_of("acme", &hash).await;
    assert!(shared.objects().await.contains(&object));
    let (s, _, _) = c
        .api(Method::DELETE, &format!("/api/v1/images/{id}"), &key, None)
        .await;
    assert_eq!(s, 200);
    within_bound("delete", || async {
        status(&b, url).await == 404 && status(&a, url).await == 404
    })
    .await;
    assert!(!shared.objects().await.contains(&object));
    // B received the others' notices and never lost its listening connection.
    assert!(
        b.metric(
            "imgnode_cluster_notices_total",
            &[("direction", "received")]
        )
        .await
            >= 5.0
    );
    assert_eq!(b.metric("imgnode_cluster_listening", &[]).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_through_one_node_reaches_every_node() {
    let Some(shared) = Shared::start("erasure").await else {
        return;
    };
    let (a, b) = (shared.node().await, shared.node().await);
    let key = a.account_key("gone", "read,write").await;
    assert_eq!(
        a.upload(&key, fixture("photos/dune.jpg"), "dune.jpg")
            .await
            .0,
        201
    );
    let url = "/i/gone/dune.jpg?w=50";
    within_bound("upload", || async { status(&b, url).await == 200 }).await;
    assert_eq!(status(&a, url).await, 200);
    let hash = a
        .app
        .state
        .store
        .account_hashes("gone")
        .await
        .unwrap()
        .remove(0);
    let object = a.object_of("gone", &hash).await;
    assert!(shared.objects().await.contains(&object));

    assert_eq!(
        b.ops_call(Method::DELETE, "/admin/v1/accounts/gone", None)
            .await
            .0,
        200
    );
    within_bound("erasure", || async {
        status(&a, url).await == 404 && status(&b, url).await == 404
    })
    .await;
    assert!(a.app.state.store.account("gone").await.unwrap().is_none());
    assert!(!shared.objects().await.contains(&object));
    assert_eq!(
        a.api(Method::GET, "/api/v1/images", &key, None).await.0,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_adds_up_across_nodes_and_background_tasks_take_turns() {
    let Some(shared) = Shared::start("usage").await else {
        return;
    };
    let (a, b) = (shared.node().await, shared.node().await);
    a.account_key("acme", "read").await;
    let (sa, sb) = (&a.app.state, &b.app.state);
    // Both nodes have read the month before either counts.
    assert_eq!(
        sa.usage.current(&sa.store, "acme").await.unwrap().uploads,
        0
    );
    assert_eq!(
        sb.usage.current(&sb.store, "acme").await.unwrap().uploads,
        0
    );
    sa.usage.record("acme", |u| u.uploads += 2);
    sb.usage.record("acme", |u| u.uploads += 3);
    sa.usage.flush(&sa.store).await.unwrap();
    sb.usage.flush(&sb.store).await.unwrap();
    let period = imgnode::usage::period_of(imgnode::store::now_unix());
    assert_eq!(sa.store.usage("acme", &period).await.unwrap().uploads, 5);
    // B's flush came second and saw A's; A sees B's after its next flush.
    assert_eq!(
        sb.usage.current(&sb.store, "acme").await.unwrap().uploads,
        5
    );
    sa.usage.flush(&sa.store).await.unwrap();
    assert_eq!(
        sa.usage.current(&sa.store, "acme").await.unwrap().uploads,
        5
    );

    // One node at a time runs a background task.
    use imgnode::store::locks::ORPHAN_SWEEP;
    let held = sa.store.try_lock_task(ORPHAN_SWEEP).await.unwrap().unwrap();
    assert!(
        sb.store
            .try_lock_task(ORPHAN_SWEEP)
            .await
            .unwrap()
            .is_none()
    );
    held.release().await;
    let held = sb.store.try_lock_task(ORPHAN_SWEEP).await.unwrap().unwrap();
    assert!(
        sa.store
            .try_lock_task(ORPHAN_SWEEP)
            .await
            .unwrap()
            .is_none()
    );
    held.release().await;
    // A caller that gives up while waiting for a lock (a client gone) leaves no lock behind.
    let hash = "ab".repeat(32);
    let held = sa.store.lock_hash(&hash).await.unwrap();
    let gave_up = tokio::time::timeout(Duration::from_millis(200), sb.store.lock_hash(&hash)).await;
    assert!(gave_up.is_err(), "the lock was free while held");
    held.release().await;
    let again = tokio::time::timeout(BOUND, sa.store.lock_hash(&hash)).await;
    again
        .expect("a cancelled waiter kept the lock")
        .unwrap()
        .release()
        .await;
    let held = sb.store.try_lock_task(ORPHAN_SWEEP).await.unwrap().unwrap();
    // A lock dropped without release is freed with its session.
    drop(held);
    within_bound("lock freed with its session", || async {
        match sa.store.try_lock_task(ORPHAN_SWEEP).await.unwrap() {
            Some(lock) => {
                lock.release().await;
                true
            }
            None => false,
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_render_leaves_the_others_serving() {
    let Some(shared) = Shared::start("kill").await else {
        return;
    };
    let a = shared.node().await;
    let key = a.account_key("acme", "read,write").await;
    assert_eq!(
        a.upload(&key, fixture("photos/elephants.jpg"), "big.jpg")
            .await
            .0,
        201
    );

    // The victim: the real binary, same database and bucket.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("imgnode.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\npublic_listen = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\n\
             [storage]\ndata_dir = \"{}\"\nkek_file = \"{}\"\n[store]\nurl = \"{}\"\n\
             [cache]\ndisk = \"128MiB\"\n[log]\nformat = \"json\"\n{}",
            dir.path().join("data").display(),
            shared.kek_file(),
            shared.url,
            shared.extra()
        ),
    )
    .unwrap();
    let mut victim = ChildNode::spawn(&config).await;
    let (public, ops) = (victim.base.clone(), victim.ops.clone());

    // A slow render (AVIF of the largest photo) on the victim, killed while it runs.
    let target = "/i/acme/big.avif?w=1200&q=90";
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let render = tokio::spawn({
        let url = format!("{public}{target}");
        let client = client.clone();
        async move { client.get(url).send().await }
    });
    crate::harness::wait_for_metric(
        &ops,
        "imgnode_cpu_in_flight",
        &[],
        1.0,
        BOUND,
        "render started on the victim",
    )
    .await;
    victim.kill();
    assert!(render.await.unwrap().is_err(), "the killed node answered");

    // The others serve on: the same variant renders on A, a second node starts and serves.
    let (answered, headers, body) = a.fetch(target).await;
    assert_eq!(answered, 200);
    assert_eq!(headers["content-type"], "image/avif");
    assert!(!body.is_empty());
    let b = shared.node().await;
    assert_eq!(status(&b, "/i/acme/big.jpg?w=100").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_loses_its_listening_connection_clears_its_caches_and_listens_again() {
    use sqlx::Connection;
    let Some(shared) = Shared::start("deaf").await else {
        return;
    };
    let (a, b) = (shared.node().await, shared.node().await);
    let key = a.account_key("acme", "read,write").await;
    let resyncs = || async {
        b.metric("imgnode_cluster_notices_total", &[("direction", "resync")])
            .await
    };
    within_bound("listening at start", || async {
        b.metric("imgnode_cluster_listening", &[]).await == 1.0
    })
    .await;
    let before = resyncs().await;
    assert!(before >= 1.0);

    // The database drops every listening session (a failover, a restart, a proxy timeout).
    let mut admin = sqlx::postgres::PgConnection::connect(&shared.url)
        .await
        .unwrap();
    let dropped = sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    assert!(dropped.rows_affected() >= 2, "both nodes were listening");
    within_bound("listening again", || async {
        resyncs().await > before && b.metric("imgnode_cluster_listening", &[]).await == 1.0
    })
    .await;

    // Notices flow again.
    let url = "/i/acme/after.jpg?w=40";
    assert_eq!(status(&b, url).await, 404);
    let photo = fixture("photos/ladybird.jpg");
    assert_eq!(a.upload(&key, photo, "after.jpg").await.0, 201);
    within_bound("upload after reconnection", || async {
        status(&b, url).await == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_edge_purge_is_delivered_once_whichever_node_commits_it() {
    let Some(shared) = Shared::start("edgeonce").await else {
        return;
    };
    let mut hook = crate::edge::Recorder::start((200, "{}")).await;
    let creds = tempfile::tempdir().unwrap();
    let secret = creds.path().join("hook.secret");
    std::fs::write(&secret, "s3cret").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let edge = format!(
        "[edge]\npurge_retry_base = \"50ms\"\n[[edge.purge]]\nkind = \"webhook\"\nurl = \"{}/hook\"\nsecret_file = \"{}\"\n",
        hook.url,
        secret.display()
    );
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("operator.token");
        std::fs::write(&token, OPERATOR).unwrap();
        let extra = format!(
            "{}[admin]\ntoken_file = \"{}\"\n{edge}",
            shared.extra(),
            token.display()
        );
        let kek = shared.kek_file();
        nodes.push(
            TestNode::start_with_env(
                dir,
                &extra,
                &[
                    ("IMGNODE_STORE__URL", &shared.url),
                    ("IMGNODE_STORAGE__KEK_FILE", &kek),
                ],
            )
            .await,
        );
    }
    let key = nodes[0].account_key("acme", "read,write").await;
    const N: usize = 12;
    for i in 0..N {
        let (s, _, _) = nodes[0]
            .api(
                Method::POST,
                "/api/v1/settings/presets",
                &key,
                Some(json!({"name": format!("p{i}"), "params": {"w": 10 + i}})),
            )
            .await;
        assert_eq!(s, 201);
    }
    // Deleted through every node in turn: each node's own worker is woken by its commit, and
    // every node polls the shared outbox.
    for i in 0..N {
        let (s, _, _) = nodes[i % 3]
            .api(
                Method::DELETE,
                &format!("/api/v1/settings/presets/p{i}"),
                &key,
                None,
            )
            .await;
        assert_eq!(s, 200);
    }
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..N {
        let r = hook.next().await;
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        *seen
            .entry(body["tags"][0].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    // Every purge delivered and its row gone: nothing can be sent again after this.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, listed) = nodes[1]
            .ops_call(Method::GET, "/admin/v1/edge/purges", None)
            .await;
        if listed["total"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "outbox not drained: {listed}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(hook.none_yet(), "a purge was delivered twice");
    let want: std::collections::BTreeMap<String, i32> =
        (0..N).map(|i| (format!("r.acme.p{i}"), 1)).collect();
    assert_eq!(seen, want);
}
