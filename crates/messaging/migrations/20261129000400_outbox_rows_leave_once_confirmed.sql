-- A row now leaves the outbox as soon as the broker has confirmed it (the relay deletes it in the
-- transaction that would have marked it sent). Marking it sent cost an UPDATE through the table's
-- indexes — a second heap tuple, a second entry in the primary key and the message id index, one
-- in outbox_sent_at — and retention then deleted it anyway: per message, two writes and their WAL
-- for nothing any guarantee needs. Every row left is unsent, so the relay claims in primary-key
-- order and the partial indexes go.
DELETE FROM outbox WHERE sent_at IS NOT NULL;
DROP INDEX outbox_unsent;
DROP INDEX outbox_sent_at;
ALTER TABLE outbox DROP COLUMN sent_at;
