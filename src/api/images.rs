//! Images of the tenant API: upload (streamed multipart), folder listing, search, metadata,
//! delete, path delete, visibility and signed URLs, in img-src's shapes.
//!
//! Deleting means gone: a delete answers only after the image's metadata is removed, its path
//! lookups are invalidated and its cached variants purged (and its original deleted when no
//! account references the bytes any more).

use std::collections::BTreeMap;

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Principal;
use crate::config::Feature;
use crate::error::{ErrorCode, HttpError};
use crate::ingest::{IngestError, Original, path_stem};
use crate::pipeline::{self, PipelineError, SourceFormat};
use crate::server::{Body, response};
use crate::state::AppState;
use crate::store::{ImageRecord, ImageWithPaths, Placement, Visibility};
use crate::usage::{self, Quota};

/// Multipart framing and the small text fields, on top of `upload.max_bytes` for the file.
const MULTIPART_SLACK: u64 = 64 * 1024;
/// Largest text field (`target_path`, `visibility`).
const MAX_TEXT_FIELD: u64 = 4096;
/// Smallest upload the spec accepts.
const MIN_UPLOAD_BYTES: usize = 100;
/// Extensions that make the last segment of `target_path` a file name rather than a folder.
const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "png", "webp", "avif", "gif", "bmp", "tif", "tiff", "jxl", "heic", "heif",
    "qoi", "pnm", "pbm", "pgm", "ppm", "pam", "tga", "ico", "cur", "hdr", "exr", "svg",
];
/// Signed URL lifetimes, seconds.
const SIGNED_URL_MIN: i64 = 60;
const SIGNED_URL_MAX: i64 = 604_800;
const SIGNED_URL_DEFAULT: i64 = 3600;
/// Output formats listed in `available_formats` / `urls` (img-src's set).
const FORMAT_KEYS: [(&str, &str); 5] = [
    ("webp", "webp"),
    ("avif", "avif"),
    ("jpeg", "jpg"),
    ("png", "png"),
    ("jxl", "jxl"),
];

/// What a path segment keeps unescaped in the URLs we hand out (RFC 3986 unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

// ---------------------------------------------------------------------------------------------
// URLs and shapes

/// Absolute URL base: `server.public_url`, else `http://{Host}` of the request when that host
/// is one of `delivery.cdn_hosts` (configured, so trusted), else the public listener's address.
/// Any other `Host` is the client's word and never reaches a URL we hand out: a forged one
/// would otherwise put an attacker's domain into links a tenant stores and publishes.
pub(crate) fn base_url(state: &AppState, headers: &HeaderMap, uri: &http::Uri) -> String {
    if let Some(url) = &state.config.server.public_url {
        return url.clone();
    }
    // HTTP/2 carries the host in the `:authority` pseudo-header (the URI), not in `Host`.
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        })
        .filter(|h| {
            let name = h.rsplit_once(':').map_or(*h, |(name, _)| name);
            state
                .config
                .delivery
                .cdn_hosts
                .iter()
                .any(|c| c.eq_ignore_ascii_case(name))
        })
        .map(str::to_string)
        .unwrap_or_else(|| state.public_addr().to_string());
    format!("http://{host}")
}

fn encode_path(path: &str) -> String {
    path.split('/')
        .map(|segment| utf8_percent_encode(segment, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// `{base}/i/{account}/{path}` for a stored path (with its extension).
fn delivery_url(base: &str, account: &str, path: &str) -> String {
    format!("{base}/i/{account}/{}", encode_path(path))
}

/// The path to hand out for a stored path: as stored when the node can serve the original's
/// format as it is, else the stem as PNG (GIF, BMP, QOI, PNM, TGA, ICO, TIFF, HEIC, HDR, EXR
/// and SVG originals are delivered converted; an SVG's own bytes are never served), except an
/// animated GIF, handed out as `.gif` so that it stays animated (rendered again, palette per
/// frame: a GIF original's own bytes are never served either).
fn servable(path: &str, (format, frames): (SourceFormat, Option<u32>)) -> String {
    match format.as_output() {
        Some(_) => path.to_string(),
        None if format == SourceFormat::Gif && frames.is_some_and(|n| n > 1) => {
            format!("{}.gif", stem(path))
        }
        None => format!("{}.png", stem(path)),
    }
}

fn stem(path: &str) -> &str {
    path_stem(path).unwrap_or(path)
}

/// The delivery URL of each output format; `gif` too when the image is animated (a GIF or WebP
/// of more than one frame), since `.gif` keeps it animated.
fn format_urls(
    base: &str,
    account: &str,
    path: &str,
    (format, frames): (SourceFormat, Option<u32>),
) -> serde_json::Map<String, Value> {
    let animated =
        frames.is_some_and(|n| n > 1) && matches!(format, SourceFormat::Gif | SourceFormat::Webp);
    FORMAT_KEYS
        .iter()
        .chain(animated.then_some(&("gif", "gif")))
        .map(|(key, ext)| {
            let url = delivery_url(base, account, &format!("{}.{ext}", stem(path)));
            ((*key).to_string(), Value::String(url))
        })
        .collect()
}

fn links(id: &str) -> Value {
    json!({"self": format!("/api/v1/images/{id}"), "delete": format!("/api/v1/images/{id}")})
}

/// `photo 1.JPG` → `photo-1.JPG`: the last segment of the client's name, with anything but
/// `[A-Za-z0-9._-]` replaced, runs of `-` folded, never empty or dot-led.
fn sanitize_filename(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let mut out = String::with_capacity(last.len());
    for c in last.chars() {
        let keep = c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        let c = if keep { c } else { '-' };
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    let out = out.replace("-.", ".");
    let out = out.trim_matches(['-', '.']).to_string();
    let out: String = out.chars().take(200).collect();
    if out.is_empty() {
        "image".to_string()
    } else {
        out
    }
}

/// `name` with its extension replaced by the sniffed format's.
fn with_extension(name: &str, format: SourceFormat) -> String {
    let stem = match name.rfind('.') {
        Some(dot) if dot > 0 => &name[..dot],
        _ => name,
    };
    format!("{stem}.{}", format.extension())
}

/// The stored path of an upload: `target_path` as the full path when its last segment has an
/// image extension, else as a folder for the sanitized file name.
fn upload_path(
    target: Option<&str>,
    filename: &str,
    format: SourceFormat,
) -> Result<String, HttpError> {
    let file = with_extension(&sanitize_filename(filename), format);
    let Some(target) = target
        .map(|t| t.trim_matches('/'))
        .filter(|t| !t.is_empty())
    else {
        return Ok(file);
    };
    let bad = |why: &str| HttpError::validation(format!("target_path {why}"));
    if target.chars().any(crate::ingest::refused_path_char) {
        return Err(bad(
            "must not contain backslashes, control characters or format characters",
        ));
    }
    if target
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(bad("must not contain empty, `.` or `..` segments"));
    }
    let last = target.rsplit('/').next().unwrap_or(target);
    let is_file = last.rsplit_once('.').is_some_and(|(name, ext)| {
        !name.is_empty() && IMAGE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str())
    });
    let path = if is_file {
        target.to_string()
    } else {
        format!("{target}/{file}")
    };
    path_stem(&path).map_err(|e| HttpError::validation(e.to_string()))?;
    Ok(path)
}

/// The latest unexpired signed URL of each private image of `items` whose path still exists,
/// for `active_signed_url`.
async fn active_signed_urls(
    state: &AppState,
    account: &str,
    items: &[ImageWithPaths],
) -> Result<BTreeMap<String, (String, i64)>, HttpError> {
    let private: Vec<&str> = items
        .iter()
        .filter(|i| i.image.visibility == Visibility::Private)
        .map(|i| i.image.id.as_str())
        .collect();
    let mut found = state.store.active_signed_urls(account, &private).await?;
    Ok(items
        .iter()
        .filter_map(|item| {
            let (path, url, expires_at) = found.remove(&item.image.id)?;
            item.paths
                .contains(&path)
                .then(|| (item.image.id.clone(), (url, expires_at)))
        })
        .collect())
}

fn list_item(base: &str, item: &ImageWithPaths, signed: &BTreeMap<String, (String, i64)>) -> Value {
    let image = &item.image;
    let first = item.paths.first().map(String::as_str).unwrap_or("");
    let mut value = json!({
        "id": image.id,
        "original_filename": image.original_filename,
        "sanitized_filename": sanitize_filename(&image.original_filename),
        "visibility": image.visibility.as_str(),
        "size": image.size,
        "uploaded_at": crate::store::rfc3339(image.uploaded_at),
        "url": format!("/api/v1/images/{}", image.id),
        "cdn_url": delivery_url(base, &image.account, &servable(first, (image.format, image.frames))),
        "paths": item.paths,
    });
    if let Some((url, expires_at)) = signed.get(&image.id) {
        value["active_signed_url"] = json!({"signed_url": url, "expires_at": expires_at});
    }
    value
}

// ---------------------------------------------------------------------------------------------
// Upload

/// An upload's form fields.
pub struct UploadForm {
    /// File name and bytes of the `file` field.
    pub file: Option<(String, bytes::Bytes)>,
    target_path: Option<String>,
    visibility: Option<String>,
    /// `overwrite=true`: replace another image stored under the same name.
    overwrite: Option<String>,
}

fn multipart_error(e: multer::Error, max: u64) -> HttpError {
    match e {
        multer::Error::FieldSizeExceeded { .. } | multer::Error::StreamSizeExceeded { .. } => {
            HttpError::new(
                ErrorCode::PayloadTooLarge,
                format!("the upload is over upload.max_bytes ({max} bytes)"),
            )
        }
        other => HttpError::validation(format!("malformed multipart body: {other}")),
    }
}

/// Reads the form of an upload request while it streams.
async fn read_form(state: &AppState, req: Request<Incoming>) -> Result<UploadForm, HttpError> {
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header(CONTENT_TYPE);
    let declared = header(CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    read_upload_form(
        req.into_body().into_data_stream(),
        content_type.as_deref(),
        declared,
        state.config.upload.max_bytes,
    )
    .await
}

/// Parses a multipart/form-data upload body as it streams, stopping at the first byte over
/// `max` (the file) or the form's other limits. Public for the fuzz target.
pub async fn read_upload_form<S, E>(
    body: S,
    content_type: Option<&str>,
    declared_length: Option<u64>,
    max: u64,
) -> Result<UploadForm, HttpError>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    let too_large = || {
        HttpError::new(
            ErrorCode::PayloadTooLarge,
            format!("the upload is over upload.max_bytes ({max} bytes)"),
        )
    };
    if declared_length.is_some_and(|n| n > max + MULTIPART_SLACK) {
        return Err(too_large());
    }
    let boundary = content_type
        .and_then(|ct| multer::parse_boundary(ct).ok())
        .ok_or_else(|| {
            HttpError::validation("the upload must be multipart/form-data with a `file` field")
        })?;
    let limits = multer::SizeLimit::new()
        .whole_stream(max + MULTIPART_SLACK)
        .per_field(MAX_TEXT_FIELD)
        .for_field("file", max);
    let mut form = multer::Multipart::with_constraints(
        body,
        boundary,
        multer::Constraints::new().size_limit(limits),
    );
    let mut out = UploadForm {
        file: None,
        target_path: None,
        visibility: None,
        overwrite: None,
    };
    while let Some(mut field) = form
        .next_field()
        .await
        .map_err(|e| multipart_error(e, max))?
    {
        let name = field.name().unwrap_or("").to_string();
        match name.as_str() {
            "file" => {
                let filename = field.file_name().unwrap_or("image").to_string();
                let mut bytes = bytes::BytesMut::new();
                while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, max))? {
                    if (bytes.len() + chunk.len()) as u64 > max {
                        return Err(too_large());
                    }
                    bytes.extend_from_slice(&chunk);
                }
                out.file = Some((filename, bytes.freeze()));
            }
            "target_path" | "path" | "folder" | "visibility" | "overwrite" => {
                let text = field.text().await.map_err(|e| multipart_error(e, max))?;
                match name.as_str() {
                    "visibility" => out.visibility = Some(text),
                    "overwrite" => out.overwrite = Some(text),
                    _ => out.target_path = Some(text),
                }
            }
            // Other fields are read (within the limits) and ignored.
            _ => {
                while field
                    .chunk()
                    .await
                    .map_err(|e| multipart_error(e, max))?
                    .is_some()
                {}
            }
        }
    }
    Ok(out)
}

pub(crate) async fn upload(
    state: &AppState,
    who: &Principal,
    req: Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
    let base = base_url(state, req.headers(), req.uri());
    let plan = state.plan(&who.plan);
    let used = state.usage.current(&state.store, &who.account).await?;
    if let Err(e) = usage::check(plan, Quota::Uploads, &used) {
        super::drain(req).await;
        return Err(e.into());
    }
    let form = read_form(state, req).await?;
    let (filename, bytes) = form
        .file
        .ok_or_else(|| HttpError::validation("the `file` field is required"))?;
    if bytes.len() < MIN_UPLOAD_BYTES {
        return Err(HttpError::validation(format!(
            "the file is {} bytes; an image has at least {MIN_UPLOAD_BYTES}",
            bytes.len()
        )));
    }
    let asked = form
        .visibility
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let visibility = match asked {
        None => Visibility::Public,
        Some(v) => v
            .parse()
            .map_err(|()| HttpError::validation("visibility must be \"public\" or \"private\""))?,
    };
    if visibility == Visibility::Private {
        super::require(state, who, Feature::PrivateImages)?;
    }
    let overwrite = match form.overwrite.as_deref().map(str::trim) {
        None | Some("" | "false" | "0") => false,
        Some("true" | "1") => true,
        Some(_) => {
            return Err(HttpError::validation(
                "overwrite must be \"true\" or \"false\"",
            ));
        }
    };
    // Sniffed from the bytes; the name and Content-Type are never trusted.
    let format = pipeline::sniff(&bytes).ok_or_else(|| {
        HttpError::validation(
            "the file is not a supported image (JPEG, PNG, WebP, GIF, AVIF, BMP, QOI, \
             PNM, TGA, ICO, TIFF, HEIC, JPEG XL, Radiance HDR, OpenEXR or SVG)",
        )
    })?;
    let path = upload_path(form.target_path.as_deref(), &filename, format)?;
    let size = bytes.len() as u64;
    let (_, stored_bytes) = state.store.account_totals(&who.account).await?;
    usage::check_storage(plan, u64::try_from(stored_bytes).unwrap_or(0), size)?;
    let ingested = state
        .ingest()
        .add(Original {
            account: who.account.clone(),
            path: path.clone(),
            original_filename: filename.chars().take(255).collect(),
            bytes,
            visibility,
            placement: Placement {
                overwrite,
                visibility_explicit: asked.is_some(),
            },
        })
        .await
        .map_err(ingest_error)?;
    state.usage.record(&who.account, |u| u.uploads += 1);
    let image = &ingested.image;
    let paths = state.store.image_paths(&who.account, &image.id).await?;
    // A dedup keeps the stored record (its visibility and upload time).
    let stored = state.store.image(&who.account, &image.id).await?;
    let (visibility, uploaded_at) = stored
        .as_ref()
        .map_or((visibility, crate::store::now_unix()), |r| {
            (r.visibility, r.uploaded_at)
        });
    Ok(response::json(
        StatusCode::CREATED,
        &json!({
            "id": image.id,
            "hash": image.hash,
            "url": delivery_url(&base, &who.account, &servable(&path, (image.format, image.frames))),
            "paths": paths,
            "is_new": ingested.outcome.is_new,
            "visibility": visibility.as_str(),
            "size": size,
            "format": image.format.extension(),
            "dimensions": {"width": image.width, "height": image.height},
            // Ours, beside the spec's keys: what the probe saw in these bytes.
            "has_alpha": image.has_alpha,
            "frame_count": image.frames,
            "available_formats": format_urls(&base, &who.account, &path, (image.format, image.frames)),
            "uploaded_at": crate::store::rfc3339(uploaded_at),
            "_links": links(&image.id),
        }),
    ))
}

fn ingest_error(e: IngestError) -> HttpError {
    match e {
        IngestError::InvalidPath(m) => HttpError::validation(m),
        IngestError::Image(PipelineError::UnsupportedFormat) => {
            HttpError::validation("the file is not a supported image")
        }
        IngestError::Image(e) => e.into(),
        IngestError::Store(e) => e.into(),
        IngestError::Origin(e) => e.into(),
        IngestError::Originals(e) => e.into(),
        IngestError::Read(e) => e.into(),
        IngestError::Cpu(e) => e.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Listing and search

/// Query parameters, percent-decoded (`+` as space, as forms send it).
fn query_params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

fn param<'a>(params: &'a [(String, String)], names: &[&str]) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| names.contains(&k.as_str()))
        .map(|(_, v)| v.as_str())
}

fn int_param(
    params: &[(String, String)],
    name: &str,
    min: u32,
    max: u32,
    default: u32,
) -> Result<u32, HttpError> {
    match param(params, &[name]) {
        None | Some("") => Ok(default),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| {
                HttpError::validation(format!("{name} must be an integer from {min} to {max}"))
            }),
    }
}

pub(crate) async fn list(
    state: &AppState,
    who: &Principal,
    base: &str,
    query: &str,
) -> Result<Response<Body>, HttpError> {
    let params = query_params(query);
    let limit = int_param(&params, "limit", 1, 100, 50)?;
    let offset = int_param(&params, "offset", 0, u32::MAX, 0)?;
    let folder = param(&params, &["path", "folder"])
        .map(|p| p.trim_matches('/').to_string())
        .filter(|p| !p.is_empty());
    if let Some(folder) = &folder
        && (folder.chars().any(crate::ingest::refused_path_char)
            || folder
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == ".."))
    {
        return Err(HttpError::validation(
            "path must be a folder like `trips/2024` without empty, `.` or `..` segments",
        ));
    }
    let listing = state
        .store
        .list_folder(
            &who.account,
            folder.as_deref().unwrap_or(""),
            limit as usize,
            offset as usize,
        )
        .await?;
    let total = listing.total as usize;
    let signed = active_signed_urls(state, &who.account, &listing.images).await?;
    let page: Vec<Value> = listing
        .images
        .iter()
        .map(|item| list_item(base, item, &signed))
        .collect();
    let folders: Vec<Value> = listing
        .folders
        .iter()
        .map(|(name, count)| json!({"name": name, "image_count": count}))
        .collect();
    Ok(response::json(
        StatusCode::OK,
        &json!({
            "images": page,
            "folders": folders,
            "total": total,
            "limit": limit,
            "offset": offset,
            "has_more": (offset as usize).saturating_add(limit as usize) < total,
            "path_filter": folder,
        }),
    ))
}

pub(crate) async fn search(
    state: &AppState,
    who: &Principal,
    base: &str,
    query: &str,
) -> Result<Response<Body>, HttpError> {
    let params = query_params(query);
    let q = param(&params, &["q"]).unwrap_or("").trim().to_string();
    if q.is_empty() || q.chars().count() > 100 {
        return Err(HttpError::validation("q must be 1 to 100 characters"));
    }
    let limit = int_param(&params, "limit", 1, 100, 20)?;
    let offset = int_param(&params, "offset", 0, u32::MAX, 0)?;
    let (found, total) = state
        .store
        .search_images(&who.account, &q, limit, offset)
        .await?;
    let signed = active_signed_urls(state, &who.account, &found).await?;
    let results: Vec<Value> = found
        .iter()
        .map(|item| list_item(base, item, &signed))
        .collect();
    Ok(response::json(
        StatusCode::OK,
        &json!({"results": results, "total": total, "query": q}),
    ))
}

// ---------------------------------------------------------------------------------------------
// One image

async fn owned_image(
    state: &AppState,
    who: &Principal,
    id: &str,
) -> Result<ImageRecord, HttpError> {
    state
        .store
        .image(&who.account, id)
        .await?
        .ok_or_else(|| HttpError::new(ErrorCode::NotFound, "no such image"))
}

pub(crate) async fn metadata(
    state: &AppState,
    who: &Principal,
    base: &str,
    id: &str,
) -> Result<Response<Body>, HttpError> {
    let image = owned_image(state, who, id).await?;
    let paths = state.store.image_paths(&who.account, id).await?;
    let first = paths.first().map(String::as_str).unwrap_or("");
    let mut urls = format_urls(base, &who.account, first, (image.format, image.frames));
    urls.insert(
        "original".into(),
        Value::String(delivery_url(
            base,
            &who.account,
            &servable(first, (image.format, image.frames)),
        )),
    );
    Ok(response::json(
        StatusCode::OK,
        &json!({
            "id": image.id,
            "visibility": image.visibility.as_str(),
            "metadata": {
                "hash": image.hash,
                "original_filename": image.original_filename,
                "size": image.size,
                "uploaded_at": crate::store::rfc3339(image.uploaded_at),
                "mime_type": image.format.media_type(),
                "width": image.width,
                "height": image.height,
                "dominant_color": image.dominant_color,
                "has_alpha": image.has_alpha,
                "frame_count": image.frames,
            },
            "urls": urls,
            // (ours) Every path the image is stored under, relative to the account.
            "paths": paths,
            "_links": links(&image.id),
        }),
    ))
}

/// After metadata is gone: lookups invalidated, variants purged, the original released.
async fn forget(state: &AppState, account: &str, hash: &str) -> Result<(), HttpError> {
    state.caches.meta.bump(account);
    state
        .caches
        .purge_originals(&state.store, account, &[hash.to_string()])
        .await?;
    if let Err(e) = state.ingest().release_original(account, hash).await {
        // The sweeper retries; the image is already unreachable.
        tracing::warn!(error = %e, hash, "deleting an unreferenced original failed");
    }
    Ok(())
}

pub(crate) async fn delete(
    state: &AppState,
    who: &Principal,
    id: &str,
) -> Result<Response<Body>, HttpError> {
    let deleted = state
        .store
        .delete_image(&who.account, id)
        .await?
        .ok_or_else(|| HttpError::new(ErrorCode::NotFound, "no such image"))?;
    forget(state, &who.account, &deleted.hash).await?;
    Ok(response::json(
        StatusCode::OK,
        &json!({
            "success": true,
            "message": "image deleted",
            "deleted_paths": deleted.paths,
            "deleted_at": crate::store::rfc3339(crate::store::now_unix()),
        }),
    ))
}

/// `DELETE /api/v1/images/path/{account}/{filepath}`: `rest` is everything after `path/`,
/// still percent-encoded (the file path may be one `%2F`-encoded segment; `+` is a space).
pub(crate) async fn delete_path(
    state: &AppState,
    who: &Principal,
    rest: &str,
) -> Result<Response<Body>, HttpError> {
    let (account, filepath) = rest
        .split_once('/')
        .ok_or_else(|| HttpError::validation("expected /api/v1/images/path/{account}/{path}"))?;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| HttpError::validation("the path is not valid UTF-8"))
    };
    let account = decode(account)?;
    if account != who.account {
        return Err(HttpError::forbidden(
            "this API key cannot change another account's images",
        ));
    }
    let filepath = decode(filepath)?;
    let filepath = filepath.trim_matches('/');
    // Validated as a stored path would be (traversal, control characters: 400).
    path_stem(&format!("{filepath}.x")).map_err(|e| HttpError::validation(e.to_string()))?;
    // The path exactly as stored first; then as a stem (`photo.v2` may be the stem of
    // `photo.v2.jpg`); then the stem of what was given (`a.png` for a stored `a.jpg`).
    let mut candidates = Vec::new();
    if let Some(stem) = state.store.stem_for_path(&who.account, filepath).await? {
        candidates.push(stem);
    }
    candidates.push(filepath.to_string());
    if let Ok(stem) = path_stem(filepath) {
        candidates.push(stem.to_string());
    }
    let mut removed = None;
    let mut stem = String::new();
    for candidate in candidates {
        if let Some(done) = state.store.delete_path(&who.account, &candidate).await? {
            removed = Some(done);
            stem = candidate;
            break;
        }
    }
    let removed =
        removed.ok_or_else(|| HttpError::new(ErrorCode::NotFound, "no image at this path"))?;
    state.caches.meta.invalidate_path(&who.account, &stem).await;
    if removed.image_deleted {
        forget(state, &who.account, &removed.hash).await?;
    }
    Ok(response::json(
        StatusCode::OK,
        &json!({
            "success": true,
            "message": if removed.image_deleted { "path removed; it was the last, so the image was deleted" } else { "path removed" },
            "remaining_paths": removed.remaining,
            "image_deleted": removed.image_deleted,
            "deleted_at": crate::store::rfc3339(crate::store::now_unix()),
        }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VisibilityRequest {
    pub(crate) visibility: String,
}

pub(crate) async fn set_visibility(
    state: &AppState,
    who: &Principal,
    id: &str,
    body: VisibilityRequest,
) -> Result<Response<Body>, HttpError> {
    let visibility: Visibility = body
        .visibility
        .parse()
        .map_err(|()| HttpError::validation("visibility must be \"public\" or \"private\""))?;
    if visibility == Visibility::Private {
        super::require(state, who, Feature::PrivateImages)?;
    }
    if !state
        .store
        .set_visibility(&who.account, id, visibility)
        .await?
    {
        return Err(HttpError::new(ErrorCode::NotFound, "no such image"));
    }
    state.caches.meta.bump(&who.account);
    Ok(response::json(
        StatusCode::OK,
        &json!({
            "id": id,
            "visibility": visibility.as_str(),
            "message": format!("visibility set to {visibility}"),
        }),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignedUrlRequest {
    #[serde(alias = "expires_in")]
    pub(crate) expires_in_seconds: Option<i64>,
    /// Older img-src clients: the transform the URL is for, as delivery parameters (an object
    /// such as `{"w": 400, "format": "webp"}`, or a query string `w=400&format=webp`). They
    /// become part of the signed URL.
    #[serde(alias = "transformation")]
    transform: Option<serde_json::Value>,
}

/// A `transform` body as a validated delivery query in its normal (signed) spelling.
fn transform_query(value: &serde_json::Value) -> Result<String, HttpError> {
    use serde_json::Value;
    let bad = |m: String| HttpError::validation(m);
    let raw = match value {
        Value::Null => return Ok(String::new()),
        Value::String(q) => q.trim_start_matches('?').to_string(),
        Value::Object(map) => {
            crate::delivery::preset::object_query(map, "transform").map_err(bad)?
        }
        _ => {
            return Err(bad(
                "transform must be an object of delivery parameters or a query string".into(),
            ));
        }
    };
    let parsed = crate::delivery::url::parse_query(&raw)
        .map_err(|e| bad(format!("transform.{}: {}", e.key, e.message)))?;
    if parsed.signature.is_some() || parsed.expires.is_some() {
        return Err(bad("transform: sig and exp are the node's to add".into()));
    }
    Ok(parsed.params.signing_query())
}

pub(crate) async fn signed_url(
    state: &AppState,
    who: &Principal,
    base: &str,
    id: &str,
    body: SignedUrlRequest,
) -> Result<Response<Body>, HttpError> {
    super::require(state, who, Feature::SignedUrls)?;
    let ttl = body.expires_in_seconds.unwrap_or(SIGNED_URL_DEFAULT);
    if !(SIGNED_URL_MIN..=SIGNED_URL_MAX).contains(&ttl) {
        return Err(HttpError::validation(format!(
            "expires_in_seconds must be an integer from {SIGNED_URL_MIN} to {SIGNED_URL_MAX}"
        )));
    }
    let transform = body
        .transform
        .as_ref()
        .map(transform_query)
        .transpose()?
        .unwrap_or_default();
    let image = owned_image(state, who, id).await?;
    let paths = state.store.image_paths(&who.account, id).await?;
    let stored = paths
        .first()
        .ok_or_else(|| HttpError::new(ErrorCode::NotFound, "no such image"))?;
    let path = &servable(stored, (image.format, image.frames));
    let expires_at = crate::store::now_unix() + ttl;
    let query = if transform.is_empty() {
        format!("exp={expires_at}")
    } else {
        format!("{transform}&exp={expires_at}")
    };
    let url = crate::delivery::url::DeliveryUrl::parse(
        &format!("{}/{}", image.account, encode_path(path)),
        &query,
    )
    .map_err(|e| HttpError::internal(format!("stored path {path}: {e}")))?;
    let sig = state.signing.sign(&url.signing_message());
    let signed = format!(
        "{}?{query}&sig={sig}",
        delivery_url(base, &who.account, path)
    );
    state
        .store
        .put_signed_url(&who.account, id, stored, &signed, expires_at)
        .await?;
    Ok(response::json(
        StatusCode::OK,
        &json!({
            "signed_url": signed,
            "expires_at": expires_at,
            "expires_in_seconds": ttl,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_are_sanitized() {
        assert_eq!(sanitize_filename("My Photo (1).JPG"), "My-Photo-1.JPG");
        assert_eq!(sanitize_filename("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_filename("C:\\Users\\x\\cat.png"), "cat.png");
        assert_eq!(sanitize_filename("..."), "image");
        assert_eq!(sanitize_filename(""), "image");
    }

    #[test]
    fn target_paths_follow_the_spec() {
        let j = SourceFormat::Jpeg;
        assert_eq!(upload_path(None, "a b.png", j).unwrap(), "a-b.jpg");
        assert_eq!(
            upload_path(Some("trips/2024"), "x.jpg", j).unwrap(),
            "trips/2024/x.jpg"
        );
        assert_eq!(
            upload_path(Some("/trips/"), "x.jpg", j).unwrap(),
            "trips/x.jpg"
        );
        assert_eq!(
            upload_path(Some("trips/cover.webp"), "x.jpg", j).unwrap(),
            "trips/cover.webp"
        );
        assert_eq!(upload_path(Some("v1.2"), "x.jpg", j).unwrap(), "v1.2/x.jpg");
        for bad in ["a/../b", "a//b", "./a", "a\\b", "a/\u{7}/b", ".."] {
            assert!(upload_path(Some(bad), "x.jpg", j).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn urls_escape_each_segment() {
        assert_eq!(
            delivery_url("http://h", "acme", "my photos/a+b.jpg"),
            "http://h/i/acme/my%20photos/a%2Bb.jpg"
        );
    }
}
