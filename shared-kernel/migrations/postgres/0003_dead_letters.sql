-- Events a subscription could not apply. `parked`: failed every retry, waits for an operator
-- (retry or discard). `blocked`: a later event of a parked event's aggregate, held back so the
-- aggregate's events are never applied out of order. `retried` / `discarded`: resolved.
-- The whole envelope is kept, so a retry needs nothing from the source.
CREATE TABLE dead_letters (
    id            UUID        PRIMARY KEY,
    subscription  TEXT        NOT NULL,
    event_id      UUID        NOT NULL,
    seq           BIGINT      NOT NULL,
    aggregate_key TEXT        NOT NULL,
    envelope      JSONB       NOT NULL,
    status        TEXT        NOT NULL CHECK (status IN ('parked', 'blocked', 'retried', 'discarded')),
    error         TEXT,
    attempts      INTEGER     NOT NULL,
    parked_at     TIMESTAMPTZ NOT NULL,
    resolved_at   TIMESTAMPTZ,
    UNIQUE (subscription, event_id)
);
CREATE INDEX dead_letters_open ON dead_letters (subscription, aggregate_key, seq)
    WHERE status IN ('parked', 'blocked');
