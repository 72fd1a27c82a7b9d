//! The shared state every request handler reads: configuration, stores, caches, the CPU
//! pool, metrics and the counters that are flushed periodically.
//!
//! Below the handlers and above the parts it holds: built and driven by the wiring
//! (`app.rs`), read by the handlers. Must never import a handler module or the wiring, and
//! never decide an HTTP answer.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::auth::ApiKeys;
use crate::cache::Caches;
use crate::cluster::{Broadcaster, Notice};
use crate::config::Config;
use crate::cpu::Pool;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::origin::Originals;
use crate::render::RenderFlights;
use crate::signing::SigningKeys;
use crate::store::Store;

/// Only if every plan were removed from the config, which validation does not allow.
static FALLBACK_PLAN: crate::config::Plan = crate::config::Plan {
    max_uploads_per_month: Some(0),
    max_storage_bytes: Some(0),
    max_bandwidth_per_month: Some(0),
    max_api_requests_per_month: Some(0),
    max_transformations_per_month: Some(0),
    requests_per_minute: 1,
    private_images: false,
    signed_urls: false,
    presets: false,
    max_presets: 0,
};

/// Everything a request handler may use.
pub struct AppState {
    pub(crate) config: Config,
    pub store: Store,
    /// Every account's originals, sealed in object storage.
    pub originals: Originals,
    pub(crate) cpu: Pool,
    pub caches: Caches,
    pub api_keys: ApiKeys,
    /// Renders in flight, so concurrent misses for one variant share one render.
    pub(crate) flights: RenderFlights,
    pub(crate) metrics: Metrics,
    /// The operator token (from `admin.token_file`); `None` disables the operator API.
    pub(crate) operator_token: Option<String>,
    /// True once start-up work is done; false again when draining.
    pub(crate) ready: AtomicBool,
    /// URL signing keys (first signs, all verify).
    pub signing: SigningKeys,
    /// JWT verification, when `auth.jwt.jwks_url` is set.
    pub(crate) jwt: Option<crate::auth::jwt::JwtVerifier>,
    /// Monthly usage per account, counted in memory.
    pub usage: crate::usage::UsageMeter,
    pub(crate) rate_limits: crate::ratelimit::RateLimits,
    /// Renders per preset id since the last flush (written with the API key usage).
    pub(crate) preset_usage: std::sync::Mutex<std::collections::HashMap<String, i64>>,
    /// This process among the nodes sharing the database (random per start).
    pub(crate) node_id: String,
    /// Cache invalidations for the other nodes (PostgreSQL); disabled on SQLite.
    pub(crate) cluster: Broadcaster,
    /// The public listener's bound address, once `start` has bound it.
    pub(crate) bound_public_addr: std::sync::OnceLock<SocketAddr>,
    /// The console's origin and relying party, made on first use (after the bind).
    pub(crate) console_site: std::sync::OnceLock<Option<crate::auth::console::Site>>,
}

impl AppState {
    /// The console's origin and relying party (`auth::console::Site`); `None` when the
    /// console is off, or has no origin (a reachable listener without `server.public_url`).
    pub(crate) fn console_site(&self) -> Option<&crate::auth::console::Site> {
        if !self.config.console.enabled {
            return None;
        }
        let public_url = self.config.server.public_url.as_deref();
        let bound = self.bound_public_addr.get().copied();
        if public_url.is_none() && bound.is_none() {
            return None;
        }
        self.console_site
            .get_or_init(|| crate::auth::console::Site::new(public_url, bound))
            .as_ref()
    }

    /// Orderly close for offline commands and shutdown: the disk cache is flushed so what was
    /// rendered survives the restart.
    pub async fn close(&self) {
        self.flush_usage().await;
        // Invalidations published by the last requests (or an offline command) reach the
        // other nodes before the store closes; not waiting long on a database that is gone.
        if tokio::time::timeout(Duration::from_secs(5), self.cluster.flush())
            .await
            .is_err()
        {
            tracing::warn!("cache invalidations for other nodes not all sent before closing");
        }
        if let Err(e) = self.caches.close().await {
            tracing::warn!(error = %e, "closing the variant cache");
        }
        self.store.close().await;
    }

    /// Writes the usage counted in memory (API keys, presets). On failure the counts of this
    /// interval are lost, never double counted.
    pub(crate) async fn flush_usage(&self) {
        if let Err(e) = self.api_keys.flush_usage(&self.store).await {
            tracing::warn!(error = %e, "flushing API key usage");
        }
        let presets =
            std::mem::take(&mut *self.preset_usage.lock().unwrap_or_else(|p| p.into_inner()));
        for (id, renders) in presets {
            if let Err(e) = self.store.add_preset_usage(&id, renders).await {
                tracing::warn!(error = %e, "flushing preset usage");
            }
        }
        if let Err(e) = self.usage.flush(&self.store).await {
            tracing::warn!(error = %e, "flushing account usage (kept for the next flush)");
        }
        self.rate_limits.shrink();
    }

    /// The public listener's address: as bound (port 0 resolved) once started, else as
    /// configured.
    pub(crate) fn public_addr(&self) -> SocketAddr {
        self.bound_public_addr
            .get()
            .copied()
            .unwrap_or(self.config.server.public_listen)
    }

    /// The plan named `name`; an account on a plan the config no longer defines gets `free`'s
    /// limits (the built-in plans always exist).
    pub(crate) fn plan(&self, name: &str) -> &crate::config::Plan {
        self.config
            .plans
            .get(name)
            .or_else(|| self.config.plans.get("free"))
            .or_else(|| self.config.plans.values().next())
            .unwrap_or(&FALLBACK_PLAN)
    }

    /// Counts one render made with a preset.
    pub(crate) fn count_preset_render(&self, preset_id: &str) {
        let mut usage = self.preset_usage.lock().unwrap_or_else(|p| p.into_inner());
        *usage.entry(preset_id.to_string()).or_default() += 1;
    }

    /// Applies another node's notice to this node's caches; `None` (a notice that could not be
    /// read, or a listening connection that was lost) forgets every cached metadata answer.
    /// Variants are not forgotten: they are content-addressed and readable only with a data
    /// key, which is metadata.
    pub(crate) async fn apply_notice(&self, notice: Option<Notice>) {
        match notice {
            Some(Notice::Account(name)) => self.caches.meta.invalidate_account_local(&name).await,
            Some(Notice::Hashes(scopes)) => self.caches.forget_scopes(&scopes).await,
            Some(Notice::ApiKey(hash)) => self.api_keys.forget_key(&hash).await,
            Some(Notice::All) | None => {
                self.caches.meta.invalidate_all_local();
                self.api_keys.forget_all();
            }
        }
    }

    pub fn ingest(&self) -> Ingest<'_> {
        Ingest {
            store: &self.store,
            originals: &self.originals,
            caches: &self.caches,
            cpu: &self.cpu,
            limits: &self.config.limits,
            deadline: self.config.cpu.transform_timeout,
        }
    }
}
