-- The role itself is cluster-wide and may serve other databases: it is left in place.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['leads', 'properties', 'risk_assessments', 'tags', 'calls',
                             'agent_usage_metrics', 'invoices', 'invoice_lines']
    LOOP
        EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %I', t);
        EXECUTE format('DROP POLICY IF EXISTS supabase_isolation ON %I', t);
    END LOOP;
END
$$;
DROP POLICY IF EXISTS tenant_own_agent ON agents;
DROP POLICY IF EXISTS supabase_own_agent ON agents;
REVOKE ALL ON agents, pricing_config, leads, properties, risk_assessments, tags, calls,
              agent_usage_metrics, invoices, invoice_lines FROM agent_meter_tenant;
REVOKE ALL ON SCHEMA public FROM agent_meter_tenant;
DROP FUNCTION IF EXISTS current_agent_id();
