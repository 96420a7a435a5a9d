-- Orders and their sagas. The saga's state is the order's status plus each participant's
-- reply; every transition commits together with its outbox event.
CREATE TABLE orders (
    id          BLOB    PRIMARY KEY NOT NULL,
    customer_id BLOB    NOT NULL,
    status      TEXT    NOT NULL
        CHECK (status IN ('PENDING', 'CONFIRMED', 'REJECTED', 'CANCELLED')),
    reason      TEXT
        CHECK (reason IN ('out_of_stock', 'payment_declined', 'timeout', 'cancelled')),
    total_cents INTEGER NOT NULL CHECK (total_cents >= 0),
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL
) STRICT;
CREATE INDEX orders_by_customer ON orders (customer_id, id);
CREATE INDEX orders_by_status ON orders (status, id);

-- Catalog data copied at placement; never changes afterwards.
CREATE TABLE order_lines (
    order_id         BLOB    NOT NULL REFERENCES orders (id),
    line_no          INTEGER NOT NULL,
    product_id       BLOB    NOT NULL,
    sku              TEXT    NOT NULL,
    name             TEXT    NOT NULL,
    unit_price_cents INTEGER NOT NULL CHECK (unit_price_cents >= 0),
    quantity         INTEGER NOT NULL CHECK (quantity > 0),
    line_total_cents INTEGER NOT NULL CHECK (line_total_cents >= 0),
    PRIMARY KEY (order_id, line_no)
) STRICT;

CREATE TABLE sagas (
    order_id    BLOB    PRIMARY KEY NOT NULL REFERENCES orders (id),
    stock       TEXT    NOT NULL CHECK (stock IN ('waiting', 'succeeded', 'failed')),
    payment     TEXT    NOT NULL CHECK (payment IN ('waiting', 'succeeded', 'failed')),
    -- Durable timer (Unix microseconds, comparable on both backends): a saga still open at its
    -- deadline is rejected with `timeout`.
    deadline_us INTEGER NOT NULL,
    -- Set when the saga reached an outcome; open sagas are the timer's work list.
    settled_at  TEXT,
    steps       INTEGER NOT NULL
) STRICT;
CREATE INDEX sagas_open_by_deadline ON sagas (deadline_us) WHERE settled_at IS NULL;

CREATE TABLE saga_steps (
    order_id BLOB    NOT NULL REFERENCES sagas (order_id),
    n        INTEGER NOT NULL,
    step     TEXT    NOT NULL,
    detail   TEXT,
    at       TEXT    NOT NULL,
    PRIMARY KEY (order_id, n)
) STRICT;
