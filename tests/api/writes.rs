//! What a write leaves behind: a gapless event log, one NOTIFY per event in seq order, large
//! events by reference, retention; and the binary's `migrate`, schema check and config errors.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;
use uuid::Uuid;

use boardcast::{db::migrations, domain::ids::BoardId};

use crate::helpers::{
    TestApp, TestDatabase, base_settings, create_empty_database, database_url, eventually,
    spawn_app, spawn_app_with, spawn_on,
};

/// A plain connection of the test's own that `LISTEN`s on the board's channel; yields each
/// notification as `(channel, payload)`.
async fn listen(
    app: &TestApp,
    board: &str,
) -> (
    tokio_postgres::Client,
    mpsc::UnboundedReceiver<(String, String)>,
) {
    let (client, mut connection) = app
        .settings
        .database
        .connect(tokio_postgres::NoTls)
        .await
        .expect("a LISTEN connection");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(n) = message
                && tx
                    .send((n.channel().to_string(), n.payload().to_string()))
                    .is_err()
            {
                break;
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN \"boards_{board}\""))
        .await
        .expect("LISTEN");
    (client, rx)
}

/// The next `count` notification payloads, parsed, each within a few seconds.
async fn receive(
    rx: &mut mpsc::UnboundedReceiver<(String, String)>,
    board: &str,
    count: usize,
) -> Vec<(String, Value)> {
    let mut received = Vec::new();
    for n in 0..count {
        let (channel, payload) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("notification {} of {count} arrives", n + 1))
            .expect("the LISTEN connection is open");
        assert_eq!(channel, format!("boards_{board}"));
        let json = serde_json::from_str(&payload).expect("the payload is JSON");
        received.push((payload, json));
    }
    received
}

async fn logged_seqs(app: &TestApp, board: &str) -> Vec<i64> {
    let board: Uuid = board.parse().expect("uuid");
    app.sql()
        .await
        .query(
            "SELECT seq FROM events WHERE board_id = $1 ORDER BY seq",
            &[&board],
        )
        .await
        .expect("the event log")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Asserts that the board's log holds seqs 1..=`last` and that the `LISTEN` heard them in
/// that order and nothing more; the notifications.
async fn gapless(
    app: &TestApp,
    board: &str,
    rx: &mut mpsc::UnboundedReceiver<(String, String)>,
    last: i64,
) -> Vec<(String, Value)> {
    let all: Vec<i64> = (1..=last).collect();
    assert_eq!(logged_seqs(app, board).await, all, "the log has no gap");
    let notified = receive(rx, board, all.len()).await;
    let seqs: Vec<i64> = notified
        .iter()
        .map(|(_, json)| json["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs, all, "notifications in seq order");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err(),
        "nothing more"
    );
    notified
}

#[tokio::test]
async fn concurrent_writes_get_gapless_seqs_and_notifications_in_order() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let (_listener, mut rx) = listen(&app, &board).await;

    let mut notes = Vec::new();
    for n in 0..5 {
        notes.push(
            app.add_note(&board, &format!("note {n}")).await["id"]
                .as_str()
                .expect("id")
                .to_string(),
        );
    }
    let mut tasks = Vec::new();
    for i in 0..45 {
        let http = app.http.clone();
        let (url, body, expected) = if i % 2 == 0 {
            (
                app.url(&format!("/api/boards/{board}/notes")),
                json!({ "text": format!("new {i}"), "x": i, "y": 0 }),
                201,
            )
        } else {
            let note = &notes[i % notes.len()];
            (
                app.url(&format!("/api/boards/{board}/notes/{note}")),
                json!({ "x": i, "text": format!("edit {i}") }),
                200,
            )
        };
        tasks.push(tokio::spawn(async move {
            let request = if expected == 201 {
                http.post(url)
            } else {
                http.patch(url)
            };
            let response = request.json(&body).send().await.expect("write is answered");
            assert_eq!(response.status(), expected, "{body}");
        }));
    }
    for task in tasks {
        task.await.expect("the writing task finishes");
    }

    gapless(&app, &board, &mut rx, 50).await;

    let current: Value = app.get_json(&format!("/api/boards/{board}")).await;
    assert_eq!(current["seq"], 50);
    let notes = current["notes"].as_array().expect("notes");
    assert_eq!(notes.len(), 5 + 23);
    let updates: i64 = notes
        .iter()
        .map(|n| n["version"].as_i64().expect("version") - 1)
        .sum();
    assert_eq!(updates, 22, "every update counted once");
}

#[tokio::test]
async fn a_ten_thousand_character_note_is_announced_by_reference_and_kept_whole() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let (_listener, mut rx) = listen(&app, &board).await;
    let long = format!("{}\n\"end\" 😀", "é".repeat(9_990));
    assert_eq!(long.chars().count(), 9_998);
    assert!(long.len() > 8_000 * 2);

    let note = app.add_note(&board, &long).await;
    let id = note["id"].as_str().expect("id");
    assert_eq!(note["text"], long.as_str());
    let edited = format!("{}ü", &long[..long.len() - "😀".len()]);
    let response = app.patch_note(&board, id, json!({ "text": edited })).await;
    assert_eq!(response.status(), 200);
    app.patch_note(&board, id, json!({ "text": "short again" }))
        .await;

    let notified = receive(&mut rx, &board, 3).await;
    for ((payload, json), (seq, kind)) in notified
        .iter()
        .take(2)
        .zip([(1, "note.created"), (2, "note.updated")])
    {
        assert!(payload.len() < 8_000, "payload of {} bytes", payload.len());
        assert_eq!(json["ref"], true, "{payload}");
        assert_eq!(json["seq"], seq);
        assert_eq!(json["type"], kind);
        assert_eq!(json["board_id"], board);
    }
    let (_, small) = &notified[2];
    assert_eq!(small["seq"], 3);
    assert_eq!(small["ref"], Value::Null, "a small event travels whole");
    assert_eq!(small["note"]["text"], "short again");

    // The log holds both large events complete.
    let sql = app.sql().await;
    let board_uuid: Uuid = board.parse().expect("uuid");
    for (seq, text) in [(1_i64, &long), (2, &edited)] {
        let payload: String = sql
            .query_one(
                "SELECT payload::text FROM events WHERE board_id = $1 AND seq = $2",
                &[&board_uuid, &seq],
            )
            .await
            .expect("the logged event")
            .get(0);
        let event: Value = serde_json::from_str(&payload).expect("the event is JSON");
        assert_eq!(event["seq"], seq);
        assert_eq!(
            event["note"]["text"],
            text.as_str(),
            "event {seq} is complete"
        );
    }

    // And the API answers a long note whole.
    app.patch_note(&board, id, json!({ "text": long })).await;
    let current: Value = app.get_json(&format!("/api/boards/{board}")).await;
    assert_eq!(current["notes"][0]["text"], long.as_str());
}

#[tokio::test]
async fn the_event_log_keeps_the_newest_events_past_retention() {
    let app = spawn_app_with(|s| s.event_retention = 100).await;
    let board = app.board_id().await;
    let note = app.add_note(&board, "counter").await;
    let id = note["id"].as_str().expect("id");
    for n in 2..=300 {
        let response = app.patch_note(&board, id, json!({ "x": n })).await;
        assert_eq!(response.status(), 200);
    }
    let seqs = logged_seqs(&app, &board).await;
    assert!(seqs.len() <= 100 + 64, "{} events kept", seqs.len());
    assert_eq!(seqs.last(), Some(&300));
    let newest: Vec<i64> = seqs.iter().copied().filter(|s| *s > 200).collect();
    assert_eq!(
        newest,
        (201..=300).collect::<Vec<i64>>(),
        "the newest 100 are all there"
    );
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "what is kept has no hole"
    );
}

/// The text of the `"note":` member of an event's data (what follows it, minus the
/// closing brace of the event).
fn note_text(data: &str) -> &str {
    let start = data.find(",\"note\":").expect("a note member") + ",\"note\":".len();
    &data[start..data.len() - 1]
}

#[tokio::test]
async fn events_carry_the_note_exactly_as_the_api_answers_it() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let (_listener, mut rx) = listen(&app, &board).await;
    let notes_path = format!("/api/boards/{board}/notes");
    // Whole and fractional numbers, negative zero, a tiny one; text that must be escaped.
    let bodies = [
        json!({ "text": "plain", "x": 40, "y": 60 }),
        json!({ "text": "q\"uote\\ \n\r\t \u{1} é 😀 </script>", "x": -0.5, "y": 999_999.875,
                "width": 33.3, "height": 2000, "color": "#ABCDEF" }),
        json!({ "text": "", "x": -0.0, "y": 0.00005, "width": 20.000_000_000_000_004 }),
        json!({ "text": "pi", "x": std::f64::consts::PI, "y": -1_000_000 }),
    ];
    let mut answers = Vec::new();
    for body in &bodies {
        let response = app
            .http
            .post(app.url(&notes_path))
            .header("X-Display-Name", "An%C3%A4 \"Q\"")
            .json(body)
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), 201);
        answers.push(response.text().await.expect("body"));
    }
    let id: String = serde_json::from_str::<Value>(&answers[1]).expect("JSON")["id"]
        .as_str()
        .expect("id")
        .into();
    let patched = app
        .patch_note(&board, &id, json!({ "x": 12.25, "text": "changed" }))
        .await;
    assert_eq!(patched.status(), 200);
    answers.push(patched.text().await.expect("body"));

    let notified = receive(&mut rx, &board, answers.len()).await;
    for (n, ((payload, event), answer)) in notified.iter().zip(&answers).enumerate() {
        let answer_json: Value = serde_json::from_str(answer).expect("JSON");
        assert_eq!(
            event["note"], answer_json,
            "event {n} holds the note as answered"
        );
        assert_eq!(event["seq"], n as i64 + 1);
        assert!(
            event["at"].as_str().is_some_and(|at| at.ends_with('Z')),
            "{payload}"
        );
        // Byte for byte: a create's note is written by serde as the answer is (5e-5
        // included, which PostgreSQL would write 5e-05), the update's by PostgreSQL, which
        // writes these numbers as serde does.
        assert_eq!(
            note_text(payload),
            answer.as_str(),
            "event {n}, byte for byte"
        );
    }
    // And the board's own answer (read back through Rust) says the same.
    let current: Value = app.get_json(&format!("/api/boards/{board}")).await;
    for note in current["notes"].as_array().expect("notes") {
        let logged = notified
            .iter()
            .rev()
            .find(|(_, e)| e["note"]["id"] == note["id"])
            .expect("an event for every note");
        assert_eq!(&logged.1["note"], note);
    }

    let renamed = app
        .http
        .patch(app.url(&format!("/api/boards/{board}")))
        .json(&json!({ "title": "Ren\"amed ü" }))
        .send()
        .await
        .expect("PATCH");
    let answer = renamed.text().await.expect("body");
    let (payload, event) = receive(&mut rx, &board, 1).await.remove(0);
    assert_eq!(
        event["board"],
        serde_json::from_str::<Value>(&answer).expect("JSON")
    );
    assert!(
        payload.ends_with(&format!(",\"board\":{answer}}}")),
        "{payload}"
    );
}

#[tokio::test]
async fn a_write_that_fails_inside_postgres_leaves_no_event_and_takes_no_seq() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let note = app.add_note(&board, "keep").await;
    let id = note["id"].as_str().expect("id");
    let (_listener, mut rx) = listen(&app, &board).await;
    let sql = app.sql().await;
    // A rule only PostgreSQL knows: the write gets as far as the note, then fails.
    sql.batch_execute("ALTER TABLE notes ADD CONSTRAINT test_no_boom CHECK (text <> 'boom')")
        .await
        .expect("adds the constraint");
    let response = app
        .http
        .post(app.url(&format!("/api/boards/{board}/notes")))
        .json(&json!({ "text": "boom", "x": 0, "y": 0 }))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 500);
    let response = app.patch_note(&board, id, json!({ "text": "boom" })).await;
    assert_eq!(response.status(), 500);
    assert_eq!(
        logged_seqs(&app, &board).await,
        vec![1],
        "no event was logged"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err(),
        "nothing was notified"
    );
    let current: Value = app.get_json(&format!("/api/boards/{board}")).await;
    assert_eq!(current["seq"], 1, "no seq was taken");
    assert_eq!(current["notes"][0]["version"], 1);
    // The next write takes the next seq, with no gap.
    app.add_note(&board, "fine").await;
    let (_, event) = receive(&mut rx, &board, 1).await.remove(0);
    assert_eq!(event["seq"], 2);
    assert_eq!(logged_seqs(&app, &board).await, vec![1, 2]);
}

/// PostgreSQL writes the times of an event (`boardcast_json_time`, migration 9) as serde
/// writes chrono's `DateTime<Utc>` in the API's answers: 0, 3 or 6 fraction digits. Whole
/// seconds, whole milliseconds and odd microseconds around one moment, and random times.
#[tokio::test]
async fn postgres_writes_event_times_as_serde_does() {
    let app = spawn_app().await;
    let rows = app
        .sql()
        .await
        .query(
            "SELECT t, boardcast_json_time(t) FROM (
                 SELECT timestamptz '2026-11-30 00:00:00Z' + i * CASE i % 3
                     WHEN 0 THEN interval '1 millisecond' WHEN 1 THEN interval '1 second'
                     ELSE interval '1 microsecond' END AS t
                 FROM generate_series(-3000, 3000) i
                 UNION ALL
                 SELECT timestamptz '1970-01-01Z' + random() * interval '40000 days'
                 FROM generate_series(1, 3000)
             ) s",
            &[],
        )
        .await
        .expect("times");
    assert_eq!(rows.len(), 9001);
    for row in rows {
        let time: chrono::DateTime<chrono::Utc> = row.get(0);
        let text: String = row.get(1);
        assert_eq!(
            format!("\"{text}\""),
            serde_json::to_string(&time).expect("serde"),
            "{time:?}"
        );
    }
}

/// A database as migration 7's release left it, with a board written through that release's
/// write function, upgraded by the migrations after it: the board keeps its seq and its
/// log, the next write (the new create function) takes the next seq, and the function the
/// old release calls still works beside the new one (a deploy runs both for a while).
#[tokio::test]
async fn migrating_a_used_database_keeps_every_seq_and_the_next_write_follows() {
    let database = create_empty_database().await;
    let mut client = database.client().await;
    let applied = migrations::migrate_to(&mut client, 7)
        .await
        .expect("migrates to 7");
    assert_eq!(applied, (1..=7).collect::<Vec<i32>>());
    let board = Uuid::new_v4();
    let channel = BoardId(board).channel();
    client
        .execute(
            "INSERT INTO boards (id, title) VALUES ($1, 'before')",
            &[&board],
        )
        .await
        .expect("a board");
    let old_insert = "SELECT (boardcast_note_insert($1, $2, $3, 1.5, -2, '#abcdef', 200, 160,
                          NULL, $4, 1000, 8000)).outcome";
    for text in ["one", "two"] {
        let outcome: String = client
            .query_one(old_insert, &[&board, &Uuid::new_v4(), &text, &channel])
            .await
            .expect("the old write function")
            .get(0);
        assert_eq!(outcome, "done");
    }

    let applied = migrations::migrate(&mut client).await.expect("migrates");
    assert_eq!(
        applied,
        (8..=migrations::latest_version()).collect::<Vec<i32>>()
    );
    let app = spawn_on(&database, |_| {}).await;
    let board = board.to_string();
    let (_listener, mut rx) = listen(&app, &board).await;
    let before: Value = app.get_json(&format!("/api/boards/{board}")).await;
    assert_eq!(before["seq"], 2, "the board keeps its seq");
    let note = app.add_note(&board, "three").await;
    let (payload, event) = receive(&mut rx, &board, 1).await.remove(0);
    assert_eq!(event["seq"], 3, "{payload}");
    assert_eq!(event["type"], "note.created");
    assert_eq!(event["note"], note);
    let outcome: String = client
        .query_one(
            old_insert,
            &[
                &Uuid::parse_str(&board).expect("uuid"),
                &Uuid::new_v4(),
                &"four",
                &channel,
            ],
        )
        .await
        .expect("the old write function after the upgrade")
        .get(0);
    assert_eq!(outcome, "done");
    let (_, event) = receive(&mut rx, &board, 1).await.remove(0);
    assert_eq!(event["seq"], 4);
    assert_eq!(logged_seqs(&app, &board).await, vec![1, 2, 3, 4]);
    let after: Value = app.get_json(&format!("/api/boards/{board}")).await;
    assert_eq!(after["seq"], 4);
    assert_eq!(after["notes"].as_array().map(Vec::len), Some(4));
    app.stop().await;
}

/// Fifty creates at once on one board: the log holds seqs 1..50, a plain `LISTEN` hears
/// them in that order, and each event's note is the note its POST answered.
#[tokio::test]
async fn fifty_concurrent_creates_get_seqs_1_to_50_and_each_event_holds_its_answer() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let (_listener, mut rx) = listen(&app, &board).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let http = app.http.clone();
        let url = app.url(&format!("/api/boards/{board}/notes"));
        tasks.push(tokio::spawn(async move {
            let response = http
                .post(url)
                .json(&json!({ "text": format!("note {i}"), "x": i, "y": -i }))
                .send()
                .await
                .expect("POST is answered");
            assert_eq!(response.status(), 201);
            response.json::<Value>().await.expect("the note")
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("the writing task finishes"));
    }

    let notified = gapless(&app, &board, &mut rx, 50).await;
    for answer in &answers {
        let events: Vec<&Value> = notified
            .iter()
            .map(|(_, event)| event)
            .filter(|event| event["note"]["id"] == answer["id"])
            .collect();
        assert_eq!(events.len(), 1, "one event for {answer}");
        assert_eq!(&events[0]["note"], answer);
    }
}

/// Notes and events of one board, and rows of either whose board is gone, as PostgreSQL
/// holds them.
async fn rows_left(sql: &tokio_postgres::Client, board: Uuid) -> [i64; 4] {
    let row = sql
        .query_one(
            "SELECT (SELECT count(*) FROM notes WHERE board_id = $1),
                    (SELECT count(*) FROM events WHERE board_id = $1),
                    (SELECT count(*) FROM notes n
                     WHERE NOT EXISTS (SELECT 1 FROM boards b WHERE b.id = n.board_id)),
                    (SELECT count(*) FROM events e
                     WHERE NOT EXISTS (SELECT 1 FROM boards b WHERE b.id = e.board_id))",
            &[&board],
        )
        .await
        .expect("counts");
    [row.get(0), row.get(1), row.get(2), row.get(3)]
}

/// Notes and events no longer reference boards (migration 10): the write functions' lock
/// on the board row and the delete's trigger keep them together. Writers create notes on a
/// board as fast as they can while it is deleted; once it is gone, PostgreSQL holds no note
/// and no event of it, nor any other orphan.
#[tokio::test]
async fn creates_racing_a_board_delete_leave_no_notes_or_events_behind() {
    let app = spawn_app().await;
    let sql = app.sql().await;
    for round in 0..5 {
        let board = app.board_id().await;
        let created = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut writers = Vec::new();
        for w in 0..8 {
            let http = app.http.clone();
            let url = app.url(&format!("/api/boards/{board}/notes"));
            let created = created.clone();
            writers.push(tokio::spawn(async move {
                for n in 0.. {
                    let response = http
                        .post(&url)
                        .json(&json!({ "text": format!("{w}/{n}"), "x": n, "y": w }))
                        .send()
                        .await
                        .expect("POST is answered");
                    match response.status().as_u16() {
                        201 => created.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
                        404 => return,
                        other => panic!("a create answered {other}"),
                    };
                }
            }));
        }
        // Delete while the writers are at it: some creates have committed, more are in
        // flight.
        assert!(
            eventually(Duration::from_secs(10), || async {
                created.load(std::sync::atomic::Ordering::SeqCst) >= 8
            })
            .await,
            "the writers create notes"
        );
        let response = app
            .http
            .delete(app.url(&format!("/api/boards/{board}")))
            .send()
            .await
            .expect("DELETE");
        assert_eq!(response.status(), 204);
        for writer in writers {
            writer.await.expect("each writer ends at the 404");
        }
        let board: Uuid = board.parse().expect("uuid");
        assert_eq!(rows_left(&sql, board).await, [0; 4], "round {round}");
    }
}

/// A database as migration 9's release left it, with that release still running through
/// the upgrade (a deploy): statements it prepared before migration 10 (its create, its
/// notes query) go on working after it, beside the new release's create; the title rule
/// still holds in the database; and a board deleted by a plain DELETE takes its notes and
/// events with it, as the foreign keys' cascade did.
#[tokio::test]
async fn a_release_on_migration_9_keeps_working_through_migration_10() {
    let database = create_empty_database().await;
    let mut migrator = database.client().await;
    let applied = migrations::migrate_to(&mut migrator, 9)
        .await
        .expect("migrates to 9");
    assert_eq!(applied, (1..=9).collect::<Vec<i32>>());
    let old = database.client().await;
    let board = Uuid::new_v4();
    let channel = BoardId(board).channel();
    old.execute(
        "INSERT INTO boards (id, title) VALUES ($1, 'before')",
        &[&board],
    )
    .await
    .expect("a board");
    // What migration 9's release prepares (src/db/notes.rs then): its create and its list.
    let create = old
        .prepare(
            "SELECT * FROM boardcast_note_create(
                 $1, $2, $3, 1.5, -2, '#abcdef', 200, 160, NULL, $4, $5, 1000, 8000)",
        )
        .await
        .expect("the old create");
    let list = old
        .prepare(
            "SELECT id, board_id, text, x, y, color, width, height, version, author, created_at,
                    updated_at FROM notes WHERE board_id = $1 ORDER BY created_at, id",
        )
        .await
        .expect("the old list");
    let old_create = |text: &'static str| {
        let (old, create, channel) = (&old, &create, &channel);
        async move {
            let id = Uuid::new_v4();
            let head = format!(
                r##"{{"id":"{id}","board_id":"{board}","text":"{text}","x":1.5,"y":-2.0,"color":"#abcdef","width":200.0,"height":160.0,"version":1,"author":null"##
            );
            let row = old
                .query_one(create, &[&board, &id, &text, &head, channel])
                .await
                .expect("the old create runs");
            let outcome: String = row.get("outcome");
            assert_eq!(outcome, "done");
        }
    };
    old_create("one").await;
    assert_eq!(old.query(&list, &[&board]).await.expect("list").len(), 1);

    let applied = migrations::migrate(&mut migrator).await.expect("migrates");
    assert_eq!(
        applied,
        (10..=migrations::latest_version()).collect::<Vec<i32>>()
    );
    old_create("two").await;
    let rows = old
        .query(&list, &[&board])
        .await
        .expect("the old list after");
    let texts: Vec<&str> = rows.iter().map(|r| r.get("text")).collect();
    assert_eq!(texts, ["one", "two"]);

    let app = spawn_on(&database, |_| {}).await;
    let board_text = board.to_string();
    let (_listener, mut rx) = listen(&app, &board_text).await;
    let note = app.add_note(&board_text, "three").await;
    let (payload, event) = receive(&mut rx, &board_text, 1).await.remove(0);
    assert_eq!(event["seq"], 3, "{payload}");
    assert_eq!(event["note"], note);
    old_create("four").await;
    assert_eq!(logged_seqs(&app, &board_text).await, vec![1, 2, 3, 4]);

    // The title rule, now a trigger, refuses what the CHECK refused, with its SQLSTATE;
    // taking a seq (no title written) passes.
    for (statement, title) in [
        (
            "INSERT INTO boards (id, title) VALUES (gen_random_uuid(), $1)",
            String::new(),
        ),
        ("UPDATE boards SET title = $1", "x".repeat(201)),
    ] {
        let error = old
            .execute(statement, &[&title])
            .await
            .expect_err("a bad title is refused");
        assert_eq!(
            error.code(),
            Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION),
            "{error}"
        );
    }
    old.execute(
        "UPDATE boards SET title = repeat('y', 200), seq = seq WHERE id = $1",
        &[&board],
    )
    .await
    .expect("200 characters are a title");

    old.execute("DELETE FROM boards WHERE id = $1", &[&board])
        .await
        .expect("a plain DELETE");
    assert_eq!(rows_left(&old, board).await, [0; 4]);
    app.stop().await;
}

/// A new database with no schema at all (dropped when the value is); and its URL.
async fn empty_database() -> (TestDatabase, String) {
    let database = create_empty_database().await;
    let url = database_url(&base_settings(), &database);
    (database, url)
}

/// Runs the real binary with `args` and `env`; its exit status and stderr. Killed if it
/// runs for more than 30 s (a `serve` that should have refused to start).
async fn run_boardcast(args: &[&str], env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_boardcast"));
    command
        .args(args)
        .env_remove("JWT_SECRET")
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("boardcast exits by itself")
        .expect("boardcast runs");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn two_migrations_at_once_both_succeed_and_apply_the_schema_once() {
    let (name, url) = empty_database().await;
    let env = [("DATABASE_URL", url.as_str())];
    let (first, second) = tokio::join!(
        run_boardcast(&["migrate"], &env),
        run_boardcast(&["migrate"], &env)
    );
    for (status, stderr) in [&first, &second] {
        assert!(status.success(), "migrate exits 0: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let again = run_boardcast(&["migrate"], &env).await;
    assert!(again.0.success(), "a third run is a no-op: {}", again.1);

    let mut settings = base_settings();
    settings.database.dbname(&*name);
    let (client, connection) = settings
        .database
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connects");
    tokio::spawn(connection);
    let applied: Vec<(i32, i64)> = client
        .query(
            "SELECT version, count(*) FROM schema_migrations GROUP BY version ORDER BY version",
            &[],
        )
        .await
        .expect("schema_migrations")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let expected: Vec<(i32, i64)> = boardcast::db::migrations::MIGRATIONS
        .iter()
        .map(|m| (m.version, 1))
        .collect();
    assert_eq!(applied, expected, "one row per migration");
    for table in ["boards", "notes", "events"] {
        let exists: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .await
            .expect("to_regclass")
            .get(0);
        assert!(exists, "{table} exists");
    }
}

#[tokio::test]
async fn serve_refuses_an_unmigrated_database_pointing_to_migrate() {
    let (_database, url) = empty_database().await;
    let (status, stderr) = run_boardcast(&["serve"], &[("DATABASE_URL", url.as_str())]).await;
    assert!(!status.success(), "serve must not start: {stderr}");
    assert!(stderr.contains("boardcast migrate"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn a_bad_setting_stops_the_binary_naming_the_variable() {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    for (var, value) in [
        ("PORT", "abc"),
        ("HEARTBEAT_INTERVAL", "banana"),
        ("DATABASE_URL", "nonsense"),
    ] {
        // No command: `serve` is the default.
        let (status, stderr) =
            run_boardcast(&[], &[("DATABASE_URL", url.as_str()), (var, value)]).await;
        assert!(!status.success(), "{var}={value} must stop it: {stderr}");
        assert!(stderr.contains(var), "the message names {var}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// A database at migration 9 while its release runs: a writer, a board, and a reader idle
/// in a transaction that read `notes` (which migration 10 alters).
struct BusyAt9 {
    /// Dropped (the database with it) when the test ends.
    _database: TestDatabase,
    migrator: tokio_postgres::Client,
    writer: tokio_postgres::Client,
    reader: tokio_postgres::Client,
    board: Uuid,
}

async fn busy_database_at_9() -> BusyAt9 {
    let database = create_empty_database().await;
    let mut migrator = database.client().await;
    migrations::migrate_to(&mut migrator, 9)
        .await
        .expect("migrates to 9");
    let writer = database.client().await;
    let board = Uuid::new_v4();
    writer
        .execute(
            "INSERT INTO boards (id, title) VALUES ($1, 'busy')",
            &[&board],
        )
        .await
        .expect("a board");
    let reader = database.client().await;
    reader
        .batch_execute("BEGIN; SELECT count(*) FROM notes")
        .await
        .expect("reads notes, and stays in the transaction");
    BusyAt9 {
        _database: database,
        migrator,
        writer,
        reader,
        board,
    }
}

/// One write of the running release (the seq every write takes), timed.
async fn timed_write(writer: &tokio_postgres::Client, board: Uuid) -> Duration {
    let started = std::time::Instant::now();
    tokio::time::timeout(
        Duration::from_secs(5),
        writer.execute("UPDATE boards SET seq = seq + 1 WHERE id = $1", &[&board]),
    )
    .await
    .expect("a write waits behind the migration for 5 s")
    .expect("a write");
    started.elapsed()
}

#[tokio::test]
async fn a_migration_waiting_for_a_busy_table_lets_writes_through_and_tries_again() {
    let busy = busy_database_at_9().await;
    let (mut migrator, writer, board) = (busy.migrator, &busy.writer, busy.board);
    let policy = migrations::LockPolicy {
        timeout: Duration::from_millis(200),
        attempts: 100,
        pause: Duration::from_millis(100),
    };
    let migrating =
        tokio::spawn(async move { migrations::migrate_with(&mut migrator, 10, policy).await });
    for _ in 0..12 {
        let took = timed_write(writer, board).await;
        // Without a lock timeout this write waits for the idle reader: for ever here.
        assert!(
            took < Duration::from_secs(1),
            "a write waited {took:?} behind the migration"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !migrating.is_finished(),
        "the migration waits for the reader"
    );
    busy.reader
        .batch_execute("COMMIT")
        .await
        .expect("the reader ends");
    let applied = tokio::time::timeout(Duration::from_secs(10), migrating)
        .await
        .expect("the migration ends once the table is free")
        .expect("joins")
        .expect("migrates");
    assert_eq!(applied, vec![10]);
    assert!(timed_write(writer, board).await < Duration::from_secs(1));
}

#[tokio::test]
async fn a_migration_that_never_gets_its_locks_gives_up_with_the_reason_and_changes_nothing() {
    let busy = busy_database_at_9().await;
    let (mut migrator, writer, board) = (busy.migrator, &busy.writer, busy.board);
    let policy = migrations::LockPolicy {
        timeout: Duration::from_millis(100),
        attempts: 2,
        pause: Duration::from_millis(50),
    };
    let error = migrations::migrate_with(&mut migrator, 10, policy)
        .await
        .expect_err("the table stays busy");
    let said = error.to_string();
    assert!(
        said.contains("migration 10 (lean_note_writes) failed after 2 attempt(s)")
            && said.contains("lock"),
        "{said}"
    );
    assert_eq!(
        migrations::current_version(&migrator)
            .await
            .expect("version"),
        9
    );
    assert!(timed_write(writer, board).await < Duration::from_secs(1));
    busy.reader
        .batch_execute("COMMIT")
        .await
        .expect("the reader ends");
}
