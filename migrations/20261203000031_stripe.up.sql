-- Getting paid (issue 24): finalized invoices go to Stripe, payments come back.
--
-- An agency's Stripe customer is made once; its id is kept on the agent (cleared when Stripe
-- says the customer was deleted, so the next invoice makes a new one).
ALTER TABLE agents ADD COLUMN stripe_customer_id text UNIQUE;

-- An invoice's life at Stripe. `stripe_push`: 'pending' from finalize (Stripe configured and
-- something due) until the push job has the invoice finalized and sent ('sent'). Stripe's ids and
-- answers are stored as each step lands, so a re-run continues where the last one stopped.
-- `payment_status` follows Stripe's events and only moves forward (paid and void are final).
ALTER TABLE invoices
    ADD COLUMN stripe_push text CHECK (stripe_push IN ('pending', 'sent')),
    ADD COLUMN stripe_invoice_id text,
    ADD COLUMN stripe_number text,
    ADD COLUMN hosted_invoice_url text,
    ADD COLUMN stripe_error text,
    ADD COLUMN payment_status text
        CHECK (payment_status IN ('open', 'paid', 'past_due', 'void', 'uncollectible')),
    ADD COLUMN due_at timestamptz,
    ADD COLUMN paid_at timestamptz;
CREATE INDEX invoices_stripe_pending ON invoices (finalized_at) WHERE stripe_push = 'pending';

ALTER TABLE invoice_lines ADD COLUMN stripe_item_id text;
-- Stripe's ids are unique per agency (every tenant table's uniques include agent_id).
ALTER TABLE invoices ADD CONSTRAINT invoices_stripe_invoice UNIQUE (agent_id, stripe_invoice_id);
ALTER TABLE invoice_lines ADD CONSTRAINT invoice_lines_stripe_item UNIQUE (agent_id, stripe_item_id);

-- Stripe's events, stored once by their id (a redelivery is answered 2xx and changes nothing),
-- then applied by a job. Ops data: no tenant reads it.
CREATE TABLE stripe_events (
    id           text PRIMARY KEY,
    type         text NOT NULL,
    payload      jsonb NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    applied_at   timestamptz
);
ALTER TABLE stripe_events ENABLE ROW LEVEL SECURITY;

-- How far along its life a payment status is: a status only replaces a lower one, so Stripe's
-- late or repeated events never move an invoice back (paid and void are final).
CREATE FUNCTION payment_rank(status text) RETURNS int
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT CASE status WHEN 'open' THEN 1 WHEN 'past_due' THEN 2 WHEN 'uncollectible' THEN 3
                             WHEN 'paid' THEN 4 WHEN 'void' THEN 4 ELSE 0 END $$;
