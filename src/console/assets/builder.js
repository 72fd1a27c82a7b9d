// The delivery-parameter builder: one labelled control per delivery key (the keys a preset
// may hold), used by the image page (URL builder with live preview) and the preset editor.
import { el } from "./net.js";

const CROPS = ["center", "top", "bottom", "left", "right", "top-left", "top-right",
  "bottom-left", "bottom-right", "attention", "entropy"];

/** Every delivery key, in the order URLs spell them. */
export const FIELDS = [
  { key: "w", label: "Width (px)", type: "number", min: 1, max: 10000 },
  { key: "h", label: "Height (px)", type: "number", min: 1, max: 10000 },
  { key: "fit", label: "Fit", options: ["cover", "contain", "fill", "scale-down"] },
  { key: "aspect", label: "Aspect ratio", type: "text", pattern: "original|\\d{1,3}:\\d{1,3}", placeholder: "16:9" },
  { key: "crop", label: "Crop anchor", options: CROPS },
  { key: "dpr", label: "Device pixel ratio", type: "number", min: 1, max: 4, step: 0.25 },
  { key: "q", label: "Quality", type: "number", min: 1, max: 100 },
  { key: "format", label: "Format", options: ["auto", "jpeg", "png", "webp", "avif", "jxl", "gif"] },
  { key: "rotate", label: "Rotate", options: ["0", "90", "180", "270", "auto"] },
  { key: "flip", label: "Flip", options: ["h", "v", "both"] },
  { key: "grayscale", label: "Grayscale", type: "checkbox" },
  { key: "blur", label: "Blur (0-100)", type: "number", min: 0, max: 100 },
  { key: "sharpen", label: "Sharpen (0-100)", type: "number", min: 0, max: 100 },
  { key: "bg", label: "Background (RRGGBB)", type: "text", pattern: "[0-9A-Fa-f]{6}", placeholder: "ffffff" },
  { key: "frame", label: "Frame of an animation", type: "number", min: 0, max: 9999 },
  { key: "animated", label: "Animated", options: ["true", "false"] },
];

let serial = 0;

/**
 * A fieldset of controls filled from `params` (an object of delivery keys); `onChange()`
 * runs on every edit. Returns `{ node, params() }`, where `params()` holds only the keys
 * set, as the strings a URL carries. `extra` controls (e.g. the preset picker) go first.
 */
export function builder({ params = {}, onChange = () => {}, legend = "Delivery parameters", extra = [] }) {
  const id = `b${(serial += 1)}`;
  const controls = new Map();
  const rows = FIELDS.map((f) => {
    const inputId = `${id}-${f.key}`;
    let input;
    if (f.options) {
      input = el("select", { id: inputId, name: f.key },
        el("option", { value: "" }, "(default)"),
        f.options.map((o) => el("option", { value: o }, o)));
    } else if (f.type === "checkbox") {
      input = el("input", { id: inputId, name: f.key, type: "checkbox" });
    } else {
      input = el("input", {
        id: inputId, name: f.key, type: f.type, min: f.min, max: f.max, step: f.step,
        pattern: f.pattern, placeholder: f.placeholder, inputmode: f.type === "number" ? "decimal" : undefined,
      });
    }
    const v = params[f.key];
    if (v !== undefined && v !== null) {
      if (f.type === "checkbox") input.checked = v === true || v === "true" || v === "1";
      else input.value = String(v);
    }
    input.addEventListener("input", () => onChange());
    input.addEventListener("change", () => onChange());
    controls.set(f.key, { field: f, input });
    return el("div", { class: "field" }, el("label", { for: inputId }, f.label), input);
  });
  const node = el("fieldset", { class: "builder" }, el("legend", {}, legend), extra, rows);
  return {
    node,
    params() {
      const out = {};
      for (const [key, { field, input }] of controls) {
        if (field.type === "checkbox") {
          if (input.checked) out[key] = "true";
        } else if (input.value.trim() !== "") {
          out[key] = input.value.trim();
        }
      }
      return out;
    },
  };
}

/** `{w: "400", fit: "cover"}` → `w=400&fit=cover` (fixed key order, values encoded). */
export function query(params) {
  return FIELDS.filter((f) => params[f.key] !== undefined)
    .map((f) => `${f.key}=${encodeURIComponent(params[f.key])}`)
    .join("&");
}
