-- Payment accounts, opened on first sight of a customer. (Event sourcing of accounts and
-- payments replaces this table's role with the saga issue.)
CREATE TABLE accounts (
    customer_id        BLOB    PRIMARY KEY NOT NULL,
    credit_limit_cents INTEGER NOT NULL CHECK (credit_limit_cents >= 0),
    opened_at          TEXT    NOT NULL
) STRICT;
