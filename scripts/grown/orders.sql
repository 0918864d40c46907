-- The orders database of a shop that has been running for a while: :orders orders placed over the
-- 30 days before now by 100,000 users — 90 % paid, 5 % declined, 5 % paid and refunded — each with
-- its history, and the idempotency keys of the last 48 hours (what retention leaves). Ids are
-- UUIDv7 of the order's time, as the service makes them. Applied to a migrated, empty database.
\set ON_ERROR_STOP on
\ir shop.sql

INSERT INTO orders (id, user_id, amount, description, status, reason, refund, created_at,
                    updated_at, payment_deadline)
SELECT id, user_id, amount, 'grown order ' || n,
       CASE fate WHEN 'declined' THEN 'CANCELLED' WHEN 'refunded' THEN 'REFUNDED' ELSE 'FINISHED' END,
       CASE fate WHEN 'declined' THEN 'insufficient_funds' END,
       CASE fate WHEN 'refunded' THEN 'COMPLETED' END,
       at, at + interval '20 ms', at + interval '15 minutes'
FROM grown;

INSERT INTO order_events (order_id, event, at, detail)
SELECT id, e.event, at + e.after, e.detail
FROM grown,
     LATERAL (VALUES ('placed', interval '0', jsonb_build_object('amount', amount)),
                     ('payment_requested', interval '0',
                      jsonb_build_object('deadline', at + interval '15 minutes')),
                     (CASE fate WHEN 'declined' THEN 'declined' ELSE 'paid' END, interval '20 ms',
                      CASE fate WHEN 'declined' THEN '{"reason": "insufficient_funds"}'::jsonb
                           ELSE '{}'::jsonb END)) AS e(event, after, detail)
UNION ALL
SELECT id, e.event, at + e.after, '{}'
FROM grown,
     LATERAL (VALUES ('cancel_requested', interval '1 minute'),
                     ('refund_requested', interval '1 minute'),
                     ('refunded', interval '61 seconds')) AS e(event, after)
WHERE fate = 'refunded';

INSERT INTO idempotency_keys (route, owner, key, request, response_status, response_body, created_at)
SELECT 'POST /orders', user_id, pg_temp.uuid7(at, n, 'key')::text,
       jsonb_build_object('user_id', user_id, 'amount', amount, 'description', 'grown order ' || n),
       201, convert_to('{"id":"' || id || '"}', 'UTF8'), at
FROM grown WHERE at > now() - interval '48 hours';

VACUUM ANALYZE;
