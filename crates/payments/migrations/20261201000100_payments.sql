-- The payments service's tables. The database refuses what must never happen: a negative
-- balance, a second debit or refund of an order, a refund that is not exactly the give-back of
-- its debit, and a second decision for a user's place in line.

CREATE TABLE accounts (
    user_id    text        PRIMARY KEY,
    balance    bigint      NOT NULL DEFAULT 0 CHECK (balance >= 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The decision taken for each order, taken once: a repeated request, under any message id, is
-- answered with the same outcome. Never deleted.
CREATE TABLE payments (
    order_id   uuid        PRIMARY KEY,
    user_id    text        NOT NULL,
    -- The order's place among its user's orders (src/sequences.rs): decided in this order.
    seq        bigint      NOT NULL CHECK (seq > 0),
    amount     bigint      NOT NULL CHECK (amount > 0),
    status     text        NOT NULL CHECK (status IN ('SUCCEEDED', 'FAILED')),
    reason     text        CHECK (reason IN
               ('insufficient_funds', 'account_not_found', 'payment_timeout')),
    -- A user's decisions are taken one at a time (under their payment_sequences row), so this
    -- orders them.
    decided_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (user_id, seq),
    CHECK ((status = 'FAILED') = (reason IS NOT NULL))
);

-- Every movement of money. For every account: balance = deposits − debits + refunds.
CREATE TABLE ledger (
    id         bigserial   PRIMARY KEY,
    user_id    text        NOT NULL REFERENCES accounts (user_id),
    kind       text        NOT NULL CHECK (kind IN ('DEPOSIT', 'DEBIT', 'REFUND')),
    amount     bigint      NOT NULL CHECK (amount > 0),
    -- Debits and refunds name their order (a debit's, its recorded decision); deposits do not.
    order_id   uuid        REFERENCES payments (order_id),
    -- 'DEBIT' on a refund row, so that the foreign key below finds the debit it gives back.
    refund_of  text        GENERATED ALWAYS AS (CASE WHEN kind = 'REFUND' THEN 'DEBIT' END) STORED,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_order_exactly_for_debits_and_refunds
        CHECK ((kind = 'DEPOSIT') = (order_id IS NULL)),
    -- At most one debit and at most one refund per order.
    CONSTRAINT ledger_one_of_each_kind_per_order UNIQUE (order_id, kind),
    CONSTRAINT ledger_entry_of_order UNIQUE (order_id, kind, user_id, amount),
    -- A refund gives back exactly its order's debit: same account, same amount.
    CONSTRAINT ledger_refund_gives_back_its_debit
        FOREIGN KEY (order_id, refund_of, user_id, amount)
        REFERENCES ledger (order_id, kind, user_id, amount)
);
CREATE INDEX ledger_by_user ON ledger (user_id);

-- The transactional inbox: ids of the messages already processed.
CREATE TABLE inbox (
    message_id  text        PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now()
);
-- Lets retention find old inbox rows without scanning the table.
CREATE INDEX inbox_received_at ON inbox (received_at);

-- Each user's place in line (src/sequences.rs): every request up to decided_through is decided
-- (or was passed over, its deadline long gone); `parked` requests further on wait in
-- parked_requests. Deciding or parking a user's request takes this row's lock first, so a
-- user's requests are decided one at a time whichever instance holds them.
CREATE TABLE payment_sequences (
    user_id         text   PRIMARY KEY,
    decided_through bigint NOT NULL DEFAULT 0 CHECK (decided_through >= 0),
    parked          int    NOT NULL DEFAULT 0 CHECK (parked >= 0)
);

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
