// The HTTP API with the signed-in user's bearer token. The token lives in sessionStorage (this
// tab only; never a cookie, never localStorage). A 401 asks the user to sign in again and then
// retries the same call, so the view the user was on comes back.

const KEY = "flowviz.token";
let onSignInNeeded = async () => {
  throw new Error("not signed in");
};

export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code || "";
    this.reason = e.reason || "";
    this.details = e.details || {};
  }
}

export const session = {
  get() {
    try {
      const s = JSON.parse(sessionStorage.getItem(KEY + ".session") || "null");
      return s && s.expires_at > Date.now() ? s : null;
    } catch {
      return null;
    }
  },
  set(s) {
    sessionStorage.setItem(KEY + ".session", JSON.stringify(s));
    sessionStorage.setItem(KEY, s.token); // read by the API docs page
  },
  clear() {
    sessionStorage.removeItem(KEY + ".session");
    sessionStorage.removeItem(KEY);
  },
};

export function setSignInHandler(fn) {
  onSignInNeeded = fn;
}

export async function signIn(username, password) {
  const r = await fetch("/api/auth/token", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username, password }),
  });
  const body = await r.json().catch(() => null);
  if (!r.ok) throw new ApiError(r.status, body);
  const s = {
    token: body.access_token,
    role: body.role,
    username,
    expires_at: Date.now() + (body.expires_in || 900) * 1000,
  };
  session.set(s);
  return s;
}

export function role() {
  const s = session.get();
  return s ? s.role : "";
}

async function raw(path, { method = "GET", body, headers = {}, signal } = {}) {
  const s = session.get();
  if (!s) {
    await onSignInNeeded("Sign in to continue.");
    return raw(path, { method, body, headers, signal });
  }
  const init = { method, signal, headers: { ...headers, authorization: `Bearer ${s.token}` } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["content-type"] = "application/json";
  }
  const r = await fetch(path, init);
  if (r.status === 401) {
    // Calls in flight together share one sign-in; one that fails after it used the old token.
    const now = session.get();
    if (!now || now.token === s.token) {
      session.clear();
      await onSignInNeeded("Your session has expired: sign in again to go on where you were.");
    }
    return raw(path, { method, body, headers, signal });
  }
  return r;
}

export async function api(path, options = {}) {
  const r = await raw(path, options);
  const body = await r.json().catch(() => null);
  if (!r.ok) throw new ApiError(r.status, body);
  return body;
}

export async function apiBlob(path) {
  const r = await raw(path);
  if (!r.ok) throw new ApiError(r.status, await r.json().catch(() => null));
  return r.blob();
}

export const enc = encodeURIComponent;

// Who may do what (the services enforce it; the page only explains it).
export const CAN = {
  qc: { roles: ["qc", "admin"], why: "QC decisions need the qc or admin role" },
  run: { roles: ["operator", "admin"], why: "recording a production run needs the operator or admin role" },
  drill: { roles: ["qc", "admin"], why: "mock-recall drills need the qc or admin role" },
};
export function may(action) {
  return CAN[action].roles.includes(role());
}
