-- Kept by the set-based replicator (`ReplicateBatch`) next to `member_replicas`, kept by the
-- per-event one (`Replicate`): applied to the same events, the two tables end equal.
CREATE TABLE member_replicas_batch (LIKE member_replicas INCLUDING ALL);

-- One row per application of an event by a test handler, tagged with its subscription: no
-- key, so an event applied twice shows as two rows.
CREATE TABLE applications (
    subscription TEXT   NOT NULL,
    event_id     UUID   NOT NULL,
    seq          BIGINT NOT NULL
);
