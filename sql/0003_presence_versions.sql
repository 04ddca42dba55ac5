-- Presence versions: one row per board that has had viewers, written by every presence
-- change of the board (joins, leaves, reaps) in the same transaction.
--
-- `version` orders a board's presence changes across instances: every announcement
-- carries the version it produced, so an instance that keeps a board's viewers in memory
-- can load them once (with the version they are as of) and apply exactly the
-- announcements after it. `viewers` is the count (kept by the trigger below), so no change
-- has to count the rows;
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

-- The count follows the rows whatever writes them (this version's batches, the reaper, an
-- older version still running during a deploy, a board's cascade): one UPDATE per
-- statement, not per row. A count that disagrees with an instance's in-memory viewers
-- makes that instance reload the board.
CREATE FUNCTION board_presence_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO board_presence AS p (board_id, viewers)
        SELECT board_id, count(*) FROM new_rows GROUP BY board_id
        ON CONFLICT (board_id) DO UPDATE SET viewers = p.viewers + excluded.viewers;
    ELSE
        UPDATE board_presence AS p SET viewers = p.viewers - d.n
        FROM (SELECT board_id, count(*) AS n FROM old_rows GROUP BY board_id) AS d
        WHERE p.board_id = d.board_id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER viewers_counted_on_insert AFTER INSERT ON viewers
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION board_presence_count();
CREATE TRIGGER viewers_counted_on_delete AFTER DELETE ON viewers
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION board_presence_count();
