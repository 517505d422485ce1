// The one way the console talks to adtier: the public API, with the signed-in key as the
// bearer header. The key lives in this tab's sessionStorage only; it never goes in a URL.

const STORE = "adtier.console.key";

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

export const session = {
  key: () => sessionStorage.getItem(STORE),
  set: (key) => sessionStorage.setItem(STORE, key),
  clear: () => sessionStorage.removeItem(STORE),
};

export async function api(path, { method = "GET", body, key = session.key() } = {}) {
  const headers = { Accept: "application/json" };
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const answer = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store", credentials: "omit",
  });
  const text = await answer.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!answer.ok) {
    // every error of the API is {"error": code, "detail": text}
    throw new ApiError(answer.status, data?.error, data?.detail || text.slice(0, 200));
  }
  return data;
}

let paths = null;

// Whether this server has an endpoint (from its OpenAPI document, read once): a feature that
// another release adds (the privacy budget) is shown where it exists, without a failing call.
export async function hasEndpoint(path) {
  paths ??= fetch("/docs/openapi.json", { credentials: "omit" })
    .then((r) => (r.ok ? r.json() : { paths: {} })).then((doc) => new Set(Object.keys(doc.paths || {})))
    .catch(() => new Set());
  return (await paths).has(path);
}

// A 404 answer as null (an endpoint this server does not have, or an id it does not show).
export async function optional(path, options) {
  try {
    return await api(path, options);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return null;
    throw err;
  }
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") q.set(name, value);
  }
  const text = q.toString();
  return text ? `?${text}` : "";
}
