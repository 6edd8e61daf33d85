// Client-side check of a variant version's `upstream` object (CONTRACT.md "upstream").
// It mirrors abgate/upstream.py closely enough to catch mistakes before the request;
// the server repeats every check and has the final word (DNS, exotic IP forms, ...).

export const API_KINDS = ["chat_completions", "responses", "messages"];
export const ALLOWED_FIELDS = [
  "internal_id", "base_url", "api_kind", "extra_body", "remove_from_body", "timeout_s",
];
const REQUIRED_FIELDS = ["internal_id", "base_url", "api_kind"];
const ENDPOINT_PATHS = ["/chat/completions", "/responses", "/messages"];
const EXTRA_BODY_RESERVED = ["model", "stream", "messages", "input", "user", "safety_identifier"];
const REMOVE_PROTECTED = ["model", "messages", "input", "stream"];
const CREDENTIAL_KEYS = [
  "apikey", "xapikey", "authorization", "auth", "password", "secret", "clientsecret",
  "accesstoken", "bearertoken", "token", "privatekey",
];
const METADATA_HOSTS = [
  "169.254.169.254", "169.254.170.2", "100.100.100.200", "168.63.129.16", "192.0.0.192",
  "metadata.google.internal", "metadata",
];
const MAX_TIMEOUT_S = 3600;
const MAX_REMOVE_FROM_BODY = 64;
const MAX_INTERNAL_ID = 200;
const MAX_BASE_URL = 2048;

export const UPSTREAM_TEMPLATE = {
  internal_id: "partner-checkpoint-id",
  base_url: "https://api.partner.example/v1",
  api_kind: "chat_completions",
  extra_body: {},
  remove_from_body: [],
  timeout_s: 600,
};

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

function dottedQuad(host) {
  const parts = host.split(".");
  if (parts.length !== 4 || !parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255)) {
    return null;
  }
  return parts.map(Number);
}

/** Why a host needs ABGATE_ALLOW_INSECURE_UPSTREAM (a warning), or null. */
function insecureHostReason(host) {
  const quad = dottedQuad(host);
  if (quad) {
    const [a, b] = quad;
    if (a === 127) return "a loopback host";
    if (a === 0) return "an unspecified address";
    if (a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168)) {
      return "a private address";
    }
    if (a === 100 && b >= 64 && b <= 127) return "a shared (CGNAT) address";
    return null;
  }
  if (host === "localhost" || host.endsWith(".localhost")) return "a loopback host";
  if (host === "[::1]") return "a loopback host";
  if (/^\[f[cd]/i.test(host)) return "a private address";
  return null;
}

/** Why a host is refused outright, or null. */
function forbiddenHostReason(host) {
  const bare = host.replace(/\.$/, "");
  if (METADATA_HOSTS.includes(bare) || bare.endsWith(".metadata.google.internal")) {
    return "is a cloud metadata address and is never allowed";
  }
  const quad = dottedQuad(bare);
  if (quad && quad[0] === 169 && quad[1] === 254) return "is a link-local address and is never allowed";
  if (quad && quad[0] >= 224) return "is a multicast or reserved address and is never allowed";
  if (/^\[fe[89ab]/i.test(bare)) return "is a link-local address and is never allowed";
  if (/^(0x[0-9a-f]+|\d+)$/i.test(bare)) {
    return "must be a host name or a plain dotted-decimal IPv4 address";
  }
  return null;
}

function checkBaseUrl(value, errors, warnings) {
  const field = "upstream.base_url";
  if (typeof value !== "string") return errors.push(`${field}: must be a string`);
  if (!value) return errors.push(`${field}: must not be empty`);
  if (value.length > MAX_BASE_URL) return errors.push(`${field}: must be at most ${MAX_BASE_URL} characters`);
  if (/[\s\x00-\x1f\x7f-\uffff]/.test(value)) {
    return errors.push(`${field}: must not contain whitespace, control or non-ASCII characters`);
  }
  if (value.includes("?")) return errors.push(`${field}: must not contain a query string`);
  if (value.includes("#")) return errors.push(`${field}: must not contain a fragment`);
  const match = /^([a-z]+):\/\/([^/]*)(\/.*)?$/i.exec(value);
  if (!match || !["http", "https"].includes(match[1].toLowerCase())) {
    return errors.push(`${field}: must be an absolute http:// or https:// URL`);
  }
  const [, scheme, netloc, path = ""] = match;
  if (netloc.includes("@")) {
    return errors.push(`${field}: must not contain credentials (user:password@); use the API key field`);
  }
  const host = netloc.startsWith("[") ? netloc.slice(0, netloc.indexOf("]") + 1) : netloc.split(":")[0];
  if (!host) return errors.push(`${field}: must name a host`);
  const forbidden = forbiddenHostReason(host.toLowerCase());
  if (forbidden) return errors.push(`${field}: host ${forbidden}`);
  if (path.split("/").some((s) => s === "." || s === "..")) {
    return errors.push(`${field}: must not contain '.' or '..' path segments`);
  }
  const trimmed = path.replace(/\/+$/, "").toLowerCase();
  const suffix = ENDPOINT_PATHS.find((p) => trimmed.endsWith(p));
  if (suffix) {
    return errors.push(`${field}: must not end with the endpoint path '${suffix}'; it is appended from api_kind`);
  }
  if (scheme.toLowerCase() !== "https") {
    warnings.push(`${field}: http:// is refused unless the server sets ABGATE_ALLOW_INSECURE_UPSTREAM; use https`);
  } else {
    const reason = insecureHostReason(host.toLowerCase());
    if (reason) {
      warnings.push(`${field}: ${reason} is refused unless the server sets ABGATE_ALLOW_INSECURE_UPSTREAM`);
    }
  }
  return undefined;
}

function checkInternalId(value, errors) {
  const field = "upstream.internal_id";
  if (typeof value !== "string") return errors.push(`${field}: must be a string`);
  if (!value) return errors.push(`${field}: must not be empty`);
  if (value.length > MAX_INTERNAL_ID) return errors.push(`${field}: must be at most ${MAX_INTERNAL_ID} characters`);
  if (/[\x00-\x1f\x7f-\x9f]/.test(value)) return errors.push(`${field}: must not contain control characters`);
  if (value !== value.trim()) return errors.push(`${field}: must not start or end with whitespace`);
  return undefined;
}

function checkExtraBody(value, errors) {
  const field = "upstream.extra_body";
  if (!isObject(value)) return errors.push(`${field}: must be an object`);
  for (const key of Object.keys(value)) {
    if (EXTRA_BODY_RESERVED.includes(key)) {
      errors.push(`${field}.${key}: is set by the proxy and cannot be overridden`);
    } else if (CREDENTIAL_KEYS.includes(key.toLowerCase().replace(/[_-]/g, ""))) {
      errors.push(`${field}.${key}: looks like a credential; put the key in the API key field instead`);
    }
  }
  return undefined;
}

function checkRemoveFromBody(value, errors) {
  const field = "upstream.remove_from_body";
  if (!Array.isArray(value)) return errors.push(`${field}: must be a list of strings`);
  if (value.length > MAX_REMOVE_FROM_BODY) {
    return errors.push(`${field}: must have at most ${MAX_REMOVE_FROM_BODY} entries`);
  }
  value.forEach((item, i) => {
    if (typeof item !== "string") errors.push(`${field}[${i}]: must be a string`);
    else if (!item) errors.push(`${field}[${i}]: must not be empty`);
    else if (REMOVE_PROTECTED.includes(item)) {
      errors.push(`${field}[${i}]: '${item}' is required by the proxy and cannot be removed`);
    }
  });
  return undefined;
}

function checkTimeout(value, errors) {
  const field = "upstream.timeout_s";
  if (typeof value !== "number" || !Number.isFinite(value)) return errors.push(`${field}: must be a number`);
  if (!(value > 0 && value <= MAX_TIMEOUT_S)) {
    return errors.push(`${field}: must be greater than 0 and at most ${MAX_TIMEOUT_S}`);
  }
  return undefined;
}

/**
 * Check a parsed upstream value. `requiredApiKind` (optional) is the api kind a
 * live experiment must keep. Returns {errors: [...], warnings: [...]}.
 */
export function validateUpstream(value, { requiredApiKind = null } = {}) {
  const errors = [];
  const warnings = [];
  if (!isObject(value)) return { errors: ["upstream: must be a JSON object"], warnings };
  for (const key of Object.keys(value)) {
    if (!ALLOWED_FIELDS.includes(key)) {
      const hint = key === "api_key" ? "; put the key in the API key field, outside upstream" : "";
      errors.push(`upstream.${key}: unknown field (allowed: ${ALLOWED_FIELDS.join(", ")})${hint}`);
    }
  }
  for (const key of REQUIRED_FIELDS) {
    if (!(key in value)) errors.push(`upstream.${key}: is required`);
  }
  if ("internal_id" in value) checkInternalId(value.internal_id, errors);
  if ("api_kind" in value) {
    if (!API_KINDS.includes(value.api_kind)) {
      errors.push(`upstream.api_kind: must be one of ${API_KINDS.join(", ")}`);
    } else if (requiredApiKind && value.api_kind !== requiredApiKind) {
      errors.push(`upstream.api_kind: must stay ${requiredApiKind} while the experiment is live`);
    }
  }
  if ("base_url" in value) checkBaseUrl(value.base_url, errors, warnings);
  // Optional fields: absent and null both mean "default" (as on the server).
  if (value.extra_body != null) checkExtraBody(value.extra_body, errors);
  if (value.remove_from_body != null) checkRemoveFromBody(value.remove_from_body, errors);
  if (value.timeout_s != null) checkTimeout(value.timeout_s, errors);
  return { errors, warnings };
}

/** Parse the editor's text, then validate: {value, errors, warnings}. */
export function checkUpstreamText(text, options) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return { value: undefined, errors: [`not valid JSON: ${err.message}`], warnings: [] };
  }
  return { value, ...validateUpstream(value, options) };
}
