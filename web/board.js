// One board: sticky notes on a pannable canvas, kept live by one EventSource.
//
// How state stays right whatever order things arrive in:
// - Change events carry the board's `seq`; one is applied only if it is newer than the last
//   applied one (a gap makes the page reconnect from its last seq). A `snapshot` replaces
//   the state and resets `seq`.
// - Every note carries a `version`. The page keeps, per note, the newest server state it has
//   seen (from an event, a snapshot or an answer to its own write) and never lets an older
//   version overwrite it, so the late echo of its own write changes nothing.
// - What the user is doing locally sits on top of the server state until the server has it:
//   a drag or resize in progress, changes not yet sent (`dirty`) and the one request in
//   flight per note. So a note being dragged or typed into never jumps.
// - Text edits are sent with `If-Match` naming the version the edit started from; a change
//   by someone else in between makes the server answer 412 with its note, which the page
//   then shows, with a short message.

import {
  ApiError,
  adoptTokenFromFragment,
  api,
  describeError,
  hueFor,
  initials,
  nameFromToken,
  saveName,
  savedName,
  toast,
  token,
} from "./api.js";
import { clampCoord, clampSize, friendlyName } from "./board-core.js";
import { openBoardStream } from "./board-stream.js";
import { createLive } from "./live.js";
import { mapPosition } from "./merge.js";
import { createWrites } from "./outbox.js";
import { checkSignIn } from "./signin.js";
import { createView } from "./view.js";

adoptTokenFromFragment();

const COLORS = [
  { value: "#fde68a", name: "Yellow" },
  { value: "#fbcfe8", name: "Pink" },
  { value: "#bbf7d0", name: "Green" },
  { value: "#bfdbfe", name: "Blue" },
  { value: "#ddd6fe", name: "Lavender" },
  { value: "#fed7aa", name: "Peach" },
];
const DEFAULT_SIZE = { width: 200, height: 160 };
const KEY_MOVE_DEBOUNCE_MS = 400;
/** With no pointer, drag or typing for this long, the others are told this viewer is idle
 * (their cursor of it has faded by then: live.js CURSOR_FADE_MS). */
const IDLE_MS = 8000;
/** Typing into a note is announced at most once a second (the others forget it after 4 s). */
const TYPING_SIGNAL_MS = 1000;
/** `window.BOARDCAST_HIDDEN_CLOSE_MS` is for tests only (README, "The board page"). */
const HIDDEN_CLOSE_MS = Number(window.BOARDCAST_HIDDEN_CLOSE_MS) || undefined;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const $ = (id) => document.getElementById(id);
const viewport = $("viewport");
const world = $("world");
const statusEl = $("status");
const presenceEl = $("presence");
const titleButton = $("board-title");
const renameForm = $("rename-form");
const renameInput = $("rename-input");
const meButton = $("me");
const emptyHint = $("empty-hint");

const boardId = decodeURIComponent(location.pathname.split("/")[2] || "");
const boardPath = `/api/boards/${encodeURIComponent(boardId)}`;

// ---------------------------------------------------------------------------------------
// State

let myName = "";
let board = null;
/** The board's stream (board-stream.js): its `seq` is the last event applied. */
let client = null;
let gone = false;
const notes = new Map(); // id -> entry (see newEntry)
const tombstones = new Set(); // ids deleted here or by an event: never resurrected
const viewers = new Map(); // viewer id -> {id, name, since}
let lastColor = COLORS[0].value;
let topZ = 1;
let firstSnapshot = true;
const view = createView({
  viewport,
  world,
  rects: () => [...notes.values()].map(shown),
  isBackground: (t) => t === viewport || t === world || t === emptyHint,
  boardId,
  onZoom(zoom) {
    $("zoom-reset").textContent = `${Math.round(zoom * 100)}%`;
  },
});

// Exposed for the browser tests and for curious people in the console; read-only use.
window.boardcast = {
  get seq() {
    return currentSeq();
  },
  get status() {
    return statusEl.dataset.state;
  },
  get heartbeatMs() {
    return client ? client.heartbeatMs : null;
  },
  get you() {
    return client ? client.you : null;
  },
  get signalsSent() {
    return client ? client.signalsSent : 0;
  },
  /** The stream (board-stream.js): `mode` "shared" (the SharedWorker) or "tab". */
  get stream() {
    return client;
  },
  /** Every time the stream (re)opened, as Date.now(). */
  get opens() {
    return client ? client.opens : [];
  },
  cursors: () => live.cursors(),
  /** The view: {zoom, pan: {x, y}} (pan in client px from the canvas's corner). */
  get view() {
    return { zoom: view.zoom, pan: view.pan };
  },
  notes,
  viewers,
};

function currentSeq() {
  return client ? client.seq : null;
}

// ---------------------------------------------------------------------------------------
// Notes: server state + local layers -> DOM

function newEntry(note) {
  return {
    id: note.id,
    server: note, // newest server state seen
    dirty: {}, // local changes not yet sent
    inflight: null, // {fields, ifMatch, withText, since} while a PATCH (or the POST) is on its way
    base: null, // {version, text}: what unsent or in-flight text edits started from
    gesture: null, // {kind: "drag"|"resize", ...} while a pointer gesture is in progress
    remote: null, // {x, y, width, height} while someone else drags or resizes it
    landedAt: 0, // when its newest change event was written (ms): older motion is stale
    typists: [], // who else is typing into it
    typingSignalAt: 0,
    typingTimer: 0,
    keyTimer: 0,
    retryTimer: 0,
    again: false, // another flush was asked for while one was in flight
    rebased: 0, // 412s in a row (outbox.js)
    create: null, // the POST body while the note has only a client-side id (outbox.js)
    dirtySince: 0, // when the oldest unsent change was made (outbox.js: "unsaved" after a while)
    attempts: 0, // failed tries in a row (outbox.js: backoff)
    lastTextSend: 0, // when typed text was last sent (outbox.js: the throttle)
    el: null,
    parts: null,
  };
}

/** What the note looks like here: server state, then in-flight, then unsent, then gesture. */
function shown(e) {
  const v = { ...e.server, ...e.remote, ...(e.inflight ? e.inflight.fields : null), ...e.dirty };
  if (e.gesture) Object.assign(v, e.gesture.now);
  return v;
}

function buildNoteElement(e) {
  const el = document.createElement("article");
  el.className = "note";
  el.tabIndex = 0;
  el.dataset.id = e.id;
  el.setAttribute("aria-roledescription", "sticky note");

  const bar = document.createElement("div");
  bar.className = "note-bar";
  const author = document.createElement("span");
  author.className = "note-author";
  const typing = document.createElement("span");
  typing.className = "note-typing";
  typing.hidden = true;
  const swatches = document.createElement("div");
  swatches.className = "swatches";
  swatches.setAttribute("role", "group");
  swatches.setAttribute("aria-label", "Note color");
  for (const c of COLORS) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "swatch";
    b.dataset.color = c.value;
    b.title = c.name;
    b.setAttribute("aria-label", `Color: ${c.name}`);
    b.style.backgroundColor = c.value;
    b.tabIndex = -1; // reached from inside the note (see wireNote): one Tab stop per note
    b.addEventListener("click", (ev) => {
      ev.stopPropagation();
      recolor(e, c.value);
    });
    swatches.append(b);
  }
  const del = document.createElement("button");
  del.type = "button";
  del.className = "note-delete";
  del.setAttribute("aria-label", "Delete note");
  del.title = "Delete note (Delete key)";
  del.textContent = "×";
  del.tabIndex = -1;
  del.addEventListener("click", (ev) => {
    ev.stopPropagation();
    deleteNote(e);
  });
  bar.append(author, typing, swatches, del);

  const text = document.createElement("textarea");
  text.className = "note-text";
  text.setAttribute("aria-label", "Note text");
  text.maxLength = 10_000;
  text.spellcheck = true;
  text.placeholder = "Type here…";
  text.tabIndex = -1;
  // More text than the note shows: a fade and a "more" mark say so (the text scrolls).
  const more = document.createElement("span");
  more.className = "note-more";
  more.setAttribute("aria-hidden", "true");
  more.textContent = "more ↓";

  const grip = document.createElement("div");
  grip.className = "note-resize";
  grip.setAttribute("aria-hidden", "true");
  grip.title = "Drag to resize";

  el.append(bar, text, more, grip);
  e.el = el;
  e.parts = { author, typing, swatches, text, grip, del };
  wireNote(e);
  return el;
}

function render(e, { forceText = false } = {}) {
  if (!e.el) world.append(buildNoteElement(e));
  const v = shown(e);
  const { el, parts } = e;
  el.style.left = `${v.x}px`;
  el.style.top = `${v.y}px`;
  el.style.width = `${v.width}px`;
  el.style.height = `${v.height}px`;
  el.style.backgroundColor = v.color;
  el.classList.toggle("note-dark", isDark(v.color));
  el.classList.toggle("note-moving", Boolean(e.gesture));
  el.classList.toggle("note-saving", Boolean(e.inflight));
  el.classList.toggle("note-remote", Boolean(e.remote) && !e.gesture);
  const typists = e.typists.length > 0 ? `${e.typists.join(", ")} ${e.typists.length > 1 ? "are" : "is"} typing…` : "";
  parts.typing.textContent = typists;
  parts.typing.hidden = !typists;
  el.dataset.version = String(e.server.version);
  el.dataset.color = v.color;
  // <bdi>: a name's right-to-left override must not flip what follows it.
  const authorName = document.createElement("bdi");
  authorName.textContent = e.server.author || "";
  parts.author.replaceChildren(authorName);
  parts.author.hidden = !e.server.author;
  const snippet = (v.text || "").trim().split("\n")[0].slice(0, 40);
  el.setAttribute(
    "aria-label",
    `Note${e.server.author ? ` by ${e.server.author}` : ""}${snippet ? `: ${snippet}` : " (empty)"}`,
  );
  for (const b of parts.swatches.children) {
    b.setAttribute("aria-pressed", String(b.dataset.color === v.color.toLowerCase()));
  }
  const t = parts.text;
  if (t.value !== v.text && (forceText || !("text" in e.dirty))) {
    if (document.activeElement === t) {
      // Someone else's words arrive while this field has focus: the caret stays by the same
      // words (merge.js), not at the same index, or the next keys land inside others' text.
      const start = mapPosition(t.value, v.text, t.selectionStart);
      const end = mapPosition(t.value, v.text, t.selectionEnd);
      t.value = v.text;
      t.setSelectionRange(start, end);
    } else {
      t.value = v.text;
    }
  }
  markOverflow(e);
}

/** Shows whether the note's text runs past what the note shows (the "more" mark). */
function markOverflow(e) {
  const t = e.parts.text;
  e.el.classList.toggle("note-overflow", t.scrollHeight - t.scrollTop > t.clientHeight + 2);
}

function isDark(hex) {
  const m = /^#?([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex || "");
  if (!m) return false;
  const [r, g, b] = m.slice(1).map((h) => parseInt(h, 16) / 255);
  return 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.5;
}

/**
 * Takes a note from the server. `own` marks the answer to this page's own write
 * (`withText`: that write carried text).
 */
function applyServerNote(note, { own = false, withText = false } = {}) {
  if (!note || tombstones.has(note.id)) return null;
  let e = notes.get(note.id);
  if (!e) {
    e = newEntry(note);
    notes.set(note.id, e);
    render(e);
    updateEmptyHint();
    return e;
  }
  const newer = note.version > e.server.version;
  if (newer) e.server = note;
  if (e.base) {
    if (own && withText) {
      // Our text is on the server now: later typing builds on this version.
      e.base = { version: note.version, text: note.text };
    } else if (newer && note.text === e.base.text) {
      // A change that left the text alone (a move, a color): typing can go on on top.
      e.base.version = note.version;
    }
    if (e.server.version > e.base.version && e.server.text === e.base.text) {
      e.base.version = e.server.version;
    }
  }
  if (newer || own) render(e);
  return e;
}

function removeNote(id, { announce = false } = {}) {
  tombstones.add(id);
  const e = notes.get(id);
  if (!e) return;
  clearTimeout(e.typingTimer);
  clearTimeout(e.keyTimer);
  clearTimeout(e.retryTimer);
  const hadFocus = e.el && e.el.contains(document.activeElement);
  const busy = hadFocus && ("text" in e.dirty || document.activeElement === e.parts.text);
  notes.delete(id);
  if (e.el) e.el.remove();
  if (hadFocus) viewport.focus({ preventScroll: true });
  if (announce && busy) toast("The note you were editing was deleted by someone else.", "info");
  updateEmptyHint();
}

function updateEmptyHint() {
  emptyHint.hidden = notes.size > 0 || !board;
}

// ---------------------------------------------------------------------------------------
// Writes: outbox.js sends what changed here and takes the server's answers back.

const writes = createWrites({
  boardId,
  boardPath,
  notes,
  tombstones,
  DEFAULT_SIZE,
  gone: () => gone,
  myName: () => myName,
  color: () => lastColor,
  setColor(c) {
    lastColor = c;
  },
  render,
  applyServerNote,
  removeNote,
  showGone,
  ensureVisible: (e) => view.ensureVisible(shown(e)),
  neighbour,
  raise(e) {
    e.el.style.zIndex = String(++topZ);
  },
  newEntry,
  shown,
  updateEmptyHint,
  writeStatus(kept) {
    keptWrites = kept;
    setStatus(streamState);
  },
});
const { flush, change, recolor, createNote, deleteNote } = writes;

function neighbour(e) {
  const all = [...world.querySelectorAll(".note")];
  const i = all.indexOf(e.el);
  const other = all[i + 1] || all[i - 1];
  return other ? notes.get(other.dataset.id) : null;
}

// ---------------------------------------------------------------------------------------
// Interaction on a note

function wireNote(e) {
  const { el } = e;
  const { text, grip } = e.parts;

  el.addEventListener("pointerdown", (ev) => {
    el.style.zIndex = String(++topZ);
    if (ev.button !== 0 || gone) return;
    if (ev.target.closest("button")) return;
    // On touch the text covers most of the note: until it is being edited, a finger on it
    // drags the note (a tap without moving edits it), so the note moves by its body.
    if (ev.target === text && (ev.pointerType !== "touch" || document.activeElement === text)) return;
    startGesture(e, ev, ev.target === grip ? "resize" : "drag");
  });
  text.addEventListener("scroll", () => markOverflow(e));

  // One Tab stop per note: its text, colours and delete button join the Tab order only
  // while focus is inside the note (Enter gets there), and leave it when focus leaves.
  const inner = () => [text, ...e.parts.swatches.children, e.parts.del];
  el.addEventListener("focusin", (ev) => {
    if (ev.target !== el) for (const c of inner()) c.tabIndex = 0;
  });
  el.addEventListener("focusout", (ev) => {
    if (ev.relatedTarget instanceof Node && el.contains(ev.relatedTarget)) return;
    for (const c of inner()) c.tabIndex = -1;
  });
  el.addEventListener("keydown", (ev) => {
    if (ev.key !== "Escape" || ev.target === el || ev.target === text) return;
    ev.preventDefault();
    el.focus({ preventScroll: true });
  });
  el.addEventListener("dblclick", (ev) => ev.stopPropagation());

  text.addEventListener("input", () => {
    // A note made offline has no server id yet: nothing to point the others at.
    if (client && !e.create && Date.now() - e.typingSignalAt > TYPING_SIGNAL_MS) {
      e.typingSignalAt = Date.now();
      client.signal("note.typing", { note_id: e.id });
    }
    active();
    writes.typed(e, text.value);
  });
  text.addEventListener("blur", () => writes.typingDone(e));
  text.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") {
      ev.preventDefault();
      el.focus({ preventScroll: true });
    }
  });

  el.addEventListener("keydown", (ev) => {
    if (ev.target !== el || gone) return;
    const step = ev.shiftKey ? 1 : 10;
    const v = shown(e);
    switch (ev.key) {
      case "Enter":
      case "F2":
        ev.preventDefault();
        text.focus({ preventScroll: true });
        text.setSelectionRange(text.value.length, text.value.length);
        return;
      case "Delete":
      case "Backspace":
        ev.preventDefault();
        deleteNote(e);
        return;
      case "ArrowLeft":
      case "ArrowRight":
      case "ArrowUp":
      case "ArrowDown": {
        ev.preventDefault();
        const dx = ev.key === "ArrowLeft" ? -step : ev.key === "ArrowRight" ? step : 0;
        const dy = ev.key === "ArrowUp" ? -step : ev.key === "ArrowDown" ? step : 0;
        if (ev.altKey) {
          change(e, { width: clampSize(v.width + dx), height: clampSize(v.height + dy) });
        } else {
          change(e, { x: clampCoord(v.x + dx), y: clampCoord(v.y + dy) });
        }
        view.ensureVisible(shown(e));
        clearTimeout(e.keyTimer);
        e.keyTimer = setTimeout(() => flush(e), KEY_MOVE_DEBOUNCE_MS);
        return;
      }
      default:
    }
  });
}

function startGesture(e, ev, kind) {
  const v = shown(e);
  const g = {
    kind,
    pointerId: ev.pointerId,
    startX: ev.clientX,
    startY: ev.clientY,
    from: { x: v.x, y: v.y, width: v.width, height: v.height },
    now: {},
    moved: false,
  };
  e.gesture = g;
  dragging = e;
  e.el.setPointerCapture(ev.pointerId);
  ev.preventDefault();

  const move = (m) => {
    if (m.pointerId !== g.pointerId) return;
    // Pointer travel is in screen px; the note moves in board px (zoom).
    const dx = (m.clientX - g.startX) / view.zoom;
    const dy = (m.clientY - g.startY) / view.zoom;
    if (!g.moved && Math.abs(m.clientX - g.startX) + Math.abs(m.clientY - g.startY) < 3) return;
    g.moved = true;
    if (kind === "drag") {
      g.now = { x: clampCoord(Math.round(g.from.x + dx)), y: clampCoord(Math.round(g.from.y + dy)) };
    } else {
      g.now = { width: clampSize(Math.round(g.from.width + dx)), height: clampSize(Math.round(g.from.height + dy)) };
    }
    render(e);
    // The others see it move while it moves; the change event lands it.
    const r = shown(e);
    client?.signal("note.moving", { note_id: e.id, x: r.x, y: r.y, width: r.width, height: r.height });
    active();
  };
  const end = (u) => {
    if (u.pointerId !== g.pointerId) return;
    e.el.removeEventListener("pointermove", move);
    e.el.removeEventListener("pointerup", end);
    e.el.removeEventListener("pointercancel", end);
    const cancelled = u.type === "pointercancel";
    const result = g.now;
    if (e.gesture === g) e.gesture = null;
    dragging = null;
    if (g.moved && cancelled) goIdle();
    if (g.moved && !cancelled) {
      change(e, result);
      flush(e);
    } else {
      render(e);
      // A tap: on the text (touch), edit it; elsewhere, focus the note.
      if (!g.moved) (ev.target === e.parts.text ? e.parts.text : e.el).focus({ preventScroll: true });
    }
  };
  e.el.addEventListener("pointermove", move);
  e.el.addEventListener("pointerup", end);
  e.el.addEventListener("pointercancel", end);
}

// ---------------------------------------------------------------------------------------
// Live motion: others' cursors, drags and typing in; ours out, as signals

/** The note this page is dragging or resizing, if any (its cursor goes as note.moving). */
let dragging = null;
let idleTimer = 0;
let idle = true;

const live = createLive(world, {
  onMoving(noteId, rect, _who, at) {
    const e = notes.get(noteId);
    if (!e) return;
    // Motion sent before the change that landed the note is stale (signals are not
    // ordered with changes).
    if (rect && at && Date.parse(at) <= e.landedAt) return;
    e.remote = rect;
    render(e);
  },
  rectOf(noteId) {
    const e = notes.get(noteId);
    return e ? shown(e) : null;
  },
  onTyping(noteId, names) {
    const e = notes.get(noteId);
    if (!e) return;
    e.typists = names;
    render(e);
  },
});

/** Something was done here: the others are told `idle` once nothing happens for a while. */
function active() {
  idle = false;
  clearTimeout(idleTimer);
  idleTimer = setTimeout(goIdle, IDLE_MS);
}

function goIdle() {
  clearTimeout(idleTimer);
  if (idle) return;
  idle = true;
  client?.signal("idle", {});
}

viewport.addEventListener("pointermove", (ev) => {
  if (!client || dragging || ev.pointerType === "touch") return;
  const p = view.toWorld(ev.clientX, ev.clientY);
  client.signal("cursor", { x: Math.round(p.x), y: Math.round(p.y) });
  active();
});
viewport.addEventListener("pointerleave", () => {
  if (!dragging) goIdle();
});

// ---------------------------------------------------------------------------------------
// The canvas: create, keyboard (the view itself, pan and its gestures, is view.js)

viewport.addEventListener("dblclick", (ev) => {
  if (ev.target !== viewport && ev.target !== world && ev.target !== emptyHint) return;
  const p = view.toWorld(ev.clientX, ev.clientY);
  createNote(p.x - DEFAULT_SIZE.width / 2, p.y - 24);
});

// Ctrl/Cmd+Z: undo this page's own last action (outbox.js). In a text field the browser's
// own undo of the typing applies instead.
document.addEventListener("keydown", (ev) => {
  if (ev.defaultPrevented || gone || !(ev.ctrlKey || ev.metaKey) || ev.altKey || ev.shiftKey) return;
  if (ev.key !== "z" && ev.key !== "Z") return;
  const t = ev.target;
  if (t.closest && t.closest("input, textarea, select, [contenteditable], .overlay:not([hidden])")) return;
  ev.preventDefault();
  writes.undo();
});

document.addEventListener("keydown", (ev) => {
  if (ev.defaultPrevented || ev.ctrlKey || ev.metaKey || ev.altKey || gone) return;
  const t = ev.target;
  if (t.closest && t.closest("input, textarea, select, [contenteditable], .overlay:not([hidden])")) return;
  if (!$("name-overlay").hidden) return;
  if (ev.key === "n" || ev.key === "N") {
    ev.preventDefault();
    newNoteAtCenter();
  } else if (view.key(ev)) {
    ev.preventDefault();
  }
});

function newNoteAtCenter() {
  const c = view.center();
  // Stagger so repeated presses do not stack notes exactly on top of each other.
  const n = notes.size % 6;
  createNote(c.x - DEFAULT_SIZE.width / 2 + n * 24, c.y - DEFAULT_SIZE.height / 2 + n * 24);
}

$("new-note").addEventListener("click", newNoteAtCenter);
$("recenter").addEventListener("click", () => view.showAll());
$("zoom-in").addEventListener("click", () => view.zoomBy(1.25));
$("zoom-out").addEventListener("click", () => view.zoomBy(1 / 1.25));
$("zoom-reset").addEventListener("click", () => view.resetZoom());

// ---------------------------------------------------------------------------------------
// Board title

function renderBoard() {
  if (!board) return;
  titleButton.textContent = board.title;
  document.title = `${board.title} — boardcast`;
  updateEmptyHint();
}

titleButton.addEventListener("click", () => {
  if (!board || gone) return;
  renameInput.value = board.title;
  titleButton.hidden = true;
  renameForm.hidden = false;
  renameInput.focus();
  renameInput.select();
});

let renaming = false;
async function finishRename(save) {
  if (renameForm.hidden || renaming) return;
  const title = renameInput.value.trim();
  if (save && board && title && title !== board.title) {
    renaming = true;
    try {
      const updated = await api("PATCH", boardPath, { body: { title }, name: myName });
      if (updated) {
        board = { ...board, ...updated };
        renderBoard();
      }
    } catch (err) {
      toast(describeError(err), "error");
    } finally {
      renaming = false;
    }
  }
  renameForm.hidden = true;
  titleButton.hidden = false;
  titleButton.focus();
}
renameForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  finishRename(true);
});
renameInput.addEventListener("blur", () => finishRename(true));
renameInput.addEventListener("keydown", (ev) => {
  if (ev.key === "Escape") {
    ev.preventDefault();
    finishRename(false);
  }
});

// ---------------------------------------------------------------------------------------
// Presence

/** The most avatars the header shows; fewer when they do not fit (see renderPresence). */
const PRESENCE_MAX = 5;

/** Text with a name isolated in a <bdi> (a right-to-left override in it stays inside). */
function isolated(name, after = "") {
  const bdi = document.createElement("bdi");
  bdi.textContent = name;
  return after ? [bdi, document.createTextNode(after)] : [bdi];
}

/**
 * Keeps the header whole at any width: while the avatars overflow the room the header
 * leaves them (the title and status keep theirs, app.css), show one fewer and count it in
 * "+N". Measured after layout, so long names and narrow windows are both covered.
 */
function renderPresence() {
  let room = PRESENCE_MAX;
  drawPresence(room);
  while (room > 0 && presenceEl.scrollWidth > presenceEl.clientWidth + 1) {
    room -= 1;
    drawPresence(room);
  }
}

function drawPresence(room) {
  const groups = new Map();
  for (const v of viewers.values()) {
    const key = v.name || "anonymous";
    const g = groups.get(key) || { name: key, count: 0, since: v.since };
    g.count += 1;
    if (v.since < g.since) g.since = v.since;
    groups.set(key, g);
  }
  const list = [...groups.values()].sort((a, b) =>
    a.name === myName ? -1 : b.name === myName ? 1 : String(a.since).localeCompare(String(b.since)),
  );
  // A handful of avatars, then "+N" for everyone else (in a crowd the server lists only the
  // first ones and sends the count), and fewer avatars when the header has no room.
  const MAX = room;
  const total = Math.max(viewerCount, viewers.size);
  const items = list.slice(0, MAX).map((g) => {
    const li = document.createElement("li");
    li.className = "viewer";
    li.dataset.name = g.name;
    li.dataset.count = String(g.count);
    const you = g.name === myName;
    const label = `\u2068${g.name}\u2069${you ? " (you)" : ""}${g.count > 1 ? `, ${g.count} tabs` : ""}`;
    li.title = label;
    const avatar = document.createElement("span");
    avatar.className = "avatar";
    avatar.setAttribute("aria-hidden", "true");
    avatar.textContent = initials(g.name);
    avatar.style.backgroundColor = `hsl(${hueFor(g.name)} 60% 85%)`;
    avatar.style.color = `hsl(${hueFor(g.name)} 45% 28%)`;
    const name = document.createElement("span");
    name.className = "viewer-name";
    name.append(...isolated(g.name, you ? " (you)" : ""));
    li.append(avatar, name);
    if (g.count > 1) {
      const count = document.createElement("span");
      count.className = "viewer-count";
      count.textContent = `×${g.count}`;
      count.setAttribute("aria-label", `${g.count} tabs`);
      li.append(count);
    }
    return li;
  });
  const shownPeople = list.slice(0, MAX).reduce((n, g) => n + g.count, 0);
  const more = total - shownPeople;
  if (more > 0) {
    const li = document.createElement("li");
    li.className = "viewer viewer-more";
    li.dataset.more = String(more);
    li.textContent = `+${more}`;
    li.title = `${more} more: ${list
      .slice(MAX)
      .map((g) => `\u2068${g.name}\u2069`)
      .join(", ")}`;
    items.push(li);
  }
  presenceEl.replaceChildren(...items);
  presenceEl.dataset.total = String(total);
  presenceEl.setAttribute(
    "aria-label",
    `${total} ${total === 1 ? "person" : "people"} viewing: ${list.map((g) => `\u2068${g.name}\u2069`).join(", ")}${more > 0 ? ` and ${more} more` : ""}`,
  );
}

// Another width may leave room for more avatars, or for fewer: refit.
let headerWidth = 0;
new ResizeObserver(([entry]) => {
  const w = Math.round(entry.contentRect.width);
  if (w === headerWidth) return;
  headerWidth = w;
  renderPresence();
}).observe(document.querySelector(".board-topbar"));

// ---------------------------------------------------------------------------------------
// The event stream, through the client library (boardcast-client.js): it folds events in
// order, resumes with the last event id, and lets EventSource reconnect after the server's
// `retry:` (jittered at a deploy), stepping in only for a silent or refused stream.

/** The stream's state, and how many changes wait too long to be saved (outbox.js). */
let streamState = "connecting";
let keptWrites = 0;

function setStatus(state) {
  streamState = state;
  // The pill never says "Live" while changes made here are not saved.
  if (keptWrites > 0 && (state === "live" || state === "reconnecting" || state === "offline")) {
    const shownState = state === "live" ? "unsaved" : "kept";
    const text =
      state === "live"
        ? `Saving ${keptWrites} ${keptWrites === 1 ? "change" : "changes"}…`
        : `Offline, ${keptWrites} ${keptWrites === 1 ? "change" : "changes"} kept`;
    statusEl.dataset.state = shownState;
    statusEl.dataset.kept = String(keptWrites);
    statusEl.querySelector(".status-text").textContent = text;
    statusEl.title = "Not saved yet: kept in this browser and retried until the server has it";
    presenceEl.classList.toggle("stale", state !== "live");
    return;
  }
  delete statusEl.dataset.kept;
  const text = {
    connecting: "Connecting…",
    live: "Live",
    reconnecting: "Reconnecting…",
    offline: "Offline",
    paused: "Paused",
    gone: "Deleted",
    missing: "Not found",
  }[state];
  if (!text || statusEl.dataset.state === state) return;
  statusEl.dataset.state = state;
  statusEl.querySelector(".status-text").textContent = text;
  statusEl.title =
    state === "live"
      ? "Changes appear as they happen"
      : state === "offline"
        ? "No network: changes will show once you are back online"
        : state === "reconnecting"
          ? "The connection dropped; catching up as soon as it is back"
          : state === "paused"
            ? "This tab was hidden for a while; it catches up when you come back"
            : text;
  presenceEl.classList.toggle("stale", state !== "live");
}

function connect() {
  if (gone) return;
  client = openBoardStream({
    board: boardId,
    name: myName,
    token,
    hiddenCloseMs: HIDDEN_CLOSE_MS,
    on: {
      status(status) {
        if (status === "reconnecting" || status === "paused" || status === "offline") live.clear();
        // The server is back: what waits to be saved goes now, not at its next backoff.
        if (status === "live") writes.retryNow();
        setStatus(status);
      },
      snapshot: onSnapshot,
      change: onChange,
      presence: onPresence,
      signal: (signal) => live.signal(signal),
      gone(why) {
        if (why === "invalid_id") showGone("This address does not name a board.", "missing");
        else if (why === "deleted" || currentSeq() !== null) showGone("This board was deleted.");
        else showGone("There is no board at this address.", "missing");
      },
      refused(message) {
        toast(message || describeError(new ApiError(403, "forbidden", "")), "error", 10_000);
      },
    },
  });
}

function onSnapshot(data) {
  board = data.board;
  renderBoard();
  const present = new Set();
  for (const n of data.notes || []) {
    present.add(n.id);
    applyServerNote(n);
  }
  for (const id of [...notes.keys()]) {
    if (!present.has(id)) {
      const e = notes.get(id);
      // Our own note, created after the snapshot was read (its event follows), or not
      // saved yet (outbox.js keeps retrying it).
      if (e.inflight || e.create) continue;
      removeNote(id, { announce: true });
    }
  }
  updateEmptyHint();
  if (firstSnapshot) {
    firstSnapshot = false;
    if (notes.size > 0 && !view.restored) view.showAll();
    // What this tab (before a reload) or a closed tab of this board had not saved yet.
    writes.restore();
  }
}

/** A change event, in order and once (the client library sees to both). */
function onChange(event) {
  switch (event.type) {
    case "note.created":
    case "note.updated": {
      const e = notes.get(event.note.id);
      if (e) e.landedAt = Math.max(e.landedAt, Date.parse(event.at) || 0);
      live.landed(event.note.id);
      const updated = applyServerNote(event.note);
      // Someone else's words while this page has unsent typing: merge them in now.
      if (updated) writes.serverChanged(updated);
      break;
    }
    case "note.deleted":
      removeNote(event.note && event.note.id, { announce: true });
      break;
    case "board.updated":
      board = { ...board, ...event.board };
      renderBoard();
      break;
    default:
  }
}

/** How many are viewing: the server's count (a crowd lists only the first ones). */
let viewerCount = 0;

function onPresence(update) {
  switch (update.type) {
    case "list":
      viewers.clear();
      for (const v of update.viewers) viewers.set(v.id, v);
      viewerCount = update.count;
      break;
    case "joined":
      viewers.set(update.viewer.id, update.viewer);
      viewerCount = update.count ?? viewers.size;
      break;
    case "left":
      viewers.delete(update.viewer.id);
      live.left(update.viewer.id);
      viewerCount = update.count ?? viewers.size;
      break;
    case "count":
      viewerCount = update.count;
      break;
    default:
  }
  renderPresence();
}

/**
 * The board cannot be shown: `deleted` (it existed: a `board.deleted` event, or a 404 after
 * this page had it; the contract has no 410) or `missing` (a malformed id, or a 404 for a
 * board this page never saw).
 */
function showGone(message, kind = "deleted") {
  gone = true;
  client?.close();
  live.clear();
  setStatus(kind === "missing" ? "missing" : "gone");
  $("gone-heading").textContent = kind === "missing" ? "No such board" : "This board was deleted";
  viewers.clear();
  viewerCount = 0;
  renderPresence();
  document.body.classList.add("board-gone");
  $("gone-text").textContent = message;
  const overlay = $("gone-overlay");
  overlay.hidden = false;
  overlay.querySelector("a").focus();
}

// Leaving the page: send what is still waiting for its debounce (the stream closes itself:
// board-stream.js).
window.addEventListener("pagehide", () => writes.leaving());

// A hidden tab tells the others it is idle (board-stream.js gives its stream back later).
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "hidden") goIdle();
});

// ---------------------------------------------------------------------------------------
// The viewer's name, then start

function showMe() {
  const fixed = nameFromToken();
  const label = document.createElement("span");
  label.className = "me-name";
  label.textContent = myName;
  meButton.replaceChildren(label);
  meButton.hidden = false;
  meButton.disabled = fixed;
  meButton.title = fixed ? `You are ${myName} (from your link)` : `You are ${myName}: click to change your name`;
  meButton.setAttribute("aria-label", fixed ? `You are ${myName}` : `You are ${myName}. Change your name`);
}

function askName() {
  const overlay = $("name-overlay");
  const input = $("name-input");
  input.value = myName;
  overlay.hidden = false;
  input.focus();
  input.select();
}

function closeNameDialog() {
  $("name-overlay").hidden = true;
  meButton.focus({ preventScroll: true });
}

$("name-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = $("name-input");
  const name = input.value.trim().replace(/\s+/g, " ");
  if (!name) {
    toast("Type a name first.", "error");
    input.focus();
    return;
  }
  const changed = name !== myName;
  myName = name;
  saveName(name);
  closeNameDialog();
  showMe();
  renderPresence();
  // The stream reopens under the new name and resumes from its last event.
  if (changed) client?.rename(name);
});
$("name-cancel").addEventListener("click", closeNameDialog);
$("name-overlay").addEventListener("keydown", (ev) => {
  if (ev.key === "Escape") {
    ev.preventDefault();
    closeNameDialog();
  }
});

meButton.addEventListener("click", askName);

async function start() {
  view.apply();
  if (!UUID_RE.test(boardId)) {
    showGone("This address does not name a board.", "missing");
    return;
  }
  // Auth on and no usable token: say how to get in first (nothing would load without one).
  if (!(await checkSignIn())) return;
  // The board opens at once: a first-time visitor gets a friendly name, changeable later.
  myName = savedName();
  if (!myName) {
    myName = friendlyName();
    saveName(myName);
  }
  showMe();
  connect();
}

start();
