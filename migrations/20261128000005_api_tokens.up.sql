-- Per-agent API tokens. Only a SHA-256 of each token is stored; the token is shown once.
CREATE TABLE agent_api_tokens (
    id          uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    agent_id    uuid NOT NULL REFERENCES agents (id),
    token_hash  bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    UNIQUE (agent_id, id)
);
-- Looked up by the service (as the owner) before a request switches to the tenant role; the
-- tenant role has no grant on it. RLS is on like every table with agent_id.
ALTER TABLE agent_api_tokens ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON agent_api_tokens TO agent_meter_tenant
    USING (agent_id = current_agent_id()) WITH CHECK (agent_id = current_agent_id());
