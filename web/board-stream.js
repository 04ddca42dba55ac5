// @ts-check
// The board page's live stream: what `board.js` listens to, whatever carries it.
//
// The page hands in its callbacks (snapshot, change, presence, signal, status, gone,
// refused) and gets back a `BoardStream`. Behind it, the client library
// (boardcast-client.js) holds this tab's own stream of the board, resumes it from its last
// event after any break, and gives the connection back while the tab is hidden (browsers
// allow six per origin over HTTP/1.1).

import { openBoard } from "./boardcast-client.js";

/** @typedef {import("./boardcast-client.js").Status} Status */
/** @typedef {import("./boardcast-client.js").PresenceUpdate} PresenceUpdate */
/** @typedef {import("./boardcast-client.js").Signal} Signal */
/** @typedef {import("./boardcast-client.js").Viewer} Viewer */
/** @typedef {import("./board-core.js").Snapshot} Snapshot */
/** @typedef {import("./board-core.js").ChangeEvent} ChangeEvent */

/**
 * What the page is told. `status` gets the client's states plus `offline` (the browser says
 * the network is gone).
 * @typedef {Object} StreamHandlers
 * @property {(status: Status | "offline") => void} status
 * @property {(snapshot: Snapshot) => void} snapshot
 * @property {(event: ChangeEvent) => void} change in seq order, each once
 * @property {(update: PresenceUpdate) => void} presence
 * @property {(signal: Signal) => void} signal others' signals
 * @property {(why: string) => void} gone
 * @property {(message: string, status: number) => void} refused
 */

/**
 * @typedef {Object} StreamOptions
 * @property {string} board
 * @property {string} name
 * @property {() => (string | null | undefined)} token
 * @property {StreamHandlers} on
 * @property {number} [hiddenCloseMs] a tab hidden this long gives its stream back
 */

/** A tab hidden this long closes its stream (and leaves presence) until it is shown again. */
export const HIDDEN_CLOSE_MS = 60_000;

/**
 * The board's stream for this tab. `seq` is the last event applied (null before the first
 * snapshot); `you` the viewer this tab's signals are sent as.
 */
export class BoardStream {
  /** @param {StreamOptions} options */
  constructor(options) {
    this.options = options;
    /** A stream of this tab's own. */
    this.mode = "tab";
    /** Every time the stream (re)opened, as Date.now(). @type {number[]} */
    this.opens = [];
    this.closed = false;
    const on = options.on;
    this.client = openBoard({
      board: options.board,
      name: options.name,
      token: options.token,
      onStatus: (status) => {
        if (status === "live") this.opens.push(Date.now());
        if (status === "reconnecting" && navigator.onLine === false) on.status("offline");
        else on.status(status);
      },
      onSnapshot: (_state, data) => on.snapshot(data),
      onChange: (event) => on.change(event),
      onPresence: (update) => on.presence(update),
      onSignal: (signal) => on.signal(signal),
      onGone: (why) => on.gone(why),
      onRefused: (message, status) => on.refused(message, status),
    });
    this.watchLifecycle(options.hiddenCloseMs || HIDDEN_CLOSE_MS);
  }

  /** @returns {number | null} */
  get seq() {
    return this.client.state.seq;
  }

  /** @returns {Viewer | null} */
  get you() {
    return this.client.you;
  }

  get heartbeatMs() {
    return this.client.heartbeatMs;
  }

  get signalsSent() {
    return this.client.signalsSent;
  }

  /** @param {string} kind @param {Record<string, any>} data */
  signal(kind, data) {
    this.client.signal(kind, data);
  }

  /** Reopens under a new display name, from the last event. @param {string} name */
  rename(name) {
    this.client.rename(name);
  }

  /** For good (the board is gone). */
  close() {
    this.closed = true;
    this.client.close();
  }

  /** @param {number} hiddenCloseMs */
  watchLifecycle(hiddenCloseMs) {
    // Leaving the page: close the stream so the others see this viewer leave at once.
    // Back from the back/forward cache: resume.
    window.addEventListener("pagehide", () => this.client.pause());
    window.addEventListener("pageshow", (ev) => {
      if (ev.persisted && !this.closed) this.client.resume();
    });
    // A tab hidden for a while gives its connection back and leaves presence; shown again,
    // it resumes from its last event: nothing missed, no reload.
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let hiddenTimer;
    document.addEventListener("visibilitychange", () => {
      clearTimeout(hiddenTimer);
      if (document.visibilityState === "hidden") {
        hiddenTimer = setTimeout(() => this.client.pause(), hiddenCloseMs);
      } else if (!this.closed) {
        this.client.resume();
      }
    });
    window.addEventListener("offline", () => {
      if (!this.closed) this.options.on.status("offline");
    });
    // Back online: the stream may look open but be dead (another network, a sleeping
    // laptop), and the watchdog would take several heartbeats to tell. Reopen now.
    window.addEventListener("online", () => {
      if (!this.closed) this.client.reconnect();
    });
  }
}

/**
 * The board's stream through the SharedWorker (stream-worker.js), which holds one stream
 * for every tab of the origin: the same face as `BoardStream`.
 */
export class SharedBoardStream {
  /** @param {StreamOptions} options @param {SharedWorker} worker */
  constructor(options, worker) {
    this.options = options;
    /** The stream every tab shares. */
    this.mode = "shared";
    this.port = worker.port;
    /** Answers to `stats()`, oldest first. @type {((stats: any) => void)[]} */
    this.waiting = [];
    /** How often this tab found its port dropped and attached again. */
    this.reattached = 0;
    /** @type {number[]} */
    this.opens = [];
    this.closed = false;
    this.paused = false;
    /** @type {number | null} */
    this.seq = null;
    /** @type {Viewer | null} */
    this.you = null;
    this.heartbeatMs = 15_000;
    this.signalsSent = 0;
    /** @type {Status | "offline" | null} */
    this.status = null;
    this.heard = Date.now();
    this.listenTo(worker.port);
    this.setStatus("connecting");
    this.subscribe();
    // The worker drops a tab it has not heard from for a while (closed, crashed, frozen).
    // A tab back from being frozen finds its port dropped (no answer to its pings): it
    // attaches again and takes its board back.
    setInterval(() => {
      if (Date.now() - this.heard > REATTACH_MS) this.reattach();
      this.port.postMessage({ type: "ping", token: options.token() || null });
    }, PING_MS);
    this.watchLifecycle(options.hiddenCloseMs || HIDDEN_CLOSE_MS);
  }

  /** @param {MessagePort} port */
  listenTo(port) {
    this.port = port;
    port.onmessage = (m) => {
      this.heard = Date.now();
      this.receive(m.data || {});
    };
    port.start();
  }

  reattach() {
    this.port.onmessage = null;
    this.heard = Date.now();
    this.reattached += 1;
    this.listenTo(startWorker().port);
    if (!this.closed && !this.paused) this.subscribe();
  }

  subscribe() {
    const { board, name, token } = this.options;
    this.port.postMessage({ type: "open", board, name, token: token() || null });
  }

  /** Leaves the board (the stream drops it unless another tab shows it). */
  pause() {
    if (this.closed || this.paused) return;
    this.paused = true;
    this.you = null;
    this.port.postMessage({ type: "close", board: this.options.board });
    this.setStatus("paused");
  }

  resume() {
    if (this.closed || !this.paused) return;
    this.paused = false;
    this.setStatus("reconnecting");
    this.subscribe();
  }

  /** @param {string} kind @param {Record<string, any>} data */
  signal(kind, data) {
    if (!this.you || this.paused || this.closed) return;
    this.signalsSent += 1;
    this.port.postMessage({ type: "signal", board: this.options.board, kind, data });
  }

  /** Every tab's stream reopens under the new name (one name per profile). @param {string} name */
  rename(name) {
    this.options.name = name;
    this.port.postMessage({ type: "rename", name });
  }

  close() {
    if (this.closed) return;
    this.port.postMessage({ type: "close", board: this.options.board });
    this.closed = true;
  }

  /** @param {Status | "offline"} status */
  setStatus(status) {
    if (status === "live" && this.status !== "live") this.opens.push(Date.now());
    this.status = status;
    this.options.on.status(status);
  }

  /**
   * What the worker holds, for tests and the curious: its tabs and, per stream, the boards,
   * status, cursor and session.
   * @returns {Promise<{tabs: number, streams: {boards: string[], status: string, cursor: string, session: string}[]}>}
   */
  stats() {
    return new Promise((resolve) => {
      this.waiting.push(resolve);
      this.port.postMessage({ type: "stats" });
    });
  }

  /** @param {any} msg */
  receive(msg) {
    if (msg.type === "stats") {
      this.waiting.shift()?.(msg);
      return;
    }
    if (msg.type === "pong") {
      if (msg.heartbeatMs) this.heartbeatMs = msg.heartbeatMs;
      return;
    }
    if (msg.board !== this.options.board || this.closed || this.paused) return;
    const on = this.options.on;
    switch (msg.type) {
      case "status":
        if (msg.heartbeatMs) this.heartbeatMs = msg.heartbeatMs;
        this.setStatus(msg.status === "reconnecting" && navigator.onLine === false ? "offline" : msg.status);
        break;
      case "snapshot":
        this.seq = msg.snapshot.seq;
        on.snapshot(msg.snapshot);
        break;
      case "change":
        // The worker folds each event once, in order; a tab that caught up from its
        // snapshot may still be handed one it has.
        if (this.seq !== null && msg.event.seq <= this.seq) return;
        this.seq = msg.event.seq;
        on.change(msg.event);
        break;
      case "presence":
        if (msg.update.type === "list") this.you = msg.update.you;
        on.presence(msg.update);
        break;
      case "signal":
        on.signal(msg.signal);
        break;
      case "gone":
        this.closed = true;
        on.gone(msg.why);
        break;
      case "refused":
        on.refused(msg.message, msg.status);
        break;
      default:
    }
  }

  /** @param {number} hiddenCloseMs */
  watchLifecycle(hiddenCloseMs) {
    window.addEventListener("pagehide", () => this.pause());
    window.addEventListener("pageshow", (ev) => {
      if (ev.persisted) this.resume();
    });
    // As a tab's own stream does (BoardStream): a tab hidden for a while leaves the board's
    // presence; the connection itself is shared, so this frees none.
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let hiddenTimer;
    document.addEventListener("visibilitychange", () => {
      clearTimeout(hiddenTimer);
      if (document.visibilityState === "hidden") hiddenTimer = setTimeout(() => this.pause(), hiddenCloseMs);
      else this.resume();
    });
    window.addEventListener("offline", () => {
      if (!this.closed) this.setStatus("offline");
    });
    window.addEventListener("online", () => {
      if (!this.closed) this.port.postMessage({ type: "reconnect" });
    });
  }
}

/** How often a tab tells the worker it is still there (the worker drops it after 6 s). */
const PING_MS = 2_000;
/** No word from the worker (it answers every ping) for this long: the port was dropped. */
const REATTACH_MS = 7_000;
/** Where the shared worker is served (src/routes/web_page.rs). */
const WORKER_URL = "/static/stream-worker.js";

/**
 * Opens the board's stream for this tab: through the one stream every tab of the origin
 * shares (a SharedWorker), or, where there is none (Chrome on Android) or it fails to
 * start, a stream of this tab's own.
 * @param {StreamOptions} options
 * @returns {BoardStream | SharedBoardStream}
 */
export function openBoardStream(options) {
  if (typeof SharedWorker !== "function") return new BoardStream(options);
  let worker;
  try {
    worker = startWorker();
  } catch {
    return new BoardStream(options);
  }
  return new SharedBoardStream(options, worker);
}

/** The origin's one stream worker (a new port to it, or it started). */
function startWorker() {
  return new SharedWorker(WORKER_URL, { type: "module", name: "boardcast-streams" });
}
