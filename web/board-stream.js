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

/** Opens the board's stream for this tab; see `BoardStream`. @param {StreamOptions} options */
export function openBoardStream(options) {
  return new BoardStream(options);
}
