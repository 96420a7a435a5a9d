-- The orders read store (`orders_read.sqlite`): the CQRS read model `order_summaries`, fed by
-- the projector over orders, customers and payments events. Rows belong to a generation; reads
-- see the active one, a rebuild fills the next one aside and then swaps.
CREATE TABLE read_models (
    name                TEXT    PRIMARY KEY NOT NULL,
    active_generation   INTEGER NOT NULL,
    -- The generation a rebuild is filling, if one is under way (or was abandoned).
    building_generation INTEGER
) STRICT;
INSERT INTO read_models (name, active_generation) VALUES ('order_summaries', 1);

-- The projector's own copy of customers, so that a summary gets the name whichever of the
-- order and customer events comes first. An order placed before its customer's first event
-- leaves a placeholder (seq 0, no name) that the customer event fills.
CREATE TABLE summary_customers (
    generation  INTEGER NOT NULL,
    customer_id BLOB    NOT NULL,
    name        TEXT,
    email       TEXT,
    source_seq  INTEGER NOT NULL,
    changed_at  TEXT,
    PRIMARY KEY (generation, customer_id)
) STRICT;

-- One row per order. Each source's columns carry that source's seq, so that an older event
-- never overwrites newer data. A payment may arrive before its order: the row then exists
-- with the order's columns NULL and is not listed until the order arrives.
CREATE TABLE order_summaries (
    generation         INTEGER NOT NULL,
    order_id           BLOB    NOT NULL,
    customer_id        BLOB,
    status             TEXT,
    item_count         INTEGER,
    total_cents        INTEGER,
    created_at         TEXT,
    order_changed_at   TEXT,
    order_seq          INTEGER,
    customer_name      TEXT,
    customer_email     TEXT,
    customer_seq       INTEGER,
    customer_changed_at TEXT,
    payment_status     TEXT,
    payment_seq        INTEGER,
    payment_changed_at TEXT,
    PRIMARY KEY (generation, order_id)
) STRICT;
CREATE INDEX order_summaries_by_customer ON order_summaries (generation, customer_id, order_id);
CREATE INDEX order_summaries_by_status ON order_summaries (generation, status, order_id);
