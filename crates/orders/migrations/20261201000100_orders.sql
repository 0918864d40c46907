-- The orders service's tables (src/status.rs has the diagram the trigger below enforces).
--
--   NEW ──paid──────────▶ FINISHED ──cancel──▶ REFUNDING ──refunded──▶ REFUNDED
--    ├─declined─────────▶ CANCELLED (insufficient_funds | account_not_found | payment_timeout)
--    ├─cancel───────────▶ CANCELLED (cancelled)
--    └─deadline passed──▶ CANCELLED (payment_timeout)
--
-- A CANCELLED order (cancelled or payment_timeout) whose debit still succeeds stays CANCELLED;
-- its `refund` goes REQUESTED → COMPLETED.
CREATE TABLE orders (
    id               uuid        PRIMARY KEY,
    user_id          text        NOT NULL,
    -- Its place among its user's orders, from 1 (user_sequences): payments decides a user's
    -- payment requests in this order.
    seq              bigint      NOT NULL CHECK (seq > 0),
    amount           bigint      NOT NULL CHECK (amount > 0),
    description      text        NOT NULL,
    status           text        NOT NULL DEFAULT 'NEW'
                     CHECK (status IN ('NEW', 'FINISHED', 'CANCELLED', 'REFUNDING', 'REFUNDED')),
    -- Why it is CANCELLED, exactly when it is.
    reason           text        CHECK (reason IN
                     ('insufficient_funds', 'account_not_found', 'payment_timeout', 'cancelled')),
    -- The refund of its debit: asked for, then done.
    refund           text        CHECK (refund IN ('REQUESTED', 'COMPLETED')),
    created_at       timestamptz NOT NULL,
    -- When the status last changed.
    updated_at       timestamptz NOT NULL,
    -- Past it an order still NEW is cancelled (payment_timeout), and payments declines its
    -- request.
    payment_deadline timestamptz NOT NULL,
    -- When to ask payments again (src/reminders.rs), while an answer is outstanding: the
    -- outcome of its payment, or its refund. NULL when nothing is.
    remind_at        timestamptz,
    -- How often it was asked again.
    reminders        smallint    NOT NULL DEFAULT 0,
    UNIQUE (user_id, seq),
    CHECK ((status = 'CANCELLED') = (reason IS NOT NULL)),
    -- Only a paid order has a refund: a refunding or refunded one, or one cancelled by orders
    -- (not declined by payments) whose debit came after all.
    CONSTRAINT orders_refund_matches_status CHECK (
        CASE status
            WHEN 'REFUNDING' THEN refund = 'REQUESTED'
            WHEN 'REFUNDED' THEN refund = 'COMPLETED'
            WHEN 'CANCELLED' THEN refund IS NULL OR reason IN ('cancelled', 'payment_timeout')
            ELSE refund IS NULL
        END
    )
);

-- A user's orders, newest first.
CREATE INDEX orders_by_user ON orders (user_id, created_at DESC, id DESC);
-- The deadline sweep's search: only NEW orders, oldest deadline first.
CREATE INDEX orders_awaiting_payment ON orders (payment_deadline) WHERE status = 'NEW';
-- The reminders' search: only orders with an answer outstanding, the most overdue first.
CREATE INDEX orders_to_remind ON orders (remind_at) WHERE remind_at IS NOT NULL;

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

-- How many orders each user has placed: the next order's seq is one more. Placing takes the
-- user's row lock, so the orders of one user are numbered in the order they were committed.
CREATE TABLE user_sequences (
    user_id  text   PRIMARY KEY,
    last_seq bigint NOT NULL CHECK (last_seq > 0)
);
