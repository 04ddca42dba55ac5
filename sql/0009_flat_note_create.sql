-- The note create of migration 8, cheaper again (issue 13: PostgreSQL's CPU per write is
-- what bounds API writes). Measured by instructions per write under callgrind (a
-- single-user backend, 200 writes, docs/PERFORMANCE.md): migration 4/6's
-- `boardcast_note_insert` 794,000; migration 8's CTE 732,000; this one 596,000.
-- Same signature and answer as migration 8 (CREATE OR REPLACE), so a release calling it
-- keeps working through the deploy; same guarantees (see 0008).
--
-- - `boardcast_json_time`: one `to_char` with the microseconds and a regular expression
--   dropping `000` or `.000000` at the end, in place of `to_char` and four `extract`s (each
--   a numeric computation). Same text: chrono's RFC 3339 with 0, 3 or 6 fraction digits
--   (tests/api/writes.rs compares it with serde for thousands of times). The update,
--   delete and rename functions of migration 4 call it too, and get cheaper with it.
-- - The create is plain statements again (UPDATE, INSERT, INSERT, NOTIFY) rather than
--   one statement of CTEs: a CTE plan is a join of scans, and PostgreSQL sets that up
--   again on every execution; a plain INSERT … VALUES is cheaper to start.
-- - The note's two times are equal on a create (both default to `now()`): formatted once.

CREATE OR REPLACE FUNCTION boardcast_json_time(t timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT regexp_replace(to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'),
                          '(\.000)?000$', '')
        || 'Z'
$$;

CREATE OR REPLACE FUNCTION boardcast_note_create(
    p_board uuid, p_id uuid, p_text text, p_x double precision, p_y double precision,
    p_color text, p_width double precision, p_height double precision, p_author text,
    p_note_head text, p_channel text, p_retention bigint, p_notify_limit integer,
    OUT outcome text, OUT id uuid, OUT board_id uuid, OUT text text,
    OUT x double precision, OUT y double precision, OUT color text,
    OUT width double precision, OUT height double precision, OUT version bigint,
    OUT author text, OUT created_at timestamptz, OUT updated_at timestamptz
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_seq bigint;
    v_at timestamptz;
    v_created text;
    v_data text;
BEGIN
    UPDATE boards SET seq = seq + 1 WHERE boards.id = p_board RETURNING seq INTO v_seq;
    IF NOT FOUND THEN
        outcome := 'no_board';
        RETURN;
    END IF;
    INSERT INTO notes (id, board_id, text, x, y, color, width, height, author)
    VALUES (p_id, p_board, p_text, p_x, p_y, p_color, p_width, p_height, p_author)
    RETURNING 'done', notes.id, notes.board_id, notes.text, notes.x, notes.y, notes.color,
        notes.width, notes.height, notes.version, notes.author, notes.created_at,
        notes.updated_at
    INTO outcome, id, board_id, text, x, y, color, width, height, version, author,
        created_at, updated_at;
    v_at := clock_timestamp();
    v_created := boardcast_json_time(created_at);
    v_data := '{"seq":' || v_seq || ',"type":"note.created","board_id":"' || p_board
        || '","at":"' || boardcast_json_time(v_at) || '","note":' || p_note_head
        || ',"created_at":"' || v_created || '","updated_at":"' || v_created || '"}}';
    INSERT INTO events (board_id, seq, type, payload, at)
    VALUES (p_board, v_seq, 'note.created', v_data::json, v_at);
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
