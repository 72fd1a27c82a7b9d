// The console's entry: sign-in (passkey or API key), sign-out, the passkeys page, and the
// router that shows one page per `#/...` address. Pages live in images.js and manage.js;
// every text from the server is set as text (net.js `el`), never as markup.
import {
  applyTheme, attempt, bidi, call, el, heading, load, say, session, show, staleStatus, when,
} from "./net.js";
import { imagePage, imagesPage, uploadPage } from "./images.js";
import { accountPage, keysPage, presetsPage, settingsPage, usagePage } from "./manage.js";

const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------------------------------
// WebAuthn: the JSON of webauthn-rs to and from the browser's ArrayBuffers.

const toBytes = (b64url) => {
  const b64 = b64url.replace(/-/g, "+").replace(/_/g, "/");
  const raw = atob(b64 + "===".slice((b64.length + 3) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0)).buffer;
};
const toB64url = (buf) =>
  btoa(String.fromCharCode(...new Uint8Array(buf)))
    .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

function creationOptions(json) {
  const o = structuredClone(json.publicKey);
  o.challenge = toBytes(o.challenge);
  o.user.id = toBytes(o.user.id);
  for (const c of o.excludeCredentials || []) c.id = toBytes(c.id);
  return { publicKey: o };
}

function requestOptions(json) {
  const o = structuredClone(json.publicKey);
  o.challenge = toBytes(o.challenge);
  for (const c of o.allowCredentials || []) c.id = toBytes(c.id);
  return { publicKey: o };
}

function credentialJson(cred) {
  const r = cred.response;
  const response = { clientDataJSON: toB64url(r.clientDataJSON) };
  if (r.attestationObject) {
    response.attestationObject = toB64url(r.attestationObject);
    response.transports = r.getTransports ? r.getTransports() : [];
  } else {
    response.authenticatorData = toB64url(r.authenticatorData);
    response.signature = toB64url(r.signature);
    if (r.userHandle) response.userHandle = toB64url(r.userHandle);
  }
  return {
    id: cred.id,
    rawId: toB64url(cred.rawId),
    type: cred.type,
    response,
    clientExtensionResults: cred.getClientExtensionResults(),
  };
}

// ------------------------------------------------------------------------------------------
// Passkeys page

async function passkeysPage(view) {
  const answer = await load(view, "Passkeys", call("GET", "/console/api/passkeys"));
  if (!answer) return;
  const { passkeys } = answer;
  const list = el("ul", { id: "passkeys", class: "plain" }, passkeys.map((p) => el("li", {},
    el("span", {}, bidi(p.name), el("span", { class: "meta" }, ` added ${when(p.created_at)}${p.last_used_at ? `, last used ${when(p.last_used_at)}` : ""}`)),
    el("button", { type: "button", class: "small danger", "aria-label": `Remove passkey ${p.name}`, onclick: () => attempt(async () => {
      if (!confirm(`Remove the passkey ${p.name}? It can no longer sign in.`)) return;
      await call("DELETE", `/console/api/passkeys/${encodeURIComponent(p.id)}`);
      say(`Passkey ${p.name} removed.`);
      await passkeysPage(view);
    }) }, "Remove"))));
  if (!passkeys.length) list.append(el("li", {}, "No passkey yet."));
  const name = el("input", { id: "passkey-name", name: "name", maxlength: 100, required: true, placeholder: "e.g. work laptop" });
  const form = el("form", { id: "register-form", onsubmit: (ev) => {
    ev.preventDefault();
    attempt(async () => {
      const start = await call("POST", "/console/api/passkeys/options", { name: name.value });
      const cred = await navigator.credentials.create(creationOptions(start.options));
      await call("POST", "/console/api/passkeys", { ceremony: start.ceremony, credential: credentialJson(cred) });
      say("Passkey added.");
      await passkeysPage(view);
    });
  } },
  el("label", { for: "passkey-name" }, "Name of a new passkey"), name,
  el("button", { type: "submit" }, "Add a passkey"));
  show(view, heading("Passkeys"),
    el("p", {}, `A passkey signs in to ${session.account} with the scopes of the key this session acts as (${session.scopes}). It is bound to this site (${location.host}).`),
    list, form);
}

// ------------------------------------------------------------------------------------------
// Router

const ROUTES = [
  [/^#\/images$/, (v, _m, q) => imagesPage(v, q)],
  [/^#\/upload$/, (v, _m, q) => uploadPage(v, q)],
  [/^#\/image\/([^/]+)$/, (v, m) => imagePage(v, decodeURIComponent(m[1]))],
  [/^#\/presets$/, (v) => presetsPage(v)],
  [/^#\/presets\/([^/]+)$/, (v, m) => presetsPage(v, decodeURIComponent(m[1]))],
  [/^#\/keys$/, (v) => keysPage(v)],
  [/^#\/usage$/, (v) => usagePage(v)],
  [/^#\/settings$/, (v) => settingsPage(v)],
  [/^#\/passkeys$/, (v) => passkeysPage(v)],
  [/^#\/account$/, (v) => accountPage(v, signedOut)],
];

async function route() {
  if (!session.csrf) return;
  staleStatus();
  const [path, search] = (location.hash || "#/images").split("?");
  const page = $("page");
  for (const a of document.querySelectorAll("#nav a")) {
    const here = path === a.getAttribute("href") || (a.getAttribute("href") === "#/images" && path.startsWith("#/image"));
    if (here) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  for (const [re, show] of ROUTES) {
    const m = path.match(re);
    if (m) {
      page.setAttribute("aria-busy", "true");
      await show(page, m, new URLSearchParams(search || ""));
      page.removeAttribute("aria-busy");
      const title = $("page-title");
      document.title = `${title ? title.textContent : "imgnode"} · imgnode console`;
      return;
    }
  }
  location.hash = "#/images";
}

// ------------------------------------------------------------------------------------------
// Session

function showSignedIn(s) {
  session.account = s.account;
  session.csrf = s.csrf_token;
  session.scopes = s.scopes;
  session.keyId = s.key_id;
  $("who").textContent = `${s.account} (${s.scopes})`;
  $("signed-out").hidden = true;
  $("nav").hidden = false;
  $("who-box").hidden = false;
  $("page").hidden = false;
}

async function signedOut(message) {
  session.account = "";
  session.csrf = "";
  session.scopes = "";
  session.keyId = "";
  $("nav").hidden = true;
  $("who-box").hidden = true;
  $("page").hidden = true;
  $("page").replaceChildren();
  applyTheme("system");
  $("signed-out").hidden = false;
  document.title = "Sign in · imgnode console";
  if (message) say(message);
}

async function refresh() {
  try {
    showSignedIn(await call("GET", "/console/api/session"));
  } catch {
    await signedOut();
    return;
  }
  await call("GET", "/api/v1/settings").then((r) => applyTheme(r.settings.theme), () => {});
  if (!location.hash || location.hash === "#") location.hash = "#/images";
  else await route();
}

$("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  attempt(async () => {
    await call("POST", "/console/api/session/key", { key: $("key").value });
    $("key").value = "";
    say("Signed in.", "info", { next: true });
    await refresh();
  });
});

$("passkey-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  attempt(async () => {
    const start = await call("POST", "/console/api/session/passkey/options", { account: $("account").value.trim() });
    const cred = await navigator.credentials.get(requestOptions(start.options));
    await call("POST", "/console/api/session/passkey", { ceremony: start.ceremony, credential: credentialJson(cred) });
    say("Signed in with a passkey.", "info", { next: true });
    await refresh();
  });
});

$("sign-out").addEventListener("click", async () => {
  await attempt(() => call("DELETE", "/console/api/session"));
  await signedOut("Signed out.");
});

window.addEventListener("hashchange", () => {
  route().catch((e) => say(e.message, "error"));
});

refresh();
