// @ts-check
// Others' live motion on this page: their cursors (with names and colours, in board
// coordinates, so they stay right whichever side pans), the note each one drags or
// resizes, and who is typing into which note. Fed by signals; no network of its own.

import { hueFor } from "./api.js";

/** A cursor fades after this long without moving… */
export const CURSOR_FADE_MS = 2500;
/** …and motion or typing not renewed for this long is forgotten (a lost `idle`). */
export const MOTION_FORGET_MS = 4000;

/** @typedef {import("./boardcast-client.js").Signal} Signal */
/** @typedef {{x: number, y: number, width: number, height: number}} Rect */

/**
 * @typedef {Object} LiveHooks
 * @property {(noteId: string, rect: Rect | null, who: string, at?: string) => void} onMoving
 *   a note moves on someone else's screen (`null`: they stopped)
 * @property {(noteId: string, names: string[]) => void} onTyping who types into a note
 * @property {(noteId: string) => Rect | null} rectOf where a note is shown now
 */

/**
 * The layer of others' cursors inside `world` (the panned element), plus the bookkeeping
 * of who moves and types what.
 * @param {HTMLElement} world
 * @param {LiveHooks} hooks
 */
export function createLive(world, hooks) {
  const layer = document.createElement("div");
  layer.className = "cursors";
  layer.setAttribute("aria-hidden", "true");
  world.append(layer);

  /** @type {Map<string, {el: HTMLElement, at: number, x: number, y: number}>} */
  const cursors = new Map();
  /** viewer id -> note id being moved, and where @type {Map<string, {note: string, at: number, name: string, rect: Rect}>} */
  const moving = new Map();
  /** viewer id -> note id typed into @type {Map<string, {note: string, at: number, name: string}>} */
  const typing = new Map();

  /** @param {string} id @param {string} name */
  function cursorFor(id, name) {
    let c = cursors.get(id);
    if (!c) {
      const el = document.createElement("div");
      el.className = "cursor";
      el.dataset.viewer = id;
      const arrow = document.createElement("span");
      arrow.className = "cursor-arrow";
      const label = document.createElement("span");
      label.className = "cursor-name";
      el.append(arrow, label);
      layer.append(el);
      c = { el, at: 0, x: 0, y: 0 };
      cursors.set(id, c);
    }
    const hue = hueFor(name);
    c.el.style.setProperty("--cursor-hue", String(hue));
    /** @type {HTMLElement} */ (c.el.querySelector(".cursor-name")).textContent = name;
    c.el.dataset.name = name;
    return c;
  }

  /** @param {{el: HTMLElement, at: number, x: number, y: number}} c @param {number} x @param {number} y @param {number} now */
  function placeCursor(c, x, y, now) {
    c.x = x;
    c.y = y;
    c.at = now;
    c.el.classList.remove("cursor-stale");
    c.el.style.transform = `translate(${x}px, ${y}px)`;
  }

  /** @param {string} id */
  function dropCursor(id) {
    const c = cursors.get(id);
    if (c) c.el.remove();
    cursors.delete(id);
  }

  /** @param {string} viewer */
  function stopMoving(viewer) {
    const m = moving.get(viewer);
    if (!m) return;
    moving.delete(viewer);
    hooks.onMoving(m.note, null, m.name);
  }

  /** @param {string} viewer */
  function stopTyping(viewer) {
    const t = typing.get(viewer);
    if (!t) return;
    typing.delete(viewer);
    hooks.onTyping(t.note, typersOf(t.note));
  }

  /** @param {string} note */
  function typersOf(note) {
    return [...typing.values()].filter((t) => t.note === note).map((t) => t.name);
  }

  /** Forgets everything about a viewer (it went idle or left). @param {string} viewer */
  function forget(viewer) {
    dropCursor(viewer);
    stopMoving(viewer);
    stopTyping(viewer);
  }

  const sweeper = setInterval(() => {
    const now = Date.now();
    for (const c of cursors.values()) c.el.classList.toggle("cursor-stale", now - c.at > CURSOR_FADE_MS);
    for (const [viewer, m] of moving) if (now - m.at > MOTION_FORGET_MS) stopMoving(viewer);
    for (const [viewer, t] of typing) if (now - t.at > MOTION_FORGET_MS) stopTyping(viewer);
  }, 500);

  return {
    /** @param {Signal} signal */
    signal(signal) {
      const who = signal.viewer;
      const data = signal.data || {};
      const now = Date.now();
      switch (signal.kind) {
        case "cursor": {
          if (!Number.isFinite(data.x) || !Number.isFinite(data.y)) return;
          placeCursor(cursorFor(who.id, who.name), data.x, data.y, now);
          break;
        }
        case "note.moving": {
          if (typeof data.note_id !== "string") return;
          const rect = { x: data.x, y: data.y, width: data.width, height: data.height };
          if (![rect.x, rect.y, rect.width, rect.height].every(Number.isFinite)) return;
          const before = moving.get(who.id);
          if (before && before.note !== data.note_id) stopMoving(who.id);
          // The sender sends no cursor while it drags: its pointer moves with the note (or
          // with the corner it resizes), so its cursor here follows by as much.
          const c = cursors.get(who.id);
          const from = before && before.note === data.note_id ? before.rect : hooks.rectOf(data.note_id);
          if (c && from) {
            const dx = rect.x - from.x + (rect.width - from.width);
            const dy = rect.y - from.y + (rect.height - from.height);
            placeCursor(c, c.x + dx, c.y + dy, now);
          }
          moving.set(who.id, { note: data.note_id, at: now, name: who.name, rect });
          hooks.onMoving(data.note_id, rect, who.name, signal.at);
          break;
        }
        case "note.typing": {
          if (typeof data.note_id !== "string") return;
          const before = typing.get(who.id);
          if (before && before.note !== data.note_id) stopTyping(who.id);
          typing.set(who.id, { note: data.note_id, at: now, name: who.name });
          hooks.onTyping(data.note_id, typersOf(data.note_id));
          break;
        }
        case "idle":
          forget(who.id);
          break;
        default:
      }
    },
    /** A change event landed this note: whoever moved it is done. @param {string} note */
    landed(note) {
      for (const [viewer, m] of moving) if (m.note === note) stopMoving(viewer);
    },
    /** @param {string} viewer */
    left(viewer) {
      forget(viewer);
    },
    /** Everyone's motion goes (the stream was closed). */
    clear() {
      for (const viewer of [...cursors.keys(), ...moving.keys(), ...typing.keys()]) forget(viewer);
    },
    /** Others' cursors on screen: [{viewer, name, x, y, stale}]. */
    cursors() {
      return [...cursors.entries()].map(([viewer, c]) => ({
        viewer,
        name: c.el.dataset.name || "",
        stale: c.el.classList.contains("cursor-stale"),
        transform: c.el.style.transform,
      }));
    },
    stop() {
      clearInterval(sweeper);
    },
  };
}
