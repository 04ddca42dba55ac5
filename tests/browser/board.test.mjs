// Two people on one board, in two browser contexts of real Chromium, against the real
// server and a real database: what one does, the other sees; presence; the API as a third
// writer; a stale edit; screenshots.

import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

import {
  HEARTBEAT_MS,
  SCREENSHOTS,
  api,
  ensureScreenshotDir,
  eventually,
  explainFailure,
  noteEl,
  openPage,
  presence,
  shownNotes,
  startStack,
  unexpectedProblems,
  waitLive,
} from "./harness.mjs";

describe("two people on one board", () => {
  let stack;
  let server;
  let browser;
  let board;
  let ana; // page A
  let ben; // page B
  let noteId; // the note A creates and B changes

  before(async () => {
    stack = await startStack("board");
    ({ server, browser } = stack);
    board = await api(server.base, "POST", "/api/boards", { title: "Sprint retro" });
    ana = await openPage(browser, `${server.base}/b/${board.id}`, { name: "Ana" });
    ben = await openPage(browser, `${server.base}/b/${board.id}`, { name: "Ben" });
    await Promise.all([waitLive(ana), waitLive(ben)]);
  });

  after(async () => {
    const status = await stack?.stop();
    assert.deepEqual(status, { code: 0, signal: null }, "the server stops cleanly on SIGTERM");
  });

  /** Runs a step; on failure adds what the pages and the server said. */
  const step = (fn) => explainFailure(fn, () => ({ "page A": ana, "page B": ben }), () => server.log(), 40);

  it("shows the board's title and a live status on both pages", () =>
    step(async () => {
      for (const page of [ana, ben]) {
        assert.equal(await page.locator("#board-title").textContent(), "Sprint retro");
        assert.equal(await page.locator("#status .status-text").textContent(), "Live");
        assert.equal(await page.title(), "Sprint retro — boardcast");
      }
    }));

  it("a note created in A by double-clicking appears in B within one second", () =>
    step(async () => {
      const created = ana.waitForResponse(
        (r) => r.url().endsWith(`/api/boards/${board.id}/notes`) && r.request().method() === "POST",
      );
      await ana.locator("#viewport").dblclick({ position: { x: 420, y: 260 } });
      const res = await created;
      assert.equal(res.status(), 201);
      const t0 = Date.now();
      const note = await res.json();
      noteId = note.id;
      assert.equal(note.author, "Ana", "the page sends X-Display-Name");
      await ben.locator(`.note[data-id="${noteId}"]`).waitFor({ timeout: 1000 });
      const elapsed = Date.now() - t0;
      assert.ok(elapsed < 1000, `B saw the note after ${elapsed} ms`);
      // A can type right away: the new note's text field has focus.
      await ana.waitForFunction((id) => document.activeElement.matches(`.note[data-id="${id}"] textarea`), noteId);
      await ana.keyboard.type("Ship the board page");
      await eventually(async () => (await shownNotes(ben))[noteId]?.text === "Ship the board page", {
        what: "A's text in B",
      });
      // The author is shown on the note.
      assert.equal(await noteEl(ben, noteId).locator(".note-author").textContent(), "Ana");
    }));

  it("moving a note in B moves it in A", () =>
    step(async () => {
      const before = (await shownNotes(ana))[noteId];
      const bar = noteEl(ben, noteId).locator(".note-bar");
      const box = await bar.boundingBox();
      const sx = box.x + 30;
      const sy = box.y + box.height / 2;
      await ben.mouse.move(sx, sy);
      await ben.mouse.down();
      await ben.mouse.move(sx + 60, sy + 20, { steps: 4 });
      // While B drags, A sees it move (signals), but nothing is saved before the drop.
      await eventually(
        async () => {
          const n = (await shownNotes(ana))[noteId];
          return n.x === before.x + 60 && n.y === before.y + 20;
        },
        { what: "A to follow B's drag" },
      );
      const during = (await api(server.base, "GET", `/api/boards/${board.id}`)).notes.find((n) => n.id === noteId);
      assert.deepEqual([during.x, during.y, during.version], [before.x, before.y, before.version]);
      await ben.mouse.move(sx + 150, sy + 80, { steps: 6 });
      await ben.mouse.up();
      const want = { x: before.x + 150, y: before.y + 80 };
      await eventually(
        async () => {
          const n = (await shownNotes(ana))[noteId];
          return n.x === want.x && n.y === want.y;
        },
        { what: `A to show the note at ${JSON.stringify(want)}` },
      );
      const onServer = (await api(server.base, "GET", `/api/boards/${board.id}`)).notes.find(
        (n) => n.id === noteId,
      );
      assert.equal(onServer.x, want.x);
      assert.equal(onServer.y, want.y);
      // B's own note did not jump back at any point after the drop.
      assert.equal((await shownNotes(ben))[noteId].x, want.x);
    }));

  it("editing a note in B shows the new text in A", () =>
    step(async () => {
      const text = noteEl(ben, noteId).locator("textarea");
      await text.click();
      await ben.keyboard.press("Control+A");
      const typed = "Edited by Ben — ünïcødé ok";
      // Only this edit's requests (the move above PATCHed the same note), as B's page sends them.
      const patches = [];
      const count = (r) => {
        if (r.method() === "PATCH" && r.url().endsWith(`/api/boards/${board.id}/notes/${noteId}`)) patches.push(r);
      };
      ben.on("request", count);
      const started = Date.now();
      await ben.keyboard.type(typed);
      const took = Date.now() - started;
      await eventually(async () => (await shownNotes(ana))[noteId].text === typed, { what: "B's edit in A" });
      // Typing is throttled (outbox.js: a save at each 150 ms edge, plus the one that waited
      // for the save before it to answer): fewer PATCHes than keystrokes left B's page.
      ben.off("request", count);
      const most = 2 * Math.ceil(took / 150) + 2;
      assert.ok(
        patches.length < typed.length && patches.length <= most,
        `${patches.length} PATCH requests for ${typed.length} keys typed in ${took} ms (at most ${most})`,
      );
    }));

  it("recoloring and resizing a note in B show in A", () =>
    step(async () => {
      const note = noteEl(ben, noteId);
      await note.hover();
      await note.getByRole("button", { name: "Color: Green" }).click();
      await eventually(async () => (await shownNotes(ana))[noteId].color === "#bbf7d0", {
        what: "the new color in A",
      });
      assert.equal(await note.getByRole("button", { name: "Color: Green" }).getAttribute("aria-pressed"), "true");

      const grip = await note.locator(".note-resize").boundingBox();
      const gx = grip.x + grip.width / 2;
      const gy = grip.y + grip.height / 2;
      const before = (await shownNotes(ana))[noteId];
      await ben.mouse.move(gx, gy);
      await ben.mouse.down();
      await ben.mouse.move(gx + 60, gy + 40, { steps: 5 });
      await ben.mouse.up();
      await eventually(
        async () => {
          const n = (await shownNotes(ana))[noteId];
          return n.width === before.width + 60 && n.height === before.height + 40;
        },
        { what: "the new size in A" },
      );
    }));

  it("both see each other in presence, and two tabs of one name are grouped", () =>
    step(async () => {
      const names = (list) => list.map((v) => v.name).sort();
      await eventually(async () => names(await presence(ana)).join() === "Ana,Ben", {
        what: "A to list Ana and Ben",
      });
      await eventually(async () => names(await presence(ben)).join() === "Ana,Ben", {
        what: "B to list Ana and Ben",
      });
      assert.match(await ana.locator('#presence .viewer[data-name="Ana"]').textContent(), /\(you\)/);

      const ana2 = await openPage(browser, `${server.base}/b/${board.id}`, { name: "Ana" });
      await waitLive(ana2);
      await eventually(
        async () => (await presence(ben)).find((v) => v.name === "Ana")?.count === 2,
        { what: "B to show Ana ×2" },
      );
      assert.match(await ben.locator('#presence .viewer[data-name="Ana"]').textContent(), /×2/);
      await ana2.context().close();
      await eventually(
        async () => (await presence(ben)).find((v) => v.name === "Ana")?.count === 1,
        { ms: 3 * HEARTBEAT_MS + 2000, what: "B to show one Ana again" },
      );
    }));

  it("a change made through the API appears in both pages", () =>
    step(async () => {
      const made = await api(server.base, "POST", `/api/boards/${board.id}/notes`, {
        text: "Posted by a script",
        x: 700,
        y: 120,
        color: "#bfdbfe",
      });
      for (const page of [ana, ben]) {
        await noteEl(page, made.id).waitFor({ timeout: 1000 });
      }
      await api(server.base, "PATCH", `/api/boards/${board.id}/notes/${made.id}`, {
        text: "Changed by a script",
        x: 720,
      });
      for (const page of [ana, ben]) {
        await eventually(
          async () => {
            const n = (await shownNotes(page))[made.id];
            return n.text === "Changed by a script" && n.x === 720 && n.color === "#bfdbfe";
          },
          { what: "the API's change on a page" },
        );
      }
      await api(server.base, "PATCH", `/api/boards/${board.id}`, { title: "Sprint retro (week 48)" });
      for (const page of [ana, ben]) {
        await eventually(
          async () => (await page.locator("#board-title").textContent()) === "Sprint retro (week 48)",
          { what: "the new board title" },
        );
      }
    }));

  it("a stale edit gets the 412 path and is rebased onto the newer text: both words stay", () =>
    step(async () => {
      const note = await api(server.base, "POST", `/api/boards/${board.id}/notes`, {
        text: "Original words",
        x: 120,
        y: 420,
      });
      await noteEl(ana, note.id).waitFor();
      // Hold A's next write to this note on the wire, so that the API's change lands first.
      let release;
      const held = new Promise((r) => (release = r));
      let sentIfMatch = null;
      await ana.route(`**/api/boards/${board.id}/notes/${note.id}`, async (route) => {
        sentIfMatch = route.request().headers()["if-match"];
        await held;
        await route.continue();
      });
      const field = noteEl(ana, note.id).locator("textarea");
      await field.click();
      await ana.keyboard.press("End");
      await ana.keyboard.type(" plus mine");
      await eventually(() => sentIfMatch !== null, { what: "A's PATCH to leave" });
      assert.equal(sentIfMatch, `"${note.version}"`, "A's edit names the version it started from");

      const theirs = await api(server.base, "PATCH", `/api/boards/${board.id}/notes/${note.id}`, {
        text: "Someone else's newer words",
      });
      assert.equal(theirs.version, note.version + 1);
      const answered = ana.waitForResponse((r) => r.url().endsWith(`/notes/${note.id}`) && r.request().method() === "PATCH");
      release();
      const res = await answered;
      assert.equal(res.status(), 412);
      await ana.unroute(`**/api/boards/${board.id}/notes/${note.id}`);

      // The edits touched different words: A's is rebased onto theirs (outbox.js, merge.js)
      // and saved with the newer If-Match, and everyone ends with both.
      const merged = "Someone else's newer words plus mine";
      await eventually(async () => (await field.inputValue()) === merged, { what: "A to show the merged text" });
      await eventually(async () => (await shownNotes(ben))[note.id]?.text === merged, {
        what: "B to show the merged text",
      });
      await sleep(800);
      assert.equal(await field.inputValue(), merged);
      const onServer = (await api(server.base, "GET", `/api/boards/${board.id}`)).notes.find((n) => n.id === note.id);
      assert.equal(onServer.text, merged);
      // The field is usable again: a new edit goes through.
      await field.click();
      await ana.keyboard.press("End");
      await ana.keyboard.type("!");
      await eventually(async () => (await shownNotes(ben))[note.id]?.text === `${merged}!`, {
        what: "A's next edit to reach B",
      });
    }));

  it("the echoes of one's own writes never undo newer typing or moves", () =>
    step(async () => {
      const note = await api(server.base, "POST", `/api/boards/${board.id}/notes`, { text: "", x: 900, y: 420 });
      await noteEl(ana, note.id).waitFor();
      // Record what A's field shows, as fast as the page can, while A types across several
      // debounce windows (so several PATCHes and their echoes interleave with the typing).
      await ana.evaluate((id) => {
        const field = document.querySelector(`.note[data-id="${id}"] textarea`);
        window.__seen = [];
        const tick = () => {
          window.__seen.push(field.value);
          window.__raf = requestAnimationFrame(tick);
        };
        tick();
      }, note.id);
      const words = "one two three four five six";
      await noteEl(ana, note.id).locator("textarea").click();
      for (const word of words.split(" ")) {
        await ana.keyboard.type(`${word} `, { delay: 40 });
        await sleep(450); // past the debounce: this word is sent while the next is typed
      }
      // Move it by keyboard while its text is still being confirmed.
      await ana.keyboard.press("Escape");
      for (let i = 0; i < 5; i++) await ana.keyboard.press("ArrowDown");
      const final = `${words} `;
      await eventually(
        async () => {
          const n = (await shownNotes(ben))[note.id];
          return n.text === final && n.y === 470;
        },
        { what: "B to converge on A's final text and place" },
      );
      const seen = await ana.evaluate(() => {
        cancelAnimationFrame(window.__raf);
        return window.__seen;
      });
      for (let i = 1; i < seen.length; i++) {
        assert.ok(
          seen[i].length >= seen[i - 1].length && final.startsWith(seen[i]),
          `A's field went from ${JSON.stringify(seen[i - 1])} to ${JSON.stringify(seen[i])}`,
        );
      }
      const a = (await shownNotes(ana))[note.id];
      assert.equal(a.text, final);
      assert.equal(a.y, 470);
      const onServer = (await api(server.base, "GET", `/api/boards/${board.id}`)).notes.find((n) => n.id === note.id);
      assert.equal(onServer.text, final);
      assert.equal(onServer.y, 470);
      assert.equal(a.version, onServer.version, "A ends on the server's latest version");
    }));

  it("the keyboard creates, moves and deletes notes", () =>
    step(async () => {
      const count = async (page) => Object.keys(await shownNotes(page)).length;
      const start = await count(ana);
      await ana.locator("#viewport").focus();
      const created = ana.waitForResponse((r) => r.url().endsWith("/notes") && r.request().method() === "POST");
      await ana.keyboard.press("n");
      const note = await (await created).json();
      await ana.waitForFunction((id) => document.activeElement.matches(`.note[data-id="${id}"] textarea`), note.id);
      await ana.keyboard.type("Made with the keyboard");
      await ana.keyboard.press("Escape"); // leaves the text, the note keeps focus
      assert.equal(await ana.evaluate(() => document.activeElement.dataset.id), note.id);
      await ana.keyboard.press("ArrowRight");
      await ana.keyboard.press("ArrowRight");
      await ana.keyboard.press("ArrowDown");
      await eventually(
        async () => {
          const n = (await shownNotes(ben))[note.id];
          return n && n.x === note.x + 20 && n.y === note.y + 10 && n.text === "Made with the keyboard";
        },
        { what: "the keyboard move in B" },
      );
      assert.equal(await count(ben), start + 1);
      await ana.keyboard.press("Delete");
      await eventually(async () => !(note.id in (await shownNotes(ben))), { what: "the deletion in B" });
    }));

  it("deleting in B removes the note in A (button and Delete key)", () =>
    step(async () => {
      const extra = await api(server.base, "POST", `/api/boards/${board.id}/notes`, { text: "Delete me", x: 950, y: 400 });
      await noteEl(ben, extra.id).waitFor();
      await noteEl(ben, extra.id).hover();
      await noteEl(ben, extra.id).getByRole("button", { name: "Delete note" }).click();
      await eventually(async () => !(extra.id in (await shownNotes(ana))), { what: "the button's delete in A" });

      await noteEl(ben, noteId).locator(".note-author").click(); // focuses the note, not its text
      await ben.keyboard.press("Delete");
      await eventually(async () => !(noteId in (await shownNotes(ana))), { what: "the Delete key's delete in A" });
      const left = (await api(server.base, "GET", `/api/boards/${board.id}`)).notes.map((n) => n.id);
      assert.ok(!left.includes(noteId) && !left.includes(extra.id));
    }));

  it("saves screenshots of the board with several notes and two viewers", () =>
    step(async () => {
      const notes = [
        { text: "Went well\n\n• Live cursors… no, live notes!\n• Reconnects without a reload", x: 60, y: 40, color: "#bbf7d0", width: 240, height: 170 },
        { text: "To improve\n\nFewer meetings, more sticky notes", x: 340, y: 60, color: "#fbcfe8" },
        { text: "Ideas\n\nDark mode?\nExport to PDF", x: 600, y: 30, color: "#bfdbfe" },
        { text: "Action: ship presence to production", x: 860, y: 90, color: "#fde68a", width: 220, height: 130 },
        { text: "Ask Ben about the Heroku bill", x: 420, y: 300, color: "#fed7aa" },
        { text: "Thanks, everyone!", x: 700, y: 280, color: "#ddd6fe", width: 180, height: 120 },
      ];
      // Start from a tidy board: only these notes.
      for (const n of (await api(server.base, "GET", `/api/boards/${board.id}`)).notes) {
        await api(server.base, "DELETE", `/api/boards/${board.id}/notes/${n.id}`);
      }
      for (const n of notes) {
        await api(server.base, "POST", `/api/boards/${board.id}/notes`, n, {
          "X-Display-Name": encodeURIComponent(n.color === "#fbcfe8" ? "Ben" : "Ana"),
        });
      }
      for (const page of [ana, ben]) {
        await eventually(async () => Object.keys(await shownNotes(page)).length === notes.length, {
          what: "all notes on the page",
        });
        await page.locator("#recenter").click();
        await page.mouse.move(5, 790); // no hover highlight in the picture
        await page.evaluate(() => {
          document.activeElement?.blur();
          document.getElementById("toasts").replaceChildren();
        });
      }
      await eventually(async () => (await presence(ana)).length === 2, { what: "two viewers" });
      ensureScreenshotDir();
      await ana.screenshot({ path: path.join(SCREENSHOTS, "board.png") });

      const phone = await openPage(browser, `${server.base}/b/${board.id}`, {
        name: "Chidi",
        viewport: { width: 390, height: 760 },
      });
      await waitLive(phone);
      await eventually(async () => (await presence(phone)).length === 3, { what: "three viewers on the phone" });
      await phone.screenshot({ path: path.join(SCREENSHOTS, "board-phone.png") });
      await phone.context().close();

      await api(server.base, "POST", "/api/boards", { title: "Design review: onboarding flow" });
      await api(server.base, "POST", "/api/boards", { title: "Team offsite planning" });
      const index = await openPage(browser, `${server.base}/`);
      await index.locator(".board-item").nth(2).waitFor();
      await index.screenshot({ path: path.join(SCREENSHOTS, "index.png") });
      await index.context().close();
    }));

  it("closing B removes B from A's presence within three heartbeat intervals", () =>
    step(async () => {
      await eventually(async () => (await presence(ana)).some((v) => v.name === "Ben"), { what: "Ben in A" });
      const t0 = Date.now();
      await ben.context().close();
      await eventually(async () => !(await presence(ana)).some((v) => v.name === "Ben"), {
        ms: 3 * HEARTBEAT_MS + 1000,
        every: 20,
        what: "Ben to leave A's presence",
      });
      const elapsed = Date.now() - t0;
      assert.ok(elapsed <= 3 * HEARTBEAT_MS + 1000, `Ben left after ${elapsed} ms`);
      assert.deepEqual(unexpectedProblems(ana), [], "page A logged no errors");
    }));
});
