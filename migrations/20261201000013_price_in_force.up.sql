-- "Which price is in force" in one place (issue 14): an agent's own price beats the default, the
-- latest effective_from wins, ranges are [from, to) in BILLING_TIMEZONE dates. Every caller
-- (metering, the effects writer, invoice rollups, `tools list`) uses it; a plain SQL function,
-- so the planner inlines it into each statement.
CREATE FUNCTION price_in_force(p_agent uuid, p_metric text, p_day date)
RETURNS SETOF pricing_config
LANGUAGE sql STABLE
AS $$
    SELECT *
      FROM pricing_config p
     WHERE p.metric_type = p_metric
       AND (p.agent_id = p_agent OR p.agent_id IS NULL)
       AND p.effective_from <= p_day
       AND (p.effective_to IS NULL OR p.effective_to > p_day)
     ORDER BY p.agent_id NULLS LAST, p.effective_from DESC
     LIMIT 1
$$;
GRANT EXECUTE ON FUNCTION price_in_force(uuid, text, date) TO agent_meter_tenant;
