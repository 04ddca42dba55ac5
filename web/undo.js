// The user's own last actions on this board, newest last, for Ctrl/Cmd+Z and the toasts'
// "Undo" buttons. This module only keeps the list; outbox.js performs an undo.
//
// Entries (ids are the note's id when the action was taken; `resolve` follows a note to its
// later id, when undoing a delete made it anew or a note made offline got its server id):
//   { kind: "fields", id, before, after, at }  a move, resize or colour (`before`: the old values)
//   { kind: "text", id, before, after, at }    a run of typing (the text before and after it)
//   { kind: "delete", note, at }               the note as it was shown when deleted
//   { kind: "create", id, at }                 a note made here

/** Keystrokes (or arrow-key moves) this close together are one action to undo. */
const COALESCE_MS = 1500;
/** The most actions kept; older ones are forgotten. */
const LIMIT = 100;

export function createUndo() {
  /** @type {Array<any>} */
  const stack = [];
  const aliases = new Map();

  function resolve(id) {
    for (let i = 0; i < 100 && aliases.has(id); i += 1) id = aliases.get(id);
    return id;
  }

  function push(entry) {
    stack.push(entry);
    if (stack.length > LIMIT) stack.shift();
    return entry;
  }

  /** The newest entry if it is `kind` for note `id` and recent: one to extend. */
  function extendable(kind, id, now) {
    const top = stack[stack.length - 1];
    return top && top.kind === kind && resolve(top.id) === resolve(id) && now - top.at < COALESCE_MS ? top : null;
  }

  return {
    resolve,
    /** A note known as `from` is now `to`. */
    alias(from, to) {
      if (from !== to) aliases.set(from, to);
    },
    recordFields(id, before, after, now = Date.now()) {
      const top = extendable("fields", id, now);
      const sameKeys = top && Object.keys(top.before).sort().join() === Object.keys(before).sort().join();
      if (top && sameKeys) {
        top.after = { ...after };
        top.at = now;
        return top;
      }
      return push({ kind: "fields", id, before: { ...before }, after: { ...after }, at: now });
    },
    recordText(id, before, after, now = Date.now()) {
      const top = extendable("text", id, now);
      if (top) {
        top.after = after;
        top.at = now;
        return top;
      }
      return push({ kind: "text", id, before, after, at: now });
    },
    recordDelete(note, now = Date.now()) {
      return push({ kind: "delete", id: note.id, note: { ...note }, at: now });
    },
    recordCreate(id, now = Date.now()) {
      return push({ kind: "create", id, at: now });
    },
    pop() {
      return stack.pop() || null;
    },
    /** Takes one entry out (its toast's Undo button); false if it is no longer there. */
    take(entry) {
      const i = stack.indexOf(entry);
      if (i < 0) return false;
      stack.splice(i, 1);
      return true;
    },
    get size() {
      return stack.length;
    },
  };
}
