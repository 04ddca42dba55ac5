// The client library (web/boardcast-client.js) in Node against the real server: it folds a
// snapshot and concurrent changes into exactly the server's board, resumes across a server
// kill and restart with nothing lost or doubled, and keeps its signals within the rate.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

import { EventSource } from "eventsource";

import { openBoard } from "../../web/boardcast-client.js";
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
});
