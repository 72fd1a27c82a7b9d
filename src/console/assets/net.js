// What every console page shares: calls to the node (the tenant API under /api/v1 and the
// console's own /console/api), the session's CSRF token, safe DOM building and formatting.
// Text from the server only ever becomes a Text node (through `el`), never markup.

export const session = { account: "", csrf: "", scopes: "" };

/** An error answer of the API: its HTTP status, `error.code` and message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers(json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  if (session.csrf) h["X-CSRF-Token"] = session.csrf;
  return h;
}

async function answer(res) {
  const data = await res.json().catch(() => ({}));
  if (!res.ok) {
    throw new ApiError(
      res.status,
      data?.error?.code || "",
      data?.error?.message || `request failed (${res.status})`,
    );
  }
  return data;
}

/** A JSON call: `body` is sent as JSON when given. */
export async function call(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: headers(body !== undefined),
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return answer(res);
}

/**
 * A multipart upload with progress: `onProgress(sent, total)` while the body goes out.
 * (fetch cannot report upload progress; XMLHttpRequest can.)
 */
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    for (const [k, v] of Object.entries(headers(false))) xhr.setRequestHeader(k, v);
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) onProgress(e.loaded, e.total);
    });
    xhr.addEventListener("load", () => {
      const data = xhr.response || {};
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else {
        reject(new ApiError(
          xhr.status,
          data?.error?.code || "",
          data?.error?.message || `upload failed (${xhr.status})`,
        ));
      }
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "", "the upload was interrupted")));
    xhr.send(form);
  });
}

/**
 * `el("a", {href: x, class: "y"}, "text", child)`: an element with attributes (`on*` keys
 * become listeners, `hidden`/`checked`/`disabled`/`value` properties) and children, where
 * strings become Text nodes. User-supplied text may hold bidirectional controls: put it in
 * `bidi(...)` so it cannot reorder what surrounds it.
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (["hidden", "checked", "disabled", "value", "selected"].includes(k)) node[k] = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

// Bidirectional controls (ALM, LRM, RLM, LRE..RLO, LRI..PDI): in a file name they only
// serve to disguise it ("photo-\u202Egpj.exe" shows as "photo-exe.jpg").
const BIDI_CONTROL = /[\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]/g;

/** How `text` shows: each bidirectional control as a visible `[U+XXXX]` marker. */
export const visible = (text) =>
  String(text).replace(BIDI_CONTROL, (c) => `[U+${c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}]`);

/**
 * User text (file names, paths, key and preset names) as text, isolated from what surrounds
 * it, with bidirectional controls shown as markers rather than obeyed.
 */
export const bidi = (text) => el("bdi", {}, visible(text));

/** `view.replaceChildren(...)`, leaving out the absent parts (null, undefined, false). */
export function show(view, ...children) {
  view.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

/** The status line's message is for the next page (see `say`). */
let keep = false;

/**
 * Writes the status line every page shares (an ARIA live region). `{ next: true }`: the
 * message is about to be followed by a move to another page, and stays there.
 */
export function say(text, kind = "info", { next = false } = {}) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.dataset.kind = kind;
  keep = next;
}

/**
 * Shows the page at `hash`: through the router when the address changes, else by
 * `rerender()` (the same address raises no hashchange).
 */
export async function navigate(hash, rerender) {
  if (location.hash === hash) {
    keep = false;
    await rerender();
  } else {
    location.hash = hash;
  }
}

/** On a new page: clears the status line, unless its message was meant for that page. */
export function staleStatus() {
  if (keep) keep = false;
  else say("");
}

/**
 * What a page shows first: the answer of `request` (a promise of a call), or, when it fails,
 * the page's title and the error in place of the page (then `undefined`).
 */
export async function load(view, title, request) {
  try {
    return await request;
  } catch (e) {
    show(view, heading(title), el("p", { class: "error" }, e.message));
    return undefined;
  }
}

/** Runs `fn`, showing its error in the status line instead of throwing. */
export async function attempt(fn) {
  try {
    return await fn();
  } catch (e) {
    say(e.message, "error");
    return undefined;
  }
}

export function bytes(n) {
  if (n === null || n === undefined) return "unlimited";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let v = Number(n);
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i += 1;
  }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

export const count = (n) => (n === null || n === undefined ? "unlimited" : Number(n).toLocaleString("en"));

export function when(iso) {
  if (!iso) return "never";
  const d = typeof iso === "number" ? new Date(iso * 1000) : new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}

/** The path and query of a delivery URL: the console shows images from its own origin. */
export function local(url) {
  const u = new URL(url, location.origin);
  return u.pathname + u.search;
}

/** Copies `text`, saying so. */
export async function copy(text) {
  try {
    await navigator.clipboard.writeText(text);
    say("Copied.");
  } catch {
    say("The browser refused the clipboard: select the text and copy it.", "error");
  }
}

/** A page heading (text or a node) that takes the focus, so screen readers announce the new page. */
export function heading(text) {
  const h = el("h2", { tabindex: "-1", id: "page-title" }, text);
  queueMicrotask(() => h.focus({ preventScroll: true }));
  return h;
}

/** The account's `theme` setting: light, dark, or (anything else) the system's. */
export function applyTheme(theme) {
  if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
  else delete document.documentElement.dataset.theme;
}
