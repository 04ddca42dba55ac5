// The board's view: which part of the (unbounded) board the canvas shows. The notes live in
// `world`, a child of the `viewport`, moved by a CSS transform; the viewport itself never
// scrolls. Board coordinates are what the API stores (a note's x, y); client coordinates
// are the browser's.

/** Where an empty board, or "Show all notes", puts the top-left note (px from the canvas's corner). */
const MARGIN = { x: 40, y: 32 };

/**
 * Creates the view of one board's canvas and wires the gestures that move it (drag on empty
 * space, wheel, arrow keys on the canvas).
 *
 * @param {object} o
 * @param {HTMLElement} o.viewport the canvas (fixed on screen)
 * @param {HTMLElement} o.world the layer holding the notes (transformed)
 * @param {() => Iterable<{x: number, y: number, width: number, height: number}>} o.rects
 *   every note's rectangle as shown now, in board coordinates (for "Show all notes")
 * @param {(target: EventTarget | null) => boolean} o.isBackground whether a pointer event's
 *   target is empty canvas (a drag there pans)
 */
export function createView({ viewport, world, rects, isBackground }) {
  const pan = { x: MARGIN.x, y: MARGIN.y };

  function apply() {
    world.style.transform = `translate(${pan.x}px, ${pan.y}px)`;
    viewport.style.backgroundPosition = `${pan.x}px ${pan.y}px`;
  }

  /** A client point (e.g. a pointer event's clientX/Y) in board coordinates. */
  function toWorld(clientX, clientY) {
    const r = viewport.getBoundingClientRect();
    return { x: clientX - r.left - pan.x, y: clientY - r.top - pan.y };
  }

  /** The board point at the middle of the canvas. */
  function center() {
    const r = viewport.getBoundingClientRect();
    return toWorld(r.left + r.width / 2, r.top + r.height / 2);
  }

  /** Pans so that the rectangle (board coordinates) is in view, centred, when it is not. */
  function ensureVisible(v) {
    const r = viewport.getBoundingClientRect();
    const left = v.x + pan.x;
    const top = v.y + pan.y;
    if (left < 0 || top < 0 || left + Math.min(v.width, r.width) > r.width || top + Math.min(v.height, r.height) > r.height) {
      pan.x = Math.round(r.width / 2 - v.x - Math.min(v.width, r.width) / 2);
      pan.y = Math.round(r.height / 2 - v.y - Math.min(v.height, r.height) / 2);
      apply();
    }
  }

  function showAll() {
    let minX = Infinity;
    let minY = Infinity;
    for (const v of rects()) {
      minX = Math.min(minX, v.x);
      minY = Math.min(minY, v.y);
    }
    if (minX === Infinity) {
      pan.x = MARGIN.x;
      pan.y = MARGIN.y;
    } else {
      pan.x = Math.round(MARGIN.x - minX);
      pan.y = Math.round(MARGIN.y - minY);
    }
    apply();
  }

  viewport.addEventListener("pointerdown", (ev) => {
    if (!isBackground(ev.target)) return;
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
      apply();
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
      const t = /** @type {HTMLElement} */ (ev.target);
      if (t.closest && t.closest("textarea")) {
        if (t.scrollHeight > t.clientHeight) return; // let a long note scroll
      }
      ev.preventDefault();
      pan.x -= ev.shiftKey && !ev.deltaX ? ev.deltaY : ev.deltaX;
      pan.y -= ev.shiftKey && !ev.deltaX ? 0 : ev.deltaY;
      apply();
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
      apply();
    }
  });

  return { apply, toWorld, center, ensureVisible, showAll };
}
