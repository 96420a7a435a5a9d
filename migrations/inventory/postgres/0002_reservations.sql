-- Stock held for orders (the inventory step of the order saga). One row per order: the
-- reservation's outcome and where it stands; its lines say which warehouses the units came
-- from, so that a commit, release or restock moves exactly those units.
CREATE TABLE reservations (
    order_id   UUID PRIMARY KEY,
    status     TEXT NOT NULL
        CHECK (status IN ('reserved', 'failed', 'committed', 'released', 'restocked')),
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE reservation_lines (
    order_id   UUID   NOT NULL REFERENCES reservations (order_id),
    product_id UUID   NOT NULL,
    warehouse  TEXT   NOT NULL,
    quantity   BIGINT NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, product_id, warehouse),
    FOREIGN KEY (product_id, warehouse) REFERENCES stock_levels (product_id, warehouse)
);
