-- The transactional outbox: events this module publishes, appended in the same transaction as
-- the change they describe. Insert-only; `seq` is gap-free and follows commit order because
-- every appender takes the next number from outbox_head under its row lock, held to commit.
-- Column names follow Debezium's outbox router where they apply (aggregatetype, aggregateid,
-- type, payload).
CREATE TABLE outbox (
    seq            BIGINT      PRIMARY KEY,
    id             UUID        NOT NULL UNIQUE,
    aggregatetype  TEXT        NOT NULL,
    aggregateid    TEXT        NOT NULL,
    type           TEXT        NOT NULL,
    event_version  INTEGER     NOT NULL,
    payload        JSONB       NOT NULL,
    occurred_at    TIMESTAMPTZ NOT NULL,
    correlation_id UUID,
    causation_id   UUID,
    headers        JSONB       NOT NULL
);

CREATE TABLE outbox_head (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT  NOT NULL
);
INSERT INTO outbox_head (id, seq) VALUES (1, 0);

-- Consumer side: where each subscription of this module stands in its source's log, and which
-- events it has applied (the inbox), both written in the transaction of the handler's effects.
CREATE TABLE subscription_checkpoints (
    name       TEXT        PRIMARY KEY,
    source     TEXT        NOT NULL,
    seq        BIGINT      NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE inbox (
    subscription TEXT        NOT NULL,
    event_id     UUID        NOT NULL,
    seq          BIGINT      NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (subscription, event_id)
);
