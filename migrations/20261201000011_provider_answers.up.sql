-- Paid provider answers, committed on their own before any effect is attempted (issue 14): a
-- re-run reuses the answer, so an effect that keeps failing never makes us pay twice.
CREATE TABLE provider_answers (
    agent_id    uuid NOT NULL REFERENCES agents (id),
    kind        text NOT NULL REFERENCES finding_kinds (kind),
    key         text NOT NULL,
    answer      jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, kind, key)
);
ALTER TABLE provider_answers ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON provider_answers TO agent_meter_tenant;
CREATE POLICY tenant_isolation ON provider_answers TO agent_meter_tenant
    USING (agent_id = current_agent_id())
    WITH CHECK (agent_id = current_agent_id());
