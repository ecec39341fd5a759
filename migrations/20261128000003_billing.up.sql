-- Billing: prices that cannot overlap, agents' billing dates, invoices that can be finalized,
-- invoice lines by kind and price, and usage corrections (reversal rows carry negative quantity).

CREATE EXTENSION IF NOT EXISTS btree_gist;

-- One price per metric per day, per scope (the default, or one agent's override).
ALTER TABLE pricing_config
    ADD CONSTRAINT pricing_config_no_overlap EXCLUDE USING gist (
        (COALESCE(agent_id, '00000000-0000-0000-0000-000000000000'::uuid)) WITH =,
        metric_type WITH =,
        daterange(effective_from, effective_to, '[)') WITH &&
    );

ALTER TABLE agents
    ADD COLUMN billing_starts_on date,
    ADD COLUMN cancelled_on date;
UPDATE agents SET billing_starts_on = (created_at AT TIME ZONE 'America/Phoenix')::date
 WHERE billing_starts_on IS NULL;
ALTER TABLE agents
    ALTER COLUMN billing_starts_on SET DEFAULT (now() AT TIME ZONE 'America/Phoenix')::date,
    ALTER COLUMN billing_starts_on SET NOT NULL;

-- A reversal row negates an earlier row; the ledger is append-only.
ALTER TABLE agent_usage_metrics DROP CONSTRAINT IF EXISTS agent_usage_metrics_quantity_check;
-- Wall-clock insert time (not transaction start), so "created after the invoice was finalized"
-- is true for every row that commits after a finalize.
ALTER TABLE agent_usage_metrics ALTER COLUMN created_at SET DEFAULT clock_timestamp();
-- Late usage (created after an invoice was finalized) is found by insert time.
CREATE INDEX agent_usage_metrics_late ON agent_usage_metrics (agent_id, created_at);

ALTER TABLE invoices
    ADD COLUMN finalized_at timestamptz,
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE invoices DROP CONSTRAINT IF EXISTS invoices_status_check;
ALTER TABLE invoices ADD CONSTRAINT invoices_status_check CHECK (status IN ('draft', 'finalized', 'void'));
ALTER TABLE invoices ADD CONSTRAINT invoices_finalized_has_time
    CHECK ((status = 'finalized') = (finalized_at IS NOT NULL));

ALTER TABLE invoice_lines DROP CONSTRAINT IF EXISTS invoice_lines_agent_id_invoice_id_metric_type_key;
ALTER TABLE invoice_lines
    ADD COLUMN kind text NOT NULL DEFAULT 'usage'
        CHECK (kind IN ('subscription', 'setup_fee', 'usage', 'adjustment')),
    ADD COLUMN position int NOT NULL DEFAULT 0;
ALTER TABLE invoice_lines
    ADD CONSTRAINT invoice_lines_one_per_price UNIQUE (agent_id, invoice_id, kind, metric_type, unit_price_usd);
