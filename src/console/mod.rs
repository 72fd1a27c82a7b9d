//! The tenant console under `/console/` on the public listener: its pages (embedded in the
//! binary: one HTML page, CSS and a few ES modules, no build step) and the JSON endpoints of
//! sign-in and passkeys under `/console/api/`.
//!
//! A handler beside `api`, with no back door: a signed-in page calls the tenant API
//! (`/api/v1/...`) with its session cookie, and `api::handle` authorises it with the scopes
//! of the API key the session acts as (`auth::console`). What lives here is only what a
//! session needs before it exists or about itself: sign-in with an API key or a passkey,
//! the session's own view and sign-out, and the account's passkeys (WebAuthn ceremonies
//! through webauthn-rs, user verification required; a ceremony's state waits in the store,
//! bounded per client network and in all, so any node finishes it and only once).
//! These endpoints are not under `/api/v1`: they set and clear a cookie and exist for a
//! browser only; the tenant API stays the img-src contract the SDKs speak.
//!
//! Every state-changing request needs the console's `Origin` (sign-in too: no login CSRF),
//! and the session's CSRF token when it acts on a session. Failed sign-ins count against the
//! client address's failed-authentication allowance, as the API's do. Every answer carries
//! the security headers of [`security_headers`]. Must never serve a page that needs inline
//! script or a third-party asset, and never authorise a tenant API call itself.

use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use std::net::IpAddr;
use webauthn_rs::prelude::{
    Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Uuid,
};

use crate::auth::console::{self as session, Site};
use crate::auth::{AuthError, Principal, Scope};
use crate::error::{ErrorCode, HttpError};
use crate::ratelimit::RateState;
use crate::server::{Body, full, response};
use crate::state::AppState;
use crate::store::{AccountStatus, AuditRecord, CeremonyRefusal, PasskeyRecord, SessionRecord};

/// Passkeys one account may hold.
const MAX_PASSKEYS_PER_ACCOUNT: u32 = 20;
/// How long a ceremony waits for its second request (webauthn-rs asks browsers for 5 min).
const CEREMONY_TTL_SECS: i64 = 300;
/// Pending ceremonies per client network (an IPv4 address, an IPv6 /64).
const CEREMONIES_PER_CLIENT: u32 = 16;
/// Pending ceremonies of all clients together: at about 2 KiB of state each, 20 MiB of store
/// at most, for at most [`CEREMONY_TTL_SECS`].
const CEREMONIES_TOTAL: u32 = 10_000;

/// The console's content security policy: only its own scripts, styles, images and
/// connections; no inline script, no plugins, never framed.
const CSP: &str = "default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; \
                   frame-ancestors 'none'; form-action 'self'";

/// The page, its modules and its stylesheet.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/console/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("assets/index.html"),
    },
    Asset {
        path: "/console/console.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("assets/console.css"),
    },
    module("/console/console.js", include_str!("assets/console.js")),
    module("/console/net.js", include_str!("assets/net.js")),
    module("/console/builder.js", include_str!("assets/builder.js")),
    module("/console/images.js", include_str!("assets/images.js")),
    module("/console/manage.js", include_str!("assets/manage.js")),
];

/// An ES module of the console.
const fn module(path: &'static str, body: &'static str) -> Asset {
    Asset {
        path,
        content_type: "text/javascript; charset=utf-8",
        body,
    }
}

/// Routes under `/console`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConsoleRoute {
    /// One of [`ASSETS`], by index.
    Asset(usize),
    /// `/console` → `/console/`.
    Redirect,
    Session,
    SignOut,
    KeySignIn,
    PasskeySignInOptions,
    PasskeySignIn,
    ListPasskeys,
    PasskeyOptions,
    AddPasskey,
    RemovePasskey(String),
    NotFound,
    NotAllowed(&'static str),
}

impl ConsoleRoute {
    /// Matches `path` (which starts with `/console`) and `method`; HEAD matches wherever GET
    /// does.
    pub(crate) fn parse(method: &Method, path: &str) -> ConsoleRoute {
        let get = *method == Method::GET || *method == Method::HEAD;
        if path == "/console" {
            return if get {
                ConsoleRoute::Redirect
            } else {
                ConsoleRoute::NotAllowed("GET, HEAD")
            };
        }
        if let Some(i) = ASSETS.iter().position(|a| a.path == path) {
            return if get {
                ConsoleRoute::Asset(i)
            } else {
                ConsoleRoute::NotAllowed("GET, HEAD")
            };
        }
        let Some(rest) = path.strip_prefix("/console/api/") else {
            return ConsoleRoute::NotFound;
        };
        let post = *method == Method::POST;
        let delete = *method == Method::DELETE;
        match rest.split('/').collect::<Vec<_>>().as_slice() {
            ["session"] if get => ConsoleRoute::Session,
            ["session"] if delete => ConsoleRoute::SignOut,
            ["session"] => ConsoleRoute::NotAllowed("GET, HEAD, DELETE"),
            ["session", "key"] if post => ConsoleRoute::KeySignIn,
            ["session", "passkey", "options"] if post => ConsoleRoute::PasskeySignInOptions,
            ["session", "passkey"] if post => ConsoleRoute::PasskeySignIn,
            ["session", "key" | "passkey"] | ["session", "passkey", "options"] => {
                ConsoleRoute::NotAllowed("POST")
            }
            ["passkeys"] if get => ConsoleRoute::ListPasskeys,
            ["passkeys"] if post => ConsoleRoute::AddPasskey,
            ["passkeys"] => ConsoleRoute::NotAllowed("GET, HEAD, POST"),
            ["passkeys", "options"] if post => ConsoleRoute::PasskeyOptions,
            ["passkeys", "options"] => ConsoleRoute::NotAllowed("POST"),
            ["passkeys", id] if delete && !id.is_empty() => {
                ConsoleRoute::RemovePasskey((*id).to_string())
            }
            ["passkeys", _] => ConsoleRoute::NotAllowed("DELETE"),
            _ => ConsoleRoute::NotFound,
        }
    }

    pub(crate) fn label(&self) -> &'static str {
        match self {
            ConsoleRoute::Asset(_) | ConsoleRoute::Redirect => "console_page",
            ConsoleRoute::Session => "console_session",
            ConsoleRoute::SignOut => "console_sign_out",
            ConsoleRoute::KeySignIn => "console_sign_in_key",
            ConsoleRoute::PasskeySignInOptions => "console_sign_in_passkey_options",
            ConsoleRoute::PasskeySignIn => "console_sign_in_passkey",
            ConsoleRoute::ListPasskeys => "console_passkeys_list",
            ConsoleRoute::PasskeyOptions => "console_passkeys_options",
            ConsoleRoute::AddPasskey => "console_passkeys_add",
            ConsoleRoute::RemovePasskey(_) => "console_passkeys_remove",
            ConsoleRoute::NotFound => "console_not_found",
            ConsoleRoute::NotAllowed(_) => "console_bad_method",
        }
    }
}

/// The headers every console answer carries, errors included.
pub(crate) fn security_headers(h: &mut http::HeaderMap) {
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
}

/// Answers a console route. `client` is the client's address (`server::client::client_ip`).
pub(crate) async fn handle(
    state: &AppState,
    route: ConsoleRoute,
    req: Request<Incoming>,
    client: IpAddr,
) -> Result<Response<Body>, HttpError> {
    let Some(site) = state.console_site() else {
        crate::api::drain(req).await;
        return Err(HttpError::new(
            ErrorCode::NotFound,
            if state.config.console.enabled {
                "the console needs server.public_url on a listener that is not loopback"
            } else {
                "the console is switched off (console.enabled)"
            },
        ));
    };
    match route {
        ConsoleRoute::Asset(i) => Ok(asset(&ASSETS[i])),
        ConsoleRoute::Redirect => {
            let mut res = Response::new(full(""));
            *res.status_mut() = StatusCode::PERMANENT_REDIRECT;
            res.headers_mut()
                .insert(LOCATION, HeaderValue::from_static("/console/"));
            Ok(res)
        }
        ConsoleRoute::NotFound => {
            crate::api::drain(req).await;
            Err(HttpError::new(ErrorCode::NotFound, "no such route"))
        }
        ConsoleRoute::NotAllowed(allow) => {
            crate::api::drain(req).await;
            Err(HttpError::method_not_allowed(allow))
        }
        ConsoleRoute::KeySignIn => key_sign_in(state, site, req, client).await,
        ConsoleRoute::PasskeySignInOptions => passkey_options(state, site, req, client).await,
        ConsoleRoute::PasskeySignIn => passkey_sign_in(state, site, req, client).await,
        route => {
            let (who, record, secret) = match signed_in(state, site, &req, client).await {
                Ok(s) => s,
                Err(e) => {
                    crate::api::drain(req).await;
                    return Err(e);
                }
            };
            match route {
                ConsoleRoute::Session => Ok(session_answer(StatusCode::OK, &who, &record, &secret)),
                ConsoleRoute::SignOut => {
                    state
                        .store
                        .delete_console_session(&session::secret_hash(&secret))
                        .await?;
                    audit(state, &who, "console_sign_out", None, client, 200).await;
                    let mut res = response::json(
                        StatusCode::OK,
                        &serde_json::json!({"success": true, "message": "signed out"}),
                    );
                    set_cookie(&mut res, &site.clear_cookie());
                    Ok(res)
                }
                ConsoleRoute::ListPasskeys => list_passkeys(state, &who).await,
                ConsoleRoute::PasskeyOptions => {
                    register_options(state, site, req, client, &who, &secret).await
                }
                ConsoleRoute::AddPasskey => {
                    add_passkey(state, site, req, client, &who, &secret).await
                }
                ConsoleRoute::RemovePasskey(id) => {
                    require_write(&who)?;
                    let removed = state.store.delete_passkey(&who.account, &id).await?;
                    let status = if removed { 200 } else { 404 };
                    audit(
                        state,
                        &who,
                        "console_passkey_remove",
                        Some(&id),
                        client,
                        status,
                    )
                    .await;
                    if !removed {
                        return Err(HttpError::new(ErrorCode::NotFound, "no such passkey"));
                    }
                    Ok(response::json(
                        StatusCode::OK,
                        &serde_json::json!({"success": true, "message": "passkey removed"}),
                    ))
                }
                _ => Err(HttpError::new(ErrorCode::NotFound, "no such route")),
            }
        }
    }
}

fn asset(a: &Asset) -> Response<Body> {
    let mut res = Response::new(full(a.body));
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(a.content_type));
    // Per session like every console answer: the envelope makes it `no-store`.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn set_cookie(res: &mut Response<Body>, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        res.headers_mut().append(SET_COOKIE, v);
    }
}

/// The session of the request's cookie, after the CSRF check (state-changing requests), and
/// its account still active. A bad or expired session counts as a failed authentication.
async fn signed_in(
    state: &AppState,
    site: &Site,
    req: &Request<Incoming>,
    client: IpAddr,
) -> Result<(Principal, SessionRecord, String), HttpError> {
    let blocked = state.rate_limits.blocked(client);
    let Some(secret) = site.cookie_secret(req.headers()) else {
        return Err(HttpError::new(ErrorCode::Unauthorized, "not signed in"));
    };
    site.check_csrf(req.method(), req.headers(), secret)
        .map_err(HttpError::forbidden)?;
    let now = crate::store::now_unix();
    let idle = i64::try_from(state.config.console.idle_timeout.as_secs()).unwrap_or(i64::MAX);
    match session::authenticate(&state.store, secret, idle, now).await {
        Ok((mut who, record)) => {
            who.plan = active_plan(state, &who.account).await?;
            Ok((who, record, secret.to_string()))
        }
        Err(AuthError::Invalid | AuthError::Missing) => Err(failed(
            state,
            client,
            blocked,
            HttpError::new(
                ErrorCode::Unauthorized,
                "invalid or expired console session",
            ),
        )),
        Err(e) => Err(e.into()),
    }
}

/// The plan of an active account; suspended is 403, gone or being erased 401.
async fn active_plan(state: &AppState, account: &str) -> Result<String, HttpError> {
    match state.caches.meta.account(&state.store, account).await? {
        Some(a) if a.status == AccountStatus::Active => Ok(a.plan.clone()),
        Some(a) if a.status == AccountStatus::Suspended => {
            Err(HttpError::forbidden("account suspended"))
        }
        _ => Err(HttpError::new(
            ErrorCode::Unauthorized,
            "invalid, expired or revoked API key",
        )),
    }
}

/// A failed sign-in: counted against the address; 429 once it is over its allowance (or
/// was already), else `e`.
fn failed(state: &AppState, client: IpAddr, blocked: Option<RateState>, e: HttpError) -> HttpError {
    let rate = state.rate_limits.auth_failure(client);
    match rate.retry_after.map(|_| rate).or(blocked) {
        Some(r) => HttpError {
            retry_after: r.retry_after,
            ..HttpError::new(
                ErrorCode::RateLimited,
                "too many failed authentications from this address",
            )
        },
        None => e,
    }
}

fn require_write(who: &Principal) -> Result<(), HttpError> {
    if who.scopes.allows(Scope::Write) {
        Ok(())
    } else {
        Err(HttpError::forbidden("this API key lacks the `write` scope"))
    }
}

/// The session's view: its account, scopes, expiry and CSRF token.
fn session_answer(
    status: StatusCode,
    who: &Principal,
    record: &SessionRecord,
    secret: &str,
) -> Response<Body> {
    response::json(
        status,
        &serde_json::json!({
            "account": who.account,
            "key_id": who.key_id,
            "scopes": who.scopes.as_str(),
            "signed_in_with": if record.passkey_id.is_some() { "passkey" } else { "api_key" },
            "created_at": crate::store::rfc3339(record.created_at),
            "expires_at": crate::store::rfc3339(record.expires_at),
            "csrf_token": session::csrf_token(secret),
        }),
    )
}

/// Opens a session acting as `key_id` and answers it with its cookie.
async fn open_session(
    state: &AppState,
    site: &Site,
    who: &Principal,
    passkey_id: Option<&str>,
    client: IpAddr,
) -> Result<Response<Body>, HttpError> {
    let secret = session::new_secret()?;
    let now = crate::store::now_unix();
    let absolute = state.config.console.absolute_timeout.as_secs();
    let expires_at = now.saturating_add(i64::try_from(absolute).unwrap_or(i64::MAX));
    let hash = session::secret_hash(&secret);
    let new = crate::store::NewSession {
        id_hash: &hash,
        account: &who.account,
        key_id: &who.key_id,
        passkey_id,
        now,
        expires_at,
    };
    match state.store.create_console_session(&new).await {
        Ok(()) => {}
        Err(crate::store::StoreError::NotFound) => {
            return Err(HttpError::new(
                ErrorCode::Unauthorized,
                "invalid, expired or revoked API key",
            ));
        }
        Err(e) => return Err(e.into()),
    }
    let record = SessionRecord {
        account: who.account.clone(),
        key_id: who.key_id.clone(),
        passkey_id: passkey_id.map(str::to_string),
        created_at: now,
        last_seen_at: now,
        expires_at,
        scopes: who.scopes.as_str().to_string(),
        key_expires_at: who.expires_at,
    };
    let action = if passkey_id.is_some() {
        "console_sign_in_passkey"
    } else {
        "console_sign_in_key"
    };
    audit(state, who, action, passkey_id, client, 201).await;
    let mut res = session_answer(StatusCode::CREATED, who, &record, &secret);
    set_cookie(&mut res, &site.set_cookie(&secret, absolute));
    Ok(res)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeySignIn {
    key: String,
}

/// `req` when its `Origin` is the console's (sign-in too: no login CSRF); else a 403, with
/// the body drained.
async fn same_origin(site: &Site, req: Request<Incoming>) -> Result<Request<Incoming>, HttpError> {
    match site.check_origin(req.headers()) {
        Ok(()) => Ok(req),
        Err(why) => {
            crate::api::drain(req).await;
            Err(HttpError::forbidden(why))
        }
    }
}

async fn key_sign_in(
    state: &AppState,
    site: &Site,
    req: Request<Incoming>,
    client: IpAddr,
) -> Result<Response<Body>, HttpError> {
    let req = same_origin(site, req).await?;
    let blocked = state.rate_limits.blocked(client);
    let body: KeySignIn = crate::api::read_json(req).await?;
    let key = body.key.trim();
    let plausible = key
        .strip_prefix(state.config.auth.key_prefix.as_str())
        .is_some_and(crate::auth::plausible_secret);
    let bad = || {
        HttpError::new(
            ErrorCode::Unauthorized,
            "invalid, expired or revoked API key",
        )
    };
    // While the address is blocked, only a key that could be valid is looked up (as the API
    // does).
    if blocked.is_some() && !plausible {
        return Err(failed(state, client, blocked, bad()));
    }
    let header = format!("Bearer {key}");
    let mut who = match state
        .api_keys
        .authenticate(&state.store, Some(&header))
        .await
    {
        Ok(who) => who,
        Err(AuthError::Invalid | AuthError::Missing) => {
            return Err(failed(state, client, blocked, bad()));
        }
        Err(e) => return Err(e.into()),
    };
    who.plan = match active_plan(state, &who.account).await {
        Err(e) if e.code == ErrorCode::Unauthorized => {
            return Err(failed(state, client, blocked, e));
        }
        other => other?,
    };
    open_session(state, site, &who, None, client).await
}

/// The WebAuthn user handle of an account: stable, derived from its name (nothing to store,
/// and the name is public in its image URLs anyway).
fn user_handle(account: &str) -> Uuid {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("imgnode console user\0{account}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::from_bytes(bytes)
}

fn webauthn(site: &Site) -> Result<&webauthn_rs::prelude::Webauthn, HttpError> {
    site.webauthn.as_ref().ok_or_else(|| {
        HttpError::new(
            ErrorCode::NotFound,
            "passkeys need server.public_url with https and a host name (or a loopback listener)",
        )
    })
}

/// The account's passkeys, parsed.
async fn account_passkeys(
    state: &AppState,
    account: &str,
) -> Result<Vec<(PasskeyRecord, Passkey)>, HttpError> {
    let mut out = Vec::new();
    for record in state.store.passkeys(account).await? {
        let passkey: Passkey = serde_json::from_str(&record.credential)
            .map_err(|e| HttpError::internal(format!("stored passkey {}: {e}", record.id)))?;
        out.push((record, passkey));
    }
    Ok(out)
}

/// base64url of a credential id, as stored.
fn credential_id_text(id: &webauthn_rs::prelude::CredentialID) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

/// Records a ceremony's state and answers its id with the options for the browser.
async fn start_ceremony(
    state: &AppState,
    kind: &str,
    account: &str,
    client: IpAddr,
    session_hash: Option<&str>,
    stored: serde_json::Value,
    options: serde_json::Value,
) -> Result<Response<Body>, HttpError> {
    let id = session::new_secret()?;
    let now = crate::store::now_unix();
    let network = crate::ratelimit::network_of(client).to_string();
    let refused = state
        .store
        .create_ceremony(
            &session::secret_hash(&id),
            kind,
            account,
            &network,
            session_hash,
            &stored.to_string(),
            now,
            now + CEREMONY_TTL_SECS,
            (CEREMONIES_PER_CLIENT, CEREMONIES_TOTAL),
        )
        .await?;
    match refused {
        Ok(()) => Ok(response::json(
            StatusCode::OK,
            &serde_json::json!({"ceremony": id, "options": options}),
        )),
        Err(CeremonyRefusal::ClientFull) => Err(HttpError {
            retry_after: Some(CEREMONY_TTL_SECS as u64),
            ..HttpError::new(
                ErrorCode::RateLimited,
                "too many passkey ceremonies pending from this address",
            )
        }),
        Err(CeremonyRefusal::Full) => Err(HttpError {
            retry_after: Some(60),
            ..HttpError::new(ErrorCode::Overloaded, "too many passkey ceremonies pending")
        }),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignInOptions {
    account: String,
}

async fn passkey_options(
    state: &AppState,
    site: &Site,
    req: Request<Incoming>,
    client: IpAddr,
) -> Result<Response<Body>, HttpError> {
    let req = same_origin(site, req).await?;
    let webauthn = webauthn(site)?;
    let blocked = state.rate_limits.blocked(client);
    let body: SignInOptions = crate::api::read_json(req).await?;
    if body.account.len() > 128 {
        return Err(HttpError::validation("account: at most 128 characters"));
    }
    let passkeys: Vec<Passkey> = account_passkeys(state, &body.account)
        .await?
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    if passkeys.is_empty() {
        return Err(failed(
            state,
            client,
            blocked,
            HttpError::new(
                ErrorCode::Unauthorized,
                "no passkey is registered for this account",
            ),
        ));
    }
    let (options, auth_state) = webauthn
        .start_passkey_authentication(&passkeys)
        .map_err(|e| HttpError::internal(format!("passkey authentication: {e}")))?;
    start_ceremony(
        state,
        "authenticate",
        &body.account,
        client,
        None,
        serde_json::json!({"state": auth_state}),
        serde_json::to_value(&options).map_err(|e| HttpError::internal(e.to_string()))?,
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    ceremony: String,
    credential: PublicKeyCredential,
}

#[derive(Deserialize)]
struct AuthenticationState {
    state: PasskeyAuthentication,
}

async fn passkey_sign_in(
    state: &AppState,
    site: &Site,
    req: Request<Incoming>,
    client: IpAddr,
) -> Result<Response<Body>, HttpError> {
    let req = same_origin(site, req).await?;
    let webauthn = webauthn(site)?;
    let blocked = state.rate_limits.blocked(client);
    let body: SignIn = crate::api::read_json(req).await?;
    let bad = || HttpError::new(ErrorCode::Unauthorized, "passkey sign-in failed");
    let now = crate::store::now_unix();
    let Some(ceremony) = state
        .store
        .take_ceremony(&session::secret_hash(&body.ceremony), "authenticate", now)
        .await?
    else {
        return Err(failed(state, client, blocked, bad()));
    };
    let pending: AuthenticationState = serde_json::from_str(&ceremony.state)
        .map_err(|e| HttpError::internal(format!("stored ceremony: {e}")))?;
    let Ok(result) = webauthn.finish_passkey_authentication(&body.credential, &pending.state)
    else {
        return Err(failed(state, client, blocked, bad()));
    };
    let used = credential_id_text(result.cred_id());
    let found = account_passkeys(state, &ceremony.account)
        .await?
        .into_iter()
        .find(|(r, _)| r.credential_id == used);
    // Removed (or its key revoked) between the two requests.
    let Some((record, mut passkey)) = found else {
        return Err(failed(state, client, blocked, bad()));
    };
    passkey.update_credential(&result);
    let credential =
        serde_json::to_string(&passkey).map_err(|e| HttpError::internal(e.to_string()))?;
    state
        .store
        .passkey_used(&record.id, &credential, now)
        .await?;
    let key = state
        .store
        .api_keys(&ceremony.account)
        .await?
        .into_iter()
        .find(|k| k.id == record.key_id)
        .ok_or_else(bad)?;
    let scopes = crate::auth::Scopes::parse(&key.scopes).ok_or_else(bad)?;
    let mut who = Principal {
        account: ceremony.account.clone(),
        key_id: key.id.clone(),
        scopes,
        plan: String::new(),
        expires_at: key.expires_at,
    };
    who.plan = match active_plan(state, &who.account).await {
        Err(e) if e.code == ErrorCode::Unauthorized => {
            return Err(failed(state, client, blocked, e));
        }
        other => other?,
    };
    open_session(state, site, &who, Some(&record.id), client).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterOptions {
    name: String,
}

async fn register_options(
    state: &AppState,
    site: &Site,
    req: Request<Incoming>,
    client: IpAddr,
    who: &Principal,
    secret: &str,
) -> Result<Response<Body>, HttpError> {
    require_write(who)?;
    let webauthn = webauthn(site)?;
    let body: RegisterOptions = crate::api::read_json(req).await?;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(HttpError::validation(
            "name must be 1 to 100 characters without control characters",
        ));
    }
    let existing: Vec<_> = account_passkeys(state, &who.account)
        .await?
        .into_iter()
        .map(|(_, p)| p.cred_id().clone())
        .collect();
    let (options, reg_state) = webauthn
        .start_passkey_registration(
            user_handle(&who.account),
            &who.account,
            &who.account,
            Some(existing),
        )
        .map_err(|e| HttpError::internal(format!("passkey registration: {e}")))?;
    start_ceremony(
        state,
        "register",
        &who.account,
        client,
        Some(&session::secret_hash(secret)),
        serde_json::json!({"name": name, "state": reg_state}),
        serde_json::to_value(&options).map_err(|e| HttpError::internal(e.to_string()))?,
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddPasskey {
    ceremony: String,
    credential: RegisterPublicKeyCredential,
}

#[derive(Deserialize)]
struct RegistrationState {
    name: String,
    state: PasskeyRegistration,
}

async fn add_passkey(
    state: &AppState,
    site: &Site,
    req: Request<Incoming>,
    client: IpAddr,
    who: &Principal,
    secret: &str,
) -> Result<Response<Body>, HttpError> {
    require_write(who)?;
    let webauthn = webauthn(site)?;
    let body: AddPasskey = crate::api::read_json(req).await?;
    let now = crate::store::now_unix();
    let hash = session::secret_hash(secret);
    let ceremony = state
        .store
        .take_ceremony(&session::secret_hash(&body.ceremony), "register", now)
        .await?
        .filter(|c| c.account == who.account && c.session_hash.as_deref() == Some(hash.as_str()))
        .ok_or_else(|| {
            HttpError::validation("no such registration pending for this session (expired?)")
        })?;
    let pending: RegistrationState = serde_json::from_str(&ceremony.state)
        .map_err(|e| HttpError::internal(format!("stored ceremony: {e}")))?;
    let passkey = webauthn
        .finish_passkey_registration(&body.credential, &pending.state)
        .map_err(|e| HttpError::validation(format!("passkey registration failed: {e}")))?;
    let record = PasskeyRecord {
        id: format!("pk_{}", crate::auth::random_hex(8)?),
        account: who.account.clone(),
        name: pending.name,
        credential_id: credential_id_text(passkey.cred_id()),
        credential: serde_json::to_string(&passkey)
            .map_err(|e| HttpError::internal(e.to_string()))?,
        key_id: who.key_id.clone(),
        created_at: now,
        last_used_at: None,
    };
    state
        .store
        .create_passkey(&record, MAX_PASSKEYS_PER_ACCOUNT)
        .await?;
    audit(
        state,
        who,
        "console_passkey_add",
        Some(&record.id),
        client,
        201,
    )
    .await;
    Ok(response::json(
        StatusCode::CREATED,
        &passkey_document(&record),
    ))
}

fn passkey_document(p: &PasskeyRecord) -> serde_json::Value {
    serde_json::json!({
        "id": p.id,
        "name": p.name,
        "created_at": crate::store::rfc3339(p.created_at),
        "last_used_at": p.last_used_at.map(crate::store::rfc3339),
    })
}

async fn list_passkeys(state: &AppState, who: &Principal) -> Result<Response<Body>, HttpError> {
    let items: Vec<_> = state
        .store
        .passkeys(&who.account)
        .await?
        .iter()
        .map(passkey_document)
        .collect();
    Ok(response::json(
        StatusCode::OK,
        &serde_json::json!({"passkeys": items, "total": items.len()}),
    ))
}

async fn audit(
    state: &AppState,
    who: &Principal,
    action: &str,
    target: Option<&str>,
    client: IpAddr,
    outcome: i64,
) {
    let record = AuditRecord {
        id: crate::api::audit_id(),
        at: crate::store::now_unix(),
        account: Some(who.account.clone()),
        actor: who.key_id.clone(),
        action: action.to_string(),
        target: target.map(str::to_string),
        client_ip: Some(client.to_string()),
        outcome,
    };
    if let Err(e) = state.store.append_audit(&record).await {
        tracing::error!(error = %e, action, "writing an audit record failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pages build their DOM from text only, load nothing from elsewhere and need no
    /// inline script or style: what the CSP and the "user input is text" rule rely on.
    #[test]
    fn assets_never_parse_markup_or_reach_elsewhere() {
        for a in ASSETS {
            for banned in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
                "https://",
                "style=",
                "onclick=\"",
                "<script>",
            ] {
                assert!(!a.body.contains(banned), "{} contains {banned}", a.path);
            }
        }
        // Every module the page imports is served.
        for a in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            for line in a.body.lines().filter(|l| l.contains("from \"./")) {
                let module = line
                    .split("from \"./")
                    .nth(1)
                    .unwrap()
                    .trim_end_matches("\";");
                let path = format!("/console/{module}");
                assert!(
                    ASSETS.iter().any(|b| b.path == path),
                    "{path} in {}",
                    a.path
                );
            }
        }
    }

    #[test]
    fn routes_match_methods() {
        let r = |m: Method, p: &str| ConsoleRoute::parse(&m, p);
        assert_eq!(r(Method::GET, "/console"), ConsoleRoute::Redirect);
        assert_eq!(r(Method::HEAD, "/console/"), ConsoleRoute::Asset(0));
        assert_eq!(
            r(Method::POST, "/console/"),
            ConsoleRoute::NotAllowed("GET, HEAD")
        );
        assert_eq!(
            r(Method::POST, "/console/api/session/key"),
            ConsoleRoute::KeySignIn
        );
        assert_eq!(
            r(Method::GET, "/console/api/session/key"),
            ConsoleRoute::NotAllowed("POST")
        );
        assert_eq!(
            r(Method::DELETE, "/console/api/session"),
            ConsoleRoute::SignOut
        );
        assert_eq!(
            r(Method::DELETE, "/console/api/passkeys/pk_1"),
            ConsoleRoute::RemovePasskey("pk_1".into())
        );
        assert_eq!(r(Method::GET, "/console/nothing"), ConsoleRoute::NotFound);
        assert_eq!(user_handle("acme"), user_handle("acme"));
        assert_ne!(user_handle("acme"), user_handle("acme2"));
    }
}
