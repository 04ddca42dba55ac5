// Shared setup for the browser tests: a fresh database, the real server binary on a free
// port, Debian's Chromium driven by playwright-core, and small helpers.
//
// Environment (scripts/test sets all three):
//   BOARDCAST_BIN  the release binary
//   DATABASE_URL   an admin connection to a throwaway cluster (database `postgres`)
//   CHROMIUM_BIN   the browser (default /usr/bin/chromium)

import { spawn, execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";

import { chromium } from "playwright-core";

export const HEARTBEAT_MS = 500;
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const SCREENSHOTS = path.join(ROOT, "docs/screenshots");

const BIN = process.env.BOARDCAST_BIN || path.join(ROOT, "target/release/boardcast");
const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-quic",
  "--no-first-run",
  "--disable-component-update",
  "--disable-sync",
  // Several pages share one headless browser: keep their timers running at full speed.
  "--disable-background-timer-throttling",
  "--disable-renderer-backgrounding",
  "--disable-backgrounding-occluded-windows",
];

function adminUrl() {
  const url = process.env.DATABASE_URL;
  if (!url) throw new Error("DATABASE_URL must point at a throwaway cluster (scripts/test sets it)");
  return url;
}

function psql(url, sql) {
  return execFileSync("psql", [url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  });
}

/** A new, empty database on the cluster; returns its URL and a drop(). */
export function createDatabase(prefix = "browser") {
  const admin = adminUrl();
  const name = `${prefix}_${randomBytes(6).toString("hex")}`;
  psql(admin, `CREATE DATABASE ${name}`);
  const u = new URL(admin);
  u.pathname = `/${name}`;
  return {
    name,
    url: u.toString(),
    drop() {
      try {
        psql(admin, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } catch (e) {
        console.error(`could not drop ${name}: ${e.message}`);
      }
    },
  };
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export function migrate(databaseUrl) {
  execFileSync(BIN, ["migrate"], {
    env: { ...process.env, DATABASE_URL: databaseUrl, RUST_LOG: "warn" },
    stdio: ["ignore", "pipe", "pipe"],
  });
}

/**
 * Starts `boardcast serve` and waits for /healthz. The log is kept in memory and printed
 * when a test fails (see `server.log`).
 */
export async function startServer({ databaseUrl, port, env = {} }) {
  const child = spawn(BIN, ["serve"], {
    env: {
      ...process.env,
      DATABASE_URL: databaseUrl,
      PORT: String(port),
      HEARTBEAT_INTERVAL: `${HEARTBEAT_MS}ms`,
      RUST_LOG: "info",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines = [];
  const keep = (chunk) => {
    for (const line of chunk.toString().split("\n")) if (line) lines.push(line);
    if (lines.length > 4000) lines.splice(0, lines.length - 4000);
  };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) {
      throw new Error(`boardcast exited with ${child.exitCode} before it was up:\n${lines.join("\n")}`);
    }
    try {
      const res = await fetch(`${base}/healthz`);
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`boardcast did not answer /healthz within 30 s:\n${lines.join("\n")}`);
    }
    await sleep(50);
  }
  return {
    base,
    port,
    child,
    log: () => lines.join("\n"),
    /** SIGTERM (the way Heroku stops a dyno); resolves with the exit status. */
    async stop(signal = "SIGTERM") {
      if (child.exitCode !== null || child.signalCode !== null) return exited;
      child.kill(signal);
      const timer = setTimeout(() => child.kill("SIGKILL"), 35_000);
      const result = await exited;
      clearTimeout(timer);
      return result;
    },
  };
}

/**
 * What every browser test file starts with: a throwaway database (named after `name`),
 * migrated; the server on a free port with `env`; and Chromium. `stop()` closes them in
 * reverse (printing the server's log when BROWSER_TEST_LOG is set) and returns the server's
 * exit status, `{code, signal}`. If a step fails, what was already started is closed.
 * @param {string} name
 * @param {{env?: Record<string, string>}} [options]
 */
export async function startStack(name, { env = {} } = {}) {
  const db = createDatabase(name);
  let server = null;
  let browser = null;
  const stop = async () => {
    await browser?.close();
    const status = await server?.stop();
    if (server && process.env.BROWSER_TEST_LOG) console.log(server.log());
    db.drop();
    return status;
  };
  try {
    migrate(db.url);
    server = await startServer({ databaseUrl: db.url, port: await freePort(), env });
    browser = await launchBrowser();
  } catch (e) {
    await stop();
    throw e;
  }
  return { server, browser, stop };
}

export async function launchBrowser() {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
}

/**
 * A page in its own context (own storage: another person), with the viewer's name already
 * remembered unless `name` is null. Console errors and CSP violations are collected in
 * `page.problems`.
 */
export async function openPage(browser, url, { name, viewport = { width: 1280, height: 800 } } = {}) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
  if (name) {
    await context.addInitScript((n) => {
      try {
        if (!localStorage.getItem("boardcast.name")) localStorage.setItem("boardcast.name", n);
      } catch {
        // about:blank has no storage
      }
    }, name);
  }
  if (process.env.BOARDCAST_WEB_DIR) {
    // Development only: serve /static/ from a web/ directory on disk, so a change to the
    // page needs no release build. Tests that count must run without it (the binary's files).
    const dir = process.env.BOARDCAST_WEB_DIR;
    await context.route("**/static/*", async (route) => {
      const name = new URL(route.request().url()).pathname.split("/").pop();
      for (const file of [path.join(dir, name), path.join(dir, "vendor", name)]) {
        if (existsSync(file)) {
          const type = name.endsWith(".css") ? "text/css" : name.endsWith(".svg") ? "image/svg+xml" : "text/javascript";
          return route.fulfill({ body: readFileSync(file), contentType: type });
        }
      }
      return route.continue();
    });
  }
  const page = await context.newPage();
  page.problems = [];
  page.on("console", (msg) => {
    if (msg.type() === "error") page.problems.push(msg.text());
  });
  page.on("pageerror", (err) => page.problems.push(`pageerror: ${err.message}`));
  await page.goto(url);
  return page;
}

/** Errors a page logged, minus the expected ones (a stream cut while a server restarts). */
export function unexpectedProblems(page) {
  return page.problems.filter(
    (p) =>
      !/ERR_CONNECTION_REFUSED|ERR_EMPTY_RESPONSE|ERR_INCOMPLETE_CHUNKED_ENCODING|net::ERR_|503|Failed to load resource/.test(
        p,
      ),
  );
}

/** Calls the API from the test (another client, not a page). */
export async function api(base, method, route, body, headers = {}) {
  const res = await fetch(`${base}${route}`, {
    method,
    headers: { ...(body === undefined ? {} : { "Content-Type": "application/json" }), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (!res.ok) throw new Error(`${method} ${route} answered ${res.status}: ${text}`);
  return data;
}

/**
 * Runs a test step; when it fails, adds to the error what the pages logged (`pages()`:
 * label -> page) and the tail of the server's log.
 */
export async function explainFailure(fn, pages, serverLog, lines = 40) {
  try {
    await fn();
  } catch (e) {
    for (const [label, page] of Object.entries(pages())) {
      e.message += `\n--- ${label} problems: ${JSON.stringify(page?.problems)}`;
    }
    e.message += `\n--- server log (tail):\n${serverLog().split("\n").slice(-lines).join("\n")}`;
    throw e;
  }
}

/** Polls `fn` until it returns a truthy value or `ms` passes; returns the value. */
export async function eventually(fn, { ms = 5000, every = 25, what = "condition" } = {}) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    }
    await sleep(every);
  }
}

/** The element of one note on a page. */
export function noteEl(page, id) {
  return page.locator(`.note[data-id="${id}"]`);
}

/** What a page shows of every note: id -> {text, x, y, width, height, color}. */
export function shownNotes(page) {
  return page.evaluate(() => {
    const out = {};
    for (const el of document.querySelectorAll(".note")) {
      out[el.dataset.id] = {
        text: el.querySelector("textarea").value,
        x: parseFloat(el.style.left),
        y: parseFloat(el.style.top),
        width: parseFloat(el.style.width),
        height: parseFloat(el.style.height),
        color: el.dataset.color,
        version: Number(el.dataset.version),
      };
    }
    return out;
  });
}

/** Names in the page's presence list, with counts: [{name, count}]. */
export function presence(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll("#presence .viewer[data-name]")].map((li) => ({
      name: li.dataset.name,
      count: Number(li.dataset.count),
    })),
  );
}

export function status(page) {
  return page.evaluate(() => document.getElementById("status").dataset.state);
}

export function ensureScreenshotDir() {
  mkdirSync(SCREENSHOTS, { recursive: true });
}

/** Waits until the page's stream is live (its status says so and a snapshot is applied). */
export async function waitLive(page, ms = 10_000) {
  await page.waitForFunction(
    () => document.getElementById("status").dataset.state === "live" && window.boardcast.seq !== null,
    null,
    { timeout: ms },
  );
}
