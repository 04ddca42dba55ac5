-- Sessions: a stream opened with `?session=` leaves its viewer *held* when it closes, for
-- two heartbeat intervals, instead of announcing it left; a stream of the same session
-- (and token subject) on the same board within that time takes the viewer over, id and
-- all, and nothing is announced for the gap. The hold outlives the instance (a deploy):
-- orphan reaping skips held viewers, and any instance reaps expired holds, announcing
-- each departure once. Nullable columns: expand only.

ALTER TABLE viewers ADD COLUMN session text, ADD COLUMN held_until timestamptz;

CREATE INDEX viewers_by_session ON viewers (board_id, session) WHERE session IS NOT NULL;
CREATE INDEX viewers_held ON viewers (held_until) WHERE held_until IS NOT NULL;
