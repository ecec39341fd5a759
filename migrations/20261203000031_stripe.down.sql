DROP FUNCTION payment_rank(text);
DROP TABLE stripe_events;
ALTER TABLE invoice_lines DROP COLUMN stripe_item_id;
ALTER TABLE invoices DROP CONSTRAINT invoices_stripe_invoice;
DROP INDEX invoices_stripe_pending;
ALTER TABLE invoices
    DROP COLUMN stripe_push,
    DROP COLUMN stripe_invoice_id,
    DROP COLUMN stripe_number,
    DROP COLUMN hosted_invoice_url,
    DROP COLUMN stripe_error,
    DROP COLUMN payment_status,
    DROP COLUMN due_at,
    DROP COLUMN paid_at;
ALTER TABLE agents DROP COLUMN stripe_customer_id;
