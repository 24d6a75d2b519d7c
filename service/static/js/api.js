// The gateway's REST API, authenticated by the session cookie.

export class ApiError extends Error {
  constructor(status, body) {
    const text = body && typeof body === "object" ? body.error : body;
    super(describe(text || `HTTP ${status}`, body && body.details));
    this.status = status;
    this.body = body;
  }
}

function describe(message, details) {
  if (!details || typeof details !== "object") return message;
  const parts = Object.entries(details).map(
    ([field, why]) => `${field}: ${Array.isArray(why) ? why.join(", ") : JSON.stringify(why)}`,
  );
  return parts.length ? `${message} (${parts.join("; ")})` : message;
}

let onUnauthorized = () => {};

export function whenUnauthorized(callback) {
  onUnauthorized = callback;
}

export async function request(method, path, { body, query, quiet401 = false } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== null && value !== undefined && value !== "") url.searchParams.set(key, value);
  }
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(url, init);
  } catch (err) {
    throw new ApiError(0, { error: "the gateway is unreachable" });
  }
  const type = resp.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await resp.json().catch(() => null) : await resp.text();
  if (resp.status === 401 && !quiet401) onUnauthorized();
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

const TASKS = "/api/v1/tasks";

export const api = {
  session: () => request("GET", "/api/v1/session", { quiet401: true }),
  catalog: () => request("GET", "/api/v1/catalog"),
  login: (apiKey) =>
    request("POST", "/api/v1/session", { body: { api_key: apiKey }, quiet401: true }),
  logout: () => request("DELETE", "/api/v1/session", { quiet401: true }),
  list: (query) => request("GET", `${TASKS}/list`, { query }),
  status: (id) => request("GET", `${TASKS}/status/${encodeURIComponent(id)}`),
  // With a pending task's place in its queue and its rate limit (for the detail view).
  explained: (id) =>
    request("GET", `${TASKS}/status/${encodeURIComponent(id)}`, { query: { explain: "true" } }),
  stats: () => request("GET", `${TASKS}/stats`),
  cancel: (id, terminate = false) =>
    request("POST", `${TASKS}/cancel/${encodeURIComponent(id)}`, {
      query: terminate ? { terminate: "true" } : {},
    }),
  retry: (id) => request("POST", `${TASKS}/retry/${encodeURIComponent(id)}`),
  workers: () => request("GET", `${TASKS}/workers`),
  restartPool: (worker) =>
    request("POST", `${TASKS}/workers/pool/restart`, { query: { worker_name: worker } }),
  shutdown: (worker) =>
    request("POST", `${TASKS}/workers/shutdown`, { body: { worker_name: worker } }),
  generate: (body) => request("POST", `${TASKS}/ai/generate`, { body }),
  vectorize: (body) => request("POST", `${TASKS}/knowledge/vectorize`, { body }),
  notify: (body) => request("POST", `${TASKS}/notifications/send`, { body }),
  knowledgeBases: () => request("GET", "/api/v1/knowledge"),
  usage: (query) => request("GET", "/api/v1/usage", { query }),
  documents: (kbId) =>
    request("GET", `/api/v1/knowledge/${encodeURIComponent(kbId)}/documents`),
  deleteVectors: (body) => request("POST", `${TASKS}/knowledge/delete`, { body }),
  search: (kbId, q, k = 5) =>
    request("GET", `/api/v1/knowledge/${encodeURIComponent(kbId)}/search`, { query: { q, k } }),
};
