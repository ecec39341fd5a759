-- Tenant isolation at the database: a NOLOGIN role for tenant-facing work and Row Level Security
-- policies keyed on the transaction-local setting app.agent_id.
--
-- Requests made for one agent run as:
--   BEGIN; SET LOCAL ROLE agent_meter_tenant; SELECT set_config('app.agent_id', '<uuid>', true); ...
-- so RLS, not the handler, filters. NULLIF(.., '') makes "no tenant" mean "no rows": after a pooled
-- connection has used SET LOCAL, current_setting(.., true) returns '' rather than NULL.
-- The owner (the service's own role) is not subject to these policies: it does the cross-tenant
-- work (rollup, sync, ops) and never serves a tenant's request directly.

DO $$
BEGIN
    CREATE ROLE agent_meter_tenant NOLOGIN NOINHERIT NOBYPASSRLS;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL; -- roles are cluster-wide: another database of this cluster created it
END
$$;

-- The service role may switch to the tenant role (superusers already can).
DO $$
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('GRANT agent_meter_tenant TO %I', current_user);
    END IF;
END
$$;

-- Not SECURITY DEFINER, fully qualified, and without a SET clause so the planner can inline it
-- into every policy check (a SET clause makes each call a real function call).
CREATE FUNCTION current_agent_id() RETURNS uuid
    LANGUAGE sql STABLE
    AS $$ SELECT NULLIF(pg_catalog.current_setting('app.agent_id', true), '')::uuid $$;

GRANT USAGE ON SCHEMA public TO agent_meter_tenant;
GRANT EXECUTE ON FUNCTION current_agent_id() TO agent_meter_tenant;
-- Reads everywhere the tenant has data; writes only where per-agent jobs write.
-- No TRUNCATE, no REFERENCES, nothing on apalis.* or webhook_events.
GRANT SELECT ON agents, pricing_config, leads, properties, risk_assessments, tags, calls,
                agent_usage_metrics, invoices, invoice_lines TO agent_meter_tenant;
GRANT INSERT, UPDATE, DELETE ON leads, properties, risk_assessments, tags, calls TO agent_meter_tenant;
GRANT INSERT ON agent_usage_metrics TO agent_meter_tenant;

CREATE POLICY tenant_own_agent ON agents TO agent_meter_tenant
    USING (id = current_agent_id());

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['leads', 'properties', 'risk_assessments', 'tags', 'calls',
                             'agent_usage_metrics', 'invoices', 'invoice_lines']
    LOOP
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I TO agent_meter_tenant
                 USING (agent_id = current_agent_id())
                 WITH CHECK (agent_id = current_agent_id())', t);
    END LOOP;
END
$$;

-- Supabase: a dashboard signed in as the agent's user (auth.uid() = agents.user_id) sees the same
-- rows. Skipped on plain PostgreSQL, where there is no auth schema.
DO $$
DECLARE
    t text;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'auth')
       AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        EXECUTE 'CREATE POLICY supabase_own_agent ON agents TO authenticated
                     USING (user_id = auth.uid())';
        FOREACH t IN ARRAY ARRAY['leads', 'properties', 'risk_assessments', 'tags', 'calls',
                                 'agent_usage_metrics', 'invoices', 'invoice_lines']
        LOOP
            EXECUTE format(
                'CREATE POLICY supabase_isolation ON %I TO authenticated
                     USING (agent_id IN (SELECT id FROM public.agents WHERE user_id = auth.uid()))', t);
        END LOOP;
    END IF;
END
$$;
