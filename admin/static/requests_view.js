// The "Requests" tab: filtered, cursor-paginated request browser with prompt download.

import { ApiError, api, download, query } from "./api.js";
import { errorBox, field, fmtInt, fmtMs, fmtTime, h, pick, replaceChildren } from "./dom.js";

const KINDS = ["chat_completions", "responses", "messages"];
const OUTCOMES = ["success", "error"];
const BODY_STATES = ["available", "truncated", "failed", "deleted"];
const LIMIT_MIN = 10;
const LIMIT_MAX = 100;
const LIMIT_DEFAULT = 25;

function select(id, name, placeholder, options) {
  return h("select", { id, name },
    h("option", { value: "" }, placeholder),
    options.map(([value, text]) => h("option", { value: String(value) }, text)));
}

/** The state of a request's stored body: available, truncated, failed or deleted. */
export function bodyState(row) {
  const explicit = pick(row, "body_state", "prompt_state");
  if (typeof explicit === "string") return explicit;
  const sha = row.request_body_sha256;
  if (sha === "__deleted__") return "deleted";
  if (sha === "__failed__") return "failed";
  if (row.was_truncated) return "truncated";
  return sha ? "available" : "unknown";
}

function outcomeCell(row) {
  const status = pick(row, "status_code", "status");
  const isError = row.has_error === true || row.outcome === "error" || (Number(status) >= 400);
  return h("td", {},
    status ?? "—",
    isError ? h("span", { class: "badge badge-error" }, "error") : null,
    row.cancelled ? h("span", { class: "badge badge-cancelled" }, "cancelled") : null);
}

async function savePrompt(usageId, state, note) {
  note.textContent = "Downloading…";
  note.className = "note";
  try {
    const fallback = `prompt-${usageId}${state === "truncated" ? ".part" : ".json"}`;
    const { blob, filename } = await download(`/api/requests/${encodeURIComponent(usageId)}/prompt`, fallback);
    const url = URL.createObjectURL(blob);
    const link = h("a", { href: url, download: filename, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    note.textContent = `Saved ${filename}`;
  } catch (err) {
    note.className = "note error";
    if (err instanceof ApiError && err.status === 410) note.textContent = "Prompt was deleted (410)";
    else if (err instanceof ApiError && err.status === 404) note.textContent = `Not available: ${err.message}`;
    else note.textContent = err.message;
  }
}

function requestRow(row, index) {
  const usageId = pick(row, "usage_id", "id");
  const versionId = pick(row, "variant_version_id", "version_id");
  const meta = index.get(String(versionId)) || {};
  const state = bodyState(row);
  const note = h("span", { class: "note", role: "status" });
  const canDownload = usageId !== undefined && state !== "deleted" && state !== "failed";
  const button = h("button", {
    type: "button", class: "link-button", disabled: !canDownload,
    "aria-label": `Download the prompt of request ${usageId}`,
    title: canDownload ? null : `prompt ${state}`,
  }, "Download");
  button.addEventListener("click", () => savePrompt(usageId, state, note));
  const tokensIn = pick(row, "input_tokens", "tokens.input");
  const tokensOut = pick(row, "output_tokens", "tokens.output");
  return h("tr", { dataset: { usageId: usageId ?? "" } },
    h("td", { class: "time" }, fmtTime(row.created_at)),
    h("td", {}, pick(row, "variant_label", "label") ?? meta.label ?? "—",
      h("span", { class: "muted" }, versionId !== undefined ? ` #${versionId}` : "")),
    h("td", {}, row.request_kind ?? "—"),
    h("td", {}, pick(row, "subject_kind", "allocation_subject") ?? "—"),
    h("td", {}, row.client_request_id ? h("code", {}, row.client_request_id) : "—"),
    outcomeCell(row),
    h("td", { class: "num" }, fmtMs(row.latency_ms), h("div", { class: "muted" }, `ttft ${fmtMs(row.ttft_ms)}`)),
    h("td", { class: "num" }, `${fmtInt(tokensIn)} / ${fmtInt(tokensOut)}`),
    h("td", {}, h("span", { class: `badge badge-body-${state}` }, state)),
    h("td", {}, button, note));
}

export function renderRequests(container, exp) {
  const variants = Array.isArray(exp.variants) ? exp.variants : [];
  const index = new Map();
  const versionOptions = [];
  for (const variant of variants) {
    for (const version of Array.isArray(variant.versions) ? variant.versions : []) {
      index.set(String(version.id), { label: variant.label });
      versionOptions.push([version.id, `${variant.label} #${version.id}`]);
    }
  }
  const variantSel = select("f-variant", "variant_id", "Any variant", variants.map((v) => [v.id, v.label]));
  const versionSel = select("f-version", "variant_version_id", "Any version", versionOptions);
  const clientId = h("input", { id: "f-client-request-id", name: "client_request_id", maxlength: 500, autocomplete: "off" });
  const kindSel = select("f-kind", "request_kind", "Any kind", KINDS.map((k) => [k, k]));
  const outcomeSel = select("f-outcome", "outcome", "Any outcome", OUTCOMES.map((o) => [o, o]));
  const bodySel = select("f-body", "body_state", "Any body state", BODY_STATES.map((b) => [b, b]));
  const limit = h("input", {
    id: "f-limit", name: "limit", type: "number", min: LIMIT_MIN, max: LIMIT_MAX, step: 1, value: String(LIMIT_DEFAULT),
  });
  const apply = h("button", { type: "submit", class: "primary" }, "Apply filters");
  const form = h("form", { class: "filters card", "aria-label": "Request filters" },
    h("div", { class: "row wrap" },
      field("Variant", variantSel), field("Version", versionSel), field("Client request id", clientId),
      field("Request kind", kindSel), field("Outcome", outcomeSel), field("Body", bodySel),
      field(`Per page (${LIMIT_MIN} to ${LIMIT_MAX})`, limit)),
    h("div", { class: "actions" }, apply));
  const errors = errorBox("requests-error");
  const results = h("div", { id: "requests-results" });
  const newer = h("button", { type: "button", disabled: true }, "← Newer");
  const older = h("button", { type: "button", disabled: true }, "Older →");
  const position = h("span", { class: "muted" });
  replaceChildren(container, form, errors.el, results, h("div", { class: "pager" }, newer, position, older));

  let stopped = false;
  const cursors = [null]; // cursors[i] loads page i
  let page = 0;
  let nextCursor = null;

  function filters() {
    const n = Math.min(LIMIT_MAX, Math.max(LIMIT_MIN, Math.round(Number(limit.value)) || LIMIT_DEFAULT));
    limit.value = String(n);
    return {
      experiment_id: exp.id, variant_id: variantSel.value, variant_version_id: versionSel.value,
      client_request_id: clientId.value.trim(), request_kind: kindSel.value, outcome: outcomeSel.value,
      body_state: bodySel.value, limit: n,
    };
  }

  async function load() {
    errors.clear();
    apply.disabled = true;
    try {
      const data = await api("GET", `/api/requests${query({ ...filters(), cursor: cursors[page] })}`);
      if (stopped) return;
      const rows = (data && (data.requests || data.items || data.rows)) || [];
      nextCursor = data && data.next_cursor ? data.next_cursor : null;
      replaceChildren(results, rows.length
        ? h("div", { class: "table-scroll" }, h("table", { class: "table", id: "requests-table" },
          h("caption", { class: "visually-hidden" }, "Requests"),
          h("thead", {}, h("tr", {}, ["Time", "Variant", "Kind", "Subject", "Client request id", "Status",
            "Latency", "Tokens in / out", "Body", "Prompt"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, rows.map((row) => requestRow(row, index)))))
        : h("p", { class: "empty" }, "No requests match these filters."));
      position.textContent = `Page ${page + 1}`;
      newer.disabled = page === 0;
      older.disabled = !nextCursor;
    } catch (err) {
      if (!stopped) errors.show(err);
    } finally {
      apply.disabled = false;
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    cursors.length = 1;
    page = 0;
    load();
  });
  older.addEventListener("click", () => {
    if (!nextCursor) return;
    page += 1;
    cursors[page] = nextCursor;
    load();
  });
  newer.addEventListener("click", () => {
    if (page === 0) return;
    page -= 1;
    load();
  });
  load();
  return () => {
    stopped = true;
  };
}
