-- Events a subscription could not apply. `parked`: failed every retry, waits for an operator
-- (retry or discard). `blocked`: a later event of a parked event's aggregate, held back so the
-- aggregate's events are never applied out of order. `retried` / `discarded`: resolved.
-- The whole envelope is kept, so a retry needs nothing from the source.
CREATE TABLE dead_letters (
    id            BLOB    PRIMARY KEY NOT NULL,
    subscription  TEXT    NOT NULL,
    event_id      BLOB    NOT NULL,
    seq           INTEGER NOT NULL,
    aggregate_key TEXT    NOT NULL,
    envelope      TEXT    NOT NULL,
    status        TEXT    NOT NULL CHECK (status IN ('parked', 'blocked', 'retried', 'discarded')),
    error         TEXT,
    attempts      INTEGER NOT NULL,
    parked_at     TEXT    NOT NULL,
    resolved_at   TEXT,
    UNIQUE (subscription, event_id)
) STRICT;
CREATE INDEX dead_letters_open ON dead_letters (subscription, aggregate_key, seq)
    WHERE status IN ('parked', 'blocked');
