// The "Audit log" tab: every mutation of this experiment, newest first.

import { api, query } from "./api.js";
import { errorBox, fmtTime, h, replaceChildren } from "./dom.js";

const PAGE_SIZE = 50;

function change(entry) {
  const parts = [];
  if (entry.before != null) parts.push(h("div", {}, h("h4", {}, "Before"), h("pre", {}, JSON.stringify(entry.before, null, 2))));
  if (entry.after != null) parts.push(h("div", {}, h("h4", {}, "After"), h("pre", {}, JSON.stringify(entry.after, null, 2))));
  if (!parts.length) return "—";
  return h("details", {}, h("summary", {}, "Show change"), h("div", { class: "diff" }, parts));
}

function entryRow(entry, labels) {
  const label = labels.get(String(entry.variant_id));
  const target = [
    entry.variant_id != null ? `variant ${label ? `"${label}" ` : ""}(id ${entry.variant_id})` : null,
    entry.version_id != null ? `version #${entry.version_id}` : null,
  ].filter(Boolean).join(", ");
  return h("tr", {},
    h("td", { class: "time" }, fmtTime(entry.created_at)),
    h("td", {}, entry.actor ?? "—"),
    h("td", {}, h("code", {}, entry.action ?? "—")),
    h("td", {}, target || "experiment"),
    h("td", {}, change(entry)));
}

export function renderAudit(container, exp) {
  // Current labels; a removed variant shows by id only.
  const labels = new Map((Array.isArray(exp.variants) ? exp.variants : []).map((v) => [String(v.id), v.label]));
  const errors = errorBox("audit-error");
  const tbody = h("tbody", {});
  const table = h("table", { class: "table", id: "audit-table" },
    h("caption", { class: "visually-hidden" }, "Audit log"),
    h("thead", {}, h("tr", {}, ["Time", "Actor", "Action", "Target", "Change"].map((t) => h("th", { scope: "col" }, t)))),
    tbody);
  const more = h("button", { type: "button", hidden: true }, "Load older entries");
  const status = h("p", { class: "muted" }, "Loading…");
  replaceChildren(container, errors.el, status, table, more);

  let stopped = false;
  let cursor = null;

  async function load() {
    errors.clear();
    more.disabled = true;
    try {
      const data = await api("GET", `/api/audit${query({ experiment_id: exp.id, limit: PAGE_SIZE, cursor })}`);
      if (stopped) return;
      const entries = Array.isArray(data && data.entries) ? data.entries : [];
      tbody.append(...entries.map((entry) => entryRow(entry, labels)));
      cursor = data && data.next_cursor ? data.next_cursor : null;
      more.hidden = !cursor;
      status.textContent = tbody.children.length ? "" : "No audit entries.";
      status.hidden = Boolean(tbody.children.length);
    } catch (err) {
      if (!stopped) errors.show(err);
    } finally {
      more.disabled = false;
    }
  }

  more.addEventListener("click", load);
  load();
  return () => {
    stopped = true;
  };
}
