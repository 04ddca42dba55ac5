// @ts-check
// boardcast-client: follow one board live from any page or from Node.
//
//   import { openBoard } from "/static/boardcast-client.js";
//   const client = openBoard({
//     board: "6f1c…",
//     name: "Ana",
//     onSnapshot: (state) => draw(state.notes),
//     onChange: (event, state) => draw(state.notes),
//     onSignal: (signal) => moveCursor(signal.viewer, signal.data),
//   });
//   client.signal("cursor", { x: 120, y: 80 });
//
// What it does for you: folds the snapshot and every change into `client.state` (in seq
// order, each once); resumes with the last event id after any break, so nothing is missed
// or doubled; notices a gap in the ids and catches up; lets the browser's EventSource
// reconnect by itself (so the server's `retry:`, jittered at a deploy, is honoured) and
// steps in only when the stream goes silent or is refused; sends signals within the
// server's rate, latest-wins per kind and note; asks `token()` for a token at every
// (re)connect, so an app can hand it a fresh one before the old one expires.

import { CHANGE_TYPES, applyChange, applySnapshot, emptyBoard } from "./board-core.js";

/** @typedef {import("./board-core.js").BoardState} BoardState */
/** @typedef {import("./board-core.js").Snapshot} Snapshot */
/** @typedef {import("./board-core.js").ChangeEvent} ChangeEvent */

/** @typedef {{id: string, name: string, since: string}} Viewer */

/**
 * A signal as it arrives: who sent it, what kind, its data, when the server took it.
 * @typedef {{kind: string, viewer: {id: string, name: string}, data: Record<string, any>, at: string}} Signal
 */

/**
 * A presence change: the whole list (`list`, on opening and after a resync), one viewer
 * arriving or leaving, or only the count (a crowd). `you` is this client's own viewer.
 * @typedef {{type: "list", you: Viewer | null, viewers: Viewer[], count: number}
 *   | {type: "joined" | "left", viewer: Viewer, count: number | null}
 *   | {type: "count", count: number}} PresenceUpdate
 */

/** @typedef {"connecting" | "live" | "reconnecting" | "paused" | "gone" | "closed"} Status */

/**
 * @typedef {Object} ClientOptions
 * @property {string} board the board's id
 * @property {string} [baseUrl] where the API is; default: this page's origin
 * @property {string} [name] display name in presence (auth off; with auth on the token's)
 * @property {() => (string | null | undefined | Promise<string | null | undefined>)} [token]
 *   asked at every (re)connect and signal: return the current token, or nothing
 * @property {number | null} [lastEventId] resume after this event instead of a snapshot
 * @property {(state: BoardState, snapshot: Snapshot) => void} [onSnapshot]
 * @property {(event: ChangeEvent, state: BoardState) => void} [onChange]
 * @property {(update: PresenceUpdate) => void} [onPresence]
 * @property {(signal: Signal) => void} [onSignal] others' signals (own ones are skipped)
 * @property {(status: Status) => void} [onStatus]
 * @property {(why: string) => void} [onGone] the board does not exist (any more)
 * @property {(message: string, status: number) => void} [onRefused] 401/403 on the stream
 * @property {number} [signalsPerSecond] the most signals sent per second; default 20 (the
 *   server allows SIGNAL_RATE_LIMIT, 30 by default)
 * @property {number} [heartbeatMs] the server's heartbeat interval until one is measured
 * @property {new (url: string) => EventSource} [EventSource] for Node: e.g. npm `eventsource`
 * @property {typeof fetch} [fetch]
 */

/** Missed heartbeats after which a silent stream is given up. */
const WATCHDOG_BEATS = 3.5;
/** How long EventSource may take to come back by itself before we step in (above the
 * server's longest `retry:`, 5 s, plus a slow start). */
const RECONNECTING_PATIENCE_MS = 15_000;
/** Our own reconnects (silence, a refused stream): backoff from 0.5 s up to 10 s, jittered. */
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 10_000;

/** Opens a board's stream; see `BoardClient`. @param {ClientOptions} options */
export function openBoard(options) {
  const client = new BoardClient(options);
  client.open();
  return client;
}

export class BoardClient {
  /** @param {ClientOptions} options */
  constructor(options) {
    if (!options || !options.board) throw new TypeError("openBoard needs a board id");
    /** @type {ClientOptions} */
    this.options = { ...options };
    /** The board as folded so far. @type {BoardState} */
    this.state = emptyBoard();
    if (options.lastEventId !== undefined && options.lastEventId !== null) {
      this.state.seq = Number(options.lastEventId);
    }
    /** This client's viewer (what its signals are sent as); null until the stream opens. @type {Viewer | null} */
    this.you = null;
    /** @type {Status} */
    this.status = "closed";
    /** Signals this client has sent, for curious callers and tests. */
    this.signalsSent = 0;
    /** The heartbeat interval as measured (median of the last gaps). */
    this.heartbeatMs = options.heartbeatMs || 15_000;
    this.base = (options.baseUrl || "").replace(/\/$/, "");
    /** Random per client: the server may keep the viewer across a quick reconnect. */
    this.session = randomId();
    /** @type {EventSource | null} */
    this.es = null;
    this.attempt = 0;
    this.watchdog = /** @type {ReturnType<typeof setTimeout> | undefined} */ (undefined);
    this.retryTimer = /** @type {ReturnType<typeof setTimeout> | undefined} */ (undefined);
    /** @type {number[]} */
    this.gaps = [];
    this.lastBeat = 0;
    /** Signals waiting for their turn, latest per kind and note. @type {Map<string, {kind: string, data: Record<string, any>}>} */
    this.outbox = new Map();
    this.nextSignalAt = 0;
    this.signalTimer = /** @type {ReturnType<typeof setTimeout> | undefined} */ (undefined);
    this.generation = 0;
  }

  /** Opens (or re-opens) the stream, resuming after `state.seq` when there is one. */
  async open() {
    if (this.status === "gone") return;
    this.stop();
    const generation = ++this.generation;
    this.setStatus(this.state.seq === null && this.attempt === 0 ? "connecting" : "reconnecting");
    const url = await this.streamUrl();
    if (generation !== this.generation) return; // closed or re-opened meanwhile
    const Source = this.options.EventSource || globalThis.EventSource;
    const es = new Source(url);
    this.es = es;
    this.armWatchdog();
    const on = (/** @type {string} */ type, /** @type {(data: any, ev: MessageEvent) => void} */ fn) =>
      es.addEventListener(type, (ev) => {
        if (this.es !== es) return; // from a stream already left
        this.armWatchdog();
        const message = /** @type {MessageEvent} */ (ev);
        let data;
        try {
          data = JSON.parse(message.data);
        } catch {
          return;
        }
        fn(data, message);
      });
    es.addEventListener("open", () => {
      if (this.es !== es) return;
      this.armWatchdog();
      this.setStatus("live");
    });
    on("snapshot", (data) => {
      this.attempt = 0;
      applySnapshot(this.state, data);
      this.options.onSnapshot?.(this.state, data);
    });
    for (const type of CHANGE_TYPES) on(type, (data) => this.onChange(data));
    on("presence", (data) => {
      const viewers = data.viewers || [];
      this.you = data.you || guessYou(viewers, this.options.name) || this.you;
      const count = typeof data.count === "number" ? data.count : viewers.length;
      this.options.onPresence?.({ type: "list", you: this.you, viewers, count });
    });
    on("presence.joined", (data) =>
      this.options.onPresence?.({ type: "joined", viewer: data.viewer, count: data.count ?? null }),
    );
    on("presence.left", (data) =>
      this.options.onPresence?.({ type: "left", viewer: data.viewer, count: data.count ?? null }),
    );
    on("presence.count", (data) => this.options.onPresence?.({ type: "count", count: data.count }));
    on("signal", (data) => {
      if (this.you && data.viewer && data.viewer.id === this.you.id) return;
      this.options.onSignal?.(data);
    });
    on("heartbeat", () => {
      this.attempt = 0;
      const now = Date.now();
      if (this.lastBeat) {
        this.gaps.push(now - this.lastBeat);
        if (this.gaps.length > 5) this.gaps.shift();
        const sorted = [...this.gaps].sort((a, b) => a - b);
        this.heartbeatMs = Math.min(120_000, Math.max(100, sorted[Math.floor(sorted.length / 2)]));
        // Armed before this beat with the interval as it was (15 s until measured).
        this.armWatchdog();
      }
      this.lastBeat = now;
    });
    es.addEventListener("error", () => {
      if (this.es !== es) return;
      if (es.readyState === 2) {
        // The browser gave up (an answer that was not a stream: 404, 401, 503…): ask why.
        this.stop();
        this.setStatus("reconnecting");
        this.diagnose();
      } else {
        // EventSource reconnects by itself after the server's `retry:` (1–5 s, jittered, at
        // a deploy): leave it to it, and only if it never comes back, step in.
        this.setStatus("reconnecting");
        this.lastBeat = 0;
        this.armWatchdog(RECONNECTING_PATIENCE_MS);
      }
    });
  }

  /** Closes the stream for good. */
  close() {
    this.stop();
    this.generation += 1;
    if (this.status !== "gone") this.setStatus("closed");
  }

  /** Closes the stream for now (a hidden tab); `resume()` picks up from the last event. */
  pause() {
    if (this.status === "gone" || this.status === "closed") return;
    this.stop();
    this.generation += 1;
    this.you = null;
    this.setStatus("paused");
  }

  resume() {
    if (this.status !== "paused") return;
    this.attempt = 0;
    this.open();
  }

  /**
   * Reopens now (after a jitter of at most 250 ms), resuming from the last event: for a
   * caller that knows the connection is stale, e.g. the network just came back.
   */
  reconnect() {
    if (this.status === "paused" || this.status === "closed" || this.status === "gone") return;
    this.attempt = 0;
    this.reconnectSoon(0);
  }

  /** Re-opens under a new display name; the stream resumes from the last event. @param {string} name */
  rename(name) {
    this.options.name = name;
    if (this.status === "paused" || this.status === "closed" || this.status === "gone") return;
    this.attempt = 0;
    this.open();
  }

  /**
   * Sends a signal to everyone on the board, within `signalsPerSecond`; a newer signal of
   * the same kind (and `note_id`) replaces one still waiting. Best effort: nothing is sent
   * while the stream is not open, and refusals are not retried.
   * @param {string} kind
   * @param {Record<string, any>} data
   */
  signal(kind, data) {
    if (!this.you || this.status === "gone" || this.status === "closed" || this.status === "paused") return;
    const key = `${kind}\u0000${data && data.note_id !== undefined ? data.note_id : ""}`;
    this.outbox.set(key, { kind, data: data || {} });
    this.pump();
  }

  // -- internals -------------------------------------------------------------------------

  /** @param {ChangeEvent} event */
  onChange(event) {
    this.attempt = 0;
    const verdict = applyChange(this.state, event);
    if (verdict === "gap") {
      // Something was missed: resume from the last event folded in; the server replays.
      this.reconnectSoon(0);
      return;
    }
    if (verdict !== "applied") return;
    this.options.onChange?.(event, this.state);
    if (event.type === "board.deleted") this.markGone("deleted");
  }

  stop() {
    clearTimeout(this.watchdog);
    clearTimeout(this.retryTimer);
    clearTimeout(this.signalTimer);
    this.outbox.clear();
    if (this.es) {
      this.es.close();
      this.es = null;
    }
  }

  /** @param {Status} status */
  setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this.options.onStatus?.(status);
  }

  /** @param {string} why */
  markGone(why) {
    this.stop();
    this.generation += 1;
    this.setStatus("gone");
    this.options.onGone?.(why);
  }

  /** @param {number} [atLeastMs] */
  armWatchdog(atLeastMs = 0) {
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => {
      // Silent for several heartbeats (or an attempt that never answered): start over.
      this.reconnectSoon();
    }, Math.max(atLeastMs, WATCHDOG_BEATS * this.heartbeatMs));
  }

  /**
   * Our own reconnect, jittered so that pages cut at the same moment do not all come back
   * at the same one. @param {number} [floorMs]
   */
  reconnectSoon(floorMs) {
    this.stop();
    this.setStatus("reconnecting");
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** this.attempt);
    const delay = floorMs === 0 ? Math.random() * 250 : ceiling / 2 + Math.random() * ceiling;
    this.attempt += 1;
    this.retryTimer = setTimeout(() => this.open(), delay);
  }

  /** After a refused stream: the board's own answer says whether to go on. */
  async diagnose() {
    const generation = this.generation;
    let status = 0;
    let message = "";
    try {
      const res = await this.request("GET", `/api/boards/${encodeURIComponent(this.options.board)}`);
      status = res.status;
      if (!res.ok) message = await errorMessage(res);
    } catch {
      status = 0; // the network: try again
    }
    if (generation !== this.generation) return;
    if (status === 404 || status === 400) {
      this.markGone(status === 404 ? "not_found" : "invalid_id");
      return;
    }
    if (status === 401 || status === 403) this.options.onRefused?.(message, status);
    this.reconnectSoon();
  }

  /** Sends what waits in the outbox, one signal per 1/signalsPerSecond. */
  pump() {
    clearTimeout(this.signalTimer);
    const spacing = 1000 / (this.options.signalsPerSecond || 20);
    const now = Date.now();
    if (now < this.nextSignalAt) {
      this.signalTimer = setTimeout(() => this.pump(), this.nextSignalAt - now);
      return;
    }
    const first = this.outbox.entries().next();
    if (first.done) return;
    const [key, { kind, data }] = first.value;
    this.outbox.delete(key);
    this.nextSignalAt = now + spacing;
    this.post(kind, data);
    if (this.outbox.size > 0) this.signalTimer = setTimeout(() => this.pump(), spacing);
  }

  /** @param {string} kind @param {Record<string, any>} data */
  async post(kind, data) {
    const you = this.you;
    if (!you) return;
    this.signalsSent += 1;
    try {
      const res = await this.request(
        "POST",
        `/api/boards/${encodeURIComponent(this.options.board)}/signals`,
        { viewer: you.id, kind, data },
      );
      if (res.status === 429) {
        const wait = Number(res.headers.get("Retry-After")) || 1;
        this.nextSignalAt = Date.now() + wait * 1000;
      }
    } catch {
      // Signals are best effort: the next position supersedes this one anyway.
    }
  }

  /** @param {string} method @param {string} path @param {unknown} [body] */
  async request(method, path, body) {
    /** @type {Record<string, string>} */
    const headers = { Accept: "application/json" };
    const token = await this.token();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const doFetch = this.options.fetch || globalThis.fetch;
    return doFetch(`${this.base}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  }

  async token() {
    return this.options.token ? (await this.options.token()) || null : null;
  }

  async streamUrl() {
    const q = new URLSearchParams();
    if (this.options.name) q.set("name", this.options.name);
    if (this.state.seq !== null) q.set("last_event_id", String(this.state.seq));
    q.set("session", this.session);
    const token = await this.token();
    if (token) q.set("access_token", token);
    return `${this.base}/api/boards/${encodeURIComponent(this.options.board)}/events?${q}`;
  }
}

/**
 * Servers that predate `you` in the opening presence: this client is the newest viewer
 * with its name. @param {Viewer[]} viewers @param {string | undefined} name
 */
function guessYou(viewers, name) {
  const mine = viewers.filter((v) => v.name === (name || "anonymous"));
  return mine.length > 0 ? mine[mine.length - 1] : null;
}

/** @param {Response} res */
async function errorMessage(res) {
  try {
    const body = await res.json();
    return String((body && body.error && body.error.message) || res.statusText);
  } catch {
    return res.statusText;
  }
}

function randomId() {
  const bytes = new Uint8Array(12);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
