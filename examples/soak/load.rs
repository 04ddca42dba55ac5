//! The soak's traffic: writes spread over the boards and the instances, cursor signals
//! from some viewers, and the churn of clients leaving, resetting and stalling.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
use serde_json::{Value, json};
use tokio::{sync::Semaphore, time::interval};

use crate::client::{LEAVE, RESET, STALL, Shared};

/// What the writers saw, by outcome.
#[derive(Default, Debug)]
pub struct WriteStats {
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
    pub big: u64,
    /// 412: another writer's edit won (the writer refreshes its copy)
    pub stale: u64,
    /// 404: the note was deleted meanwhile
    pub missing: u64,
    /// 503: the database was unavailable (an honest refusal)
    pub unavailable: u64,
    /// No answer: the instance was down or restarting
    pub network: u64,
    /// Any other status; 5xx other than 503 fail the soak
    pub other: HashMap<u16, u64>,
}

#[derive(Default, Debug)]
pub struct SignalStats {
    pub accepted: u64,
    /// 403: the viewer's stream had just closed (a churned client)
    pub refused: u64,
    pub limited: u64,
    pub network: u64,
    pub other: HashMap<u16, u64>,
}

/// A writer's idea of a board's notes: id → version. Writers share it so edits carry a
/// plausible `If-Match`; a 412 refreshes it.
type Model = Mutex<HashMap<String, Vec<(String, i64)>>>;

/// Writes at `rate` per second until `stop`: creates (one in twenty of 9,000 characters),
/// edits with `If-Match`, deletes, each to a random instance.
pub async fn writers(
    http: reqwest::Client,
    bases: Arc<Vec<String>>,
    boards: Arc<Vec<String>>,
    rate: f64,
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<WriteStats>>,
) {
    let model: Arc<Model> = Arc::default();
    let inflight = Arc::new(Semaphore::new(64));
    let mut tick = interval(Duration::from_secs_f64(1.0 / rate.max(0.1)));
    let mut rng = StdRng::from_os_rng();
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            return;
        };
        let board = boards.choose(&mut rng).cloned().unwrap_or_default();
        let base = bases.choose(&mut rng).cloned().unwrap_or_default();
        let roll: f64 = rng.random();
        let seed: u64 = rng.random();
        let (http, model, stats) = (http.clone(), model.clone(), stats.clone());
        tokio::spawn(async move {
            write_one(&http, &base, &board, roll, seed, &model, &stats).await;
            drop(permit);
        });
    }
}

async fn write_one(
    http: &reqwest::Client,
    base: &str,
    board: &str,
    roll: f64,
    seed: u64,
    model: &Model,
    stats: &Mutex<WriteStats>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let known = model
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(board)
        .cloned()
        .unwrap_or_default();
    let target = known.choose(&mut rng).cloned();
    let target_id = target.as_ref().map(|(id, _)| id.clone());
    let url = format!("{base}/api/boards/{board}/notes");
    let (kind, request) = match target {
        Some((id, version)) if roll < 0.6 || (known.len() > 12 && roll < 0.8) => (
            "edit",
            http.patch(format!("{url}/{id}"))
                .header("If-Match", format!("\"{version}\""))
                .json(&json!({ "text": format!("edit {seed:x}"), "x": rng.random_range(0.0..2000.0) })),
        ),
        Some((id, _)) if roll >= 0.85 || known.len() > 12 => {
            ("delete", http.delete(format!("{url}/{id}")))
        }
        _ => {
            let big = rng.random_ratio(1, 20);
            let text = if big {
                "x".repeat(9_000)
            } else {
                format!("note {seed:x}")
            };
            (
                if big { "big" } else { "create" },
                http.post(&url).json(&json!({
                    "text": text, "x": rng.random_range(0.0..2000.0), "y": rng.random_range(0.0..1500.0)
                })),
            )
        }
    };
    let response = match request.timeout(Duration::from_secs(30)).send().await {
        Ok(r) => r,
        Err(_) => {
            stats.lock().unwrap_or_else(PoisonError::into_inner).network += 1;
            return;
        }
    };
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let mut s = stats.lock().unwrap_or_else(PoisonError::into_inner);
    let mut m = model.lock().unwrap_or_else(PoisonError::into_inner);
    let notes = m.entry(board.to_string()).or_default();
    let id = body["id"].as_str().map(str::to_string);
    match (status, kind) {
        (201, _) => {
            if kind == "big" {
                s.big += 1;
            }
            s.created += 1;
            if let (Some(id), Some(v)) = (id, body["version"].as_i64()) {
                notes.push((id, v));
            }
        }
        (200, "edit") => {
            s.updated += 1;
            if let (Some(id), Some(v)) = (id, body["version"].as_i64()) {
                notes.retain(|(n, _)| *n != id);
                notes.push((id, v));
            }
        }
        (204, "delete") => {
            s.deleted += 1;
            if let Some(id) = &target_id {
                notes.retain(|(n, _)| n != id);
            }
        }
        (412, _) => {
            s.stale += 1;
            // The 412 body carries the current note: adopt its version.
            let current = &body["note"];
            if let (Some(id), Some(v)) = (current["id"].as_str(), current["version"].as_i64()) {
                notes.retain(|(n, _)| n != id);
                notes.push((id.to_string(), v));
            }
        }
        (404, _) => {
            s.missing += 1;
            if let Some(id) = &target_id {
                notes.retain(|(n, _)| n != id);
            }
        }
        (503, _) => s.unavailable += 1,
        (other, _) => *s.other.entry(other).or_default() += 1,
    }
}

/// Cursor signals: every 200 ms each of up to `senders` live clients with a known viewer
/// id sends its position to its own instance.
pub async fn signals(
    http: reqwest::Client,
    clients: Arc<Vec<(String, String, Arc<Shared>)>>,
    senders: usize,
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<SignalStats>>,
) {
    let mut tick = interval(Duration::from_millis(200));
    let mut step = 0u64;
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        step += 1;
        let mut sent = 0;
        for (base, board, shared) in clients.iter() {
            if sent == senders {
                break;
            }
            if !shared.live.load(Ordering::SeqCst) {
                continue;
            }
            let Some(viewer) = shared
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .viewer
                .clone()
            else {
                continue;
            };
            sent += 1;
            let (http, stats) = (http.clone(), stats.clone());
            let url = format!("{base}/api/boards/{board}/signals");
            tokio::spawn(async move {
                let r = http
                    .post(url)
                    .json(&json!({ "viewer": viewer, "kind": "cursor", "data": { "x": step % 1000, "y": 7 } }))
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                let mut s = stats.lock().unwrap_or_else(PoisonError::into_inner);
                match r.map(|r| r.status().as_u16()) {
                    Ok(202) => s.accepted += 1,
                    Ok(403) => s.refused += 1,
                    Ok(429) => s.limited += 1,
                    Ok(other) => *s.other.entry(other).or_default() += 1,
                    Err(_) => s.network += 1,
                }
            });
        }
    }
}

/// Every second, `per_second` random clients leave and come back (one in ten by RST);
/// every ten seconds two stop reading for two heartbeat intervals.
pub async fn churn(clients: Arc<Vec<Arc<Shared>>>, per_second: usize, stop: Arc<AtomicBool>) {
    let mut tick = interval(Duration::from_secs(1));
    let mut rng = StdRng::from_os_rng();
    let mut second = 0u64;
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        second += 1;
        for _ in 0..per_second {
            if let Some(c) = clients.choose(&mut rng) {
                let order = if rng.random_ratio(1, 10) {
                    RESET
                } else {
                    LEAVE
                };
                c.order.store(order, Ordering::SeqCst);
                c.wake.notify_one();
            }
        }
        if second.is_multiple_of(10) {
            for c in clients.choose_multiple(&mut rng, 2) {
                c.order.store(STALL, Ordering::SeqCst);
                c.wake.notify_one();
            }
        }
    }
}
