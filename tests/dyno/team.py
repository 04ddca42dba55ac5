"""Plays a Heroku dyno deployed from app.json, and a team using it (scripts/check-dyno).

    team.py max-connections APP_JSON     print the plan's connection limit (for the cluster)
    team.py run                          the check; reads what scripts/check-dyno exports

The environment is what app.json gives (its "value"s, a fresh secret for each "generator":
"secret"), plus DATABASE_URL, DYNO and PORT, as Heroku sets them; nothing else of this
machine's environment reaches the server. Then:

  1. the Procfile's release line runs (as the release dyno would), then its web line under
     honcho;
  2. the server's one start line names the mode app.json chose and its stream budget;
  3. 15 viewers, each with a token minted by `boardcast token` as `heroku run` would, open
     the same board: all get 200, and every change written meanwhile reaches every one,
     in order, with no gap;
  4. a 16th viewer opens the board and writes at one client's write rate limit: every
     write is accepted and reaches all 16 viewers; past the limit the answer is 429;
  5. the dyno stays within half the plan's connections (a restart overlaps two dynos);
  6. SIGTERM: every stream ends with `retry:`, and the web process exits cleanly within
     Heroku's 30 s.

Only the standard library: the one package the check installs is honcho (pinned).
"""

import http.client
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

# Connections per Heroku Postgres plan (Heroku's plan pages; essential-0 as `heroku pg:info`
# reports it: "6/20 connections"). A plan not listed here stops the check: add it.
PLAN_CONNECTIONS = {
    "heroku-postgresql:essential-0": 20,
    "heroku-postgresql:essential-1": 20,
    "heroku-postgresql:essential-2": 40,
}
VIEWERS = 15
HEROKU_KILL_AFTER = 30.0  # seconds from SIGTERM to SIGKILL on a dyno
TIMEOUT = 20.0


def say(message):
    print(f"check-dyno: {message}", file=sys.stderr, flush=True)


def fail(message):
    say(f"FAILED: {message}")
    sys.exit(1)


def load_app_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def plan_connections(app):
    plans = [a["plan"] if isinstance(a, dict) else a for a in app.get("addons", [])]
    postgres = [p for p in plans if p.startswith("heroku-postgresql")]
    if len(postgres) != 1:
        fail(f"app.json should name one heroku-postgresql add-on, not {plans}")
    if postgres[0] not in PLAN_CONNECTIONS:
        fail(f"unknown plan {postgres[0]}: add its connection limit to PLAN_CONNECTIONS")
    return postgres[0], PLAN_CONNECTIONS[postgres[0]]


def app_env(app):
    """The config vars a deploy from app.json gets."""
    env = {}
    for name, spec in app.get("env", {}).items():
        if isinstance(spec, str):
            env[name] = spec
        elif "value" in spec:
            env[name] = str(spec["value"])
        elif spec.get("generator") == "secret":
            env[name] = secrets.token_hex(32)
        elif spec.get("required", True):
            fail(f"app.json's {name} is required but has no value or generator")
    return env


class Dyno:
    """The web process under honcho, and what it logs."""

    def __init__(self, root, honcho, env, port, log_path):
        self.root, self.env, self.port = root, env, port
        self.log_path = log_path
        self.log = open(log_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen(
            [honcho, "start", "--env", "/dev/null", "--procfile", "Procfile",
             "--port", str(port), "web"],
            cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )

    def text(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def request(self, method, path, token=None, body=None, forwarded=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if forwarded:
            headers["X-Forwarded-For"] = forwarded
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        conn.close()
        payload = json.loads(raw) if raw else None
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload


class Viewer(threading.Thread):
    """One EventSource-like client: opens the board's stream with ?access_token= (as the
    page does) and records every event until the server ends the stream."""

    def __init__(self, port, board, token, forwarded):
        super().__init__(daemon=True)
        self.port, self.board, self.token, self.forwarded = port, board, token, forwarded
        self.status = None
        self.opened = threading.Event()
        self.changes = []  # (id, event, data) of change events, in arrival order
        self.snapshot_seq = None
        self.retry_after_live = False  # a retry: line after the opening one
        self.ended = threading.Event()
        self.error = None

    def run(self):
        try:
            self._run()
        except Exception as e:  # recorded and reported by the main thread
            self.error = repr(e)
        finally:
            self.opened.set()
            self.ended.set()

    def _run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        query = urllib.parse.urlencode({"access_token": self.token})
        conn.request("GET", f"/api/boards/{self.board}/events?{query}",
                     headers={"Accept": "text/event-stream",
                              "X-Forwarded-For": self.forwarded})
        resp = conn.getresponse()
        self.status = resp.status
        if resp.status != 200:
            self.error = f"answered {resp.status}: {resp.read()[:300]!r}"
            return
        event, ident, data, seen_retry = None, None, [], False
        while True:
            line = resp.readline()
            if not line:
                break
            line = line.decode("utf-8").rstrip("\r\n")
            if line == "":
                if data or event:
                    self._dispatch(event or "message", ident, "\n".join(data))
                event, ident, data = None, None, []
            elif line.startswith("retry:"):
                if seen_retry:
                    self.retry_after_live = True
                seen_retry = True
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("id:"):
                ident = line[3:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
        conn.close()

    def _dispatch(self, event, ident, data):
        if event == "snapshot":
            self.snapshot_seq = int(ident)
        elif event == "presence":
            self.opened.set()
        elif event not in ("heartbeat", "signal") and not event.startswith("presence."):
            self.changes.append((int(ident), event, json.loads(data)))


def mint(root, env, sub, name):
    """`boardcast token`, as `heroku run -- ./target/release/boardcast token …` runs it."""
    out = subprocess.run(
        ["./target/release/boardcast", "token", "--sub", sub, "--name", name, "--ttl", "1h"],
        cwd=root, env=env, capture_output=True, text=True, check=False,
    )
    if out.returncode != 0 or not re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+\n", out.stdout):
        fail(f"boardcast token failed (rc {out.returncode}): {out.stderr.strip()}")
    return out.stdout.strip()


def backends(psql, database_url):
    """Connections the server holds (its application_name starts with boardcast)."""
    out = subprocess.run(
        [psql, database_url, "-Atc",
         "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'boardcast%'"],
        capture_output=True, text=True, check=True,
    )
    return int(out.stdout.strip())


def metric(text, name, labels=""):
    for line in text.splitlines():
        if line.startswith(name + labels + " ") or (not labels and line.startswith(name + "{")):
            return line.rsplit(" ", 1)[1]
    fail(f"{name}{labels} is missing from /metrics")


def wait_for(check, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    fail(f"{what} (waited {seconds:.0f} s)")


def expect_changes(viewers, first, last):
    """Every viewer has every change first..last, once, in order."""
    want = list(range(first, last + 1))

    def complete():
        return all([c[0] for c in v.changes if c[0] >= first][: len(want)] == want
                   for v in viewers)

    wait_for(complete, TIMEOUT, "not every viewer got every change")
    for i, v in enumerate(viewers, 1):
        got = [c[0] for c in v.changes if c[0] >= first]
        if got != want:
            fail(f"viewer {i} got ids {got}, expected {first}..{last}")


def run():
    root = os.environ["BOARDCAST_ROOT"]
    honcho = os.environ["HONCHO"]
    psql = os.environ["PSQL"]
    database_url = os.environ["DATABASE_URL"]
    port = int(os.environ["WEB_PORT"])
    work = os.environ["WORK"]
    app = load_app_json(os.path.join(root, "app.json"))
    plan, limit = plan_connections(app)
    config = app_env(app)
    say(f"app.json: plan {plan} ({limit} connections), config vars {sorted(config)}")
    if "JWT_SECRET" not in config:
        fail("app.json does not set JWT_SECRET: a deploy would serve every board to anyone")

    # A dyno's environment: the config vars, the add-on's URL, DYNO and PORT; no more.
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
            "LANG": "C.UTF-8", "DATABASE_URL": database_url, **config}
    with open(os.path.join(root, "Procfile"), encoding="utf-8") as f:
        procfile = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
    release = procfile["release"].strip()
    rel = subprocess.run(["bash", "-c", release], cwd=root, capture_output=True, text=True,
                         env={**base, "DYNO": "release.1"}, check=False)
    if rel.returncode != 0:
        fail(f"release: {release} exited {rel.returncode}: {rel.stderr}")
    say(f"release: {release} ok")

    env = {**base, "DYNO": "web.1", "PORT": str(port)}
    dyno = Dyno(root, honcho, env, port, os.path.join(work, "honcho.log"))
    viewers = []
    try:
        check_team(root, dyno, env, config, limit, psql, database_url, viewers)
    finally:
        if dyno.proc.poll() is None:
            dyno.proc.kill()
            dyno.proc.wait()


def check_team(root, dyno, env, config, limit, psql, database_url, viewers):
    def healthy():
        if dyno.proc.poll() is not None:
            fail(f"honcho exited early:\n{dyno.text()}")
        try:
            return dyno.request("GET", "/healthz")[0] == 200
        except OSError:
            return False

    wait_for(healthy, 60, "no 200 from /healthz")
    starts = [l for l in dyno.text().splitlines() if "listener mode " in l]
    mode = config.get("LISTENER", "per-stream")
    why = f"LISTENER={mode}" if "LISTENER" in config else "LISTENER unset"
    if len(starts) != 1 or f"listener mode {mode} ({why}" not in starts[0]:
        fail(f"expected one start line naming the mode ({mode}, {why}), got {starts}")
    say(f"start line: {starts[0].split('] ', 1)[-1]}")

    writer = mint(root, env, "owner", "Owner")
    status, _, board = dyno.request("POST", "/api/boards", writer, {"title": "Team check"},
                                    "198.51.100.1")
    if status != 201:
        fail(f"POST /api/boards answered {status}: {board}")
    board_id = board["id"]

    for i in range(1, VIEWERS + 1):
        token = mint(root, env, f"viewer-{i}", f"Viewer {i}")
        viewers.append(Viewer(dyno.port, board_id, token, f"203.0.113.{i}"))
    for v in viewers:
        v.start()
    for i, v in enumerate(viewers, 1):
        if not v.opened.wait(TIMEOUT) or v.status != 200 or v.error:
            fail(f"viewer {i}: status {v.status}, {v.error}")
    say(f"{VIEWERS} viewers with tokens opened the board: all 200")
    if re.search(r"WARN .*(MAX_STREAMS|per-stream mode)", dyno.text()):
        fail(f"the server warns about its stream budget:\n{dyno.text()}")

    # Changes written while they watch: notes created, moved, edited, one deleted.
    first = max(v.snapshot_seq for v in viewers) + 1
    notes = []
    for n in range(5):
        status, _, note = dyno.request(
            "POST", f"/api/boards/{board_id}/notes", writer,
            {"text": f"note {n}", "x": 40 * n, "y": 60}, "198.51.100.1")
        if status != 201:
            fail(f"writing note {n} answered {status}: {note}")
        notes.append(note["id"])
    for n, note in enumerate(notes):
        status, _, body = dyno.request("PATCH", f"/api/boards/{board_id}/notes/{note}",
                                       writer, {"x": 300 + n, "text": f"moved {n}"},
                                       "198.51.100.1")
        if status != 200:
            fail(f"PATCH answered {status}: {body}")
    status, _, _ = dyno.request("DELETE", f"/api/boards/{board_id}/notes/{notes[0]}", writer,
                                forwarded="198.51.100.1")
    if status != 204:
        fail(f"DELETE answered {status}")
    last = first + 10
    expect_changes(viewers, first, last)
    say(f"every viewer got all {last - first + 1} changes ({first}..{last}), in order")

    # A 16th viewer who writes as fast as one client may.
    rate = int(config.get("WRITE_RATE_LIMIT", "20"))
    token = mint(root, env, "viewer-16", "Viewer 16")
    sixteenth = Viewer(dyno.port, board_id, token, "203.0.113.16")
    sixteenth.start()
    if not sixteenth.opened.wait(TIMEOUT) or sixteenth.status != 200:
        fail(f"the 16th viewer: status {sixteenth.status}, {sixteenth.error}")
    viewers.append(sixteenth)
    first = last + 1
    writes = 2 * rate
    started = time.monotonic()
    for n in range(writes):
        # Paced at the limit: the n-th write at n/rate seconds.
        time.sleep(max(0.0, started + n / rate - time.monotonic()))
        status, headers, body = dyno.request(
            "POST", f"/api/boards/{board_id}/notes", token,
            {"text": f"fast {n}", "x": n, "y": 400}, "203.0.113.16")
        if status != 201:
            fail(f"write {n} at {rate}/s answered {status}: {body}")
    last = first + writes - 1
    expect_changes(viewers, first, last)
    say(f"the 16th viewer opened (200), wrote {writes} notes at {rate}/s (all 201), and all "
        f"16 viewers got every one")
    statuses = []
    for n in range(4 * rate):
        status, headers, body = dyno.request(
            "POST", f"/api/boards/{board_id}/notes", token,
            {"text": f"burst {n}", "x": n, "y": 600}, "203.0.113.16")
        statuses.append(status)
        if status == 429:
            if "retry-after" not in headers or body["error"]["code"] != "rate_limited":
                fail(f"429 without Retry-After or code: {headers} {body}")
            break
    if statuses[-1] != 429 or any(s not in (201, 429) for s in statuses):
        fail(f"past the limit, expected 201s then 429: {statuses}")
    say(f"past {rate}/s the answer is 429 rate_limited with Retry-After "
        f"(after {len(statuses) - 1} more writes)")

    status, _, ready = dyno.request("GET", "/readyz")
    if status != 200:
        fail(f"/readyz answered {status}: {ready}")
    conn = http.client.HTTPConnection("127.0.0.1", dyno.port, timeout=TIMEOUT)
    conn.request("GET", "/metrics")
    metrics = conn.getresponse().read().decode()
    conn.close()
    open_streams = int(float(metric(metrics, "boardcast_streams_open")))
    max_streams = int(float(metric(metrics, "boardcast_streams_max")))
    if open_streams != VIEWERS + 1 or max_streams < VIEWERS + 1:
        fail(f"streams_open {open_streams}, streams_max {max_streams}")
    if f'boardcast_listener_info{{mode="{mode}"' not in metrics:
        fail(f"boardcast_listener_info does not say mode {mode}")
    held = backends(psql, database_url)
    if held > limit // 2:
        fail(f"the dyno holds {held} of the plan's {limit} connections: a restart, which "
             f"runs two dynos for a moment, would not fit")
    say(f"/metrics: {open_streams} streams open of {max_streams}; the dyno holds {held} of "
        f"{limit} connections")

    # A restart: SIGTERM to honcho, which passes it to the web process.
    sent = time.monotonic()
    dyno.proc.send_signal(signal.SIGTERM)
    try:
        dyno.proc.wait(timeout=HEROKU_KILL_AFTER)
    except subprocess.TimeoutExpired:
        fail(f"still running {HEROKU_KILL_AFTER:.0f} s after SIGTERM: Heroku would SIGKILL")
    took = time.monotonic() - sent
    for i, v in enumerate(viewers, 1):
        if not v.ended.wait(5):
            fail(f"viewer {i}'s stream did not end after SIGTERM")
        if not v.retry_after_live:
            fail(f"viewer {i}'s stream ended without a retry: line")
    log = dyno.text()
    clean = "web.1 stopped (rc=0)" in log or (
        "web.1 stopped (rc=-15)" in log and re.search(r"INFO  boardcast\] stopped$", log, re.M))
    if not clean or re.search(r"web\.1 .* ERROR ", log):
        fail(f"the web process did not stop cleanly:\n{log}")
    say(f"SIGTERM: all {len(viewers)} streams got retry: and ended; exited cleanly in "
        f"{took:.1f} s (Heroku allows {HEROKU_KILL_AFTER:.0f} s)")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "max-connections":
        print(plan_connections(load_app_json(sys.argv[2]))[1])
    elif sys.argv[1:] == ["run"]:
        run()
        say("ok")
    else:
        fail(f"usage: {sys.argv[0]} max-connections APP_JSON | run")


if __name__ == "__main__":
    main()
