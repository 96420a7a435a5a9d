-- The orders read store (schema `orders_read`): the CQRS read model `order_summaries`, fed by
-- the projector over orders, customers and payments events. Rows belong to a generation; reads
-- see the active one, a rebuild fills the next one aside and then swaps.
CREATE TABLE read_models (
    name                TEXT   PRIMARY KEY,
    active_generation   BIGINT NOT NULL,
    -- The generation a rebuild is filling, if one is under way (or was abandoned).
    building_generation BIGINT
);
INSERT INTO read_models (name, active_generation) VALUES ('order_summaries', 1);

-- The projector's own copy of customers, so that a summary gets the name whichever of the
-- order and customer events comes first. An order placed before its customer's first event
-- leaves a placeholder (seq 0, no name) that the customer event fills.
CREATE TABLE summary_customers (
    generation  BIGINT      NOT NULL,
    customer_id UUID        NOT NULL,
    name        TEXT,
    email       TEXT,
    source_seq  BIGINT      NOT NULL,
    changed_at  TIMESTAMPTZ,
    PRIMARY KEY (generation, customer_id)
);

-- One row per order. Each source's columns carry that source's seq, so that an older event
-- never overwrites newer data. A payment may arrive before its order: the row then exists
-- with the order's columns NULL and is not listed until the order arrives.
CREATE TABLE order_summaries (
    generation          BIGINT      NOT NULL,
    order_id            UUID        NOT NULL,
    customer_id         UUID,
    status              TEXT,
    item_count          BIGINT,
    total_cents         BIGINT,
    created_at          TIMESTAMPTZ,
    order_changed_at    TIMESTAMPTZ,
    order_seq           BIGINT,
    customer_name       TEXT,
    customer_email      TEXT,
    customer_seq        BIGINT,
    customer_changed_at TIMESTAMPTZ,
    payment_status      TEXT,
    payment_seq         BIGINT,
    payment_changed_at  TIMESTAMPTZ,
    PRIMARY KEY (generation, order_id)
);
CREATE INDEX order_summaries_by_customer ON order_summaries (generation, customer_id, order_id);
CREATE INDEX order_summaries_by_status ON order_summaries (generation, status, order_id);
