// The page's writes: what a note's local changes become on the server.
//
// board.js owns the notes (their server state, local layers and DOM); this module sends what
// the user changed (one request per note at a time), takes the server's answer back, and
// handles a refused or failed write. It reaches the page only through `host`.

import { ApiError, api, describeError, toast } from "./api.js";

const CONFLICT_MESSAGE = "Someone else changed this note — showing their version";

/**
 * The write side of one board page.
 *
 * `host` is what the page lends it: `boardPath` (`/api/boards/{id}`), `notes` (id -> entry),
 * `tombstones`, `DEFAULT_SIZE`, and the functions `gone()`, `myName()`, `color()` /
 * `setColor(c)` (the colour of the next note), `render(e, opts)`, `applyServerNote(note,
 * opts)`, `removeNote(id, opts)`, `showGone(message)`, `ensureVisible(e)`, `neighbour(e)`,
 * `raise(e)` (bring to front).
 */
export function createWrites(host) {
  function notePath(id) {
    return `${host.boardPath}/notes/${encodeURIComponent(id)}`;
  }

  /** Sends what is dirty, one request per note at a time. */
  async function flush(e) {
    if (host.gone() || !host.notes.has(e.id)) return;
    if (e.inflight) {
      e.again = true;
      return;
    }
    clearTimeout(e.retryTimer);
    const fields = { ...e.dirty };
    if (Object.keys(fields).length === 0) {
      e.base = null;
      return;
    }
    const withText = "text" in fields;
    const ifMatch = withText && e.base ? e.base.version : e.server.version;
    e.dirty = {};
    e.inflight = { fields, ifMatch, withText };
    host.render(e);
    let retry = false;
    try {
      const note = await api("PATCH", notePath(e.id), { body: fields, ifMatch, name: host.myName() });
      e.inflight = null;
      e.rebased = 0;
      host.applyServerNote(note, { own: true, withText });
    } catch (err) {
      e.inflight = null;
      if (!host.notes.has(e.id)) return;
      if (err instanceof ApiError && err.status === 412 && err.body && err.body.note) {
        const current = err.body.note;
        if (withText && e.base && current.text === e.base.text && e.rebased < 3) {
          // Only something other than the text changed: our words still apply on top.
          e.rebased += 1;
          e.base.version = Math.max(e.base.version, current.version);
          e.dirty = { ...fields, ...e.dirty };
          host.applyServerNote(current);
          retry = true;
        } else {
          takeTheirs(e, current);
          return;
        }
      } else if (err instanceof ApiError && err.status === 404) {
        // The note or its board: the board's own answer tells which.
        if (await boardIsGone()) {
          host.showGone("This board was deleted.");
        } else {
          host.removeNote(e.id);
          toast("That note was deleted by someone else.", "info");
        }
        return;
      } else if (!(err instanceof ApiError) || [429, 502, 503, 504].includes(err.status)) {
        // Transient: keep the change and try again shortly.
        e.dirty = { ...fields, ...e.dirty };
        const wait = err instanceof ApiError && err.retryAfter ? err.retryAfter * 1000 : 2000;
        e.retryTimer = setTimeout(() => flush(e), wait);
        toast(`${describeError(err)} Your change will be retried.`, "error");
        host.render(e);
        return;
      } else {
        // Refused for good (a limit, permissions): drop it and show the server's state.
        toast(describeError(err), "error");
        if (!("text" in e.dirty)) e.base = null;
        host.render(e, { forceText: withText && !("text" in e.dirty) });
        return;
      }
    }
    if (retry || e.again || Object.keys(e.dirty).some((k) => k !== "text")) {
      e.again = false;
      flush(e);
    } else if ("text" in e.dirty && !e.typingTimer) {
      flush(e);
    } else if (!("text" in e.dirty)) {
      e.base = null;
    }
  }

  /** Whether the board answers 404 (deleted, or never was); a network failure is not "gone". */
  async function boardIsGone() {
    try {
      await api("GET", host.boardPath);
      return false;
    } catch (err) {
      return err instanceof ApiError && err.status === 404;
    }
  }

  /** The 412 path: the server's note wins, the user is told. */
  function takeTheirs(e, current) {
    clearTimeout(e.typingTimer);
    e.typingTimer = 0;
    e.dirty = {};
    e.base = null;
    e.gesture = null;
    if (current.version >= e.server.version) e.server = current;
    host.render(e, { forceText: true });
    e.el.classList.remove("note-conflict");
    void e.el.offsetWidth; // restart the highlight animation
    e.el.classList.add("note-conflict");
    toast(CONFLICT_MESSAGE, "info", 6000);
  }

  function change(e, fields) {
    Object.assign(e.dirty, fields);
    host.render(e);
  }

  function recolor(e, color) {
    host.setColor(color);
    change(e, { color });
    flush(e);
  }

  async function createNote(x, y, { focus = true } = {}) {
    if (host.gone()) return;
    const body = {
      text: "",
      x: Math.round(x),
      y: Math.round(y),
      color: host.color(),
      width: host.DEFAULT_SIZE.width,
      height: host.DEFAULT_SIZE.height,
    };
    try {
      const note = await api("POST", `${host.boardPath}/notes`, { body, name: host.myName() });
      // The event may have arrived first; either way the note is there once.
      const e = host.applyServerNote(note) || host.notes.get(note.id);
      if (e) {
        host.raise(e);
        if (focus) e.parts.text.focus({ preventScroll: true });
        host.ensureVisible(e);
      }
    } catch (err) {
      if (err instanceof ApiError && err.status === 404 && (await boardIsGone())) host.showGone("This board was deleted.");
      else toast(describeError(err), "error");
    }
  }

  async function deleteNote(e) {
    if (!host.notes.has(e.id)) return;
    const next = host.neighbour(e);
    host.removeNote(e.id);
    if (next) next.el.focus({ preventScroll: true });
    try {
      await api("DELETE", notePath(e.id), { name: host.myName() });
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) return; // gone already: fine
      toast(`The note could not be deleted: ${describeError(err)}`, "error");
      host.tombstones.delete(e.id);
      try {
        const data = await api("GET", `${host.boardPath}/notes`);
        const back = data.notes.find((n) => n.id === e.id);
        if (back) host.applyServerNote(back);
      } catch {
        // The stream will bring it back on its next snapshot or event.
      }
    }
  }

  return { notePath, flush, boardIsGone, takeTheirs, change, recolor, createNote, deleteNote };
}
