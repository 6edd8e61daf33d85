// The "Live stats" tab: per-version table, SRM banner, comparisons and charts,
// refreshed every 5 s while the tab is open and the page is visible.

import { ApiError, api, query } from "./api.js";
import { PALETTE, bucketPoints, legend, lineChart, requestPoint } from "./chart.js";
import {
  errorBox, fmtClock, fmtInt, fmtMs, fmtP, fmtPct, h, replaceChildren,
} from "./dom.js";
import { SUBJECT_KINDS, comparisonsOf, serverSeries, srmOf, versionRows } from "./stats.js";

export const REFRESH_MS = 5000;
const CHART_PAGES = 3; // newest 300 requests feed the charts when the server sends no series
const CHART_PAGE_SIZE = 100;

/** versionId -> {label, variantId, internalId} from the experiment detail. */
function versionIndex(exp) {
  const index = new Map();
  for (const variant of Array.isArray(exp.variants) ? exp.variants : []) {
    for (const version of Array.isArray(variant.versions) ? variant.versions : []) {
      index.set(String(version.id), {
        label: variant.label, variantId: variant.id, internalId: version.upstream?.internal_id,
      });
    }
  }
  return index;
}

/** "A 150 (expected 100), B 50 (expected 100)" when the server sent the counts. */
function srmCounts(srm, exp) {
  const labels = new Map((Array.isArray(exp.variants) ? exp.variants : []).map((v) => [String(v.id), v.label]));
  if (!srm.observed.length || srm.observed.length !== srm.expected.length) return "";
  return srm.observed.map((o, i) => {
    const label = labels.get(String(srm.variantIds[i])) ?? `variant ${i + 1}`;
    return `${label} ${fmtInt(o)} (expected ${fmtInt(srm.expected[i])})`;
  }).join(", ");
}

function srmBanner(srm, exp) {
  if (!srm) return h("p", { class: "muted" }, "No sample-ratio check in this response.");
  if (srm.ok === false) {
    const counts = srmCounts(srm, exp);
    return h("div", { class: "banner warn", role: "alert", id: "srm-banner" },
      h("strong", {}, "Sample ratio mismatch. "),
      `Unique subjects per variant do not match the weights (p = ${fmtP(srm.pValue)}). `,
      "Assignment or recording may be broken: do not trust the comparisons until this is explained.",
      counts ? h("div", { class: "srm-counts" }, `Unique subjects: ${counts}.`) : null);
  }
  if (srm.ok === true) {
    return h("p", { class: "banner ok", id: "srm-ok" }, `Sample ratio check passed (p = ${fmtP(srm.pValue)}).`);
  }
  return h("p", { class: "muted", id: "srm-unknown" }, srm.reason || "Not enough traffic for a sample ratio check yet.");
}

function statsTable(rows, index) {
  if (!rows.length) return h("p", { class: "empty", id: "stats-empty" }, "No variant versions yet.");
  const head = ["Variant", "Version", "Requests", "Unique subjects", "Errors", "Latency p50 / p95",
    "TTFT p50 / p95", "Tokens in / out", "Feedback up / down (rate)"];
  return h("div", { class: "table-scroll" }, h("table", { class: "table", id: "stats-table" },
    h("caption", { class: "visually-hidden" }, "Statistics per variant version"),
    h("thead", {}, h("tr", {}, head.map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows.map((r) => {
      const meta = index.get(String(r.versionId)) || {};
      return h("tr", { dataset: { versionId: r.versionId ?? "" } },
        h("th", { scope: "row" }, r.label ?? meta.label ?? "—"),
        h("td", {}, r.versionId !== undefined ? `#${r.versionId}` : "—",
          (r.internalId ?? meta.internalId) ? h("div", { class: "muted" }, r.internalId ?? meta.internalId) : null),
        h("td", { class: "num" }, fmtInt(r.requests)),
        h("td", { class: "num" }, fmtInt(r.uniqueSubjects)),
        h("td", { class: "num" }, `${fmtInt(r.errors)} (${fmtPct(r.errorRate)})`),
        h("td", { class: "num" }, `${fmtMs(r.latencyP50)} / ${fmtMs(r.latencyP95)}`),
        h("td", { class: "num" }, `${fmtMs(r.ttftP50)} / ${fmtMs(r.ttftP95)}`),
        h("td", { class: "num" }, `${fmtInt(r.inputTokens)} / ${fmtInt(r.outputTokens)}`),
        h("td", { class: "num" }, `${fmtInt(r.feedbackUp)} / ${fmtInt(r.feedbackDown)} (${fmtPct(r.feedbackRate)})`));
    }))));
}

function signedPct(value) {
  if (value === undefined) return "?";
  const text = fmtPct(value);
  return value > 0 ? `+${text}` : text;
}

function comparisonsTable(comparisons) {
  if (!comparisons.length) return null;
  return h("section", { "aria-labelledby": "comparisons-title" },
    h("h3", { id: "comparisons-title" }, "Differences against the baseline (95% CI)"),
    h("table", { class: "table compact", id: "comparisons" },
      h("thead", {}, h("tr", {}, ["Variant", "Metric", "Difference", "95% CI"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, comparisons.flatMap((c) => c.metrics.map((m) => h("tr", {},
        h("td", {}, c.baseline !== undefined ? `${c.label} vs ${c.baseline}` : String(c.label)),
        h("td", {}, m.name),
        h("td", { class: "num" }, signedPct(m.difference)),
        h("td", { class: "num" }, `[${signedPct(m.low)}, ${signedPct(m.high)}]`)))))));
}

/** Chart buckets: the server's series when it sends one, else the newest request rows. */
async function chartBuckets(stats, exp) {
  const series = serverSeries(stats);
  if (series) return { buckets: series, source: "server" };
  const points = [];
  let cursor = null;
  for (let page = 0; page < CHART_PAGES; page += 1) {
    const data = await api("GET", `/api/requests${query({ experiment_id: exp.id, limit: CHART_PAGE_SIZE, cursor })}`);
    const rows = data && (data.requests || data.items || data.rows);
    if (!Array.isArray(rows)) break;
    for (const row of rows) {
      const point = requestPoint(row);
      if (point) points.push(point);
    }
    cursor = data.next_cursor;
    if (!cursor) break;
  }
  return { ...bucketPoints(points), source: "requests" };
}

function charts({ buckets }, index) {
  const versionIds = [...new Set(buckets.map((b) => String(b.versionId)))].sort((a, b) => Number(a) - Number(b));
  const series = versionIds.map((versionId, i) => {
    const meta = index.get(versionId) || {};
    return { versionId, name: `${meta.label ?? "?"} · #${versionId}`, color: PALETTE[i % PALETTE.length] };
  });
  return h("div", { class: "charts" },
    h("figure", {},
      lineChart({ title: "Latency p50 over time per version", buckets, series, value: (b) => b.latencyP50, format: fmtMs }),
      h("figcaption", {}, "Latency p50 (ms)")),
    h("figure", {},
      lineChart({ title: "Error rate over time per version", buckets, series, value: (b) => b.errorRate, format: (v) => fmtPct(v, 0), ceiling: 1 }),
      h("figcaption", {}, "Error rate")),
    legend(series));
}

export function renderStats(container, exp) {
  const index = versionIndex(exp);
  const auto = h("input", { type: "checkbox", id: "stats-auto", checked: true });
  const kindSelect = h("select", { id: "stats-subject-kind" },
    h("option", { value: "" }, "All subjects"),
    SUBJECT_KINDS.map((kind) => h("option", { value: kind }, `${kind} subjects only`)));
  const refreshButton = h("button", { type: "button", id: "stats-refresh" }, "Refresh now");
  const updated = h("span", { class: "muted", id: "stats-updated" }, "Loading…");
  const errors = errorBox("stats-error");
  const srmSlot = h("div", { id: "srm" });
  const tableSlot = h("div");
  const comparisonSlot = h("div");
  const chartTitle = h("h3", { id: "charts-title" }, "Latency and errors over time");
  const chartSlot = h("section", { "aria-labelledby": chartTitle.id }, chartTitle, h("p", { class: "muted" }, "Loading…"));
  replaceChildren(container,
    h("div", { class: "toolbar" },
      h("label", { class: "check-label" }, auto, " Auto-refresh every 5 s"), refreshButton, updated,
      h("label", { for: kindSelect.id, class: "push-right" }, "Show"), kindSelect),
    errors.el, srmSlot, tableSlot, comparisonSlot, chartSlot);

  let stopped = false;
  let inFlight = false;
  let lastStats = null;
  kindSelect.addEventListener("change", () => {
    if (lastStats) replaceChildren(tableSlot, statsTable(versionRows(lastStats, kindSelect.value), index));
  });

  async function loadStats() {
    try {
      const stats = await api("GET", `/api/experiments/${encodeURIComponent(exp.id)}/stats`);
      if (stopped) return null;
      errors.clear();
      replaceChildren(srmSlot, srmBanner(srmOf(stats), exp));
      lastStats = stats;
      replaceChildren(tableSlot, statsTable(versionRows(stats, kindSelect.value), index));
      replaceChildren(comparisonSlot, comparisonsTable(comparisonsOf(stats)));
      updated.textContent = `Updated ${fmtClock(new Date())}`;
      return stats;
    } catch (err) {
      if (stopped) return null;
      if (err instanceof ApiError && err.status === 404 && err.message === "no such route") {
        errors.show({ message: "this admin server has no stats endpoint (GET /api/experiments/{id}/stats)" });
      } else {
        errors.show(err);
      }
      updated.textContent = `Last attempt ${fmtClock(new Date())}`;
      return null;
    }
  }

  async function loadCharts(stats) {
    try {
      const data = await chartBuckets(stats, exp);
      if (!stopped) replaceChildren(chartSlot, chartTitle, charts(data, index));
    } catch (err) {
      if (!stopped) {
        replaceChildren(chartSlot, chartTitle, h("p", { class: "muted" }, `Charts unavailable: ${err.message}`));
      }
    }
  }

  async function load() {
    if (inFlight || stopped) return;
    inFlight = true;
    try {
      await loadCharts(await loadStats());
    } finally {
      inFlight = false;
    }
  }

  refreshButton.addEventListener("click", load);
  const timer = setInterval(() => {
    if (auto.checked && !document.hidden) load();
  }, REFRESH_MS);
  load();
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}
