-- Payments are event-sourced: accounts and payments are streams of events in `events`; their
-- state is a fold over them. The stub's `accounts` table is replaced by account streams: each
-- of its rows becomes an `AccountOpened` event (below), then the table goes.

-- The append-only event store. The primary key (stream_id, version) gives optimistic
-- concurrency: a writer appends at "the version it loaded + 1"; a unique violation means
-- another writer got there first, so it reloads and decides again.
CREATE TABLE events (
    stream_id      UUID        NOT NULL,
    stream_type    TEXT        NOT NULL CHECK (stream_type IN ('account', 'payment')),
    version        BIGINT      NOT NULL CHECK (version >= 1),
    event_type     TEXT        NOT NULL,
    schema_version INTEGER     NOT NULL,
    payload        JSONB       NOT NULL,
    metadata       JSONB       NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL,
    CONSTRAINT events_pkey PRIMARY KEY (stream_id, version)
);

-- Accounts the stub opened become account streams.
INSERT INTO events (stream_id, stream_type, version, event_type, schema_version, payload,
                    metadata, recorded_at)
SELECT customer_id, 'account', 1, 'AccountOpened', 1,
       jsonb_build_object('credit_limit_cents', credit_limit_cents),
       '{"migrated_from": "accounts"}'::jsonb, opened_at
FROM accounts;
DROP TABLE accounts;

-- The latest snapshot of a stream (every `snapshot_every` events): state = snapshot + the
-- events after its version. Snapshots are a cache; deleting them changes nothing but speed.
CREATE TABLE snapshots (
    stream_id   UUID        PRIMARY KEY,
    stream_type TEXT        NOT NULL,
    version     BIGINT      NOT NULL CHECK (version >= 1),
    state       JSONB       NOT NULL,
    taken_at    TIMESTAMPTZ NOT NULL
);

-- Inline projection of payment streams, written in the transaction of each append: lookups by
-- order and customer, and lists in creation order. One payment per order.
CREATE TABLE payment_views (
    payment_id   UUID        PRIMARY KEY,
    order_id     UUID        NOT NULL,
    customer_id  UUID        NOT NULL,
    amount_cents BIGINT      NOT NULL,
    status       TEXT        NOT NULL
        CHECK (status IN ('AUTHORIZED', 'CAPTURED', 'VOIDED', 'REFUNDED', 'DECLINED')),
    version      BIGINT      NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    CONSTRAINT payment_views_order_id_key UNIQUE (order_id)
);
CREATE INDEX payment_views_by_customer ON payment_views (customer_id, payment_id);
