-- Lets retention find old inbox rows without scanning the table.
CREATE INDEX inbox_received_at ON inbox (received_at);
