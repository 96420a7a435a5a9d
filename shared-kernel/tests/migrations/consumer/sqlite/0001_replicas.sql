-- The scratch consumer module of the kernel's messaging tests and benchmark.
-- `member_replicas` has the shape of orders' `customer_replicas` (same columns, types and
-- primary key, no other index): what the benchmark measured there, it measures here.
-- `source_seq` is the seq of the event that last wrote the row.
CREATE TABLE member_replicas (
    member_id  BLOB    PRIMARY KEY NOT NULL,
    name       TEXT    NOT NULL,
    email      TEXT    NOT NULL,
    source_seq INTEGER NOT NULL,
    updated_at TEXT    NOT NULL
) STRICT;

-- One row per application of an event by the tally subscription: no key, so an event applied
-- twice would show as two rows.
CREATE TABLE tallies (
    event_id BLOB    NOT NULL,
    seq      INTEGER NOT NULL
) STRICT;
