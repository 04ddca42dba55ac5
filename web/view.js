// The board's view: which part of the (unbounded) board the canvas shows, and at what zoom.
// The notes live in `world`, a child of the `viewport`, placed by one CSS transform
// (`translate(pan) scale(zoom)`); the viewport itself never scrolls (a browser scrolling it
// to show a focused note would leave the page's own pan behind, so every such scroll is
// undone and the view moves itself instead). Board coordinates are what the API stores (a
// note's x, y); client coordinates are the browser's.

/** Where an empty board, or "Show all notes" on a board that fits at 100 %, puts the top-left note (px). */
const MARGIN = { x: 40, y: 32 };
/** Zoom limits. 1 % fits a board 100,000 px across in a 1,000 px window (the contract allows
 * ±1,000,000: notes farther apart than that cannot all be shown at once); 400 % is as close
 * as a note's text is worth. */
export const ZOOM_MIN = 0.01;
export const ZOOM_MAX = 4;
/** One `+`/`-` press, or one wheel notch (deltaY 100), zooms by this factor. */
const ZOOM_STEP = 1.25;
/** The view is remembered per board under this prefix in localStorage (`boardcast.view.<id>`). */
const STORAGE_PREFIX = "boardcast.view.";
const SAVE_DELAY_MS = 250;

const clampZoom = (z) => Math.min(ZOOM_MAX, Math.max(ZOOM_MIN, z));

/**
 * Creates the view of one board's canvas and wires what moves it: a drag on empty space,
 * the wheel (Ctrl+wheel and trackpad pinch zoom), a two-finger pinch, arrow keys on the
 * canvas, and focus moving to a note.
 *
 * @param {object} o
 * @param {HTMLElement} o.viewport the canvas (fixed on screen, never scrolled)
 * @param {HTMLElement} o.world the layer holding the notes (transformed)
 * @param {() => Iterable<{x: number, y: number, width: number, height: number}>} o.rects
 *   every note's rectangle as shown now, in board coordinates (for "Show all notes")
 * @param {(target: EventTarget | null) => boolean} o.isBackground whether a pointer event's
 *   target is empty canvas (a drag there pans)
 * @param {string} [o.boardId] the view is kept per board across reloads (localStorage)
 * @param {(zoom: number) => void} [o.onZoom] told the zoom after every draw (the toolbar shows it)
 */
export function createView({ viewport, world, rects, isBackground, boardId, onZoom }) {
  const pan = { x: MARGIN.x, y: MARGIN.y };
  let zoom = 1;
  /** Whether a saved view was restored (then the page does not "Show all" on its first snapshot). */
  let restored = false;
  let saveTimer = 0;
  const storageKey = boardId ? STORAGE_PREFIX + boardId : null;

  if (storageKey) {
    try {
      const saved = JSON.parse(localStorage.getItem(storageKey) || "null");
      if (saved && [saved.x, saved.y, saved.zoom].every(Number.isFinite)) {
        pan.x = saved.x;
        pan.y = saved.y;
        zoom = clampZoom(saved.zoom);
        restored = true;
      }
    } catch {
      // No storage (private mode) or a damaged entry: start from the default view.
    }
  }

  function save() {
    if (!storageKey) return;
    clearTimeout(saveTimer);
    saveTimer = setTimeout(() => {
      saveTimer = 0;
      write();
    }, SAVE_DELAY_MS);
  }

  function write() {
    if (!storageKey) return;
    try {
      localStorage.setItem(storageKey, JSON.stringify({ x: Math.round(pan.x), y: Math.round(pan.y), zoom }));
    } catch {
      // Storage full or refused: the view is simply not remembered.
    }
  }

  /** Draws the view (no save: the page's first draw is not a choice worth remembering). */
  function apply() {
    world.style.transform = `translate(${pan.x}px, ${pan.y}px) scale(${zoom})`;
    viewport.style.backgroundPosition = `${pan.x}px ${pan.y}px`;
    // The dot grid scales with the notes down to 50 %, then stays put (denser would be noise).
    const grid = 24 * Math.max(zoom, 0.5);
    viewport.style.backgroundSize = `${grid}px ${grid}px`;
    viewport.dataset.zoom = String(Math.round(zoom * 100));
    world.style.setProperty("--zoom", String(zoom));
    onZoom?.(zoom);
  }

  /** Draws and remembers the view (every change the user or "Show all" makes). */
  function update() {
    apply();
    save();
  }
  // Leaving the page within the save delay still remembers the last view.
  window.addEventListener("pagehide", () => {
    if (!saveTimer) return;
    clearTimeout(saveTimer);
    saveTimer = 0;
    write();
  });

  /** A client point (e.g. a pointer event's clientX/Y) in board coordinates. */
  function toWorld(clientX, clientY) {
    const r = viewport.getBoundingClientRect();
    return { x: (clientX - r.left - pan.x) / zoom, y: (clientY - r.top - pan.y) / zoom };
  }

  /** The board point at the middle of the canvas. */
  function center() {
    const r = viewport.getBoundingClientRect();
    return toWorld(r.left + r.width / 2, r.top + r.height / 2);
  }

  /** Zooms to `z` (clamped) keeping the board point under the client point (cx, cy) in place. */
  function zoomAt(z, cx, cy) {
    const r = viewport.getBoundingClientRect();
    const w = toWorld(cx, cy);
    zoom = clampZoom(z);
    pan.x = cx - r.left - w.x * zoom;
    pan.y = cy - r.top - w.y * zoom;
    update();
  }

  /** Zooms by a factor around the middle of the canvas (the keys and buttons). */
  function zoomBy(factor) {
    const r = viewport.getBoundingClientRect();
    zoomAt(zoom * factor, r.left + r.width / 2, r.top + r.height / 2);
  }

  /** Back to 100 %, around the middle of the canvas. */
  function resetZoom() {
    const r = viewport.getBoundingClientRect();
    zoomAt(1, r.left + r.width / 2, r.top + r.height / 2);
  }

  /** Moves the view so that the rectangle (board coordinates) is in view, centred, when it is not. */
  function ensureVisible(v) {
    const r = viewport.getBoundingClientRect();
    const w = v.width * zoom;
    const h = v.height * zoom;
    const left = v.x * zoom + pan.x;
    const top = v.y * zoom + pan.y;
    if (left < 0 || top < 0 || left + Math.min(w, r.width) > r.width || top + Math.min(h, r.height) > r.height) {
      pan.x = Math.round(r.width / 2 - v.x * zoom - Math.min(w, r.width) / 2);
      pan.y = Math.round(r.height / 2 - v.y * zoom - Math.min(h, r.height) / 2);
      update();
    }
  }

  /** Shows every note: at 100 % when they fit, else zoomed out (to ZOOM_MIN at most) and centred. */
  function showAll() {
    let minX = Infinity;
    let minY = Infinity;
    let maxX = -Infinity;
    let maxY = -Infinity;
    for (const v of rects()) {
      minX = Math.min(minX, v.x);
      minY = Math.min(minY, v.y);
      maxX = Math.max(maxX, v.x + v.width);
      maxY = Math.max(maxY, v.y + v.height);
    }
    if (minX === Infinity) {
      zoom = 1;
      pan.x = MARGIN.x;
      pan.y = MARGIN.y;
      update();
      return;
    }
    const r = viewport.getBoundingClientRect();
    const room = { w: Math.max(r.width - 2 * MARGIN.x, 1), h: Math.max(r.height - 2 * MARGIN.y, 1) };
    const fit = Math.min(room.w / (maxX - minX), room.h / (maxY - minY));
    if (fit >= 1) {
      zoom = 1;
      pan.x = Math.round(MARGIN.x - minX);
      pan.y = Math.round(MARGIN.y - minY);
    } else {
      zoom = clampZoom(fit);
      pan.x = r.width / 2 - ((minX + maxX) / 2) * zoom;
      pan.y = r.height / 2 - ((minY + maxY) / 2) * zoom;
    }
    update();
  }

  // Focus never scrolls the canvas: a browser scrolls an overflow-hidden element to reveal a
  // focused child, which would shift every note away from where the pan says it is. Undo any
  // such scroll, and move the view to the focused note instead.
  const unscroll = () => {
    if (viewport.scrollLeft || viewport.scrollTop) viewport.scrollTo(0, 0);
  };
  viewport.addEventListener("scroll", unscroll);
  viewport.addEventListener("focusin", (ev) => {
    unscroll();
    const t = /** @type {HTMLElement} */ (ev.target);
    const note = t.closest && /** @type {HTMLElement | null} */ (t.closest(".note"));
    if (!note) return;
    const s = note.style;
    ensureVisible({
      x: parseFloat(s.left) || 0,
      y: parseFloat(s.top) || 0,
      width: parseFloat(s.width) || 0,
      height: parseFloat(s.height) || 0,
    });
  });

  // Two fingers on the canvas pinch-zoom (and pan with their midpoint); one drags the view.
  /** @type {Map<number, {x: number, y: number}>} touch pointers down on empty canvas */
  const touches = new Map();
  /** @type {{dist: number, zoom: number, world: {x: number, y: number}} | null} */
  let pinch = null;
  const midpoint = () => {
    const [a, b] = [...touches.values()];
    return { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2, dist: Math.hypot(a.x - b.x, a.y - b.y) || 1 };
  };

  viewport.addEventListener("pointerdown", (ev) => {
    if (!isBackground(ev.target)) return;
    if (ev.pointerType === "touch") {
      touches.set(ev.pointerId, { x: ev.clientX, y: ev.clientY });
      viewport.setPointerCapture(ev.pointerId);
      if (touches.size === 2) {
        const m = midpoint();
        pinch = { dist: m.dist, zoom, world: toWorld(m.x, m.y) };
        return;
      }
      if (touches.size > 2) return;
    }
    if (ev.button !== 0) return;
    const start = { x: ev.clientX, y: ev.clientY, px: pan.x, py: pan.y };
    let moved = false;
    viewport.setPointerCapture(ev.pointerId);
    const move = (m) => {
      if (m.pointerId !== ev.pointerId || pinch) return;
      const dx = m.clientX - start.x;
      const dy = m.clientY - start.y;
      if (!moved && Math.abs(dx) + Math.abs(dy) < 4) return;
      moved = true;
      viewport.classList.add("panning");
      pan.x = start.px + dx;
      pan.y = start.py + dy;
      update();
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
  viewport.addEventListener("pointermove", (ev) => {
    if (!touches.has(ev.pointerId)) return;
    touches.set(ev.pointerId, { x: ev.clientX, y: ev.clientY });
    if (!pinch || touches.size !== 2) return;
    const m = midpoint();
    const r = viewport.getBoundingClientRect();
    zoom = clampZoom((pinch.zoom * m.dist) / pinch.dist);
    pan.x = m.x - r.left - pinch.world.x * zoom;
    pan.y = m.y - r.top - pinch.world.y * zoom;
    update();
  });
  const lift = (ev) => {
    if (!touches.delete(ev.pointerId)) return;
    if (touches.size < 2) pinch = null;
  };
  viewport.addEventListener("pointerup", lift);
  viewport.addEventListener("pointercancel", lift);

  viewport.addEventListener(
    "wheel",
    (ev) => {
      if (ev.ctrlKey || ev.metaKey) {
        // Ctrl+wheel, and a trackpad pinch (which browsers send as a wheel with ctrlKey):
        // zoom around the pointer instead of zooming the whole page.
        ev.preventDefault();
        const lines = ev.deltaMode === 1 ? 16 : ev.deltaMode === 2 ? 400 : 1;
        const factor = ZOOM_STEP ** (-(ev.deltaY * lines) / 100);
        zoomAt(zoom * factor, ev.clientX, ev.clientY);
        return;
      }
      const t = /** @type {HTMLElement} */ (ev.target);
      if (t.closest && t.closest("textarea")) {
        if (t.scrollHeight > t.clientHeight) return; // let a long note scroll
      }
      ev.preventDefault();
      pan.x -= ev.shiftKey && !ev.deltaX ? ev.deltaY : ev.deltaX;
      pan.y -= ev.shiftKey && !ev.deltaX ? 0 : ev.deltaY;
      update();
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
      update();
    }
  });

  /** The zoom keys, for the page's document-wide key handler: `+`/`=` in, `-` out, `0` 100 %. Returns whether the key was one. */
  function key(ev) {
    if (ev.key === "+" || ev.key === "=") zoomBy(ZOOM_STEP);
    else if (ev.key === "-" || ev.key === "_") zoomBy(1 / ZOOM_STEP);
    else if (ev.key === "0") resetZoom();
    else return false;
    return true;
  }

  return {
    apply,
    toWorld,
    center,
    ensureVisible,
    showAll,
    zoomBy,
    resetZoom,
    key,
    get zoom() {
      return zoom;
    },
    get pan() {
      return { x: pan.x, y: pan.y };
    },
    get restored() {
      return restored;
    },
  };
}
