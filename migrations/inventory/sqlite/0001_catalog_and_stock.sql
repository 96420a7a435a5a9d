CREATE TABLE products (
    id          BLOB PRIMARY KEY NOT NULL,
    sku         TEXT NOT NULL CONSTRAINT products_sku_key UNIQUE,
    name        TEXT NOT NULL,
    price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
) STRICT;

CREATE TABLE stock_levels (
    product_id BLOB NOT NULL REFERENCES products (id),
    warehouse  TEXT NOT NULL,
    on_hand    INTEGER NOT NULL CHECK (on_hand >= 0),
    -- Units held for unsettled orders; the saga moves them.
    reserved   INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    updated_at TEXT NOT NULL,
    PRIMARY KEY (product_id, warehouse),
    CONSTRAINT stock_levels_reserved_within_on_hand CHECK (reserved <= on_hand)
) STRICT;
