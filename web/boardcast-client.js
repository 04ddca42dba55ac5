// @ts-check
// boardcast-client: follow one board, or many on one connection, live from any page or
// from Node.
//
//   import { openBoard, openBoards } from "/static/boardcast-client.js";
//   const client = openBoard({
//     board: "6f1c…",
//     name: "Ana",
//     onSnapshot: (state) => draw(state.notes),
//     onChange: (event, state) => draw(state.notes),
//     onSignal: (signal) => moveCursor(signal.viewer, signal.data),
//   });
//   client.signal("cursor", { x: 120, y: 80 });
//
//   const many = openBoards({ boards: [a, b], onChange: (board, event, state) => … });
//   many.setBoards([a, b, c]); // reopens with the cursor and the same session
//
// What it does for you: folds the snapshot and every change into the board's state (in
// seq order, each once); resumes with the last event id (one board) or the cursor (many)
// after any break, so nothing is missed or doubled; notices a gap in a board's ids and
// catches up; lets the browser's EventSource reconnect by itself (so the server's `retry:`,
// jittered at a deploy, is honoured) and steps in only when the stream goes silent or is
// refused; sends signals within the server's rate, latest-wins per kind and note; asks
// `token()` for a token at every (re)connect, so an app can hand it a fresh one before the
// old one expires; reopens with the same `session`, so the server keeps the viewer and
// nobody sees it leave and rejoin.

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
 * What both kinds of client take.
 * @typedef {Object} CommonOptions
 * @property {string} [baseUrl] where the API is; default: this page's origin
 * @property {string} [name] display name in presence (auth off; with auth on the token's)
 * @property {() => (string | null | undefined | Promise<string | null | undefined>)} [token]
 *   asked at every (re)connect and signal: return the current token, or nothing
 * @property {string} [session] the stream's `session` (1–64 of `[A-Za-z0-9_-]`); default:
 *   random per client. Reopening with it keeps this client's viewers (no leave/rejoin).
 * @property {(status: Status) => void} [onStatus]
 * @property {number} [signalsPerSecond] the most signals sent per second (per board);
 *   default 20 (the server allows SIGNAL_RATE_LIMIT, 30 by default)
 * @property {number} [heartbeatMs] the server's heartbeat interval until one is measured
 * @property {new (url: string) => EventSource} [EventSource] for Node: e.g. npm `eventsource`
 * @property {typeof fetch} [fetch]
 */

/**
 * @typedef {CommonOptions & {
 *   board: string,
 *   lastEventId?: number | null,
 *   onSnapshot?: (state: BoardState, snapshot: Snapshot) => void,
 *   onChange?: (event: ChangeEvent, state: BoardState) => void,
 *   onPresence?: (update: PresenceUpdate) => void,
 *   onSignal?: (signal: Signal) => void,
 *   onGone?: (why: string) => void,
 *   onRefused?: (message: string, status: number) => void,
 * }} ClientOptions
 * One board: `board` its id; `lastEventId` resumes after this event instead of a snapshot;
 * `onSignal` gets others' signals (own ones are skipped); `onGone` says the board does not
 * exist (any more); `onRefused` a 401/403 on the stream, or a 400/422 (a parameter breaks a
 * limit: the client closes instead of retrying).
 */

/**
 * @typedef {CommonOptions & {
 *   boards: string[],
 *   onSnapshot?: (board: string, state: BoardState, snapshot: Snapshot) => void,
 *   onChange?: (board: string, event: ChangeEvent, state: BoardState) => void,
 *   onPresence?: (board: string, update: PresenceUpdate) => void,
 *   onSignal?: (board: string, signal: Signal) => void,
 *   onGone?: (board: string, why: string) => void,
 *   onRefused?: (board: string | null, message: string, status: number) => void,
 * }} BoardsOptions
 * Many boards on one stream: the same callbacks, each naming its board. `onGone` drops the
 * board from the set; `onRefused` with a board: that board is refused (403) and dropped;
 * with null: the token is (401), and the client tries again later; or the stream's
 * parameters are (400/422), and the client closes.
 */

/** Missed heartbeats after which a silent stream is given up. */
const WATCHDOG_BEATS = 3.5;
/** How long EventSource may take to come back by itself before we step in (above the
 * server's longest `retry:`, 5 s, plus a slow start). */
const RECONNECTING_PATIENCE_MS = 15_000;
/** Our own reconnects (silence, a refused stream): backoff from 0.5 s up to 10 s, jittered. */
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 10_000;
/** The longest a many-board stream's change of boards waits for the previous reopen to settle. */
const SETTLE_MS = 3_000;
/** The server's `MAX_BOARDS_PER_STREAM` default: more boards than this need a second stream. */
export const MAX_BOARDS_PER_STREAM = 20;

/** Opens a board's stream; see `BoardClient`. @param {ClientOptions} options */
export function openBoard(options) {
  const client = new BoardClient(options);
  client.open();
  return client;
}

/** Opens one stream for many boards; see `BoardsClient`. @param {BoardsOptions} options */
export function openBoards(options) {
  const client = new BoardsClient(options);
  client.open();
  return client;
}

/**
 * What both clients share: one EventSource, its watchdog and heartbeat measure, the
 * reconnect schedule, the status, requests with the token. Subclasses say what URL to open
 * (`streamUrl`), what to do with its events (`listen`) and with a refused stream (`diagnose`).
 */
class StreamClient {
  /** @param {CommonOptions} options */
  constructor(options) {
    /** @type {Status} */
    this.status = "closed";
    /** The heartbeat interval as measured (median of the last gaps). */
    this.heartbeatMs = options.heartbeatMs || 15_000;
    this.base = (options.baseUrl || "").replace(/\/$/, "");
    /** Kept across reopens: the server keeps the viewer across a quick reconnect. */
    this.session = options.session || randomId();
    /** @type {EventSource | null} */
    this.es = null;
    this.attempt = 0;
    this.watchdog = /** @type {ReturnType<typeof setTimeout> | undefined} */ (undefined);
    this.retryTimer = /** @type {ReturnType<typeof setTimeout> | undefined} */ (undefined);
    /** @type {number[]} */
    this.gaps = [];
    this.lastBeat = 0;
    this.generation = 0;
    this.keepStatus = false;
    /** @type {CommonOptions} */
    this.common = options;
  }

  /** Whether the first snapshot is still to come (status "connecting" rather than "reconnecting"). */
  fresh() {
    return this.attempt === 0;
  }

  /** Opens (or re-opens) the stream, resuming where it left off. */
  async open() {
    if (this.status === "gone") return;
    this.stop();
    const generation = ++this.generation;
    // A live stream reopened to change what it carries stays "live" to its listeners
    // unless the new one fails.
    if (!this.keepStatus) this.setStatus(this.fresh() ? "connecting" : "reconnecting");
    this.keepStatus = false;
    const url = await this.streamUrl();
    if (generation !== this.generation) return; // closed or re-opened meanwhile
    if (url === null) return;
    const Source = this.common.EventSource || globalThis.EventSource;
    const es = new Source(url);
    this.es = es;
    this.armWatchdog();
    this.opening();
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
    this.listen(on);
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
    this.forgetViewers();
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
    this.common.name = name;
    if (this.status === "paused" || this.status === "closed" || this.status === "gone") return;
    this.attempt = 0;
    this.open();
  }

  // -- for subclasses ----------------------------------------------------------------------

  /** @returns {Promise<string | null>} the stream's address; null: nothing to open */
  async streamUrl() {
    return null;
  }

  /** @param {(type: string, fn: (data: any, ev: MessageEvent) => void) => void} _on */
  listen(_on) {}

  /** A new EventSource was just made. */
  opening() {}

  /** After a refused stream. */
  async diagnose() {}

  /** The viewers the stream gave this client are no longer its own (paused). */
  forgetViewers() {}

  /** Query parameters every stream sends: name, session, token. */
  async commonQuery() {
    const q = new URLSearchParams();
    if (this.common.name) q.set("name", this.common.name);
    q.set("session", this.session);
    const token = await this.token();
    if (token) q.set("access_token", token);
    return q;
  }

  stop() {
    clearTimeout(this.watchdog);
    clearTimeout(this.retryTimer);
    if (this.es) {
      this.es.close();
      this.es = null;
    }
  }

  /** @param {Status} status */
  setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this.common.onStatus?.(status);
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

  /**
   * When the board itself is fine, asks the stream why it refused: a 400 or 422 (a
   * parameter breaks a limit: a name over 100 characters, a malformed `Last-Event-ID` or
   * session) will be refused the same way at every retry, so it ends the client instead of
   * looping. EventSource does not expose the status, hence the second request; a stream
   * that does open is cancelled at once. Returns the refusal, or null to reconnect.
   * @returns {Promise<{status: number, message: string} | null>}
   */
  async probeRefusal() {
    const url = await this.streamUrl();
    if (url === null) return null;
    const abort = new AbortController();
    try {
      const doFetch = this.common.fetch || globalThis.fetch;
      const res = await doFetch(url, { headers: { Accept: "text/event-stream" }, cache: "no-store", signal: abort.signal });
      if (res.status === 400 || res.status === 422) return { status: res.status, message: await errorMessage(res) };
      return null;
    } catch {
      return null;
    } finally {
      abort.abort();
    }
  }

  /** The status a board's own `GET` answers (0: the network failed). @param {string} board */
  async boardStatus(board) {
    try {
      const res = await this.request("GET", `/api/boards/${encodeURIComponent(board)}`);
      return { status: res.status, message: res.ok ? "" : await errorMessage(res) };
    } catch {
      return { status: 0, message: "" };
    }
  }

  /** @param {string} method @param {string} path @param {unknown} [body] */
  async request(method, path, body) {
    /** @type {Record<string, string>} */
    const headers = { Accept: "application/json" };
    const token = await this.token();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const doFetch = this.common.fetch || globalThis.fetch;
    return doFetch(`${this.base}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  }

  async token() {
    return this.common.token ? (await this.common.token()) || null : null;
  }
}

/**
 * Sends one board's signals within a rate: a newer signal of the same kind (and `note_id`)
 * replaces one still waiting. Best effort: refusals are not retried; a 429 waits out its
 * `Retry-After`.
 */
export class SignalSender {
  /**
   * @param {{board: string, viewer: () => (string | null),
   *   request: (method: string, path: string, body?: unknown) => Promise<Response>,
   *   perSecond?: number}} options
   */
  constructor(options) {
    this.options = options;
    /** Signals sent so far, for curious callers and tests. */
    this.sent = 0;
    /** Signals waiting for their turn, latest per kind and note. @type {Map<string, {kind: string, data: Record<string, any>}>} */
    this.outbox = new Map();
    this.nextAt = 0;
    this.timer = /** @type {ReturnType<typeof setTimeout> | undefined} */ (undefined);
  }

  /** @param {string} kind @param {Record<string, any>} data */
  send(kind, data) {
    const key = `${kind}\u0000${data && data.note_id !== undefined ? data.note_id : ""}`;
    this.outbox.set(key, { kind, data: data || {} });
    this.pump();
  }

  clear() {
    clearTimeout(this.timer);
    this.outbox.clear();
  }

  /** Sends what waits in the outbox, one signal per 1/perSecond. */
  pump() {
    clearTimeout(this.timer);
    const spacing = 1000 / (this.options.perSecond || 20);
    const now = Date.now();
    if (now < this.nextAt) {
      this.timer = setTimeout(() => this.pump(), this.nextAt - now);
      return;
    }
    const first = this.outbox.entries().next();
    if (first.done) return;
    const [key, { kind, data }] = first.value;
    this.outbox.delete(key);
    this.nextAt = now + spacing;
    this.post(kind, data);
    if (this.outbox.size > 0) this.timer = setTimeout(() => this.pump(), spacing);
  }

  /** @param {string} kind @param {Record<string, any>} data */
  async post(kind, data) {
    const viewer = this.options.viewer();
    if (!viewer) return;
    this.sent += 1;
    try {
      const res = await this.options.request(
        "POST",
        `/api/boards/${encodeURIComponent(this.options.board)}/signals`,
        { viewer, kind, data },
      );
      if (res.status === 429) {
        const wait = Number(res.headers.get("Retry-After")) || 1;
        this.nextAt = Date.now() + wait * 1000;
      }
    } catch {
      // Signals are best effort: the next position supersedes this one anyway.
    }
  }
}

/** One board's stream (`GET /api/boards/{id}/events`). */
export class BoardClient extends StreamClient {
  /** @param {ClientOptions} options */
  constructor(options) {
    if (!options || !options.board) throw new TypeError("openBoard needs a board id");
    super(options);
    /** @type {ClientOptions} */
    this.options = { ...options };
    this.common = this.options;
    /** The board as folded so far. @type {BoardState} */
    this.state = emptyBoard();
    if (options.lastEventId !== undefined && options.lastEventId !== null) {
      this.state.seq = Number(options.lastEventId);
    }
    /** This client's viewer (what its signals are sent as); null until the stream opens. @type {Viewer | null} */
    this.you = null;
    this.signals = new SignalSender({
      board: options.board,
      viewer: () => (this.you ? this.you.id : null),
      request: (method, path, body) => this.request(method, path, body),
      perSecond: options.signalsPerSecond,
    });
  }

  fresh() {
    return this.state.seq === null && this.attempt === 0;
  }

  /** Signals this client has sent, for curious callers and tests. */
  get signalsSent() {
    return this.signals.sent;
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
    this.signals.send(kind, data);
  }

  // -- internals -------------------------------------------------------------------------

  async streamUrl() {
    const q = await this.commonQuery();
    if (this.state.seq !== null) q.set("last_event_id", String(this.state.seq));
    return `${this.base}/api/boards/${encodeURIComponent(this.options.board)}/events?${q}`;
  }

  /** @param {(type: string, fn: (data: any, ev: MessageEvent) => void) => void} on */
  listen(on) {
    on("snapshot", (data) => {
      this.attempt = 0;
      applySnapshot(this.state, data);
      this.options.onSnapshot?.(this.state, data);
    });
    for (const type of CHANGE_TYPES) on(type, (data) => this.onChange(data));
    on("presence", (data) => {
      const viewers = data.viewers || [];
      this.you = data.you || guessYou(viewers, this.options.name) || this.you;
      this.options.onPresence?.(presenceList(this.you, data));
    });
    listenPresenceChanges(on, (_board, update) => this.options.onPresence?.(update));
    on("signal", (data) => {
      if (this.you && data.viewer && data.viewer.id === this.you.id) return;
      this.options.onSignal?.(data);
    });
  }

  forgetViewers() {
    this.you = null;
  }

  stop() {
    super.stop();
    this.signals?.clear();
  }

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

  /** @param {string} why */
  markGone(why) {
    this.stop();
    this.generation += 1;
    this.setStatus("gone");
    this.options.onGone?.(why);
  }

  /** After a refused stream: the board's own answer says whether to go on. */
  async diagnose() {
    const generation = this.generation;
    const { status, message } = await this.boardStatus(this.options.board);
    if (generation !== this.generation) return;
    if (status === 404 || status === 400) {
      this.markGone(status === 404 ? "not_found" : "invalid_id");
      return;
    }
    if (status === 401 || status === 403) this.options.onRefused?.(message, status);
    if (status === 200) {
      const refusal = await this.probeRefusal();
      if (generation !== this.generation) return;
      if (refusal) {
        this.close();
        this.options.onRefused?.(refusal.message, refusal.status);
        return;
      }
    }
    this.reconnectSoon();
  }
}

/**
 * Many boards on one stream (`GET /api/events?boards=…`). Each board is folded into its
 * own state (`states`), in its own seq order, each event once; a gap in one board's ids
 * reopens the stream with the cursor, so the server replays that board alone. `setBoards`
 * changes the set by reopening with the cursor and the same session: the boards that stay
 * resume where they were (nothing replayed twice, their viewers kept, no presence
 * announced for them), the new ones start with a snapshot.
 */
export class BoardsClient extends StreamClient {
  /** @param {BoardsOptions} options */
  constructor(options) {
    if (!options || !Array.isArray(options.boards)) throw new TypeError("openBoards needs a list of boards");
    super(options);
    /** @type {BoardsOptions} */
    this.options = { ...options };
    this.common = this.options;
    /** The boards of the stream, in the order of its cursor. @type {string[]} */
    this.boards = [];
    /** Each board as folded so far. @type {Map<string, BoardState>} */
    this.states = new Map();
    /** This client's viewer on each board (what its signals are sent as). @type {Map<string, Viewer>} */
    this.you = new Map();
    /** @type {Map<string, SignalSender>} */
    this.senders = new Map();
    /** Boards whose opening `presence` the stream opened last has not sent yet. @type {Set<string>} */
    this.awaiting = new Set();
    /** A `setBoards` put off until then. @type {string[] | null} */
    this.pending = null;
    this.settleTimer = /** @type {ReturnType<typeof setTimeout> | undefined} */ (undefined);
    this.take(options.boards);
  }

  /** The cursor of the boards as folded: each one's seq, comma-separated, "" where none yet. */
  get cursor() {
    return this.boards.map((b) => String(this.states.get(b)?.seq ?? "")).join(",");
  }

  /** Signals sent over all boards, for curious callers and tests. */
  get signalsSent() {
    let n = 0;
    for (const s of this.senders.values()) n += s.sent;
    return n;
  }

  /**
   * Follows exactly these boards from now on (at most `MAX_BOARDS_PER_STREAM`; duplicates
   * are ignored). Reopens the stream when the set changed, resuming each board that stays.
   * @param {string[]} boards
   */
  setBoards(boards) {
    if (this.awaiting.size > 0) {
      // The stream opened last is still taking its viewers over (the server waits for the
      // previous one to close): closing it now could make one of them leave and rejoin.
      // The newest wish is applied once it has (or after SETTLE_MS).
      this.pending = [...boards];
      return;
    }
    this.pending = null;
    const before = this.boards.join(",");
    this.take(boards);
    if (this.boards.join(",") === before) return;
    if (this.status === "paused" || this.status === "closed" || this.status === "gone") return;
    this.attempt = 0;
    this.keepStatus = this.status === "live";
    this.open();
  }

  /** @param {string} board */
  add(board) {
    this.setBoards([...this.boards, board]);
  }

  /** @param {string} board */
  remove(board) {
    this.setBoards(this.boards.filter((b) => b !== board));
  }

  /**
   * Sends a signal to everyone on one board, as this client's viewer there; see
   * `BoardClient.signal`.
   * @param {string} board @param {string} kind @param {Record<string, any>} data
   */
  signal(board, kind, data) {
    if (this.status === "gone" || this.status === "closed" || this.status === "paused") return;
    const sender = this.senders.get(board);
    if (sender && this.you.has(board)) sender.send(kind, data);
  }

  // -- internals -------------------------------------------------------------------------

  /** @param {string[]} boards */
  take(boards) {
    const list = [...new Set(boards)];
    if (list.length > MAX_BOARDS_PER_STREAM) {
      throw new RangeError(`one stream carries at most ${MAX_BOARDS_PER_STREAM} boards, not ${list.length}`);
    }
    for (const board of this.boards) if (!list.includes(board)) this.forget(board);
    for (const board of list) {
      if (this.states.has(board)) continue;
      this.states.set(board, emptyBoard());
      this.senders.set(
        board,
        new SignalSender({
          board,
          viewer: () => this.you.get(board)?.id ?? null,
          request: (method, path, body) => this.request(method, path, body),
          perSecond: this.options.signalsPerSecond,
        }),
      );
    }
    this.boards = list;
  }

  /** @param {string} board */
  forget(board) {
    this.states.delete(board);
    this.you.delete(board);
    this.senders.get(board)?.clear();
    this.senders.delete(board);
  }

  fresh() {
    return this.attempt === 0 && [...this.states.values()].every((s) => s.seq === null);
  }

  opening() {
    this.awaiting = new Set(this.boards);
    clearTimeout(this.settleTimer);
    this.settleTimer = setTimeout(() => this.settled(), SETTLE_MS);
  }

  /** The stream has every viewer (or gave up trying): a put-off `setBoards` may go. */
  settled() {
    clearTimeout(this.settleTimer);
    this.awaiting.clear();
    if (this.pending) this.setBoards(this.pending);
  }

  async streamUrl() {
    if (this.boards.length === 0) {
      this.setStatus("paused");
      return null;
    }
    const q = await this.commonQuery();
    q.set("boards", this.boards.join(","));
    if (this.boards.some((b) => this.states.get(b)?.seq != null)) q.set("last_event_id", this.cursor);
    return `${this.base}/api/events?${q}`;
  }

  /** The board an event's data names. @param {any} data @returns {string | null} */
  boardOf(data) {
    const board = data && (data.board_id || (data.board && data.board.id));
    return typeof board === "string" && this.states.has(board) ? board : null;
  }

  /** @param {(type: string, fn: (data: any, ev: MessageEvent) => void) => void} on */
  listen(on) {
    on("snapshot", (data) => {
      const board = this.boardOf(data);
      if (!board) return;
      const state = /** @type {BoardState} */ (this.states.get(board));
      applySnapshot(state, data);
      this.options.onSnapshot?.(board, state, data);
    });
    for (const type of CHANGE_TYPES) on(type, (data) => this.onChange(data));
    on("presence", (data) => {
      const board = this.boardOf(data);
      if (!board) return;
      const you = data.you || guessYou(data.viewers || [], this.options.name) || this.you.get(board) || null;
      if (you) this.you.set(board, you);
      this.options.onPresence?.(board, presenceList(you, data));
      if (this.awaiting.delete(board) && this.awaiting.size === 0) this.settled();
    });
    listenPresenceChanges(on, (board, update) => {
      if (board && this.states.has(board)) this.options.onPresence?.(board, update);
    });
    on("signal", (data) => {
      const board = this.boardOf(data);
      if (!board) return;
      if (data.viewer && data.viewer.id === this.you.get(board)?.id) return;
      this.options.onSignal?.(board, data);
    });
  }

  forgetViewers() {
    this.you.clear();
  }

  stop() {
    super.stop();
    if (this.senders) for (const s of this.senders.values()) s.clear();
    // No stream is taking viewers over any more: a change of boards may go at once.
    clearTimeout(this.settleTimer);
    this.awaiting?.clear();
  }

  /** @param {ChangeEvent} event */
  onChange(event) {
    const board = this.boardOf(event);
    if (!board) return;
    this.attempt = 0;
    const state = /** @type {BoardState} */ (this.states.get(board));
    const verdict = applyChange(state, event);
    if (verdict === "gap") {
      // Something was missed: reopen with the cursor; the server replays this board.
      this.reconnectSoon(0);
      return;
    }
    if (verdict !== "applied") return;
    this.options.onChange?.(board, event, state);
    if (event.type === "board.deleted") {
      // The server goes on for the others; a later reopen must not name this one (404).
      this.boards = this.boards.filter((b) => b !== board);
      this.forget(board);
      this.options.onGone?.(board, "deleted");
    }
  }

  /**
   * After a refused stream: one board gone (404) or refused (403) refuses the whole stream,
   * so ask each board; drop the ones that answer so and go on with the rest.
   */
  async diagnose() {
    const generation = this.generation;
    const answers = await Promise.all(this.boards.map(async (b) => ({ board: b, ...(await this.boardStatus(b)) })));
    if (generation !== this.generation) return;
    for (const { board, status, message } of answers) {
      if (status === 404 || status === 400 || status === 403) {
        this.boards = this.boards.filter((b) => b !== board);
        this.forget(board);
        if (status === 403) this.options.onRefused?.(board, message, status);
        else this.options.onGone?.(board, status === 404 ? "not_found" : "invalid_id");
      } else if (status === 401) {
        this.options.onRefused?.(null, message, status);
        break;
      }
    }
    if (answers.every((a) => a.status === 200) && this.boards.length > 0) {
      const refusal = await this.probeRefusal();
      if (generation !== this.generation) return;
      if (refusal) {
        this.close();
        this.options.onRefused?.(null, refusal.message, refusal.status);
        return;
      }
    }
    this.reconnectSoon();
  }
}

/** The opening `presence` event as an update. @param {Viewer | null} you @param {any} data @returns {PresenceUpdate} */
function presenceList(you, data) {
  const viewers = data.viewers || [];
  const count = typeof data.count === "number" ? data.count : viewers.length;
  return { type: "list", you, viewers, count };
}

/**
 * `presence.joined`, `.left` and `.count`, with the board each names.
 * @param {(type: string, fn: (data: any, ev: MessageEvent) => void) => void} on
 * @param {(board: string | null, update: PresenceUpdate) => void} fn
 */
function listenPresenceChanges(on, fn) {
  const board = (/** @type {any} */ data) => (typeof data.board_id === "string" ? data.board_id : null);
  on("presence.joined", (data) => fn(board(data), { type: "joined", viewer: data.viewer, count: data.count ?? null }));
  on("presence.left", (data) => fn(board(data), { type: "left", viewer: data.viewer, count: data.count ?? null }));
  on("presence.count", (data) => fn(board(data), { type: "count", count: data.count }));
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
