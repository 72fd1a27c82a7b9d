//! Wiring: builds every part from a validated `Config`, binds the listeners, seeds the demo
//! account, flips readiness, and shuts down in order (stop accepting, drain, close the store).
//!
//! Must never handle requests itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::auth::ApiKeys;
use crate::cache::Caches;
use crate::cache::flight::SingleFlight;
use crate::cache::variants::CacheError;
use crate::cluster::Broadcaster;
use crate::config::Config;
use crate::cpu::Pool;
use crate::ingest::IngestError;
use crate::metrics::Metrics;
use crate::origin::{Kek, KekError, KekSource, Origin, OriginError, Originals};
use crate::routes::{OpsHandler, PublicHandler};
use crate::server::{self, ConnectionSettings};
use crate::signing::SigningKeys;
use crate::state::AppState;
use crate::store::{Backend, Store, StoreError, locks};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("metadata store: {0}")]
    Store(#[from] StoreError),
    #[error("origin: {0}")]
    Origin(#[from] OriginError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cpu pool: {0}")]
    Cpu(std::io::Error),
    #[error("seeding the demo account: {0}")]
    Seed(#[from] IngestError),
    #[error("variant cache: {0}")]
    Cache(#[from] CacheError),
    #[error("{0}")]
    Signing(#[from] crate::signing::SigningError),
    #[error("{0}")]
    Kek(#[from] KekError),
    #[error("auth.jwt: {0}")]
    Jwt(String),
    #[error("{0}")]
    Tls(#[from] crate::server::tls::TlsError),
    #[error("operator token file {path}: {source}")]
    Token {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "operator token file {path}: the token is {len} bytes; it must be at least \
         {MIN_OPERATOR_TOKEN_BYTES} (make one with `openssl rand -hex 32`)"
    )]
    TokenTooShort {
        path: std::path::PathBuf,
        len: usize,
    },
}

/// The KEK that unwraps the originals' data keys: from `storage.kek_file`, or the data
/// directory's, generated on first start while nothing is encrypted yet. Refused when it
/// lacks a key that wraps a stored data key (a wrong or incomplete file), or when the default
/// file is gone although encrypted originals exist.
pub(crate) async fn load_kek(config: &Config, store: &Store) -> Result<Kek, AppError> {
    let in_use = store.kek_ids_in_use().await?;
    let (kek, source) = Kek::load(
        config.storage.kek_file.as_deref(),
        &config.data_dir,
        in_use.is_empty(),
    )?;
    kek.check_covers(&in_use)?;
    if source == KekSource::Generated {
        tracing::warn!(
            file = %kek.path().display(),
            "generated a key-encryption key for the originals: back this file up apart from \
             the data (without it no original can be read), or set storage.kek_file"
        );
    }
    Ok(kek)
}

/// What `imgnode check-config` checks beyond the file: the KEK file against the metadata
/// store, when the store exists already (a SQLite file is not created for this).
pub async fn check_storage_keys(config: &Config) -> Result<(), AppError> {
    if let Some(file) = config.store.url.strip_prefix("sqlite://") {
        let file = file.split('?').next().unwrap_or(file);
        if !std::path::Path::new(file).exists() {
            // Nothing encrypted yet: a configured KEK file must still be readable and valid.
            if let Some(path) = &config.storage.kek_file {
                Kek::load(Some(path), &config.data_dir, false)?;
            }
            return Ok(());
        }
    }
    let store = Store::open(&config.store.url).await?;
    let in_use = store.kek_ids_in_use().await;
    store.close().await;
    let in_use = in_use?;
    let default = config.data_dir.join(crate::origin::DEFAULT_KEK_FILE);
    if config.storage.kek_file.is_none() && in_use.is_empty() && !default.exists() {
        // Generated on first start.
        return Ok(());
    }
    let (kek, _) = Kek::load(config.storage.kek_file.as_deref(), &config.data_dir, false)?;
    kek.check_covers(&in_use)?;
    Ok(())
}

/// Shortest operator token accepted (after trimming whitespace): 32 bytes, 128 bits or more
/// of a hex or base64 secret, beyond any guessing through the operator API's rate limit.
const MIN_OPERATOR_TOKEN_BYTES: usize = 32;

/// Builds a serving node's shared state without listening. Returns once the disk cache has
/// recovered.
async fn build_state(config: Config) -> Result<Arc<AppState>, AppError> {
    build(config, Role::Node).await
}

/// Builds the state of a command run beside (or instead of) a node: `imgnode account ...`,
/// `imgnode import`. It opens the metadata and object stores; the variant cache is memory
/// only, so the node's cache folder is never opened a second time, and every cache
/// invalidation is published for the serving node to apply (on SQLite through the store's
/// notice table, which the node reads every second; on PostgreSQL by NOTIFY).
pub async fn build_command_state(config: Config) -> Result<Arc<AppState>, AppError> {
    build(config, Role::Command).await
}

/// Who the state is built for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Node,
    Command,
}

async fn build(config: Config, role: Role) -> Result<Arc<AppState>, AppError> {
    // Before anything is created: files 0600, folders 0700 (see `fsperm`).
    crate::fsperm::restrict_umask();
    // Not fatal here: what needs a folder reports its own error when it cannot use it (a disk
    // cache that cannot be opened runs memory-only, a PostgreSQL + S3 node may need neither).
    let cache_dir = (role == Role::Node).then_some(&config.cache.settings.dir);
    for dir in std::iter::once(&config.data_dir).chain(cache_dir) {
        if let Err(e) = crate::fsperm::create_private_dir(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot create the folder");
        }
    }
    let metrics = Metrics::new();
    let operator_token = match &config.admin.token_file {
        None => None,
        Some(path) => {
            let token = std::fs::read_to_string(path).map_err(|source| AppError::Token {
                path: path.clone(),
                source,
            })?;
            let token = token.trim();
            if token.len() < MIN_OPERATOR_TOKEN_BYTES {
                return Err(AppError::TokenTooShort {
                    path: path.clone(),
                    len: token.len(),
                });
            }
            Some(token.to_string())
        }
    };
    let store = Store::open(&config.store.url)
        .await?
        .with_edge_targets(config.edge.purge.iter().map(|t| t.name.clone()).collect());
    let kek = load_kek(&config, &store).await?;
    let originals = Originals::new(
        Origin::from_config(&config.origin)?,
        Arc::new(kek),
        store.clone(),
    );
    let cpu = Pool::new(
        config.cpu.threads,
        config.cpu.queue,
        config.cpu.avif_concurrency,
        config.cpu.nice,
        metrics.cpu.clone(),
    )
    .map_err(AppError::Cpu)?;
    let node_id = crate::cluster::node_id();
    let cluster = match (store.backend(), role) {
        // One serving node on SQLite: nobody to tell.
        (Backend::Sqlite, Role::Node) => Broadcaster::disabled(),
        _ => {
            let counts = metrics.cluster_notices_total.clone();
            let (cluster, sender) = Broadcaster::for_store(&store, node_id.clone(), counts);
            // Ends when the last clone of the broadcaster is dropped with the state.
            tokio::spawn(sender);
            cluster
        }
    };
    let caches = match role {
        Role::Node => {
            Caches::open(&config.cache.settings, metrics.registry(), cluster.clone()).await?
        }
        Role::Command => {
            Caches::open_memory_only(&config.cache.settings, metrics.registry(), cluster.clone())
                .await?
        }
    };
    let api_keys = ApiKeys::new(&config.auth.key_prefix)
        .clustered(cluster.clone())
        .with_max_keys(config.auth.max_keys_per_account);
    let jwt = match &config.auth.jwt {
        None => None,
        Some(c) => Some(
            crate::auth::jwt::JwtVerifier::new(c.clone())
                .map_err(|e| AppError::Jwt(e.to_string()))?,
        ),
    };
    let signing = SigningKeys::load(
        config.delivery.signing_keys_file.as_deref(),
        &config.data_dir,
    )?;
    let rate_limits = crate::ratelimit::RateLimits::new(&config.delivery.budgets);
    Ok(Arc::new(AppState {
        config,
        store,
        originals,
        cpu,
        caches,
        api_keys,
        flights: SingleFlight::default(),
        metrics,
        operator_token,
        ready: AtomicBool::new(false),
        signing,
        jwt,
        preset_usage: Default::default(),
        usage: Default::default(),
        rate_limits,
        node_id,
        cluster,
        bound_public_addr: std::sync::OnceLock::new(),
        console_site: std::sync::OnceLock::new(),
    }))
}

/// A started node.
pub struct RunningApp {
    pub public_addr: SocketAddr,
    pub ops_addr: SocketAddr,
    pub state: Arc<AppState>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    tls: Option<Arc<crate::server::tls::Tls>>,
}

impl RunningApp {
    /// Begins a graceful shutdown: readiness goes false, listeners stop accepting, open
    /// requests get `server.drain_timeout` to finish.
    pub fn shutdown(&self) {
        self.state.ready.store(false, Ordering::Release);
        let _ = self.shutdown.send(true);
    }

    /// The public listener's certificate store, when TLS is on.
    pub fn tls(&self) -> Option<Arc<crate::server::tls::Tls>> {
        self.tls.clone()
    }

    /// Reads the TLS certificate and key again (SIGHUP). Open connections keep theirs; new
    /// ones get the new certificate. On failure the old one stays in force.
    pub fn reload_tls(&self) -> Result<bool, crate::server::tls::TlsError> {
        match &self.tls {
            None => Ok(false),
            Some(tls) => tls.reload().map(|()| true),
        }
    }

    /// Waits until both listeners have drained, then flushes the cache and closes the store.
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
        self.state.close().await;
    }
}

/// Starts a node: opens the store and origin, binds both listeners, seeds the demo account
/// when configured, and only then reports ready.
pub async fn start(config: Config) -> Result<RunningApp, AppError> {
    let public = bind(config.server.public_listen).await?;
    let ops = bind(config.server.ops_listen).await?;
    let public_addr = public.local_addr().map_err(|source| AppError::Bind {
        addr: config.server.public_listen,
        source,
    })?;
    let ops_addr = ops.local_addr().map_err(|source| AppError::Bind {
        addr: config.server.ops_listen,
        source,
    })?;
    let state = build_state(config).await?;
    let _ = state.bound_public_addr.set(public_addr);
    if state.config.server.needs_public_url() {
        tracing::warn!(
            public_listen = %public_addr,
            "the public listener is reachable from other machines and server.public_url is \
             empty: the API's URLs use the listener's address (a request's Host is trusted only \
             when it is in delivery.cdn_hosts); set server.public_url"
        );
    }

    let (shutdown, rx) = watch::channel(false);
    let rx_usage = rx.clone();
    let server_config = &state.config.server;
    let tls = match &server_config.tls {
        None => None,
        Some((cert, key)) => Some(Arc::new(crate::server::tls::Tls::load(cert, key)?)),
    };
    let http = &state.metrics.http;
    let settings_for =
        |listener: &str, tls: Option<Arc<crate::server::tls::Tls>>| ConnectionSettings {
            tls,
            h2c: server_config.h2c,
            header_read_timeout: server_config.header_read_timeout,
            drain_timeout: server_config.drain_timeout,
            max_header_bytes: server_config.max_header_bytes,
            max_connections: server_config.max_connections,
            h2_max_concurrent_streams: server_config.h2_max_concurrent_streams,
            h2_keep_alive: server_config.h2_keep_alive,
            h2_idle_timeout: server_config.h2_idle_timeout,
            max_connections_per_ip: server_config.max_connections_per_ip,
            trusted_proxies: server_config.trusted_proxies.clone(),
            open_connections: http.open_connections.with_label_values(&[listener]),
            refused_connections: http
                .refused_connections_total
                .with_label_values(&[listener, "max_connections"]),
            refused_per_ip: http
                .refused_connections_total
                .with_label_values(&[listener, "max_connections_per_ip"]),
        };
    let mut tasks = JoinSet::new();
    // Ops first, so /live answers (and /ready says "starting") while seeding runs.
    tasks.spawn(server::serve(
        ops,
        OpsHandler(state.clone()),
        settings_for("ops", None),
        rx.clone(),
    ));
    match crate::accounts::resume_erasures(&state).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(accounts = n, "finished interrupted erasures"),
        Err(e) => tracing::error!(error = %e, "resuming interrupted erasures failed"),
    }
    if crate::config::seeds_demo(state.config.demo_seed, public_addr)
        && crate::demo::seed(&state.ingest()).await?
    {
        tracing::info!(account = crate::demo::ACCOUNT, "seeded the demo account");
    }
    // On SQLite, where commands' notices are read from the store: the log's position is
    // taken before the public listener fills any cache, so no notice falls in between.
    let notice_log = if state.store.backend() == Backend::Sqlite {
        let mut log = crate::cluster::NoticeLog::new(state.node_id.clone());
        if let Err(e) = log.read(&state.store).await {
            tracing::warn!(error = %e, "cannot read cache invalidations");
        }
        Some(log)
    } else {
        None
    };
    tasks.spawn(server::serve(
        public,
        PublicHandler(state.clone()),
        settings_for("public", tls.clone()),
        rx,
    ));
    tasks.spawn(flush_usage_periodically(state.clone(), rx_usage.clone()));
    tasks.spawn(sweep_orphans_periodically(state.clone(), rx_usage.clone()));
    tasks.spawn(encrypt_plaintext_originals(state.clone(), rx_usage.clone()));
    tasks.spawn(retention_periodically(state.clone(), rx_usage.clone()));
    tasks.spawn(probe_disk_periodically(state.clone(), rx_usage.clone()));
    if !state.config.edge.purge.is_empty() {
        tasks.spawn(deliver_edge_purges(state.clone(), rx_usage.clone()));
    }
    if let Some(log) = notice_log {
        tasks.spawn(read_notices_periodically(
            state.clone(),
            log,
            rx_usage.clone(),
        ));
    } else {
        let target = state.clone();
        tasks.spawn(crate::cluster::listen(
            state.config.store.url.clone(),
            state.node_id.clone(),
            state.metrics.clone(),
            move |notice| {
                let target = target.clone();
                async move { target.apply_notice(notice).await }
            },
            rx_usage,
        ));
    }
    state.ready.store(true, Ordering::Release);
    tracing::info!(%public_addr, %ops_addr, "imgnode ready");
    Ok(RunningApp {
        public_addr,
        ops_addr,
        state,
        shutdown,
        tasks,
        tls,
    })
}

/// Writes aggregated API key usage every `auth.usage_flush_interval` until shutdown (the
/// final flush happens in `AppState::close`). A crash loses at most one interval of counts.
async fn flush_usage_periodically(state: Arc<AppState>, shutdown: watch::Receiver<bool>) {
    let mut rounds = Rounds::new(state.config.auth.usage_flush_interval, First::Now, shutdown);
    while rounds.next().await {
        state.flush_usage().await;
    }
}

/// Deletes unreferenced originals older than `upload.orphan_grace`, every
/// `upload.sweep_interval` (first run one interval after start).
async fn sweep_orphans_periodically(state: Arc<AppState>, shutdown: watch::Receiver<bool>) {
    let mut rounds = Rounds::new(
        state.config.upload.sweep_interval,
        First::AfterOne,
        shutdown,
    );
    while rounds.next().await {
        let grace = i64::try_from(state.config.upload.orphan_grace.as_secs()).unwrap_or(i64::MAX);
        let before = crate::store::now_unix().saturating_sub(grace);
        // One node at a time lists the bucket; the others skip this round.
        let Some(lock) = task_lock(&state, locks::ORPHAN_SWEEP).await else {
            continue;
        };
        match state.ingest().sweep_orphans(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "orphan sweep"),
            Err(e) => tracing::warn!(error = %e, "orphan sweep failed"),
        }
        lock.release().await;
    }
}

/// Seals the plaintext originals of an earlier version in the background: at most
/// `storage.encrypt_per_second` a second, one node at a time, resumable (the database says
/// what is left: an image without a key row). Once nothing is left it looks again every
/// minute (a node of the earlier version may still be writing during a rolling upgrade).
async fn encrypt_plaintext_originals(state: Arc<AppState>, shutdown: watch::Receiver<bool>) {
    const IDLE_ROUNDS: u32 = 60;
    let per_round = i64::from(state.config.storage.encrypt_per_second);
    let mut rounds = Rounds::new(Duration::from_secs(1), First::Now, shutdown);
    let mut after = (String::new(), String::new());
    let mut idle = 0u32;
    let mut pass_started = false;
    let metrics = &state.metrics;
    while rounds.next().await {
        if idle > 0 {
            idle -= 1;
            continue;
        }
        let Some(lock) = task_lock(&state, locks::ENCRYPT_ORIGINALS).await else {
            continue;
        };
        let batch = state
            .store
            .plaintext_originals((&after.0, &after.1), per_round)
            .await;
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "sealing plaintext originals: cannot list them");
                lock.release().await;
                continue;
            }
        };
        if batch.is_empty() {
            // The end of a pass: what failed is retried by the next one.
            let left = state.store.plaintext_original_count().await.unwrap_or(-1);
            metrics.originals_plaintext.set(left.max(0));
            if pass_started && left == 0 {
                tracing::info!("every original is encrypted at rest");
            }
            pass_started = false;
            after = (String::new(), String::new());
            idle = IDLE_ROUNDS;
            lock.release().await;
            continue;
        }
        if !pass_started {
            // Counted once a pass (an anti-join over every image), then kept by hand.
            let left = state.store.plaintext_original_count().await.unwrap_or(0);
            metrics.originals_plaintext.set(left);
            tracing::info!(
                left,
                per_second = per_round,
                "sealing the plaintext originals of an earlier version"
            );
            pass_started = true;
        }
        for (account, hash) in batch {
            match state.ingest().encrypt_plaintext(&account, &hash).await {
                Ok(true) => {
                    metrics
                        .originals_sealed_total
                        .with_label_values(&["sealed"])
                        .inc();
                    metrics.originals_plaintext.dec();
                }
                Ok(false) => {}
                // The CPU pool's queue is full: this one is retried next round, before the
                // pass moves on.
                Err(IngestError::Cpu(crate::cpu::CpuError::Overloaded { .. })) => break,
                Err(e) => {
                    metrics
                        .originals_sealed_total
                        .with_label_values(&["failed"])
                        .inc();
                    tracing::warn!(account, hash, error = %e, "sealing a plaintext original failed");
                }
            }
            after = (account, hash);
        }
        lock.release().await;
    }
}

/// Deletes monthly usage rows older than `retention.usage_logs` and audit records older than
/// `retention.audit`, every `retention.interval` (first run one interval after start; start-up
/// itself resumes interrupted erasures).
async fn retention_periodically(state: Arc<AppState>, shutdown: watch::Receiver<bool>) {
    let mut rounds = Rounds::new(state.config.retention.interval, First::AfterOne, shutdown);
    while rounds.next().await {
        let Some(lock) = task_lock(&state, locks::RETENTION).await else {
            continue;
        };
        if let Err(e) = apply_retention(&state).await {
            tracing::warn!(error = %e, "retention task failed");
        }
        if let Err(e) = crate::accounts::resume_erasures(&state).await {
            tracing::warn!(error = %e, "resuming interrupted erasures failed");
        }
        lock.release().await;
    }
}

/// Delivers the edge purge outbox: at once after this node commits a change that needs a
/// purge, and every `PURGE_POLL` for retries and for purges other processes wrote (another
/// node, or a command run beside this one).
async fn deliver_edge_purges(state: Arc<AppState>, shutdown: watch::Receiver<bool>) {
    const PURGE_POLL: Duration = Duration::from_secs(1);
    let mut worker = match crate::edge::worker::Worker::new(
        state.config.edge.clone(),
        state.metrics.edge.clone(),
    ) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "edge purges: cannot build the HTTP client; purges stay queued");
            return;
        }
    };
    let mut rounds = Rounds::new(PURGE_POLL, First::Now, shutdown);
    let outbox = state.store.outbox().clone();
    while rounds.next_or(outbox.committed()).await {
        if let Err(e) = worker.drain(&state.store).await {
            tracing::warn!(error = %e, "edge purges: cannot read the outbox");
        }
    }
}

/// Checks every few seconds that the disk cache still takes writes (see
/// `VariantCache::probe_disk`).
async fn probe_disk_periodically(state: Arc<AppState>, shutdown: watch::Receiver<bool>) {
    let mut rounds = Rounds::new(DISK_PROBE_INTERVAL, First::Now, shutdown);
    while rounds.next().await {
        state.caches.variants.probe_disk().await;
    }
}

/// On SQLite, applies the cache invalidations that commands run beside this node wrote
/// (`cluster::NoticeLog`), every `cluster::POLL_INTERVAL`.
async fn read_notices_periodically(
    state: Arc<AppState>,
    mut log: crate::cluster::NoticeLog,
    shutdown: watch::Receiver<bool>,
) {
    let mut rounds = Rounds::new(crate::cluster::POLL_INTERVAL, First::Now, shutdown);
    while rounds.next().await {
        match log.read(&state.store).await {
            Ok(notices) => {
                for notice in notices {
                    state.apply_notice(notice).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read cache invalidations"),
        }
    }
}

/// When a background loop runs its first round.
enum First {
    Now,
    AfterOne,
}

/// A background loop's clock, shared by every periodic task: [`Rounds::next`] waits for the
/// next round and answers false once shutdown has begun. A round that is running finishes
/// first; rounds that fall behind are delayed, not bunched.
struct Rounds {
    tick: tokio::time::Interval,
    shutdown: watch::Receiver<bool>,
}

impl Rounds {
    fn new(every: Duration, first: First, shutdown: watch::Receiver<bool>) -> Rounds {
        let start = match first {
            First::Now => tokio::time::Instant::now(),
            First::AfterOne => tokio::time::Instant::now() + every,
        };
        let mut tick = tokio::time::interval_at(start, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Rounds { tick, shutdown }
    }

    async fn next(&mut self) -> bool {
        tokio::select! {
            biased;
            // Also when the sender is gone: nobody can ask for more rounds.
            _ = self.shutdown.wait_for(|stop| *stop) => false,
            _ = self.tick.tick() => true,
        }
    }

    /// [`Rounds::next`], or sooner when `wake` resolves (work that should not wait a round).
    async fn next_or(&mut self, wake: impl std::future::Future<Output = ()>) -> bool {
        tokio::select! {
            biased;
            _ = self.shutdown.wait_for(|stop| *stop) => false,
            _ = wake => true,
            _ = self.tick.tick() => true,
        }
    }
}

/// How often the disk cache's writability is checked.
pub const DISK_PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// The lock of a background task shared by every node (PostgreSQL advisory lock); `None`
/// when another node holds it, or the database cannot be asked (then the next round retries).
async fn task_lock(state: &AppState, key: i64) -> Option<locks::NodeLock> {
    match state.store.try_lock_task(key).await {
        Ok(Some(lock)) => Some(lock),
        Ok(None) => {
            tracing::debug!(key, "another node runs this task now");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot take a background task's lock");
            None
        }
    }
}

/// One retention pass. A month's usage is kept until the whole month is older than
/// `retention.usage_logs`.
pub async fn apply_retention(state: &AppState) -> Result<(u64, u64), StoreError> {
    let now = crate::store::now_unix();
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let usage_cutoff = now.saturating_sub(secs(state.config.retention.usage_logs));
    // Rows of months that ended before the cutoff go: keep the cutoff's own month.
    let usage = state
        .store
        .delete_usage_before(&crate::usage::period_of(usage_cutoff))
        .await?;
    let audit = state
        .store
        .delete_audit_before(now.saturating_sub(secs(state.config.retention.audit)))
        .await?;
    // Failed edge purges stay listed by the operator API for a month.
    const FAILED_PURGES_KEPT_MS: i64 = 30 * 24 * 3600 * 1000;
    let purges = state
        .store
        .delete_failed_purges(crate::store::now_ms().saturating_sub(FAILED_PURGES_KEPT_MS))
        .await?;
    if usage + audit + purges > 0 {
        tracing::info!(usage, audit, purges, "retention removed old records");
    }
    Ok((usage, audit))
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { addr, source })
}
