// The API reference at /docs: Redoc, served from this origin, renders the OpenAPI document
// with every route, under the page's own CSP and with no request leaving the server.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { startStack } from "./harness.mjs";

describe("the API reference", () => {
  let stack;
  let server;
  let browser;

  before(async () => {
    stack = await startStack("docs");
    ({ server, browser } = stack);
  });

  after(async () => {
    await stack?.stop();
  });

  it("renders every route of /api/openapi.json, offline and within its CSP", async () => {
    const spec = await (await fetch(`${server.base}/api/openapi.json`)).json();
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    // Offline: anything not asked of this server is refused and recorded.
    const outside = [];
    const origin = new URL(server.base).origin;
    await context.route("**/*", (route) => {
      const url = route.request().url();
      if (url.startsWith(origin) || url.startsWith("blob:") || url.startsWith("data:")) {
        return route.continue();
      }
      outside.push(url);
      return route.abort();
    });
    await context.addInitScript(() => {
      window.cspViolations = [];
      document.addEventListener("securitypolicyviolation", (e) =>
        window.cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`),
      );
    });
    const page = await context.newPage();
    const problems = [];
    page.on("console", (msg) => msg.type() === "error" && problems.push(msg.text()));
    page.on("pageerror", (err) => problems.push(`pageerror: ${err.message}`));

    const response = await page.goto(`${server.base}/docs`);
    assert.equal(response.status(), 200);
    assert.match(response.headers()["content-security-policy"], /script-src 'self';/);
    await page.waitForSelector("body[data-docs]", { timeout: 30_000 });
    assert.equal(await page.getAttribute("body", "data-docs"), "ready");

    const text = await page.textContent("body");
    assert.ok(text.includes(spec.info.title), "the title is shown");
    const paths = Object.keys(spec.paths);
    assert.ok(paths.length >= 10, `the document has the routes (${paths.length})`);
    for (const route of paths) {
      assert.ok(text.includes(route), `${route} is on the page`);
    }
    for (const item of Object.values(spec.paths)) {
      for (const op of Object.values(item)) {
        assert.ok(text.includes(op.summary), `the operation "${op.summary}" is on the page`);
      }
    }

    // Redoc 2.5.4 always asks its CDN for a small logo in the menu's footer (and hides the
    // image when it fails): the page's CSP refuses it, so nothing leaves the server. That
    // one refusal is expected; any other is a failure.
    const LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg";
    const violations = await page.evaluate(() => window.cspViolations);
    assert.deepEqual(
      violations.filter((v) => v !== `img-src ${LOGO}`),
      [],
      "no CSP violation but Redoc's logo",
    );
    assert.deepEqual(outside, [], "no request leaves the server");
    assert.deepEqual(
      problems.filter((p) => !p.includes(LOGO)),
      [],
      "no console errors but the refused logo",
    );
    await context.close();
  });

  it("is linked from the board list", async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${server.base}/`);
    await page.click('a[href="/docs"]');
    await page.waitForURL(`${server.base}/docs`);
    await page.waitForSelector("body[data-docs=ready]", { timeout: 30_000 });
    await context.close();
  });
});
