-- AI usage: one row per agent run (chat, streamed chat, session chat), with the tokens, model
-- calls and tool calls it used and its cost in micro-dollars (millionths of a US dollar, from
-- the price table in force when it ran). Sums over these rows are the usage reports and what
-- the per-tenant and per-key caps are checked against.
CREATE TABLE usage_records (
    tenant        TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    session_id    TEXT,
    model         TEXT NOT NULL,
    input_tokens  INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    tool_calls    INTEGER NOT NULL,
    llm_calls     INTEGER NOT NULL,
    cost_micros   INTEGER NOT NULL,
    at            TEXT NOT NULL,
    PRIMARY KEY (tenant, run_id)
);

-- A tenant's use since a time (its cap, its report) and a key's (the key's cap).
CREATE INDEX usage_records_tenant_at_idx ON usage_records (tenant, at);
CREATE INDEX usage_records_tenant_key_at_idx ON usage_records (tenant, key_id, at);
