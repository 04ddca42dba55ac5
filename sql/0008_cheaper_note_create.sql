-- A cheaper note create (POST …/notes), the hottest write: issue 13 asks for API writes at
-- half the raw INSERT + NOTIFY rate, and what bounded them was PostgreSQL's CPU per write
-- (docs/PERFORMANCE.md, "Writes in one round trip"). Same guarantees as
-- `boardcast_note_insert` of migration 4, which stays for code still running it:
-- - the board row is locked by `UPDATE boards SET seq = seq + 1` until the statement
--   commits, so writes to one board commit in seq order, with no gap;
-- - no board: nothing is written and no seq is taken;
-- - the event is logged and NOTIFYed in the statement's transaction, by reference
--   (`{"seq","type","board_id","ref":true}`) when it would reach the NOTIFY limit; any
--   error rolls the whole call back, event and notification included.
--
-- What changed, each measured with pgbench against migration 4's function:
-- - The board, the note and the event are written by one statement (data-modifying
--   CTEs) instead of three PL/pgSQL statements and a nested function call: one executor
--   start-up where there were four.
-- - The note's JSON up to `author` comes from the caller (`p_note_head`, written by serde as
--   the API's answer is), so PostgreSQL no longer escapes the text, formats four floats
--   (a regular expression each) or runs under `SET extra_float_digits` (a function with a
--   SET clause saves and restores the setting on every call). PostgreSQL writes only what
--   it decides: the seq, `at` and the two times, which are equal on a new note.
-- - Retention is pruned in PL/pgSQL on the 64th event only, as before.

CREATE FUNCTION boardcast_note_create(
    p_board uuid, p_id uuid, p_text text, p_x double precision, p_y double precision,
    p_color text, p_width double precision, p_height double precision, p_author text,
    p_note_head text, p_channel text, p_retention bigint, p_notify_limit integer,
    -- The outcome ('done', 'no_board') and, when done, the note's columns.
    OUT outcome text, OUT id uuid, OUT board_id uuid, OUT text text,
    OUT x double precision, OUT y double precision, OUT color text,
    OUT width double precision, OUT height double precision, OUT version bigint,
    OUT author text, OUT created_at timestamptz, OUT updated_at timestamptz
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_seq bigint;
    v_data text;
BEGIN
    WITH b AS (
        UPDATE boards SET seq = boards.seq + 1 WHERE boards.id = p_board
        RETURNING boards.id, boards.seq
    ), n AS (
        INSERT INTO notes (id, board_id, text, x, y, color, width, height, author)
        SELECT p_id, b.id, p_text, p_x, p_y, p_color, p_width, p_height, p_author FROM b
        RETURNING *
    ), k AS (
        SELECT n.*, b.seq AS ev_seq, t.at AS ev_at,
            '{"seq":' || b.seq || ',"type":"note.created","board_id":"' || b.id
            || '","at":"' || boardcast_json_time(t.at) || '","note":' || p_note_head
            || ',"created_at":"' || c.s || '","updated_at":"' || c.s || '"}}' AS data
        FROM n, b,
            LATERAL (SELECT clock_timestamp() AS at) t,
            LATERAL (SELECT boardcast_json_time(n.created_at) AS s) c
    ), e AS (
        INSERT INTO events (board_id, seq, type, payload, at)
        SELECT k.board_id, k.ev_seq, 'note.created', k.data::json, k.ev_at FROM k
    )
    SELECT 'done', k.id, k.board_id, k.text, k.x, k.y, k.color, k.width, k.height,
        k.version, k.author, k.created_at, k.updated_at, k.ev_seq, k.data
    INTO outcome, id, board_id, text, x, y, color, width, height, version, author,
        created_at, updated_at, v_seq, v_data
    FROM k;
    IF NOT FOUND THEN
        outcome := 'no_board';
        RETURN;
    END IF;
    IF v_seq % 64 = 0 AND v_seq > p_retention THEN
        DELETE FROM events AS ev WHERE ev.board_id = p_board AND ev.seq <= v_seq - p_retention;
    END IF;
    IF octet_length(v_data) >= p_notify_limit THEN
        v_data := '{"seq":' || v_seq || ',"type":"note.created","board_id":"' || p_board
            || '","ref":true}';
    END IF;
    PERFORM pg_notify(p_channel, v_data);
END
$$;
