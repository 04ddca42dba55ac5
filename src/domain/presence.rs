//! Presence changes as they travel: the NOTIFY payload of a batch of joins and leaves, the
//! crowd rule (`PRESENCE_LIST_LIMIT` with its hysteresis) that decides, viewer by viewer,
//! what streams are told, and the `data` of every presence event.
//!
//! A board's presence changes are numbered by a per-board `version` (the `board_presence`
//! row): each NOTIFY carries the version it produced and the count and crowd state before
//! it, so any listener can turn it into the same announcements without knowing the board's
//! history, and one that keeps the board's viewers in memory can apply exactly the changes
//! after the version it loaded.

use serde::{Deserialize, Serialize};

use super::{
    event::{EventName, NOTIFY_PAYLOAD_LIMIT},
    ids::BoardId,
    viewer::Viewer,
};

/// The NOTIFY payload `type` of a presence batch.
pub const PRESENCE_TYPE: &str = "presence";

/// A board's viewer count and whether it is a crowd (above the list limit, and not yet
/// back down to 80 % of it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    #[serde(rename = "n")]
    pub count: usize,
    pub crowd: bool,
}

/// What one viewer arriving or leaving did to the board's crowd state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    None,
    /// The count passed the limit: per-viewer announcements stop.
    BecameCrowd,
    /// A crowd shrank to 80 % of the limit: everyone gets the full list again.
    BackToList,
}

/// The count at or below which a crowd is listed again: 80 % of the limit (rounded down),
/// so a board hovering at the limit does not flap between the two forms.
pub fn list_again_at(limit: usize) -> usize {
    limit * 4 / 5
}

impl Tally {
    /// Applies one arrival (`joined`) or departure.
    pub fn step(&mut self, joined: bool, limit: usize) -> Transition {
        if joined {
            self.count += 1;
        } else {
            self.count = self.count.saturating_sub(1);
        }
        if !self.crowd && self.count > limit {
            self.crowd = true;
            Transition::BecameCrowd
        } else if self.crowd && self.count <= list_again_at(limit) {
            self.crowd = false;
            Transition::BackToList
        } else {
            Transition::None
        }
    }
}

/// One committed presence change of a board: the NOTIFY payload, which carries what
/// everyone needs to announce it the same way.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    #[serde(rename = "type")]
    pub kind: String,
    /// The board's presence version this change produced.
    #[serde(rename = "v")]
    pub version: i64,
    /// The board's count and crowd state before it.
    #[serde(flatten)]
    pub before: Tally,
    #[serde(default)]
    pub joined: Vec<Viewer>,
    #[serde(default)]
    pub left: Vec<Viewer>,
}

impl Batch {
    /// Reads a presence payload; `None` for anything else.
    pub fn parse(payload: &str) -> Option<Batch> {
        let batch: Batch = serde_json::from_str(payload).ok()?;
        (batch.kind == PRESENCE_TYPE).then_some(batch)
    }

    /// What streams are told of this change under `limit`.
    pub fn outcome(&self, limit: usize) -> Outcome<'_> {
        let mut tally = self.before;
        let mut outcome = Outcome {
            announced: Vec::new(),
            relist: false,
            after: tally,
        };
        let changes = self
            .joined
            .iter()
            .map(|v| (true, v))
            .chain(self.left.iter().map(|v| (false, v)));
        for (joined, viewer) in changes {
            match tally.step(joined, limit) {
                // The list sent at the end holds this and every later change of the batch.
                Transition::BackToList => {
                    outcome.relist = true;
                    outcome.announced.clear();
                }
                Transition::BecameCrowd => outcome.relist = false,
                Transition::None => {}
            }
            if !tally.crowd && !outcome.relist {
                outcome.announced.push(Announcement {
                    joined,
                    viewer,
                    count: tally.count,
                });
            }
        }
        if tally.crowd {
            outcome.relist = false;
        }
        outcome.after = tally;
        outcome
    }
}

/// One `presence.joined` / `presence.left`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Announcement<'a> {
    pub joined: bool,
    pub viewer: &'a Viewer,
    /// The board's count right after this change.
    pub count: usize,
}

impl Announcement<'_> {
    pub fn event_name(&self) -> EventName {
        if self.joined {
            EventName::PresenceJoined
        } else {
            EventName::PresenceLeft
        }
    }

    /// The event's `data`: `{"type","board_id","viewer","count"}` (the board named, so a
    /// stream of many boards can tell them apart).
    pub fn data(&self, board: BoardId) -> String {
        #[derive(Serialize)]
        struct Data<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            board_id: BoardId,
            viewer: &'a Viewer,
            count: usize,
        }
        serde_json::to_string(&Data {
            kind: self.event_name().as_str(),
            board_id: board,
            viewer: self.viewer,
            count: self.count,
        })
        .unwrap_or_default()
    }
}

/// What a batch means to the streams of its board.
#[derive(Debug, PartialEq)]
pub struct Outcome<'a> {
    /// Per-viewer announcements, in order, each with the count after it.
    pub announced: Vec<Announcement<'a>>,
    /// The board stopped being a crowd: every stream gets the full list as of the end of
    /// the batch (which includes every change the batch made).
    pub relist: bool,
    pub after: Tally,
}

/// `presence.count`'s `data`.
pub fn count_data(board: BoardId, count: usize) -> String {
    format!("{{\"type\":\"presence.count\",\"board_id\":\"{board}\",\"count\":{count}}}")
}

/// The JSON array of viewers an opening `presence` event lists.
pub fn list_json<'a>(viewers: impl IntoIterator<Item = &'a Viewer>) -> String {
    let mut out = String::from("[");
    for (i, viewer) in viewers.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(viewer).unwrap_or_default());
    }
    out.push(']');
    out
}

/// An opening `presence` event's `data`: `{"board_id","you","viewers","count"}`, with
/// `viewers` the already encoded list (shared by every stream of a board).
pub fn opening_data(board: BoardId, you: &Viewer, viewers_json: &str, count: usize) -> String {
    let you = serde_json::to_string(you).unwrap_or_default();
    format!(
        "{{\"board_id\":\"{board}\",\"you\":{you},\"viewers\":{viewers_json},\"count\":{count}}}"
    )
}

/// Room left under PostgreSQL's NOTIFY limit for the payload's fixed fields.
const PAYLOAD_BUDGET: usize = NOTIFY_PAYLOAD_LIMIT - 200;

/// Splits one transaction's joins and leaves into NOTIFY payloads that each fit under
/// PostgreSQL's 8000-byte limit, numbered from `first_version`. Returns the payloads and
/// the tally after all of them.
pub fn payloads(
    first_version: i64,
    before: Tally,
    limit: usize,
    joined: &[Viewer],
    left: &[Viewer],
) -> (Vec<String>, Tally) {
    let mut payloads = Vec::new();
    let mut tally = before;
    let mut batch = Batch {
        kind: PRESENCE_TYPE.into(),
        version: first_version,
        before: tally,
        joined: Vec::new(),
        left: Vec::new(),
    };
    let mut size = 0;
    let changes = joined
        .iter()
        .map(|v| (true, v))
        .chain(left.iter().map(|v| (false, v)));
    for (is_join, viewer) in changes {
        // A viewer is at most ~1 KB of JSON (100-character names), far under the budget.
        let len = serde_json::to_string(viewer).map_or(0, |s| s.len()) + 1;
        if size + len > PAYLOAD_BUDGET && size > 0 {
            let next = Batch {
                kind: PRESENCE_TYPE.into(),
                version: batch.version + 1,
                before: tally,
                joined: Vec::new(),
                left: Vec::new(),
            };
            let full = std::mem::replace(&mut batch, next);
            payloads.push(serde_json::to_string(&full).unwrap_or_default());
            size = 0;
        }
        tally.step(is_join, limit);
        size += len;
        if is_join {
            batch.joined.push(viewer.clone());
        } else {
            batch.left.push(viewer.clone());
        }
    }
    if size > 0 {
        payloads.push(serde_json::to_string(&batch).unwrap_or_default());
    }
    (payloads, tally)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use uuid::Uuid;

    fn viewers(n: usize) -> Vec<Viewer> {
        (0..n)
            .map(|i| Viewer {
                id: Uuid::new_v4(),
                name: format!("viewer {i}"),
                since: Utc::now(),
            })
            .collect()
    }

    fn batch(before: Tally, joined: Vec<Viewer>, left: Vec<Viewer>) -> Batch {
        Batch {
            kind: PRESENCE_TYPE.into(),
            version: 1,
            before,
            joined,
            left,
        }
    }

    #[test]
    fn a_board_becomes_a_crowd_past_the_limit_and_lists_again_at_80_percent() {
        let mut tally = Tally::default();
        let steps: Vec<Transition> = (0..10).map(|_| tally.step(true, 5)).collect();
        assert_eq!(steps[4], Transition::None, "5 of 5 is still listed");
        assert_eq!(steps[5], Transition::BecameCrowd, "the 6th makes a crowd");
        assert!(steps[6..].iter().all(|t| *t == Transition::None));
        assert_eq!(tally.step(false, 5), Transition::None); // 9
        for _ in 0..4 {
            assert_eq!(tally.step(false, 5), Transition::None); // 8, 7, 6, 5: still a crowd
        }
        assert!(tally.crowd);
        assert_eq!(tally.step(false, 5), Transition::BackToList); // 4 = 80 % of 5
        assert_eq!(tally.step(false, 5), Transition::None);
        assert_eq!(
            tally,
            Tally {
                count: 3,
                crowd: false
            }
        );
        assert_eq!(list_again_at(100), 80);
        assert_eq!(list_again_at(1), 0);
    }

    #[test]
    fn announcements_stop_at_the_crowd_and_carry_the_count() {
        let joined = viewers(4);
        let b = batch(
            Tally {
                count: 3,
                crowd: false,
            },
            joined.clone(),
            vec![],
        );
        let outcome = b.outcome(5);
        let counts: Vec<usize> = outcome.announced.iter().map(|a| a.count).collect();
        assert_eq!(
            counts,
            [4, 5],
            "the 6th and 7th are not announced one by one"
        );
        assert_eq!(outcome.announced[1].viewer, &joined[1]);
        assert!(!outcome.relist);
        assert_eq!(
            outcome.after,
            Tally {
                count: 7,
                crowd: true
            }
        );
        let data: serde_json::Value =
            serde_json::from_str(&outcome.announced[0].data(BoardId::new())).expect("json");
        assert_eq!(data["count"], 4);
        assert_eq!(data["viewer"]["name"], "viewer 0");
    }

    #[test]
    fn a_crowd_shrinking_to_the_floor_is_listed_again_once() {
        let left = viewers(4);
        let b = batch(
            Tally {
                count: 7,
                crowd: true,
            },
            vec![],
            left,
        );
        let outcome = b.outcome(5);
        assert!(outcome.relist);
        assert!(
            outcome.announced.is_empty(),
            "the list covers the whole batch"
        );
        assert_eq!(
            outcome.after,
            Tally {
                count: 3,
                crowd: false
            }
        );
    }

    #[test]
    fn payloads_fit_under_the_notify_limit_and_number_their_versions() {
        let joined = viewers(300);
        let (payloads, after) = payloads(
            11,
            Tally {
                count: 2,
                crowd: false,
            },
            100,
            &joined,
            &[],
        );
        assert!(payloads.len() > 1);
        assert_eq!(
            after,
            Tally {
                count: 302,
                crowd: true
            }
        );
        let mut expected_count = 2;
        let mut all = Vec::new();
        for (i, payload) in payloads.iter().enumerate() {
            assert!(payload.len() < NOTIFY_PAYLOAD_LIMIT, "{}", payload.len());
            let parsed = Batch::parse(payload).expect("a presence batch");
            assert_eq!(parsed.version, 11 + i as i64);
            assert_eq!(parsed.before.count, expected_count);
            expected_count += parsed.joined.len();
            all.extend(parsed.joined);
        }
        assert_eq!(all, joined);
        assert_eq!(Batch::parse("{\"type\":\"note.created\",\"seq\":1}"), None);
    }

    #[test]
    fn opening_data_names_you_the_list_and_the_count() {
        let vs = viewers(2);
        let board = BoardId::new();
        let data = opening_data(board, &vs[1], &list_json(&vs), 2);
        let v: serde_json::Value = serde_json::from_str(&data).expect("json");
        assert_eq!(v["you"]["id"], vs[1].id.to_string());
        assert_eq!(v["viewers"].as_array().map(Vec::len), Some(2));
        assert_eq!(v["count"], 2);
        assert_eq!(v["board_id"], board.to_string());
        let count: serde_json::Value = serde_json::from_str(&count_data(board, 7)).expect("json");
        assert_eq!(count["count"], 7);
        assert_eq!(count["board_id"], board.to_string());
    }
}
