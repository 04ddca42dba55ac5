// @ts-check
// One stream for every tab of this origin (a SharedWorker, started by board-stream.js).
//
// Browsers allow six HTTP/1.1 connections per origin; a stream per tab spends one each, and
// with six tabs open nothing else (not even a save) gets through. Here the tabs of a
// profile share ONE multi-board stream (`GET /api/events?boards=…`, boardcast-client.js's
// BoardsClient) and this worker hands each tab (its MessagePort) the events of the boards
// it shows. A tab opening or closing a board changes the stream's `boards`: the client
// reopens with the cursor and the same `session`, so the boards that stay resume where they
// were and their viewer is kept (nobody sees it leave and rejoin).
//
// Messages from a tab: {type: "open", board, name, token} | {type: "close", board} |
// {type: "signal", board, kind, data} | {type: "rename", name} | {type: "reconnect"} |
// {type: "ping", token} | {type: "bye"} | {type: "stats"}.
// To a tab: {type: "status" | "snapshot" | "change" | "presence" | "signal" | "gone" |
// "refused", board, …} and {type: "pong", heartbeatMs} | {type: "stats", …}.

import { BoardsClient, MAX_BOARDS_PER_STREAM } from "./boardcast-client.js";

/** @typedef {import("./boardcast-client.js").Viewer} Viewer */
/** @typedef {import("./boardcast-client.js").PresenceUpdate} PresenceUpdate */

/** A tab that has not pinged for this long is gone (closed, crashed, frozen): drop it. */
const TAB_TIMEOUT_MS = 6_000;
/** Changes to the set of boards within this window make one reopen, not one each. */
const RESHAPE_DELAY_MS = 150;

/**
 * @typedef {Object} Tab
 * @property {MessagePort} port
 * @property {Set<string>} boards
 * @property {string} key the group (token) it belongs to
 * @property {number} seen last message, Date.now()
 */

/**
 * What the worker knows of a board's presence, to hand a tab that opens a board the stream
 * already carries.
 * @typedef {{you: Viewer | null, viewers: Map<string, Viewer>, count: number}} Presence
 */

/**
 * The tabs that share one token (auth off: all of them) share its streams: one, or one
 * more per `MAX_BOARDS_PER_STREAM` boards.
 */
class Group {
  /** @param {string} key @param {string} name */
  constructor(key, name) {
    this.key = key;
    this.name = name;
    /** @type {string | null} */
    this.token = key || null;
    /** @type {BoardsClient[]} */
    this.clients = [];
    /** @type {Map<string, Presence>} */
    this.presence = new Map();
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.timer = undefined;
    /** One session for the group's streams: a board that moves keeps its viewer. */
    this.session = `w${Math.random().toString(36).slice(2)}${Date.now().toString(36)}`;
  }

  /** Every board some tab of this group wants. */
  wanted() {
    const boards = new Set();
    for (const tab of tabs.values()) if (tab.key === this.key) for (const b of tab.boards) boards.add(b);
    return boards;
  }

  /** @param {string} board */
  clientOf(board) {
    return this.clients.find((c) => c.boards.includes(board)) || null;
  }

  /** Soon: makes the streams carry exactly the wanted boards. */
  reshape() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.reshapeNow(), RESHAPE_DELAY_MS);
  }

  reshapeNow() {
    const wanted = this.wanted();
    // Boards stay on the stream they are on (moving one would re-snapshot it); new ones go
    // where there is room.
    const plan = this.clients.map((c) => c.boards.filter((b) => wanted.has(b)));
    for (const board of wanted) {
      if (plan.some((list) => list.includes(board))) continue;
      const room = plan.find((list) => list.length < MAX_BOARDS_PER_STREAM);
      if (room) room.push(board);
      else plan.push([board]);
    }
    plan.forEach((boards, i) => {
      const client = this.clients[i] || this.newClient();
      // Closed first, so that the change of boards is not put off behind a takeover.
      if (boards.length === 0) client.close();
      client.setBoards(boards);
      if (boards.length > 0 && (client.status === "closed" || client.status === "paused")) client.open();
    });
    for (const board of [...this.presence.keys()]) if (!wanted.has(board)) this.presence.delete(board);
    this.clients = this.clients.filter((c) => c.boards.length > 0);
  }

  newClient() {
    const client = new BoardsClient({
      boards: [],
      name: this.name,
      session: `${this.session}-${this.clients.length}`,
      token: () => this.token,
      onStatus: (status) => {
        for (const board of client.boards) send(board, this.key, { type: "status", board, status, heartbeatMs: client.heartbeatMs });
      },
      onSnapshot: (board, _state, snapshot) => {
        // A tab that opened this board may not have heard the status yet (a stream that was
        // live stays live while it takes another board).
        send(board, this.key, { type: "status", board, status: client.status, heartbeatMs: client.heartbeatMs });
        send(board, this.key, { type: "snapshot", board, snapshot });
      },
      onChange: (board, event) => send(board, this.key, { type: "change", board, event }),
      onPresence: (board, update) => {
        this.fold(board, update);
        send(board, this.key, { type: "presence", board, update });
      },
      onSignal: (board, signal) => send(board, this.key, { type: "signal", board, signal }),
      onGone: (board, why) => {
        send(board, this.key, { type: "gone", board, why });
        for (const tab of tabs.values()) if (tab.key === this.key) tab.boards.delete(board);
      },
      onRefused: (board, message, status) => {
        for (const tab of tabs.values()) {
          if (tab.key !== this.key || (board && !tab.boards.has(board))) continue;
          for (const b of tab.boards) {
            if (!board || b === board) tab.port.postMessage({ type: "refused", board: b, message, status });
          }
          if (board) tab.boards.delete(board);
        }
      },
    });
    this.clients.push(client);
    return client;
  }

  /** Keeps a board's presence as the stream tells it. @param {string} board @param {PresenceUpdate} update */
  fold(board, update) {
    let p = this.presence.get(board);
    if (update.type === "list") {
      p = { you: update.you, viewers: new Map(update.viewers.map((v) => [v.id, v])), count: update.count };
      this.presence.set(board, p);
      return;
    }
    if (!p) return;
    if (update.type === "joined") p.viewers.set(update.viewer.id, update.viewer);
    if (update.type === "left") p.viewers.delete(update.viewer.id);
    p.count = update.count ?? p.viewers.size;
  }

  /**
   * A tab opened a board the stream already carries: give it what the others have (the
   * board as folded, its presence, the status) instead of waiting for the next reopen.
   * @param {Tab} tab @param {string} board
   */
  catchUp(tab, board) {
    const client = this.clientOf(board);
    const state = client && client.states.get(board);
    if (!client || !state || state.seq === null || !state.board) return false;
    const snapshot = { seq: state.seq, board: state.board, notes: [...state.notes.values()] };
    tab.port.postMessage({ type: "status", board, status: client.status, heartbeatMs: client.heartbeatMs });
    tab.port.postMessage({ type: "snapshot", board, snapshot });
    const p = this.presence.get(board);
    if (p) {
      const update = { type: "list", you: p.you, viewers: [...p.viewers.values()], count: p.count };
      tab.port.postMessage({ type: "presence", board, update });
    }
    return true;
  }
}

/** @type {Map<MessagePort, Tab>} */
const tabs = new Map();
/** @type {Map<string, Group>} */
const groups = new Map();

/** @param {string} board @param {string} key @param {any} message */
function send(board, key, message) {
  for (const tab of tabs.values()) if (tab.key === key && tab.boards.has(board)) tab.port.postMessage(message);
}

/** @param {string} key @param {string} name */
function groupFor(key, name) {
  let group = groups.get(key);
  if (!group) {
    group = new Group(key, name);
    groups.set(key, group);
  }
  return group;
}

/** @param {Tab} tab */
function drop(tab) {
  tabs.delete(tab.port);
  tab.port.close();
  groups.get(tab.key)?.reshape();
}

/** @param {Tab} tab @param {any} msg */
function handle(tab, msg) {
  tab.seen = Date.now();
  const group = groupFor(tab.key, msg.name || "");
  switch (msg.type) {
    case "open": {
      const key = msg.token || "";
      if (key !== tab.key) {
        // Another token: another group (and stream), which that token may open.
        const old = groups.get(tab.key);
        tab.key = key;
        old?.reshape();
      }
      const own = groupFor(tab.key, msg.name || "");
      if (msg.name) own.name = msg.name;
      tab.boards.add(msg.board);
      if (!own.catchUp(tab, msg.board)) own.reshape();
      break;
    }
    case "close":
      tab.boards.delete(msg.board);
      group.reshape();
      break;
    case "signal":
      group.clientOf(msg.board)?.signal(msg.board, msg.kind, msg.data);
      break;
    case "rename":
      group.name = msg.name;
      for (const client of group.clients) client.rename(msg.name);
      break;
    case "reconnect":
      for (const client of group.clients) client.reconnect();
      break;
    case "ping": {
      if (msg.token && msg.token !== group.token && msg.token === tab.key) group.token = msg.token;
      const client = group.clients[0];
      tab.port.postMessage({ type: "pong", heartbeatMs: client ? client.heartbeatMs : null });
      break;
    }
    case "bye":
      drop(tab);
      break;
    case "stats":
      tab.port.postMessage({
        type: "stats",
        tabs: tabs.size,
        streams: [...groups.values()].flatMap((g) =>
          g.clients.map((c) => ({ boards: [...c.boards], status: c.status, cursor: c.cursor, session: c.session })),
        ),
      });
      break;
    default:
  }
}

/** @type {any} */ (self).onconnect = (/** @type {MessageEvent} */ ev) => {
  const port = ev.ports[0];
  /** @type {Tab} */
  const tab = { port, boards: new Set(), key: "", seen: Date.now() };
  tabs.set(port, tab);
  port.onmessage = (m) => {
    if (tabs.has(port)) handle(tab, m.data || {});
  };
  port.start();
};

// Tabs that went away without a word (closed, crashed, frozen by the browser): their boards
// leave the stream.
setInterval(() => {
  const now = Date.now();
  for (const tab of [...tabs.values()]) if (now - tab.seen > TAB_TIMEOUT_MS) drop(tab);
}, TAB_TIMEOUT_MS / 3);
