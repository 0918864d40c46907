-- The payments database matching scripts/grown/orders.sql: the 100,000 users' accounts, a
-- decision per order, the ledger (a deposit per user, a debit per paid order, a refund per refunded
-- one; every balance = deposits − debits + refunds), and the inbox of the last 14 days (what
-- retention leaves). Applied to a migrated, empty database.
\set ON_ERROR_STOP on
\ir shop.sql

INSERT INTO accounts (user_id, balance, created_at)
SELECT 'grown-' || u, 1000000, now() - interval '31 days' FROM generate_series(1, 100000) AS u;

INSERT INTO payments (order_id, user_id, amount, status, reason, created_at)
SELECT id, user_id, amount,
       CASE fate WHEN 'declined' THEN 'FAILED' ELSE 'SUCCEEDED' END,
       CASE fate WHEN 'declined' THEN 'insufficient_funds' END,
       at + interval '10 ms'
FROM grown;

INSERT INTO ledger (user_id, kind, amount, order_id, created_at)
SELECT user_id, 'DEBIT', amount, id, at + interval '10 ms' FROM grown WHERE fate <> 'declined'
UNION ALL
SELECT user_id, 'REFUND', amount, id, at + interval '61 seconds' FROM grown WHERE fate = 'refunded';

INSERT INTO ledger (user_id, kind, amount, created_at)
SELECT a.user_id, 'DEPOSIT',
       1000000 + coalesce(sum(CASE l.kind WHEN 'DEBIT' THEN l.amount ELSE -l.amount END), 0),
       now() - interval '31 days'
FROM accounts a LEFT JOIN ledger l USING (user_id)
GROUP BY a.user_id;

INSERT INTO inbox (message_id, received_at)
SELECT pg_temp.uuid7(at, n, 'request')::text, at FROM grown WHERE at > now() - interval '14 days'
UNION ALL
SELECT pg_temp.uuid7(at, n, 'refund')::text, at + interval '1 minute'
FROM grown WHERE at > now() - interval '14 days' AND fate = 'refunded';

VACUUM ANALYZE;
