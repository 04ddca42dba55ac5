// The board's view in real Chromium: keyboard focus never scrolls the canvas (the page moves
// its own view), "Show all notes" fits every note, a double-click lands where it is made at
// any pan and zoom, zoom by Ctrl+wheel and by keys around the right point, and the view is
// kept per board across a reload.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

import { api, explainFailure, noteEl, openPage, startStack, unexpectedProblems, waitLive } from "./harness.mjs";

/** Where an element is on screen, and whether it lies wholly inside the canvas. */
async function inCanvas(page, locator) {
  const [box, canvas] = await Promise.all([locator.boundingBox(), page.locator("#viewport").boundingBox()]);
  const inside =
    box &&
    box.x >= canvas.x - 0.5 &&
    box.y >= canvas.y - 0.5 &&
    box.x + box.width <= canvas.x + canvas.width + 0.5 &&
    box.y + box.height <= canvas.y + canvas.height + 0.5;
  return { box, canvas, inside };
}

/** The board point under a client point, from the page's own view (pan and zoom). */
function boardPoint(page, x, y) {
  return page.evaluate(
    ([cx, cy]) => {
      const r = document.getElementById("viewport").getBoundingClientRect();
      const { zoom, pan } = window.boardcast.view;
      return { x: (cx - r.left - pan.x) / zoom, y: (cy - r.top - pan.y) / zoom };
    },
    [x, y],
  );
}

describe("the view: focus, zoom, show all, kept across reloads", () => {
  let stack;
  let server;
  let browser;
  const pages = {};

  before(async () => {
    stack = await startStack("view");
    ({ server, browser } = stack);
  });

  after(async () => {
    const status = await stack?.stop();
    assert.deepEqual(status, { code: 0, signal: null }, "the server stops cleanly on SIGTERM");
  });

  const step = (fn) => explainFailure(fn, () => pages, () => server.log(), 40);

  it("Tab reaches far notes without scrolling the canvas; Show all shows all; a double-click lands where clicked", () =>
    step(async () => {
      const board = await api(server.base, "POST", "/api/boards", { title: "Far apart" });
      const near = await api(server.base, "POST", `/api/boards/${board.id}/notes`, { text: "near", x: 0, y: 0 });
      const far = await api(server.base, "POST", `/api/boards/${board.id}/notes`, { text: "far", x: 3000, y: 2000 });
      const page = await openPage(browser, `${server.base}/b/${board.id}`, { name: "Tab" });
      pages.tab = page;
      await waitLive(page);
      await noteEl(page, far.id).waitFor({ state: "attached" });

      // One Tab stop per note: from the canvas, two presses reach the far note.
      await page.locator("#viewport").focus();
      await page.keyboard.press("Tab");
      assert.equal(await page.evaluate(() => document.activeElement.dataset.id), near.id, "first Tab: the near note");
      await page.keyboard.press("Tab");
      assert.equal(await page.evaluate(() => document.activeElement.dataset.id), far.id, "second Tab: the far note");
      await sleep(100);
      const scroll = await page.evaluate(() => {
        const v = document.getElementById("viewport");
        return [v.scrollLeft, v.scrollTop, window.scrollX, window.scrollY];
      });
      assert.deepEqual(scroll, [0, 0, 0, 0], "focus did not scroll the canvas or the page");
      assert.ok((await inCanvas(page, noteEl(page, far.id))).inside, "the view moved to show the focused far note");

      // Enter reaches the note's text; Escape comes back to the note.
      await page.keyboard.press("Enter");
      assert.equal(await page.evaluate(() => document.activeElement.className), "note-text");
      await page.keyboard.press("Escape");
      assert.equal(await page.evaluate(() => document.activeElement.dataset.id), far.id);

      await page.locator("#recenter").click();
      for (const id of [near.id, far.id]) {
        const where = await inCanvas(page, noteEl(page, id));
        assert.ok(where.inside, `Show all shows note ${id}: ${JSON.stringify(where)}`);
      }
      assert.ok((await page.evaluate(() => window.boardcast.view.zoom)) < 1, "it zoomed out to fit");

      // A double-click on empty canvas makes a note centred on the clicked board point.
      const canvas = await page.locator("#viewport").boundingBox();
      const at = { x: canvas.x + 700, y: canvas.y + 500 };
      const expected = await boardPoint(page, at.x, at.y);
      const created = page.waitForResponse((r) => r.url().endsWith("/notes") && r.request().method() === "POST");
      await page.mouse.dblclick(at.x, at.y);
      const note = await (await created).json();
      assert.ok(Math.abs(note.x - Math.round(expected.x - 100)) <= 1, `x ${note.x} near ${expected.x - 100}`);
      assert.ok(Math.abs(note.y - Math.round(expected.y - 24)) <= 1, `y ${note.y} near ${expected.y - 24}`);
      const where = await inCanvas(page, noteEl(page, note.id));
      assert.ok(where.inside, `the new note is visible: ${JSON.stringify(where)}`);
      assert.ok(
        where.box.x <= at.x && at.x <= where.box.x + where.box.width && where.box.y <= at.y && at.y <= where.box.y + where.box.height,
        "the new note covers the point double-clicked",
      );
      assert.deepEqual(unexpectedProblems(page), []);
    }));

  it("a double-click past the board's edge (±1,000,000) makes the note at the edge, not a refused request", () =>
    step(async () => {
      const board = await api(server.base, "POST", "/api/boards", { title: "Edge" });
      const edge = await api(server.base, "POST", `/api/boards/${board.id}/notes`, { text: "edge", x: 999_900, y: 0 });
      const page = await openPage(browser, `${server.base}/b/${board.id}`, { name: "Edge" });
      pages.edge = page;
      await waitLive(page);
      await page.locator("#recenter").click();
      const box = await noteEl(page, edge.id).boundingBox();
      const canvas = await page.locator("#viewport").boundingBox();
      const at = { x: Math.min(box.x + box.width + 300, canvas.x + canvas.width - 5), y: box.y + box.height / 2 };
      const beyond = await boardPoint(page, at.x, at.y);
      assert.ok(beyond.x - 100 > 1_000_000, `the point is past the edge: ${beyond.x}`);
      const created = page.waitForResponse((r) => r.url().endsWith("/notes") && r.request().method() === "POST");
      await page.mouse.dblclick(at.x, at.y);
      const answer = await created;
      assert.equal(answer.status(), 201, "the note is made");
      assert.equal((await answer.json()).x, 1_000_000, "at the edge");
      assert.deepEqual(unexpectedProblems(page), []);
    }));

  it("a two-finger pinch on the canvas zooms around the fingers", () =>
    step(async () => {
      const board = await api(server.base, "POST", "/api/boards", { title: "Pinch" });
      const page = await openPage(browser, `${server.base}/b/${board.id}`, { name: "Pia" });
      pages.pinch = page;
      await waitLive(page);
      const canvas = await page.locator("#viewport").boundingBox();
      const mid = { x: canvas.x + 500, y: canvas.y + 300 };
      const before = await boardPoint(page, mid.x, mid.y);
      const cdp = await page.context().newCDPSession(page);
      const touch = (type, spread) =>
        cdp.send("Input.dispatchTouchEvent", {
          type,
          touchPoints:
            type === "touchEnd"
              ? []
              : [
                  { x: mid.x - spread, y: mid.y, id: 1 },
                  { x: mid.x + spread, y: mid.y, id: 2 },
                ],
        });
      await touch("touchStart", 50);
      for (const spread of [60, 75, 90, 100]) await touch("touchMove", spread);
      await touch("touchEnd", 0);
      const zoom = await page.evaluate(() => window.boardcast.view.zoom);
      assert.ok(Math.abs(zoom - 2) < 0.05, `fingers twice as far apart zoom to 200 % (got ${zoom})`);
      const after = await boardPoint(page, mid.x, mid.y);
      assert.ok(Math.abs(after.x - before.x) < 1 && Math.abs(after.y - before.y) < 1, "the point between the fingers stays put");
      assert.deepEqual(unexpectedProblems(page), []);
    }));

  it("on touch, a note is dragged by its body and a tap edits it", () =>
    step(async () => {
      const board = await api(server.base, "POST", "/api/boards", { title: "Touch" });
      const note = await api(server.base, "POST", `/api/boards/${board.id}/notes`, { text: "drag me", x: 100, y: 100 });
      const page = await openPage(browser, `${server.base}/b/${board.id}`, { name: "Tom" });
      pages.touch = page;
      await waitLive(page);
      const text = await noteEl(page, note.id).locator(".note-text").boundingBox();
      const at = { x: text.x + text.width / 2, y: text.y + text.height / 2 };
      const cdp = await page.context().newCDPSession(page);
      const touch = (type, x, y) =>
        cdp.send("Input.dispatchTouchEvent", { type, touchPoints: type === "touchEnd" ? [] : [{ x, y, id: 1 }] });
      const saved = page.waitForResponse((r) => r.url().endsWith(`/notes/${note.id}`) && r.request().method() === "PATCH");
      await touch("touchStart", at.x, at.y);
      for (const dx of [10, 30, 60, 80]) await touch("touchMove", at.x + dx, at.y + dx / 2);
      await touch("touchEnd", 0, 0);
      const moved = await (await saved).json();
      assert.deepEqual([moved.x, moved.y], [180, 140], "the note moved with the finger (board px at 100 %)");
      await touch("touchStart", at.x + 80, at.y + 40);
      await touch("touchEnd", 0, 0);
      await page.waitForFunction(() => document.activeElement?.className === "note-text");
      assert.deepEqual(unexpectedProblems(page), []);
    }));

  it("zooms with Ctrl+wheel around the pointer and with + - 0, and keeps the view across a reload", () =>
    step(async () => {
      const board = await api(server.base, "POST", "/api/boards", { title: "Zoom" });
      await api(server.base, "POST", `/api/boards/${board.id}/notes`, { text: "a", x: 100, y: 100 });
      const page = await openPage(browser, `${server.base}/b/${board.id}`, { name: "Zed" });
      pages.zoom = page;
      await waitLive(page);
      assert.equal(await page.evaluate(() => window.boardcast.view.zoom), 1);

      const canvas = await page.locator("#viewport").boundingBox();
      const at = { x: canvas.x + 600, y: canvas.y + 400 };
      const before = await boardPoint(page, at.x, at.y);
      await page.mouse.move(at.x, at.y);
      await page.keyboard.down("Control");
      await page.mouse.wheel(0, -300);
      await page.keyboard.up("Control");
      await page.waitForFunction(() => window.boardcast.view.zoom > 1.5);
      const afterWheel = await boardPoint(page, at.x, at.y);
      assert.ok(Math.abs(afterWheel.x - before.x) < 1 && Math.abs(afterWheel.y - before.y) < 1, "the point under the pointer stays put");
      assert.equal(await page.evaluate(() => document.documentElement.clientWidth), 1280, "the page itself did not zoom");

      await page.locator("#viewport").focus();
      await page.keyboard.type("0");
      assert.equal(await page.evaluate(() => window.boardcast.view.zoom), 1);
      await page.keyboard.type("-");
      assert.ok(Math.abs((await page.evaluate(() => window.boardcast.view.zoom)) - 0.8) < 1e-9);
      await page.keyboard.type("+");
      await page.keyboard.type("+");
      assert.ok(Math.abs((await page.evaluate(() => window.boardcast.view.zoom)) - 1.25) < 1e-9);
      assert.equal(await page.locator("#zoom-reset").textContent(), "125%");
      // Pan too, so the kept view is not a default one.
      await page.keyboard.press("Shift+ArrowRight");
      const view = await page.evaluate(() => window.boardcast.view);

      await sleep(400); // the view is saved 250 ms after it settles
      await page.reload();
      await waitLive(page);
      const restored = await page.evaluate(() => window.boardcast.view);
      assert.equal(restored.zoom, view.zoom);
      assert.ok(Math.abs(restored.pan.x - view.pan.x) <= 1 && Math.abs(restored.pan.y - view.pan.y) <= 1, `${JSON.stringify(restored)} vs ${JSON.stringify(view)}`);
      assert.deepEqual(unexpectedProblems(page), []);
    }));
});
