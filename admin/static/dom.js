// DOM building and formatting helpers. Every value from the API reaches the page
// through textContent or an attribute, never through innerHTML.

const SVG_NS = "http://www.w3.org/2000/svg";

function applyAttrs(el, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.setAttribute("class", value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "value" && "value" in el) el.value = value;
    else if (name === "checked" || name === "disabled" || name === "selected") el[name] = Boolean(value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** h("button", {class: "x", onclick: fn}, "text", child...) */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  applyAttrs(el, attrs);
  append(el, children);
  return el;
}

/** An SVG element (attributes are set verbatim). */
export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== undefined && value !== null) el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

export function replaceChildren(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Read a dotted path ("latency_ms.p50") from an object; undefined when absent. */
export function dig(obj, path) {
  let cur = obj;
  for (const part of path.split(".")) {
    if (cur === null || typeof cur !== "object" || !(part in cur)) return undefined;
    cur = cur[part];
  }
  return cur;
}

/** The first of several candidate paths that is present and not null. */
export function pick(obj, ...paths) {
  for (const path of paths) {
    const value = dig(obj, path);
    if (value !== undefined && value !== null) return value;
  }
  return undefined;
}

export function asNumber(value) {
  if (typeof value === "number" && Number.isFinite(value)) return value;
  if (typeof value === "string" && value.trim() !== "" && Number.isFinite(Number(value))) {
    return Number(value);
  }
  return undefined;
}

const pad = (n) => String(n).padStart(2, "0");

/** "2025-01-31 14:05:09 UTC", or "—" for a missing or unparsable timestamp. */
export function fmtTime(value) {
  if (!value) return "—";
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
    `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} UTC`;
}

export function fmtClock(date) {
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

export function fmtInt(value) {
  const n = asNumber(value);
  return n === undefined ? "—" : Math.round(n).toLocaleString("en-US");
}

export function fmtMs(value) {
  const n = asNumber(value);
  if (n === undefined) return "—";
  return n >= 10000 ? `${(n / 1000).toFixed(1)} s` : `${Math.round(n)} ms`;
}

/** A 0..1 rate as a percentage. */
export function fmtPct(value, digits = 1) {
  const n = asNumber(value);
  return n === undefined ? "—" : `${(n * 100).toFixed(digits)}%`;
}

export function fmtP(value) {
  const n = asNumber(value);
  if (n === undefined) return "—";
  if (n === 0) return "0";
  return n < 0.001 ? n.toExponential(1) : n.toFixed(3);
}

export function statusBadge(status) {
  const known = ["draft", "active", "paused", "completed"].includes(status);
  return h("span", { class: `badge badge-${known ? status : "unknown"}` }, status || "unknown");
}

export function archivedBadge(isArchived) {
  return isArchived ? h("span", { class: "badge badge-archived" }, "archived") : null;
}

/** A labelled form control: <div class=field><label for=id>text</label>control hint</div>. */
export function field(labelText, control, hint) {
  const hintEl = hint ? h("p", { class: "hint", id: `${control.id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: control.id }, labelText), control, hintEl);
}

/** An inline error region; show(err) renders an API error's message, clear() hides it. */
export function errorBox(id) {
  const el = h("p", { class: "form-error", role: "alert", id, hidden: true });
  return {
    el,
    show(err) {
      const message = err && err.message ? err.message : String(err);
      const code = err && err.code ? `${err.code}: ` : "";
      el.textContent = code + message;
      el.hidden = false;
    },
    clear() {
      el.textContent = "";
      el.hidden = true;
    },
  };
}

let uid = 0;
/** A page-unique element id with a readable prefix. */
export function nextId(prefix) {
  uid += 1;
  return `${prefix}-${uid}`;
}
