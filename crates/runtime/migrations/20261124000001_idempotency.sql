-- HTTP idempotency keys: the first response to a keyed request, replayed to its retries.
-- A key is written in the same transaction as the effect it guards, so a retry either finds the
-- committed response or waits on this primary key for the first attempt to finish.
CREATE TABLE idempotency_keys (
    route           text        NOT NULL,
    key             text        NOT NULL,
    -- The parsed request, so that a retry with a different body is recognised.
    request         jsonb       NOT NULL,
    response_status smallint    NOT NULL,
    response_body   bytea       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (route, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
