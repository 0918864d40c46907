-- A service's own message keys (src/signing/keys.rs): X25519 key pairs, each announced
-- (published and accepted) from when it is made until retired_at, and used to sign from
-- current_from — the newest key whose current_from has come is the current one.
CREATE TABLE message_keys (
    kid          text        PRIMARY KEY,
    secret       bytea       NOT NULL CHECK (length(secret) = 32),
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    current_from timestamptz NOT NULL DEFAULT clock_timestamp(),
    retired_at   timestamptz
);
