// The page's writes: what the user changes becomes the server's, and nothing typed is lost.
//
// board.js owns the notes (their server state, local layers and DOM); this module sends what
// the user changed and takes the server's answers back. It reaches the page only through
// `host`.
//
// - One request per note at a time; what changes meanwhile waits in `e.dirty` and goes next.
//   Text goes out while it is typed, at most one save per TEXT_THROTTLE_MS (leading and
//   trailing edge), so the others see it within a few hundred milliseconds.
// - A text save names the version its edit started from (`If-Match`). When someone else
//   changed the note meanwhile (412, whose body carries the current note), the local edit is
//   rebased onto the server's text three-way (merge.js: diff-match-patch) and saved again;
//   only a true overlap shows their text and offers ours back. A move, resize or colour is
//   simply sent again on top of the newer version (the last action wins).
// - A write that fails for a passing reason (no network, a timeout, 408/429/5xx) is kept and
//   retried with backoff; one still not saved after STUCK_MS marks its note unsaved and
//   makes the status pill say so. A note made while the server is unreachable lives under a
//   client-side id (`local-…`) until its POST succeeds; later edits ride along with it.
// - Everything not yet saved is also kept in localStorage per board and tab, so a reload or
//   a closed tab loses nothing: the next page of the board adopts what a closed tab left
//   (a Web Lock per tab tells a live tab from a closed one).
// - Undo (undo.js keeps the list): move, resize, colour, text, delete and create.

import { ApiError, api, describeError, toast } from "./api.js";
import { clampCoord } from "./board-core.js";
import { mapPosition, merge3 } from "./merge.js";
import { createUndo } from "./undo.js";

/** A change not on the server after this long shows as unsaved (issue 18: "a few seconds"). */
export const STUCK_MS = 3000;
/** Text is saved at most this often while typed (the others see it ≤ ~250 ms behind). */
export const TEXT_THROTTLE_MS = 150;
/** A request with no answer after this long is abandoned and retried (a queued or dead socket). */
const REQUEST_TIMEOUT_MS = 15_000;
/** Retries back off exponentially from the first delay to the cap, with jitter (×0.5–1). */
const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 8000;
/** Lost races in a row before a save waits for the backoff instead of trying at once. */
const MAX_REBASES = 5;
const STORE_PREFIX = "boardcast.outbox.";
const TAB_KEY = "boardcast.tab";
const LOCAL_PREFIX = "local-";

/**
 * The write side of one board page.
 *
 * `host` is what the page lends it: `boardId`, `boardPath` (`/api/boards/{id}`), `notes`
 * (id -> entry), `tombstones`, `DEFAULT_SIZE`, and the functions `gone()`, `myName()`,
 * `color()` / `setColor(c)` (the colour of the next note), `newEntry(note)`, `shown(e)`,
 * `render(e, opts)`, `applyServerNote(note, opts)`, `removeNote(id, opts)`,
 * `showGone(message)`, `ensureVisible(e)`, `neighbour(e)`, `raise(e)` (bring to front),
 * `updateEmptyHint()` and `writeStatus(kept)` (how many changes are waiting longer than
 * STUCK_MS: the status pill).
 */
export function createWrites(host) {
  const undo = createUndo();
  /** Deletes not yet confirmed: id -> {since, attempts, timer}. */
  const deletes = new Map();
  let tabId = tabIdentity();
  /** What this tab kept before a reload (read once it holds its lock), sent after the first snapshot. */
  let carried = null;
  /** Storage is written only while this tab holds its lock (see holdTabLock). */
  let lockHeld = false;
  let restored = false;
  let persistTimer = 0;
  let lastKept = -1;

  const tabReady = holdTabLock();
  setInterval(watch, 500);

  function notePath(id) {
    return `${host.boardPath}/notes/${encodeURIComponent(id)}`;
  }

  function send(method, path, { body, ifMatch } = {}) {
    const signal = typeof AbortSignal.timeout === "function" ? AbortSignal.timeout(REQUEST_TIMEOUT_MS) : undefined;
    return api(method, path, { body, ifMatch, name: host.myName(), signal });
  }

  /** A failure worth retrying: no answer at all, a timeout, or the server busy or restarting. */
  function transient(err) {
    return !(err instanceof ApiError) || err.status === 408 || err.status === 429 || err.status >= 500;
  }

  function backoff(attempts, err) {
    if (err instanceof ApiError && err.retryAfter) return err.retryAfter * 1000;
    const cap = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** Math.max(0, attempts - 1));
    return Math.round(cap * (0.5 + Math.random() * 0.5));
  }

  // -------------------------------------------------------------------------------------
  // What is waiting, and since when

  function markDirty(e) {
    if (!e.dirtySince) e.dirtySince = Date.now();
  }

  /** When the oldest change of this note not yet on the server was made (0: none). */
  function waitingSince(e) {
    const times = [e.dirtySince, e.inflight ? e.inflight.since : 0].filter(Boolean);
    return times.length ? Math.min(...times) : 0;
  }

  /** Marks stuck notes and tells the page how many changes are waiting too long. */
  function watch() {
    const now = Date.now();
    let kept = 0;
    for (const e of host.notes.values()) {
      const since = waitingSince(e);
      const stuck = since > 0 && now - since >= STUCK_MS;
      if (stuck) kept += 1;
      showUnsaved(e, stuck);
    }
    for (const d of deletes.values()) if (now - d.since >= STUCK_MS) kept += 1;
    if (kept !== lastKept) {
      lastKept = kept;
      host.writeStatus(kept);
    }
  }

  function showUnsaved(e, stuck) {
    if (!e.el) return;
    if (e.el.classList.contains("note-unsaved") === stuck) return;
    e.el.classList.toggle("note-unsaved", stuck);
    if (stuck) {
      e.el.dataset.unsaved = "true";
      e.el.title = "Not saved yet: kept here and retried until the server has it";
    } else {
      delete e.el.dataset.unsaved;
      e.el.removeAttribute("title");
    }
  }

  // -------------------------------------------------------------------------------------
  // Sending a note's changes

  /** Sends what is dirty, one request per note at a time. */
  async function flush(e) {
    if (host.gone() || !host.notes.has(e.id)) return;
    if (e.inflight) {
      e.again = true;
      return;
    }
    clearTimeout(e.retryTimer);
    e.retryTimer = 0;
    if (e.create) {
      sendCreate(e);
      return;
    }
    const fields = { ...e.dirty };
    if (Object.keys(fields).length === 0) {
      e.base = null;
      e.dirtySince = 0;
      return;
    }
    const withText = "text" in fields;
    const ifMatch = withText && e.base ? e.base.version : e.server.version;
    e.dirty = {};
    e.inflight = { fields, ifMatch, withText, since: e.dirtySince || Date.now() };
    e.dirtySince = 0;
    host.render(e);
    let again = false;
    try {
      const note = await send("PATCH", notePath(e.id), { body: fields, ifMatch });
      e.inflight = null;
      e.rebased = 0;
      e.attempts = 0;
      host.applyServerNote(note, { own: true, withText });
    } catch (err) {
      const since = e.inflight ? e.inflight.since : Date.now();
      e.inflight = null;
      if (!host.notes.has(e.id)) return;
      if (err instanceof ApiError && err.status === 412 && err.body && err.body.note) {
        again = rebase(e, fields, err.body.note, since);
        if (!again) return;
      } else if (err instanceof ApiError && err.status === 404) {
        // The note or its board: the board's own answer tells which.
        if (await boardIsGone()) {
          host.showGone("This board was deleted.");
        } else {
          host.removeNote(e.id);
          toast("That note was deleted by someone else.", "info");
        }
        persist();
        return;
      } else if (transient(err)) {
        // Kept: tried again after a while, or as soon as the stream is back.
        keepForRetry(e, fields, since, err);
        return;
      } else {
        // Refused for good (a limit, permissions): drop it and show the server's state.
        toast(describeError(err), "error");
        if (!("text" in e.dirty)) e.base = null;
        host.render(e, { forceText: withText && !("text" in e.dirty) });
        persist();
        return;
      }
    }
    persist();
    if (again || e.again || Object.keys(e.dirty).some((k) => k !== "text")) {
      e.again = false;
      flush(e);
    } else if ("text" in e.dirty && !e.typingTimer) {
      flush(e);
    } else if (!("text" in e.dirty)) {
      e.base = null;
    }
    watch();
  }

  function keepForRetry(e, fields, since, err) {
    e.dirty = { ...fields, ...e.dirty };
    e.dirtySince = Math.min(since, e.dirtySince || Infinity);
    e.attempts = (e.attempts || 0) + 1;
    clearTimeout(e.retryTimer);
    e.retryTimer = setTimeout(() => {
      e.retryTimer = 0;
      flush(e);
    }, backoff(e.attempts, err));
    host.render(e);
    persist();
    watch();
  }

  /**
   * The 412 path: the server has a newer note. Our unsent changes are rebased onto it and
   * sent again (true), or, when our text and theirs changed the same words, theirs is shown
   * and ours offered back (then true as well if other fields remain).
   */
  function rebase(e, fields, current, since) {
    const mine = { ...fields, ...e.dirty };
    // Ours stays in the field while the newer note is taken (render leaves dirty text alone).
    e.dirty = mine;
    host.applyServerNote(current);
    const server = e.server.version >= current.version ? e.server : current;
    e.rebased = (e.rebased || 0) + 1;
    if ("text" in mine) {
      const base = e.base ? e.base.text : server.text;
      const r = merge3(base, mine.text, server.text);
      if (r.clean) {
        mine.text = r.text;
      } else {
        offerMine(e, mine.text);
        delete mine.text;
      }
    }
    e.base = { version: server.version, text: server.text };
    for (const k of Object.keys(mine)) if (mine[k] === server[k]) delete mine[k];
    e.dirty = mine;
    if ("text" in mine) showText(e, mine.text);
    if (Object.keys(mine).length === 0) {
      e.dirtySince = 0;
      host.render(e);
      return false;
    }
    e.dirtySince = Math.min(since, e.dirtySince || Infinity);
    if (e.rebased > MAX_REBASES) {
      // Losing race after race: let the others settle first.
      keepForRetry(e, {}, since, null);
      return false;
    }
    return true;
  }

  /** A true overlap: their text stays, ours is one click away (and in the undo list). */
  function offerMine(e, text) {
    showText(e, e.server.text);
    e.el.classList.remove("note-conflict");
    void e.el.offsetWidth; // restart the highlight animation
    e.el.classList.add("note-conflict");
    const id = e.id;
    toast("Someone else changed the same words at the same time — showing their version.", "info", 20_000, {
      label: "Restore mine",
      run() {
        const n = host.notes.get(undo.resolve(id));
        if (n) setText(n, text);
      },
    });
  }

  /** Puts `text` in the note's field, keeping the caret where it was relative to the words. */
  function showText(e, text) {
    const t = e.parts && e.parts.text;
    if (!t || t.value === text) return;
    if (document.activeElement === t) {
      const before = t.value;
      const start = mapPosition(before, text, t.selectionStart);
      const end = mapPosition(before, text, t.selectionEnd);
      t.value = text;
      t.setSelectionRange(start, end);
    } else {
      t.value = text;
    }
  }

  /**
   * The server's note changed while this page has unsent typing: rebase it now, so the
   * others' words show while this one types (the save's 412 would do it a moment later).
   * board.js calls it after taking a newer note from an event.
   */
  function serverChanged(e) {
    if (e.inflight || e.create || !e.base || !("text" in e.dirty)) return;
    if (e.server.text === e.base.text) return;
    const r = merge3(e.base.text, e.dirty.text, e.server.text);
    if (!r.clean) return; // the save meets a 412 and offers both
    e.base = { version: e.server.version, text: e.server.text };
    e.dirty.text = r.text;
    showText(e, r.text);
  }

  /** Sets the note's text as a local edit (restore, undo) and saves it. */
  function setText(e, text) {
    if (!e.base) e.base = { version: e.server.version, text: e.server.text };
    e.dirty.text = text;
    markDirty(e);
    showText(e, text);
    host.render(e);
    persist();
    flush(e);
  }

  /** Typing in the note's field: saved while typed (throttled), undoable as one run. */
  function typed(e, value) {
    const before = host.shown(e).text;
    if (before !== value) undo.recordText(e.id, before, value);
    if (!e.base) e.base = { version: e.server.version, text: e.server.text };
    e.dirty.text = value;
    markDirty(e);
    persist();
    if (e.typingTimer) return;
    const wait = (e.lastTextSend || 0) + TEXT_THROTTLE_MS - Date.now();
    if (wait <= 0) {
      e.lastTextSend = Date.now();
      flush(e);
      // Trailing edge: what is typed during the next interval goes at its end.
      e.typingTimer = setTimeout(() => trailing(e), TEXT_THROTTLE_MS);
    } else {
      e.typingTimer = setTimeout(() => trailing(e), wait);
    }
  }

  function trailing(e) {
    e.typingTimer = 0;
    if (!("text" in e.dirty)) return;
    e.lastTextSend = Date.now();
    flush(e);
  }

  /** The field lost focus: send what waits for the throttle now. */
  function typingDone(e) {
    if (e.typingTimer) {
      clearTimeout(e.typingTimer);
      e.typingTimer = 0;
      flush(e);
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

  /** A move, resize or colour from this page (`record`: undoable). */
  function change(e, fields, { record = true } = {}) {
    if (record) {
      const v = host.shown(e);
      const before = {};
      for (const k of Object.keys(fields)) before[k] = v[k];
      undo.recordFields(e.id, before, fields);
    }
    Object.assign(e.dirty, fields);
    markDirty(e);
    host.render(e);
    persist();
  }

  function recolor(e, color) {
    host.setColor(color);
    change(e, { color });
    flush(e);
  }

  // -------------------------------------------------------------------------------------
  // Creating and deleting

  /**
   * Makes a note: shown at once under a client-side id, saved by a POST that is retried
   * until it succeeds. `fields` overrides the defaults (undoing a delete brings them all).
   */
  function createNote(x, y, { focus = true, fields = {}, record = true } = {}) {
    if (host.gone()) return null;
    const body = {
      text: "",
      // A double-click past the contract's ±1,000,000 (beside a note at its edge) makes
      // the note at the edge rather than a refused request.
      x: clampCoord(Math.round(x)),
      y: clampCoord(Math.round(y)),
      color: host.color(),
      width: host.DEFAULT_SIZE.width,
      height: host.DEFAULT_SIZE.height,
      ...fields,
    };
    const id = LOCAL_PREFIX + randomId();
    const now = new Date().toISOString();
    const e = host.newEntry({
      id,
      board_id: host.boardId,
      ...body,
      version: 0,
      author: host.myName() || null,
      created_at: now,
      updated_at: now,
    });
    e.create = body;
    markDirty(e);
    host.notes.set(id, e);
    host.render(e);
    host.raise(e);
    host.updateEmptyHint();
    if (focus) e.parts.text.focus({ preventScroll: true });
    host.ensureVisible(e);
    if (record) undo.recordCreate(id);
    persist();
    sendCreate(e);
    return e;
  }

  async function sendCreate(e) {
    if (e.inflight) {
      e.again = true;
      return;
    }
    clearTimeout(e.retryTimer);
    e.retryTimer = 0;
    const fields = { ...e.dirty };
    const body = { ...e.create, ...fields };
    e.dirty = {};
    e.inflight = { fields, create: true, since: e.dirtySince || Date.now() };
    e.dirtySince = 0;
    host.render(e);
    let note;
    try {
      note = await send("POST", `${host.boardPath}/notes`, { body });
    } catch (err) {
      const since = e.inflight.since;
      e.inflight = null;
      if (e.discarded) return;
      if (transient(err)) {
        keepForRetry(e, fields, since, err);
      } else if (err instanceof ApiError && err.status === 404 && (await boardIsGone())) {
        host.showGone("This board was deleted.");
      } else {
        toast(`The note could not be saved: ${describeError(err)}`, "error");
        host.removeNote(e.id);
        persist();
      }
      return;
    }
    e.inflight = null;
    e.attempts = 0;
    if (e.discarded) {
      // Deleted here while its POST was on its way: delete it there too.
      queueDelete(note.id);
      return;
    }
    adopt(e, note, fields);
    persist();
    if (Object.keys(e.dirty).length > 0 && !e.typingTimer) flush(e);
    else if (Object.keys(e.dirty).length === 0) e.base = null;
    watch();
  }

  /** The POST answered: the note takes its server id (its event may have come first). */
  function adopt(e, note, sent) {
    const local = e.id;
    host.notes.delete(local);
    const twin = host.notes.get(note.id);
    if (twin && twin !== e) {
      if (twin.server.version > note.version) note = twin.server;
      if (twin.el) twin.el.remove();
    }
    e.id = note.id;
    e.server = note;
    e.create = null;
    if (e.el) e.el.dataset.id = note.id;
    host.notes.set(note.id, e);
    undo.alias(local, note.id);
    if ("text" in e.dirty) e.base = { version: note.version, text: "text" in sent ? sent.text : note.text };
    host.render(e);
  }

  function deleteNote(e, { record = true } = {}) {
    if (!host.notes.has(e.id)) return;
    const note = { ...host.shown(e) };
    const next = host.neighbour(e);
    clearTimeout(e.typingTimer);
    clearTimeout(e.retryTimer);
    host.removeNote(e.id);
    if (next) next.el.focus({ preventScroll: true });
    if (record) {
      const entry = undo.recordDelete(note);
      toast("Note deleted.", "info", 8000, {
        label: "Undo",
        run() {
          if (undo.take(entry)) perform(entry);
        },
      });
    }
    if (e.create) {
      // Never saved: nothing to delete there, unless its POST is on its way.
      e.discarded = true;
      persist();
      return;
    }
    queueDelete(e.id);
  }

  function queueDelete(id) {
    deletes.set(id, { since: Date.now(), attempts: 0, timer: 0 });
    persist();
    sendDelete(id);
  }

  async function sendDelete(id) {
    const d = deletes.get(id);
    if (!d) return;
    clearTimeout(d.timer);
    d.timer = 0;
    try {
      await send("DELETE", notePath(id));
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) {
        if (transient(err)) {
          d.attempts += 1;
          d.timer = setTimeout(() => sendDelete(id), backoff(d.attempts, err));
          return;
        }
        deletes.delete(id);
        persist();
        toast(`The note could not be deleted: ${describeError(err)}`, "error");
        host.tombstones.delete(id);
        try {
          const data = await api("GET", `${host.boardPath}/notes`);
          const back = data.notes.find((n) => n.id === id);
          if (back) host.applyServerNote(back);
        } catch {
          // The stream will bring it back on its next snapshot or event.
        }
        return;
      }
    }
    deletes.delete(id);
    persist();
    watch();
  }

  // -------------------------------------------------------------------------------------
  // Undo

  /** Undoes the newest action that still applies; false when there is none. */
  function undoLast() {
    for (;;) {
      const entry = undo.pop();
      if (!entry) {
        toast("Nothing to undo.", "info", 2000);
        return false;
      }
      if (perform(entry)) return true;
    }
  }

  function perform(entry) {
    if (host.gone()) return false;
    if (entry.kind === "delete") {
      const n = entry.note;
      const e = createNote(n.x, n.y, {
        focus: false,
        record: false,
        fields: { text: n.text, color: n.color, width: n.width, height: n.height },
      });
      if (!e) return false;
      undo.alias(n.id, e.id);
      e.el.focus({ preventScroll: true });
      return true;
    }
    const e = host.notes.get(undo.resolve(entry.id));
    if (!e) return false;
    if (entry.kind === "create") {
      deleteNote(e, { record: false });
    } else if (entry.kind === "fields") {
      change(e, entry.before, { record: false });
      flush(e);
    } else if (entry.kind === "text") {
      // Take back only our words: others' edits made since stay.
      setText(e, merge3(entry.after, entry.before, host.shown(e).text).text);
    } else {
      return false;
    }
    return true;
  }

  // -------------------------------------------------------------------------------------
  // Kept across reloads and closed tabs

  function storeKey(tab = tabId) {
    return `${STORE_PREFIX}${host.boardId}.${tab}`;
  }

  function tabIdentity() {
    try {
      let id = sessionStorage.getItem(TAB_KEY);
      if (!id) {
        id = randomId();
        sessionStorage.setItem(TAB_KEY, id);
      }
      return id;
    } catch {
      return randomId();
    }
  }

  /**
   * Holds this tab's Web Lock while the page lives: another page adopts a tab's kept writes
   * only while holding that tab's lock, so a live tab's are never taken, and a closed tab's
   * are taken once. The tab reads its own kept writes only once it holds the lock (if a
   * page adopted them first, they are gone). A reload waits up to a second for the old
   * document to let go; still taken after that, the tab is a duplicate (duplicating a tab
   * copies sessionStorage) and takes a new identity.
   */
  function holdTabLock() {
    const start = () => {
      carried = readStore(storeKey());
      lockHeld = true;
      persist();
    };
    if (!navigator.locks) {
      start();
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const hold = (id, options) =>
        navigator.locks.request(`boardcast.tab.${id}`, options, (lock) => {
          if (!lock) return false;
          tabId = id;
          start();
          resolve();
          return new Promise(() => {}); // held until the page goes
        });
      const wait = typeof AbortSignal.timeout === "function" ? { signal: AbortSignal.timeout(1000) } : { ifAvailable: true };
      hold(tabId, wait).then(
        (got) => got === false && again(),
        () => again(),
      );
      function again() {
        const id = randomId();
        try {
          sessionStorage.setItem(TAB_KEY, id);
        } catch {
          // This page keeps its new identity in memory.
        }
        hold(id, { ifAvailable: true });
      }
    });
  }

  function readStore(key) {
    try {
      const data = JSON.parse(localStorage.getItem(key) || "null");
      return data && data.v === 1 ? data : null;
    } catch {
      return null;
    }
  }

  /** Writes what waits to localStorage (soon, or `now` when the page goes away). */
  function persist({ now = false } = {}) {
    clearTimeout(persistTimer);
    if (now) writeStore();
    else persistTimer = setTimeout(writeStore, 50);
  }

  function writeStore() {
    persistTimer = 0;
    if (!lockHeld) return; // written once the lock is held (holdTabLock)
    const data = { v: 1, at: Date.now(), notes: [], deletes: [...deletes.keys()] };
    for (const e of host.notes.values()) {
      const fields = { ...(e.inflight ? e.inflight.fields : null), ...e.dirty };
      if (e.create) data.notes.push({ id: e.id, create: e.create, fields });
      else if (Object.keys(fields).length > 0) data.notes.push({ id: e.id, fields, base: e.base });
    }
    if (carried) {
      data.notes.push(...carried.notes);
      data.deletes.push(...carried.deletes);
    }
    try {
      if (data.notes.length === 0 && data.deletes.length === 0) localStorage.removeItem(storeKey());
      else localStorage.setItem(storeKey(), JSON.stringify(data));
    } catch {
      // Storage full or disabled: the writes are still kept in memory and retried.
    }
  }

  /**
   * After the first snapshot: sends what this tab kept before a reload, and what closed tabs
   * of this board left behind.
   */
  async function restore() {
    if (restored) return;
    restored = true;
    await tabReady;
    const found = [];
    if (carried) found.push(carried);
    carried = null;
    const prefix = `${STORE_PREFIX}${host.boardId}.`;
    let keys = [];
    try {
      keys = Object.keys(localStorage).filter((k) => k.startsWith(prefix) && k !== storeKey());
    } catch {
      keys = [];
    }
    for (const key of keys) {
      const tab = key.slice(prefix.length);
      if (!navigator.locks) continue; // no way to tell a closed tab from a live one
      // Read and removed while holding the closed tab's lock: taken once, by one page.
      const data = await navigator.locks.request(`boardcast.tab.${tab}`, { ifAvailable: true }, (lock) => {
        if (!lock) return null;
        const kept = readStore(key);
        try {
          localStorage.removeItem(key);
        } catch {
          // Storage refused: the next page adopts it again (its edits merge as no-ops).
        }
        return kept;
      });
      if (data) found.push(data);
    }
    for (const data of found) replay(data);
    persist();
  }

  function replay(data) {
    for (const n of data.notes || []) {
      if (n.create) {
        const body = { ...n.create, ...n.fields };
        createNote(body.x, body.y, { focus: false, record: false, fields: body });
        continue;
      }
      const e = host.notes.get(n.id);
      if (!e) {
        if (n.fields && n.fields.text) {
          toast(`A note you changed was deleted meanwhile. Your text: “${n.fields.text.slice(0, 200)}”`, "info", 20_000);
        }
        continue;
      }
      e.dirty = { ...n.fields, ...e.dirty };
      if (n.base && (!e.base || n.base.version < e.base.version)) e.base = n.base;
      if ("text" in e.dirty && !e.base) e.base = { version: e.server.version, text: e.server.text };
      markDirty(e);
      host.render(e);
      flush(e);
    }
    for (const id of data.deletes || []) {
      if (host.notes.has(id)) host.removeNote(id);
      queueDelete(id);
    }
  }

  /** The stream is back or the network returned: retry what waits now, not at its backoff. */
  function retryNow() {
    for (const e of host.notes.values()) {
      if (e.retryTimer) {
        clearTimeout(e.retryTimer);
        e.retryTimer = 0;
        e.attempts = 0;
        flush(e);
      }
    }
    for (const [id, d] of deletes) {
      if (d.timer) {
        d.attempts = 0;
        sendDelete(id);
      }
    }
  }

  /**
   * The page goes away: keep everything (localStorage) and send what waits for the
   * throttle with `keepalive`, which outlives the page. A note whose last try failed is not
   * sent: the server was unreachable a moment ago, and the next page of this board sends
   * the kept copy.
   */
  function leaving() {
    for (const e of host.notes.values()) {
      clearTimeout(e.typingTimer);
      clearTimeout(e.keyTimer);
      if (e.inflight || e.create || e.attempts > 0 || Object.keys(e.dirty).length === 0) continue;
      const ifMatch = "text" in e.dirty && e.base ? e.base.version : e.server.version;
      api("PATCH", notePath(e.id), { body: e.dirty, ifMatch, name: host.myName(), keepalive: true }).catch(() => {});
    }
    persist({ now: true });
  }

  return {
    notePath,
    flush,
    boardIsGone,
    change,
    recolor,
    createNote,
    deleteNote,
    typed,
    typingDone,
    serverChanged,
    undo: undoLast,
    restore,
    retryNow,
    leaving,
    /** Changes waiting longer than STUCK_MS (as shown by the pill). */
    get kept() {
      return Math.max(0, lastKept);
    },
    isLocal: (id) => String(id).startsWith(LOCAL_PREFIX),
  };
}

function randomId() {
  if (globalThis.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
  // Plain HTTP on a LAN address is not a secure context: no randomUUID there.
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}`;
}
