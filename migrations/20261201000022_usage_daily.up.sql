-- Daily totals of the usage ledger, so views of a month or of the last 30 days (the ops page's
-- money view and chart, `usage`, /v1/usage, the portal) read about a row per agent, day, metric
-- and price instead of every usage row in the period.
--
-- For each time zone it was built in, usage_daily holds exactly the ledger rows created at or
-- before that zone's usage_daily_through.through (a ledger cut: every row created at or before it
-- was committed when it was taken), by day in that zone. `through` only moves forward, and a
-- zone's rows are never rewritten by another zone's build, so a reader that saw a zone's
-- `through` may rely on it. Readers add the rows created after it from the ledger itself (by
-- agent_usage_metrics_late), so what they show is the whole ledger however long ago the summary
-- was brought up to date (daily, by prune_jobs).
CREATE TABLE usage_daily (
    time_zone         text NOT NULL,
    agent_id          uuid NOT NULL REFERENCES agents (id),
    day               date NOT NULL,
    metric_type       text NOT NULL,
    unit_price_usd    numeric(14, 6) NOT NULL,
    events            bigint NOT NULL,
    quantity          numeric NOT NULL,
    provider_cost_usd numeric NOT NULL,
    PRIMARY KEY (time_zone, agent_id, day, metric_type, unit_price_usd)
);

CREATE TABLE usage_daily_through (
    time_zone text PRIMARY KEY,
    through   timestamptz
);

ALTER TABLE usage_daily ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON usage_daily TO agent_meter_tenant
    USING (agent_id = current_agent_id())
    WITH CHECK (agent_id = current_agent_id());
GRANT SELECT ON usage_daily, usage_daily_through TO agent_meter_tenant;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'auth')
       AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        EXECUTE 'CREATE POLICY supabase_isolation ON usage_daily TO authenticated
                     USING (agent_id IN (SELECT id FROM public.agents WHERE user_id = auth.uid()))';
    END IF;
END
$$;
