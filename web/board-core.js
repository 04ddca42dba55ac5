// @ts-check
// The board as data: a snapshot plus the change events after it, folded into one state.
// No DOM, no network: the page, the client library and Node tests all use it.

/**
 * A note as the API sends it.
 * @typedef {{id: string, board_id: string, text: string, x: number, y: number, color: string,
 *   width: number, height: number, version: number, author: string | null,
 *   created_at: string, updated_at: string}} Note
 */

/**
 * A board as the API sends it.
 * @typedef {{id: string, title: string, seq: number, created_at: string, updated_at: string}} Board
 */

/**
 * The `snapshot` event's data: the whole board as of `seq`.
 * @typedef {{seq: number, board: Board, notes: Note[]}} Snapshot
 */

/**
 * A change event's data. `note` / `board` hold the full new state, or just `{id}` for a
 * deletion.
 * @typedef {{seq: number, type: ChangeType, board_id: string, at: string,
 *   note?: Note | {id: string}, board?: Board | {id: string}}} ChangeEvent
 */

/** @typedef {"board.updated" | "board.deleted" | "note.created" | "note.updated" | "note.deleted"} ChangeType */

/**
 * What a client knows of a board: `seq` is the last event folded in (null before the
 * first snapshot); `deleted` once `board.deleted` arrived.
 * @typedef {{seq: number | null, board: Board | null, notes: Map<string, Note>, deleted: boolean}} BoardState
 */

/** The change event names, in the contract's words. */
export const CHANGE_TYPES = /** @type {const} */ ([
  "board.updated",
  "board.deleted",
  "note.created",
  "note.updated",
  "note.deleted",
]);

/** The contract's limits on a note's size and position. */
export const LIMITS = Object.freeze({ sizeMin: 20, sizeMax: 2000, coord: 1_000_000 });

/** @returns {BoardState} */
export function emptyBoard() {
  return { seq: null, board: null, notes: new Map(), deleted: false };
}

/**
 * Replaces the state with a snapshot.
 * @param {BoardState} state
 * @param {Snapshot} snapshot
 */
export function applySnapshot(state, snapshot) {
  state.seq = Number(snapshot.seq);
  state.board = snapshot.board;
  state.notes = new Map((snapshot.notes || []).map((n) => [n.id, n]));
  state.deleted = false;
}

/**
 * Folds one change event in, if it is the next one. `duplicate`: already folded in (or
 * older); `gap`: events are missing before it, so the caller must catch up first (resume
 * from `state.seq`) — nothing was changed.
 * @param {BoardState} state
 * @param {ChangeEvent} event
 * @returns {"applied" | "duplicate" | "gap"}
 */
export function applyChange(state, event) {
  const seq = Number(event.seq);
  if (state.seq !== null && seq <= state.seq) return "duplicate";
  if (state.seq === null || seq !== state.seq + 1) return "gap";
  state.seq = seq;
  switch (event.type) {
    case "note.created":
    case "note.updated":
      if (event.note) state.notes.set(event.note.id, /** @type {Note} */ (event.note));
      break;
    case "note.deleted":
      if (event.note) state.notes.delete(event.note.id);
      break;
    case "board.updated":
      if (event.board) state.board = { ...state.board, .../** @type {Board} */ (event.board) };
      break;
    case "board.deleted":
      state.deleted = true;
      break;
    default:
  }
  if (state.board) state.board = { ...state.board, seq };
  return "applied";
}

/**
 * A size within the contract's 20–2,000.
 * @param {number} v
 */
export function clampSize(v) {
  return clamp(v, LIMITS.sizeMin, LIMITS.sizeMax);
}

/**
 * A coordinate within the contract's ±1,000,000.
 * @param {number} v
 */
export function clampCoord(v) {
  return clamp(v, -LIMITS.coord, LIMITS.coord);
}

/**
 * @param {number} v
 * @param {number} lo
 * @param {number} hi
 */
export function clamp(v, lo, hi) {
  return Math.min(hi, Math.max(lo, v));
}

/**
 * A friendly name for a first-time visitor ("Teal Otter"): an adjective and an animal,
 * 30 × 30 of them, so two people on one board rarely share one.
 * @param {() => number} [random] a source of numbers in [0, 1)
 */
export function friendlyName(random = Math.random) {
  const pick = (/** @type {string[]} */ words) => words[Math.floor(random() * words.length) % words.length];
  return `${pick(ADJECTIVES)} ${pick(ANIMALS)}`;
}

const ADJECTIVES = [
  "Amber", "Brave", "Bright", "Calm", "Clever", "Coral", "Cosmic", "Curious", "Dapper", "Eager",
  "Gentle", "Golden", "Happy", "Jolly", "Kind", "Lively", "Lucky", "Mellow", "Merry", "Nimble",
  "Plucky", "Quick", "Quiet", "Rosy", "Sunny", "Swift", "Teal", "Witty", "Zesty", "Zippy",
];
const ANIMALS = [
  "Badger", "Beaver", "Bison", "Crane", "Dolphin", "Falcon", "Ferret", "Finch", "Fox", "Gecko",
  "Heron", "Ibis", "Koala", "Lemur", "Lynx", "Marten", "Moose", "Narwhal", "Ocelot", "Otter",
  "Owl", "Panda", "Puffin", "Quokka", "Raven", "Seal", "Stoat", "Tapir", "Walrus", "Yak",
];
