// The page's three-way text merge (web/merge.js over the vendored diff-match-patch), run in
// Chromium as the page runs it: the modules come from the real server's /static/.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { openPage, startStack } from "./harness.mjs";

describe("merging a note's text", () => {
  let stack;
  let server;
  let browser;
  let page;

  before(async () => {
    stack = await startStack("merge");
    ({ server, browser } = stack);
    page = await openPage(browser, `${server.base}/`, { name: "Ana" });
  });

  after(async () => {
    await stack?.stop();
  });

  /** merge3(base, mine, theirs) in the page. */
  const merge = (base, mine, theirs) =>
    page.evaluate(async ([b, m, t]) => (await import("/static/merge.js")).merge3(b, m, t), [base, mine, theirs]);
  const mapPosition = (before, after, pos) =>
    page.evaluate(async ([b, a, p]) => (await import("/static/merge.js")).mapPosition(b, a, p), [before, after, pos]);

  it("keeps both sides' insertions at one place, ours first", async () => {
    assert.deepEqual(await merge("Agenda:", "Agenda: budget review", "Agenda: hiring plan"), {
      text: "Agenda: budget review hiring plan",
      clean: true,
    });
  });

  it("applies edits of different words from both sides", async () => {
    assert.deepEqual(await merge("one two three", "one TWO three", "one two THREE"), { text: "one TWO THREE", clean: true });
    assert.deepEqual(await merge("Original words", "Original words plus mine", "Someone else's newer words"), {
      text: "Someone else's newer words plus mine",
      clean: true,
    });
  });

  it("applies the same edit made on both sides once", async () => {
    assert.deepEqual(await merge("a typoo b", "a typo b", "a typo b!"), { text: "a typo b!", clean: true });
    assert.deepEqual(await merge("typoo", "typo", "typo"), { text: "typo", clean: true });
  });

  it("calls two different edits of the same words an overlap and keeps theirs", async () => {
    assert.deepEqual(await merge("Lunch at noon", "Lunch at one", "Lunch at two"), { text: "Lunch at two", clean: false });
    assert.deepEqual(await merge("one two three", "one three", "one twox three"), { text: "one twox three", clean: false });
  });

  it("takes one side whole when the other did not change", async () => {
    assert.deepEqual(await merge("abc", "abc", "xyz"), { text: "xyz", clean: true });
    assert.deepEqual(await merge("abc", "abcd", "abc"), { text: "abcd", clean: true });
  });

  it("undoes only our own words when others wrote since (undo is a merge backwards)", async () => {
    assert.deepEqual(await merge("Agenda: budget", "Agenda:", "Agenda: budget hiring"), { text: "Agenda: hiring", clean: true });
  });

  it("keeps a caret at the end of its typist's words when others insert at the caret", async () => {
    assert.equal(await mapPosition("Agenda: bud", "Agenda: bud hir", 11), 11);
    assert.equal(await mapPosition("Agenda: bud", "Agenda: hir bud", 11), 15);
    assert.equal(await mapPosition("hello world", "hello big world", 8), 12);
    assert.equal(await mapPosition("gone text", "text", 2), 0);
  });
});
