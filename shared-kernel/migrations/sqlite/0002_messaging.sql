-- The transactional outbox: events this module publishes, appended in the same transaction as
-- the change they describe. Insert-only; `seq` is gap-free and follows commit order because
-- every appender takes the next number from outbox_head under the single writer.
-- Column names follow Debezium's outbox router where they apply (aggregatetype, aggregateid,
-- type, payload).
CREATE TABLE outbox (
    seq            INTEGER PRIMARY KEY NOT NULL,
    id             BLOB    NOT NULL UNIQUE,
    aggregatetype  TEXT    NOT NULL,
    aggregateid    TEXT    NOT NULL,
    type           TEXT    NOT NULL,
    event_version  INTEGER NOT NULL,
    payload        TEXT    NOT NULL,
    occurred_at    TEXT    NOT NULL,
    correlation_id BLOB,
    causation_id   BLOB,
    headers        TEXT    NOT NULL
) STRICT;

CREATE TABLE outbox_head (
    id  INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    seq INTEGER NOT NULL
) STRICT;
INSERT INTO outbox_head (id, seq) VALUES (1, 0);

-- Consumer side: where each subscription of this module stands in its source's log, and which
-- events it has applied (the inbox), both written in the transaction of the handler's effects.
CREATE TABLE subscription_checkpoints (
    name       TEXT    PRIMARY KEY NOT NULL,
    source     TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    updated_at TEXT    NOT NULL
) STRICT;

CREATE TABLE inbox (
    subscription TEXT    NOT NULL,
    event_id     BLOB    NOT NULL,
    seq          INTEGER NOT NULL,
    processed_at TEXT    NOT NULL,
    PRIMARY KEY (subscription, event_id)
) STRICT;
