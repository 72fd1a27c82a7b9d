// The account's pages: presets, API keys, usage, settings, export and erasure.
// Every call is the tenant API's (/api/v1), authorised by the session's key scopes.
import {
  applyTheme, attempt, bidi, bytes, call, copy, count, el, heading, load, navigate, say, session,
  show, when,
} from "./net.js";
import { FIELDS, builder, query } from "./builder.js";

const api = (path) => `/api/v1${path}`;

// ------------------------------------------------------------------------------------------
// Presets

/** The preset list, a form to create one, and (with `id`) the editor of one. */
export async function presetsPage(view, id) {
  const answer = await load(view, "Presets", call("GET", api("/settings/presets")));
  if (!answer) return;
  const { presets } = answer;
  const editing = id ? presets.find((p) => p.id === id || p.name === id) : null;
  const rows = presets.map((p) => el("tr", {},
    el("th", { scope: "row" }, el("code", {}, p.name)),
    el("td", {}, p.description ? bidi(p.description) : ""),
    el("td", {}, el("code", { class: "wrap" }, query(p.params || {}) || "(none)")),
    el("td", {}, count(p.usage_count)),
    el("td", {},
      el("a", { href: `#/presets/${encodeURIComponent(p.id)}`, class: "button small", "aria-label": `Edit preset ${p.name}` }, "Edit"), " ",
      el("button", { type: "button", class: "small danger", "aria-label": `Delete preset ${p.name}`, onclick: () => attempt(async () => {
        if (!confirm(`Delete the preset ${p.name}? URLs that name it will answer 400.`)) return;
        await call("DELETE", api(`/settings/presets/${encodeURIComponent(p.id)}`));
        say(`Preset ${p.name} deleted.`, "info", { next: true });
        await navigate("#/presets", () => presetsPage(view));
      }) }, "Delete"))));
  const table = presets.length
    ? el("table", { id: "presets-table" }, el("caption", {}, `${presets.length} preset${presets.length === 1 ? "" : "s"}`),
      el("thead", {}, el("tr", {}, ["Name", "Description", "Parameters", "Used", ""].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows))
    : el("p", {}, "No preset yet. A preset names a set of delivery parameters: ", el("code", {}, "?p:thumb"), ".");

  const name = el("input", { id: "preset-name", required: true, pattern: "[A-Za-z0-9_\\-]{1,50}", maxlength: 50, value: editing?.name || "" });
  const description = el("input", { id: "preset-description", maxlength: 200, value: editing?.description || "" });
  const b = builder({ params: editing?.params || {}, legend: "Parameters" });
  const form = el("form", { id: "preset-form", onsubmit: (ev) => {
    ev.preventDefault();
    attempt(async () => {
      const params = b.params();
      // Keys left empty are unset (null), so an edit can remove one.
      for (const f of FIELDS) if (!(f.key in params)) params[f.key] = null;
      const body = { name: name.value.trim(), description: description.value.trim() || null, params };
      if (editing) {
        await call("PUT", api(`/settings/presets/${encodeURIComponent(editing.id)}`), body);
        say(`Preset ${body.name} saved.`, "info", { next: true });
      } else {
        await call("POST", api("/settings/presets"), body);
        say(`Preset ${body.name} created.`, "info", { next: true });
      }
      await navigate("#/presets", () => presetsPage(view));
    });
  } },
  el("h3", {}, editing ? `Edit ${editing.name}` : "New preset"),
  el("div", { class: "form-grid" },
    el("label", { for: "preset-name" }, "Name (letters, digits, - and _)"), name,
    el("label", { for: "preset-description" }, "Description"), description),
  b.node,
  el("button", { type: "submit" }, editing ? "Save preset" : "Create preset"),
  editing ? el("a", { href: "#/presets", class: "button secondary" }, "Cancel") : null);
  show(view, heading("Presets"), table, form);
}

// ------------------------------------------------------------------------------------------
// API keys

export async function keysPage(view) {
  const answer = await load(view, "API keys", call("GET", api("/settings/api-keys")));
  if (!answer) return;
  const keys = answer.api_keys;
  const secret = el("div", { id: "new-key", hidden: true, class: "notice", role: "alert" });
  const rows = keys.map((k) => el("tr", { "data-key-id": k.id },
    el("th", { scope: "row" }, bidi(k.name || "(unnamed)"), k.id === session.keyId ? " (this session)" : ""),
    el("td", {}, el("code", {}, `${k.key_prefix || ""}…`)),
    el("td", {}, k.scopes),
    el("td", {}, when(k.created_at)),
    el("td", {}, k.expires_at ? when(k.expires_at) : "never"),
    el("td", {}, when(k.last_used_at)),
    el("td", {}, count(k.total_requests)),
    el("td", {}, el("button", { type: "button", class: "small danger", "aria-label": `Revoke key ${k.name}`, onclick: () => attempt(async () => {
      const self = k.id === session.keyId;
      if (!confirm(self ? "This session acts as this key: revoking it signs you out, and removes the passkeys registered under it. Revoke?" : `Revoke the key ${k.name}? Clients using it stop working at once.`)) return;
      await call("DELETE", api(`/settings/api-keys/${encodeURIComponent(k.id)}`));
      say(`Key ${k.name} revoked.`);
      if (self) location.reload();
      else await keysPage(view);
    }) }, "Revoke"))));
  const table = el("table", { id: "keys-table" },
    el("caption", {}, `${keys.length} key${keys.length === 1 ? "" : "s"}`),
    el("thead", {}, el("tr", {}, ["Name", "Prefix", "Scopes", "Created", "Expires", "Last used", "Requests", ""].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows));
  const name = el("input", { id: "key-name", required: true, maxlength: 100 });
  const scopes = ["read", "write", "account"].map((s) => el("label", { class: "check" },
    el("input", { type: "checkbox", name: "scope", value: s, checked: s !== "account", id: `scope-${s}` }), ` ${s}`));
  const days = el("input", { id: "key-days", type: "number", min: 1, max: 365, placeholder: "never" });
  const form = el("form", { id: "key-form-create", onsubmit: (ev) => {
    ev.preventDefault();
    attempt(async () => {
      const chosen = [...form.querySelectorAll('input[name="scope"]:checked')].map((i) => i.value);
      const body = { name: name.value.trim(), scopes: chosen };
      if (days.value) body.expires_in_days = Number(days.value);
      const k = await call("POST", api("/settings/api-keys"), body);
      await keysPage(view);
      const shown = document.getElementById("new-key");
      const value = el("input", { id: "new-key-secret", readonly: true, class: "url", value: k.key, "aria-label": "The new key" });
      shown.replaceChildren(el("p", {}, el("strong", {}, "Copy the key now: it is shown only once."), " Only its hash is stored."),
        el("div", { class: "inline" }, value, el("button", { type: "button", onclick: () => copy(k.key) }, "Copy key")));
      shown.hidden = false;
      value.select();
      say(`Key ${k.name} created.`);
    });
  } },
  el("h3", {}, "New key"),
  el("div", { class: "form-grid" },
    el("label", { for: "key-name" }, "Name"), name,
    el("span", { class: "label", id: "scopes-label" }, "Scopes"), el("div", { role: "group", "aria-labelledby": "scopes-label" }, scopes),
    el("label", { for: "key-days" }, "Expires after (days, empty: never)"), days),
  el("button", { type: "submit" }, "Create key"));
  show(view, heading("API keys"), secret, table, form);
}

// ------------------------------------------------------------------------------------------
// Usage

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, ...children) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
  n.append(...children);
  return n;
}

/** A bar chart of `months` (`[{period, value}]`), with a table beside for screen readers. */
function chart(title, months, format) {
  const w = 36;
  const h = 120;
  const max = Math.max(1, ...months.map((m) => m.value));
  const bars = months.map((m, i) => {
    const bh = Math.round((m.value / max) * (h - 20));
    const t = svg("title", {});
    t.textContent = `${m.period}: ${format(m.value)}`;
    const label = svg("text", { x: i * w + w / 2, y: h + 14, "text-anchor": "middle", class: "axis" });
    label.textContent = m.period.slice(2);
    return svg("g", {}, svg("rect", { x: i * w + 4, y: h - bh, width: w - 8, height: Math.max(bh, 1), class: "bar" }, t), label);
  });
  const figure = el("figure", { class: "chart" },
    el("figcaption", {}, title),
    svg("svg", { viewBox: `0 0 ${Math.max(months.length * w, w)} ${h + 20}`, role: "img", "aria-label": `${title}, by month` }, ...bars),
    el("table", { class: "visually-hidden" }, el("caption", {}, title),
      el("tbody", {}, months.map((m) => el("tr", {}, el("th", { scope: "row" }, m.period), el("td", {}, format(m.value)))))));
  return figure;
}

function meter(label, used, limit, format) {
  const id = `m-${label.replace(/\W+/g, "-").toLowerCase()}`;
  const text = `${format(used)} of ${limit === null || limit === undefined ? "unlimited" : format(limit)}`;
  const bar = limit ? el("meter", { id, min: 0, max: limit, value: Math.min(used, limit), low: limit * 0.8, high: limit * 0.95, optimum: 0 }) : null;
  return el("div", { class: "usage-row" }, el("label", { for: id }, label), bar, el("span", { class: "usage-text" }, text));
}

export async function usagePage(view) {
  const u = await load(view, "Usage", call("GET", api("/usage")));
  if (!u) return;
  const l = u.plan_limits;
  const c = u.current_period;
  // Twelve monthly slots ending with this one; months without a record count zero.
  const byPeriod = new Map((u.history || [c]).map((m) => [m.period, m]));
  const [year, month] = c.period.split("-").map(Number);
  const periods = Array.from({ length: 12 }, (_, i) => {
    const d = new Date(Date.UTC(year, month - 12 + i, 1));
    return `${d.getUTCFullYear()}-${String(d.getUTCMonth() + 1).padStart(2, "0")}`;
  });
  const series = (key) => periods.map((period) => ({ period, value: byPeriod.get(period)?.[key] ?? 0 }));
  show(view, heading("Usage"),
    el("p", {}, `Plan ${u.plan_name} · period ${c.period} (${when(c.period_start)} to ${when(c.period_end)})`),
    el("section", { "aria-labelledby": "current-title", id: "usage-current" }, el("h3", { id: "current-title" }, "This month"),
      meter("Uploads", c.uploads, l.max_uploads_per_month, count),
      meter("Transformations", c.transformations, l.max_transformations_per_month, count),
      meter("Bandwidth", c.bandwidth_bytes, l.max_bandwidth_per_month, bytes),
      meter("API requests", c.api_requests, l.max_api_requests_per_month, count),
      meter("Storage", u.storage_used_bytes, l.max_storage_bytes, bytes),
      el("p", {}, `${count(u.total_images)} images stored.`)),
    el("section", { "aria-labelledby": "history-title", class: "charts" }, el("h3", { id: "history-title" }, "Recent months"),
      chart("Uploads", series("uploads"), count),
      chart("Transformations", series("transformations"), count),
      chart("Bandwidth", series("bandwidth_bytes"), bytes),
      chart("API requests", series("api_requests"), count)));
}

// ------------------------------------------------------------------------------------------
// Settings

export async function settingsPage(view) {
  const answer = await load(view, "Settings", call("GET", api("/settings")));
  if (!answer) return;
  const s = answer.settings;
  const input = (id, attrs) => el("input", { id, ...attrs });
  const select = (id, options, value) => {
    const node = el("select", { id }, options.map((o) => el("option", { value: o }, o)));
    node.value = value;
    return node;
  };
  const f = {
    email: input("set-email", { type: "email", value: s.email || "" }),
    delivery_formats: input("set-formats", { value: (s.delivery_formats || []).join(", "), pattern: "[a-z, ]+" }),
    default_quality: input("set-quality", { type: "number", min: 1, max: 100, value: s.default_quality }),
    default_fit_mode: select("set-fit", ["cover", "contain", "fill", "scale-down"], s.default_fit_mode),
    default_max_width: input("set-max-width", { type: "number", min: 1, max: 10000, value: s.default_max_width ?? "" }),
    default_max_height: input("set-max-height", { type: "number", min: 1, max: 10000, value: s.default_max_height ?? "" }),
    theme: select("set-theme", ["system", "light", "dark"], s.theme),
    language: input("set-language", { value: s.language || "", maxlength: 10 }),
    allowed_widths: input("set-widths", { value: (s.allowed_widths || []).join(", "), pattern: "[0-9, ]*", placeholder: "any width" }),
    widths_policy: select("set-widths-policy", ["snap", "refuse"], s.widths_policy),
    max_quality: input("set-max-quality", { type: "number", min: 1, max: 100, value: s.max_quality ?? "" }),
    serve_originals: input("set-serve-originals", { type: "checkbox", checked: !!s.serve_originals }),
  };
  const num = (v) => (v.trim() === "" ? null : Number(v));
  const form = el("form", { id: "settings-form", onsubmit: (ev) => {
    ev.preventDefault();
    attempt(async () => {
      const body = {
        email: f.email.value.trim() || null,
        delivery_formats: f.delivery_formats.value.split(/[\s,]+/).filter(Boolean),
        default_quality: Number(f.default_quality.value),
        default_fit_mode: f.default_fit_mode.value,
        default_max_width: num(f.default_max_width.value),
        default_max_height: num(f.default_max_height.value),
        theme: f.theme.value,
        language: f.language.value.trim(),
        allowed_widths: f.allowed_widths.value.split(/[\s,]+/).filter(Boolean).map(Number),
        widths_policy: f.widths_policy.value,
        max_quality: num(f.max_quality.value),
        serve_originals: f.serve_originals.checked,
      };
      const r = await call("PUT", api("/settings"), body);
      applyTheme(r.settings.theme);
      say(r.message || "Settings saved.");
      await settingsPage(view);
    });
  } },
  el("div", { class: "form-grid" },
    el("label", { for: "set-email" }, "Contact e-mail"), f.email,
    el("label", { for: "set-formats" }, "Formats for format=auto, in order (avif, webp, jpeg, png, jxl)"), f.delivery_formats,
    el("label", { for: "set-quality" }, "Default quality"), f.default_quality,
    el("label", { for: "set-fit" }, "Default fit"), f.default_fit_mode,
    el("label", { for: "set-max-width" }, "Largest width delivered (empty: no bound)"), f.default_max_width,
    el("label", { for: "set-max-height" }, "Largest height delivered (empty: no bound)"), f.default_max_height,
    el("label", { for: "set-theme" }, "Theme"), f.theme,
    el("label", { for: "set-language" }, "Language"), f.language,
    el("label", { for: "set-widths" }, "Allowed widths in device pixels (empty: any)"), f.allowed_widths,
    el("label", { for: "set-widths-policy" }, "A width not allowed is"), f.widths_policy,
    el("label", { for: "set-max-quality" }, "Highest quality rendered (empty: no bound)"), f.max_quality,
    el("label", { for: "set-serve-originals" }, "Serve originals at full size (the stored extension, no parameters)"), f.serve_originals),
  el("button", { type: "submit" }, "Save settings"));
  show(view, heading("Settings"),
    el("p", {}, `Account ${s.username} on plan ${s.plan}, since ${when(s.created_at)}; ${count(s.total_uploads)} uploads, ${bytes(s.storage_used_bytes)} stored.`),
    form);
}

// ------------------------------------------------------------------------------------------
// Export and erasure

export function accountPage(view, signedOut) {
  const confirmInput = el("input", { id: "erase-confirm", autocomplete: "off", spellcheck: "false" });
  const erase = el("button", { type: "submit", class: "danger", id: "erase-button", disabled: true }, "Erase this account");
  confirmInput.addEventListener("input", () => {
    erase.disabled = confirmInput.value !== session.account;
  });
  const form = el("form", { id: "erase-form", onsubmit: (ev) => {
    ev.preventDefault();
    if (confirmInput.value !== session.account) return;
    attempt(async () => {
      await call("DELETE", api("/account"), { confirm: confirmInput.value });
      await signedOut("The account and everything in it is erased.");
    });
  } },
  el("h3", {}, "Erase the account"),
  el("p", {}, "Erasure deletes every image, original, path, preset, key, passkey, usage record and cached variant of this account, at once and for good. It needs a key with the ", el("code", {}, "account"), " scope."),
  el("label", { for: "erase-confirm" }, "Type the account name, ", el("strong", {}, session.account), ", to confirm"),
  el("div", { class: "inline" }, confirmInput, erase));
  show(view, heading("Account"),
    el("section", { "aria-labelledby": "export-title" },
      el("h3", { id: "export-title" }, "Export"),
      el("p", {}, "Everything stored for this account, as a tar archive: metadata as JSON and every original. Needs a key with the ", el("code", {}, "account"), " scope."),
      el("a", { class: "button", href: "/api/v1/account/export", download: `${session.account}-export.tar`, id: "export-link" }, "Download the export")),
    form);
}
