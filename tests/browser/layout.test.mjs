// Layouts that hold on ordinary data, in real Chromium at phone and desktop widths: a long
// unbroken title on the board list, six people with long names in a board's header, and a
// right-to-left override in a name. Saves the phone and desktop screenshots of the header.

import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import {
  SCREENSHOTS,
  api,
  ensureScreenshotDir,
  eventually,
  explainFailure,
  openPage,
  startStack,
  unexpectedProblems,
  waitLive,
} from "./harness.mjs";

const LONG_TITLE = `https://example.com/${"a1b2c3d4e5".repeat(18)}`.slice(0, 200);
const LONG_NAMES = [
  "Maximiliana Konstantinopoulou",
  "Bartholomew Featherstonehaugh",
  "Anastasia Wolfeschlegelstein",
  "Guillermo Rodríguez-Echeverría",
  "Siddharth Venkataraghavan",
  "Oluwaseun Adebayo-Ogunleye",
];

/** Whether the element is shown wholly inside the window (and not clipped to nothing). */
function withinWindow(page, selector) {
  return page.evaluate((sel) => {
    const el = document.querySelector(sel);
    if (!el) return { ok: false, why: "missing" };
    const r = el.getBoundingClientRect();
    const ok = r.width > 0 && r.left >= -0.5 && r.right <= window.innerWidth + 0.5 && r.top >= -0.5 && r.bottom <= window.innerHeight + 0.5;
    return { ok, left: r.left, right: r.right, width: r.width, window: window.innerWidth };
  }, selector);
}

function horizontalOverflow(page) {
  return page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
}

describe("layouts that hold", () => {
  let stack;
  let server;
  let browser;
  const streams = [];
  const pages = {};

  before(async () => {
    stack = await startStack("layout");
    ({ server, browser } = stack);
  });

  after(async () => {
    for (const s of streams) s.abort();
    const status = await stack?.stop();
    assert.deepEqual(status, { code: 0, signal: null }, "the server stops cleanly on SIGTERM");
  });

  const step = (fn) => explainFailure(fn, () => pages, () => server.log(), 40);

  it("the board list with a 200-character unbroken title stays within the window at 390 and 1280 px", () =>
    step(async () => {
      await api(server.base, "POST", "/api/boards", { title: LONG_TITLE });
      for (const width of [390, 1280]) {
        const page = await openPage(browser, `${server.base}/`, { viewport: { width, height: 800 } });
        pages[`index ${width}`] = page;
        await page.locator(".board-item").first().waitFor();
        await page.locator("#board-title").fill(LONG_TITLE);
        assert.ok((await horizontalOverflow(page)) <= 0, `no horizontal overflow at ${width} px`);
        const button = await withinWindow(page, "#create-form button[type=submit]");
        assert.ok(button.ok, `"Create board" is visible at ${width} px: ${JSON.stringify(button)}`);
        const title = await withinWindow(page, ".board-item .board-title");
        assert.ok(title.ok, `the listed title stays inside at ${width} px: ${JSON.stringify(title)}`);
        assert.deepEqual(unexpectedProblems(page), []);
        await page.context().close();
      }
    }));

  it("a board with six people with long names keeps its title, status and +N in view from 320 px up", () =>
    step(async () => {
      const board = await api(server.base, "POST", "/api/boards", { title: "Quarterly planning with the whole team" });
      for (const [i, name] of LONG_NAMES.entries()) {
        await api(server.base, "POST", `/api/boards/${board.id}/notes`, {
          text: `${name.split(" ")[0]}'s idea`,
          x: 40 + (i % 3) * 240,
          y: 40 + Math.floor(i / 3) * 200,
          color: ["#fde68a", "#fbcfe8", "#bbf7d0", "#bfdbfe", "#ddd6fe", "#fed7aa"][i],
        });
      }
      // Five people watch through the API's stream (the page sees them in presence).
      for (const name of LONG_NAMES.slice(1)) {
        const ctrl = new AbortController();
        streams.push(ctrl);
        const res = await fetch(`${server.base}/api/boards/${board.id}/events?name=${encodeURIComponent(name)}`, { signal: ctrl.signal });
        res.body.getReader().read().catch(() => {});
      }
      const page = await openPage(browser, `${server.base}/b/${board.id}`, { name: LONG_NAMES[0] });
      pages.header = page;
      await waitLive(page);
      await eventually(() => page.evaluate(() => document.getElementById("presence").dataset.total === "6"), { what: "six viewers" });
      ensureScreenshotDir();
      for (const width of [1280, 390, 320]) {
        await page.setViewportSize({ width, height: width > 600 ? 800 : 720 });
        await page.waitForTimeout(150);
        assert.ok((await horizontalOverflow(page)) <= 0, `no horizontal overflow at ${width} px`);
        const title = await withinWindow(page, "#board-title");
        assert.ok(title.ok && title.width >= 60, `the title is in view and readable at ${width} px: ${JSON.stringify(title)}`);
        const status = await withinWindow(page, "#status");
        assert.ok(status.ok, `the status is in view at ${width} px: ${JSON.stringify(status)}`);
        const words = await withinWindow(page, "#status .status-text");
        assert.ok(words.ok && words.width > 10, `the status is in words at ${width} px: ${JSON.stringify(words)}`);
        assert.equal(await page.locator("#status .status-text").textContent(), "Live");
        const more = await withinWindow(page, "#presence .viewer-more");
        assert.ok(more.ok, `"+N" for the viewers that do not fit is in view at ${width} px: ${JSON.stringify(more)}`);
        const clipped = await page.evaluate(() => {
          const p = document.getElementById("presence");
          return p.scrollWidth - p.clientWidth;
        });
        assert.ok(clipped <= 1, `no avatar is cut off at ${width} px (${clipped} px)`);
        if (width === 1280) await page.screenshot({ path: path.join(SCREENSHOTS, "layout-desktop.png") });
        if (width === 390) {
          await page.locator("#recenter").click(); // the phone shot shows the fit, zoomed out
          await page.screenshot({ path: path.join(SCREENSHOTS, "layout-phone.png") });
        }
      }
      assert.deepEqual(unexpectedProblems(page), []);
    }));

  it("tells a board that never was apart from one that was deleted, in words", () =>
    step(async () => {
      const page = await openPage(browser, `${server.base}/b/not-a-board`, { name: "Nia" });
      pages.gone = page;
      await page.locator("#gone-overlay").waitFor({ state: "visible" });
      assert.equal(await page.locator("#gone-heading").textContent(), "No such board");
      assert.equal(await page.locator("#status .status-text").textContent(), "Not found");
      await page.goto(`${server.base}/b/0b7f9a44-1111-4222-8333-444455556666`);
      await page.locator("#gone-overlay").waitFor({ state: "visible" });
      assert.equal(await page.locator("#gone-heading").textContent(), "No such board");
      assert.equal(await page.locator("#status .status-text").textContent(), "Not found");

      const board = await api(server.base, "POST", "/api/boards", { title: "Short-lived" });
      await page.goto(`${server.base}/b/${board.id}`);
      await waitLive(page);
      await api(server.base, "DELETE", `/api/boards/${board.id}`);
      await page.locator("#gone-overlay").waitFor({ state: "visible" });
      assert.equal(await page.locator("#gone-heading").textContent(), "This board was deleted");
      assert.equal(await page.locator("#status .status-text").textContent(), "Deleted");
      await page.context().close();
    }));

  it("a right-to-left override in a name stays inside the name", () =>
    step(async () => {
      const board = await api(server.base, "POST", "/api/boards", { title: "Bidi" });
      const name = "Eve\u202Egnp.exe";
      const page = await openPage(browser, `${server.base}/b/${board.id}`, { name });
      pages.bidi = page;
      await waitLive(page);
      await page.locator("#presence .viewer-name").first().waitFor();
      // Where " (you)" and the name's "gnp.exe" are drawn: isolated, "(you)" follows the name
      // on its right; an override leaking out would draw ")uoy(" to the left of "exe.png".
      const rects = await page.evaluate(() => {
        const el = document.querySelector("#presence .viewer-name");
        const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
        const nodes = [];
        let text = "";
        for (let n = walker.nextNode(); n; n = walker.nextNode()) {
          nodes.push({ n, at: text.length });
          text += n.data;
        }
        const rangeOf = (needle) => {
          const start = text.indexOf(needle);
          const end = start + needle.length;
          const r = document.createRange();
          for (const { n, at } of nodes) {
            if (start >= at && start <= at + n.data.length) r.setStart(n, start - at);
            if (end >= at && end <= at + n.data.length) {
              r.setEnd(n, end - at);
              break;
            }
          }
          const b = r.getBoundingClientRect();
          return { left: b.left, right: b.right };
        };
        return { text, name: rangeOf("gnp.exe"), you: rangeOf("(you)") };
      });
      assert.ok(rects.text.includes("(you)"), JSON.stringify(rects));
      assert.ok(rects.you.left >= rects.name.right - 1, `"(you)" is drawn after the name: ${JSON.stringify(rects)}`);
      assert.deepEqual(unexpectedProblems(page), []);
    }));
});
