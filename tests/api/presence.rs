//! Presence: who is viewing, across instances, forgetting vanished viewers exactly once.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::helpers::{HEARTBEAT, ServerProcess, SseClient, TestApp, eventually, spawn_app};

async fn viewer_stream(app_url: &str, board: &str, name: &str) -> SseClient {
    let response = reqwest::Client::new()
        .get(format!("{app_url}/api/boards/{board}/events?name={name}"))
        .send()
        .await
        .expect("GET events");
    assert_eq!(response.status(), 200);
    SseClient::new(response)
}

fn names(event: &Value) -> Vec<String> {
    event["viewers"]
        .as_array()
        .expect("viewers")
        .iter()
        .map(|v| v["name"].as_str().expect("name").to_string())
        .collect()
}

async fn presence_of(app: &TestApp, board: &str) -> Value {
    app.get_json(&format!("/api/boards/{board}/presence")).await
}

#[tokio::test]
async fn two_named_viewers_see_each_other() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let mut ana = viewer_stream(&app.address, &board, "Ana").await;
    let opening = ana
        .next_named("presence", HEARTBEAT * 2)
        .await
        .expect("presence list");
    assert_eq!(names(&opening.json()), ["Ana"]);

    let mut bo = viewer_stream(&app.address, &board, "Bo").await;
    let list = bo
        .next_named("presence", HEARTBEAT * 2)
        .await
        .expect("presence list");
    assert_eq!(names(&list.json()), ["Ana", "Bo"]);
    let joined = ana
        .next_named("presence.joined", HEARTBEAT * 2)
        .await
        .expect("joined");
    assert_eq!(joined.json()["viewer"]["name"], "Bo");
    assert!(joined.json()["viewer"]["since"].is_string());

    let listed = presence_of(&app, &board).await;
    assert_eq!(names(&listed), ["Ana", "Bo"]);

    // Anonymous when no name is given.
    let mut nobody = app.open_stream(&board).await;
    let list = nobody
        .next_named("presence", HEARTBEAT * 2)
        .await
        .expect("list");
    assert_eq!(names(&list.json()), ["Ana", "Bo", "anonymous"]);
}

#[tokio::test]
async fn a_viewer_who_closes_is_reported_left_within_one_interval() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let mut ana = viewer_stream(&app.address, &board, "Ana").await;
    ana.next_named("presence", HEARTBEAT * 2)
        .await
        .expect("list");
    let bo = viewer_stream(&app.address, &board, "Bo").await;
    let joined = ana
        .next_named("presence.joined", HEARTBEAT * 2)
        .await
        .expect("joined");
    let bo_id = joined.json()["viewer"]["id"].clone();
    drop(bo);
    let closed = Instant::now();
    let left = ana
        .next_named("presence.left", HEARTBEAT + Duration::from_millis(500))
        .await
        .expect("left within one interval (plus slack)");
    assert!(closed.elapsed() < HEARTBEAT + Duration::from_millis(500));
    assert_eq!(left.json()["viewer"]["id"], bo_id);
    assert_eq!(names(&presence_of(&app, &board).await), ["Ana"]);
}

#[tokio::test]
async fn viewers_of_a_killed_instance_are_reported_left_once_by_the_survivor() {
    let survivor = spawn_app().await;
    let board = survivor.board_id().await;
    let mut watcher = viewer_stream(&survivor.address, &board, "Watcher").await;
    watcher
        .next_named("presence", HEARTBEAT * 2)
        .await
        .expect("list");

    let mut doomed = ServerProcess::start(&survivor.db_name, &[]).await;
    let mut doomed_streams = Vec::new();
    for name in ["Kim", "Lee", "Max"] {
        doomed_streams.push(viewer_stream(&doomed.address, &board, name).await);
    }
    let mut joined = Vec::new();
    while joined.len() < 3 {
        let event = watcher
            .next_named("presence.joined", HEARTBEAT * 4)
            .await
            .expect("joined");
        joined.push(
            event.json()["viewer"]["id"]
                .as_str()
                .expect("id")
                .to_string(),
        );
    }

    doomed.signal("KILL");
    doomed.child.wait().await.expect("killed");
    let killed = Instant::now();
    let mut left: HashMap<String, usize> = HashMap::new();
    // Read for three intervals plus slack, then one more to catch any duplicate.
    let until = killed + HEARTBEAT * 3 + Duration::from_millis(500);
    while let Some(event) = watcher
        .next(until.saturating_duration_since(Instant::now()))
        .await
    {
        if event.event == "presence.left" {
            *left
                .entry(
                    event.json()["viewer"]["id"]
                        .as_str()
                        .expect("id")
                        .to_string(),
                )
                .or_default() += 1;
        }
    }
    for id in &joined {
        assert_eq!(
            left.get(id),
            Some(&1),
            "{id} reported left exactly once within three intervals"
        );
    }
    let until = Instant::now() + HEARTBEAT * 2;
    while let Some(event) = watcher
        .next(until.saturating_duration_since(Instant::now()))
        .await
    {
        assert_ne!(event.event, "presence.left", "no duplicate leave");
    }
    let sql = survivor.sql().await;
    let rows: i64 = sql
        .query_one("SELECT count(*) FROM viewers", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 1, "only the watcher is left in the table");
    drop(doomed_streams);
}

#[tokio::test]
async fn presence_events_grow_linearly_with_viewers() {
    // Listed one by one: the list limit is above the 500 viewers here.
    let app = crate::helpers::spawn_app_with(|s| s.presence_list_limit = 1000).await;
    let board = app.board_id().await;
    let n = 500;
    let mut streams = Vec::new();
    for i in 0..n {
        streams.push(viewer_stream(&app.address, &board, &format!("v{i}")).await);
    }
    assert!(
        eventually(Duration::from_secs(30), || async {
            presence_of(&app, &board).await["viewers"]
                .as_array()
                .map_or(0, Vec::len)
                == n
        })
        .await,
        "all {n} viewers listed"
    );
    let mut total = 0;
    for (i, stream) in streams.iter_mut().enumerate() {
        let mut joined = 0;
        let mut lists = 0;
        let mut quiet_heartbeats = 0;
        while quiet_heartbeats < 2 {
            let event = stream
                .next(HEARTBEAT * 4)
                .await
                .expect("the stream stays open");
            match event.event.as_str() {
                "presence" => lists += 1,
                "presence.joined" => joined += 1,
                "heartbeat" => quiet_heartbeats += 1,
                _ => {}
            }
            if event.event != "heartbeat" {
                quiet_heartbeats = 0;
            }
        }
        assert_eq!(lists, 1, "viewer {i} got one list");
        assert_eq!(
            joined,
            n - 1 - i,
            "viewer {i} heard of exactly the later viewers"
        );
        total += lists + joined;
    }
    assert_eq!(total, n + n * (n - 1) / 2);
}

#[tokio::test]
async fn a_burst_of_opens_on_one_board_waits_its_turn_instead_of_starving_the_pool() {
    // Joins of one board are serialized; they must queue in memory, not hold pooled
    // connections (a pool of 2 here) while they wait.
    let app = crate::helpers::spawn_app_with(|s| s.pool_size = 2).await;
    let board = app.board_id().await;
    let opens = (0..60).map(|i| {
        let url = app.url(&format!("/api/boards/{board}/events?name=b{i}"));
        let http = app.http.clone();
        async move { http.get(url).send().await.expect("answered") }
    });
    let responses = futures_util::future::join_all(opens).await;
    let refused = responses.iter().filter(|r| r.status() != 200).count();
    assert_eq!(refused, 0, "every open of the burst succeeds");
    let listed = presence_of(&app, &board).await;
    assert_eq!(names(&listed).len(), 60);
    // REST still answers while they are open.
    let note = app.add_note(&board, "still writable").await;
    assert!(note["id"].is_string());
}

#[tokio::test]
async fn sigterm_leaves_no_viewer_behind() {
    let db = crate::helpers::create_database().await;
    let mut server = ServerProcess::start(&db, &[]).await;
    let http = reqwest::Client::new();
    let board: Value = http
        .post(server.url("/api/boards"))
        .json(&serde_json::json!({ "title": "Stop" }))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let board = board["id"].as_str().expect("id").to_string();
    let mut streams = Vec::new();
    for i in 0..20 {
        let mut stream = viewer_stream(&server.address, &board, &format!("v{i}")).await;
        stream
            .next_named("presence", HEARTBEAT * 4)
            .await
            .expect("opened");
        streams.push(stream);
    }
    server.signal("TERM");
    let status = server.child.wait().await.expect("exits");
    assert!(status.success());
    let mut settings = crate::helpers::base_settings();
    settings.database.dbname(&*db);
    let (sql, connection) = settings
        .database
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connects");
    tokio::spawn(connection);
    let rows: i64 = sql
        .query_one("SELECT count(*) FROM viewers", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 0, "every viewer's leave was written before exit");
    let instances: i64 = sql
        .query_one("SELECT count(*) FROM instances", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(instances, 0, "the instance removed itself");
    drop(streams);
}

#[tokio::test]
async fn viewers_who_hang_up_while_their_stream_is_opening_leave_no_trace() {
    // Found by hostile testing: a client gone between the presence join and the start of
    // its stream stayed listed for good. Hang up at every moment of the opening.
    let app = spawn_app().await;
    let board = app.board_id().await;
    let mut cuts = Vec::new();
    for i in 0..40u64 {
        let url = app.url(&format!("/api/boards/{board}/events?name=cut{i}"));
        cuts.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            // Dropping the request future (or the answer) closes the connection.
            let _ =
                tokio::time::timeout(Duration::from_millis(5 * i), client.get(url).send()).await;
        }));
    }
    for cut in cuts {
        cut.await.expect("cut task");
    }
    let empty = eventually(HEARTBEAT * 3 + Duration::from_secs(2), || async {
        presence_of(&app, &board).await["viewers"]
            .as_array()
            .is_some_and(|v| v.is_empty())
    })
    .await;
    assert!(
        empty,
        "viewers left behind: {}",
        presence_of(&app, &board).await
    );
}
