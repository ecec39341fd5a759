-- One owner per Vapi call (issue 22): a call is stored, and metered, for exactly one agency,
-- whichever path (webhook or sync, number or assistant) saw it first. Where two agencies hold one
-- call today, the first row stays and the later ones go (each named in a warning: their usage
-- rows stay in the ledger, for the operator to reverse).
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT c.id, c.agent_id, c.vapi_call_id FROM calls c
         WHERE EXISTS (SELECT 1 FROM calls o WHERE o.vapi_call_id = c.vapi_call_id
                          AND (o.created_at, o.id) < (c.created_at, c.id))
    LOOP
        RAISE WARNING 'Vapi call % was also stored for agent %: that copy is removed', r.vapi_call_id, r.agent_id;
        DELETE FROM calls WHERE id = r.id;
    END LOOP;
END
$$;
ALTER TABLE calls ADD CONSTRAINT calls_one_owner_per_call UNIQUE (vapi_call_id);
