-- The single-transaction baseline of `bounded bench`: the whole shop in one database, the
-- shared-database monolith the patterns warn against, with the same tables' shape as the
-- modules' (customers, products, stock_levels, accounts, orders, order_lines).
CREATE TABLE customers (
    id         BLOB PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    email      TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
) STRICT;
CREATE TABLE products (
    id          BLOB PRIMARY KEY NOT NULL,
    sku         TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
    created_at  TEXT NOT NULL
) STRICT;
CREATE TABLE stock_levels (
    product_id BLOB NOT NULL REFERENCES products (id),
    warehouse  TEXT NOT NULL,
    on_hand    INTEGER NOT NULL CHECK (on_hand >= 0),
    PRIMARY KEY (product_id, warehouse)
) STRICT;
CREATE TABLE accounts (
    customer_id        BLOB PRIMARY KEY NOT NULL REFERENCES customers (id),
    credit_limit_cents INTEGER NOT NULL,
    outstanding_cents  INTEGER NOT NULL CHECK (outstanding_cents >= 0)
) STRICT;
CREATE TABLE orders (
    id          BLOB PRIMARY KEY NOT NULL,
    customer_id BLOB NOT NULL REFERENCES customers (id),
    status      TEXT NOT NULL,
    reason      TEXT,
    total_cents INTEGER NOT NULL,
    created_at  TEXT NOT NULL
) STRICT;
CREATE TABLE order_lines (
    order_id         BLOB NOT NULL REFERENCES orders (id),
    line_no          INTEGER NOT NULL,
    product_id       BLOB NOT NULL,
    quantity         INTEGER NOT NULL,
    unit_price_cents INTEGER NOT NULL,
    PRIMARY KEY (order_id, line_no)
) STRICT;
