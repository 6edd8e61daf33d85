// A small hand-written SVG line chart: one line per variant version over time buckets.

import { asNumber, fmtTime, h, pick, svg } from "./dom.js";

export const PALETTE = ["#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2", "#65a30d", "#dc2626"];

const MINUTE = 60 * 1000;
const BUCKET_SIZES = [MINUTE, 5 * MINUTE, 15 * MINUTE, 60 * MINUTE, 6 * 60 * MINUTE, 24 * 60 * MINUTE];
const MAX_BUCKETS = 30;

/** A request row from /api/requests as {versionId, t, isError, latencyMs}, or null. */
export function requestPoint(row) {
  const t = Date.parse(pick(row, "created_at", "time") ?? "");
  const versionId = pick(row, "variant_version_id", "version_id", "variant_version.id");
  if (Number.isNaN(t) || versionId === undefined) return null;
  const status = asNumber(pick(row, "status_code", "status"));
  const isError = row.has_error === true || row.outcome === "error" || (status !== undefined && status >= 400);
  return { versionId, t, isError, latencyMs: asNumber(pick(row, "latency_ms", "latency")) };
}

function median(values) {
  if (!values.length) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** The smallest bucket size that keeps the span within MAX_BUCKETS buckets. */
export function bucketSize(spanMs) {
  return BUCKET_SIZES.find((size) => spanMs / size <= MAX_BUCKETS) ?? BUCKET_SIZES.at(-1);
}

/** Bucket request points per version: [{versionId, t, requests, errorRate, latencyP50}]. */
export function bucketPoints(points) {
  if (!points.length) return { buckets: [], size: MINUTE };
  const times = points.map((p) => p.t);
  const size = bucketSize(Math.max(...times) - Math.min(...times));
  const groups = new Map();
  for (const p of points) {
    const t = Math.floor(p.t / size) * size;
    const key = `${p.versionId}|${t}`;
    if (!groups.has(key)) groups.set(key, { versionId: p.versionId, t, requests: 0, errors: 0, latencies: [] });
    const g = groups.get(key);
    g.requests += 1;
    if (p.isError) g.errors += 1;
    if (p.latencyMs !== undefined) g.latencies.push(p.latencyMs);
  }
  const buckets = [...groups.values()]
    .map((g) => ({
      versionId: g.versionId, t: g.t, requests: g.requests,
      errorRate: g.errors / g.requests, latencyP50: median(g.latencies),
    }))
    .sort((a, b) => a.t - b.t);
  return { buckets, size };
}

const WIDTH = 520;
const HEIGHT = 200;
const PAD = { left: 56, right: 14, top: 14, bottom: 34 };

function shortTime(ms) {
  return fmtTime(new Date(ms).toISOString()).slice(11, 16);
}

/**
 * An SVG chart of `value(bucket)` per version. `series` is [{versionId, name, color}];
 * `ceiling` caps the y axis (1 for rates).
 * Buckets whose value is missing are skipped (the line joins its neighbours).
 */
export function lineChart({ title, buckets, series, value, format, ceiling = Infinity }) {
  const plotted = buckets.filter((b) => value(b) !== undefined);
  const root = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: "chart", role: "img", "aria-label": title,
  }, svg("title", {}, title));
  const innerW = WIDTH - PAD.left - PAD.right;
  const innerH = HEIGHT - PAD.top - PAD.bottom;
  root.append(svg("rect", { x: PAD.left, y: PAD.top, width: innerW, height: innerH, class: "chart-frame" }));
  if (!plotted.length) {
    root.append(svg("text", { x: WIDTH / 2, y: HEIGHT / 2, class: "chart-empty", "text-anchor": "middle" }, "no data yet"));
    return root;
  }
  let tMin = Math.min(...plotted.map((b) => b.t));
  let tMax = Math.max(...plotted.map((b) => b.t));
  if (tMin === tMax) {
    tMin -= MINUTE;
    tMax += MINUTE;
  }
  const yMax = Math.min(ceiling, Math.max(...plotted.map(value)) * 1.1) || 1;
  const x = (t) => PAD.left + ((t - tMin) / (tMax - tMin)) * innerW;
  const y = (v) => PAD.top + innerH - (v / yMax) * innerH;

  for (const frac of [0, 0.5, 1]) {
    const v = yMax * frac;
    root.append(
      svg("line", { x1: PAD.left, x2: PAD.left + innerW, y1: y(v), y2: y(v), class: "chart-grid" }),
      svg("text", { x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end", class: "chart-axis" }, format(v)),
    );
  }
  root.append(
    svg("text", { x: PAD.left, y: HEIGHT - 10, class: "chart-axis" }, shortTime(tMin)),
    svg("text", { x: PAD.left + innerW, y: HEIGHT - 10, "text-anchor": "end", class: "chart-axis" }, `${shortTime(tMax)} UTC`),
  );
  for (const s of series) {
    const own = plotted.filter((b) => String(b.versionId) === String(s.versionId));
    if (!own.length) continue;
    const pts = own.map((b) => `${x(b.t).toFixed(1)},${y(value(b)).toFixed(1)}`).join(" ");
    root.append(svg("polyline", { points: pts, fill: "none", stroke: s.color, "stroke-width": 2, class: "chart-line" }));
    for (const b of own) {
      root.append(svg("circle", { cx: x(b.t), cy: y(value(b)), r: 3, fill: s.color },
        svg("title", {}, `${s.name} · ${shortTime(b.t)} UTC · ${format(value(b))} (${b.requests ?? "?"} requests)`)));
    }
  }
  return root;
}

/** The colour key shared by the charts. */
export function legend(series) {
  return h("ul", { class: "legend", "aria-label": "Chart legend" },
    series.map((s) => {
      const swatch = h("span", { class: "swatch" });
      swatch.style.background = s.color; // CSSOM, not a style attribute: fine under a strict CSP
      return h("li", {}, swatch, s.name);
    }));
}
