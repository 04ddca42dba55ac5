// A server with auth on (JWT_SECRET set, as a deploy from app.json has it): a page opened
// without a token says in plain words how to get in, and the command it shows really mints a
// token that opens the board for two people.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { ROOT, api, eventually, presence, startStack, unexpectedProblems, waitLive } from "./harness.mjs";

const BIN = process.env.BOARDCAST_BIN || path.join(ROOT, "target/release/boardcast");
const SECRET = randomBytes(32).toString("hex");

/** Runs `boardcast token ARGS…` with the server's secret; returns the token. */
function mint(args) {
  return execFileSync(BIN, ["token", ...args], {
    env: { ...process.env, JWT_SECRET: SECRET },
    encoding: "utf8",
  }).trim();
}

/** The arguments after `boardcast token` in the command the page shows (quotes honoured). */
function tokenArgs(command) {
  const tail = command.split(" token ")[1];
  return [...tail.matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2]);
}

async function fresh(browser, url) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.problems = [];
  page.on("pageerror", (err) => page.problems.push(`pageerror: ${err.message}`));
  await page.goto(url);
  return page;
}

describe("sign-in help on a server with auth on", () => {
  let stack;
  let server;
  let browser;
  let board;

  before(async () => {
    stack = await startStack("signin", { env: { JWT_SECRET: SECRET } });
    ({ server, browser } = stack);
    const owner = mint(["--sub", "owner", "--name", "Owner"]);
    board = await api(server.base, "POST", "/api/boards", { title: "Team board" }, { Authorization: `Bearer ${owner}` });
  });

  after(async () => {
    await stack?.stop();
  });

  it("/ without a token explains how to get in, and its command and link work", async () => {
    const page = await fresh(browser, `${server.base}/`);
    const help = page.locator("#signin-overlay");
    await help.waitFor({ state: "visible", timeout: 10_000 });
    assert.equal(await page.locator("#signin-heading").textContent(), "You need an access link");
    assert.match(await page.locator("#signin-text").textContent(), /personal link that ends in #token=/);
    const command = await page.locator("#signin-command").textContent();
    assert.match(command, /^heroku run -a YOUR-APP --no-tty -- \.\/target\/release\/boardcast token --sub /);
    const link = await page.locator("#signin-link").textContent();
    assert.equal(link, `${server.base}/#token=THE-TOKEN`);
    const body = await page.locator("body").innerText();
    // \b: the page shows the server's address, and a random port such as 44011 holds "401".
    assert.doesNotMatch(body, /unauthorized|\b401\b/, "no error code on the page");
    assert.equal(await page.locator(".toast").count(), 0, "no error toast under the help");
    assert.equal(
      await page.evaluate(async () => (await import("/static/signin.js")).herokuAppName("team-board-0a1b2c3d4e5f.herokuapp.com")),
      "team-board",
    );

    // What the help says to run, run here (the part after `heroku run … --`), then the link.
    const token = mint(tokenArgs(command));
    await page.goto(link.replace("THE-TOKEN", token));
    await page.locator(`.board-item[data-id="${board.id}"]`).waitFor({ timeout: 10_000 });
    assert.equal(await help.count(), 0, "no help once the token works");
    assert.deepEqual(unexpectedProblems(page), []);
    await page.context().close();
  });

  it("a board without a token shows the help before asking for a name", async () => {
    const page = await fresh(browser, `${server.base}/b/${board.id}`);
    await page.locator("#signin-overlay").waitFor({ state: "visible", timeout: 10_000 });
    assert.equal(await page.locator("#name-overlay").isVisible(), false);
    assert.equal(await page.locator("#signin-link").textContent(), `${server.base}/b/${board.id}#token=THE-TOKEN`);
    await page.context().close();
  });

  it("a refused token is told apart from a missing one", async () => {
    const other = execFileSync(BIN, ["token", "--sub", "mallory"], {
      env: { ...process.env, JWT_SECRET: "another server's secret" },
      encoding: "utf8",
    }).trim();
    const page = await fresh(browser, `${server.base}/b/${board.id}#token=${other}`);
    await page.locator("#signin-overlay").waitFor({ state: "visible", timeout: 10_000 });
    assert.match(await page.locator("#signin-text").textContent(), /expired, or it was made for another server/);
    await page.context().close();
  });

  it("two people with their own links are live on the board together", async () => {
    const ana = await fresh(browser, `${server.base}/b/${board.id}#token=${mint(["--sub", "ana", "--name", "Ana"])}`);
    const ben = await fresh(browser, `${server.base}/b/${board.id}#token=${mint(["--sub", "ben", "--name", "Ben"])}`);
    await waitLive(ana);
    await waitLive(ben);
    for (const page of [ana, ben]) {
      assert.equal(await page.locator("#signin-overlay").count(), 0);
      await eventually(async () => {
        const names = (await presence(page)).map((v) => v.name);
        return names.includes("Ana") && names.includes("Ben");
      }, { what: "both in presence" });
    }
    await ana.context().close();
    await ben.context().close();
  });
});
