-- Refunds (SPEC 3b): money given back for an order. A refund is a ledger row of kind REFUND, and
-- the database itself refuses a refund that is not exactly the give-back of one debit:
-- at most one refund per order, only of an order that was debited, of exactly the debited
-- amount, to the account that paid. For every account: balance = deposits − debits + refunds.

-- A payment request that reaches payments after its deadline is declined for that reason.
ALTER TABLE payments DROP CONSTRAINT payments_reason_check;
ALTER TABLE payments ADD CONSTRAINT payments_reason_check
    CHECK (reason IN ('insufficient_funds', 'account_not_found', 'payment_timeout'));

ALTER TABLE ledger DROP CONSTRAINT ledger_kind_check;
ALTER TABLE ledger ADD CONSTRAINT ledger_kind_check CHECK (kind IN ('DEPOSIT', 'DEBIT', 'REFUND'));

-- Debits and refunds name their order; deposits do not.
ALTER TABLE ledger DROP CONSTRAINT ledger_check;
ALTER TABLE ledger ADD CONSTRAINT ledger_order_exactly_for_debits_and_refunds
    CHECK ((kind = 'DEPOSIT') = (order_id IS NULL));

-- At most one debit and at most one refund per order.
ALTER TABLE ledger DROP CONSTRAINT ledger_order_id_key;
ALTER TABLE ledger ADD CONSTRAINT ledger_one_of_each_kind_per_order UNIQUE (order_id, kind);

-- A refund row must match a debit row of the same order, user and amount: its `refund_of`
-- column is 'DEBIT' (and NULL on other rows, which the foreign key then does not check).
ALTER TABLE ledger ADD CONSTRAINT ledger_entry_of_order UNIQUE (order_id, kind, user_id, amount);
ALTER TABLE ledger ADD COLUMN refund_of text
    GENERATED ALWAYS AS (CASE WHEN kind = 'REFUND' THEN 'DEBIT' END) STORED;
ALTER TABLE ledger ADD CONSTRAINT ledger_refund_gives_back_its_debit
    FOREIGN KEY (order_id, refund_of, user_id, amount)
    REFERENCES ledger (order_id, kind, user_id, amount);
