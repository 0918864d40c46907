-- Idempotency keys belong to the signed-in user who sent them: the same key from another user
-- is another key (and can never replay this user's response).
ALTER TABLE idempotency_keys ADD COLUMN owner text NOT NULL DEFAULT '';
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE idempotency_keys ADD PRIMARY KEY (route, owner, key);
ALTER TABLE idempotency_keys ALTER COLUMN owner DROP DEFAULT;
