//! The delivery hot path: an image URL in, image bytes (or a JSON error) out.
//!
//! Owns the URL grammar (`url`), format negotiation, the order of lookups and the response
//! headers. Runs on async workers, so it does no CPU work itself: rendering goes through
//! `cpu::Pool`, bytes come from `origin`, metadata from `store`. Must never decode, resize or
//! run SQL directly.

mod budget;
mod negotiate;
pub(crate) mod preset;
pub mod url;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{
    CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LAST_MODIFIED, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};

use std::sync::Arc;

use crate::cache::flight::Role;
use crate::cache::variants::{Tier, VariantKey};
use crate::config::Plan;
use crate::cpu::CpuError;
use crate::edge::TagSource;
use crate::error::HttpError;
use crate::pipeline::{Fit, OutputFormat, StageTimings, Transform};
use crate::render::{self, RenderError, RenderJob};
use crate::server::{Body, empty, full, response::NOSNIFF};
use crate::signing::Refusal;
use crate::state::AppState;
use crate::store::{Account, AccountSettings, AccountStatus, ImageRecord, Visibility};
use crate::usage::{self, Quota};
use url::{TransformDefaults, TransformParams};

/// How the bytes of a response were obtained (the `X-Cache` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheStatus {
    HitMemory,
    HitDisk,
    Miss,
    Coalesced,
    Original,
}

impl CacheStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CacheStatus::HitMemory => "HIT-MEMORY",
            CacheStatus::HitDisk => "HIT-DISK",
            CacheStatus::Miss => "MISS",
            CacheStatus::Coalesced => "COALESCED",
            CacheStatus::Original => "ORIGINAL",
        }
    }
}

/// A parsed request: the path part after the route prefix, and what the headers say.
pub(crate) struct DeliveryRequest<'a> {
    /// `{account}/{path}.{ext}`, still percent-encoded.
    pub(crate) target: &'a str,
    pub(crate) query: &'a str,
    pub(crate) method: &'a Method,
    pub(crate) headers: &'a HeaderMap,
    /// The client's address (from a trusted proxy's forwarding headers, or the peer), for
    /// the per-client render budget.
    pub(crate) client: std::net::IpAddr,
}

/// Answers one image request: [`resolve`] decides what to answer, then the original's bytes
/// or a variant (cached or rendered) are served. Errors are returned for the router to render.
pub(crate) async fn handle(
    state: &Arc<AppState>,
    req: DeliveryRequest<'_>,
) -> Result<(Response<Body>, CacheStatus), HttpError> {
    let (resolved, answer) = resolve(state, &req).await?;
    match answer {
        Answer::Original => serve_original(state, &req, &resolved).await,
        Answer::Variant(transform) => serve_variant(state, &req, &resolved, transform).await,
    }
}

/// What a request resolved to before any byte is fetched: who asks for which image, in which
/// format (the [`Answer`] says whether that is the original's bytes or a rendered variant).
struct Resolved<'a> {
    signed: bool,
    account: Arc<Account>,
    plan: &'a Plan,
    image: Arc<ImageRecord>,
    /// The preset the URL named, for its render count.
    preset_id: Option<String>,
    /// The format the URL asks for, before negotiation.
    ext: OutputFormat,
    /// The format to answer with (negotiated when `negotiated`).
    output: OutputFormat,
    negotiated: bool,
    /// For a private image, when its signature expires (see [`ResponseMeta::private_until`]).
    private_until: Option<i64>,
    /// The account's settings (`delivery_formats` decides a stand-in's format).
    settings: Arc<AccountSettings>,
    /// The path's stem the URL named, and the preset it named (for the cache tags).
    stem: String,
    preset: Option<String>,
}

/// What to answer with.
enum Answer {
    /// The stored bytes, untouched.
    Original,
    /// A rendered variant: the transform after defaults, size policy and budgets.
    Variant(Transform),
}

impl Resolved<'_> {
    fn meta(&self) -> ResponseMeta<'_> {
        ResponseMeta {
            format: self.output,
            etag: String::new(),
            image: &self.image,
            vary_accept: self.negotiated,
            private_until: self.private_until,
            stand_in: false,
            cache: CacheStatus::Original,
            timing: None,
            tags: TagSource {
                account: &self.account.name,
                image_id: &self.image.id,
                stem: &self.stem,
                preset: self.preset.as_deref(),
            },
        }
    }
}

/// The URL checked (signature, account status, bandwidth quota, visibility) and turned into
/// what to answer. Reads metadata only (through the metadata cache); fetches no bytes.
async fn resolve<'a>(
    state: &'a AppState,
    req: &DeliveryRequest<'_>,
) -> Result<(Resolved<'a>, Answer), HttpError> {
    let mut url = url::DeliveryUrl::parse(req.target, req.query)?;
    let signed = check_signature(state, &url)?;

    let caches = &state.caches;
    let account = caches
        .meta
        .account(&state.store, &url.account)
        .await?
        .ok_or_else(HttpError::not_found)?;
    match account.status {
        AccountStatus::Active => {}
        AccountStatus::Suspended if state.config.delivery.suspended_status == 404 => {
            return Err(HttpError::not_found());
        }
        AccountStatus::Suspended => return Err(HttpError::forbidden("account suspended")),
        // Being erased: already gone as far as delivery is concerned.
        AccountStatus::Erasing => return Err(HttpError::not_found()),
    }
    // The monthly bandwidth quota, before any byte is served (cache hits and originals too).
    // `current` reads the database once per account and month, then memory only; plans
    // without the limit skip it (a global lock and a date format on every hit).
    let plan = state.plan(&account.plan);
    if plan.max_bandwidth_per_month.is_some() {
        let used = state.usage.current(&state.store, &account.name).await?;
        usage::check(plan, Quota::Bandwidth, &used)?;
    }
    let image = caches
        .meta
        .image(&state.store, &account.name, &url.path)
        .await?
        .ok_or_else(HttpError::not_found)?;
    if image.visibility == Visibility::Private && !signed {
        // Exactly the answer of a missing image (status, body, cache headers), so an unsigned
        // probe cannot tell a private image from no image. A wrong or expired signature is a
        // 403 before any lookup, whether or not the image exists.
        return Err(HttpError::not_found());
    }

    let (mut params, preset_output, preset_id) = match &url.query.params.preset {
        None => (url.query.params.clone(), None, None),
        Some(name) => {
            let preset = caches
                .meta
                .preset(&state.store, &account.name, name)
                .await?
                .ok_or_else(|| HttpError::validation(format!("unknown preset `{name}`")))?;
            let stored: serde_json::Value = serde_json::from_str(&preset.params)
                .map_err(|e| HttpError::internal(format!("preset {}: {e}", preset.id)))?;
            let values = preset::parse(&stored)
                .map_err(|e| HttpError::internal(format!("preset {}: {e}", preset.id)))?;
            (
                values.params.overlay(&url.query.params),
                values.output,
                Some(preset.id.clone()),
            )
        }
    };
    params.preset = None;
    // The output format, most specific first: the query's `format=webp` (an alias of the
    // extension); a preset's format, when the URL does not ask for another one (its extension
    // is the original's own, or it says `format=auto`); the extension.
    let own_extension = image.format.as_output() == Some(url.ext);
    let ext = match (url.query.params.format, preset_output) {
        (Some(format), _) => format,
        (None, Some(format)) if own_extension || url.query.params.format_auto => {
            params.format_auto = false;
            format
        }
        _ => url.ext,
    };

    let settings = caches.meta.settings(&state.store, &account.name).await?;
    let negotiated = params.format_auto;
    let mut output = if negotiated {
        negotiate::best(req.headers, ext, &settings.delivery_formats)
    } else {
        ext
    };

    // The original's own format and nothing to do: its bytes, untouched (X-Cache: ORIGINAL),
    // unless they exceed the account's default maximum size: then, unsigned and without
    // `serve_originals`, the URL is rendered within it like any URL without a size.
    let transforms = !TransformParams {
        format_auto: false,
        format: None,
        ..params.clone()
    }
    .is_empty();
    let bare = !transforms && image.format.as_output() == Some(output);
    let within_bounds = settings.default_max_width.is_none_or(|w| image.width <= w)
        && settings
            .default_max_height
            .is_none_or(|h| image.height <= h);
    let passthrough = bare && (signed || settings.serve_originals || within_bounds);
    if state.config.delivery.require_signature && !signed && !bare {
        // A bare format conversion (`photo.avif` of a JPEG) is a render like any other.
        return Err(HttpError::forbidden(SIGNATURE_REQUIRED));
    }
    let private_until = (image.visibility == Visibility::Private).then(|| {
        url.query
            .expires
            .unwrap_or_else(|| crate::store::now_unix() + PRIVATE_MAX_AGE)
    });
    let answer = if passthrough {
        Answer::Original
    } else {
        let limits = &state.config.limits;
        let defaults = defaults_of(&settings);
        let mut transform = params.resolve(&defaults, limits);
        let source = (image.width, image.height);
        budget::clamp_dpr(source, &params, &defaults, &mut transform, limits);
        budget::apply_size_policy(&mut transform, &settings)?;
        let budgets = &state.config.delivery.budgets;
        if !signed {
            transform.quality = transform.quality.min(budgets.unsigned_max_quality);
            if negotiated
                && output == OutputFormat::Avif
                && budget::output_pixels(source, &transform, limits)
                    > budgets.unsigned_avif_max_pixels
            {
                output = negotiate::best_without_avif(req.headers, ext, &settings.delivery_formats);
            }
            let max_pixels = match output {
                OutputFormat::Avif => budgets.unsigned_avif_max_pixels,
                _ => budgets.unsigned_max_pixels,
            };
            budget::fit_pixels(source, &mut transform, limits, max_pixels);
        }
        Answer::Variant(transform)
    };
    let resolved = Resolved {
        // Moved, not copied: the URL is not read again.
        stem: std::mem::take(&mut url.path),
        preset: url.query.params.preset.take(),
        signed,
        account,
        plan,
        image,
        preset_id,
        ext,
        output,
        negotiated,
        private_until,
        settings,
    };
    Ok((resolved, answer))
}

/// The original's own bytes (X-Cache: ORIGINAL), or a 304 without fetching them.
async fn serve_original(
    state: &AppState,
    req: &DeliveryRequest<'_>,
    resolved: &Resolved<'_>,
) -> Result<(Response<Body>, CacheStatus), HttpError> {
    let mut meta = resolved.meta();
    let image = &resolved.image;
    let scope = crate::cache::scope(&resolved.account.name, &image.hash);
    // "original-nometa": answered without the metadata of `original_bytes` (a new ETag, so
    // nothing cached under the old one, with its GPS, is revalidated as current).
    let key = state.caches.variant_key(&scope, "", "original-nometa");
    meta.etag = etag_of(&key);
    // Revalidation needs no bytes at all: the ETag is derived from the request alone.
    if not_modified(req.headers, &meta.etag) {
        return Ok((
            meta.build(state, StatusCode::NOT_MODIFIED, None),
            meta.cache,
        ));
    }
    let started = Instant::now();
    let bytes = original_bytes(state, image, &scope, key).await?;
    meta.timing = Some((started.elapsed(), StageTimings::default()));
    let head_only = req.method == Method::HEAD;
    Ok((meta.respond(state, bytes, head_only), meta.cache))
}

/// The bytes of an original as the node answers them: a JPEG without its metadata (GPS,
/// device, XMP, IPTC, comments; `pipeline::jpeg_without_metadata`, a bounded byte walk done
/// here, not on the render pool, so originals are answered when the pool is full), kept in
/// the variant cache under `key` like a render; other formats as stored.
async fn original_bytes(
    state: &AppState,
    image: &ImageRecord,
    scope: &str,
    key: VariantKey,
) -> Result<Bytes, HttpError> {
    if image.format != crate::pipeline::SourceFormat::Jpeg {
        return Ok(render::fetch_original(state, &image.account, &image.hash).await?);
    }
    let caches = &state.caches;
    if let Some((bytes, _)) = caches.rendered(&state.store, scope, &key).await? {
        return Ok(bytes);
    }
    let stored = render::fetch_original(state, &image.account, &image.hash).await?;
    let bytes = crate::pipeline::jpeg_without_metadata(&stored).map_or(stored, Bytes::from);
    let variant = crate::cache::variants::Variant {
        bytes: bytes.clone(),
        media_type: OutputFormat::Jpeg.media_type(),
        stored_at: crate::store::now_unix().max(0) as u64,
    };
    caches
        .insert_rendered(&state.store, scope, key, variant)
        .await?;
    Ok(bytes)
}

/// A rendered variant: from the variant cache, else rendered once (single flight) within
/// the client's, the image's and the month's budgets; for `format=auto` an AVIF that is not
/// cached yet may be answered by a stand-in while it renders in the background.
async fn serve_variant(
    state: &Arc<AppState>,
    req: &DeliveryRequest<'_>,
    resolved: &Resolved<'_>,
    transform: Transform,
) -> Result<(Response<Body>, CacheStatus), HttpError> {
    let caches = &state.caches;
    let head_only = req.method == Method::HEAD;
    let (account, image, plan) = (&resolved.account, &resolved.image, resolved.plan);
    let mut output = resolved.output;
    let mut meta = resolved.meta();
    let canonical = url::canonical(&transform);
    let scope = crate::cache::scope(&account.name, &image.hash);
    // The variant to answer with: the negotiated one, or (once) a WebP in its place.
    let mut follow_up: Option<(VariantKey, Transform)> = None;
    let background = |(key, transform): (VariantKey, Transform)| {
        let job = Background {
            client: req.client,
            signed: resolved.signed,
            account: account.name.clone(),
            plan: plan.clone(),
            hash: image.hash.clone(),
            scope: scope.clone(),
            transform,
            key,
        };
        background_avif(state, job)
    };
    let key = loop {
        let key = caches.variant_key(&scope, &canonical, output.extension());
        meta.format = output;
        meta.etag = etag_of(&key);
        // Revalidation needs no bytes at all: the ETag is derived from the request alone.
        if not_modified(req.headers, &meta.etag) {
            return Ok((
                meta.build(state, StatusCode::NOT_MODIFIED, None),
                meta.cache,
            ));
        }
        if let Some((bytes, tier)) = caches.rendered(&state.store, &scope, &key).await? {
            meta.cache = match tier {
                Tier::Memory => CacheStatus::HitMemory,
                Tier::Disk => CacheStatus::HitDisk,
            };
            if let Some(job) = follow_up {
                background(job).await;
            }
            return Ok((meta.respond(state, bytes, head_only), meta.cache));
        }
        let in_background = state.config.delivery.avif_background;
        if resolved.negotiated
            && output == OutputFormat::Avif
            && (in_background || state.cpu.avif_busy())
        {
            // Not cached yet: the best fast format now, briefly cacheable, rather than a wait
            // for an AVIF encode (about three times a WebP's CPU); the AVIF follows in the background
            // when the pool is idle. Without background encodes this happens only while every
            // AVIF lane is taken, so one tenant's AVIF traffic cannot starve another's pages.
            if in_background {
                // Started once the stand-in is answered: the visitor's answer comes first
                // (budgets included).
                follow_up = Some((key, transform.clone()));
            }
            output = negotiate::best_without_avif(
                req.headers,
                resolved.ext,
                &resolved.settings.delivery_formats,
            );
            meta.stand_in = true;
            state.metrics.avif_fallbacks_total.inc();
            continue;
        }
        break key;
    };

    // A new render: what one client, and every client of one image, may cause is bounded
    // before anything is spent or counted against the account.
    let cost = budget::render_cost(image.frames, output, &transform);
    budget::take(
        state,
        "client",
        state.rate_limits.client_render(req.client, cost),
        "too many new renders from this address; cached images are not limited",
    )?;
    if !resolved.signed {
        budget::take(
            state,
            "image",
            state.rate_limits.image_variant(&scope),
            "too many new sizes of this image in the last hour; use sizes already rendered or sign the URL",
        )?;
    }
    // Renders count against the monthly quota; cached variants above are served regardless.
    let used = state.usage.current(&state.store, &account.name).await?;
    usage::check(plan, Quota::Transformations, &used)?;
    let (outcome, role) = {
        let owned = state.clone();
        let hash = image.hash.clone();
        let scope = scope.clone();
        let account = account.name.clone();
        state
            .flights
            .run(key, move || {
                let job = RenderJob {
                    account,
                    hash,
                    scope,
                    transform,
                    output,
                    key,
                    background: false,
                };
                render::render_and_store(owned, job)
            })
            .await
    };
    let outcome = outcome?;
    if role == Role::Leader {
        state
            .usage
            .record(&account.name, |u| u.transformations += 1);
        if let Some(id) = &resolved.preset_id {
            state.count_preset_render(id);
        }
    }
    meta.cache = match role {
        Role::Leader => CacheStatus::Miss,
        Role::Follower => {
            state.metrics.coalesced_total.inc();
            CacheStatus::Coalesced
        }
    };
    if role == Role::Leader {
        meta.timing = Some(outcome.timing);
    }
    if let Some(job) = follow_up {
        background(job).await;
    }
    Ok((
        meta.respond(state, outcome.variant.bytes, head_only),
        meta.cache,
    ))
}

const SIGNATURE_REQUIRED: &str = "a valid, unexpired signature is required";

/// Whether the URL carries a valid signature. A signature that is present but wrong or
/// expired is a 403 before any lookup (so it tells nothing about the image); a missing one is
/// a 403 only when `delivery.require_signature` asks for it.
fn check_signature(state: &AppState, url: &url::DeliveryUrl) -> Result<bool, HttpError> {
    let delivery = &state.config.delivery;
    let now = crate::store::now_unix();
    // The message is built only for a URL that carries a signature (most do not).
    let verdict = match url.query.signature.as_deref() {
        None => Err(Refusal::Missing),
        Some(sig) => {
            state
                .signing
                .verify(&url.signing_message(), Some(sig), url.query.expires, now)
        }
    };
    match verdict {
        Ok(()) => Ok(true),
        Err(Refusal::Missing) => {
            let needed = delivery.require_signature
                && (delivery.sign_originals || !url.query.params.is_empty());
            if needed {
                Err(HttpError::forbidden(SIGNATURE_REQUIRED))
            } else {
                Ok(false)
            }
        }
        Err(Refusal::Expired | Refusal::Invalid) => Err(HttpError::forbidden(SIGNATURE_REQUIRED)),
    }
}

/// The account's delivery defaults: quality, fit and maximum size for URLs that do not set
/// them. They change the resolved transform, so they are part of the cache key.
fn defaults_of(settings: &AccountSettings) -> TransformDefaults {
    let fit = match settings.default_fit_mode.as_str() {
        "contain" => Fit::Contain,
        "fill" => Fit::Fill,
        "scale-down" => Fit::ScaleDown,
        _ => Fit::Cover,
    };
    TransformDefaults {
        quality: settings.default_quality.clamp(1, 100),
        fit,
        max_width: settings.default_max_width,
        max_height: settings.default_max_height,
    }
}

/// What a background AVIF encode needs from the request that asked for it.
struct Background {
    client: std::net::IpAddr,
    signed: bool,
    account: String,
    plan: crate::config::Plan,
    hash: String,
    scope: String,
    transform: Transform,
    key: VariantKey,
}

/// Starts the AVIF behind a stand-in answer, if the same bounds as a foreground render allow
/// it (the client's and, unsigned, the image's render budgets; the month's transformations)
/// and the pool is idle (`JobClass::Background`). Never waits and never queues: a refusal is
/// counted as `dropped`, and a later request for the URL tries again. One encode per variant
/// at a time (the render flights); once stored, the URL answers AVIF with the full TTL.
async fn background_avif(state: &Arc<AppState>, job: Background) {
    let dropped = || {
        state
            .metrics
            .avif_background_total
            .with_label_values(&["dropped"])
            .inc();
    };
    if state.flights.contains(&job.key) {
        return;
    }
    let allowed = budget::take(
        state,
        "client",
        state.rate_limits.client_render(job.client, 1),
        "",
    )
    .and_then(|()| {
        if job.signed {
            return Ok(());
        }
        budget::take(
            state,
            "image",
            state.rate_limits.image_variant(&job.scope),
            "",
        )
    });
    let within_quota = match state.usage.current(&state.store, &job.account).await {
        Ok(used) => usage::check(&job.plan, Quota::Transformations, &used).is_ok(),
        Err(_) => false,
    };
    if allowed.is_err() || !within_quota {
        dropped();
        return;
    }
    let state = state.clone();
    let Background {
        account,
        hash,
        scope,
        transform,
        key,
        ..
    } = job;
    tokio::spawn(async move {
        let owned = state.clone();
        let job_account = account.clone();
        let (outcome, role) = state
            .flights
            .run(key, move || {
                let job = RenderJob {
                    account: job_account,
                    hash,
                    scope,
                    transform,
                    output: OutputFormat::Avif,
                    key,
                    background: true,
                };
                render::render_and_store(owned, job)
            })
            .await;
        let label = match &outcome {
            Ok(_) => "stored",
            Err(RenderError::Cpu(CpuError::Overloaded { .. })) => "dropped",
            Err(_) => "failed",
        };
        if outcome.is_ok() && role == Role::Leader {
            state.usage.record(&account, |u| u.transformations += 1);
        }
        state
            .metrics
            .avif_background_total
            .with_label_values(&[label])
            .inc();
    });
}

/// A strong ETag: the variant key in hex (128 bits of SHA-256 over the original's hash, the
/// canonical transform, the output format and the buster).
fn etag_of(key: &VariantKey) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut etag = String::with_capacity(2 + 2 * key.0.len());
    etag.push('"');
    for b in key.0 {
        etag.push(char::from(HEX[usize::from(b >> 4)]));
        etag.push(char::from(HEX[usize::from(b & 15)]));
    }
    etag.push('"');
    etag
}

/// `If-None-Match` uses the weak comparison (RFC 9110 §13.1.2): `W/` prefixes are ignored.
fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

/// Browser cache lifetime of a private image fetched with a signature that has no expiry.
const PRIVATE_MAX_AGE: i64 = 3600;

struct ResponseMeta<'a> {
    format: OutputFormat,
    etag: String,
    image: &'a ImageRecord,
    vary_accept: bool,
    /// For a private image, when its signature expires: only the client may cache it, and no
    /// longer than that (never a shared cache or CDN).
    private_until: Option<i64>,
    /// A WebP answered because every AVIF lane was busy: shared caches keep it briefly, so
    /// AVIF-capable clients get the AVIF once the lanes are free.
    stand_in: bool,
    cache: CacheStatus,
    /// Fetch duration and the render's stage durations, on a miss.
    timing: Option<(Duration, StageTimings)>,
    tags: TagSource<'a>,
}

const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

type Reused = std::cell::RefCell<Option<(u64, HeaderValue)>>;

thread_local! {
    /// The last `Cache-Control: public` value built on this thread, by max-age.
    static PUBLIC_CACHE_CONTROL: Reused = const { std::cell::RefCell::new(None) };
    /// The last `Last-Modified` value built on this thread, by unix second.
    static LAST_MODIFIED_VALUE: Reused = const { std::cell::RefCell::new(None) };
}

/// The header value for `key`: the one `slot` holds when it was built for the same key (a
/// clone shares its bytes), else `make`'s, kept for the next answer. Hits of one image repeat
/// the same two values; building them is most of a hit's header work.
fn reused(
    slot: &'static std::thread::LocalKey<Reused>,
    key: u64,
    make: impl FnOnce() -> String,
) -> Option<HeaderValue> {
    slot.with_borrow_mut(|last| {
        if let Some((k, v)) = last
            && *k == key
        {
            return Some(v.clone());
        }
        let value = HeaderValue::from_str(&make()).ok()?;
        *last = Some((key, value.clone()));
        Some(value)
    })
}

impl ResponseMeta<'_> {
    /// A 200 with `bytes` (or only their length, for HEAD); delivered bytes are metered.
    fn respond(&self, state: &AppState, bytes: Bytes, head_only: bool) -> Response<Body> {
        let len = bytes.len();
        if !head_only {
            state
                .usage
                .record(&self.image.account, |u| u.bandwidth_bytes += len as u64);
        }
        let mut res = self.build(state, StatusCode::OK, (!head_only).then_some(bytes));
        res.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(len));
        res
    }

    fn build(&self, state: &AppState, status: StatusCode, body: Option<Bytes>) -> Response<Body> {
        let mut res = Response::new(body.map_or_else(empty, full));
        *res.status_mut() = status;
        let h = res.headers_mut();
        // Room for every header below and the envelope's, so the map never regrows.
        h.reserve(16);
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(self.format.media_type()),
        );
        let mut max_age = state.config.cache.http_max_age().as_secs();
        if self.stand_in {
            max_age = max_age.min(state.config.delivery.stand_in_max_age.as_secs());
        }
        let edge = &state.config.edge;
        let stale = (
            edge.stale_while_revalidate.as_secs(),
            edge.stale_if_error.as_secs(),
        );
        let cache_control = match self.private_until {
            None if stale == (0, 0) => reused(&PUBLIC_CACHE_CONTROL, max_age, || {
                format!("public, max-age={max_age}")
            }),
            None => {
                let mut value = format!("public, max-age={max_age}");
                if stale.0 > 0 {
                    value.push_str(&format!(", stale-while-revalidate={}", stale.0));
                }
                if stale.1 > 0 {
                    value.push_str(&format!(", stale-if-error={}", stale.1));
                }
                HeaderValue::from_str(&value).ok()
            }
            Some(until) => {
                let left = until.saturating_sub(crate::store::now_unix()).max(0) as u64;
                HeaderValue::from_str(&format!("private, max-age={}", left.min(max_age))).ok()
            }
        };
        if let Some(v) = cache_control {
            h.insert(CACHE_CONTROL, v);
        }
        if let Ok(v) = HeaderValue::from_str(&self.etag) {
            h.insert(ETAG, v);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let uploaded = (self.image.uploaded_at.max(0) as u64).min(now);
        if let Some(v) = reused(&LAST_MODIFIED_VALUE, uploaded, || {
            httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(uploaded))
        }) {
            h.insert(LAST_MODIFIED, v);
        }
        if self.vary_accept {
            h.insert(VARY, HeaderValue::from_static("Accept"));
        }
        crate::edge::tags::insert_headers(self.tags, &edge.tag_headers, h);
        h.insert(X_CACHE, HeaderValue::from_static(self.cache.as_str()));
        h.insert(NOSNIFF.0, HeaderValue::from_static(NOSNIFF.1));
        if let Some((fetch, t)) = &self.timing {
            let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
            let value = format!(
                "fetch;dur={:.2}, decode;dur={:.2}, resize;dur={:.2}, effects;dur={:.2}, encode;dur={:.2}",
                ms(fetch),
                ms(&t.decode),
                ms(&t.resize),
                ms(&t.effects),
                ms(&t.encode)
            );
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(SERVER_TIMING, v);
            }
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_strong_and_quoted() {
        let a = etag_of(&crate::cache::variant_key("h", "w=100", "webp", ""));
        assert!(
            a.starts_with('"') && a.ends_with('"') && a.len() == 34,
            "{a}"
        );
    }

    #[test]
    fn if_none_match_uses_weak_comparison_and_lists() {
        let mut h = HeaderMap::new();
        h.insert(IF_NONE_MATCH, HeaderValue::from_static("\"x\", W/\"abc\""));
        assert!(not_modified(&h, "\"abc\""));
        assert!(!not_modified(&h, "\"abd\""));
        h.insert(IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(not_modified(&h, "\"anything\""));
    }
}
