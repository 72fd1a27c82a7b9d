// Images: the folder browser with its thumbnail grid, search, multi-select delete and
// visibility toggle; the upload page; one image's page with the URL builder.
// Every call is the tenant API's (/api/v1); thumbnails and previews are the node's own
// delivery URLs, asked for from this origin.
import {
  ApiError, attempt, bidi, bytes, call, copy, el, heading, load, local, say, session, show, upload, when,
} from "./net.js";
import { builder, query } from "./builder.js";

const PAGE = 48;
const THUMB = 200;

const api = (path) => `/api/v1${path}`;
const enc = (path) => path.split("/").map(encodeURIComponent).join("/");

/** `#/images?path=a/b`: a link to a folder of the browser. */
export const folderLink = (path) => `#/images${path ? `?path=${encodeURIComponent(path)}` : ""}`;

/** A square thumbnail delivered by the node (WebP, first frame), or a private placeholder. */
function thumbnail(item) {
  if (item.visibility === "private") {
    return el("span", { class: "thumb private", role: "img", "aria-label": "Private image: no public thumbnail" }, "Private");
  }
  const base = local(item.cdn_url).split("?")[0].replace(/\.[^./]+$/, ".webp");
  const src = (dpr) => `${base}?w=${THUMB}&h=${THUMB}&fit=cover&animated=false${dpr > 1 ? `&dpr=${dpr}` : ""}`;
  return el("img", {
    class: "thumb", src: src(1), srcset: `${src(1)} 1x, ${src(2)} 2x`,
    width: THUMB, height: THUMB, loading: "lazy", alt: item.original_filename,
  });
}

async function setVisibility(id, visibility) {
  await call("PATCH", api(`/images/${encodeURIComponent(id)}/visibility`), { visibility });
}

/** The images page: folders, a grid of one folder level (or of search results). */
export async function imagesPage(view, params) {
  const path = params.get("path") || "";
  const q = params.get("q") || "";
  const offset = Math.max(0, Number(params.get("offset")) || 0);
  const selected = new Set();

  const crumbs = el("nav", { "aria-label": "Folder", class: "crumbs" },
    el("a", { href: folderLink("") }, session.account));
  let acc = "";
  for (const part of path.split("/").filter(Boolean)) {
    acc = acc ? `${acc}/${part}` : part;
    crumbs.append(" / ", el("a", { href: folderLink(acc) }, bidi(part)));
  }
  const search = el("form", { role: "search", class: "inline", onsubmit: (ev) => {
    ev.preventDefault();
    const v = ev.target.elements.q.value.trim();
    location.hash = v ? `#/images?q=${encodeURIComponent(v)}` : folderLink(path);
  } },
  el("label", { for: "search-q" }, "Search by name or path"),
  el("input", { id: "search-q", name: "q", type: "search", maxlength: 100, value: q }),
  el("button", { type: "submit" }, "Search"));

  const deleteButton = el("button", { type: "button", id: "delete-selected", disabled: true, class: "danger" }, "Delete selected");
  const countNote = el("span", { id: "selected-count", "aria-live": "polite" }, "");
  const updateSelection = () => {
    deleteButton.disabled = selected.size === 0;
    deleteButton.textContent = selected.size ? `Delete ${selected.size} selected` : "Delete selected";
    countNote.textContent = selected.size ? `${selected.size} selected` : "";
  };
  deleteButton.addEventListener("click", async () => {
    const n = selected.size;
    if (!n || !confirm(`Delete ${n} image${n === 1 ? "" : "s"} and every path of ${n === 1 ? "it" : "them"}? This cannot be undone.`)) return;
    let done = 0;
    const failed = [];
    for (const id of selected) {
      try {
        await call("DELETE", api(`/images/${encodeURIComponent(id)}`));
        done += 1;
      } catch (e) {
        failed.push(e.message);
      }
    }
    say(failed.length ? `Deleted ${done}; ${failed.length} failed: ${failed[0]}` : `Deleted ${done} image${done === 1 ? "" : "s"}.`,
      failed.length ? "error" : "info");
    await imagesPage(view, params);
  });

  const uploadHref = `#/upload${path ? `?path=${encodeURIComponent(path)}` : ""}`;
  const toolbar = el("div", { class: "toolbar" }, el("a", { class: "button", href: uploadHref }, "Upload images"), deleteButton, countNote);

  let items;
  let folders = [];
  let total = 0;
  let hasMore = false;
  try {
    if (q) {
      const r = await call("GET", api(`/images/search?q=${encodeURIComponent(q)}&limit=${PAGE}&offset=${offset}`));
      items = r.results;
      total = r.total;
      hasMore = offset + items.length < total;
    } else {
      const r = await call("GET", api(`/images?limit=${PAGE}&offset=${offset}${path ? `&path=${encodeURIComponent(path)}` : ""}`));
      items = r.images;
      folders = r.folders;
      total = r.total;
      hasMore = r.has_more;
    }
  } catch (e) {
    show(view, heading("Images"), search, el("p", { class: "error" }, e.message));
    return;
  }

  const folderList = folders.length
    ? el("ul", { class: "folders", "aria-label": "Folders" }, folders.map((f) => el("li", {},
      el("a", { href: folderLink(path ? `${path}/${f.name}` : f.name) }, "📁 ", bidi(f.name), ` (${f.image_count})`))))
    : null;

  const grid = el("ul", { class: "grid", id: "image-grid", "aria-label": q ? "Search results" : "Images in this folder" });
  for (const item of items) {
    const name = item.original_filename;
    const box = el("input", { type: "checkbox", "aria-label": `Select ${name}`, class: "select" });
    box.addEventListener("change", () => {
      if (box.checked) selected.add(item.id);
      else selected.delete(item.id);
      updateSelection();
    });
    const isPrivate = item.visibility === "private";
    const toggle = el("button", { type: "button", class: "small", "aria-label": `Make ${name} ${isPrivate ? "public" : "private"}` },
      isPrivate ? "Make public" : "Make private");
    toggle.addEventListener("click", () => attempt(async () => {
      await setVisibility(item.id, isPrivate ? "public" : "private");
      say(`${name} is now ${isPrivate ? "public" : "private"}.`);
      await imagesPage(view, params);
    }));
    grid.append(el("li", { class: "card", "data-id": item.id },
      el("a", { href: `#/image/${encodeURIComponent(item.id)}`, class: "thumb-link" },
        thumbnail(item),
        el("span", { class: "name" }, bidi(name))),
      el("span", { class: "path" }, bidi((item.paths || [])[0] || "")),
      el("span", { class: "meta" }, `${bytes(item.size)} · ${item.visibility}`),
      el("div", { class: "card-actions" }, box, toggle)));
  }
  const empty = items.length || folders.length ? null
    : el("p", {}, q ? "No image matches." : "No image here yet. ", q ? null : el("a", { href: uploadHref }, "Upload some."));

  const pager = el("nav", { class: "pager", "aria-label": "Pages" });
  const at = (o) => {
    const p = new URLSearchParams(params);
    p.set("offset", String(o));
    return `#/images?${p}`;
  };
  if (offset > 0) pager.append(el("a", { href: at(Math.max(0, offset - PAGE)) }, "← Previous"));
  if (total) pager.append(el("span", {}, ` ${offset + 1}–${offset + items.length} of ${total} `));
  if (hasMore) pager.append(el("a", { href: at(offset + PAGE) }, "Next →"));

  show(view, heading(q ? "Search" : "Images"), q ? null : crumbs, search, toolbar, folderList, grid, empty, pager);
}

/** The upload page: a drop zone and file input; one row per file with its progress. */
export function uploadPage(view, params) {
  const list = el("ol", { id: "upload-list", class: "uploads", "aria-label": "Uploads" });
  const folder = el("input", { id: "upload-folder", name: "folder", value: params.get("path") || "", placeholder: "e.g. products/shoes" });
  const visibility = el("select", { id: "upload-visibility" },
    el("option", { value: "public" }, "Public"), el("option", { value: "private" }, "Private"));
  const overwrite = el("input", { id: "upload-overwrite", type: "checkbox" });
  const input = el("input", { id: "upload-files", type: "file", multiple: true, accept: "image/*", class: "visually-hidden" });
  let queue = Promise.resolve();

  const send = (file) => {
    const bar = el("progress", { max: 100, value: 0, "aria-label": `Upload progress of ${file.name}` });
    const state = el("span", { class: "state" }, "waiting");
    const row = el("li", { class: "upload", "data-state": "waiting" }, el("span", { class: "name" }, bidi(file.name)), bar, state);
    list.append(row);
    queue = queue.then(async () => {
      row.dataset.state = "sending";
      state.textContent = "uploading";
      const form = new FormData();
      form.append("file", file, file.name);
      if (folder.value.trim()) form.append("target_path", folder.value.trim());
      form.append("visibility", visibility.value);
      if (overwrite.checked) form.append("overwrite", "true");
      try {
        const r = await upload(api("/images"), form, (sent, total) => {
          bar.value = Math.round((sent / total) * 100);
        });
        bar.value = 100;
        row.dataset.state = "done";
        state.replaceChildren(r.is_new ? "uploaded as " : "already stored; added as ",
          el("a", { href: `#/image/${encodeURIComponent(r.id)}` }, bidi((r.paths || [])[0] || r.id)));
      } catch (e) {
        row.dataset.state = "error";
        row.classList.add("error");
        state.textContent = e instanceof ApiError && e.code ? `${e.code}: ${e.message}` : e.message;
      }
    });
  };
  const sendAll = (files) => {
    for (const f of files) send(f);
    queue.then(() => {
      const failed = list.querySelectorAll('[data-state="error"]').length;
      say(failed ? `${failed} upload${failed === 1 ? "" : "s"} failed: see the list.` : "Every upload finished.", failed ? "error" : "info");
    });
  };
  input.addEventListener("change", () => {
    sendAll([...input.files]);
    input.value = "";
  });
  const zone = el("div", { class: "dropzone", id: "dropzone" },
    el("p", {}, "Drop image files here, or "),
    el("label", { for: "upload-files", class: "button" }, "choose files"), input);
  zone.addEventListener("dragover", (ev) => {
    ev.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (ev) => {
    ev.preventDefault();
    zone.classList.remove("over");
    sendAll([...ev.dataTransfer.files]);
  });
  show(view, heading("Upload"),
    el("div", { class: "form-grid" },
      el("label", { for: "upload-folder" }, "Folder (or a full path ending in a file name)"), folder,
      el("label", { for: "upload-visibility" }, "Visibility"), visibility,
      el("label", { for: "upload-overwrite" }, "Replace an image stored under the same name"), overwrite),
    zone, list,
    el("p", {}, el("a", { href: folderLink(folder.value.trim()) }, "Back to the images")));
}

/** One image: metadata, paths, URL builder with live preview, snippets, signed URL. */
export async function imagePage(view, id) {
  const image = await load(view, "Image", call("GET", api(`/images/${encodeURIComponent(id)}`)));
  if (!image) return;
  const presets = await call("GET", api("/settings/presets")).then((r) => r.presets).catch(() => []);
  const m = image.metadata;
  const isPrivate = image.visibility === "private";
  const original = image.urls.original;
  const origExt = original.match(/\.([^./?]+)(\?|$)/)?.[1] || "jpg";
  const stem = original.replace(/\.[^./?]+$/, "");

  const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
  if (/^[0-9a-f]{6}$/i.test(m.dominant_color || "")) swatch.style.background = `#${m.dominant_color}`;
  const facts = el("dl", { class: "facts" },
    el("dt", {}, "File name"), el("dd", { id: "image-filename" }, bidi(m.original_filename)),
    el("dt", {}, "Id"), el("dd", {}, el("code", {}, image.id)),
    el("dt", {}, "Type"), el("dd", {}, m.mime_type),
    el("dt", {}, "Dimensions"), el("dd", {}, `${m.width} × ${m.height} px${m.frame_count > 1 ? `, ${m.frame_count} frames` : ""}`),
    el("dt", {}, "Size"), el("dd", {}, bytes(m.size)),
    el("dt", {}, "Uploaded"), el("dd", {}, when(m.uploaded_at)),
    el("dt", {}, "Dominant colour"), el("dd", {}, swatch, ` #${m.dominant_color}`),
    el("dt", {}, "Visibility"), el("dd", {}, image.visibility, " ",
      el("button", { type: "button", class: "small", onclick: () => attempt(async () => {
        await setVisibility(image.id, isPrivate ? "public" : "private");
        say(`The image is now ${isPrivate ? "public" : "private"}.`);
        await imagePage(view, id);
      }) }, isPrivate ? "Make public" : "Make private")),
    el("dt", {}, "Content hash"), el("dd", {}, el("code", { class: "wrap" }, m.hash)));

  const paths = el("ul", { class: "paths", id: "image-paths" }, (image.paths || []).map((p) => el("li", {},
    el("code", {}, bidi(p)), " ",
    el("button", { type: "button", class: "small", "aria-label": `Remove the path ${p}`, onclick: () => attempt(async () => {
      if (!confirm(`Remove the path ${p}? The image goes with its last path.`)) return;
      const r = await call("DELETE", api(`/images/path/${encodeURIComponent(session.account)}/${enc(p)}`));
      say(r.message, "info", { next: r.image_deleted });
      if (r.image_deleted) location.hash = folderLink("");
      else await imagePage(view, id);
    }) }, "Remove"))));

  // The builder, with the account's presets first.
  const presetSelect = el("select", { id: "url-preset" }, el("option", { value: "" }, "(none)"),
    presets.map((p) => el("option", { value: p.name }, p.name)));
  const preset = el("div", { class: "field" }, el("label", { for: "url-preset" }, "Preset"), presetSelect);
  const urlOut = el("input", { id: "url-output", readonly: true, class: "url", "aria-label": "Delivery URL" });
  const preview = el("img", { id: "preview", alt: `Preview of ${m.original_filename}` });
  const previewSize = el("output", { id: "preview-size", "aria-live": "polite" });
  const srcsetOut = el("code", { id: "srcset-snippet" });
  const pictureOut = el("code", { id: "picture-snippet" });
  const signedOut = el("input", { id: "signed-url", readonly: true, class: "url", "aria-label": "Signed URL" });
  let current = "";
  let timer = 0;

  const compose = (params, ext) => {
    const p = { ...params };
    let e = ext;
    if (p.format && p.format !== "auto") {
      e = p.format;
      delete p.format;
    }
    const parts = [];
    if (presetSelect.value) parts.push(`p:${encodeURIComponent(presetSelect.value)}`);
    const qs = query(p);
    if (qs) parts.push(qs);
    return `${stem}.${e}${parts.length ? `?${parts.join("&")}` : ""}`;
  };
  const showPreview = (src) => {
    previewSize.textContent = "loading…";
    preview.src = local(src);
  };
  const update = () => {
    const params = b.params();
    current = compose(params, origExt);
    urlOut.value = current;
    const noW = { ...params };
    delete noW.w;
    delete noW.dpr;
    const widths = [320, 640, 960, 1280, 1920].filter((w) => w <= Math.max(320, m.width));
    const at = (w, fmt) => compose({ ...noW, w: String(w), ...(fmt ? { format: fmt } : {}) }, origExt);
    const srcset = widths.map((w) => `${at(w)} ${w}w`).join(", ");
    const fallback = at(widths[Math.min(1, widths.length - 1)]);
    const alt = m.original_filename.replace(/[<>&"]/g, "");
    srcsetOut.textContent = `<img src="${fallback}"\n     srcset="${srcset}"\n     sizes="(max-width: 800px) 100vw, 800px" alt="${alt}">`;
    const sources = ["avif", "webp"].map((f) => `  <source type="image/${f}" srcset="${widths.map((w) => `${at(w, f)} ${w}w`).join(", ")}" sizes="(max-width: 800px) 100vw, 800px">`);
    pictureOut.textContent = `<picture>\n${sources.join("\n")}\n  <img src="${at(widths[Math.min(1, widths.length - 1)], "jpeg")}" alt="${alt}">\n</picture>`;
    if (isPrivate) {
      previewSize.textContent = "A private image is delivered only by a signed URL: create one below to preview.";
      return;
    }
    clearTimeout(timer);
    timer = setTimeout(() => showPreview(current), 250);
  };
  preview.addEventListener("load", () => {
    previewSize.textContent = `${preview.naturalWidth} × ${preview.naturalHeight} px`;
  });
  preview.addEventListener("error", async () => {
    // Ask the same URL again for the node's JSON error, to say why.
    const why = await fetch(preview.src).then((r) => r.json()).then((d) => d?.error?.message).catch(() => "");
    previewSize.textContent = `The node refused this URL${why ? `: ${why}` : "."}`;
  });
  presetSelect.addEventListener("change", update);
  const b = builder({ onChange: update, legend: "Build a delivery URL", extra: [preset] });

  const expiry = el("select", { id: "signed-expiry" },
    [["3600", "1 hour"], ["86400", "1 day"], ["604800", "7 days"]].map(([v, t]) => el("option", { value: v }, t)));
  const signedSection = el("section", { "aria-labelledby": "signed-title" },
    el("h3", { id: "signed-title" }, "Signed URL"),
    el("p", {}, isPrivate ? "This image is private: only signed URLs deliver it." : "A signed URL of these parameters works until it expires, whatever the image's visibility."),
    el("div", { class: "inline" },
      el("label", { for: "signed-expiry" }, "Valid for"), expiry,
      el("button", { type: "button", id: "create-signed", onclick: () => attempt(async () => {
        const params = b.params();
        if (presetSelect.value) say("A signed URL carries explicit parameters only: the preset is left out.");
        const r = await call("POST", api(`/images/${encodeURIComponent(image.id)}/signed-url`), {
          expires_in_seconds: Number(expiry.value),
          transform: query(params),
        });
        signedOut.value = r.signed_url;
        if (isPrivate) showPreview(r.signed_url);
      }) }, "Create signed URL")),
    signedOut, el("button", { type: "button", class: "small", onclick: () => signedOut.value && copy(signedOut.value) }, "Copy signed URL"));

  show(view, heading(bidi(m.original_filename)),
    el("div", { class: "detail" },
      el("section", { "aria-labelledby": "facts-title" }, el("h3", { id: "facts-title" }, "Details"), facts,
        el("h3", {}, "Paths"), paths,
        el("button", { type: "button", class: "danger", id: "delete-image", onclick: () => attempt(async () => {
          if (!confirm(`Delete ${m.original_filename} and all its paths? This cannot be undone.`)) return;
          await call("DELETE", api(`/images/${encodeURIComponent(image.id)}`));
          say("Image deleted.", "info", { next: true });
          location.hash = folderLink("");
        }) }, "Delete this image")),
      el("section", { "aria-labelledby": "builder-title" }, el("h3", { id: "builder-title" }, "URL builder"), b.node,
        el("div", { class: "inline" }, urlOut, el("button", { type: "button", onclick: () => copy(urlOut.value) }, "Copy URL")),
        el("figure", { class: "preview" }, preview, el("figcaption", {}, "Preview: ", previewSize)),
        el("h3", {}, "Responsive snippets"),
        el("p", {}, el("code", {}, "srcset"), " (widths up to the original's):"),
        el("pre", {}, srcsetOut), el("button", { type: "button", class: "small", onclick: () => copy(srcsetOut.textContent) }, "Copy srcset snippet"),
        el("p", {}, el("code", {}, "<picture>"), " with AVIF and WebP sources:"),
        el("pre", {}, pictureOut), el("button", { type: "button", class: "small", onclick: () => copy(pictureOut.textContent) }, "Copy picture snippet"),
        signedSection)));
  update();
}
