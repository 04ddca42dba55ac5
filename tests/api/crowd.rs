//! Presence at scale: the list limit and its crowd form, exactness under a burst of opens,
//! and a crowd arriving all at once without anyone being cut off.

use std::{
    collections::{BTreeSet, HashMap},
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use boardcast::config::ListenerMode;

use crate::helpers::{
    HEARTBEAT, SseClient, SseEvent, TestApp, eventually, listener_mode, spawn_app_with, spawn_on,
};

/// What one stream knows of its board's presence, built only from what it was sent.
#[derive(Debug, Default)]
struct Seen {
    you: Option<String>,
    members: HashMap<String, String>,
    count: Option<u64>,
    /// Every `presence` event's (count, number listed).
    lists: Vec<(u64, usize)>,
    joined: usize,
    left: usize,
    /// When each `presence.count` arrived, with its count.
    counts: Vec<(Instant, u64)>,
    /// Change events' ids, in order.
    seqs: Vec<i64>,
    snapshot_seq: Option<i64>,
}

impl Seen {
    fn apply(&mut self, event: &SseEvent) {
        match event.event.as_str() {
            "presence" => {
                let data = event.json();
                let you = data["you"]["id"].as_str().expect("you.id").to_string();
                if let Some(first) = &self.you {
                    assert_eq!(first, &you, "`you` stays the stream's own viewer");
                }
                self.you = Some(you);
                let viewers = data["viewers"].as_array().expect("viewers");
                self.members = viewers
                    .iter()
                    .map(|v| (id_of(v), v["name"].as_str().expect("name").to_string()))
                    .collect();
                let count = data["count"].as_u64().expect("count");
                self.count = Some(count);
                self.lists.push((count, viewers.len()));
            }
            "presence.joined" => {
                let data = event.json();
                self.members.insert(
                    id_of(&data["viewer"]),
                    data["viewer"]["name"].as_str().expect("name").to_string(),
                );
                self.count = Some(data["count"].as_u64().expect("count"));
                self.joined += 1;
            }
            "presence.left" => {
                let data = event.json();
                self.members.remove(&id_of(&data["viewer"]));
                self.count = Some(data["count"].as_u64().expect("count"));
                self.left += 1;
            }
            "presence.count" => {
                let count = event.json()["count"].as_u64().expect("count");
                self.count = Some(count);
                self.counts.push((Instant::now(), count));
            }
            "snapshot" => self.snapshot_seq = Some(event.seq()),
            "heartbeat" => {}
            _ if !event.id.is_empty() => self.seqs.push(event.seq()),
            _ => {}
        }
    }

    fn names(&self) -> BTreeSet<String> {
        self.members.values().cloned().collect()
    }

    /// At most one `presence.count` a second: over a window that began before the stream
    /// was requested and ended after its last read, which holds however late the client
    /// read each frame (a busy client reads frames sent a second apart together).
    fn assert_counts_paced(&self, window: Duration) {
        let most = window.as_secs_f64().floor() as usize + 1;
        assert!(
            self.counts.len() <= most,
            "{} presence.count in {window:?}: {:?}",
            self.counts.len(),
            self.counts.iter().map(|c| c.1).collect::<Vec<_>>()
        );
    }
}

fn id_of(viewer: &Value) -> String {
    viewer["id"].as_str().expect("viewer id").to_string()
}

/// A stream whose events are read (and applied) in the background, at whatever pace the
/// client machine reads, until `stop`.
struct Watched {
    name: String,
    /// Before the stream was requested.
    requested: Instant,
    task: tokio::task::JoinHandle<(Seen, bool)>,
}

impl Watched {
    fn start(
        name: &str,
        requested: Instant,
        mut client: SseClient,
        stop: CancellationToken,
    ) -> Watched {
        let task = tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut ended = false;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    event = client.next(HEARTBEAT * 6) => match event {
                        Some(event) => seen.apply(&event),
                        None => {
                            ended = true;
                            break;
                        }
                    },
                }
            }
            (seen, ended)
        });
        Watched {
            name: name.to_string(),
            requested,
            task,
        }
    }

    /// What the stream saw, whether it ended, and how long it was watched.
    async fn finish(self) -> (String, Seen, bool, Duration) {
        let (seen, ended) = self.task.await.expect("reader task");
        (self.name, seen, ended, self.requested.elapsed())
    }
}

async fn open(app: &TestApp, board: &str, name: &str) -> SseClient {
    let response = app
        .http
        .get(app.url(&format!("/api/boards/{board}/events?name={name}")))
        .timeout(Duration::from_secs(3600))
        .send()
        .await
        .expect("GET events");
    if response.status() != 200 {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        panic!("{name} did not open: {status} {body}");
    }
    SseClient::new(response)
}

/// Reads `client` until its first `presence` event, applying everything before it.
async fn opening(client: &mut SseClient, seen: &mut Seen) {
    loop {
        let event = client
            .next(HEARTBEAT * 8)
            .await
            .expect("the stream opens with presence");
        seen.apply(&event);
        if event.event == "presence" {
            return;
        }
    }
}

/// Reads `client` until `done` holds, applying every event; fails after `wait`.
async fn read_until(
    client: &mut SseClient,
    seen: &mut Seen,
    wait: Duration,
    done: impl Fn(&Seen) -> bool,
) {
    let deadline = Instant::now() + wait;
    while !done(seen) {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("not reached in {wait:?}: {seen:?}"));
        if let Some(event) = client.next(left).await {
            seen.apply(&event);
        }
    }
}

async fn crowd_boards(app: &TestApp) -> f64 {
    let text = app.metrics_text().await;
    text.lines()
        .find_map(|l| l.strip_prefix("boardcast_crowd_boards "))
        .and_then(|v| v.trim().parse().ok())
        .expect("boardcast_crowd_boards is exposed")
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn past_the_list_limit_a_board_sends_counts_and_lists_again_at_80_percent() {
    let limit = |s: &mut boardcast::config::Settings| s.presence_list_limit = 5;
    let app = spawn_app_with(limit).await;
    let other = spawn_on(&app.db_name, limit).await;
    let board = app.board_id().await;
    let started = Instant::now();

    // 1–4: listed one by one, with the count.
    let mut first = open(&app, &board, "v1").await;
    let mut watcher = Seen::default();
    opening(&mut first, &mut watcher).await;
    assert_eq!(watcher.lists, [(1, 1)]);
    assert_eq!(watcher.names(), names(&["v1"]));
    assert!(
        watcher
            .members
            .contains_key(watcher.you.as_ref().expect("you"))
    );
    let mut streams = Vec::new();
    for name in ["v2", "v3", "v4"] {
        let mut stream = open(&app, &board, name).await;
        let mut seen = Seen::default();
        opening(&mut stream, &mut seen).await;
        let you = seen.you.clone().expect("you");
        assert_eq!(seen.members.get(&you).map(String::as_str), Some(name));
        streams.push((stream, seen));
    }
    let fourth = &streams[2].1;
    assert_eq!(fourth.lists, [(4, 4)]);
    assert_eq!(fourth.names(), names(&["v1", "v2", "v3", "v4"]));
    read_until(&mut first, &mut watcher, HEARTBEAT * 8, |s| {
        s.count == Some(4)
    })
    .await;
    assert_eq!(watcher.joined, 3);

    // 5: a viewer on the other instance counts, and is still announced.
    let mut fifth = open(&other, &board, "v5").await;
    let mut fifth_seen = Seen::default();
    opening(&mut fifth, &mut fifth_seen).await;
    assert_eq!(fifth_seen.lists, [(5, 5)]);
    read_until(&mut first, &mut watcher, HEARTBEAT * 8, |s| {
        s.count == Some(5)
    })
    .await;
    assert_eq!(watcher.names(), names(&["v1", "v2", "v3", "v4", "v5"]));

    // 6: a crowd. The newcomer gets the oldest five and the count; the others a count.
    let mut sixth = open(&app, &board, "v6").await;
    let mut sixth_seen = Seen::default();
    opening(&mut sixth, &mut sixth_seen).await;
    assert_eq!(sixth_seen.lists, [(6, 5)], "at most the limit listed");
    assert_eq!(
        sixth_seen.names(),
        names(&["v1", "v2", "v3", "v4", "v5"]),
        "oldest first"
    );
    assert!(
        !sixth_seen
            .members
            .contains_key(sixth_seen.you.as_ref().expect("you")),
        "`you` names the stream even when the list cannot"
    );
    read_until(&mut first, &mut watcher, HEARTBEAT * 8, |s| {
        s.count == Some(6)
    })
    .await;
    assert_eq!(
        watcher.counts.len(),
        1,
        "presence.count, not presence.joined"
    );
    assert_eq!(watcher.joined, 4);
    assert!(
        eventually(Duration::from_secs(5), || async {
            crowd_boards(&app).await == 1.0
        })
        .await,
        "the crowd shows in /metrics"
    );

    // 7–10, all at once: counts at most once a second, converging on 10.
    let mut late = Vec::new();
    for name in ["v7", "v8", "v9", "v10"] {
        late.push(open(&app, &board, name).await);
    }
    read_until(&mut first, &mut watcher, Duration::from_secs(5), |s| {
        s.count == Some(10)
    })
    .await;
    assert_eq!(watcher.joined, 4, "no per-viewer announcement in a crowd");
    watcher.assert_counts_paced(started.elapsed());
    let mut other_watcher = fifth_seen;
    read_until(
        &mut fifth,
        &mut other_watcher,
        Duration::from_secs(5),
        |s| s.count == Some(10),
    )
    .await;

    // Down to 4 (80 % of 5): every stream gets the full list again.
    drop(late);
    drop(sixth);
    drop(fifth);
    read_until(&mut first, &mut watcher, Duration::from_secs(10), |s| {
        s.lists.len() == 2
    })
    .await;
    assert_eq!(watcher.lists[1], (4, 4), "the list is back at 80 %");
    assert_eq!(watcher.names(), names(&["v1", "v2", "v3", "v4"]));
    watcher.assert_counts_paced(started.elapsed());
    let (stream, seen) = &mut streams[0];
    read_until(stream, seen, Duration::from_secs(10), |s| {
        s.lists.len() == 2
    })
    .await;
    assert_eq!(seen.names(), names(&["v1", "v2", "v3", "v4"]));

    // 3: per-viewer announcements again.
    let left_before = watcher.left;
    drop(streams.pop());
    read_until(&mut first, &mut watcher, HEARTBEAT * 8, |s| {
        s.count == Some(3)
    })
    .await;
    assert_eq!(watcher.left, left_before + 1, "announced one by one again");
    assert_eq!(watcher.names(), names(&["v1", "v2", "v3"]));
    assert!(
        eventually(Duration::from_secs(5), || async {
            crowd_boards(&app).await == 0.0
        })
        .await
    );
    other.stop().await;
}

/// Opens `n` streams on `board`, `at_once` at a time, each read in the background.
async fn open_crowd(
    app: &TestApp,
    board: &str,
    n: usize,
    at_once: usize,
    stop: &CancellationToken,
) -> Vec<Watched> {
    let mut watched = Vec::with_capacity(n);
    for wave in 0..n.div_ceil(at_once) {
        let requested = Instant::now();
        let opens = (wave * at_once..n.min((wave + 1) * at_once)).map(|i| async move {
            let name = format!("c{i}");
            (name.clone(), open(app, board, &name).await)
        });
        for (name, client) in join_all(opens).await {
            watched.push(Watched::start(&name, requested, client, stop.clone()));
        }
    }
    watched
}

#[tokio::test]
async fn each_of_300_viewers_opened_50_at_a_time_sees_exactly_the_final_set() {
    let app = spawn_app_with(|s| s.presence_list_limit = 1000).await;
    let board = app.board_id().await;
    let stop = CancellationToken::new();
    let watched = open_crowd(&app, &board, 300, 50, &stop).await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            app.get_json(&format!("/api/boards/{board}/presence")).await["viewers"]
                .as_array()
                .map_or(0, Vec::len)
                == 300
        })
        .await
    );
    // Long enough for the last announcements to reach everyone.
    tokio::time::sleep(HEARTBEAT * 4).await;
    stop.cancel();
    let mut everyone = BTreeSet::new();
    let mut results = Vec::new();
    for w in watched {
        results.push(w.finish().await);
    }
    for (_, seen, ended, _) in &results {
        assert!(!ended, "no stream ends");
        everyone.insert(seen.you.clone().expect("you"));
    }
    assert_eq!(everyone.len(), 300);
    for (name, seen, _, _) in &results {
        let ids: BTreeSet<String> = seen.members.keys().cloned().collect();
        assert_eq!(
            ids, everyone,
            "{name}: its opening list plus announcements are exactly the viewers"
        );
        assert_eq!(seen.count, Some(300), "{name}");
        assert_eq!(seen.lists.len(), 1, "{name}: one list, then announcements");
        assert!(seen.counts.is_empty(), "{name}: never a crowd");
    }
}

#[tokio::test]
async fn a_crowd_arriving_250_at_a_time_is_never_cut_and_gets_every_change() {
    // Per-stream mode holds a PostgreSQL connection per stream, and the test cluster
    // allows 1,000 in all (shared with the tests running beside this one): the same
    // arrival, at the size that mode is for.
    let n = match listener_mode() {
        ListenerMode::Shared => 2000,
        ListenerMode::PerStream => 400,
    };
    let app = spawn_app_with(|s| {
        s.max_streams_per_client = 5000;
        s.max_streams = Some(5000);
        s.pool_size = 10;
    })
    .await;
    let board = app.board_id().await;
    let stop = CancellationToken::new();
    // Changes written all through the arrival.
    let writing = CancellationToken::new();
    let writer = {
        let http = app.http.clone();
        let url = app.url(&format!("/api/boards/{board}/notes"));
        let writing = writing.clone();
        tokio::spawn(async move {
            let mut written = 0;
            while !writing.is_cancelled() {
                let response = http
                    .post(&url)
                    .json(&serde_json::json!({ "text": format!("n{written}"), "x": 1, "y": 2 }))
                    .send()
                    .await
                    .expect("POST note");
                assert_eq!(response.status(), 201);
                written += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            written
        })
    };
    let started = Instant::now();
    let watched = open_crowd(&app, &board, n, 250, &stop).await;
    let opened_in = started.elapsed();
    writing.cancel();
    let written: i64 = writer.await.expect("writer");
    assert!(written > 0);
    let board_now = app.get_json(&format!("/api/boards/{board}")).await;
    let last_seq = board_now["seq"].as_i64().expect("seq");
    // The count converges within a second of the last change; give the readers time.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let metrics = app.metrics_text().await;
    let closed: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("boardcast_streams_closed_total{"))
        .collect();
    assert!(
        closed.iter().all(|l| l.ends_with(" 0")),
        "no stream was closed: {closed:?}"
    );
    stop.cancel();
    let mut results = Vec::new();
    for w in watched {
        results.push(w.finish().await);
    }
    for (name, seen, ended, watched_for) in &results {
        assert!(!ended, "{name} was never closed");
        let from = seen.snapshot_seq.expect("a snapshot");
        let expected: Vec<i64> = (from + 1..=last_seq).collect();
        assert_eq!(
            seen.seqs, expected,
            "{name} got every change written after its snapshot, once, in order"
        );
        assert_eq!(seen.count, Some(n as u64), "{name}: the count settles");
        seen.assert_counts_paced(*watched_for);
    }
    println!("{n} streams opened in {opened_in:?} while {written} notes were written");
}

#[tokio::test]
async fn a_viewer_row_written_outside_the_batches_is_counted_and_reaped_exactly() {
    // What an older version still running during a deploy does: a viewers row with no
    // versioned announcement, here of an instance that is gone. The count follows the rows
    // (the table's trigger), and the reaper's announcement brings every stream back to the
    // truth.
    let app = spawn_app_with(|_| {}).await;
    let board = app.board_id().await;
    let mut stream = open(&app, &board, "v1").await;
    let mut seen = Seen::default();
    opening(&mut stream, &mut seen).await;
    let sql = app.sql().await;
    sql.execute(
        "INSERT INTO viewers (id, board_id, instance_id, name) VALUES ($1, $2, $3, 'ghost')",
        &[
            &uuid::Uuid::new_v4(),
            &uuid::Uuid::parse_str(&board).expect("uuid"),
            &uuid::Uuid::new_v4(),
        ],
    )
    .await
    .expect("insert a row as an older version would");
    assert_eq!(
        counted(&sql, &board).await,
        2,
        "the trigger counts rows however written"
    );
    // Reaped within a few heartbeats (its instance is not registered).
    assert!(
        eventually(HEARTBEAT * 8, || async { counted(&sql, &board).await == 1 }).await,
        "the ghost is reaped"
    );
    read_until(&mut stream, &mut seen, HEARTBEAT * 8, |s| {
        s.count == Some(1) && s.names() == names(&["v1"])
    })
    .await;
    let mut second = open(&app, &board, "v2").await;
    let mut second_seen = Seen::default();
    opening(&mut second, &mut second_seen).await;
    assert_eq!(second_seen.lists, [(2, 2)]);
    read_until(&mut stream, &mut seen, HEARTBEAT * 8, |s| {
        s.count == Some(2)
    })
    .await;
    assert_eq!(seen.names(), names(&["v1", "v2"]));
}

/// The count the `board_presence` row holds.
async fn counted(sql: &tokio_postgres::Client, board: &str) -> i32 {
    let board = uuid::Uuid::parse_str(board).expect("uuid");
    sql.query_one(
        "SELECT viewers FROM board_presence WHERE board_id = $1",
        &[&board],
    )
    .await
    .expect("count")
    .get(0)
}
