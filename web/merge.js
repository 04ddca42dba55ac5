// Three-way merge of a note's text, and keeping a caret in place while text changes under
// it. The diffing is diff-match-patch's (vendored from npm by scripts/vendor-dmp); what is
// ours is applying two diffs of one base together and deciding when they truly overlap.

import { DIFF_DELETE, DIFF_EQUAL, DIFF_INSERT, diffMain } from "./diff-match-patch-es.js";

/**
 * @typedef {{ text: string, clean: boolean }} Merged
 * `text` is the result; `clean` is false when both sides changed the same stretch of the
 * base (then `text` is theirs, and the caller should offer ours).
 */

/**
 * Rebases `mine` (an edit of `base`) onto `theirs` (another edit of the same `base`).
 * Two insertions at the same place both stay (mine first); edits of separate stretches
 * both apply; the same edit on both sides applies once; a stretch that both changed or
 * deleted differently is an overlap (`clean: false`, and `text` is theirs).
 *
 * Both sides are diffed against the base with diff-match-patch, and the two lists of edits
 * are applied to the base exactly. diff-match-patch's own patch_apply was tried first: it
 * finds where to apply a patch by fuzzy-matching four characters of context, and when two
 * people type at the same spot that context has changed under it, so letters of the two
 * phrases came out interleaved ("Agenda: buhiridgengt r plevaniew").
 * @param {string} base the text both sides started from
 * @param {string} mine this page's text
 * @param {string} theirs the server's text
 * @returns {Merged}
 */
export function merge3(base, mine, theirs) {
  if (mine === base || mine === theirs) return { text: theirs, clean: true };
  if (theirs === base) return { text: mine, clean: true };
  const ours = edits(base, mine).map((e) => ({ ...e, side: 0 }));
  const other = edits(base, theirs)
    .map((e) => ({ ...e, side: 1 }))
    .filter((b) => !ours.some((a) => a.start === b.start && a.end === b.end && a.text === b.text));
  if (ours.some((a) => other.some((b) => overlaps(a, b)))) return { text: theirs, clean: false };
  const all = [...ours, ...other].sort(
    (a, b) => a.start - b.start || (a.end > a.start ? 1 : 0) - (b.end > b.start ? 1 : 0) || a.side - b.side,
  );
  let text = "";
  let at = 0;
  for (const e of all) {
    text += base.slice(at, e.start) + e.text;
    at = Math.max(at, e.end);
  }
  return { text: text + base.slice(at), clean: true };
}

/**
 * The changed stretches of `from` that turn it into `to`: replace `from[start, end)` by
 * `text` (an insertion has start = end).
 * @param {string} from
 * @param {string} to
 * @returns {Array<{ start: number, end: number, text: string }>}
 */
function edits(from, to) {
  const out = [];
  let at = 0;
  /** @type {{ start: number, end: number, text: string } | null} */
  let open = null;
  for (const [op, text] of diffMain(from, to)) {
    if (op === DIFF_EQUAL) {
      if (open) out.push(open);
      open = null;
      at += text.length;
    } else {
      if (!open) open = { start: at, end: at, text: "" };
      if (op === DIFF_DELETE) {
        at += text.length;
        open.end = at;
      } else {
        open.text += text;
      }
    }
  }
  if (open) out.push(open);
  return out;
}

/** Whether two stretches collide: they share a character, or one inserts inside the other. */
function overlaps(a, b) {
  if (a.start < b.end && b.start < a.end) return true;
  if (a.start === a.end && b.start < a.start && a.start < b.end) return true;
  if (b.start === b.end && a.start < b.start && b.start < a.end) return true;
  // Two deletions/replacements starting at the same place that are both non-empty were
  // caught above; two insertions at the same place are not an overlap (both are kept).
  return false;
}

/**
 * Where a position in `before` lands in `after`. Text inserted exactly at the position
 * goes after it, so a caret stays at the end of what its typist wrote rather than jumping
 * past someone else's words (diff-match-patch's own diffXIndex moves it past them).
 * @param {string} before
 * @param {string} after
 * @param {number} pos
 * @returns {number}
 */
export function mapPosition(before, after, pos) {
  if (before === after) return pos;
  let c1 = 0;
  let c2 = 0;
  for (const [op, text] of diffMain(before, after)) {
    const n = text.length;
    if (op === DIFF_INSERT) {
      if (c1 === pos) return c2;
      c2 += n;
    } else if (op === DIFF_DELETE) {
      if (pos <= c1 + n) return c2;
      c1 += n;
    } else {
      if (pos <= c1 + n) return c2 + (pos - c1);
      c1 += n;
      c2 += n;
    }
  }
  return Math.min(pos, after.length);
}
