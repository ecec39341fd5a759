-- A finding names the Vapi call its tool was asked in, so the portal shows each call's own
-- findings (before, a call showed every finding of its caller's lead). A finding whose call
-- cannot be told (its tool-calls message is gone) has none; the portal shows it with its lead.
ALTER TABLE risk_assessments ADD COLUMN vapi_call_id text;

CREATE INDEX risk_assessments_call ON risk_assessments (agent_id, vapi_call_id)
 WHERE vapi_call_id IS NOT NULL;

-- Earlier findings get their call from the tool-calls message that asked for them (kept in
-- webhook_events): a finding's key is `tool_call:{id}` of an entry of its `toolCallList`.
UPDATE risk_assessments r
   SET vapi_call_id = e.vapi_call_id
  FROM webhook_events e
 CROSS JOIN LATERAL jsonb_array_elements(
         CASE WHEN jsonb_typeof(e.payload -> 'message' -> 'toolCallList') = 'array'
              THEN e.payload -> 'message' -> 'toolCallList' ELSE '[]'::jsonb END) AS tc(call)
 WHERE e.message_type = 'tool-calls'
   AND e.vapi_call_id IS NOT NULL
   AND r.agent_id = e.agent_id
   AND r.vapi_call_id IS NULL
   AND r.idempotency_key = 'tool_call:' || (tc.call ->> 'id');
