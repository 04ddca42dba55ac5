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
import { checkSignIn } from "./signin.js";

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
const TYPING_DEBOUNCE_MS = 400;
const KEY_MOVE_DEBOUNCE_MS = 400;
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 10_000;
const DEFAULT_HEARTBEAT_MS = 15_000;
const CONFLICT_MESSAGE = "Someone else changed this note — showing their version";
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
let lastSeq = null; // seq of the last applied snapshot or change; null before the first
let gone = false;
const notes = new Map(); // id -> entry (see newEntry)
const tombstones = new Set(); // ids deleted here or by an event: never resurrected
const viewers = new Map(); // viewer id -> {id, name, since}
let lastColor = COLORS[0].value;
let topZ = 1;
const pan = { x: 40, y: 32 };
let firstSnapshot = true;

// Exposed for the browser tests and for curious people in the console; read-only use.
window.boardcast = {
  get seq() {
    return lastSeq;
  },
  get status() {
    return statusEl.dataset.state;
  },
  get heartbeatMs() {
    return heartbeatMs;
  },
  notes,
  viewers,
};

// ---------------------------------------------------------------------------------------
// Notes: server state + local layers -> DOM

function newEntry(note) {
  return {
    id: note.id,
    server: note, // newest server state seen
    dirty: {}, // local changes not yet sent
    inflight: null, // {fields, ifMatch, withText} while a PATCH is on its way
    base: null, // {version, text}: what unsent or in-flight text edits started from
    gesture: null, // {kind: "drag"|"resize", ...} while a pointer gesture is in progress
    typingTimer: 0,
    keyTimer: 0,
    retryTimer: 0,
    again: false, // another flush was asked for while one was in flight
    rebased: 0,
    el: null,
    parts: null,
  };
}

/** What the note looks like here: server state, then in-flight, then unsent, then gesture. */
function shown(e) {
  const v = { ...e.server, ...(e.inflight ? e.inflight.fields : null), ...e.dirty };
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
  del.addEventListener("click", (ev) => {
    ev.stopPropagation();
    deleteNote(e);
  });
  bar.append(author, swatches, del);

  const text = document.createElement("textarea");
  text.className = "note-text";
  text.setAttribute("aria-label", "Note text");
  text.maxLength = 10_000;
  text.spellcheck = true;
  text.placeholder = "Type here…";

  const grip = document.createElement("div");
  grip.className = "note-resize";
  grip.setAttribute("aria-hidden", "true");
  grip.title = "Drag to resize";

  el.append(bar, text, grip);
  e.el = el;
  e.parts = { author, swatches, text, grip };
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
  el.dataset.version = String(e.server.version);
  el.dataset.color = v.color;
  parts.author.textContent = e.server.author || "";
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
      // Someone else's words arrive while this field has focus: keep the caret in place.
      const start = t.selectionStart;
      const end = t.selectionEnd;
      t.value = v.text;
      t.setSelectionRange(Math.min(start, t.value.length), Math.min(end, t.value.length));
    } else {
      t.value = v.text;
    }
  }
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
// Writes

function notePath(id) {
  return `${boardPath}/notes/${encodeURIComponent(id)}`;
}

/** Sends what is dirty, one request per note at a time. */
async function flush(e) {
  if (gone || !notes.has(e.id)) return;
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
  render(e);
  let retry = false;
  try {
    const note = await api("PATCH", notePath(e.id), { body: fields, ifMatch, name: myName });
    e.inflight = null;
    e.rebased = 0;
    applyServerNote(note, { own: true, withText });
  } catch (err) {
    e.inflight = null;
    if (!notes.has(e.id)) return;
    if (err instanceof ApiError && err.status === 412 && err.body && err.body.note) {
      const current = err.body.note;
      if (withText && e.base && current.text === e.base.text && e.rebased < 3) {
        // Only something other than the text changed: our words still apply on top.
        e.rebased += 1;
        e.base.version = Math.max(e.base.version, current.version);
        e.dirty = { ...fields, ...e.dirty };
        applyServerNote(current);
        retry = true;
      } else {
        takeTheirs(e, current);
        return;
      }
    } else if (err instanceof ApiError && err.status === 404) {
      if (err.code === "not_found" && /board/i.test(err.message) && !/note/i.test(err.message)) {
        showGone("This board was deleted.");
      } else {
        removeNote(e.id);
        toast("That note was deleted by someone else.", "info");
      }
      return;
    } else if (!(err instanceof ApiError) || [429, 502, 503, 504].includes(err.status)) {
      // Transient: keep the change and try again shortly.
      e.dirty = { ...fields, ...e.dirty };
      const wait = err instanceof ApiError && err.retryAfter ? err.retryAfter * 1000 : 2000;
      e.retryTimer = setTimeout(() => flush(e), wait);
      toast(`${describeError(err)} Your change will be retried.`, "error");
      render(e);
      return;
    } else {
      // Refused for good (a limit, permissions): drop it and show the server's state.
      toast(describeError(err), "error");
      if (!("text" in e.dirty)) e.base = null;
      render(e, { forceText: withText && !("text" in e.dirty) });
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

/** The 412 path: the server's note wins, the user is told. */
function takeTheirs(e, current) {
  clearTimeout(e.typingTimer);
  e.typingTimer = 0;
  e.dirty = {};
  e.base = null;
  e.gesture = null;
  if (current.version >= e.server.version) e.server = current;
  render(e, { forceText: true });
  e.el.classList.remove("note-conflict");
  void e.el.offsetWidth; // restart the highlight animation
  e.el.classList.add("note-conflict");
  toast(CONFLICT_MESSAGE, "info", 6000);
}

function change(e, fields) {
  Object.assign(e.dirty, fields);
  render(e);
}

function recolor(e, color) {
  lastColor = color;
  change(e, { color });
  flush(e);
}

async function createNote(x, y, { focus = true } = {}) {
  if (gone) return;
  const body = {
    text: "",
    x: Math.round(x),
    y: Math.round(y),
    color: lastColor,
    width: DEFAULT_SIZE.width,
    height: DEFAULT_SIZE.height,
  };
  try {
    const note = await api("POST", `${boardPath}/notes`, { body, name: myName });
    // The event may have arrived first; either way the note is there once.
    const e = applyServerNote(note) || notes.get(note.id);
    if (e) {
      e.el.style.zIndex = String(++topZ);
      if (focus) e.parts.text.focus({ preventScroll: true });
      ensureVisible(e);
    }
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) showGone("This board was deleted.");
    else toast(describeError(err), "error");
  }
}

async function deleteNote(e) {
  if (!notes.has(e.id)) return;
  const next = neighbour(e);
  removeNote(e.id);
  if (next) next.el.focus({ preventScroll: true });
  try {
    await api("DELETE", notePath(e.id), { name: myName });
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return; // gone already: fine
    toast(`The note could not be deleted: ${describeError(err)}`, "error");
    tombstones.delete(e.id);
    try {
      const data = await api("GET", `${boardPath}/notes`);
      const back = data.notes.find((n) => n.id === e.id);
      if (back) applyServerNote(back);
    } catch {
      // The stream will bring it back on its next snapshot or event.
    }
  }
}

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
    if (ev.target.closest("button, textarea")) return;
    startGesture(e, ev, ev.target === grip ? "resize" : "drag");
  });
  el.addEventListener("dblclick", (ev) => ev.stopPropagation());

  text.addEventListener("input", () => {
    if (!e.base) e.base = { version: e.server.version, text: e.server.text };
    e.dirty.text = text.value;
    clearTimeout(e.typingTimer);
    e.typingTimer = setTimeout(() => {
      e.typingTimer = 0;
      flush(e);
    }, TYPING_DEBOUNCE_MS);
  });
  text.addEventListener("blur", () => {
    if (e.typingTimer) {
      clearTimeout(e.typingTimer);
      e.typingTimer = 0;
      flush(e);
    }
  });
  text.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") {
      ev.preventDefault();
      el.focus();
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
        text.focus();
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
          change(e, {
            width: clamp(v.width + dx, 60, 2000),
            height: clamp(v.height + dy, 60, 2000),
          });
        } else {
          change(e, { x: clamp(v.x + dx, -1e6, 1e6), y: clamp(v.y + dy, -1e6, 1e6) });
        }
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
  e.el.setPointerCapture(ev.pointerId);
  ev.preventDefault();

  const move = (m) => {
    if (m.pointerId !== g.pointerId) return;
    const dx = m.clientX - g.startX;
    const dy = m.clientY - g.startY;
    if (!g.moved && Math.abs(dx) + Math.abs(dy) < 3) return;
    g.moved = true;
    if (kind === "drag") {
      g.now = {
        x: clamp(Math.round(g.from.x + dx), -1e6, 1e6),
        y: clamp(Math.round(g.from.y + dy), -1e6, 1e6),
      };
    } else {
      g.now = {
        width: clamp(Math.round(g.from.width + dx), 60, 2000),
        height: clamp(Math.round(g.from.height + dy), 60, 2000),
      };
    }
    render(e);
  };
  const end = (u) => {
    if (u.pointerId !== g.pointerId) return;
    e.el.removeEventListener("pointermove", move);
    e.el.removeEventListener("pointerup", end);
    e.el.removeEventListener("pointercancel", end);
    const cancelled = u.type === "pointercancel";
    const result = g.now;
    if (e.gesture === g) e.gesture = null;
    if (g.moved && !cancelled) {
      change(e, result);
      flush(e);
    } else {
      render(e);
      if (!g.moved) e.el.focus({ preventScroll: true });
    }
  };
  e.el.addEventListener("pointermove", move);
  e.el.addEventListener("pointerup", end);
  e.el.addEventListener("pointercancel", end);
}

function clamp(v, lo, hi) {
  return Math.min(hi, Math.max(lo, v));
}

// ---------------------------------------------------------------------------------------
// The canvas: pan, create, keyboard

function applyPan() {
  world.style.transform = `translate(${pan.x}px, ${pan.y}px)`;
  viewport.style.backgroundPosition = `${pan.x}px ${pan.y}px`;
}

function toWorld(clientX, clientY) {
  const r = viewport.getBoundingClientRect();
  return { x: clientX - r.left - pan.x, y: clientY - r.top - pan.y };
}

function viewCenter() {
  const r = viewport.getBoundingClientRect();
  return toWorld(r.left + r.width / 2, r.top + r.height / 2);
}

function ensureVisible(e) {
  const v = shown(e);
  const r = viewport.getBoundingClientRect();
  const left = v.x + pan.x;
  const top = v.y + pan.y;
  if (left < 0 || top < 0 || left + Math.min(v.width, r.width) > r.width || top + Math.min(v.height, r.height) > r.height) {
    pan.x = Math.round(r.width / 2 - v.x - Math.min(v.width, r.width) / 2);
    pan.y = Math.round(r.height / 2 - v.y - Math.min(v.height, r.height) / 2);
    applyPan();
  }
}

function showAll() {
  if (notes.size === 0) {
    pan.x = 40;
    pan.y = 32;
    applyPan();
    return;
  }
  let minX = Infinity;
  let minY = Infinity;
  for (const e of notes.values()) {
    const v = shown(e);
    minX = Math.min(minX, v.x);
    minY = Math.min(minY, v.y);
  }
  pan.x = Math.round(40 - minX);
  pan.y = Math.round(32 - minY);
  applyPan();
}

viewport.addEventListener("dblclick", (ev) => {
  if (ev.target !== viewport && ev.target !== world && ev.target !== emptyHint) return;
  const p = toWorld(ev.clientX, ev.clientY);
  createNote(p.x - DEFAULT_SIZE.width / 2, p.y - 24);
});

viewport.addEventListener("pointerdown", (ev) => {
  if (ev.target !== viewport && ev.target !== world && ev.target !== emptyHint) return;
  if (ev.button !== 0) return;
  const start = { x: ev.clientX, y: ev.clientY, px: pan.x, py: pan.y };
  let moved = false;
  viewport.setPointerCapture(ev.pointerId);
  const move = (m) => {
    if (m.pointerId !== ev.pointerId) return;
    const dx = m.clientX - start.x;
    const dy = m.clientY - start.y;
    if (!moved && Math.abs(dx) + Math.abs(dy) < 4) return;
    moved = true;
    viewport.classList.add("panning");
    pan.x = start.px + dx;
    pan.y = start.py + dy;
    applyPan();
  };
  const end = (u) => {
    if (u.pointerId !== ev.pointerId) return;
    viewport.classList.remove("panning");
    viewport.removeEventListener("pointermove", move);
    viewport.removeEventListener("pointerup", end);
    viewport.removeEventListener("pointercancel", end);
  };
  viewport.addEventListener("pointermove", move);
  viewport.addEventListener("pointerup", end);
  viewport.addEventListener("pointercancel", end);
});

viewport.addEventListener(
  "wheel",
  (ev) => {
    if (ev.ctrlKey) return; // leave pinch-zoom to the browser
    if (ev.target.closest && ev.target.closest("textarea")) {
      const t = ev.target;
      if (t.scrollHeight > t.clientHeight) return; // let a long note scroll
    }
    ev.preventDefault();
    pan.x -= ev.shiftKey && !ev.deltaX ? ev.deltaY : ev.deltaX;
    pan.y -= ev.shiftKey && !ev.deltaX ? 0 : ev.deltaY;
    applyPan();
  },
  { passive: false },
);

viewport.addEventListener("keydown", (ev) => {
  if (ev.target !== viewport) return;
  const step = ev.shiftKey ? 200 : 40;
  const moves = { ArrowLeft: [step, 0], ArrowRight: [-step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] };
  if (moves[ev.key]) {
    ev.preventDefault();
    pan.x += moves[ev.key][0];
    pan.y += moves[ev.key][1];
    applyPan();
  }
});

document.addEventListener("keydown", (ev) => {
  if (ev.defaultPrevented || ev.ctrlKey || ev.metaKey || ev.altKey || gone) return;
  const t = ev.target;
  if (t.closest && t.closest("input, textarea, select, [contenteditable], .overlay:not([hidden])")) return;
  if (!$("name-overlay").hidden) return;
  if (ev.key === "n" || ev.key === "N") {
    ev.preventDefault();
    newNoteAtCenter();
  }
});

function newNoteAtCenter() {
  const c = viewCenter();
  // Stagger so repeated presses do not stack notes exactly on top of each other.
  const n = notes.size % 6;
  createNote(c.x - DEFAULT_SIZE.width / 2 + n * 24, c.y - DEFAULT_SIZE.height / 2 + n * 24);
}

$("new-note").addEventListener("click", newNoteAtCenter);
$("recenter").addEventListener("click", showAll);

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

function renderPresence() {
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
  const MAX = 6;
  const items = list.slice(0, MAX).map((g) => {
    const li = document.createElement("li");
    li.className = "viewer";
    li.dataset.name = g.name;
    li.dataset.count = String(g.count);
    const you = g.name === myName;
    const label = `${g.name}${you ? " (you)" : ""}${g.count > 1 ? `, ${g.count} tabs` : ""}`;
    li.title = label;
    const avatar = document.createElement("span");
    avatar.className = "avatar";
    avatar.setAttribute("aria-hidden", "true");
    avatar.textContent = initials(g.name);
    avatar.style.backgroundColor = `hsl(${hueFor(g.name)} 60% 85%)`;
    avatar.style.color = `hsl(${hueFor(g.name)} 45% 28%)`;
    const name = document.createElement("span");
    name.className = "viewer-name";
    name.textContent = you ? `${g.name} (you)` : g.name;
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
  if (list.length > MAX) {
    const li = document.createElement("li");
    li.className = "viewer viewer-more";
    const rest = list.slice(MAX);
    li.textContent = `+${rest.length}`;
    li.title = rest.map((g) => g.name).join(", ");
    items.push(li);
  }
  presenceEl.replaceChildren(...items);
  presenceEl.setAttribute(
    "aria-label",
    `${viewers.size} ${viewers.size === 1 ? "person" : "people"} viewing: ${list.map((g) => g.name).join(", ")}`,
  );
}

// ---------------------------------------------------------------------------------------
// The event stream: one EventSource, reconnected by the page itself

let source = null;
let attempt = 0;
let reconnectTimer = 0;
let watchdogTimer = 0;
let heartbeatMs = DEFAULT_HEARTBEAT_MS;
let lastHeartbeatAt = 0;
const heartbeatGaps = [];

function setStatus(state) {
  const text = {
    connecting: "Connecting…",
    live: "Live",
    reconnecting: "Reconnecting…",
    offline: "Offline",
    gone: "Board deleted",
  }[state];
  if (statusEl.dataset.state === state) return;
  statusEl.dataset.state = state;
  statusEl.querySelector(".status-text").textContent = text;
  statusEl.title =
    state === "live"
      ? "Changes appear as they happen"
      : state === "offline"
        ? "No network: changes will show once you are back online"
        : state === "reconnecting"
          ? "The connection dropped; catching up as soon as it is back"
          : text;
  presenceEl.classList.toggle("stale", state !== "live");
}

function connect() {
  clearTimeout(reconnectTimer);
  reconnectTimer = 0;
  if (gone || !myName) return;
  closeSource();
  const q = new URLSearchParams();
  q.set("name", myName);
  if (lastSeq !== null) q.set("last_event_id", String(lastSeq));
  const t = token();
  if (t) q.set("access_token", t);
  const es = new EventSource(`${boardPath}/events?${q}`);
  source = es;
  lastHeartbeatAt = 0;
  armWatchdog(); // also bounds an attempt that never gets an answer
  if (statusEl.dataset.state !== "reconnecting" && statusEl.dataset.state !== "offline") {
    setStatus(attempt > 0 ? "reconnecting" : "connecting");
  }

  const on = (type, fn) =>
    es.addEventListener(type, (ev) => {
      if (source !== es) return; // a message from a stream we have already left
      alive();
      let data;
      try {
        data = JSON.parse(ev.data);
      } catch {
        console.warn("boardcast: unreadable event", type, ev.data);
        return;
      }
      fn(data, ev);
    });

  es.addEventListener("open", () => {
    if (source !== es) return;
    setStatus("live");
    alive();
  });
  on("snapshot", onSnapshot);
  for (const type of ["note.created", "note.updated", "note.deleted", "board.updated", "board.deleted"]) {
    on(type, (data) => onChange(type, data));
  }
  on("presence", (data) => {
    viewers.clear();
    for (const v of data.viewers || []) viewers.set(v.id, v);
    renderPresence();
  });
  on("presence.joined", (data) => {
    if (data.viewer) viewers.set(data.viewer.id, data.viewer);
    renderPresence();
  });
  on("presence.left", (data) => {
    if (data.viewer) viewers.delete(data.viewer.id);
    renderPresence();
  });
  on("heartbeat", () => {
    attempt = 0; // a stream that carries heartbeats is a working one
    const now = performance.now();
    if (lastHeartbeatAt) {
      heartbeatGaps.push(now - lastHeartbeatAt);
      if (heartbeatGaps.length > 5) heartbeatGaps.shift();
      const sorted = [...heartbeatGaps].sort((a, b) => a - b);
      heartbeatMs = clamp(sorted[Math.floor(sorted.length / 2)], 100, 120_000);
      armWatchdog();
    }
    lastHeartbeatAt = now;
  });
  es.addEventListener("error", () => {
    if (source !== es) return;
    const closedByBrowser = es.readyState === EventSource.CLOSED;
    closeSource();
    if (gone) return;
    setStatus(navigator.onLine === false ? "offline" : "reconnecting");
    scheduleReconnect(closedByBrowser);
  });
}

function closeSource() {
  clearTimeout(watchdogTimer);
  watchdogTimer = 0;
  if (source) {
    source.close();
    source = null;
  }
}

/** Any message proves the stream alive; the stream ends up ready for new messages again. */
function alive() {
  armWatchdog();
}

/** Three missed heartbeats (plus a little slack) and the stream is presumed dead. */
function armWatchdog() {
  clearTimeout(watchdogTimer);
  watchdogTimer = setTimeout(() => {
    if (!source) return;
    console.warn(`boardcast: no heartbeat for ${Math.round(3.5 * heartbeatMs)} ms; reconnecting`);
    closeSource();
    setStatus(navigator.onLine === false ? "offline" : "reconnecting");
    scheduleReconnect(false);
  }, 3.5 * heartbeatMs);
}

/**
 * Exponential backoff with jitter, capped at 10 s. When the browser gave up on the stream
 * (a non-200 answer), ask the API why first: a 404 means the board is gone.
 */
function scheduleReconnect(closedByBrowser) {
  clearTimeout(reconnectTimer);
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
  const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
  attempt += 1;
  reconnectTimer = setTimeout(async () => {
    if (closedByBrowser) {
      const verdict = await probe();
      if (verdict === "gone") return;
      if (verdict === "auth") {
        scheduleReconnect(true);
        return;
      }
    }
    connect();
  }, delay);
}

async function probe() {
  try {
    await api("GET", boardPath);
    return "ok";
  } catch (err) {
    if (!(err instanceof ApiError)) return "down";
    if (err.status === 404) {
      showGone(lastSeq === null ? "There is no board at this address." : "This board was deleted.");
      return "gone";
    }
    if (err.status === 400) {
      showGone("This address does not name a board.");
      return "gone";
    }
    if (err.status === 401 || err.status === 403) {
      toast(describeError(err), "error", 10_000);
      return "auth";
    }
    return "down";
  }
}

function onSnapshot(data, ev) {
  attempt = 0;
  lastSeq = Number(data.seq ?? ev.lastEventId);
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
      // Our own note, created after the snapshot was read: its event follows.
      if (e.inflight) continue;
      removeNote(id, { announce: true });
    }
  }
  updateEmptyHint();
  if (firstSnapshot) {
    firstSnapshot = false;
    if (notes.size > 0) showAll();
  }
}

function onChange(type, data) {
  attempt = 0;
  const seq = Number(data.seq);
  if (!Number.isFinite(seq)) return;
  if (lastSeq !== null && seq <= lastSeq) return; // seen already
  if (lastSeq !== null && seq > lastSeq + 1) {
    // A gap: something was missed. Reconnect from the last applied event to replay it.
    console.warn(`boardcast: event ${seq} after ${lastSeq}; catching up`);
    closeSource();
    setStatus("reconnecting");
    scheduleReconnect(false);
    return;
  }
  lastSeq = seq;
  switch (type) {
    case "note.created":
    case "note.updated":
      applyServerNote(data.note);
      break;
    case "note.deleted":
      removeNote(data.note && data.note.id, { announce: true });
      break;
    case "board.updated":
      board = { ...board, ...data.board };
      renderBoard();
      break;
    case "board.deleted":
      showGone("This board was deleted.");
      break;
    default:
  }
}

function showGone(message) {
  gone = true;
  closeSource();
  clearTimeout(reconnectTimer);
  setStatus("gone");
  viewers.clear();
  renderPresence();
  document.body.classList.add("board-gone");
  $("gone-text").textContent = message;
  const overlay = $("gone-overlay");
  overlay.hidden = false;
  overlay.querySelector("a").focus();
}

// Leaving the page: send what is still waiting for its debounce, and close the stream so
// the others see this viewer leave at once. Back from the back/forward cache: reconnect.
window.addEventListener("pagehide", () => {
  for (const e of notes.values()) {
    clearTimeout(e.typingTimer);
    clearTimeout(e.keyTimer);
    if (e.inflight || Object.keys(e.dirty).length === 0) continue;
    const ifMatch = "text" in e.dirty && e.base ? e.base.version : e.server.version;
    api("PATCH", notePath(e.id), { body: e.dirty, ifMatch, name: myName, keepalive: true }).catch(() => {});
    e.dirty = {};
  }
  clearTimeout(reconnectTimer);
  closeSource();
});
window.addEventListener("pageshow", (ev) => {
  if (ev.persisted && !gone && myName) {
    attempt = 0;
    connect();
  }
});

window.addEventListener("offline", () => {
  if (!gone) setStatus("offline");
});
window.addEventListener("online", () => {
  if (gone) return;
  attempt = 0;
  setStatus("reconnecting");
  connect();
});

// ---------------------------------------------------------------------------------------
// The viewer's name, then start

function showMe() {
  meButton.hidden = nameFromToken();
  const wide = document.createElement("span");
  wide.className = "wide";
  wide.textContent = "Change name";
  const narrow = document.createElement("span");
  narrow.className = "narrow";
  narrow.textContent = "Name";
  meButton.replaceChildren(wide, narrow);
  meButton.title = `You are ${myName}`;
  meButton.setAttribute("aria-label", `You are ${myName}. Change your name`);
}

function askName() {
  const overlay = $("name-overlay");
  const input = $("name-input");
  input.value = myName;
  overlay.hidden = false;
  input.focus();
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
  $("name-overlay").hidden = true;
  showMe();
  viewport.focus({ preventScroll: true });
  if (changed) {
    attempt = 0;
    connect();
  }
});

meButton.addEventListener("click", askName);

async function start() {
  applyPan();
  if (!UUID_RE.test(boardId)) {
    showGone("This address does not name a board.");
    return;
  }
  // Auth on and no usable token: say how to get in before asking for a name.
  if (!(await checkSignIn())) return;
  myName = savedName();
  if (myName) {
    showMe();
    connect();
  } else {
    askName();
  }
}

start();
