-- The transient assistant's per-agency settings (issue 22, items 4 and 6): how long a call may
-- last, and where and when the assistant may hand a caller to a person (Vapi's transferCall).
--
-- transfer_hours is the grammar of `agents set --transfer-hours` (`always`, `never`, or
-- `Mon-Fri 08:00-17:00, Sat 09:00-12:00` in BILLING_TIMEZONE), stored in its canonical form and
-- checked by the application; a number always comes with its hours.
ALTER TABLE agents
    ADD COLUMN max_call_minutes integer NOT NULL DEFAULT 30
        CONSTRAINT agents_max_call_minutes_range CHECK (max_call_minutes BETWEEN 1 AND 720),
    ADD COLUMN transfer_number text
        CONSTRAINT agents_transfer_number_e164 CHECK (transfer_number ~ '^\+[1-9][0-9]{6,14}$'),
    ADD COLUMN transfer_hours text,
    ADD CONSTRAINT agents_transfer_needs_hours
        CHECK (transfer_number IS NULL OR transfer_hours IS NOT NULL);

-- The transfers of a call: every transfer-destination-request we answered for an agency with a
-- transfer number (when, to which number, whether it was within the hours: out of hours the
-- assistant takes a message instead), and the transfers Vapi made on its own (hours `always`:
-- the number is in the assistant, so Vapi does not ask) as its transfer-update reports them.
-- Keyed by the Vapi call id, not by calls.id: they come during the call, before the
-- end-of-call report (or the daily sync) creates the calls row. One row per stored message (a
-- redelivery adds none).
CREATE TABLE call_transfers (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id         uuid NOT NULL REFERENCES agents (id),
    vapi_call_id     text NOT NULL,
    webhook_event_id bigint NOT NULL UNIQUE,
    requested_at     timestamptz NOT NULL,
    number           text NOT NULL,
    hours            text NOT NULL,
    in_hours         boolean NOT NULL,
    source           text NOT NULL CHECK (source IN ('transfer-destination-request', 'transfer-update')),
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX call_transfers_by_call ON call_transfers (agent_id, vapi_call_id, requested_at);

-- The agency reads its own transfers (API lead detail, portal); only the webhook writes them.
GRANT SELECT ON call_transfers TO agent_meter_tenant;
ALTER TABLE call_transfers ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON call_transfers TO agent_meter_tenant
    USING (agent_id = current_agent_id());

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'auth')
       AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        EXECUTE 'CREATE POLICY supabase_isolation ON call_transfers TO authenticated
                     USING (agent_id IN (SELECT id FROM public.agents WHERE user_id = auth.uid()))';
    END IF;
END
$$;
