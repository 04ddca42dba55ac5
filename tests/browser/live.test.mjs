// Live motion in real Chromium, two (or more) people on one board: the board opens before
// any name is asked, cursors with names, a note moving on the other screen while it is
// dragged, typing shown, a hidden tab that gives its stream back and catches up, and the
// spread of reconnects when the server is stopped with SIGTERM; and a crowd in the header.

import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

import { EventSource } from "eventsource";

import {
  SCREENSHOTS,
  api,
  createDatabase,
  ensureScreenshotDir,
  eventually,
  explainFailure,
  freePort,
  launchBrowser,
  migrate,
  noteEl,
  openPage,
  presence,
  shownNotes,
  startServer,
  startStack,
  unexpectedProblems,
  waitLive,
} from "./harness.mjs";

/** Makes the page believe it was hidden (or shown), as switching tabs does. */
function setHidden(page, hidden) {
  return page.evaluate((h) => {
    Object.defineProperty(document, "visibilityState", { value: h ? "hidden" : "visible", configurable: true });
    Object.defineProperty(document, "hidden", { value: h, configurable: true });
    document.dispatchEvent(new Event("visibilitychange"));
  }, hidden);
}

/** The centre of a note's title bar on a page, in page pixels. */
async function barOf(page, id) {
  const box = await noteEl(page, id).locator(".note-bar").boundingBox();
  return { x: box.x + 12, y: box.y + box.height / 2 };
}

describe("live motion between two people", () => {
  let db;
  let server;
  let port;
  let browser;
  let board;
  let note;
  let ana;
  let ben;

  before(async () => {
    db = createDatabase("live");
    migrate(db.url);
    port = await freePort();
    server = await startServer({ databaseUrl: db.url, port });
    browser = await launchBrowser();
    board = await api(server.base, "POST", "/api/boards", { title: "Live motion" });
    note = await api(server.base, "POST", `/api/boards/${board.id}/notes`, {
      text: "Drag me",
      x: 60,
      y: 80,
      color: "#bfdbfe",
    });
    await api(server.base, "POST", `/api/boards/${board.id}/notes`, { text: "Stay", x: 420, y: 60 });
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
    db?.drop();
  });

  /** Runs a step; on failure adds what the pages and the server said. */
  const step = (fn) => explainFailure(fn, () => ({ "page A": ana, "page B": ben }), () => server.log(), 30);

  it("the board renders before any name is typed, under a friendly generated name", () =>
    step(async () => {
      ana = await openPage(browser, `${server.base}/b/${board.id}`, { name: null });
      await waitLive(ana);
      assert.equal(await ana.locator("#name-overlay").isVisible(), false, "no name is asked first");
      assert.equal(await ana.locator("#board-title").textContent(), "Live motion");
      assert.equal(Object.keys(await shownNotes(ana)).length, 2, "the notes are there");
      const generated = await ana.evaluate(() => localStorage.getItem("boardcast.name"));
      assert.match(generated, /^[A-Z][a-z]+ [A-Z][a-z]+$/, "a friendly name, remembered");
      assert.equal((await ana.locator("#me").textContent()).trim(), generated);
      await eventually(async () => (await presence(ana)).some((v) => v.name === generated), { what: "in presence" });

      // Renamed from the header: the stream reopens under the new name, from its last event.
      const seqBefore = await ana.evaluate(() => window.boardcast.seq);
      await ana.locator("#me").click();
      await ana.getByLabel("Your name", { exact: true }).fill("Ana");
      await ana.getByRole("button", { name: "Save name" }).click();
      await eventually(async () => {
        const names = (await presence(ana)).map((v) => v.name);
        return names.includes("Ana") && !names.includes(generated);
      }, { what: "Ana instead of the generated name" });
      assert.equal(await ana.evaluate(() => window.boardcast.seq), seqBefore, "nothing lost or replayed twice");
      assert.match(
        server.log(),
        new RegExp(`stream opened: board=${board.id} viewer="Ana" .*from=id ${seqBefore}`),
        "the renamed stream resumed from its last event (no new snapshot)",
      );
      ben = await openPage(browser, `${server.base}/b/${board.id}`, { name: "Ben" });
      await waitLive(ben);
    }));

  it("B sees A's cursor move, with A's name; A does not draw its own", () =>
    step(async () => {
      const vp = await ana.locator("#viewport").boundingBox();
      const transforms = new Set();
      for (let i = 0; i < 12; i++) {
        await ana.mouse.move(vp.x + 300 + i * 20, vp.y + 300 + i * 5);
        await sleep(60);
        const c = await ben.evaluate(() => window.boardcast.cursors());
        for (const cur of c) if (cur.name === "Ana") transforms.add(cur.transform);
      }
      await eventually(async () => (await ben.evaluate(() => window.boardcast.cursors())).some((c) => c.name === "Ana"), {
        what: "Ana's cursor on B",
      });
      assert.ok(transforms.size >= 3, `B saw the cursor move: ${[...transforms].join(" | ")}`);
      assert.equal(await ben.locator('.cursor[data-name="Ana"] .cursor-name').textContent(), "Ana");
      assert.deepEqual(await ana.evaluate(() => window.boardcast.cursors()), [], "no own cursor");
      // Still, then away: it fades, and `idle` (pointer leaves) removes it.
      await eventually(async () => (await ben.evaluate(() => window.boardcast.cursors())).some((c) => c.stale), {
        ms: 6000,
        what: "the cursor fades when still",
      });
      await ana.mouse.move(vp.x + vp.width / 2, vp.y - 30);
      await eventually(async () => (await ben.evaluate(() => window.boardcast.cursors())).length === 0, {
        ms: 6000,
        what: "the cursor goes on idle",
      });
    }));

  it("B sees the note at intermediate positions while A drags it, and where it landed after", () =>
    step(async () => {
      const start = await barOf(ana, note.id);
      const seen = [];
      await ana.mouse.move(start.x, start.y);
      await ana.mouse.down();
      for (let i = 1; i <= 20; i++) {
        await ana.mouse.move(start.x + i * 10, start.y + i * 4);
        await sleep(40);
        seen.push((await shownNotes(ben))[note.id]);
      }
      await eventually(async () => (await shownNotes(ben))[note.id].x > 60 + 150, { what: "B follows the drag" });
      const midway = seen.filter((n) => n.x > 60 && n.x < 60 + 200);
      assert.ok(midway.length >= 3, `B saw intermediate positions before release: ${seen.map((n) => n.x).join(",")}`);
      await ana.mouse.up();
      const landed = await eventually(
        async () => {
          const n = (await api(server.base, "GET", `/api/boards/${board.id}`)).notes.find((x) => x.id === note.id);
          return n.x === 60 + 200 ? n : null;
        },
        { what: "the drop saved" },
      );
      await eventually(
        async () => {
          const b = (await shownNotes(ben))[note.id];
          return b.x === landed.x && b.y === landed.y && b.version === landed.version;
        },
        { what: "B shows where the change event put it" },
      );
      assert.equal(await noteEl(ben, note.id).evaluate((el) => el.classList.contains("note-remote")), false);
    }));

  it("B sees who is typing into a note", () =>
    step(async () => {
      await noteEl(ana, note.id).locator("textarea").click();
      await ana.keyboard.type(" and type", { delay: 40 });
      await eventually(async () => (await noteEl(ben, note.id).locator(".note-typing").textContent()) === "Ana is typing…", {
        what: "the typing indicator on B",
      });
      assert.equal(await noteEl(ben, note.id).locator(".note-typing").isVisible(), true);
      await eventually(async () => (await noteEl(ben, note.id).locator(".note-typing").isVisible()) === false, {
        ms: 8000,
        what: "the indicator goes once A stops",
      });
    }));

  it("a tab hidden for a while closes its stream, leaves presence, and catches up when shown", () =>
    step(async () => {
      const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
      await context.addInitScript(() => {
        window.BOARDCAST_HIDDEN_CLOSE_MS = 400;
        try {
          localStorage.setItem("boardcast.name", "Hidey");
        } catch {
          // about:blank
        }
      });
      const page = await context.newPage();
      page.problems = [];
      page.on("pageerror", (err) => page.problems.push(err.message));
      await page.goto(`${server.base}/b/${board.id}`);
      await waitLive(page);
      await page.evaluate(() => (window.notReloaded = true));
      await eventually(async () => (await presence(ana)).some((v) => v.name === "Hidey"), { what: "Hidey joins" });
      await setHidden(page, true);
      await eventually(async () => (await page.evaluate(() => window.boardcast.status)) === "paused", { what: "paused" });
      await eventually(async () => !(await presence(ana)).some((v) => v.name === "Hidey"), { what: "Hidey leaves" });
      const made = await api(server.base, "POST", `/api/boards/${board.id}/notes`, { text: "While away", x: 700, y: 300 });
      await setHidden(page, false);
      await waitLive(page);
      await eventually(async () => (await shownNotes(page))[made.id]?.text === "While away", { what: "caught up" });
      const seq = (await api(server.base, "GET", `/api/boards/${board.id}`)).seq;
      assert.equal(await page.evaluate(() => window.boardcast.seq), seq);
      assert.equal(await page.evaluate(() => window.notReloaded), true, "no reload");
      assert.deepEqual(page.problems, []);
      await context.close();
    }));

  it("saves a screenshot with two others' cursors and a note mid-drag", () =>
    step(async () => {
      const cy = await openPage(browser, `${server.base}/b/${board.id}`, { name: "Cy" });
      await waitLive(cy);
      const vpA = await ana.locator("#viewport").boundingBox();
      const vpB = await ben.locator("#viewport").boundingBox();
      await ben.mouse.move(vpB.x + 560, vpB.y + 120);
      await ben.mouse.move(vpB.x + 580, vpB.y + 140);
      const start = await barOf(ana, note.id);
      await ana.mouse.move(start.x, start.y);
      await ana.mouse.down();
      for (let i = 1; i <= 8; i++) {
        await ana.mouse.move(start.x + i * 8, start.y + 20 + i * 12);
        await sleep(40);
      }
      await eventually(async () => (await cy.evaluate(() => window.boardcast.cursors())).length >= 1, {
        what: "cursors on Cy",
      });
      await eventually(async () => noteEl(cy, note.id).evaluate((el) => el.classList.contains("note-remote")), {
        what: "the note moving on Cy",
      });
      await sleep(150);
      ensureScreenshotDir();
      await cy.screenshot({ path: path.join(SCREENSHOTS, "board-live.png") });
      await ana.mouse.up();
      assert.deepEqual(unexpectedProblems(ana), []);
      assert.deepEqual(unexpectedProblems(ben), []);
      assert.deepEqual(unexpectedProblems(cy), []);
      await cy.context().close();
    }));

  it("at SIGTERM, ten pages come back spread over at least a second", () =>
    step(async () => {
      const pages = [];
      for (let i = 0; i < 10; i++) {
        const p = await openPage(browser, `${server.base}/b/${board.id}`, { name: `Reader ${i}` });
        pages.push(p);
      }
      await Promise.all(pages.map((p) => waitLive(p)));
      const before = await Promise.all(pages.map((p) => p.evaluate(() => window.boardcast.opens.length)));
      const stopped = Date.now();
      const status = await server.stop("SIGTERM");
      assert.deepEqual(status, { code: 0, signal: null });
      server = await startServer({ databaseUrl: db.url, port });
      const reopened = await eventually(
        async () => {
          const opens = await Promise.all(
            pages.map((p, i) => p.evaluate((n) => window.boardcast.opens[n] ?? null, before[i])),
          );
          return opens.every((t) => t !== null) ? opens : null;
        },
        { ms: 20_000, what: "every page back" },
      );
      const spread = Math.max(...reopened) - Math.min(...reopened);
      console.log(
        `reconnects after SIGTERM: ${reopened.map((t) => t - stopped).sort((a, b) => a - b).join(", ")} ms; spread ${spread} ms`,
      );
      assert.ok(spread >= 1000, `reconnects spread over ${spread} ms`);
      for (const p of pages) await p.context().close();
    }));
});

describe("a crowd in the header", () => {
  let stack;
  let server;
  let browser;
  const streams = [];

  before(async () => {
    stack = await startStack("crowd", { env: { PRESENCE_LIST_LIMIT: "4" } });
    ({ server, browser } = stack);
  });

  after(async () => {
    for (const s of streams) s.close();
    await stack?.stop();
  });

  it("shows the count, a handful of avatars and +N for the rest", async () => {
    const board = await api(server.base, "POST", "/api/boards", { title: "Crowded" });
    const page = await openPage(browser, `${server.base}/b/${board.id}`, { name: "Host" });
    await waitLive(page);
    // Eleven others arrive (plain streams from Node: a crowd, past PRESENCE_LIST_LIMIT=4).
    for (let i = 0; i < 11; i++) {
      streams.push(new EventSource(`${server.base}/api/boards/${board.id}/events?name=Guest%20${i}`));
    }
    const header = await eventually(
      async () => {
        const h = await page.evaluate(() => {
          const el = document.getElementById("presence");
          const more = el.querySelector(".viewer-more");
          return {
            total: Number(el.dataset.total),
            avatars: el.querySelectorAll(".viewer[data-name]").length,
            more: more ? Number(more.dataset.more) : 0,
            moreText: more ? more.textContent : "",
            label: el.getAttribute("aria-label"),
          };
        });
        return h.total === 12 ? h : null;
      },
      { ms: 10_000, what: "the count of 12 in the header" },
    );
    assert.ok(header.avatars >= 1 && header.avatars <= 5, `a handful of avatars: ${header.avatars}`);
    assert.equal(header.avatars + header.more, 12, `avatars plus "+N" make the count: ${JSON.stringify(header)}`);
    assert.equal(header.moreText, `+${header.more}`);
    assert.match(header.label, /^12 people viewing: /);
    // They leave: the count follows down.
    for (const s of streams.splice(0, 8)) s.close();
    await eventually(async () => (await page.evaluate(() => document.getElementById("presence").dataset.total)) === "4", {
      ms: 10_000,
      what: "the count back to 4",
    });
    assert.deepEqual(unexpectedProblems(page), []);
    await page.context().close();
  });
});
