-- Tokens revoked by signing out, until they would have expired anyway: the services read this
-- list (GET /auth/revoked) and refuse them. `id` is where a reader has read up to.
CREATE TABLE revoked_tokens (
    id         bigserial   PRIMARY KEY,
    jti        text        NOT NULL UNIQUE,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz NOT NULL DEFAULT now()
);
-- Retention deletes those past their expiry.
CREATE INDEX revoked_tokens_by_expiry ON revoked_tokens (expires_at);
