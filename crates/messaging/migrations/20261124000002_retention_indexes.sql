-- Let retention find old sent outbox rows without scanning the table.
CREATE INDEX outbox_sent_at ON outbox (sent_at) WHERE sent_at IS NOT NULL;
