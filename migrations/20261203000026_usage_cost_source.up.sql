-- Margins fall back to the price's unit cost (issue 21, item 4): a usage row's cost to us is the
-- provider's reported cost (agent_usage_metrics.provider_cost_usd) when it has one, else its
-- quantity x the unit_cost_usd of the price in force for it (price_in_force(agent, metric, day),
-- the day in BILLING_TIMEZONE). usage_daily's provider_cost_usd sums only the reported costs, so
-- each summary row also carries how many of its ledger rows have none, and their quantity:
-- readers price that quantity at the unit cost in force on the row's day (known at read time, so
-- a `prices set --cost` shows in every margin at once).
--
-- Existing summaries are backfilled exactly: a zone's summary holds exactly the ledger rows
-- created at or before its `through`, so those rows without a provider cost are counted again
-- here. The summary is locked meanwhile (no refresh can add to it until this commits). The
-- columns keep no default afterwards: a writer that does not know them fails instead of
-- summarizing a row's cost as reported when it is not.
LOCK TABLE usage_daily_through, usage_daily IN EXCLUSIVE MODE;

ALTER TABLE usage_daily
    ADD COLUMN events_without_provider_cost bigint NOT NULL DEFAULT 0,
    ADD COLUMN quantity_without_provider_cost numeric NOT NULL DEFAULT 0;

UPDATE usage_daily d
   SET events_without_provider_cost = s.events,
       quantity_without_provider_cost = s.quantity
  FROM (SELECT t.time_zone, u.agent_id, (u.occurred_at AT TIME ZONE t.time_zone)::date AS day,
               u.metric_type, u.unit_price_usd, count(*) AS events, sum(u.quantity) AS quantity
          FROM usage_daily_through t
          JOIN agent_usage_metrics u ON u.created_at <= t.through AND u.provider_cost_usd IS NULL
         GROUP BY 1, 2, 3, 4, 5) s
 WHERE d.time_zone = s.time_zone AND d.agent_id = s.agent_id AND d.day = s.day
   AND d.metric_type = s.metric_type AND d.unit_price_usd = s.unit_price_usd;

ALTER TABLE usage_daily
    ALTER COLUMN events_without_provider_cost DROP DEFAULT,
    ALTER COLUMN quantity_without_provider_cost DROP DEFAULT;
