-- Chat sessions of the Agent API and their messages: every user message, assistant message
-- (with the tool calls it made) and tool result, so a conversation survives restarts and the
-- model sees its own earlier tool calls.
--
-- `message_count` is kept on the session row: appending bumps it first (which also serializes
-- concurrent appends to one session, in PostgreSQL by the row lock) and the new messages take
-- the positions after the old count, so positions are dense and never reused. Messages belong
-- to their session by (tenant, session_id) and go with it when it is deleted.
CREATE TABLE sessions (
    tenant        TEXT NOT NULL,
    id            TEXT NOT NULL,
    title         TEXT,
    system_prompt TEXT,
    include_tools BOOLEAN NOT NULL,
    metadata      TEXT NOT NULL,
    message_count INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
);

-- A tenant's sessions, most recently updated first.
CREATE INDEX sessions_tenant_updated_idx ON sessions (tenant, updated_at);

CREATE TABLE session_messages (
    tenant       TEXT NOT NULL,
    session_id   TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    role         TEXT NOT NULL,
    content      TEXT NOT NULL,
    -- JSON array of {id, name, arguments}; '[]' when the message makes no call.
    tool_calls   TEXT NOT NULL,
    tool_call_id TEXT,
    name         TEXT,
    -- JSON of the tool's structured result; NULL when there is none.
    data         TEXT,
    success      BOOLEAN,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (tenant, session_id, seq),
    FOREIGN KEY (tenant, session_id) REFERENCES sessions (tenant, id) ON DELETE CASCADE
);
