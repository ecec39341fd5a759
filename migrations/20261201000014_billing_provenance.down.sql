DROP VIEW usage_provenance;
DROP FUNCTION first_billable_month(date);
DROP FUNCTION billable_in(date, date, date);
DROP FUNCTION invoice_holds(invoices, agent_usage_metrics);
DROP INDEX invoices_finalized;
ALTER TABLE invoices
    DROP CONSTRAINT invoices_bounds,
    DROP COLUMN usage_through,
    DROP COLUMN late_after,
    DROP COLUMN ends_at,
    DROP COLUMN starts_at;
