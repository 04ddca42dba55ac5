// The board list: newest first, a form to create one, links to /b/{id}.

import { adoptTokenFromFragment, api, describeError, relativeTime, toast } from "./api.js";
import { signInNeeded } from "./signin.js";

adoptTokenFromFragment();

const list = document.getElementById("boards");
const status = document.getElementById("boards-status");
const more = document.getElementById("more");
const form = document.getElementById("create-form");
const titleInput = document.getElementById("board-title");
const refresh = document.getElementById("refresh");

let next = null;
let loading = false;

function boardItem(board) {
  const li = document.createElement("li");
  li.className = "board-item";
  li.dataset.id = board.id;
  const a = document.createElement("a");
  a.href = `/b/${encodeURIComponent(board.id)}`;
  a.className = "board-link";
  const title = document.createElement("span");
  title.className = "board-title";
  title.textContent = board.title;
  const meta = document.createElement("span");
  meta.className = "board-meta";
  const time = document.createElement("time");
  time.dateTime = board.updated_at || board.created_at;
  time.textContent = `updated ${relativeTime(board.updated_at || board.created_at)}`;
  time.title = new Date(board.updated_at || board.created_at).toLocaleString();
  meta.append(time);
  a.append(title, meta);
  li.append(a);
  return li;
}

async function load(reset) {
  if (loading) return;
  loading = true;
  if (reset) {
    next = null;
    status.textContent = "Loading boards…";
  }
  try {
    const query = new URLSearchParams({ limit: "50" });
    if (!reset && next) query.set("cursor", next);
    const data = await api("GET", `/api/boards?${query}`);
    if (reset) list.replaceChildren();
    for (const board of data.boards) list.append(boardItem(board));
    next = data.next;
    more.hidden = !next;
    status.textContent =
      list.children.length === 0
        ? "No boards yet. Create the first one above."
        : `${list.children.length}${next ? "+" : ""} board${list.children.length === 1 ? "" : "s"}, newest first.`;
  } catch (e) {
    status.textContent = "The boards could not be loaded.";
    if (!signInNeeded(e)) toast(describeError(e), "error");
  } finally {
    loading = false;
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const title = titleInput.value.trim();
  if (!title) {
    toast("Give the board a title first.", "error");
    titleInput.focus();
    return;
  }
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const board = await api("POST", "/api/boards", { body: { title } });
    titleInput.value = "";
    location.assign(`/b/${encodeURIComponent(board.id)}`);
  } catch (e) {
    toast(describeError(e), "error");
  } finally {
    button.disabled = false;
  }
});

more.addEventListener("click", () => load(false));
refresh.addEventListener("click", () => load(true));

load(true);
