// What both pages share: the token kept for this tab, the viewer's name, calls to the API,
// and the toast area for short messages.

const TOKEN_KEY = "boardcast.token";
const NAME_KEY = "boardcast.name";

/** An answer from the API that was not 2xx, with the contract's error code. */
export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

/**
 * Takes `#token=…` from the address into sessionStorage (kept for this tab only) and
 * removes it from the address bar, so it is neither bookmarked nor shared by accident.
 */
export function adoptTokenFromFragment() {
  const hash = location.hash.startsWith("#") ? location.hash.slice(1) : "";
  if (!hash) return;
  const params = new URLSearchParams(hash);
  const token = params.get("token");
  if (token === null) return;
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage can be disabled; the token then lives only in memory for this page.
    memoryToken = token;
  }
  params.delete("token");
  const rest = params.toString();
  history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
}

let memoryToken = null;

export function token() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || memoryToken;
  } catch {
    return memoryToken;
  }
}

/** The claims of the tab's token (unverified: only to show a name), or null. */
export function tokenClaims() {
  const t = token();
  if (!t) return null;
  try {
    const part = t.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = decodeURIComponent(
      Array.from(atob(part), (c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0")).join(""),
    );
    return JSON.parse(json);
  } catch {
    return null;
  }
}

export function savedName() {
  const claims = tokenClaims();
  if (claims && (claims.name || claims.sub)) return String(claims.name || claims.sub);
  try {
    return localStorage.getItem(NAME_KEY) || "";
  } catch {
    return "";
  }
}

/** True when the name comes from the token and cannot be changed in the page. */
export function nameFromToken() {
  const claims = tokenClaims();
  return Boolean(claims && (claims.name || claims.sub));
}

export function saveName(name) {
  try {
    localStorage.setItem(NAME_KEY, name);
  } catch {
    // Not remembered; still used for this page.
  }
}

/**
 * Calls the API. Resolves with the parsed JSON (or null for 204); rejects with ApiError
 * for any other status and with a TypeError when the network fails.
 */
export async function api(method, path, { body, ifMatch, name, signal, keepalive } = {}) {
  const headers = { Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (name) headers["X-Display-Name"] = encodeURIComponent(name);
  if (ifMatch !== undefined && ifMatch !== null) headers["If-Match"] = `"${ifMatch}"`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    signal,
    keepalive: Boolean(keepalive),
  });
  if (res.status === 204) return null;
  let data = null;
  const text = await res.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    const err = (data && data.error) || {};
    const retryAfter = Number(res.headers.get("Retry-After"));
    const e = new ApiError(
      res.status,
      err.code || `http_${res.status}`,
      err.message || `the server answered ${res.status}`,
      data,
    );
    e.retryAfter = Number.isFinite(retryAfter) ? retryAfter : null;
    throw e;
  }
  return data;
}

/** A short sentence for a failed call, for a toast. */
export function describeError(e) {
  if (e instanceof ApiError) {
    switch (e.code) {
      case "unauthorized":
        return "You are not signed in, or your link has expired. Ask for a new link.";
      case "forbidden":
        return "Your link does not allow that on this board.";
      case "rate_limited":
        return "Slow down a little — too many changes at once.";
      case "unavailable":
        return "The server is busy or restarting. Try again in a moment.";
      default:
        return e.message;
    }
  }
  return "Could not reach the server. Check your connection.";
}

const toastTimers = new WeakMap();

/**
 * Shows a short message in the page's toast area (an aria-live region). `kind` is
 * "info" or "error". Messages leave on their own; the same text is not stacked twice.
 * `action` (`{label, run}`) adds a button (e.g. "Undo") that runs once and closes the toast;
 * such toasts are never merged, each button belongs to its own action.
 */
export function toast(message, kind = "info", ms = 5000, action = null) {
  const area = document.getElementById("toasts");
  if (!area) return;
  for (const el of area.children) {
    if (!action && !el.dataset.action && el.dataset.text === message) {
      restartTimer(el, ms);
      return el;
    }
  }
  const el = document.createElement("div");
  el.className = `toast toast-${kind}`;
  el.dataset.text = message;
  el.setAttribute("role", kind === "error" ? "alert" : "status");
  const text = document.createElement("span");
  text.textContent = message;
  const close = document.createElement("button");
  close.type = "button";
  close.className = "toast-close";
  close.setAttribute("aria-label", "Dismiss message");
  close.textContent = "×";
  close.addEventListener("click", () => el.remove());
  el.append(text);
  if (action) {
    el.dataset.action = action.label;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "toast-action";
    button.textContent = action.label;
    button.addEventListener("click", () => {
      el.remove();
      action.run();
    });
    el.append(button);
  }
  el.append(close);
  area.append(el);
  while (area.children.length > 4) area.firstElementChild.remove();
  restartTimer(el, ms);
  return el;
}

function restartTimer(el, ms) {
  clearTimeout(toastTimers.get(el));
  toastTimers.set(
    el,
    setTimeout(() => el.remove(), ms),
  );
}

/** Initials for an avatar: up to two letters from the name's words. */
export function initials(name) {
  const words = String(name || "?")
    .trim()
    .split(/\s+/)
    .filter(Boolean);
  if (words.length === 0) return "?";
  const first = Array.from(words[0])[0] || "?";
  const second = words.length > 1 ? Array.from(words[words.length - 1])[0] : "";
  return (first + second).toUpperCase();
}

/** A stable soft hue for a name, so the same person has the same avatar color. */
export function hueFor(name) {
  let h = 0;
  for (const ch of String(name)) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return h % 360;
}

/** "3 min ago"-style text for an RFC 3339 time. */
export function relativeTime(iso, now = Date.now()) {
  const t = Date.parse(iso);
  if (!Number.isFinite(t)) return "";
  const s = Math.round((now - t) / 1000);
  if (s < 45) return "just now";
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.round(m / 60);
  if (h < 24) return `${h} h ago`;
  const d = Math.round(h / 24);
  if (d < 30) return `${d} d ago`;
  return new Date(t).toLocaleDateString();
}
