-- API keys of the Agent API. Only a SHA-256 hash of each key is kept, with its first eight
-- characters for display; the plain key is shown once, when it is created.
--
-- Unlike the other tables, the key is `id` alone and `key_hash` is unique across tenants: a
-- presented key is looked up by its hash before its tenant is known (the key tells the tenant),
-- and the CLI revokes by id. Every other query still filters by tenant.
CREATE TABLE api_keys (
    id           TEXT NOT NULL PRIMARY KEY,
    tenant       TEXT NOT NULL,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    key_hash     TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT,
    revoked_at   TEXT,
    last_used_at TEXT,
    CONSTRAINT api_keys_hash_key UNIQUE (key_hash)
);

-- A tenant's keys, oldest first.
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant, created_at);
