ALTER TABLE invoice_lines DROP CONSTRAINT IF EXISTS invoice_lines_one_per_price;
ALTER TABLE invoice_lines DROP COLUMN IF EXISTS position, DROP COLUMN IF EXISTS kind;
DELETE FROM invoice_lines a USING invoice_lines b
 WHERE a.ctid > b.ctid AND a.agent_id = b.agent_id AND a.invoice_id = b.invoice_id AND a.metric_type = b.metric_type;
ALTER TABLE invoice_lines ADD CONSTRAINT invoice_lines_agent_id_invoice_id_metric_type_key
    UNIQUE (agent_id, invoice_id, metric_type);
ALTER TABLE invoices DROP CONSTRAINT IF EXISTS invoices_finalized_has_time;
ALTER TABLE invoices DROP CONSTRAINT IF EXISTS invoices_status_check;
UPDATE invoices SET status = 'issued' WHERE status = 'finalized';
ALTER TABLE invoices ADD CONSTRAINT invoices_status_check CHECK (status IN ('draft', 'issued', 'void'));
ALTER TABLE invoices DROP COLUMN IF EXISTS updated_at, DROP COLUMN IF EXISTS finalized_at;
DROP INDEX IF EXISTS agent_usage_metrics_late;
ALTER TABLE agent_usage_metrics ALTER COLUMN created_at SET DEFAULT now();
DELETE FROM agent_usage_metrics WHERE quantity < 0;
ALTER TABLE agent_usage_metrics ADD CONSTRAINT agent_usage_metrics_quantity_check CHECK (quantity >= 0);
ALTER TABLE agents DROP COLUMN IF EXISTS cancelled_on, DROP COLUMN IF EXISTS billing_starts_on;
ALTER TABLE pricing_config DROP CONSTRAINT IF EXISTS pricing_config_no_overlap;
