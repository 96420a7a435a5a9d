-- Orders and their sagas. The saga's state is the order's status plus each participant's
-- reply; every transition commits together with its outbox event.
CREATE TABLE orders (
    id          UUID        PRIMARY KEY,
    customer_id UUID        NOT NULL,
    status      TEXT        NOT NULL
        CHECK (status IN ('PENDING', 'CONFIRMED', 'REJECTED', 'CANCELLED')),
    reason      TEXT
        CHECK (reason IN ('out_of_stock', 'payment_declined', 'timeout', 'cancelled')),
    total_cents BIGINT      NOT NULL CHECK (total_cents >= 0),
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX orders_by_customer ON orders (customer_id, id);
CREATE INDEX orders_by_status ON orders (status, id);

-- Catalog data copied at placement; never changes afterwards.
CREATE TABLE order_lines (
    order_id         UUID   NOT NULL REFERENCES orders (id),
    line_no          INTEGER NOT NULL,
    product_id       UUID   NOT NULL,
    sku              TEXT   NOT NULL,
    name             TEXT   NOT NULL,
    unit_price_cents BIGINT NOT NULL CHECK (unit_price_cents >= 0),
    quantity         BIGINT NOT NULL CHECK (quantity > 0),
    line_total_cents BIGINT NOT NULL CHECK (line_total_cents >= 0),
    PRIMARY KEY (order_id, line_no)
);

CREATE TABLE sagas (
    order_id    UUID        PRIMARY KEY REFERENCES orders (id),
    stock       TEXT        NOT NULL CHECK (stock IN ('waiting', 'succeeded', 'failed')),
    payment     TEXT        NOT NULL CHECK (payment IN ('waiting', 'succeeded', 'failed')),
    -- Durable timer (Unix microseconds, comparable on both backends): a saga still open at its
    -- deadline is rejected with `timeout`.
    deadline_us BIGINT      NOT NULL,
    -- Set when the saga reached an outcome; open sagas are the timer's work list.
    settled_at  TIMESTAMPTZ,
    steps       INTEGER     NOT NULL
);
CREATE INDEX sagas_open_by_deadline ON sagas (deadline_us) WHERE settled_at IS NULL;

CREATE TABLE saga_steps (
    order_id UUID        NOT NULL REFERENCES sagas (order_id),
    n        INTEGER     NOT NULL,
    step     TEXT        NOT NULL,
    detail   TEXT,
    at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (order_id, n)
);
