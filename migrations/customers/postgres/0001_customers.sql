CREATE TABLE customers (
    id               UUID PRIMARY KEY,
    name             TEXT NOT NULL,
    email            TEXT NOT NULL,
    -- Lower-cased email: uniqueness is case-insensitive, but the address is shown as given.
    email_normalized TEXT NOT NULL CONSTRAINT customers_email_normalized_key UNIQUE,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);
