CREATE TABLE products (
    id          UUID PRIMARY KEY,
    sku         TEXT NOT NULL CONSTRAINT products_sku_key UNIQUE,
    name        TEXT NOT NULL,
    price_cents BIGINT NOT NULL CHECK (price_cents >= 0),
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE stock_levels (
    product_id UUID NOT NULL REFERENCES products (id),
    warehouse  TEXT NOT NULL,
    on_hand    BIGINT NOT NULL CHECK (on_hand >= 0),
    -- Units held for unsettled orders; the saga moves them.
    reserved   BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (product_id, warehouse),
    CONSTRAINT stock_levels_reserved_within_on_hand CHECK (reserved <= on_hand)
);
