-- Local copies of other modules' reference data, fed by their events (data replication):
-- orders never asks customers or inventory for a name it already knows. `source_seq` is the
-- seq of the event that last wrote the row; older events never overwrite newer data.
CREATE TABLE customer_replicas (
    customer_id UUID        PRIMARY KEY,
    name        TEXT        NOT NULL,
    email       TEXT        NOT NULL,
    source_seq  BIGINT      NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE product_replicas (
    product_id  UUID        PRIMARY KEY,
    sku         TEXT        NOT NULL,
    name        TEXT        NOT NULL,
    price_cents BIGINT      NOT NULL,
    source_seq  BIGINT      NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
