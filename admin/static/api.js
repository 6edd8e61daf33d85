// The admin JSON API client. The bearer token lives in sessionStorage only: it is
// asked once per browser session, sent as "Authorization: Bearer", and never shown.

const TOKEN_KEY = "abgate.adminToken";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** Turn a non-2xx response into an ApiError carrying the contract's {error: {code, message}}. */
async function errorFrom(response) {
  let code = "HTTP_" + response.status;
  let message = response.statusText || `request failed with status ${response.status}`;
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // Not JSON (a proxy in between, say): keep the status text.
  }
  return new ApiError(response.status, code, message);
}

async function send(method, path, body, token) {
  const headers = { Accept: "application/json" };
  const auth = token ?? getToken();
  if (auth) headers.Authorization = `Bearer ${auth}`;
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "NETWORK_ERROR", "the admin server could not be reached");
  }
  if (response.status === 401 && token === undefined) {
    // The stored token stopped working (revoked, server restarted with another one).
    clearToken();
    window.dispatchEvent(new CustomEvent("abgate:unauthorized"));
  }
  if (!response.ok) throw await errorFrom(response);
  return response;
}

/** Call the API; resolves to the parsed JSON body (null for 204). */
export async function api(method, path, body) {
  const response = await send(method, path, body);
  if (response.status === 204) return null;
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/** Check a token without storing it: resolves when the server accepts it. */
export async function checkToken(token) {
  await send("GET", "/api/experiments?archived=false", undefined, token);
}

/** Fetch a file-like answer: {blob, filename} (filename from Content-Disposition if any). */
export async function download(path, fallbackName) {
  const response = await send("GET", path);
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition);
  const filename = match ? decodeURIComponent(match[1]) : fallbackName;
  return { blob: await response.blob(), filename };
}

/** Build a query string from an object, skipping empty values. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}
