// The page keeps itself live: a server restart, a stream gone silent, a 503 — each time it
// says "reconnecting", comes back "live" and catches up, without a reload.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import {
  HEARTBEAT_MS,
  api,
  createDatabase,
  eventually,
  freePort,
  launchBrowser,
  migrate,
  noteEl,
  openPage,
  shownNotes,
  startServer,
  status,
  waitLive,
} from "./harness.mjs";

describe("reconnecting", () => {
  let db;
  let port;
  let server;
  let browser;
  let board;
  let pages;
  const logs = [];

  before(async () => {
    db = createDatabase("reconnect");
    migrate(db.url);
    port = await freePort();
    server = await startServer({ databaseUrl: db.url, port });
    browser = await launchBrowser();
    board = await api(server.base, "POST", "/api/boards", { title: "Restarts" });
    pages = [
      await openPage(browser, `${server.base}/b/${board.id}`, { name: "Ana" }),
      await openPage(browser, `${server.base}/b/${board.id}`, { name: "Ben" }),
    ];
    await Promise.all(pages.map((p) => waitLive(p)));
    // Set once; a reload would lose it.
    for (const p of pages) await p.evaluate(() => (window.__sameDocument = true));
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
    if (process.env.BROWSER_TEST_LOG) console.log([...logs, server.log()].join("\n"));
    db?.drop();
  });

  async function step(fn) {
    try {
      await fn();
    } catch (e) {
      e.message +=
        `\n--- page problems: ${JSON.stringify(pages?.map((p) => p.problems))}` +
        `\n--- server log (tail):\n${[...logs, server.log()].join("\n").split("\n").slice(-60).join("\n")}`;
      throw e;
    }
  }

  const base = () => `http://127.0.0.1:${port}`;

  it("after a restart both pages say reconnecting, then live, and show what changed meanwhile", () =>
    step(async () => {
      const keep = await api(base(), "POST", `/api/boards/${board.id}/notes`, { text: "Keep me", x: 40, y: 40 });
      const drop = await api(base(), "POST", `/api/boards/${board.id}/notes`, { text: "Drop me", x: 300, y: 40 });
      for (const p of pages) {
        await noteEl(p, keep.id).waitFor();
        await noteEl(p, drop.id).waitFor();
      }
      const seqBefore = await pages[0].evaluate(() => window.boardcast.seq);

      const stopped = await server.stop("SIGTERM");
      assert.deepEqual(stopped, { code: 0, signal: null }, "SIGTERM stops the server cleanly");
      logs.push(server.log());
      for (const p of pages) {
        await p.waitForFunction(() => document.getElementById("status").dataset.state === "reconnecting", null, {
          timeout: 5000,
        });
        assert.equal(await p.locator("#status .status-text").textContent(), "Reconnecting…");
      }

      // While both pages are away, another instance on the same database takes writes.
      const other = await startServer({ databaseUrl: db.url, port: await freePort() });
      const away = await api(other.base, "POST", `/api/boards/${board.id}/notes`, {
        text: "Written while you were away",
        x: 40,
        y: 260,
        color: "#bbf7d0",
      });
      await api(other.base, "PATCH", `/api/boards/${board.id}/notes/${keep.id}`, { text: "Kept, and changed" });
      await api(other.base, "DELETE", `/api/boards/${board.id}/notes/${drop.id}`);
      await other.stop();
      logs.push(other.log());
      for (const p of pages) assert.equal(await status(p), "reconnecting");

      server = await startServer({ databaseUrl: db.url, port });
      for (const p of pages) {
        // Backoff is capped at 10 s (plus jitter); the pages find the server again on their own.
        await waitLive(p, 20_000);
        await eventually(
          async () => {
            const n = await shownNotes(p);
            return (
              n[away.id]?.text === "Written while you were away" &&
              n[keep.id]?.text === "Kept, and changed" &&
              !(drop.id in n)
            );
          },
          { what: "the changes made while away" },
        );
        assert.equal(await p.evaluate(() => window.__sameDocument), true, "the page was not reloaded");
      }
      // They resumed from the last event they had (a replay), not from a fresh snapshot.
      assert.match(server.log(), new RegExp(`stream opened: board=${board.id} .*from=id ${seqBefore}`));

      // And they are live again: a new change shows up at once.
      const fresh = await api(base(), "POST", `/api/boards/${board.id}/notes`, { text: "After the restart", x: 560, y: 260 });
      for (const p of pages) await noteEl(p, fresh.id).waitFor({ timeout: 1000 });
    }));

  it("a stream that goes silent is given up after three missed heartbeats, and the page catches up", () =>
    step(async () => {
      // The pages learn the heartbeat interval from the stream (15 s until they have seen two).
      for (const p of pages) {
        await p.waitForFunction((ms) => window.boardcast.heartbeatMs < 2 * ms, HEARTBEAT_MS, { timeout: 5000 });
      }
      // A frozen server keeps the connection open but sends nothing: only the watchdog can tell.
      server.child.kill("SIGSTOP");
      const t0 = Date.now();
      try {
        for (const p of pages) {
          await p.waitForFunction(() => document.getElementById("status").dataset.state === "reconnecting", null, {
            timeout: 3.5 * HEARTBEAT_MS + 3000,
          });
        }
      } finally {
        server.child.kill("SIGCONT");
      }
      const elapsed = Date.now() - t0;
      assert.ok(elapsed >= 3 * HEARTBEAT_MS - 200, `gave up after only ${elapsed} ms`);
      const note = await api(base(), "POST", `/api/boards/${board.id}/notes`, { text: "After the freeze", x: 300, y: 420 });
      for (const p of pages) {
        await waitLive(p, 20_000);
        await noteEl(p, note.id).waitFor({ timeout: 5000 });
      }
    }));

  it("a 503 from the stream (EventSource gives up for good) is retried by the page", () =>
    step(async () => {
      // A page with its own stream (no SharedWorker): Playwright cannot route what a shared
      // worker requests. The worker's client retries the same way (boardcast-client.js).
      const context = await browser.newContext();
      await context.addInitScript(() => delete window.SharedWorker);
      const page = await context.newPage();
      await page.goto(`${base()}/b/${board.id}`);
      await waitLive(page);
      await page.evaluate(() => (window.__sameDocument = true));
      let refused = 0;
      await page.route("**/events?*", (route) => {
        refused += 1;
        return route.fulfill({
          status: 503,
          headers: { "Content-Type": "application/json", "Retry-After": "1" },
          body: JSON.stringify({ error: { code: "unavailable", message: "at capacity" } }),
        });
      });
      // Cut the current stream: the page reconnects into the 503s.
      await page.evaluate(() => window.dispatchEvent(new Event("online")));
      await eventually(() => refused >= 2, { ms: 10_000, what: "two refused attempts" });
      assert.equal(await status(page), "reconnecting");
      const note = await api(base(), "POST", `/api/boards/${board.id}/notes`, { text: "Behind the 503", x: 560, y: 420 });
      await page.unroute("**/events?*");
      await waitLive(page, 15_000);
      await noteEl(page, note.id).waitFor({ timeout: 5000 });
      assert.equal(await page.evaluate(() => window.__sameDocument), true);
      await context.close();
    }));

  it("a board deleted while open tells the viewers so", () =>
    step(async () => {
      await api(base(), "DELETE", `/api/boards/${board.id}`);
      for (const p of pages) {
        await p.locator("#gone-overlay").waitFor({ state: "visible", timeout: 2000 });
        assert.equal(await p.locator("#gone-text").textContent(), "This board was deleted.");
        assert.equal(await status(p), "gone");
      }
    }));
});
