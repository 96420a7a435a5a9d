-- Local copies of other modules' reference data, fed by their events (data replication):
-- orders never asks customers or inventory for a name it already knows. `source_seq` is the
-- seq of the event that last wrote the row; older events never overwrite newer data.
CREATE TABLE customer_replicas (
    customer_id BLOB    PRIMARY KEY NOT NULL,
    name        TEXT    NOT NULL,
    email       TEXT    NOT NULL,
    source_seq  INTEGER NOT NULL,
    updated_at  TEXT    NOT NULL
) STRICT;

CREATE TABLE product_replicas (
    product_id  BLOB    PRIMARY KEY NOT NULL,
    sku         TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    price_cents INTEGER NOT NULL,
    source_seq  INTEGER NOT NULL,
    updated_at  TEXT    NOT NULL
) STRICT;
