-- The shop both grown databases describe, for scripts/grown/orders.sql and payments.sql: the
-- order ids (UUIDv7 of the order's time, as the orders service makes them) and, in the view
-- `grown`, the :orders orders of 100,000 users over the 30 days before now with what became of
-- each — 90 % paid, 5 % declined, 5 % paid and refunded. Both databases are filled with the same
-- :anchor (now, once), so that they describe the same orders.
CREATE FUNCTION pg_temp.uuid7(at timestamptz, n bigint, salt text) RETURNS uuid
LANGUAGE sql IMMUTABLE AS $$
    SELECT (lpad(to_hex((extract(epoch FROM at) * 1000)::bigint), 12, '0') || '7'
            || substr(md5(salt || n), 1, 3) || '8' || substr(md5(salt || n), 4, 15))::uuid
$$;
CREATE TEMP VIEW grown AS
    SELECT n,
           pg_temp.uuid7(at, n, 'order') AS id,
           'grown-' || (n % 100000 + 1) AS user_id,
           100 + n % 900 AS amount,
           at,
           CASE WHEN n % 20 = 0 THEN 'declined' WHEN n % 20 = 1 THEN 'refunded' ELSE 'paid' END AS fate
    FROM (SELECT n, :'anchor'::timestamptz - interval '30 days' + n * (interval '30 days' / :orders) AS at
          FROM generate_series(1, :orders) AS n) AS s;
