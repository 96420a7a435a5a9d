-- Kept by the set-based replicator (`ReplicateBatch`) next to `member_replicas`, kept by the
-- per-event one (`Replicate`): applied to the same events, the two tables end equal.
-- Its columns are member_replicas' by construction (SQLite copies no key: the unique index is it).
CREATE TABLE member_replicas_batch AS SELECT * FROM member_replicas WHERE 0;
CREATE UNIQUE INDEX member_replicas_batch_key ON member_replicas_batch (member_id);

-- One row per application of an event by a test handler, tagged with its subscription: no
-- key, so an event applied twice shows as two rows.
CREATE TABLE applications (
    subscription TEXT    NOT NULL,
    event_id     BLOB    NOT NULL,
    seq          INTEGER NOT NULL
) STRICT;
