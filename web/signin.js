// When the server has auth on and this tab has no token (or one it refuses): say how to get
// in, in plain words, instead of an error code. Both pages use it; it builds its own panel
// so neither page's HTML has to carry it.

import { ApiError, api, token } from "./api.js";

/**
 * Asks the API whether this tab may in (one `GET /api/boards?limit=1`). Resolves true when
 * it may, or when the server cannot be reached (the page's own retries cover that);
 * resolves false after showing the sign-in help when the answer is 401.
 */
export async function checkSignIn() {
  try {
    await api("GET", "/api/boards?limit=1");
    return true;
  } catch (e) {
    return !signInNeeded(e);
  }
}

/** Shows the sign-in help when `e` is a 401; returns whether it did. */
export function signInNeeded(e) {
  if (!(e instanceof ApiError) || e.status !== 401) return false;
  showSignInHelp();
  return true;
}

/**
 * The Heroku app's name from a `*.herokuapp.com` host (new apps' hosts end in a dash and
 * 12 hex digits that are not part of the name), else a placeholder.
 */
export function herokuAppName(host = location.hostname) {
  const m = /^(.+?)(?:-[0-9a-f]{12})?\.herokuapp\.com$/.exec(host);
  return m ? m[1] : "YOUR-APP";
}

/** The command that mints a token on a Heroku deploy (the README's Heroku section). */
export function mintCommand(app = herokuAppName()) {
  return `heroku run -a ${app} --no-tty -- ./target/release/boardcast token --sub you --name "Your Name"`;
}

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function showSignInHelp() {
  if (document.getElementById("signin-overlay")) return;
  const link = `${location.origin}${location.pathname}#token=`;
  const lead = token()
    ? "The link you opened has expired, or it was made for another server. Ask whoever runs this boardcast for a new one."
    : "This boardcast is private: everyone opens it with a personal link that ends in #token=…. Ask whoever runs it to send you yours.";
  const card = el(
    "section",
    { className: "card signin-card", tabIndex: -1 },
    el("h2", { id: "signin-heading", textContent: "You need an access link" }),
    el("p", { id: "signin-text", textContent: lead }),
    el("h3", { textContent: "Did you deploy it yourself?" }),
    el("p", { textContent: "Make a link for yourself (and one for each teammate, with their own name) on your computer:" }),
    el("pre", {}, el("code", { id: "signin-command", textContent: mintCommand() })),
    el("p", { textContent: "It prints a token. Open this address with the token at the end:" }),
    el("pre", {}, el("code", { id: "signin-link", textContent: `${link}THE-TOKEN` })),
  );
  card.setAttribute("role", "alertdialog");
  card.setAttribute("aria-labelledby", "signin-heading");
  card.setAttribute("aria-describedby", "signin-text");
  const overlay = el("div", { id: "signin-overlay", className: "overlay signin-overlay" }, card);
  document.body.append(overlay);
  card.focus();
  // Pasting the link into the address bar of this same page only changes the fragment,
  // which does not reload it: start over, so the page takes the token as on any load.
  window.addEventListener("hashchange", () => {
    if (/(^#|&)token=/.test(location.hash)) location.reload();
  });
}
