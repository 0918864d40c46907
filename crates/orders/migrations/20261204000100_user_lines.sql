-- Each user's orders numbered in the order they were placed (seq: 1, 2, …), so that payments
-- decides a user's payment requests in that order (payments/src/sequences.rs), and what
-- reminders (src/reminders.rs) need to ask payments again for an answer that is overdue.

-- Its place among its user's orders, from 1 (user_sequences).
ALTER TABLE orders ADD COLUMN seq bigint;
-- When to ask payments again, while an answer is outstanding: the outcome of its payment, or
-- its refund. NULL when nothing is.
ALTER TABLE orders ADD COLUMN remind_at timestamptz;
-- How often it was asked again.
ALTER TABLE orders ADD COLUMN reminders smallint NOT NULL DEFAULT 0;

-- Orders already placed are numbered by id: order ids are UUIDv7, so by time of placement, and
-- payments numbers the decisions it holds for them the same way (its own migration), so both
-- sides agree on every user's line.
UPDATE orders SET seq = numbered.seq
FROM (SELECT id, row_number() OVER (PARTITION BY user_id ORDER BY id) AS seq FROM orders) numbered
WHERE orders.id = numbered.id;
-- An answer still outstanding — a payment's outcome not applied yet (even to an order
-- cancelled meanwhile), or a refund asked for — is asked for again at once: what was in flight
-- was neither signed nor numbered, and the services now refuse such messages. Asking again is
-- harmless: payments answers with the decision it took.
UPDATE orders SET remind_at = now()
WHERE refund = 'REQUESTED'
   OR (status IN ('NEW', 'CANCELLED') AND NOT EXISTS (
         SELECT 1 FROM order_events e
         WHERE e.order_id = orders.id AND e.event IN ('paid', 'declined')));
-- Every order has a deadline now; for one placed without, its placement was its deadline.
UPDATE orders SET payment_deadline = created_at WHERE payment_deadline IS NULL;

ALTER TABLE orders
    ALTER COLUMN seq SET NOT NULL,
    ADD CONSTRAINT orders_seq_check CHECK (seq > 0),
    ADD CONSTRAINT orders_user_id_seq_key UNIQUE (user_id, seq),
    ALTER COLUMN payment_deadline SET NOT NULL,
    -- Placement sets both, from one clock, in the statement that inserts the order.
    ALTER COLUMN created_at DROP DEFAULT,
    ALTER COLUMN updated_at DROP DEFAULT;

-- The reminders' search: only orders with an answer outstanding, the most overdue first.
CREATE INDEX orders_to_remind ON orders (remind_at) WHERE remind_at IS NOT NULL;

-- How many orders each user has placed: the next order's seq is one more. Placing takes the
-- user's row lock, so the orders of one user are numbered in the order they were committed.
CREATE TABLE user_sequences (
    user_id  text   PRIMARY KEY,
    last_seq bigint NOT NULL CHECK (last_seq > 0)
);
INSERT INTO user_sequences (user_id, last_seq)
SELECT user_id, max(seq) FROM orders GROUP BY user_id;
