-- Runs carry a heartbeat so several processes (a server, the scheduler, the CLI) sharing one
-- database can tell a live run from one whose process died, refuse to overlap a live run, and
-- ask the owning process to stop it.
ALTER TABLE runs ADD COLUMN heartbeat_at TEXT;
ALTER TABLE runs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
UPDATE runs SET heartbeat_at = COALESCE(finished_at, started_at, created_at);
CREATE INDEX runs_unfinished_flow_idx ON runs (tenant, flow_id) WHERE status IN ('queued', 'running');
