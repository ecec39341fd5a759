ALTER TABLE invoices DROP COLUMN time_zone;
DROP FUNCTION billable_from(uuid, date);
DROP FUNCTION billable_in(uuid, date, date, date);
DROP TABLE agent_lifecycle_events;
DROP TABLE agent_billing_gaps;
ALTER TABLE agents DROP CONSTRAINT agents_cancelled_has_date;
