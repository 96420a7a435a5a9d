-- The single-transaction baseline of `bounded bench`: the whole shop in one database, the
-- shared-database monolith the patterns warn against, with the same tables' shape as the
-- modules' (customers, products, stock_levels, accounts, orders, order_lines).
CREATE TABLE customers (
    id         UUID PRIMARY KEY,
    name       TEXT NOT NULL,
    email      TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE products (
    id          UUID PRIMARY KEY,
    sku         TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    price_cents BIGINT NOT NULL CHECK (price_cents >= 0),
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE TABLE stock_levels (
    product_id UUID NOT NULL REFERENCES products (id),
    warehouse  TEXT NOT NULL,
    on_hand    BIGINT NOT NULL CHECK (on_hand >= 0),
    PRIMARY KEY (product_id, warehouse)
);
CREATE TABLE accounts (
    customer_id        UUID PRIMARY KEY REFERENCES customers (id),
    credit_limit_cents BIGINT NOT NULL,
    outstanding_cents  BIGINT NOT NULL CHECK (outstanding_cents >= 0)
);
CREATE TABLE orders (
    id          UUID PRIMARY KEY,
    customer_id UUID NOT NULL REFERENCES customers (id),
    status      TEXT NOT NULL,
    reason      TEXT,
    total_cents BIGINT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE TABLE order_lines (
    order_id         UUID NOT NULL REFERENCES orders (id),
    line_no          INTEGER NOT NULL,
    product_id       UUID NOT NULL,
    quantity         BIGINT NOT NULL,
    unit_price_cents BIGINT NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
