-- The transactional outbox: a message is written here in the same transaction as the change it
-- announces, and the relay (src/outbox.rs) publishes it to RabbitMQ afterwards.
CREATE TABLE outbox (
    id          bigserial   PRIMARY KEY,
    -- AMQP message_id: fixed when the row is written, so every re-publish carries the same id.
    message_id  uuid        NOT NULL UNIQUE,
    queue       text        NOT NULL,
    payload     jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- Set only after the broker confirmed the publish.
    sent_at     timestamptz
);

-- Keeps the relay's claim cheap however many sent rows accumulate.
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
