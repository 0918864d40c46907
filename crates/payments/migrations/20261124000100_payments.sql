CREATE TABLE accounts (
    user_id    text        PRIMARY KEY,
    balance    bigint      NOT NULL DEFAULT 0 CHECK (balance >= 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The decision taken for each order, taken once: a repeated request, under any message id,
-- is answered with the same outcome.
CREATE TABLE payments (
    order_id   uuid        PRIMARY KEY,
    user_id    text        NOT NULL,
    amount     bigint      NOT NULL CHECK (amount > 0),
    status     text        NOT NULL CHECK (status IN ('SUCCEEDED', 'FAILED')),
    reason     text        CHECK (reason IN ('insufficient_funds', 'account_not_found')),
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'FAILED') = (reason IS NOT NULL))
);

-- Every movement of money. For every account: balance = Σ deposits − Σ debits.
CREATE TABLE ledger (
    id         bigserial   PRIMARY KEY,
    user_id    text        NOT NULL REFERENCES accounts (user_id),
    kind       text        NOT NULL CHECK (kind IN ('DEPOSIT', 'DEBIT')),
    amount     bigint      NOT NULL CHECK (amount > 0),
    -- Debits only, and at most one debit per order.
    order_id   uuid        UNIQUE REFERENCES payments (order_id),
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'DEBIT') = (order_id IS NOT NULL))
);
CREATE INDEX ledger_by_user ON ledger (user_id);

-- The transactional inbox: ids of the messages already processed.
CREATE TABLE inbox (
    message_id  text        PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now()
);
