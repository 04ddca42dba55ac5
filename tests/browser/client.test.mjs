// The client library (web/boardcast-client.js) in Node against the real server: it folds a
// snapshot and concurrent changes into exactly the server's board, resumes across a server
// kill and restart with nothing lost or doubled, and keeps its signals within the rate; and
// its many-boards client: one stream for several boards, each folded exactly, the set
// changed with the cursor and the session (no presence flicker), a deleted or missing board.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

import { EventSource } from "eventsource";

import { openBoard, openBoards } from "../../web/boardcast-client.js";
import { api, createDatabase, eventually, freePort, migrate, startServer } from "./harness.mjs";

/** The board as the server has it now: {title, seq, notes by id}. */
async function serverBoard(base, id) {
  const b = await api(base, "GET", `/api/boards/${id}`);
  return { title: b.title, seq: b.seq, notes: Object.fromEntries(b.notes.map((n) => [n.id, n])) };
}

function clientBoard(client) {
  return {
    title: client.state.board.title,
    seq: client.state.seq,
    notes: Object.fromEntries(client.state.notes),
  };
}

describe("the client library", () => {
  let db;
  let server;
  let port;
  const env = { WRITE_RATE_LIMIT: "0", SIGNAL_RATE_LIMIT: "10" };

  before(async () => {
    db = createDatabase("client");
    migrate(db.url);
    port = await freePort();
    server = await startServer({ databaseUrl: db.url, port, env });
  });

  after(async () => {
    await server?.stop();
    db?.drop();
  });

  it("folds a snapshot and 200 concurrent changes into exactly the final board", async () => {
    const board = await api(server.base, "POST", "/api/boards", { title: "Fold" });
    const first = [];
    for (let i = 0; i < 5; i++) {
      first.push(await api(server.base, "POST", `/api/boards/${board.id}/notes`, { text: `n${i}`, x: i, y: i }));
    }
    const changes = [];
    let snapshots = 0;
    const client = openBoard({
      board: board.id,
      baseUrl: server.base,
      name: "Folder",
      EventSource,
      onSnapshot: () => (snapshots += 1),
      onChange: (event) => changes.push(event.seq),
    });
    try {
      await eventually(() => client.state.seq === 5, { what: "the snapshot" });
      const writes = [];
      for (let i = 0; i < 200; i++) {
        const note = first[i % first.length];
        const path = `/api/boards/${board.id}`;
        if (i % 4 === 0) writes.push(api(server.base, "POST", `${path}/notes`, { text: `new ${i}`, x: i, y: -i }));
        else if (i % 4 === 1) writes.push(api(server.base, "PATCH", `${path}/notes/${note.id}`, { x: i * 3 }));
        else if (i % 4 === 2) writes.push(api(server.base, "PATCH", `${path}/notes/${note.id}`, { text: `edit ${i}` }));
        else if (i === 199) writes.push(api(server.base, "PATCH", path, { title: "Folded" }));
        else writes.push(api(server.base, "PATCH", `${path}/notes/${note.id}`, { color: "#bbf7d0" }));
      }
      await Promise.all(writes);
      const expected = await serverBoard(server.base, board.id);
      assert.equal(expected.seq, 205);
      await eventually(() => client.state.seq === expected.seq, { ms: 10_000, what: "every change folded in" });
      assert.deepEqual(clientBoard(client), expected);
      assert.equal(snapshots, 1);
      assert.deepEqual(
        changes,
        Array.from({ length: 200 }, (_, i) => i + 6),
        "each change once, in order",
      );
    } finally {
      client.close();
    }
  });

  it("resumes after the server is killed and restarted: nothing lost, nothing twice", async () => {
    const board = await api(server.base, "POST", "/api/boards", { title: "Resume" });
    const seen = [];
    let snapshots = 0;
    const client = openBoard({
      board: board.id,
      baseUrl: server.base,
      name: "Resumer",
      EventSource,
      heartbeatMs: 500,
      onSnapshot: () => (snapshots += 1),
      onChange: (event) => seen.push(event.seq),
    });
    try {
      await eventually(() => client.status === "live" && client.state.seq === 0, { what: "live" });
      for (let i = 0; i < 10; i++) {
        await api(server.base, "POST", `/api/boards/${board.id}/notes`, { text: `before ${i}`, x: 0, y: i });
      }
      await eventually(() => client.state.seq === 10, { what: "the first ten" });

      await server.stop("SIGKILL");
      await sleep(300);
      assert.notEqual(client.status, "live", "the client noticed");
      server = await startServer({ databaseUrl: db.url, port, env });
      for (let i = 0; i < 10; i++) {
        await api(server.base, "POST", `/api/boards/${board.id}/notes`, { text: `after ${i}`, x: 1, y: i });
      }
      await eventually(() => client.state.seq === 20, { ms: 20_000, what: "the ten written while it was away" });
      assert.deepEqual(
        seen,
        Array.from({ length: 20 }, (_, i) => i + 1),
      );
      assert.equal(snapshots, 1, "resumed by replay, not by a new snapshot");
      assert.deepEqual(clientBoard(client), await serverBoard(server.base, board.id));
    } finally {
      client.close();
    }
  });

  it("sends signals within the server's rate, the latest position last", async () => {
    const board = await api(server.base, "POST", "/api/boards", { title: "Signals" });
    const got = [];
    const echoes = [];
    const sender = openBoard({
      board: board.id,
      baseUrl: server.base,
      name: "Mover",
      EventSource,
      signalsPerSecond: 8,
      onSignal: (s) => echoes.push(s),
    });
    const watcher = openBoard({
      board: board.id,
      baseUrl: server.base,
      name: "Watcher",
      EventSource,
      onSignal: (s) => got.push(s),
    });
    try {
      await eventually(() => sender.you && watcher.you, { what: "both open" });
      const started = Date.now();
      for (let x = 0; x <= 300; x++) {
        sender.signal("cursor", { x, y: 1 });
        await sleep(5);
      }
      const seconds = (Date.now() - started) / 1000;
      await eventually(() => got.some((s) => s.data.x === 300), { ms: 5000, what: "the last position" });
      assert.equal(got.at(-1).data.x, 300);
      assert.equal(got.at(-1).viewer.id, sender.you.id);
      assert.equal(got.at(-1).viewer.name, "Mover");
      assert.ok(sender.signalsSent <= Math.ceil(seconds * 8) + 2, `${sender.signalsSent} sent in ${seconds} s`);
      assert.ok(sender.signalsSent >= 5, "it did send");
      const metrics = await (await fetch(`${server.base}/metrics`)).text();
      const refused = metrics
        .split("\n")
        .filter((l) => l.startsWith("boardcast_http_requests_total") && l.includes("/signals") && l.includes('status="429"'));
      assert.deepEqual(refused, [], "no signal was refused");
      // The server sends every signal to the sender's own streams too; the library skips them.
      assert.deepEqual(echoes, [], "a client is not handed its own signals");
    } finally {
      sender.close();
      watcher.close();
    }
  });

  it("many boards on one stream: each board folded exactly, each change once, the cursor right", async () => {
    const boards = [];
    for (const title of ["M1", "M2", "M3"]) boards.push(await api(server.base, "POST", "/api/boards", { title }));
    await api(server.base, "POST", `/api/boards/${boards[1].id}/notes`, { text: "before", x: 0, y: 0 });
    const changes = new Map(boards.map((b) => [b.id, []]));
    const snapshots = [];
    const client = openBoards({
      boards: boards.map((b) => b.id),
      baseUrl: server.base,
      name: "Many",
      EventSource,
      onSnapshot: (board) => snapshots.push(board),
      onChange: (board, event) => changes.get(board).push(event.seq),
    });
    try {
      await eventually(() => client.status === "live" && client.cursor === "0,1,0", { what: "three snapshots" });
      assert.deepEqual(snapshots, boards.map((b) => b.id), "a snapshot each, in the order listed");
      const writes = [];
      for (let i = 0; i < 60; i++) {
        const b = boards[i % 3].id;
        writes.push(api(server.base, "POST", `/api/boards/${b}/notes`, { text: `n${i}`, x: i, y: i }));
      }
      await Promise.all(writes);
      await eventually(() => client.cursor === "20,21,20", { ms: 10_000, what: "every change" });
      for (const b of boards) {
        const server_ = await serverBoard(server.base, b.id);
        const state = client.states.get(b.id);
        assert.deepEqual({ title: state.board.title, seq: state.seq, notes: Object.fromEntries(state.notes) }, server_);
      }
      assert.deepEqual(changes.get(boards[0].id), Array.from({ length: 20 }, (_, i) => i + 1));
      assert.deepEqual(changes.get(boards[1].id), Array.from({ length: 20 }, (_, i) => i + 2));
      assert.equal(client.you.size, 3, "a viewer on each board");
    } finally {
      client.close();
    }
  });

  it("changes its boards by reopening with the cursor and the session: no presence flicker, nothing twice", async () => {
    const [a, b, c] = await Promise.all(
      ["Stay", "Go", "New"].map((title) => api(server.base, "POST", "/api/boards", { title })),
    );
    const announced = [];
    const observer = openBoard({
      board: a.id,
      baseUrl: server.base,
      name: "Observer",
      EventSource,
      onPresence: (u) => u.type !== "list" && announced.push(`${u.type} ${u.viewer?.name}`),
    });
    await eventually(() => observer.you, { what: "the observer in first" });
    const seen = [];
    const snapshots = [];
    const client = openBoards({
      boards: [a.id, b.id],
      baseUrl: server.base,
      name: "Mover",
      EventSource,
      onSnapshot: (board) => snapshots.push(board),
      onChange: (board, event) => seen.push(`${board}:${event.seq}`),
    });
    try {
      await eventually(() => client.status === "live" && client.you.size === 2 && observer.you, { what: "live" });
      await eventually(() => announced.includes("joined Mover"), { what: "the observer sees Mover join" });
      const youOnA = client.you.get(a.id).id;
      await api(server.base, "POST", `/api/boards/${a.id}/notes`, { text: "one", x: 0, y: 0 });
      await eventually(() => client.cursor === "1,0", { what: "the first change" });
      client.setBoards([a.id, c.id]);
      assert.equal(client.cursor, "1,", "b dropped, c not yet delivered");
      await api(server.base, "POST", `/api/boards/${a.id}/notes`, { text: "two", x: 0, y: 0 });
      await eventually(() => client.cursor === "2,0" && client.you.has(c.id), { what: "the new set live" });
      await api(server.base, "POST", `/api/boards/${c.id}/notes`, { text: "c", x: 0, y: 0 });
      await eventually(() => client.cursor === "2,1", { what: "the new board's change" });
      assert.equal(client.you.get(a.id).id, youOnA, "the same viewer on the board that stayed");
      assert.deepEqual(snapshots, [a.id, b.id, c.id], "a snapshot only for the new board");
      assert.deepEqual(
        seen.filter((x) => x.startsWith(a.id)),
        [`${a.id}:1`, `${a.id}:2`],
        "each change of the board that stayed once, none replayed twice",
      );
      assert.deepEqual(seen.filter((x) => x.startsWith(c.id)), [`${c.id}:1`]);
      await sleep(3 * 500); // past the server's hold of b's viewer (two heartbeats)
      assert.deepEqual(announced, ["joined Mover"], "the observer of the board that stayed saw no leave or rejoin");
      const onB = await api(server.base, "GET", `/api/boards/${b.id}/presence`);
      assert.equal(onB.viewers.length, 0, "the dropped board's viewer is gone");
    } finally {
      client.close();
      observer.close();
    }
  });

  it("drops a board that is deleted while streaming, or missing at opening, and goes on with the others", async () => {
    const [a, b] = await Promise.all(["Keep", "Delete"].map((title) => api(server.base, "POST", "/api/boards", { title })));
    const missing = "00000000-0000-4000-8000-000000000000";
    const gone = [];
    const client = openBoards({
      boards: [a.id, missing],
      baseUrl: server.base,
      EventSource,
      onGone: (board, why) => gone.push(`${board === missing ? "missing" : board === b.id ? "b" : board}:${why}`),
    });
    try {
      await eventually(() => client.status === "live" && client.cursor === "0", { ms: 10_000, what: "live without the missing board" });
      assert.deepEqual(gone, ["missing:not_found"]);
      client.add(b.id);
      await eventually(() => client.cursor === "0,0", { what: "b added" });
      await fetch(`${server.base}/api/boards/${b.id}`, { method: "DELETE" });
      await eventually(() => gone.includes("b:deleted"), { what: "b gone" });
      assert.deepEqual(client.boards, [a.id]);
      await api(server.base, "POST", `/api/boards/${a.id}/notes`, { text: "still here", x: 0, y: 0 });
      await eventually(() => client.cursor === "1", { what: "a goes on" });
      assert.equal(client.status, "live");
    } finally {
      client.close();
    }
  });
  it("closes and says why when the stream refuses its parameters (422), instead of retrying forever", async () => {
    const board = await api(server.base, "POST", "/api/boards", { title: "Refused" });
    const refused = [];
    const one = openBoard({
      board: board.id,
      baseUrl: server.base,
      name: "N".repeat(101),
      EventSource,
      onRefused: (message, status) => refused.push({ message, status }),
    });
    const many = openBoards({
      boards: [board.id],
      baseUrl: server.base,
      session: "has space/slash",
      EventSource,
      onRefused: (b, message, status) => refused.push({ board: b, message, status }),
    });
    try {
      await eventually(() => refused.length === 2, { ms: 15_000, what: "both refusals reported" });
      const byName = refused.find((r) => !("board" in r));
      assert.equal(byName.status, 422);
      assert.match(byName.message, /name/);
      const bySession = refused.find((r) => "board" in r);
      assert.equal(bySession.board, null);
      assert.equal(bySession.status, 422);
      assert.match(bySession.message, /session/);
      assert.equal(one.status, "closed");
      assert.equal(many.status, "closed");
      // Closed for good: no retry reports it again.
      await sleep(2_000);
      assert.equal(refused.length, 2);
    } finally {
      one.close();
      many.close();
    }
  });
});
