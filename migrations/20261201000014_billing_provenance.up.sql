-- Billing provenance (issue 14): each invoice records what of the ledger it covers, so every
-- usage row is held by at most one invoice without a write per row.
--
-- An invoice of month M holds a usage row of its agent when the row occurred before the month
-- ends, was created at or before the invoice's `usage_through` watermark, and either occurred in
-- the month or (late usage from earlier months) was created after `late_after`. Finalizing
-- freezes the watermark; finalizing in month order makes the windows of an agent's invoices
-- disjoint. `invoice_holds` is that rule, used by rollups and by `usage_provenance`.
ALTER TABLE invoices
    ADD COLUMN starts_at     timestamptz,
    ADD COLUMN ends_at       timestamptz,
    -- Late rows (occurred before starts_at) held when created after this; 'infinity' = none.
    ADD COLUMN late_after    timestamptz NOT NULL DEFAULT 'infinity',
    -- Rows created after this are not on the invoice; '-infinity' = holds nothing yet.
    ADD COLUMN usage_through timestamptz NOT NULL DEFAULT '-infinity';

-- Invoices made before provenance: month bounds in the default billing timezone, finalized ones
-- hold what the old rules billed (late rows created after the previous finalize), drafts nothing
-- until they are rebuilt.
UPDATE invoices i
   SET starts_at = i.period_start::timestamp AT TIME ZONE 'America/Phoenix',
       ends_at = i.period_end::timestamp AT TIME ZONE 'America/Phoenix',
       usage_through = COALESCE(i.finalized_at, '-infinity'),
       late_after = COALESCE((SELECT max(p.finalized_at) FROM invoices p
                               WHERE p.agent_id = i.agent_id AND p.status = 'finalized'
                                 AND p.period_start < i.period_start), 'infinity');

ALTER TABLE invoices
    ALTER COLUMN starts_at SET NOT NULL,
    ALTER COLUMN ends_at SET NOT NULL,
    ADD CONSTRAINT invoices_bounds CHECK (starts_at < ends_at);

-- Finalized invoices of an agent, in month order: the latest one's watermark opens the next month.
CREATE INDEX invoices_finalized ON invoices (agent_id, period_start) WHERE status = 'finalized';

CREATE FUNCTION invoice_holds(i invoices, u agent_usage_metrics) RETURNS boolean
LANGUAGE sql IMMUTABLE
AS $$
    SELECT i.agent_id = u.agent_id
       AND i.status <> 'void'
       AND u.occurred_at < i.ends_at
       AND u.created_at <= i.usage_through
       AND (u.occurred_at >= i.starts_at OR u.created_at > i.late_after)
$$;

-- The billable-month rule in one place: an agent pays for a month when billing started before
-- the month ends and it was not cancelled before the month starts. Its first month holds the
-- setup fee (and any usage from before billing started).
CREATE FUNCTION billable_in(p_starts date, p_cancelled date, p_month date) RETURNS boolean
LANGUAGE sql IMMUTABLE
AS $$
    SELECT p_starts < (p_month + interval '1 month')::date
       AND (p_cancelled IS NULL OR p_cancelled >= p_month)
$$;

CREATE FUNCTION first_billable_month(p_starts date) RETURNS date
LANGUAGE sql IMMUTABLE
AS $$ SELECT date_trunc('month', p_starts::timestamp)::date $$;

-- Where each usage row is billed: the finalized invoice that holds it ('billed'), the draft that
-- shows it ('pending'), or neither yet ('awaiting rollup'). Rows keep their tenant's RLS.
CREATE VIEW usage_provenance WITH (security_invoker = true) AS
SELECT u.id AS usage_id, u.agent_id, u.metric_type, u.unit_price_usd, u.quantity, u.occurred_at,
       u.created_at, h.id AS invoice_id, h.period_start AS invoice_month,
       CASE h.status WHEN 'finalized' THEN 'billed' WHEN 'draft' THEN 'pending'
                     ELSE 'awaiting rollup' END AS state,
       CASE WHEN h.id IS NULL THEN NULL WHEN u.occurred_at >= h.starts_at THEN 'usage'
            ELSE 'adjustment' END AS line_kind,
       l.id AS invoice_line_id
  FROM agent_usage_metrics u
  LEFT JOIN LATERAL (SELECT i.id, i.period_start, i.status, i.starts_at FROM invoices i
                      WHERE i.agent_id = u.agent_id AND invoice_holds(i, u)
                      ORDER BY i.status = 'finalized' DESC, i.period_start LIMIT 1) h ON true
  LEFT JOIN invoice_lines l
         ON l.agent_id = u.agent_id AND l.invoice_id = h.id AND l.metric_type = u.metric_type
        AND l.unit_price_usd = u.unit_price_usd
        AND l.kind = CASE WHEN u.occurred_at >= h.starts_at THEN 'usage' ELSE 'adjustment' END;

GRANT SELECT ON usage_provenance TO agent_meter_tenant;
GRANT EXECUTE ON FUNCTION invoice_holds(invoices, agent_usage_metrics) TO agent_meter_tenant;
