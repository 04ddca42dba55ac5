-- Every write in one round trip: each API write is one call of a function below, run as
-- one statement (so one implicit transaction) instead of BEGIN, five statements and COMMIT.
--
-- The guarantees are the ones the Rust code kept before:
-- - The board row is locked (FOR UPDATE, then `seq = seq + 1`) until the statement commits,
--   so writes to one board commit in seq order, and ids are 1, 2, 3 … with no gap.
-- - A write that is refused (no board, no note, a stale If-Match) returns before taking a
--   seq, so it changes nothing and logs no event; any error rolls the whole call back.
-- - The event is logged and NOTIFYed in the same transaction; one over the NOTIFY limit is
--   announced by reference (`{"seq", "type", "board_id", "ref": true}`) and read from the log.
--
-- The event's `data` is built here, and must read exactly as the API's own answers do
-- (serde_json in Rust): numbers of a float column always carry a fraction or an exponent
-- (`200.0`, as serde writes an f64), and times are RFC 3339 in UTC with 0, 3 or 6 fraction
-- digits, as chrono writes them. tests/api/writes.rs compares the two byte for byte.

-- A float8 as serde_json writes an f64 that holds a whole number: with `.0`.
-- STABLE, not IMMUTABLE: float8 output follows `extra_float_digits`, which every writing
-- function below pins to 1 (shortest exact, what PostgreSQL 12+ does by default).
CREATE FUNCTION boardcast_json_float(v double precision) RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN s ~ '^-?[0-9]+$' THEN s || '.0' ELSE s END FROM (SELECT v::text AS s) q
$$;

-- A timestamptz as chrono serializes a DateTime<Utc>: `2026-11-22T10:00:15.123456Z`, the
-- fraction cut to 3 digits when whole milliseconds and left out when whole seconds.
CREATE FUNCTION boardcast_json_time(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT to_char(u, 'YYYY-MM-DD"T"HH24:MI:SS')
        || CASE
               WHEN us = 0 THEN ''
               WHEN us % 1000 = 0 THEN '.' || lpad((us / 1000)::text, 3, '0')
               ELSE '.' || lpad(us::text, 6, '0')
           END
        || 'Z'
    FROM (SELECT t AT TIME ZONE 'UTC' AS u) a,
         LATERAL (SELECT (extract(microseconds FROM u)::bigint % 1000000) AS us) b
$$;

-- A note as the API answers it (field order of `domain::note::Note`).
CREATE FUNCTION boardcast_note_json(n notes) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT '{"id":"' || n.id || '","board_id":"' || n.board_id
        || '","text":' || to_json(n.text)::text
        || ',"x":' || boardcast_json_float(n.x)
        || ',"y":' || boardcast_json_float(n.y)
        || ',"color":' || to_json(n.color)::text
        || ',"width":' || boardcast_json_float(n.width)
        || ',"height":' || boardcast_json_float(n.height)
        || ',"version":' || n.version
        || ',"author":' || coalesce(to_json(n.author)::text, 'null')
        || ',"created_at":"' || boardcast_json_time(n.created_at)
        || '","updated_at":"' || boardcast_json_time(n.updated_at) || '"}'
$$;

-- A board as the API answers it (field order of `domain::board::Board`).
CREATE FUNCTION boardcast_board_json(b boards) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT '{"id":"' || b.id || '","title":' || to_json(b.title)::text
        || ',"seq":' || b.seq
        || ',"created_at":"' || boardcast_json_time(b.created_at)
        || '","updated_at":"' || boardcast_json_time(b.updated_at) || '"}'
$$;

-- Logs (unless `logged` is false: board.deleted, whose log goes with the board) and NOTIFYs
-- event `seq` of a board. `subject` is the event's last member, such as `"note":{…}`.
-- The log is pruned past `retention` on every 64th event, at most 64 rows at a time, so
-- the cost of retention is spread evenly over writes.
CREATE FUNCTION boardcast_publish(
    p_board uuid, p_seq bigint, p_kind text, p_subject text, p_logged boolean,
    p_channel text, p_retention bigint, p_notify_limit integer
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_at timestamptz := clock_timestamp();
    v_data text := '{"seq":' || p_seq || ',"type":"' || p_kind || '","board_id":"' || p_board
        || '","at":"' || boardcast_json_time(v_at) || '",' || p_subject || '}';
BEGIN
    IF p_logged THEN
        INSERT INTO events (board_id, seq, type, payload, at)
        VALUES (p_board, p_seq, p_kind, v_data::json, v_at);
        IF p_seq % 64 = 0 AND p_seq > p_retention THEN
            DELETE FROM events WHERE board_id = p_board AND seq <= p_seq - p_retention;
        END IF;
    END IF;
    IF octet_length(v_data) >= p_notify_limit THEN
        v_data := '{"seq":' || p_seq || ',"type":"' || p_kind || '","board_id":"' || p_board
            || '","ref":true}';
    END IF;
    PERFORM pg_notify(p_channel, v_data);
END
$$;

-- What a note write returns: how it ended and the note (new, or current when stale).
CREATE TYPE boardcast_note_outcome AS (outcome text, note notes);

CREATE FUNCTION boardcast_note_insert(
    p_board uuid, p_id uuid, p_text text, p_x double precision, p_y double precision,
    p_color text, p_width double precision, p_height double precision, p_author text,
    p_channel text, p_retention bigint, p_notify_limit integer
) RETURNS boardcast_note_outcome
LANGUAGE plpgsql SET extra_float_digits = 1 AS $$
DECLARE
    v_seq bigint;
    v_note notes;
BEGIN
    UPDATE boards SET seq = seq + 1 WHERE id = p_board RETURNING seq INTO v_seq;
    IF NOT FOUND THEN
        RETURN ('no_board', NULL)::boardcast_note_outcome;
    END IF;
    INSERT INTO notes (id, board_id, text, x, y, color, width, height, author)
    VALUES (p_id, p_board, p_text, p_x, p_y, p_color, p_width, p_height, p_author)
    RETURNING * INTO v_note;
    PERFORM boardcast_publish(p_board, v_seq, 'note.created',
        '"note":' || boardcast_note_json(v_note), true, p_channel, p_retention, p_notify_limit);
    RETURN ('done', v_note)::boardcast_note_outcome;
END
$$;

-- `p_versions`: the versions If-Match admits; NULL when any version may be changed.
CREATE FUNCTION boardcast_note_update(
    p_board uuid, p_note uuid, p_text text, p_x double precision, p_y double precision,
    p_color text, p_width double precision, p_height double precision, p_versions bigint[],
    p_channel text, p_retention bigint, p_notify_limit integer
) RETURNS boardcast_note_outcome
LANGUAGE plpgsql SET extra_float_digits = 1 AS $$
DECLARE
    v_seq bigint;
    v_note notes;
BEGIN
    PERFORM 1 FROM boards WHERE id = p_board FOR UPDATE;
    IF NOT FOUND THEN
        RETURN ('no_board', NULL)::boardcast_note_outcome;
    END IF;
    SELECT * INTO v_note FROM notes WHERE id = p_note AND board_id = p_board;
    IF NOT FOUND THEN
        RETURN ('no_note', NULL)::boardcast_note_outcome;
    END IF;
    IF p_versions IS NOT NULL AND NOT (v_note.version = ANY (p_versions)) THEN
        RETURN ('stale', v_note)::boardcast_note_outcome;
    END IF;
    UPDATE boards SET seq = seq + 1 WHERE id = p_board RETURNING seq INTO v_seq;
    UPDATE notes SET
        text = coalesce(p_text, text),
        x = coalesce(p_x, x),
        y = coalesce(p_y, y),
        color = coalesce(p_color, color),
        width = coalesce(p_width, width),
        height = coalesce(p_height, height),
        version = version + 1,
        updated_at = now()
    WHERE id = p_note AND board_id = p_board
    RETURNING * INTO v_note;
    PERFORM boardcast_publish(p_board, v_seq, 'note.updated',
        '"note":' || boardcast_note_json(v_note), true, p_channel, p_retention, p_notify_limit);
    RETURN ('done', v_note)::boardcast_note_outcome;
END
$$;

CREATE FUNCTION boardcast_note_delete(
    p_board uuid, p_note uuid, p_versions bigint[],
    p_channel text, p_retention bigint, p_notify_limit integer
) RETURNS boardcast_note_outcome
LANGUAGE plpgsql SET extra_float_digits = 1 AS $$
DECLARE
    v_seq bigint;
    v_note notes;
BEGIN
    PERFORM 1 FROM boards WHERE id = p_board FOR UPDATE;
    IF NOT FOUND THEN
        RETURN ('no_board', NULL)::boardcast_note_outcome;
    END IF;
    SELECT * INTO v_note FROM notes WHERE id = p_note AND board_id = p_board;
    IF NOT FOUND THEN
        RETURN ('no_note', NULL)::boardcast_note_outcome;
    END IF;
    IF p_versions IS NOT NULL AND NOT (v_note.version = ANY (p_versions)) THEN
        RETURN ('stale', v_note)::boardcast_note_outcome;
    END IF;
    UPDATE boards SET seq = seq + 1 WHERE id = p_board RETURNING seq INTO v_seq;
    DELETE FROM notes WHERE id = p_note AND board_id = p_board;
    PERFORM boardcast_publish(p_board, v_seq, 'note.deleted',
        '"note":{"id":"' || p_note || '"}', true, p_channel, p_retention, p_notify_limit);
    RETURN ('done', v_note)::boardcast_note_outcome;
END
$$;

-- Renames a board and announces board.updated; no row when there is no such board.
CREATE FUNCTION boardcast_board_rename(
    p_board uuid, p_title text, p_channel text, p_retention bigint, p_notify_limit integer
) RETURNS SETOF boards
LANGUAGE plpgsql AS $$
DECLARE
    v_board boards;
BEGIN
    UPDATE boards SET title = p_title, seq = seq + 1, updated_at = now()
    WHERE id = p_board RETURNING * INTO v_board;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    PERFORM boardcast_publish(p_board, v_board.seq, 'board.updated',
        '"board":' || boardcast_board_json(v_board), true, p_channel, p_retention, p_notify_limit);
    RETURN NEXT v_board;
END
$$;

-- Deletes a board (its notes and events go with it) and announces board.deleted, which is
-- not logged. False when there is no such board.
CREATE FUNCTION boardcast_board_delete(
    p_board uuid, p_channel text, p_notify_limit integer
) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint;
BEGIN
    UPDATE boards SET seq = seq + 1 WHERE id = p_board RETURNING seq INTO v_seq;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    DELETE FROM boards WHERE id = p_board;
    PERFORM boardcast_publish(p_board, v_seq, 'board.deleted',
        '"board":{"id":"' || p_board || '"}', false, p_channel, 0, p_notify_limit);
    RETURN true;
END
$$;
