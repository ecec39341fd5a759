-- Least privilege for the tenant role (issue 15): only what the code uses.
-- Per-agent jobs insert and upsert (INSERT ... ON CONFLICT DO UPDATE); nothing deletes as a tenant.
REVOKE DELETE ON leads, properties, risk_assessments, tags, calls FROM agent_meter_tenant;

-- Per-agent price overrides are one agency's terms: a tenant sees the defaults and its own.
-- The owner (rollups, metering as the service) is not subject to the policy.
ALTER TABLE pricing_config ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_prices ON pricing_config TO agent_meter_tenant
    USING (agent_id IS NULL OR agent_id = current_agent_id());
