-- The agency portal (issue 16): one-time sign-in links and server-side sessions. Only SHA-256
-- digests of the link tokens and session ids are stored. The service reads these as the owner;
-- the tenant role has no privilege on them (RLS and a policy keep the catalog audit's rule).
CREATE TABLE portal_sign_in_tokens (
    token_hash  bytea PRIMARY KEY,
    agent_id    uuid NOT NULL REFERENCES agents (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);

CREATE TABLE portal_sessions (
    id_hash     bytea PRIMARY KEY,
    agent_id    uuid NOT NULL REFERENCES agents (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX portal_sessions_expiry ON portal_sessions (expires_at);

ALTER TABLE portal_sign_in_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE portal_sessions ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON portal_sign_in_tokens TO agent_meter_tenant
    USING (agent_id = current_agent_id());
CREATE POLICY tenant_isolation ON portal_sessions TO agent_meter_tenant
    USING (agent_id = current_agent_id());
