//! The presence of one board as a stream sees it: the opening `presence` event, the
//! announcements after it, and the crowd's `presence.count`, at most one a second.
//!
//! In shared mode the hub keeps a [`Roster`] per board it serves: the board's viewers in
//! memory, loaded once when the board gets its first stream here and then kept exact from
//! the versioned announcements (`domain::presence::Batch`), so an opening is answered
//! without reading the list from PostgreSQL. Per-stream mode has no shared place to keep
//! it; each stream turns the announcements into frames itself and reads the (capped) list
//! from the database only when it needs one.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::time::Instant;
use uuid::Uuid;

use super::sse;
use crate::db::presence::View;
use crate::domain::{
    event::EventName,
    ids::BoardId,
    presence::{Batch, Outcome, Tally, count_data, list_json, opening_data},
    viewer::Viewer,
};

/// The contract's "at most once a second" for `presence.count`.
pub const COUNT_EVERY: Duration = Duration::from_secs(1);

/// A board's presence as of one version, as an opening or a relist sends it: the list
/// (oldest first, at most the limit) is encoded once and shared by every stream.
#[derive(Debug)]
pub struct Listing {
    pub version: i64,
    pub tally: Tally,
    /// The JSON array of the listed viewers.
    pub list: Arc<str>,
}

impl Listing {
    /// From a database read capped at the limit.
    pub fn from_view(view: &View) -> Listing {
        Listing {
            version: view.version,
            tally: view.tally,
            list: list_json(&view.viewers).into(),
        }
    }

    /// The `presence` event of `board` for the stream whose viewer is `you`.
    pub fn frame(&self, board: BoardId, you: &Viewer) -> Bytes {
        sse::unsequenced(
            EventName::Presence,
            opening_data(board, you, &self.list, self.tally.count),
        )
    }
}

/// The frames of a batch's per-viewer announcements on `board`, joined.
pub fn announcement_frames(board: BoardId, outcome: &Outcome<'_>) -> Bytes {
    let mut frames = bytes::BytesMut::new();
    for announcement in &outcome.announced {
        frames.extend_from_slice(&sse::unsequenced(
            announcement.event_name(),
            announcement.data(board),
        ));
    }
    frames.freeze()
}

/// `presence.count` of `board`.
pub fn count_frame(board: BoardId, count: usize) -> Bytes {
    sse::unsequenced(EventName::PresenceCount, count_data(board, count))
}

/// At most one `presence.count` a second, and only when the count changed since the last.
#[derive(Debug, Default)]
pub struct CountPacer {
    sent: Option<usize>,
    at: Option<Instant>,
}

impl CountPacer {
    /// When `count` should go out: `None` if it already has (or the board is listed).
    pub fn due(&self, tally: Tally) -> Option<Instant> {
        if !tally.crowd || self.sent == Some(tally.count) {
            return None;
        }
        Some(match self.at {
            Some(at) => (at + COUNT_EVERY).max(Instant::now()),
            None => Instant::now(),
        })
    }

    /// The `presence.count` frame of `board` if one is due now.
    pub fn take(&mut self, board: BoardId, tally: Tally) -> Option<Bytes> {
        let due = self.due(tally)?;
        let now = Instant::now();
        if due > now {
            return None;
        }
        self.sent = Some(tally.count);
        self.at = Some(now);
        Some(count_frame(board, tally.count))
    }

    /// The count a stream just got in a `presence` event need not be sent again.
    pub fn listed(&mut self, count: usize) {
        self.sent = Some(count);
    }
}

/// What applying one announcement to a [`Roster`] gave.
pub enum Applied {
    /// Already reflected (the roster was loaded after it).
    Stale,
    /// Versions are missing in between: reload the roster.
    Gap,
    /// Per-viewer frames (possibly empty), or `relist`: every stream needs the full list.
    Frames { frames: Bytes, relist: bool },
}

/// One board's viewers, in memory, exact as of `version`.
pub struct Roster {
    version: i64,
    tally: Tally,
    limit: usize,
    /// Oldest first, as the opening lists them.
    viewers: BTreeMap<(DateTime<Utc>, Uuid), Viewer>,
    /// Each viewer's key in `viewers`: a departure is found by its id alone.
    keys: HashMap<Uuid, (DateTime<Utc>, Uuid)>,
    /// The snapshot of the current version, kept while nothing changes it.
    snapshot: Option<Arc<Listing>>,
    /// The listed part of the last snapshot (its last key), so a change past it (a crowd's
    /// newest arrivals) keeps the encoded list.
    listed_until: Option<(DateTime<Utc>, Uuid)>,
    list: Option<Arc<str>>,
    pub pacer: CountPacer,
}

impl Roster {
    /// From a database read of every viewer of the board.
    pub fn load(view: View, limit: usize) -> Roster {
        let viewers = view
            .viewers
            .into_iter()
            .map(|v| ((v.since, v.id), v))
            .collect::<BTreeMap<_, _>>();
        let keys = viewers.keys().map(|key| (key.1, *key)).collect();
        let mut pacer = CountPacer::default();
        pacer.listed(view.tally.count);
        Roster {
            version: view.version,
            // The count is the rows themselves: the two agree, read in one statement.
            tally: Tally {
                count: viewers.len(),
                crowd: view.tally.crowd,
            },
            limit,
            viewers,
            keys,
            snapshot: None,
            listed_until: None,
            list: None,
            pacer,
        }
    }

    pub fn version(&self) -> i64 {
        self.version
    }

    pub fn tally(&self) -> Tally {
        self.tally
    }

    /// Applies one announcement of `board`, in version order.
    pub fn apply(&mut self, board: BoardId, batch: &Batch) -> Applied {
        if batch.version <= self.version {
            return Applied::Stale;
        }
        if batch.version != self.version + 1 || batch.before.count != self.tally.count {
            return Applied::Gap;
        }
        let outcome = batch.outcome(self.limit);
        for viewer in &batch.joined {
            let key = (viewer.since, viewer.id);
            if let Some(old) = self.keys.insert(viewer.id, key) {
                self.viewers.remove(&old);
            }
            self.viewers.insert(key, viewer.clone());
            self.touch(key);
        }
        for viewer in &batch.left {
            if let Some(key) = self.keys.remove(&viewer.id) {
                self.touch(key);
                self.viewers.remove(&key);
            }
        }
        self.version = batch.version;
        self.tally = Tally {
            count: self.viewers.len(),
            crowd: outcome.after.crowd,
        };
        self.snapshot = None;
        Applied::Frames {
            frames: announcement_frames(board, &outcome),
            relist: outcome.relist,
        }
    }

    /// Forgets the encoded list if `viewer` is (or was) in it: called after a join and
    /// before a leave, so with more than `limit` viewers a key past the listed ones cannot
    /// have moved the first `limit`.
    fn touch(&mut self, key: (DateTime<Utc>, Uuid)) {
        let beyond =
            self.viewers.len() > self.limit && self.listed_until.is_some_and(|last| key > last);
        if !beyond {
            self.list = None;
            self.listed_until = None;
        }
    }

    /// The board's presence now, for openings and relists.
    pub fn snapshot(&mut self) -> Arc<Listing> {
        if let Some(snapshot) = &self.snapshot {
            return snapshot.clone();
        }
        let list = match &self.list {
            Some(list) => list.clone(),
            None => {
                let listed: Vec<&Viewer> = self.viewers.values().take(self.limit).collect();
                self.listed_until = listed.last().map(|v| (v.since, v.id));
                let list: Arc<str> = list_json(listed).into();
                self.list = Some(list.clone());
                list
            }
        };
        let snapshot = Arc::new(Listing {
            version: self.version,
            tally: self.tally,
            list,
        });
        self.snapshot = Some(snapshot.clone());
        snapshot
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::presence::PRESENCE_TYPE;

    fn viewer(i: usize) -> Viewer {
        Viewer {
            id: Uuid::new_v4(),
            name: format!("v{i}"),
            since: Utc::now() + chrono::Duration::milliseconds(i as i64),
        }
    }

    fn batch(version: i64, count: usize, crowd: bool, joined: Vec<Viewer>) -> Batch {
        Batch {
            kind: PRESENCE_TYPE.into(),
            version,
            before: Tally { count, crowd },
            joined,
            left: vec![],
        }
    }

    fn listed(snapshot: &Listing) -> Vec<String> {
        let list: Vec<Viewer> = serde_json::from_str(&snapshot.list).expect("list");
        list.into_iter().map(|v| v.name).collect()
    }

    #[test]
    fn a_roster_lists_the_oldest_and_keeps_the_list_while_a_crowd_grows() {
        let mut roster = Roster::load(View::default(), 3);
        let first: Vec<Viewer> = (0..3).map(viewer).collect();
        assert!(matches!(
            roster.apply(BoardId::new(), &batch(1, 0, false, first)),
            Applied::Frames { relist: false, .. }
        ));
        let before = roster.snapshot();
        assert_eq!(listed(&before), ["v0", "v1", "v2"]);
        let Applied::Frames { frames, .. } =
            roster.apply(BoardId::new(), &batch(2, 3, false, vec![viewer(3)]))
        else {
            panic!("applies");
        };
        assert!(frames.is_empty(), "the 4th makes a crowd: not announced");
        let after = roster.snapshot();
        assert_eq!(after.tally.count, 4);
        assert!(after.tally.crowd);
        assert!(Arc::ptr_eq(&before.list, &after.list), "list kept");
        assert!(matches!(
            roster.apply(BoardId::new(), &batch(2, 3, false, vec![])),
            Applied::Stale
        ));
        assert!(matches!(
            roster.apply(BoardId::new(), &batch(4, 4, true, vec![])),
            Applied::Gap
        ));
    }

    #[test]
    fn a_departure_is_found_by_its_id_whatever_precision_its_time_came_back_with() {
        use chrono::SubsecRound;
        let mut roster = Roster::load(View::default(), 10);
        let joined = viewer(0);
        roster.apply(BoardId::new(), &batch(1, 0, false, vec![joined.clone()]));
        let mut left = joined.clone();
        left.since = left.since.trunc_subsecs(3);
        let leave = Batch {
            left: vec![left],
            ..batch(2, 1, false, vec![])
        };
        assert!(matches!(
            roster.apply(BoardId::new(), &leave),
            Applied::Frames { .. }
        ));
        assert_eq!(roster.tally().count, 0);
        assert_eq!(listed(&roster.snapshot()), Vec::<String>::new());
    }

    #[test]
    fn the_count_goes_out_at_most_once_a_second() {
        let mut pacer = CountPacer::default();
        let crowd = |count| Tally { count, crowd: true };
        assert!(pacer.take(BoardId::new(), crowd(6)).is_some());
        assert!(pacer.take(BoardId::new(), crowd(6)).is_none(), "unchanged");
        assert!(
            pacer.take(BoardId::new(), crowd(7)).is_none(),
            "within the second"
        );
        let due = pacer.due(crowd(7)).expect("due later");
        assert!(due >= Instant::now() + Duration::from_millis(900));
        assert!(
            pacer
                .due(Tally {
                    count: 3,
                    crowd: false
                })
                .is_none()
        );
    }
}
