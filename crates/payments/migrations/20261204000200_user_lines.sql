-- Each user's payment requests decided in the order their orders were placed (src/sequences.rs).

-- The order's place among its user's orders: decided in this order.
ALTER TABLE payments ADD COLUMN seq bigint;
-- Decisions already taken are numbered by order id — order ids are UUIDv7, so by time of
-- placement — as orders numbers the orders themselves (its own migration), so both sides
-- agree on every user's line. (This holds when every order placed has its decision here: an
-- upgrade starts from drained queues, docs/operations.md.)
UPDATE payments SET seq = numbered.seq
FROM (SELECT order_id, row_number() OVER (PARTITION BY user_id ORDER BY order_id) AS seq
      FROM payments) numbered
WHERE payments.order_id = numbered.order_id;
ALTER TABLE payments
    ALTER COLUMN seq SET NOT NULL,
    ADD CONSTRAINT payments_seq_check CHECK (seq > 0),
    ADD CONSTRAINT payments_user_id_seq_key UNIQUE (user_id, seq);
-- A user's decisions are taken one at a time (under their payment_sequences row), so this
-- orders them.
ALTER TABLE payments RENAME COLUMN created_at TO decided_at;
ALTER TABLE payments ALTER COLUMN decided_at SET DEFAULT clock_timestamp();

-- Each user's place in line: every request up to decided_through is decided (or was passed
-- over, its deadline long gone); `parked` requests further on wait in parked_requests.
-- Deciding or parking a user's request takes this row's lock first, so a user's requests are
-- decided one at a time whichever instance holds them.
CREATE TABLE payment_sequences (
    user_id         text   PRIMARY KEY,
    decided_through bigint NOT NULL DEFAULT 0 CHECK (decided_through >= 0),
    parked          int    NOT NULL DEFAULT 0 CHECK (parked >= 0)
);
INSERT INTO payment_sequences (user_id, decided_through)
SELECT user_id, max(seq) FROM payments GROUP BY user_id;

-- Requests that arrived before an earlier one of their user: decided once it is.
CREATE TABLE parked_requests (
    user_id     text        NOT NULL,
    seq         bigint      NOT NULL,
    message_id  text        NOT NULL,
    order_id    uuid        NOT NULL,
    amount      bigint      NOT NULL CHECK (amount > 0),
    deadline    timestamptz NOT NULL,
    traceparent text        NOT NULL,
    parked_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, seq)
);
-- The sweep of those whose deadline passed while they waited.
CREATE INDEX parked_requests_by_deadline ON parked_requests (deadline);
