-- The scratch source module of the kernel's messaging tests: members it registers and renames,
-- each change published through the outbox in the same transaction.
CREATE TABLE members (
    id    BLOB PRIMARY KEY NOT NULL,
    name  TEXT NOT NULL,
    email TEXT NOT NULL
) STRICT;
