-- The head follows every insert into the outbox, so that an append is one statement:
-- `INSERT INTO outbox (seq, …) SELECT seq + 1, … FROM outbox_head`. The single writer makes
-- the read of the head and the trigger's update one atomic step, as the separate UPDATE was.
CREATE TRIGGER outbox_head_follows AFTER INSERT ON outbox
BEGIN
    UPDATE outbox_head SET seq = NEW.seq WHERE id = 1;
END;
