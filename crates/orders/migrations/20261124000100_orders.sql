CREATE TABLE orders (
    id          uuid        PRIMARY KEY,
    user_id     text        NOT NULL,
    amount      bigint      NOT NULL CHECK (amount > 0),
    description text        NOT NULL,
    status      text        NOT NULL DEFAULT 'NEW'
                            CHECK (status IN ('NEW', 'FINISHED', 'CANCELLED')),
    reason      text        CHECK (reason IN ('insufficient_funds', 'account_not_found')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- When the status last changed.
    updated_at  timestamptz NOT NULL DEFAULT now(),
    -- A reason exactly when cancelled.
    CHECK ((status = 'CANCELLED') = (reason IS NOT NULL))
);

-- A user's orders, newest first.
CREATE INDEX orders_by_user ON orders (user_id, created_at DESC, id DESC);
