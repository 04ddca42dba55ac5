// The pages themselves: the board list, a board that opens under a generated name, a missing board, the token
// from the fragment, and the headers the pages are served with.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { api, eventually, openPage, presence, startStack, unexpectedProblems, waitLive } from "./harness.mjs";

const CSP =
  "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

describe("the pages", () => {
  let stack;
  let server;
  let browser;

  before(async () => {
    stack = await startStack("pages");
    ({ server, browser } = stack);
  });

  after(async () => {
    await stack?.stop();
  });

  it("are served with their types and security headers; unknown static files are 404", async () => {
    const board = "6f1c2b7e-0000-4000-8000-000000000000";
    for (const [route, type] of [
      ["/", "text/html; charset=utf-8"],
      [`/b/${board}`, "text/html; charset=utf-8"],
      ["/static/app.css", "text/css"],
      ["/static/board.js", "text/javascript"],
      ["/static/index.js", "text/javascript"],
      ["/static/api.js", "text/javascript"],
    ]) {
      const res = await fetch(`${server.base}${route}`);
      assert.equal(res.status, 200, route);
      assert.ok(res.headers.get("content-type").startsWith(type), `${route}: ${res.headers.get("content-type")}`);
      assert.equal(res.headers.get("content-security-policy"), CSP, route);
      assert.equal(res.headers.get("x-content-type-options"), "nosniff", route);
      assert.equal(res.headers.get("referrer-policy"), "no-referrer", route);
      assert.equal(res.headers.get("cache-control"), "no-cache", route);
      const etag = res.headers.get("etag");
      assert.ok(etag, route);
      const again = await fetch(`${server.base}${route}`, { headers: { "If-None-Match": etag } });
      assert.equal(again.status, 304, `${route} revalidates`);
    }
    for (const route of ["/static/nope.js", "/static/..%2FCargo.toml", "/static/%2e%2e%2fCargo.toml", "/static/index.html"]) {
      const res = await fetch(`${server.base}${route}`);
      assert.equal(res.status, 404, route);
    }
  });

  it("/ lists boards newest first and creates one by title", async () => {
    const older = await api(server.base, "POST", "/api/boards", { title: "Older board" });
    const newer = await api(server.base, "POST", "/api/boards", { title: "Newer board" });
    const page = await openPage(browser, `${server.base}/`);
    await page.locator(".board-item").nth(1).waitFor();
    const ids = await page.locator(".board-item").evaluateAll((els) => els.map((el) => el.dataset.id));
    assert.ok(ids.indexOf(newer.id) < ids.indexOf(older.id), "newest first");
    assert.equal(await page.locator(`.board-item[data-id="${newer.id}"] a`).getAttribute("href"), `/b/${newer.id}`);

    await page.getByLabel("Board title").fill("Made in the browser");
    await page.getByRole("button", { name: "Create board" }).click();
    await page.waitForURL(/\/b\/[0-9a-f-]{36}$/);
    const id = page.url().split("/b/")[1];
    const made = await api(server.base, "GET", `/api/boards/${id}`);
    assert.equal(made.title, "Made in the browser");
    // No name remembered yet: the board opens at once under a generated friendly name
    // (nothing is asked first), which the header offers to change.
    await waitLive(page);
    assert.equal(await page.locator("#name-overlay").isVisible(), false, "no name is asked first");
    assert.equal(await page.locator("#board-title").textContent(), "Made in the browser");
    assert.ok(await page.locator("#empty-hint").isVisible(), "an empty board says how to start");
    const generated = await page.evaluate(() => localStorage.getItem("boardcast.name"));
    assert.match(generated, /^[A-Z][a-z]+ [A-Z][a-z]+$/, "a friendly name, remembered");
    await eventually(async () => (await presence(page)).some((v) => v.name === generated), {
      what: "the generated name in presence",
    });
    await page.locator("#me").click();
    await page.getByLabel("Your name", { exact: true }).fill("Dana");
    await page.getByRole("button", { name: "Save name" }).click();
    await eventually(async () => (await presence(page)).some((v) => v.name === "Dana"), { what: "Dana in presence" });

    // Remembered: the next visit does not ask again.
    await page.goto(`${server.base}/b/${older.id}`);
    await waitLive(page);
    assert.equal(await page.locator("#name-overlay").isVisible(), false);
    await eventually(async () => (await presence(page)).some((v) => v.name === "Dana"), { what: "Dana again" });
    assert.deepEqual(unexpectedProblems(page), [], "no console errors (CSP violations would show here)");
    await page.context().close();
  });

  it("a board that does not exist says so", async () => {
    const page = await openPage(browser, `${server.base}/b/0b7f9a44-1111-4222-8333-444455556666`, { name: "Eve" });
    await page.locator("#gone-overlay").waitFor({ state: "visible", timeout: 10_000 });
    assert.equal(await page.locator("#gone-text").textContent(), "There is no board at this address.");
    await page.goto(`${server.base}/b/not-a-board`);
    await page.locator("#gone-overlay").waitFor({ state: "visible" });
    assert.equal(await page.locator("#gone-text").textContent(), "This address does not name a board.");
    await page.context().close();
  });

  it("takes a token from the fragment, hides it, and sends it with every call", async () => {
    const board = await api(server.base, "POST", "/api/boards", { title: "With a token" });
    // An unsigned-looking token whose claims carry a name (auth is off on this server, so it
    // is not checked; the page must still send it as the contract says).
    const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
    const token = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub: "fay", name: "Fay", exp: 4102444800 })}.sig`;
    const context = await browser.newContext();
    // The page's own stream (no SharedWorker): Playwright sees no request a shared worker
    // makes, and the worker's stream takes the token from the same place (board-stream.js).
    await context.addInitScript(() => delete window.SharedWorker);
    const page = await context.newPage();
    const seen = { bearer: 0, streamToken: 0, other: 0 };
    page.on("request", (req) => {
      const url = new URL(req.url());
      if (!url.pathname.startsWith("/api/")) return;
      if (url.pathname.endsWith("/events")) {
        if (url.searchParams.get("access_token") === token) seen.streamToken += 1;
        else seen.other += 1;
      } else if (req.headers().authorization === `Bearer ${token}`) seen.bearer += 1;
      else seen.other += 1;
    });
    await page.goto(`${server.base}/b/${board.id}#token=${token}`);
    await waitLive(page);
    assert.equal(new URL(page.url()).hash, "", "the token is removed from the address");
    assert.equal(await page.evaluate(() => sessionStorage.getItem("boardcast.token")), token);
    assert.equal(await page.locator("#name-overlay").isVisible(), false, "the token's name is used");
    const created = page.waitForResponse((r) => r.url().endsWith("/notes") && r.request().method() === "POST");
    await page.locator("#new-note").click();
    assert.equal((await created).status(), 201);
    assert.ok(seen.streamToken >= 1, "the stream carries access_token");
    assert.ok(seen.bearer >= 1, "fetch carries Authorization: Bearer");
    assert.equal(seen.other, 0, "no API call went out without the token");
    await eventually(async () => (await presence(page)).some((v) => v.name === "Fay"), { what: "Fay in presence" });
    await context.close();
  });
});
