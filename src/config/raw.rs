//! The config file as written: serde types with every key optional-with-default.
//!
//! Each section is `<Area>Config`-shaped but raw: sizes and durations are still strings with
//! units. `config/imgnode.toml` lists every key here with its default; a test keeps them equal.
//!
//! Unknown keys are rejected by `config::load`, which collects every one of them (through
//! `serde_ignored`) instead of stopping at the first as `deny_unknown_fields` would.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(default)]
pub(crate) struct RawConfig {
    pub(crate) server: RawServer,
    pub(crate) storage: RawStorage,
    pub(crate) origin: RawOrigin,
    pub(crate) store: RawStore,
    pub(crate) cache: RawCache,
    pub(crate) admin: RawAdmin,
    pub(crate) auth: RawAuth,
    pub(crate) delivery: RawDelivery,
    pub(crate) upload: RawUpload,
    pub(crate) limits: RawLimits,
    pub(crate) encode: RawEncode,
    pub(crate) cpu: RawCpu,
    pub(crate) log: RawLog,
    pub(crate) demo: RawDemo,
    /// Merged over the built-in `free`, `pro` and `unlimited` plans.
    pub(crate) plans: std::collections::BTreeMap<String, RawPlan>,
    pub(crate) retention: RawRetention,
    pub(crate) edge: RawEdge,
    pub(crate) console: RawConsole,
}

/// `[console]`: the tenant console under `/console/` on the public listener.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub(crate) struct RawConsole {
    pub(crate) enabled: bool,
    /// A session unused for this long is signed out.
    pub(crate) idle_timeout: String,
    /// A session ends this long after its sign-in, however much it is used.
    pub(crate) absolute_timeout: String,
}

impl Default for RawConsole {
    fn default() -> Self {
        RawConsole {
            enabled: true,
            idle_timeout: "30m".into(),
            absolute_timeout: "12h".into(),
        }
    }
}

/// `[edge]`: the CDN in front of the node (cache tags, purges, stale directives).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub(crate) struct RawEdge {
    /// Response headers that carry the cache tags: `Surrogate-Key`, `Cache-Tag`,
    /// `Edge-Cache-Tag`.
    pub(crate) tag_headers: Vec<String>,
    /// `stale-while-revalidate` of public image answers; "0s" leaves it out.
    pub(crate) stale_while_revalidate: String,
    /// `stale-if-error` of public image answers; "0s" leaves it out.
    pub(crate) stale_if_error: String,
    /// Attempts per purge and target before it is marked failed.
    pub(crate) purge_attempts: u32,
    /// Wait before the first retry; doubled on each further one up to `purge_retry_max`.
    pub(crate) purge_retry_base: String,
    pub(crate) purge_retry_max: String,
    /// Timeout of one purge request.
    pub(crate) purge_timeout: String,
    /// How long an erasure waits for its purge to reach every target before it answers
    /// (reported `pending` after that).
    pub(crate) erasure_wait: String,
    /// One table per purge target (`[[edge.purge]]`).
    pub(crate) purge: Vec<RawPurge>,
}

impl Default for RawEdge {
    fn default() -> Self {
        RawEdge {
            tag_headers: vec!["Surrogate-Key".into(), "Cache-Tag".into()],
            stale_while_revalidate: "0s".into(),
            stale_if_error: "0s".into(),
            purge_attempts: 12,
            purge_retry_base: "2s".into(),
            purge_retry_max: "10m".into(),
            purge_timeout: "10s".into(),
            erasure_wait: "30s".into(),
            purge: Vec::new(),
        }
    }
}

/// One purge target. Which fields apply depends on `kind`; `config::validate` refuses the
/// others.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawPurge {
    /// `varnish`, `fastly`, `cloudflare` or `webhook`.
    pub(crate) kind: String,
    /// How logs, metrics and the outbox name the target; default: the kind (then `kind-2`,
    /// ... for a second one of the same kind).
    pub(crate) name: String,
    /// Varnish: each instance's address (`http://10.0.0.5:6081/`), each sent every purge.
    pub(crate) urls: Vec<String>,
    /// Varnish: the request header carrying the keys (`xkey`, as vmod-xkey's VCL examples).
    pub(crate) header: String,
    /// Fastly.
    pub(crate) service_id: String,
    /// Cloudflare.
    pub(crate) zone_id: String,
    /// Fastly and Cloudflare: a file holding the API token.
    pub(crate) token_file: String,
    /// Fastly and Cloudflare: the API's base URL (tests point it at a local server).
    pub(crate) api_base: String,
    /// Fastly: mark stale instead of removing (`Fastly-Soft-Purge: 1`).
    pub(crate) soft: bool,
    /// Webhook: where to POST.
    pub(crate) url: String,
    /// Webhook: a file holding the HMAC-SHA256 key.
    pub(crate) secret_file: String,
}

/// One plan: monthly limits (absent = unlimited), a tenant API rate, and the features it
/// includes (a plan defined in config includes them unless it says otherwise; the built-in
/// `free` plan does not).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawPlan {
    pub(crate) max_uploads_per_month: Option<u64>,
    pub(crate) max_storage_bytes: Option<u64>,
    pub(crate) max_bandwidth_per_month: Option<u64>,
    pub(crate) max_api_requests_per_month: Option<u64>,
    pub(crate) max_transformations_per_month: Option<u64>,
    pub(crate) requests_per_minute: u32,
    pub(crate) private_images: bool,
    pub(crate) signed_urls: bool,
    pub(crate) presets: bool,
    pub(crate) max_presets: u32,
}

impl Default for RawPlan {
    fn default() -> Self {
        RawPlan {
            max_uploads_per_month: None,
            max_storage_bytes: None,
            max_bandwidth_per_month: None,
            max_api_requests_per_month: None,
            max_transformations_per_month: None,
            requests_per_minute: 0,
            private_images: true,
            signed_urls: true,
            presets: true,
            max_presets: 50,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub(crate) struct RawRetention {
    pub(crate) usage_logs: String,
    pub(crate) audit: String,
    pub(crate) interval: String,
}

impl Default for RawRetention {
    fn default() -> Self {
        RawRetention {
            usage_logs: "90d".into(),
            audit: "730d".into(),
            interval: "1h".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub(crate) struct RawServer {
    pub(crate) public_listen: String,
    pub(crate) ops_listen: String,
    pub(crate) drain_timeout: String,
    pub(crate) public_url: String,
    pub(crate) header_read_timeout: String,
    pub(crate) max_header_bytes: String,
    pub(crate) max_connections: usize,
    pub(crate) h2_max_concurrent_streams: u32,
    pub(crate) h2_keep_alive: String,
    pub(crate) h2c: bool,
    pub(crate) h2_idle_timeout: String,
    pub(crate) max_connections_per_ip: usize,
    /// CIDRs (`10.0.0.0/8`, `2001:db8::/32`; a bare address is one host) whose connections
    /// carry the client's address in `forwarded_header`.
    pub(crate) trusted_proxies: Vec<String>,
    /// `x-forwarded-for` or `forwarded` (RFC 7239).
    pub(crate) forwarded_header: String,
    pub(crate) tls_cert_file: String,
    pub(crate) tls_key_file: String,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            public_listen: "127.0.0.1:8080".into(),
            ops_listen: "127.0.0.1:9090".into(),
            drain_timeout: "10s".into(),
            public_url: String::new(),
            header_read_timeout: "10s".into(),
            max_header_bytes: "16KiB".into(),
            max_connections: 10_000,
            h2_max_concurrent_streams: 256,
            h2_keep_alive: "60s".into(),
            h2c: true,
            h2_idle_timeout: "60s".into(),
            max_connections_per_ip: 128,
            trusted_proxies: Vec::new(),
            forwarded_header: "x-forwarded-for".into(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub(crate) struct RawStorage {
    pub(crate) data_dir: String,
    /// The key-encryption key file (one key per line, 64 hex digits, the first wraps);
    /// empty means `{data_dir}/originals.kek`, generated on first start.
    pub(crate) kek_file: String,
    /// Plaintext originals of an earlier version sealed per second in the background.
    pub(crate) encrypt_per_second: u32,
}

impl Default for RawStorage {
    fn default() -> Self {
        RawStorage {
            data_dir: "./data".into(),
            kek_file: String::new(),
            encrypt_per_second: 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub(crate) struct RawOrigin {
    /// `fs` or `s3`.
    pub(crate) kind: String,
    /// Folder of the `fs` origin; empty means `{data_dir}/originals`.
    pub(crate) path: String,
    pub(crate) bucket: String,
    pub(crate) region: String,
    pub(crate) endpoint: String,
    pub(crate) path_style: bool,
    pub(crate) allow_http: bool,
    /// File with `access_key_id = ...` and `secret_access_key = ...` lines; empty means the
    /// standard `AWS_*` environment variables.
    pub(crate) credentials_file: String,
    pub(crate) prefix: String,
    pub(crate) timeout: String,
    /// S3 server-side encryption on top of imgnode's own: empty, `AES256` or `aws:kms`.
    pub(crate) sse: String,
    /// The KMS key of `sse = "aws:kms"` (empty: the bucket's default key).
    pub(crate) sse_kms_key_id: String,
}

impl Default for RawOrigin {
    fn default() -> Self {
        RawOrigin {
            kind: "fs".into(),
            path: String::new(),
            bucket: String::new(),
            region: "us-east-1".into(),
            endpoint: String::new(),
            path_style: false,
            allow_http: false,
            credentials_file: String::new(),
            prefix: String::new(),
            timeout: "10s".into(),
            sse: String::new(),
            sse_kms_key_id: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default)]
pub(crate) struct RawStore {
    /// `sqlite://PATH` (one node) or `postgres://USER@HOST/DB` (several nodes); empty means
    /// `sqlite://{data_dir}/imgnode.db`. A password is best given through the environment
    /// (`IMGNODE_STORE__URL`) or `PGPASSWORD`, not in a file others read.
    pub(crate) url: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub(crate) struct RawCache {
    /// Lifetime of a cached variant, and the `max-age` of image responses.
    pub(crate) ttl: String,
    pub(crate) memory: String,
    pub(crate) disk: String,
    /// Empty means `{data_dir}/cache`.
    pub(crate) dir: String,
    pub(crate) max_entry: String,
    /// Originals cache, used only for remote origins.
    pub(crate) originals_memory: String,
    pub(crate) metadata_entries: u64,
    pub(crate) metadata_ttl: String,
    pub(crate) negative_ttl: String,
    pub(crate) not_found_max_age: String,
    pub(crate) buster: String,
}

impl Default for RawCache {
    fn default() -> Self {
        RawCache {
            ttl: "365d".into(),
            memory: "256MiB".into(),
            disk: "10GiB".into(),
            dir: String::new(),
            max_entry: "8MiB".into(),
            originals_memory: "256MiB".into(),
            metadata_entries: 100_000,
            metadata_ttl: "60s".into(),
            negative_ttl: "10s".into(),
            not_found_max_age: "60s".into(),
            buster: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub(crate) struct RawAuth {
    /// Prefix of issued API keys.
    pub(crate) key_prefix: String,
    /// How often aggregated API key usage is written to the database.
    pub(crate) usage_flush_interval: String,
    /// Live (unrevoked, unexpired) API keys one account may hold.
    pub(crate) max_keys_per_account: u32,
    pub(crate) jwt: RawJwt,
}

/// JWT bearer tokens from an identity provider; an empty `jwks_url` turns them off.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub(crate) struct RawJwt {
    pub(crate) jwks_url: String,
    pub(crate) issuer: String,
    pub(crate) audience: String,
    pub(crate) leeway: String,
    pub(crate) account_claim: String,
    pub(crate) min_refresh_interval: String,
    pub(crate) fetch_timeout: String,
}

impl Default for RawJwt {
    fn default() -> Self {
        RawJwt {
            jwks_url: String::new(),
            issuer: String::new(),
            audience: String::new(),
            leeway: "60s".into(),
            account_claim: "account".into(),
            min_refresh_interval: "30s".into(),
            fetch_timeout: "5s".into(),
        }
    }
}

impl Default for RawAuth {
    fn default() -> Self {
        RawAuth {
            key_prefix: crate::auth::DEFAULT_KEY_PREFIX.into(),
            usage_flush_interval: "30s".into(),
            max_keys_per_account: crate::auth::DEFAULT_MAX_KEYS_PER_ACCOUNT,
            jwt: RawJwt::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default)]
pub(crate) struct RawAdmin {
    /// File holding the operator token (a systemd credential, typically). Empty disables the
    /// operator API.
    pub(crate) token_file: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub(crate) struct RawDelivery {
    pub(crate) cdn_hosts: Vec<String>,
    pub(crate) bare_paths: bool,
    pub(crate) require_signature: bool,
    pub(crate) sign_originals: bool,
    pub(crate) signing_keys_file: String,
    pub(crate) suspended_status: u16,
    pub(crate) client_renders_per_minute: u32,
    pub(crate) client_render_burst: u32,
    pub(crate) image_variants_per_hour: u32,
    pub(crate) unsigned_max_quality: u8,
    pub(crate) unsigned_max_pixels: u64,
    pub(crate) unsigned_avif_max_pixels: u64,
    pub(crate) avif_background: bool,
    pub(crate) stand_in_max_age: String,
}

impl Default for RawDelivery {
    fn default() -> Self {
        RawDelivery {
            cdn_hosts: Vec::new(),
            bare_paths: false,
            require_signature: false,
            sign_originals: true,
            signing_keys_file: String::new(),
            suspended_status: 403,
            client_renders_per_minute: 300,
            client_render_burst: 300,
            image_variants_per_hour: 100,
            unsigned_max_quality: 90,
            unsigned_max_pixels: 16_000_000,
            unsigned_avif_max_pixels: 2_000_000,
            avif_background: true,
            stand_in_max_age: "5m".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub(crate) struct RawUpload {
    pub(crate) max_bytes: String,
    pub(crate) orphan_grace: String,
    pub(crate) sweep_interval: String,
}

impl Default for RawUpload {
    fn default() -> Self {
        RawUpload {
            max_bytes: "5MiB".into(),
            orphan_grace: "1h".into(),
            sweep_interval: "1h".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub(crate) struct RawLimits {
    pub(crate) max_source_pixels: u64,
    pub(crate) max_source_bytes: String,
    pub(crate) max_output_pixels: u64,
    pub(crate) max_output_side: u32,
    pub(crate) avif_max_pixels: u64,
    pub(crate) avif_max_side: u32,
    pub(crate) jxl_max_pixels: u64,
    pub(crate) max_frames: u32,
    pub(crate) max_animation_pixels: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        let d = crate::pipeline::Limits::default();
        RawLimits {
            max_source_pixels: d.max_source_pixels,
            max_source_bytes: "50MiB".into(),
            max_output_pixels: d.max_output_pixels,
            max_output_side: d.max_output_side,
            avif_max_pixels: d.avif_max_pixels,
            avif_max_side: d.avif_max_side,
            jxl_max_pixels: d.jxl_max_pixels,
            max_frames: d.max_frames,
            max_animation_pixels: d.max_animation_pixels,
        }
    }
}

/// `encode.avif_chroma`: `420` or `444`, written as a number or a string (an environment
/// variable arrives as a number, a quoted TOML value as a string).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub(crate) enum Chroma {
    Number(u64),
    Text(String),
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub(crate) struct RawEncode {
    pub(crate) avif_speed: u8,
    pub(crate) rav1e_speed: u8,
    pub(crate) avif_encoder: String,
    pub(crate) avif_chroma: Chroma,
    pub(crate) avif_bit_depth: u8,
    pub(crate) webp_method: u8,
    pub(crate) png_compression: u8,
    pub(crate) jxl_effort: u8,
}

impl Default for RawEncode {
    fn default() -> Self {
        let d = crate::pipeline::EncodeSettings::default();
        RawEncode {
            avif_speed: d.avif_speed,
            rav1e_speed: d.rav1e_speed,
            avif_encoder: match d.avif_encoder {
                crate::pipeline::AvifEncoder::Aom => "aom",
                crate::pipeline::AvifEncoder::Rav1e => "rav1e",
            }
            .to_owned(),
            avif_chroma: Chroma::Number(match d.avif_chroma {
                crate::pipeline::AvifChroma::Yuv420 => 420,
                crate::pipeline::AvifChroma::Yuv444 => 444,
            }),
            avif_bit_depth: d.avif_bit_depth,
            webp_method: d.webp_method,
            png_compression: d.png_compression,
            jxl_effort: d.jxl_effort,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub(crate) struct RawCpu {
    /// Worker threads; 0 means one per core.
    pub(crate) threads: usize,
    /// Renders allowed to wait for a worker; beyond it `503 OVERLOADED`.
    pub(crate) queue: usize,
    /// Deadline for one render, queue wait included.
    pub(crate) transform_timeout: String,
    /// AVIF encodes running at once (each takes about a core for a long time).
    pub(crate) avif_concurrency: usize,
    /// OS niceness of render threads (0 = normal, up to 19), so cache hits preempt renders.
    pub(crate) nice: u8,
    /// Threads for blocking file I/O (the local object store, the disk cache); 0 means
    /// twice the cores, at least 4.
    pub(crate) blocking_threads: usize,
}

impl Default for RawCpu {
    fn default() -> Self {
        RawCpu {
            threads: 0,
            queue: 64,
            transform_timeout: "30s".into(),
            avif_concurrency: 1,
            nice: 10,
            blocking_threads: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub(crate) struct RawLog {
    /// A tracing filter (`info`, `imgnode=debug,info`, ...).
    pub(crate) level: String,
    /// `text` or `json`.
    pub(crate) format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub(crate) struct RawDemo {
    /// Create a `demo` account with sample photos when it does not exist: `true` always,
    /// `false` never, unset only when the public listener is on loopback.
    pub(crate) seed: Option<bool>,
}
