-- Stock held for orders (the inventory step of the order saga). One row per order: the
-- reservation's outcome and where it stands; its lines say which warehouses the units came
-- from, so that a commit, release or restock moves exactly those units.
CREATE TABLE reservations (
    order_id   BLOB PRIMARY KEY NOT NULL,
    status     TEXT NOT NULL
        CHECK (status IN ('reserved', 'failed', 'committed', 'released', 'restocked')),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;

CREATE TABLE reservation_lines (
    order_id   BLOB    NOT NULL REFERENCES reservations (order_id),
    product_id BLOB    NOT NULL,
    warehouse  TEXT    NOT NULL,
    quantity   INTEGER NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, product_id, warehouse),
    FOREIGN KEY (product_id, warehouse) REFERENCES stock_levels (product_id, warehouse)
) STRICT;
