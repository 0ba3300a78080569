-- The first schema of the metadata store.
--
-- Conventions (shared with the PostgreSQL schema so the SQL in src/sql.rs runs on both):
-- * Every table carries `tenant`; every key starts with it, so a tenant can only ever reach its
--   own rows and ids need only be unique within a tenant.
-- * Timestamps are RFC 3339 UTC text with exactly six fractional digits
--   (`2025-01-31T08:15:00.000000Z`), so text order is time order and indexes on them work.
-- * Structured values (props, tags, flow specs, schedule triggers) are JSON text.
-- * Booleans are bound as booleans (SQLite stores 0/1).
-- * Children reference their parents with (tenant, id) foreign keys, so a row of one tenant can
--   never point at another tenant's flow or run; ON DELETE CASCADE is a safety net behind the
--   explicit deletes in `delete_flow`.

CREATE TABLE connections (
    tenant      TEXT NOT NULL,
    id          TEXT NOT NULL,
    name        TEXT NOT NULL,
    type_name   TEXT NOT NULL,
    props       TEXT NOT NULL,
    tags        TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (tenant, id),
    CONSTRAINT connections_tenant_name_key UNIQUE (tenant, name)
);

CREATE TABLE flows (
    tenant      TEXT NOT NULL,
    id          TEXT NOT NULL,
    name        TEXT NOT NULL,
    description TEXT NOT NULL,
    spec        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (tenant, id),
    CONSTRAINT flows_tenant_name_key UNIQUE (tenant, name)
);

CREATE TABLE schedules (
    tenant           TEXT NOT NULL,
    id               TEXT NOT NULL,
    flow_id          TEXT NOT NULL,
    flow_name        TEXT NOT NULL,
    trigger_spec     TEXT NOT NULL,
    enabled          BOOLEAN NOT NULL,
    retries          INTEGER NOT NULL,
    retry_delay_secs INTEGER NOT NULL,
    next_run_at      TEXT,
    last_run_at      TEXT,
    last_run_id      TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    PRIMARY KEY (tenant, id),
    CONSTRAINT schedules_tenant_flow_key UNIQUE (tenant, flow_id),
    FOREIGN KEY (tenant, flow_id) REFERENCES flows (tenant, id) ON DELETE CASCADE
);

-- The scheduler's cross-tenant poll: enabled schedules by next due time.
CREATE INDEX schedules_due_idx ON schedules (enabled, next_run_at);

CREATE TABLE runs (
    tenant       TEXT NOT NULL,
    id           TEXT NOT NULL,
    flow_id      TEXT NOT NULL,
    flow_name    TEXT NOT NULL,
    run_trigger  TEXT NOT NULL,
    status       TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    rows_read    INTEGER NOT NULL,
    rows_written INTEGER NOT NULL,
    batches      INTEGER NOT NULL,
    error        TEXT,
    created_at   TEXT NOT NULL,
    started_at   TEXT,
    finished_at  TEXT,
    PRIMARY KEY (tenant, id),
    FOREIGN KEY (tenant, flow_id) REFERENCES flows (tenant, id) ON DELETE CASCADE
);

-- Run history of one flow, newest first.
CREATE INDEX runs_flow_created_idx ON runs (tenant, flow_id, created_at DESC);
-- Run history of a whole tenant, newest first.
CREATE INDEX runs_created_idx ON runs (tenant, created_at DESC);
-- Start-up recovery looks only for unfinished runs, which are few; the partial index stays tiny.
CREATE INDEX runs_unfinished_idx ON runs (status) WHERE status IN ('queued', 'running');

-- The key is (tenant, run_id, seq): it is the index for reading a run's lines in order, and it
-- keeps run ids tenant-scoped like every other id.
CREATE TABLE run_logs (
    tenant  TEXT NOT NULL,
    run_id  TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    at      TEXT NOT NULL,
    level   TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (tenant, run_id, seq),
    FOREIGN KEY (tenant, run_id) REFERENCES runs (tenant, id) ON DELETE CASCADE
);

CREATE TABLE watermarks (
    tenant     TEXT NOT NULL,
    flow_id    TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant, flow_id),
    FOREIGN KEY (tenant, flow_id) REFERENCES flows (tenant, id) ON DELETE CASCADE
);
