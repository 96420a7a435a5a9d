-- The scratch source module of the kernel's messaging tests: members it registers and renames,
-- each change published through the outbox in the same transaction.
CREATE TABLE members (
    id    UUID PRIMARY KEY,
    name  TEXT NOT NULL,
    email TEXT NOT NULL
);
