-- Events of one aggregate, for timelines (`EventLog::about`).
CREATE INDEX outbox_by_aggregate ON outbox (aggregateid, seq);
