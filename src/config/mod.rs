//! Configuration: a TOML file (optional) plus `IMGNODE_<SECTION>__<KEY>` environment
//! overrides, parsed into [`raw::RawConfig`] and validated into [`Config`].
//!
//! Owns every read of the environment for settings. Every problem is collected and reported
//! at once (unknown keys by name, bad values with the accepted form); callers exit with
//! [`EXIT_CONFIG`] on failure so systemd does not restart-loop on a typo.

mod raw;

pub(crate) mod proxies;

mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::pipeline::{EncodeSettings, Limits};
use raw::RawConfig;

/// `EX_CONFIG` from sysexits.h; the systemd unit lists it in `RestartPreventExitStatus`.
pub const EXIT_CONFIG: i32 = 78;

/// Prefix of environment overrides: `IMGNODE_SERVER__PUBLIC_LISTEN=0.0.0.0:80`.
const ENV_PREFIX: &str = "IMGNODE_";
/// Environment variable naming the config file when `--config` is not given.
pub const ENV_CONFIG_FILE: &str = "IMGNODE_CONFIG";

#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) server: ServerConfig,
    pub(crate) data_dir: PathBuf,
    /// Originals at rest (`[storage]`).
    pub(crate) storage: StorageConfig,
    pub(crate) origin: OriginConfig,
    pub(crate) store: StoreConfig,
    pub(crate) cache: CacheConfig,
    pub(crate) admin: AdminConfig,
    pub(crate) auth: AuthConfig,
    pub(crate) delivery: DeliveryConfig,
    pub(crate) upload: UploadConfig,
    pub(crate) limits: Limits,
    pub(crate) encode: EncodeSettings,
    pub cpu: CpuConfig,
    pub log: LogConfig,
    /// `demo.seed`: `Some(true)` always, `Some(false)` never, `None` only on a loopback
    /// listener (see [`seeds_demo`]).
    pub(crate) demo_seed: Option<bool>,
    pub(crate) plans: BTreeMap<String, Plan>,
    pub(crate) retention: RetentionConfig,
    pub(crate) edge: EdgeConfig,
    pub(crate) console: ConsoleConfig,
}

/// `[console]`: the tenant console (see `console`).
#[derive(Debug, Clone)]
pub(crate) struct ConsoleConfig {
    pub(crate) enabled: bool,
    pub(crate) idle_timeout: Duration,
    pub(crate) absolute_timeout: Duration,
}

/// `[edge]`: cache tags on image answers and the purge targets that reach the CDN.
#[derive(Debug, Clone)]
pub(crate) struct EdgeConfig {
    pub(crate) tag_headers: Vec<crate::edge::TagHeader>,
    /// Zero: the directive is left out.
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
    pub(crate) purge_attempts: u32,
    pub(crate) purge_retry_base: Duration,
    pub(crate) purge_retry_max: Duration,
    pub(crate) purge_timeout: Duration,
    pub(crate) erasure_wait: Duration,
    pub(crate) purge: Vec<PurgeTarget>,
}

/// One configured purge target.
#[derive(Debug, Clone)]
pub(crate) struct PurgeTarget {
    /// Unique among the targets; the outbox records which targets a purge still owes.
    pub(crate) name: String,
    pub(crate) driver: PurgeDriver,
}

#[derive(Debug, Clone)]
pub(crate) enum PurgeDriver {
    Varnish {
        urls: Vec<String>,
        header: String,
    },
    Fastly {
        service_id: String,
        token: Secret,
        api_base: String,
        soft: bool,
    },
    Cloudflare {
        zone_id: String,
        token: Secret,
        api_base: String,
    },
    Webhook {
        url: String,
        secret: Secret,
    },
}

impl PurgeDriver {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            PurgeDriver::Varnish { .. } => "varnish",
            PurgeDriver::Fastly { .. } => "fastly",
            PurgeDriver::Cloudflare { .. } => "cloudflare",
            PurgeDriver::Webhook { .. } => "webhook",
        }
    }
}

/// A credential read from a file; never printed.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(pub(crate) String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A plan's monthly limits (`None` = unlimited) and tenant API rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) max_uploads_per_month: Option<u64>,
    pub(crate) max_storage_bytes: Option<u64>,
    pub(crate) max_bandwidth_per_month: Option<u64>,
    pub(crate) max_api_requests_per_month: Option<u64>,
    pub(crate) max_transformations_per_month: Option<u64>,
    pub(crate) requests_per_minute: u32,
    pub(crate) private_images: bool,
    pub(crate) signed_urls: bool,
    pub(crate) presets: bool,
    /// Most presets an account on the plan may hold.
    pub(crate) max_presets: u32,
}

/// What a plan may leave out (img-src sells them on paid plans).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Feature {
    PrivateImages,
    SignedUrls,
    Presets,
}

impl Feature {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Feature::PrivateImages => "private images",
            Feature::SignedUrls => "signed URLs",
            Feature::Presets => "presets",
        }
    }
}

impl Plan {
    fn from_raw(raw: &raw::RawPlan) -> Plan {
        Plan {
            max_uploads_per_month: raw.max_uploads_per_month,
            max_storage_bytes: raw.max_storage_bytes,
            max_bandwidth_per_month: raw.max_bandwidth_per_month,
            max_api_requests_per_month: raw.max_api_requests_per_month,
            max_transformations_per_month: raw.max_transformations_per_month,
            requests_per_minute: raw.requests_per_minute,
            private_images: raw.private_images,
            signed_urls: raw.signed_urls,
            presets: raw.presets,
            max_presets: raw.max_presets,
        }
    }

    pub(crate) fn includes(&self, feature: Feature) -> bool {
        match feature {
            Feature::PrivateImages => self.private_images,
            Feature::SignedUrls => self.signed_urls,
            Feature::Presets => self.presets,
        }
    }
}

/// The plans every node knows, which `[plans.<name>]` sections add to or redefine.
fn builtin_plans() -> BTreeMap<String, raw::RawPlan> {
    const GIB: u64 = 1 << 30;
    let plan = |uploads, storage, bandwidth, api, transforms, rpm| raw::RawPlan {
        max_uploads_per_month: uploads,
        max_storage_bytes: storage,
        max_bandwidth_per_month: bandwidth,
        max_api_requests_per_month: api,
        max_transformations_per_month: transforms,
        requests_per_minute: rpm,
        ..raw::RawPlan::default()
    };
    // Private images, signed URLs and presets are paid features.
    let free = raw::RawPlan {
        private_images: false,
        signed_urls: false,
        presets: false,
        max_presets: 0,
        ..plan(
            Some(500),
            Some(GIB),
            Some(10 * GIB),
            Some(10_000),
            Some(5_000),
            100,
        )
    };
    BTreeMap::from([
        ("free".to_string(), free),
        (
            "pro".to_string(),
            plan(
                Some(10_000),
                Some(100 * GIB),
                Some(1024 * GIB),
                Some(1_000_000),
                Some(100_000),
                500,
            ),
        ),
        (
            "unlimited".to_string(),
            plan(None, None, None, None, None, 6000),
        ),
    ])
}

#[derive(Debug, Clone)]
pub(crate) struct RetentionConfig {
    /// Monthly usage records whose month ended longer ago than this are deleted.
    pub(crate) usage_logs: Duration,
    pub(crate) audit: Duration,
    /// How often the retention task runs.
    pub(crate) interval: Duration,
}

#[derive(Debug, Clone)]
pub(crate) struct ServerConfig {
    pub(crate) public_listen: SocketAddr,
    pub(crate) ops_listen: SocketAddr,
    pub(crate) drain_timeout: Duration,
    /// Base of the absolute URLs the API returns (`https://img.example.com`, no trailing
    /// slash); `None` means "the request's `Host` when it is one of `delivery.cdn_hosts`, else
    /// the listener's address" (never an unvetted `Host`).
    pub(crate) public_url: Option<String>,
    pub(crate) header_read_timeout: Duration,
    pub(crate) max_header_bytes: usize,
    pub(crate) max_connections: usize,
    pub(crate) h2_max_concurrent_streams: u32,
    pub(crate) h2_keep_alive: Duration,
    /// An HTTP/2 connection without an open stream for this long gets GOAWAY and is closed.
    pub(crate) h2_idle_timeout: Duration,
    /// Open connections per client address (IPv6: per /64) and listener; 0 is no limit.
    /// Trusted proxies are exempt.
    pub(crate) max_connections_per_ip: usize,
    /// Peers whose forwarding header names the client (see `server::client`).
    pub(crate) trusted_proxies: proxies::TrustedProxies,
    /// Plain HTTP/2 with prior knowledge on the public listener.
    pub(crate) h2c: bool,
    /// `(certificate chain, key)` PEM files: TLS on the public listener.
    pub(crate) tls: Option<(PathBuf, PathBuf)>,
}

impl ServerConfig {
    /// Whether start-up should warn that `server.public_url` is missing: the public listener
    /// is not on loopback (so clients on other machines get URLs from the API) and no URL is
    /// set.
    pub(crate) fn needs_public_url(&self) -> bool {
        !self.public_listen.ip().is_loopback() && self.public_url.is_none()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum OriginConfig {
    Fs {
        path: PathBuf,
    },
    S3 {
        bucket: String,
        region: String,
        /// Empty for AWS itself.
        endpoint: String,
        path_style: bool,
        allow_http: bool,
        credentials_file: Option<PathBuf>,
        prefix: String,
        timeout: Duration,
        /// The provider's server-side encryption, defence in depth beside imgnode's own.
        sse: Option<ServerSideEncryption>,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct StorageConfig {
    /// The KEK file; `None` means `{data_dir}/originals.kek`, generated on first start.
    pub(crate) kek_file: Option<PathBuf>,
    /// Plaintext originals of an earlier version sealed per second in the background.
    pub(crate) encrypt_per_second: u32,
}

/// S3 server-side encryption (`origin.sse`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerSideEncryption {
    /// `AES256`: SSE-S3, keys managed by the provider.
    S3Managed,
    /// `aws:kms`: SSE-KMS under `key_id` (empty: the bucket's default KMS key).
    Kms { key_id: String },
}

#[derive(Debug, Clone)]
pub(crate) struct StoreConfig {
    pub(crate) url: String,
}

#[derive(Debug, Clone)]
pub(crate) struct CacheConfig {
    pub(crate) settings: crate::cache::CacheSettings,
    pub(crate) not_found_max_age: Duration,
}

impl CacheConfig {
    /// `Cache-Control: max-age` of images follows the cache TTL.
    pub(crate) fn http_max_age(&self) -> Duration {
        self.settings.ttl
    }
}

#[derive(Debug, Clone)]
pub(crate) struct AuthConfig {
    pub(crate) key_prefix: String,
    pub(crate) usage_flush_interval: Duration,
    /// Live API keys one account may hold; creating one more is a 409.
    pub(crate) max_keys_per_account: u32,
    /// `None`: JWTs are not accepted.
    pub(crate) jwt: Option<crate::auth::jwt::JwtConfig>,
}

#[derive(Debug, Clone)]
pub(crate) struct AdminConfig {
    pub(crate) token_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub(crate) struct DeliveryConfig {
    pub(crate) cdn_hosts: Vec<String>,
    pub(crate) bare_paths: bool,
    /// Every transform URL must carry a valid signature.
    pub(crate) require_signature: bool,
    /// With `require_signature`, untransformed originals need one too.
    pub(crate) sign_originals: bool,
    /// What delivery answers for a suspended account: 403 or 404.
    pub(crate) suspended_status: u16,
    /// One signing key per line, the first signs; `None` means `{data_dir}/signing.keys`,
    /// generated on first start.
    pub(crate) signing_keys_file: Option<PathBuf>,
    /// What one client and one image may make the node render.
    pub(crate) budgets: RenderBudgets,
    /// `format=auto`: a cold miss whose best format is AVIF answers at once with a stand-in
    /// (WebP, else JPEG) and encodes the AVIF in the background at the lowest priority.
    pub(crate) avif_background: bool,
    /// `Cache-Control` max-age of a stand-in answer (the CDN asks again after it).
    pub(crate) stand_in_max_age: Duration,
}

/// Bounds on new renders (cache misses) that anyone can cause with new URLs; cache hits never
/// count. Zero turns a budget off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RenderBudgets {
    /// New renders per minute per client address (IPv6: per /64), GCRA.
    pub(crate) client_per_minute: u32,
    /// How many of them may come at once (a page of new thumbnails).
    pub(crate) client_burst: u32,
    /// Distinct new variants of one image per hour, for unsigned URLs.
    pub(crate) image_variants_per_hour: u32,
    /// Unsigned URLs asking for a higher `q` get this one.
    pub(crate) unsigned_max_quality: u8,
    /// Unsigned outputs over this many pixels are rendered at the largest size of the same
    /// shape within it.
    pub(crate) unsigned_max_pixels: u64,
    /// The same for AVIF (`format=auto` answers WebP instead).
    pub(crate) unsigned_avif_max_pixels: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct UploadConfig {
    /// Largest upload, in bytes (413 beyond, without reading the rest).
    pub(crate) max_bytes: u64,
    /// Unreferenced originals younger than this are left alone by the sweeper (an upload may
    /// be between writing the object and committing its metadata on another node).
    pub(crate) orphan_grace: Duration,
    pub(crate) sweep_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct CpuConfig {
    pub(crate) threads: usize,
    pub(crate) queue: usize,
    pub(crate) transform_timeout: Duration,
    pub(crate) avif_concurrency: usize,
    pub(crate) nice: u8,
    /// Threads of the runtime's blocking pool (file I/O), resolved: never 0.
    pub blocking_threads: usize,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: String,
    pub json: bool,
}

/// Every problem found, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    problems: Vec<String>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn one(problem: String) -> ConfigError {
        ConfigError {
            problems: vec![problem],
        }
    }
}

/// Loads the file at `path` (if any) with the `IMGNODE_*` variables of the process
/// environment applied on top.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    let text = match path {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| ConfigError::one(format!("cannot read {}: {e}", p.display())))?,
        None => String::new(),
    };
    parse(&text, std::env::vars())
}

/// Parses config text with the given environment (tests pass their own).
/// Whether start-up seeds the `demo` account: `demo.seed = true` always, `false` never; unset,
/// only when the public listener is on loopback (a demo account with public photos has no
/// business on a node the internet reaches unless the operator says so).
pub(crate) fn seeds_demo(setting: Option<bool>, public_listen: SocketAddr) -> bool {
    setting.unwrap_or_else(|| public_listen.ip().is_loopback())
}

pub fn parse(
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let mut table: toml::Table = toml::from_str(text)
        .map_err(|e| ConfigError::one(format!("TOML syntax: {}", e.message())))?;
    let mut problems = Vec::new();
    apply_env(&mut table, env, &mut problems);

    let mut unknown = Vec::new();
    let mut track = serde_path_to_error::Track::new();
    let raw: Result<RawConfig, _> = serde_ignored::deserialize(
        serde_path_to_error::Deserializer::new(toml::Value::Table(table), &mut track),
        |path| unknown.push(path.to_string()),
    );
    problems.extend(unknown.into_iter().map(|k| format!("unknown key `{k}`")));
    let raw = match raw {
        Ok(raw) => raw,
        Err(e) => {
            problems.push(format!("{}: {}", track.path(), e.message()));
            return Err(ConfigError { problems });
        }
    };
    let config = validate::validate(&raw, &mut problems);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError { problems })
    }
}

/// `IMGNODE_SECTION__KEY=value` sets `[section] key = value` (`IMGNODE_A__B__KEY` sets
/// `[a.b] key`). The value is read as a TOML
/// value when it parses as one (numbers, booleans, arrays), else as a plain string.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
    problems: &mut Vec<String>,
) {
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if name == ENV_CONFIG_FILE {
            continue;
        }
        let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if parts.len() < 2 || parts.iter().any(String::is_empty) {
            problems.push(format!(
                "environment variable {name}: expected {ENV_PREFIX}<SECTION>__<KEY> \
                 (or <SECTION>__<TABLE>__<KEY>)"
            ));
            continue;
        }
        let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        if let Err(section) = insert_path(table, &parts, parsed) {
            problems.push(format!(
                "environment variable {name}: `{section}` is not a section"
            ));
        }
    }
}

/// Sets `path` (tables then key) in `table`, creating tables on the way; `Err(name)` when a
/// name on the way is a value, not a table.
fn insert_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    match path {
        [] => Ok(()),
        [key] => {
            table.insert(key.clone(), value);
            Ok(())
        }
        [section, rest @ ..] => match table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        {
            toml::Value::Table(t) => insert_path(t, rest, value),
            _ => Err(section.clone()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{AvifChroma, AvifEncoder};

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn empty_config_gives_the_documented_defaults() {
        let c = parse("", no_env()).unwrap();
        assert_eq!(c.server.public_listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.server.ops_listen.to_string(), "127.0.0.1:9090");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(
            c.origin,
            OriginConfig::Fs {
                path: PathBuf::from("./data/originals")
            }
        );
        assert_eq!(c.store.url, "sqlite://./data/imgnode.db");
        assert_eq!(c.cache.http_max_age(), Duration::from_secs(365 * 86400));
        assert_eq!(c.cache.settings.dir, PathBuf::from("./data/cache"));
        assert_eq!(
            c.cache.settings.originals_bytes, 0,
            "no originals cache for fs"
        );
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.encode, EncodeSettings::default());
    }

    #[test]
    fn the_documented_example_file_is_the_defaults() {
        let text = include_str!("../../config/imgnode.toml");
        let documented: toml::Table = toml::from_str(text).unwrap();
        let raw: RawConfig = toml::Value::Table(documented).try_into().unwrap();
        assert_eq!(raw, RawConfig::default());
        parse(text, no_env()).unwrap();
    }

    #[test]
    fn the_benchmark_config_turns_the_render_budgets_off_and_lifts_the_free_plan() {
        let c = parse(include_str!("../../benches/bench.toml"), no_env()).unwrap();
        assert_eq!(c.delivery.budgets.client_per_minute, 0);
        assert_eq!(c.delivery.budgets.image_variants_per_hour, 0);
        assert_eq!(c.plans["free"].max_transformations_per_month, None);
        assert_eq!(c.plans["free"].max_bandwidth_per_month, None);
    }

    #[test]
    fn the_scale_out_examples_are_valid_and_differ_only_in_their_addresses() {
        let a = parse(include_str!("../../config/scale-out/node-a.toml"), no_env()).unwrap();
        let b = parse(include_str!("../../config/scale-out/node-b.toml"), no_env()).unwrap();
        assert!(a.store.url.starts_with("postgres://"));
        assert!(matches!(a.origin, OriginConfig::S3 { .. }));
        assert_ne!(a.server.public_listen, b.server.public_listen);
        let mut b = b;
        b.server.public_listen = a.server.public_listen;
        b.server.ops_listen = a.server.ops_listen;
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }

    #[test]
    fn every_unknown_key_is_named_at_once() {
        let err = parse(
            "[server]\npublic_listn = \"x\"\n[cache]\nbustr = \"1\"\n[nope]\na = 1\n",
            no_env(),
        )
        .unwrap_err();
        let all = err.problems.join("\n");
        assert!(all.contains("server.public_listn"), "{all}");
        assert!(all.contains("cache.bustr"), "{all}");
        assert!(all.contains("nope"), "{all}");
    }

    #[test]
    fn every_bad_value_is_reported_at_once() {
        let err = parse(
            "[server]\npublic_listen = \"localhost\"\ndrain_timeout = \"soon\"\n[limits]\nmax_source_bytes = \"lots\"\n[encode]\navif_speed = 11\n",
            no_env(),
        )
        .unwrap_err();
        assert_eq!(err.problems.len(), 4, "{:?}", err.problems);
    }

    #[test]
    fn avif_chroma_is_420_or_444_written_either_way_and_depth_8_or_10() {
        for (text, env, chroma) in [
            (
                "[encode]\navif_chroma = \"444\"\n",
                no_env(),
                AvifChroma::Yuv444,
            ),
            (
                "[encode]\navif_chroma = 444\n",
                no_env(),
                AvifChroma::Yuv444,
            ),
            (
                "",
                vec![("IMGNODE_ENCODE__AVIF_CHROMA".into(), "444".into())],
                AvifChroma::Yuv444,
            ),
            ("", no_env(), AvifChroma::Yuv420),
        ] {
            assert_eq!(
                parse(text, env).unwrap().encode.avif_chroma,
                chroma,
                "{text}"
            );
        }
        assert_eq!(
            parse("", no_env()).unwrap().encode.avif_encoder,
            AvifEncoder::Aom
        );
        let env = vec![("IMGNODE_ENCODE__AVIF_ENCODER".into(), "rav1e".into())];
        assert_eq!(
            parse("", env).unwrap().encode.avif_encoder,
            AvifEncoder::Rav1e
        );
        let err = parse(
            "[encode]\navif_chroma = 422\navif_bit_depth = 12\navif_encoder = \"x265\"\n",
            no_env(),
        )
        .unwrap_err();
        let problems = err.problems.join("\n");
        assert!(
            problems.contains("encode.avif_chroma: 422 is not 420 or 444"),
            "{problems}"
        );
        assert!(
            problems.contains("encode.avif_bit_depth: 12 is not 8 or 10"),
            "{problems}"
        );
        assert!(
            problems.contains("encode.avif_encoder: `x265` is not aom or rav1e"),
            "{problems}"
        );
    }

    #[test]
    fn the_blocking_pool_is_small_and_never_zero() {
        let auto = parse("", no_env()).unwrap().cpu.blocking_threads;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(auto, (2 * cores).max(4));
        let set = parse("[cpu]\nblocking_threads = 3\n", no_env()).unwrap();
        assert_eq!(set.cpu.blocking_threads, 3);
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = vec![
            (
                "IMGNODE_SERVER__PUBLIC_LISTEN".to_string(),
                "0.0.0.0:80".to_string(),
            ),
            ("IMGNODE_LIMITS__MAX_SOURCE_PIXELS".into(), "1000".into()),
            ("IMGNODE_DELIVERY__BARE_PATHS".into(), "true".into()),
            ("IMGNODE_CONFIG".into(), "/etc/imgnode.toml".into()),
            ("HOME".into(), "/root".into()),
        ];
        let c = parse("[server]\npublic_listen = \"127.0.0.1:1\"\n", env).unwrap();
        assert_eq!(c.server.public_listen.to_string(), "0.0.0.0:80");
        assert_eq!(c.limits.max_source_pixels, 1000);
        assert!(c.delivery.bare_paths);
    }

    #[test]
    fn unknown_environment_keys_are_rejected() {
        let env = vec![("IMGNODE_SERVER__PUBLIC_LISTN".to_string(), "x".to_string())];
        let err = parse("", env).unwrap_err();
        assert!(err.problems[0].contains("server.public_listn"), "{err}");
    }

    #[test]
    fn demo_seed_is_tri_state_and_unset_means_loopback_only() {
        let seeds = |text: &str, env: Vec<(String, String)>| {
            let c = parse(text, env).unwrap();
            seeds_demo(c.demo_seed, c.server.public_listen)
        };
        let open = "[server]\npublic_listen = \"0.0.0.0:8080\"\n";
        let v6 = "[server]\npublic_listen = \"[::]:8080\"\n";
        let lo6 = "[server]\npublic_listen = \"[::1]:8080\"\n";
        assert_eq!(parse("", no_env()).unwrap().demo_seed, None);
        assert!(seeds("", no_env()), "default listener is 127.0.0.1");
        assert!(seeds(lo6, no_env()));
        assert!(!seeds(open, no_env()));
        assert!(!seeds(v6, no_env()));
        assert!(seeds(&format!("{open}[demo]\nseed = true\n"), no_env()));
        assert!(!seeds("[demo]\nseed = false\n", no_env()));
        let env = vec![("IMGNODE_DEMO__SEED".to_string(), "true".to_string())];
        assert!(seeds(open, env));
    }

    #[test]
    fn a_reachable_listener_without_public_url_warns() {
        let warns = |text: &str| parse(text, no_env()).unwrap().server.needs_public_url();
        assert!(!warns(""), "loopback");
        assert!(!warns("[server]\npublic_listen = \"[::1]:8080\"\n"));
        assert!(warns("[server]\npublic_listen = \"0.0.0.0:8080\"\n"));
        assert!(warns("[server]\npublic_listen = \"192.0.2.7:8080\"\n"));
        assert!(!warns(
            "[server]\npublic_listen = \"0.0.0.0:8080\"\npublic_url = \"https://img.example.com\"\n"
        ));
    }

    #[test]
    fn trusted_proxies_are_parsed_at_load() {
        let c = parse(
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.7\"]\n\
             forwarded_header = \"forwarded\"\n",
            no_env(),
        )
        .unwrap();
        let t = &c.server.trusted_proxies;
        assert_eq!(t.nets.len(), 3);
        assert!(t.contains("10.1.2.3".parse().unwrap()));
        assert!(t.contains("192.0.2.7".parse().unwrap()));
        assert!(!t.contains("192.0.2.8".parse().unwrap()));
        assert_eq!(t.header, proxies::ForwardedHeader::Forwarded);
        let err = parse(
            "[server]\ntrusted_proxies = [\"10.0.0.0/33\", \"cdn.example\"]\n\
             forwarded_header = \"x-real-ip\"\n",
            no_env(),
        )
        .unwrap_err();
        assert_eq!(err.problems.len(), 3, "{err}");
        assert!(err.problems[0].contains("10.0.0.0/33"), "{err}");
        // A list through the environment.
        let env = vec![(
            "IMGNODE_SERVER__TRUSTED_PROXIES".to_string(),
            "[\"127.0.0.1/32\"]".to_string(),
        )];
        let c = parse("", env).unwrap();
        assert!(
            c.server
                .trusted_proxies
                .contains("127.0.0.1".parse().unwrap())
        );
        assert!(
            parse("", no_env())
                .unwrap()
                .server
                .trusted_proxies
                .nets
                .is_empty()
        );
    }

    #[test]
    fn store_passwords_are_not_echoed() {
        let err = parse("[store]\nurl = \"mysql://u:hunter2@db/x\"\n", no_env()).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
