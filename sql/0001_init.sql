-- Boards, notes and the per-board event log.
--
-- Every write takes the board's next `seq` with `UPDATE boards SET seq = seq + 1`, whose row
-- lock is held until commit: per board, events are numbered 1, 2, 3 … with no gap, and
-- commit order equals seq order.

CREATE TABLE boards (
    id          uuid PRIMARY KEY,
    title       text        NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    seq         bigint      NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- GET /api/boards pages newest first with a (created_at, id) cursor.
CREATE INDEX boards_newest_first ON boards (created_at DESC, id DESC);

CREATE TABLE notes (
    id          uuid PRIMARY KEY,
    board_id    uuid        NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
    text        text        NOT NULL CHECK (char_length(text) <= 10000),
    x           double precision NOT NULL,
    y           double precision NOT NULL,
    color       text        NOT NULL,
    width       double precision NOT NULL,
    height      double precision NOT NULL,
    version     bigint      NOT NULL DEFAULT 1,
    author      text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX notes_by_board ON notes (board_id, created_at, id);

-- The event log that replays (`Last-Event-ID`) and large-payload references read from.
-- `payload` is the exact `data:` line sent to clients, kept as `json` so its text is
-- preserved byte for byte (jsonb would reorder keys).
CREATE TABLE events (
    board_id    uuid        NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
    seq         bigint      NOT NULL,
    type        text        NOT NULL,
    payload     json        NOT NULL,
    at          timestamptz NOT NULL,
    PRIMARY KEY (board_id, seq)
);
