-- The W3C traceparent of the request or message that wrote the row; the relay sends it as an
-- AMQP header, so one order can be followed across both services.
ALTER TABLE outbox ADD COLUMN traceparent text;
