-- Cancellation, refunds and the payment deadline (SPEC 3b).
--
--   NEW ──paid──────────▶ FINISHED ──cancel──▶ REFUNDING ──refunded──▶ REFUNDED
--    │
--    ├─declined─────────▶ CANCELLED (insufficient_funds | account_not_found | payment_timeout)
--    ├─cancel───────────▶ CANCELLED (cancelled)
--    └─deadline passed──▶ CANCELLED (payment_timeout)
--
-- A CANCELLED order (cancelled or payment_timeout) whose debit still succeeds stays CANCELLED;
-- its `refund` goes REQUESTED → COMPLETED.

ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check
    CHECK (status IN ('NEW', 'FINISHED', 'CANCELLED', 'REFUNDING', 'REFUNDED'));
ALTER TABLE orders DROP CONSTRAINT orders_reason_check;
ALTER TABLE orders ADD CONSTRAINT orders_reason_check
    CHECK (reason IN ('insufficient_funds', 'account_not_found', 'payment_timeout', 'cancelled'));

-- The refund of the order's debit: asked for, then done. Only of an order that was paid: a
-- refunding or refunded one, or one cancelled by orders (not declined by payments).
ALTER TABLE orders ADD COLUMN refund text CHECK (refund IN ('REQUESTED', 'COMPLETED'));
ALTER TABLE orders ADD CONSTRAINT orders_refund_matches_status CHECK (
    CASE status
        WHEN 'REFUNDING' THEN refund = 'REQUESTED'
        WHEN 'REFUNDED' THEN refund = 'COMPLETED'
        WHEN 'CANCELLED' THEN refund IS NULL OR reason IN ('cancelled', 'payment_timeout')
        ELSE refund IS NULL
    END
);

-- After this moment an order still NEW is cancelled (payment_timeout), and payments declines
-- its request. NULL for orders placed before deadlines existed: they never time out.
ALTER TABLE orders ADD COLUMN payment_deadline timestamptz;
-- The deadline sweep's search: only NEW orders, oldest deadline first.
CREATE INDEX orders_awaiting_payment ON orders (payment_deadline) WHERE status = 'NEW';

-- Status and refund move only along the diagram above, whatever the statement.
CREATE FUNCTION orders_move_along_transitions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status IS DISTINCT FROM NEW.status AND (OLD.status, NEW.status) NOT IN (
        ('NEW', 'FINISHED'), ('NEW', 'CANCELLED'),
        ('FINISHED', 'REFUNDING'), ('REFUNDING', 'REFUNDED')
    ) THEN
        RAISE EXCEPTION 'order % cannot go from % to %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    IF OLD.refund IS DISTINCT FROM NEW.refund
       AND (COALESCE(OLD.refund, 'NONE'), COALESCE(NEW.refund, 'NONE')) NOT IN (
           ('NONE', 'REQUESTED'), ('REQUESTED', 'COMPLETED')
       ) THEN
        RAISE EXCEPTION 'refund of order % cannot go from % to %', OLD.id, OLD.refund, NEW.refund
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER orders_move_along_transitions
    BEFORE UPDATE OF status, refund ON orders
    FOR EACH ROW EXECUTE FUNCTION orders_move_along_transitions();

-- An order's history: each event at most once, and at most one payment outcome.
CREATE TABLE order_events (
    order_id uuid        NOT NULL REFERENCES orders (id),
    event    text        NOT NULL CHECK (event IN (
                 'placed', 'payment_requested', 'paid', 'declined', 'cancel_requested',
                 'refund_requested', 'refunded', 'deadline_passed')),
    at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    detail   jsonb       NOT NULL DEFAULT '{}',
    PRIMARY KEY (order_id, event)
);
CREATE UNIQUE INDEX order_events_one_payment_outcome ON order_events (order_id)
    WHERE event IN ('paid', 'declined');
