-- Presence: who is viewing which board, on which instance.
--
-- Each instance refreshes its own row in `instances` every half heartbeat interval; a
-- viewer is alive while its instance is. Any instance reaps the viewers of an instance
-- that stopped refreshing, announcing each departure exactly once (DELETE … RETURNING).

CREATE TABLE instances (
    id          uuid PRIMARY KEY,
    started_at  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE viewers (
    id          uuid PRIMARY KEY,
    board_id    uuid        NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
    -- No foreign key: viewers of a vanished instance must stay findable until reaped.
    instance_id uuid        NOT NULL,
    name        text        NOT NULL,
    since       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX viewers_by_board ON viewers (board_id, since, id);
CREATE INDEX viewers_by_instance ON viewers (instance_id);
