-- Payment accounts, opened on first sight of a customer. (Event sourcing of accounts and
-- payments replaces this table's role with the saga issue.)
CREATE TABLE accounts (
    customer_id        UUID        PRIMARY KEY,
    credit_limit_cents BIGINT      NOT NULL CHECK (credit_limit_cents >= 0),
    opened_at          TIMESTAMPTZ NOT NULL
);
