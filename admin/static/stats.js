// Reading /api/experiments/{id}/stats defensively: the panel shows what the server
// sends and "—" for anything missing, so a field added or renamed on the server side
// degrades one cell, never the page.

import { asNumber, pick } from "./dom.js";

export const SUBJECT_KINDS = ["user", "machine", "ip"];

/**
 * One row per variant version, whatever nesting the server used. `subjectKind`
 * (user, machine or ip) picks that kind's numbers from `by_subject_kind`.
 */
export function versionRows(stats, subjectKind = "") {
  if (!stats || typeof stats !== "object") return [];
  const normalize = (row, variant) => normalizeRow(row, variant, subjectKind);
  const flat = pick(stats, "versions", "variant_versions", "by_version", "rows");
  if (Array.isArray(flat)) return flat.map((row) => normalize(row, {}));
  const variants = pick(stats, "variants", "by_variant");
  if (!Array.isArray(variants)) return [];
  const rows = [];
  for (const variant of variants) {
    const versions = pick(variant, "versions", "variant_versions", "by_version");
    if (Array.isArray(versions)) {
      for (const version of versions) rows.push(normalize(version, variant));
    } else {
      rows.push(normalize(variant, variant));
    }
  }
  return rows;
}

/** The metrics object of a row: one subject kind's, the totals, or the row itself. */
function metricsOf(raw, subjectKind) {
  const byKind = raw && raw.by_subject_kind;
  if (subjectKind) {
    const own = byKind && typeof byKind === "object" ? byKind[subjectKind] : undefined;
    return own && typeof own === "object" ? { ...raw, ...own } : {};
  }
  return raw && typeof raw.totals === "object" && raw.totals !== null ? { ...raw, ...raw.totals } : raw;
}

/** The fields naming a row (kept whichever metrics are shown). */
function identityOf(raw) {
  const out = {};
  for (const key of ["variant_version_id", "version_id", "version", "id", "variant_id", "variant",
    "label", "variant_label", "internal_id", "upstream"]) {
    if (raw && key in raw) out[key] = raw[key];
  }
  return out;
}

function num(obj, ...paths) {
  return asNumber(pick(obj, ...paths));
}

function normalizeRow(raw, variant, subjectKind) {
  const metrics = metricsOf(raw, subjectKind);
  const row = { ...metrics, ...identityOf(raw) };
  const requests = num(row, "requests", "request_count", "count");
  const errors = num(row, "errors", "error_count", "errors.count");
  let errorRate = num(row, "error_rate", "errors.rate");
  if (errorRate === undefined && requests && errors !== undefined) errorRate = errors / requests;
  return {
    versionId: pick(row, "variant_version_id", "version_id", "version.id", "id"),
    variantId: pick(row, "variant_id", "variant.id") ?? pick(variant, "variant_id", "id"),
    label: pick(row, "label", "variant_label", "variant.label") ?? pick(variant, "label", "variant_label"),
    internalId: pick(row, "internal_id", "upstream.internal_id", "version.upstream.internal_id"),
    requests,
    uniqueSubjects: num(row, "unique_subjects", "subjects", "subjects.unique", "unique_subjects.total"),
    uniqueClientRequests: num(row, "unique_client_request_ids", "unique_client_requests"),
    errors,
    errorRate,
    latencyP50: num(row, "latency_ms.p50", "latency.p50", "latency_p50_ms", "latency_ms_p50", "p50_latency_ms"),
    latencyP95: num(row, "latency_ms.p95", "latency.p95", "latency_p95_ms", "latency_ms_p95", "p95_latency_ms"),
    ttftP50: num(row, "ttft_ms.p50", "ttft.p50", "ttft_p50_ms", "ttft_ms_p50", "p50_ttft_ms"),
    ttftP95: num(row, "ttft_ms.p95", "ttft.p95", "ttft_p95_ms", "ttft_ms_p95", "p95_ttft_ms"),
    inputTokens: num(row, "tokens.input", "input_tokens", "tokens.input_tokens"),
    outputTokens: num(row, "tokens.output", "output_tokens", "tokens.output_tokens"),
    marketCost: num(row, "market_cost_microdollars", "cost.market_microdollars", "market_cost"),
    feedbackUp: num(row, "feedback.up", "feedback.thumbs_up", "thumbs_up", "feedback_up"),
    feedbackDown: num(row, "feedback.down", "feedback.thumbs_down", "thumbs_down", "feedback_down"),
    feedbackRate: num(row, "feedback.rate", "feedback.up_rate", "feedback.thumbs_up_rate",
      "thumbs_up_rate", "feedback_rate"),
  };
}

/** {ok, pValue, detail} or null when the server sent no SRM check. */
export function srmOf(stats) {
  const srm = stats && typeof stats === "object" ? stats.srm : undefined;
  if (!srm || typeof srm !== "object") return null;
  const pValue = asNumber(pick(srm, "p_value", "p"));
  let ok = srm.ok === false ? false : srm.ok === true ? true : null;
  // ok with no p-value: there was nothing to test yet (no subjects, or one variant).
  if (ok === true && pValue === undefined) ok = null;
  return {
    ok,
    pValue,
    chiSquare: asNumber(pick(srm, "chi_square", "chi2", "statistic")),
    observed: Array.isArray(srm.observed) ? srm.observed : [],
    expected: Array.isArray(srm.expected) ? srm.expected : [],
    variantIds: Array.isArray(srm.variant_ids) ? srm.variant_ids : [],
    reason: pick(srm, "reason", "message", "note"),
  };
}

const DIFF_KEYS = ["difference", "diff", "delta", "estimate"];

/** A {difference, low, high} triple out of one metric object, or null. */
function interval(metric) {
  if (!metric || typeof metric !== "object") return null;
  const diff = asNumber(pick(metric, ...DIFF_KEYS));
  if (diff === undefined) return null;
  const ci = pick(metric, "ci", "ci95", "ci_95", "confidence_interval");
  const low = asNumber(pick(metric, "ci_low", "low", "lower", "ci95_low")) ??
    (Array.isArray(ci) ? asNumber(ci[0]) : asNumber(pick(ci || {}, "low", "lower")));
  const high = asNumber(pick(metric, "ci_high", "high", "upper", "ci95_high")) ??
    (Array.isArray(ci) ? asNumber(ci[1]) : asNumber(pick(ci || {}, "high", "upper")));
  return { difference: diff, low, high };
}

const METRIC_NAMES = {
  error_rate: "Error rate",
  thumbs_up_rate: "Thumbs-up rate",
  feedback_rate: "Thumbs-up rate",
  up_rate: "Thumbs-up rate",
};

/**
 * Differences of each variant against the baseline: [{label, baseline, metrics: [{name,
 * difference, low, high}]}]. Accepts a top-level list or one object per variant.
 */
export function comparisonsOf(stats) {
  if (!stats || typeof stats !== "object") return [];
  let list = pick(stats, "comparisons", "differences", "variant_comparisons");
  if (!Array.isArray(list)) {
    const variants = Array.isArray(stats.variants) ? stats.variants : [];
    list = variants
      .map((v) => {
        const c = pick(v, "comparison", "vs_baseline", "difference");
        return c && typeof c === "object" ? { label: v.label, variant_id: v.variant_id ?? v.id, ...c } : null;
      })
      .filter(Boolean);
  }
  return list.map((entry) => {
    const metrics = [];
    const source = entry.metrics && typeof entry.metrics === "object" ? entry.metrics : entry;
    for (const [key, value] of Object.entries(source)) {
      const ci = interval(value);
      if (ci) metrics.push({ name: METRIC_NAMES[key] || key.replace(/_/g, " "), ...ci });
    }
    return {
      label: pick(entry, "label", "variant_label", "variant.label") ?? pick(entry, "variant_id") ?? "?",
      baseline: pick(entry, "baseline_label", "baseline.label", "baseline_variant_label",
        "baseline_variant_id", "baseline.variant_id"),
      metrics,
    };
  }).filter((c) => c.metrics.length > 0);
}

/**
 * Time buckets per version if the server sent a series:
 * [{versionId, t (ms), requests, errorRate, latencyP50}] or null.
 */
export function serverSeries(stats) {
  const list = stats && typeof stats === "object"
    ? pick(stats, "timeseries", "series", "buckets")
    : undefined;
  if (!Array.isArray(list)) return null;
  const points = [];
  for (const b of list) {
    const t = Date.parse(pick(b, "bucket_start", "bucket", "start", "t", "time"));
    const versionId = pick(b, "variant_version_id", "version_id");
    if (Number.isNaN(t) || versionId === undefined) continue;
    const requests = num(b, "requests", "count");
    const errors = num(b, "errors", "error_count");
    let errorRate = num(b, "error_rate");
    if (errorRate === undefined && requests && errors !== undefined) errorRate = errors / requests;
    points.push({
      versionId, t, requests, errorRate,
      latencyP50: num(b, "latency_ms.p50", "latency_p50_ms", "latency_ms_p50", "latency.p50"),
    });
  }
  return points;
}
