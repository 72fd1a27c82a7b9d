//! Validation: [`RawConfig`] (what the file and environment said) into [`Config`] (what the
//! node runs with), one function per section. Every problem is pushed to [`Problems`] and
//! validation goes on, so one run names them all; a section never reads another section's
//! raw values except the data directory its default paths live under.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;

use super::raw::{self, RawConfig};
use super::*;
use crate::pipeline::{AvifChroma, AvifEncoder, EncodeSettings, Limits};

pub(super) fn validate(raw: &RawConfig, problems: &mut Vec<String>) -> Config {
    let p = &mut Problems(problems);
    let data_dir = PathBuf::from(&raw.storage.data_dir);
    let server = server(p, &raw.server);
    let origin = origin(p, &raw.origin, &data_dir);
    let store = store(p, &raw.store, &data_dir);
    let cache = cache(p, &raw.cache, &origin, &data_dir);
    let limits = limits(p, &raw.limits);
    let encode = encode(p, &raw.encode);
    let cpu = cpu(p, &raw.cpu);
    let plans = plans(p, &raw.plans);
    let auth = auth(p, &raw.auth);
    let log = log(p, &raw.log);
    if store.url.starts_with("postgres") && raw.storage.kek_file.is_empty() {
        p.push(
            "storage.kek_file: required with a PostgreSQL store: every node must hold the same \
             key-encryption key (create one with `openssl rand -hex 32`, mode 0600)"
                .into(),
        );
    }
    let storage = StorageConfig {
        kek_file: (!raw.storage.kek_file.is_empty()).then(|| PathBuf::from(&raw.storage.kek_file)),
        encrypt_per_second: p.positive(
            "storage.encrypt_per_second",
            u64::from(raw.storage.encrypt_per_second),
        ) as u32,
    };
    Config {
        server,
        data_dir,
        storage,
        origin,
        store,
        cache,
        auth,
        admin: AdminConfig {
            token_file: (!raw.admin.token_file.is_empty())
                .then(|| PathBuf::from(&raw.admin.token_file)),
        },
        delivery: delivery(p, &raw.delivery),
        upload: UploadConfig {
            max_bytes: p.bytes("upload.max_bytes", &raw.upload.max_bytes),
            orphan_grace: p.nonzero_duration("upload.orphan_grace", &raw.upload.orphan_grace),
            sweep_interval: p.nonzero_duration("upload.sweep_interval", &raw.upload.sweep_interval),
        },
        limits,
        encode,
        cpu,
        log,
        demo_seed: raw.demo.seed,
        plans,
        retention: RetentionConfig {
            usage_logs: p.duration("retention.usage_logs", &raw.retention.usage_logs),
            audit: p.duration("retention.audit", &raw.retention.audit),
            interval: p.nonzero_duration("retention.interval", &raw.retention.interval),
        },
        edge: edge(p, &raw.edge),
        console: ConsoleConfig {
            enabled: raw.console.enabled,
            idle_timeout: p.nonzero_duration("console.idle_timeout", &raw.console.idle_timeout),
            absolute_timeout: p
                .nonzero_duration("console.absolute_timeout", &raw.console.absolute_timeout),
        },
    }
}

fn edge(p: &mut Problems<'_>, e: &raw::RawEdge) -> EdgeConfig {
    let mut tag_headers = Vec::new();
    for name in &e.tag_headers {
        match crate::edge::TagHeader::parse(name) {
            Some(h) if !tag_headers.contains(&h) => tag_headers.push(h),
            Some(_) => p.push(format!("edge.tag_headers: `{name}` is listed twice")),
            None => p.push(format!(
                "edge.tag_headers: `{name}` is not one of \"Surrogate-Key\", \"Cache-Tag\", \"Edge-Cache-Tag\""
            )),
        }
    }
    p.range("edge.purge_attempts", u64::from(e.purge_attempts), 1, 100);
    let mut purge: Vec<PurgeTarget> = Vec::new();
    for (i, raw) in e.purge.iter().enumerate() {
        let at = format!("edge.purge[{i}]");
        let Some(driver) = purge_driver(p, &at, raw) else {
            continue;
        };
        let name = if raw.name.is_empty() {
            let kind = driver.kind();
            let same = purge.iter().filter(|t| t.driver.kind() == kind).count();
            if same == 0 {
                kind.to_string()
            } else {
                format!("{kind}-{}", same + 1)
            }
        } else {
            raw.name.clone()
        };
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            p.push(format!(
                "{at}.name: `{name}` must be 1 to 64 of A-Z, a-z, 0-9, `-`, `_`"
            ));
        } else if purge.iter().any(|t| t.name == name) {
            p.push(format!(
                "{at}.name: `{name}` is used by another purge target"
            ));
        }
        purge.push(PurgeTarget { name, driver });
    }
    EdgeConfig {
        tag_headers,
        stale_while_revalidate: p
            .duration("edge.stale_while_revalidate", &e.stale_while_revalidate),
        stale_if_error: p.duration("edge.stale_if_error", &e.stale_if_error),
        purge_attempts: e.purge_attempts,
        purge_retry_base: p.nonzero_duration("edge.purge_retry_base", &e.purge_retry_base),
        purge_retry_max: p.nonzero_duration("edge.purge_retry_max", &e.purge_retry_max),
        purge_timeout: p.nonzero_duration("edge.purge_timeout", &e.purge_timeout),
        erasure_wait: p.duration("edge.erasure_wait", &e.erasure_wait),
        purge,
    }
}

/// One `[[edge.purge]]` table: its kind's fields present, the others absent, its credential
/// file readable by the node alone.
fn purge_driver(p: &mut Problems<'_>, at: &str, raw: &raw::RawPurge) -> Option<PurgeDriver> {
    let set: Vec<&str> = [
        ("urls", !raw.urls.is_empty()),
        ("header", !raw.header.is_empty()),
        ("service_id", !raw.service_id.is_empty()),
        ("zone_id", !raw.zone_id.is_empty()),
        ("token_file", !raw.token_file.is_empty()),
        ("api_base", !raw.api_base.is_empty()),
        ("soft", raw.soft),
        ("url", !raw.url.is_empty()),
        ("secret_file", !raw.secret_file.is_empty()),
    ]
    .into_iter()
    .filter_map(|(k, on)| on.then_some(k))
    .collect();
    let (allowed, required): (&[&str], &[&str]) = match raw.kind.as_str() {
        "varnish" => (&["urls", "header"], &["urls"]),
        "fastly" => (
            &["service_id", "token_file", "api_base", "soft"],
            &["service_id", "token_file"],
        ),
        "cloudflare" => (
            &["zone_id", "token_file", "api_base"],
            &["zone_id", "token_file"],
        ),
        "webhook" => (&["url", "secret_file"], &["url", "secret_file"]),
        other => {
            p.push(format!(
                "{at}.kind: `{other}` is not one of \"varnish\", \"fastly\", \"cloudflare\", \"webhook\""
            ));
            return None;
        }
    };
    let kind = raw.kind.as_str();
    let mut ok = true;
    for key in &set {
        if !allowed.contains(key) {
            p.push(format!("{at}.{key}: does not apply to kind = \"{kind}\""));
            ok = false;
        }
    }
    for key in required {
        if !set.contains(key) {
            p.push(format!("{at}.{key}: required for kind = \"{kind}\""));
            ok = false;
        }
    }
    let mut http_url = |key: &str, value: &str| {
        let parsed = reqwest::Url::parse(value);
        if !parsed
            .as_ref()
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        {
            p.push(format!(
                "{at}.{key}: `{}` is not an http(s) URL",
                redact_url(value)
            ));
            ok = false;
        }
    };
    for u in &raw.urls {
        http_url("urls", u);
    }
    if !raw.url.is_empty() {
        http_url("url", &raw.url);
    }
    if !raw.api_base.is_empty() {
        http_url("api_base", &raw.api_base);
    }
    let mut secret = |key: &str, file: &str| -> Secret {
        match read_secret_file(Path::new(file)) {
            Ok(s) => Secret(s),
            Err(e) => {
                p.push(format!("{at}.{key}: {file}: {e}"));
                Secret(String::new())
            }
        }
    };
    let driver = match kind {
        "varnish" => PurgeDriver::Varnish {
            urls: raw.urls.clone(),
            header: if raw.header.is_empty() {
                "xkey".into()
            } else {
                raw.header.clone()
            },
        },
        "fastly" => PurgeDriver::Fastly {
            service_id: raw.service_id.clone(),
            token: secret("token_file", &raw.token_file),
            api_base: api_base(&raw.api_base, "https://api.fastly.com"),
            soft: raw.soft,
        },
        "cloudflare" => PurgeDriver::Cloudflare {
            zone_id: raw.zone_id.clone(),
            token: secret("token_file", &raw.token_file),
            api_base: api_base(&raw.api_base, "https://api.cloudflare.com"),
        },
        _ => PurgeDriver::Webhook {
            url: raw.url.clone(),
            secret: secret("secret_file", &raw.secret_file),
        },
    };
    if let PurgeDriver::Varnish { header, .. } = &driver
        && HeaderName::from_bytes(header.as_bytes()).is_err()
    {
        p.push(format!("{at}.header: `{header}` is not a header name"));
        ok = false;
    }
    ok.then_some(driver)
}

fn api_base(value: &str, default: &str) -> String {
    if value.is_empty() { default } else { value }
        .trim_end_matches('/')
        .to_string()
}

/// A credential file's content without its trailing newline. Refused when empty or readable
/// by other users (a token or HMAC key anyone on the machine can read is no secret).
fn read_secret_file(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o007 != 0 {
            return Err("readable by other users: make it mode 0600 or 0400".into());
        }
    }
    let _ = meta;
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.trim().is_empty() {
        return Err("empty".into());
    }
    Ok(text.to_string())
}

fn server(p: &mut Problems<'_>, s: &raw::RawServer) -> ServerConfig {
    let server = ServerConfig {
        public_listen: p.addr("server.public_listen", &s.public_listen),
        ops_listen: p.addr("server.ops_listen", &s.ops_listen),
        drain_timeout: p.duration("server.drain_timeout", &s.drain_timeout),
        public_url: public_url(p, &s.public_url),
        header_read_timeout: p
            .nonzero_duration("server.header_read_timeout", &s.header_read_timeout),
        max_header_bytes: usize::try_from(p.bytes("server.max_header_bytes", &s.max_header_bytes))
            .unwrap_or(usize::MAX),
        max_connections: p.positive("server.max_connections", s.max_connections as u64) as usize,
        h2_max_concurrent_streams: p.positive(
            "server.h2_max_concurrent_streams",
            u64::from(s.h2_max_concurrent_streams),
        ) as u32,
        h2_keep_alive: p.nonzero_duration("server.h2_keep_alive", &s.h2_keep_alive),
        h2_idle_timeout: p.nonzero_duration("server.h2_idle_timeout", &s.h2_idle_timeout),
        max_connections_per_ip: s.max_connections_per_ip,
        trusted_proxies: trusted_proxies(p, s),
        h2c: s.h2c,
        tls: match (s.tls_cert_file.is_empty(), s.tls_key_file.is_empty()) {
            (true, true) => None,
            (false, false) => Some((
                PathBuf::from(&s.tls_cert_file),
                PathBuf::from(&s.tls_key_file),
            )),
            _ => {
                p.push("server.tls_cert_file and server.tls_key_file: set both or neither".into());
                None
            }
        },
    };
    if server.max_header_bytes < 8192 {
        p.push("server.max_header_bytes: must be at least 8KiB".into());
    }
    server
}

fn origin(p: &mut Problems<'_>, o: &raw::RawOrigin, data_dir: &Path) -> OriginConfig {
    match o.kind.as_str() {
        "fs" => OriginConfig::Fs {
            path: if o.path.is_empty() {
                data_dir.join("originals")
            } else {
                PathBuf::from(&o.path)
            },
        },
        "s3" => {
            if o.bucket.is_empty() {
                p.push("origin.bucket: required when origin.kind = \"s3\"".into());
            }
            OriginConfig::S3 {
                bucket: o.bucket.clone(),
                region: o.region.clone(),
                endpoint: o.endpoint.clone(),
                path_style: o.path_style,
                allow_http: o.allow_http,
                credentials_file: (!o.credentials_file.is_empty())
                    .then(|| PathBuf::from(&o.credentials_file)),
                prefix: o.prefix.trim_matches('/').to_string(),
                timeout: p.duration("origin.timeout", &o.timeout),
                sse: match (o.sse.as_str(), o.sse_kms_key_id.as_str()) {
                    ("", "") => None,
                    ("AES256", "") => Some(ServerSideEncryption::S3Managed),
                    ("aws:kms", key) => Some(ServerSideEncryption::Kms {
                        key_id: key.to_string(),
                    }),
                    ("" | "AES256", _) => {
                        p.push("origin.sse_kms_key_id: only with origin.sse = \"aws:kms\"".into());
                        None
                    }
                    (other, _) => {
                        p.push(format!(
                            "origin.sse: `{other}` is not one of \"AES256\", \"aws:kms\""
                        ));
                        None
                    }
                },
            }
        }
        other => {
            p.push(format!(
                "origin.kind: `{other}` is not one of \"fs\", \"s3\""
            ));
            OriginConfig::Fs {
                path: data_dir.join("originals"),
            }
        }
    }
}

fn store(p: &mut Problems<'_>, s: &raw::RawStore, data_dir: &Path) -> StoreConfig {
    let store_url = if s.url.is_empty() {
        format!("sqlite://{}", data_dir.join("imgnode.db").display())
    } else {
        s.url.clone()
    };
    if !["sqlite://", "postgres://", "postgresql://"]
        .iter()
        .any(|scheme| store_url.starts_with(scheme))
    {
        p.push(format!(
            "store.url: `{}` must start with sqlite://, postgres:// or postgresql://",
            redact_url(&store_url)
        ));
    }
    StoreConfig { url: store_url }
}

fn cache(
    p: &mut Problems<'_>,
    c: &raw::RawCache,
    origin: &OriginConfig,
    data_dir: &Path,
) -> CacheConfig {
    let remote_origin = !matches!(origin, OriginConfig::Fs { .. });
    let ttl = p.duration("cache.ttl", &c.ttl);
    if ttl < Duration::from_secs(1) {
        p.push("cache.ttl: must be at least 1s".into());
    }
    CacheConfig {
        settings: crate::cache::CacheSettings {
            ttl,
            memory_bytes: p.bytes("cache.memory", &c.memory),
            disk_bytes: p.bytes("cache.disk", &c.disk),
            dir: if c.dir.is_empty() {
                data_dir.join("cache")
            } else {
                PathBuf::from(&c.dir)
            },
            max_entry_bytes: p.bytes("cache.max_entry", &c.max_entry),
            // A local folder is its own cache (the page cache): no second copy in memory.
            // "0" turns it off (every render fetches its original).
            originals_bytes: if remote_origin && c.originals_memory.trim() != "0" {
                p.bytes("cache.originals_memory", &c.originals_memory)
            } else {
                0
            },
            metadata_entries: p.positive("cache.metadata_entries", c.metadata_entries),
            metadata_ttl: p.duration("cache.metadata_ttl", &c.metadata_ttl),
            negative_ttl: p.duration("cache.negative_ttl", &c.negative_ttl),
            buster: c.buster.clone(),
        },
        not_found_max_age: p.duration("cache.not_found_max_age", &c.not_found_max_age),
    }
}

fn limits(p: &mut Problems<'_>, l: &raw::RawLimits) -> Limits {
    Limits {
        max_source_pixels: p.positive("limits.max_source_pixels", l.max_source_pixels),
        max_source_bytes: p.bytes("limits.max_source_bytes", &l.max_source_bytes),
        max_output_pixels: p.positive("limits.max_output_pixels", l.max_output_pixels),
        max_output_side: p.positive("limits.max_output_side", u64::from(l.max_output_side)) as u32,
        avif_max_pixels: p.positive("limits.avif_max_pixels", l.avif_max_pixels),
        avif_max_side: p.positive("limits.avif_max_side", u64::from(l.avif_max_side)) as u32,
        jxl_max_pixels: p.positive("limits.jxl_max_pixels", l.jxl_max_pixels),
        max_frames: p.positive("limits.max_frames", u64::from(l.max_frames)) as u32,
        max_animation_pixels: p.positive("limits.max_animation_pixels", l.max_animation_pixels),
    }
}

fn encode(p: &mut Problems<'_>, e: &raw::RawEncode) -> EncodeSettings {
    p.range("encode.avif_speed", e.avif_speed.into(), 1, 10);
    p.range("encode.rav1e_speed", e.rav1e_speed.into(), 1, 10);
    let avif_encoder = match e.avif_encoder.as_str() {
        "aom" => AvifEncoder::Aom,
        "rav1e" => AvifEncoder::Rav1e,
        other => {
            p.push(format!(
                "encode.avif_encoder: `{other}` is not aom or rav1e"
            ));
            AvifEncoder::Aom
        }
    };
    let avif_chroma = match &e.avif_chroma {
        raw::Chroma::Number(420) => AvifChroma::Yuv420,
        raw::Chroma::Number(444) => AvifChroma::Yuv444,
        raw::Chroma::Text(t) if t == "420" => AvifChroma::Yuv420,
        raw::Chroma::Text(t) if t == "444" => AvifChroma::Yuv444,
        raw::Chroma::Number(n) => {
            p.push(format!("encode.avif_chroma: {n} is not 420 or 444"));
            AvifChroma::Yuv420
        }
        raw::Chroma::Text(t) => {
            p.push(format!("encode.avif_chroma: `{t}` is not 420 or 444"));
            AvifChroma::Yuv420
        }
    };
    if !matches!(e.avif_bit_depth, 8 | 10) {
        p.push(format!(
            "encode.avif_bit_depth: {} is not 8 or 10",
            e.avif_bit_depth
        ));
    }
    p.range("encode.webp_method", e.webp_method.into(), 0, 6);
    p.range("encode.png_compression", e.png_compression.into(), 0, 2);
    p.range("encode.jxl_effort", e.jxl_effort.into(), 1, 9);
    EncodeSettings {
        avif_speed: e.avif_speed,
        rav1e_speed: e.rav1e_speed,
        avif_encoder,
        avif_chroma,
        avif_bit_depth: e.avif_bit_depth,
        webp_method: e.webp_method,
        png_compression: e.png_compression,
        jxl_effort: e.jxl_effort,
    }
}

fn cpu(p: &mut Problems<'_>, c: &raw::RawCpu) -> CpuConfig {
    let cpu = CpuConfig {
        threads: c.threads,
        queue: c.queue,
        transform_timeout: p.duration("cpu.transform_timeout", &c.transform_timeout),
        avif_concurrency: p.positive("cpu.avif_concurrency", c.avif_concurrency as u64) as usize,
        nice: c.nice,
        blocking_threads: match c.blocking_threads {
            0 => std::thread::available_parallelism()
                .map_or(4, |n| n.get() * 2)
                .max(4),
            n => n,
        },
    };
    p.range("cpu.nice", c.nice.into(), 0, 19);
    cpu
}

fn plans(
    p: &mut Problems<'_>,
    configured: &BTreeMap<String, raw::RawPlan>,
) -> BTreeMap<String, Plan> {
    let mut plans = BTreeMap::new();
    let mut raw_plans = builtin_plans();
    raw_plans.extend(configured.clone());
    for (name, plan) in &raw_plans {
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            p.push(format!("plans.{name}: plan names are [a-z0-9_-]{{1,64}}"));
        }
        if plan.requests_per_minute == 0 {
            p.push(format!(
                "plans.{name}.requests_per_minute: must be greater than 0"
            ));
        }
        plans.insert(name.clone(), Plan::from_raw(plan));
    }
    plans
}

fn auth(p: &mut Problems<'_>, a: &raw::RawAuth) -> AuthConfig {
    let auth_prefix = a.key_prefix.clone();
    if auth_prefix.is_empty()
        || auth_prefix.len() > 32
        || !auth_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        p.push("auth.key_prefix: must be 1 to 32 of A-Z, a-z, 0-9, `_`, `-`".into());
    }
    let usage_flush = p.duration("auth.usage_flush_interval", &a.usage_flush_interval);
    if usage_flush.is_zero() {
        p.push("auth.usage_flush_interval: must be greater than 0".into());
    }
    AuthConfig {
        key_prefix: auth_prefix,
        usage_flush_interval: usage_flush,
        max_keys_per_account: p.positive(
            "auth.max_keys_per_account",
            u64::from(a.max_keys_per_account),
        ) as u32,
        jwt: jwt_config(p, &a.jwt),
    }
}

fn log(p: &mut Problems<'_>, l: &raw::RawLog) -> LogConfig {
    let json = match l.format.as_str() {
        "text" => false,
        "json" => true,
        other => {
            p.push(format!(
                "log.format: `{other}` is not one of \"text\", \"json\""
            ));
            false
        }
    };
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&l.level) {
        p.push(format!("log.level: {e}"));
    }
    LogConfig {
        level: l.level.clone(),
        json,
    }
}

fn delivery(p: &mut Problems<'_>, d: &raw::RawDelivery) -> DeliveryConfig {
    DeliveryConfig {
        cdn_hosts: d.cdn_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        bare_paths: d.bare_paths,
        require_signature: d.require_signature,
        sign_originals: d.sign_originals,
        suspended_status: match d.suspended_status {
            s @ (403 | 404) => s,
            other => {
                p.push(format!(
                    "delivery.suspended_status: {other} is not 403 or 404"
                ));
                403
            }
        },
        signing_keys_file: (!d.signing_keys_file.is_empty())
            .then(|| PathBuf::from(&d.signing_keys_file)),
        avif_background: d.avif_background,
        stand_in_max_age: p.duration("delivery.stand_in_max_age", &d.stand_in_max_age),
        budgets: {
            if d.client_renders_per_minute > 0 {
                p.range(
                    "delivery.client_render_burst",
                    u64::from(d.client_render_burst),
                    1,
                    1_000_000,
                );
            }
            p.range(
                "delivery.unsigned_max_quality",
                u64::from(d.unsigned_max_quality),
                1,
                100,
            );
            RenderBudgets {
                client_per_minute: d.client_renders_per_minute,
                client_burst: d.client_render_burst,
                image_variants_per_hour: d.image_variants_per_hour,
                unsigned_max_quality: d.unsigned_max_quality,
                unsigned_max_pixels: p
                    .positive("delivery.unsigned_max_pixels", d.unsigned_max_pixels),
                unsigned_avif_max_pixels: p.positive(
                    "delivery.unsigned_avif_max_pixels",
                    d.unsigned_avif_max_pixels,
                ),
            }
        },
    }
}

fn jwt_config(p: &mut Problems<'_>, raw: &raw::RawJwt) -> Option<crate::auth::jwt::JwtConfig> {
    if raw.jwks_url.is_empty() {
        return None;
    }
    for (key, value) in [("issuer", &raw.issuer), ("audience", &raw.audience)] {
        if value.is_empty() {
            p.push(format!(
                "auth.jwt.{key}: required when auth.jwt.jwks_url is set"
            ));
        }
    }
    if raw.account_claim.is_empty() {
        p.push("auth.jwt.account_claim: must not be empty".into());
    }
    let config = crate::auth::jwt::JwtConfig {
        jwks_url: raw.jwks_url.clone(),
        issuer: raw.issuer.clone(),
        audience: raw.audience.clone(),
        leeway: p.duration("auth.jwt.leeway", &raw.leeway),
        account_claim: raw.account_claim.clone(),
        min_refresh_interval: p
            .duration("auth.jwt.min_refresh_interval", &raw.min_refresh_interval),
        fetch_timeout: p.nonzero_duration("auth.jwt.fetch_timeout", &raw.fetch_timeout),
    };
    if let Err(e) = crate::auth::jwt::JwtVerifier::new(config.clone()) {
        p.push(format!("auth.jwt: {e}"));
    }
    Some(config)
}

/// `server.trusted_proxies` (every bad entry named) and `server.forwarded_header`.
fn trusted_proxies(p: &mut Problems<'_>, raw: &raw::RawServer) -> proxies::TrustedProxies {
    use proxies::{ForwardedHeader, TrustedProxies, parse_net};
    let mut nets = Vec::new();
    for entry in &raw.trusted_proxies {
        match parse_net(entry) {
            Some(net) => nets.push(net),
            None => p.push(format!(
                "server.trusted_proxies: `{entry}` is not a network like \"10.0.0.0/8\", \
                 \"2001:db8::/32\" or an address"
            )),
        }
    }
    let header = ForwardedHeader::parse(&raw.forwarded_header).unwrap_or_else(|| {
        p.push(format!(
            "server.forwarded_header: `{}` is not one of \"x-forwarded-for\", \"forwarded\"",
            raw.forwarded_header
        ));
        ForwardedHeader::XForwardedFor
    });
    TrustedProxies { nets, header }
}

/// `server.public_url`: empty, or `http(s)://host[:port][/prefix]` without a trailing slash.
fn public_url(p: &mut Problems<'_>, value: &str) -> Option<String> {
    let value = value.trim_end_matches('/');
    if value.is_empty() {
        return None;
    }
    let ok = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
        .is_some_and(|rest| {
            !rest.is_empty() && !rest.contains(['?', '#', ' ']) && !rest.starts_with('/')
        });
    if !ok {
        p.push(format!(
            "server.public_url: `{value}` is not a URL like \"https://img.example.com\""
        ));
    }
    Some(value.to_string())
}

/// Hides a password in a `scheme://user:password@host` URL before it is printed.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

struct Problems<'a>(&'a mut Vec<String>);

impl Problems<'_> {
    fn push(&mut self, problem: String) {
        self.0.push(problem);
    }

    fn addr(&mut self, key: &str, value: &str) -> SocketAddr {
        value.parse().unwrap_or_else(|_| {
            self.push(format!(
                "{key}: `{value}` is not an address like \"127.0.0.1:8080\""
            ));
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    }

    fn duration(&mut self, key: &str, value: &str) -> Duration {
        humantime::parse_duration(value).unwrap_or_else(|_| {
            self.push(format!(
                "{key}: `{value}` is not a duration like \"30s\", \"5m\", \"365d\""
            ));
            Duration::ZERO
        })
    }

    fn nonzero_duration(&mut self, key: &str, value: &str) -> Duration {
        let d = self.duration(key, value);
        if d.is_zero() {
            self.push(format!("{key}: must be longer than 0s"));
            return Duration::from_secs(1);
        }
        d
    }

    fn bytes(&mut self, key: &str, value: &str) -> u64 {
        match value.parse::<bytesize::ByteSize>() {
            Ok(b) if b.as_u64() > 0 => b.as_u64(),
            _ => {
                self.push(format!(
                    "{key}: `{value}` is not a size like \"512MiB\", \"10GiB\""
                ));
                0
            }
        }
    }

    fn positive(&mut self, key: &str, value: u64) -> u64 {
        if value == 0 {
            self.push(format!("{key}: must be greater than 0"));
        }
        value
    }

    fn range(&mut self, key: &str, value: u64, min: u64, max: u64) {
        if !(min..=max).contains(&value) {
            self.push(format!("{key}: {value} is not in {min}..={max}"));
        }
    }
}
