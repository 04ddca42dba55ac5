//! How a stream gets its board's events: the opening (snapshot or replay), the live
//! events after it with nothing missed and nothing twice, heartbeats, and the end of the
//! stream (client gone, slow, shutdown, board deleted).

mod backoff;
mod body;
pub(crate) mod hub;
pub(crate) mod listener;
pub(crate) mod notification;
pub(crate) mod presence;
pub(crate) mod roster;
pub(crate) mod signals;
pub(crate) mod sse;
pub(crate) mod stats;
mod stream;

use std::{collections::HashMap, sync::Arc, time::Duration};

use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::{Semaphore, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::db::{Database, DbError, boards, events, notes};
use crate::domain::{ids::BoardId, viewer::Viewer};
use crate::error::ApiError;
pub(crate) use body::{EventBody, WRITE_BUFFER_FILL};
use hub::Hub;
use presence::Presence;
use roster::Listing;
use signals::Signals;
pub use stats::{CloseReason, Stats};
use stream::{ClientSlot, Opening};

/// The longest an opening waits for the shared hub to hear its own join.
const OPENING_WAIT: Duration = Duration::from_secs(10);
/// The `retry:` a stream opens with: how long EventSource waits before reconnecting.
pub(crate) const OPENING_RETRY: Duration = Duration::from_millis(2000);

/// What the stream machinery needs to know, fixed at start.
#[derive(Clone, Debug)]
pub(crate) struct LiveSettings {
    pub heartbeat: Duration,
    pub max_streams: usize,
    pub max_streams_per_client: usize,
}

impl LiveSettings {
    pub fn new(settings: &Settings, max_streams: usize) -> LiveSettings {
        LiveSettings {
            heartbeat: settings.heartbeat,
            max_streams,
            max_streams_per_client: settings.max_streams_per_client,
        }
    }
}

/// Who opens a stream, on which boards, and from where each resumes.
#[derive(Clone, Debug)]
pub(crate) struct OpenRequest {
    /// One board (`/api/boards/{id}/events`) or, for a many-board stream (`/api/events`),
    /// 1 to `MAX_BOARDS_PER_STREAM` distinct boards in the order listed. A stream of more
    /// than one board uses the cursor as its ids.
    pub boards: Vec<BoardId>,
    /// Per board (same order), the last event id to resume after; `None`: a snapshot.
    pub resume: Vec<Option<i64>>,
    pub viewer: String,
    /// The client the per-client stream cap counts against (token subject or IP).
    pub client_key: String,
    /// When the caller's token expires; the stream is closed then.
    pub expires_at: Option<std::time::SystemTime>,
    /// The caller's token subject (auth on): the only caller who may send signals as this
    /// stream's viewer.
    pub sub: Option<String>,
    /// `?session=`: a viewer of this session (and `sub`) held since its stream closed is
    /// taken over, id and all, with nothing announced for the gap.
    pub session: Option<String>,
}

/// Shared by every stream of the process.
#[derive(Clone)]
pub(crate) struct Live {
    db: Database,
    settings: Arc<LiveSettings>,
    capacity: Arc<Semaphore>,
    per_client: Arc<Mutex<HashMap<String, usize>>>,
    shutdown: CancellationToken,
    stats: Arc<Stats>,
    presence: Arc<Presence>,
    /// The instance's shared listener (`LISTENER=shared`); `None` in per-stream mode.
    hub: Option<Hub>,
    signals: Arc<Signals>,
}

impl Live {
    pub fn new(
        db: Database,
        settings: LiveSettings,
        shutdown: CancellationToken,
        stats: Arc<Stats>,
        presence: Arc<Presence>,
        hub: Option<Hub>,
        signals: Arc<Signals>,
    ) -> Live {
        Live {
            db,
            presence,
            hub,
            signals,
            capacity: Arc::new(Semaphore::new(settings.max_streams)),
            settings: Arc::new(settings),
            per_client: Arc::default(),
            shutdown,
            stats,
        }
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    pub fn presence(&self) -> &Arc<Presence> {
        &self.presence
    }

    pub fn signals(&self) -> &Arc<Signals> {
        &self.signals
    }

    /// Opens a stream: LISTEN first, then read the snapshot or plan the replay, then hand
    /// everything to the stream's task. Errors come before any byte is sent, so the client
    /// gets a proper status (404, 503).
    ///
    /// Safe to cancel: actix drops a handler's future when its client hangs up, and an
    /// opening cut between its presence join and its stream task would leave a viewer that
    /// nobody removes. So the opening runs to its end in a task of its own; if the caller is
    /// gone by then, the body is discarded and the stream task ends at once, announcing the
    /// leave.
    pub async fn open(&self, request: OpenRequest) -> Result<EventBody, ApiError> {
        let live = self.clone();
        let (answer, opened) = oneshot::channel();
        tokio::spawn(async move {
            if let Err(Ok(body)) = answer.send(live.open_to_the_end(request).await) {
                body.discard();
            }
        });
        opened
            .await
            .map_err(|_| ApiError::unavailable("the server is shutting down; reconnect shortly"))?
    }

    /// The opening itself; not safe to cancel (see `open`).
    async fn open_to_the_end(&self, request: OpenRequest) -> Result<EventBody, ApiError> {
        if self.shutdown.is_cancelled() {
            return Err(ApiError::unavailable(
                "the server is shutting down; reconnect shortly",
            ));
        }
        let slot = self.capacity.clone().try_acquire_owned().map_err(|_| {
            ApiError::unavailable(format!(
                "this server is at its limit of {} open streams; try again shortly",
                self.settings.max_streams
            ))
        })?;
        let client_slot = self.claim_client_slot(&request.client_key)?;

        // What the client gets: filled by the stream task, and by the hub in shared mode
        // (signals, and live events once the stream is live).
        let outbox = Arc::new(body::Outbox::default());
        // LISTEN first: whatever commits after this is heard, so the opening read below
        // and the live events after it leave no gap.
        let source = match &self.hub {
            Some(hub) => {
                let mut subscriptions = Vec::with_capacity(request.boards.len());
                for board in &request.boards {
                    subscriptions.push(hub.subscribe(*board, outbox.clone()).await?);
                }
                stream::Source::Shared(stream::Subscriptions::new(subscriptions))
            }
            None => {
                let listener = listener::Listener::open(&self.db, &request.boards).await?;
                self.stats.listener_opened();
                stream::Source::Dedicated(Some(listener))
            }
        };
        let begun = self.begin(&request).await;
        let starts = match begun {
            Ok(Ok(starts)) => starts,
            failed => {
                if matches!(source, stream::Source::Dedicated(Some(_))) {
                    self.stats.listener_closed();
                }
                return Err(match failed {
                    Err(e) => e.into(),
                    Ok(Err(missing)) => ApiError::board_not_found(missing),
                    Ok(Ok(_)) => unreachable!("handled above"),
                });
            }
        };

        let lanes: Vec<stream::Lane> = starts
            .into_iter()
            .map(|(board, opening, viewer, listing)| stream::Lane {
                // A resumed board's slot is the client's from the start: a cursor taken
                // before its replay is sent still resumes it.
                last_sent: match &opening {
                    Opening::Replay { after, .. } => *after,
                    Opening::Snapshot { .. } => 0,
                },
                opened: matches!(opening, Opening::Replay { .. }),
                board,
                registration: Some(self.signals.register(
                    viewer.id,
                    signals::Sender {
                        board,
                        name: viewer.name.clone(),
                        sub: request.sub.clone(),
                    },
                )),
                seen: stream::Seen::new(&listing),
                viewer,
                opening: Some(opening),
                listing: Some(listing),
                replay_upto: None,
                deleted: false,
            })
            .collect();
        // The first bytes go out at once: Heroku's router wants a byte within 30 s.
        let _ = outbox.push(sse::retry(OPENING_RETRY));
        self.stats.stream_opened();
        for (lane, resume) in lanes.iter().zip(&request.resume) {
            log::info!(
                "stream opened: board={} viewer={:?} ({}) from={}",
                lane.board,
                lane.viewer.name,
                lane.viewer.id,
                resume.map_or("snapshot".to_string(), |id| format!("id {id}"))
            );
        }

        let task = stream::StreamTask {
            db: self.db.clone(),
            lanes,
            presence: self.presence.clone(),
            outbox: outbox.clone(),
            counts_crowds: self.hub.is_none(),
            source,
            expires_at: request.expires_at.map(|at| {
                let left = at
                    .duration_since(std::time::SystemTime::now())
                    .unwrap_or_default();
                tokio::time::Instant::now() + left
            }),
            heartbeat: self.settings.heartbeat,
            shutdown: self.shutdown.clone(),
            stats: self.stats.clone(),
            _slots: (slot, client_slot),
        };
        tokio::spawn(task.run());
        Ok(EventBody::new(outbox))
    }

    fn claim_client_slot(&self, key: &str) -> Result<ClientSlot, ApiError> {
        let mut counts = self.per_client.lock();
        let count = counts.entry(key.to_string()).or_insert(0);
        if *count >= self.settings.max_streams_per_client {
            // The contract answers a per-client cap like the instance cap: 503 + Retry-After.
            return Err(ApiError::unavailable(format!(
                "this client already has {} open streams, the most allowed; close one first",
                self.settings.max_streams_per_client
            )));
        }
        *count += 1;
        Ok(ClientSlot {
            key: key.to_string(),
            counts: self.per_client.clone(),
        })
    }

    /// Plans every board's opening (so a missing board answers 404 before anyone joins),
    /// then joins each board's viewers and reads its presence as of that join. `Err` in
    /// the `Ok`: the first board that does not exist.
    async fn begin(&self, request: &OpenRequest) -> Result<Result<Vec<Start>, BoardId>, DbError> {
        let mut openings = Vec::with_capacity(request.boards.len());
        for (board, resume) in request.boards.iter().zip(&request.resume) {
            match self.plan(*board, *resume).await? {
                Some(opening) => openings.push(opening),
                None => return Ok(Err(*board)),
            }
        }
        // The joins go out together: the presence writer batches them in one round.
        let joins = request.boards.iter().map(|board| {
            self.presence.join(
                *board,
                request.viewer.clone(),
                request.sub.clone(),
                request.session.clone(),
            )
        });
        let joined = futures_util::future::join_all(joins).await;
        let mut viewers = Vec::with_capacity(joined.len());
        let mut failed: Option<Result<BoardId, DbError>> = None;
        for (board, outcome) in request.boards.iter().zip(joined) {
            match outcome {
                Ok(Some(viewer)) => viewers.push((*board, viewer)),
                Ok(None) => failed = failed.or(Some(Ok(*board))),
                Err(e) => failed = failed.or(Some(Err(e))),
            }
        }
        let mut listings = Vec::with_capacity(viewers.len());
        if failed.is_none() {
            for (board, (_, version)) in &viewers {
                match self.presence_as_of(*board, *version).await {
                    Ok(listing) => listings.push(listing),
                    Err(e) => {
                        failed = Some(Err(e));
                        break;
                    }
                }
            }
        }
        if let Some(failure) = failed {
            // Joined but never opened: announce the leaves in the background.
            let presence = self.presence.clone();
            tokio::spawn(async move {
                for (board, (viewer, _)) in viewers {
                    presence.leave(board, viewer.id).await;
                }
            });
            return failure.map(Err);
        }
        Ok(Ok(viewers
            .into_iter()
            .zip(openings)
            .zip(listings)
            .map(|(((board, (viewer, _)), opening), listing)| (board, opening, viewer, listing))
            .collect()))
    }

    /// The board's presence for an opening, reflecting at least `version`: from the hub's
    /// roster in shared mode (no list read per join), from the database (capped at the
    /// list limit) in per-stream mode.
    async fn presence_as_of(&self, board: BoardId, version: i64) -> Result<Arc<Listing>, DbError> {
        match &self.hub {
            Some(hub) => {
                // The roster reaches `version` as soon as the hub hears the join's NOTIFY;
                // only a listener outage (or a hub far behind) holds it up, and then the
                // client gets 503 + Retry-After rather than a hang.
                tokio::time::timeout(OPENING_WAIT, hub.opening(board, version))
                    .await
                    .map_err(|_| DbError::unavailable("the shared listener is behind"))?
            }
            None => {
                let view = self.presence.view(board, false).await?;
                Ok(Arc::new(Listing::from_view(&view)))
            }
        }
    }

    /// Decides between replay and snapshot in one consistent read. `None`: no such board.
    async fn plan(
        &self,
        board: BoardId,
        last_event_id: Option<i64>,
    ) -> Result<Option<Opening>, DbError> {
        let mut client = self.db.client().await?;
        let tx = crate::db::consistent_read(&mut client).await?;
        let Some(current) = boards::find(&tx, board).await? else {
            return Ok(None);
        };
        if let Some(last) = last_event_id {
            // A replay is never partial: only when the event right after `last` is kept.
            let resumable = last == current.seq
                || (last < current.seq && events::is_kept(&tx, board, last + 1).await?);
            if resumable {
                return Ok(Some(Opening::Replay {
                    after: last,
                    upto: current.seq,
                }));
            }
        }
        let notes = notes::list(&tx, board).await?;
        tx.commit().await?;
        let seq = current.seq;
        let data = json!({ "seq": seq, "board": current, "notes": notes }).to_string();
        Ok(Some(Opening::Snapshot { seq, data }))
    }
}

/// One board of an opening: how it begins, its viewer, and its presence as of the join.
type Start = (BoardId, Opening, Viewer, Arc<Listing>);
