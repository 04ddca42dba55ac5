-- Presence versions: one row per board that has had viewers, written by every presence
-- change of the board (joins, leaves, reaps) in the same transaction.
--
-- `version` orders a board's presence changes across instances: every announcement
-- carries the version it produced, so an instance that keeps a board's viewers in memory
-- can load them once (with the version they are as of) and apply exactly the
-- announcements after it. `viewers` is the count, so no change has to count the rows;
-- `crowd` is the board's side of the PRESENCE_LIST_LIMIT hysteresis, so every instance
-- agrees whether the board is a crowd. The row lock is what serializes a board's changes.

CREATE TABLE board_presence (
    board_id uuid    PRIMARY KEY REFERENCES boards (id) ON DELETE CASCADE,
    version  bigint  NOT NULL DEFAULT 0,
    viewers  integer NOT NULL DEFAULT 0 CHECK (viewers >= 0),
    crowd    boolean NOT NULL DEFAULT false
);

-- Viewers written before this migration are counted once here.
INSERT INTO board_presence (board_id, viewers)
SELECT board_id, count(*) FROM viewers GROUP BY board_id;
