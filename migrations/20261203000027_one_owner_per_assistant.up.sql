-- One owner per Vapi assistant (issue 22): a web call on a shared assistant was metered to every
-- agency that had saved it. Where two agencies share one today, the first to have been added
-- keeps it; the others lose it (and say so in the server log), which an operator re-points with
-- `agents set --vapi-assistant-id`.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT a.id, a.email, a.vapi_assistant_id FROM agents a
         WHERE a.vapi_assistant_id IS NOT NULL
           AND EXISTS (SELECT 1 FROM agents o WHERE o.vapi_assistant_id = a.vapi_assistant_id
                          AND (o.created_at, o.id) < (a.created_at, a.id))
    LOOP
        RAISE WARNING 'agent % shared Vapi assistant % with an earlier agent: cleared', r.email, r.vapi_assistant_id;
        UPDATE agents SET vapi_assistant_id = NULL WHERE id = r.id;
    END LOOP;
END
$$;
CREATE UNIQUE INDEX agents_one_owner_per_assistant ON agents (vapi_assistant_id);
