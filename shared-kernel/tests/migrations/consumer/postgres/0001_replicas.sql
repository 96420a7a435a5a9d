-- The scratch consumer module of the kernel's messaging tests and benchmark.
-- `member_replicas` has the shape of orders' `customer_replicas` (same columns, types and
-- primary key, no other index): what the benchmark measured there, it measures here.
-- `source_seq` is the seq of the event that last wrote the row.
CREATE TABLE member_replicas (
    member_id  UUID        PRIMARY KEY,
    name       TEXT        NOT NULL,
    email      TEXT        NOT NULL,
    source_seq BIGINT      NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

-- One row per application of an event by the tally subscription: no key, so an event applied
-- twice would show as two rows.
CREATE TABLE tallies (
    event_id UUID   NOT NULL,
    seq      BIGINT NOT NULL
);
