-- Users and the keys their tokens are signed with.

CREATE TABLE users (
    user_id       text        PRIMARY KEY CHECK (user_id ~ '^[A-Za-z0-9._-]{1,64}$'),
    -- An Argon2id PHC string ($argon2id$v=19$m=19456,t=2,p=1$salt$hash); never the password.
    password_hash text        NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Ed25519 signing keys. The one without `retired_at` signs new tokens; retired keys stay
-- published (JWKS) until every token they signed has expired, so rotation logs no one out.
CREATE TABLE signing_keys (
    kid         text        PRIMARY KEY,
    -- PKCS#8 DER of the private key.
    private_key bytea       NOT NULL CHECK (length(private_key) = 48),
    created_at  timestamptz NOT NULL DEFAULT now(),
    retired_at  timestamptz
);
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys ((true)) WHERE retired_at IS NULL;
