-- The transactional outbox (src/outbox.rs): a message is written here in the same transaction as
-- the change it announces, and the relay publishes it afterwards. A row leaves the table once the
-- broker confirmed it, in the transaction that saw the confirm: every row here is unsent.
CREATE TABLE outbox (
    -- The relay claims rows in this order.
    id          bigserial   PRIMARY KEY,
    -- The AMQP message_id: fixed when the row is written, so every re-publish carries the same.
    message_id  uuid        NOT NULL UNIQUE,
    queue       text        NOT NULL,
    payload     jsonb       NOT NULL,
    -- The W3C traceparent of the request or message that wrote the row, sent as an AMQP header.
    traceparent text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
