-- What a call said (issue 22, item 5): Vapi's summary, structured data (analysis.structuredData
-- and our `caller_details` structured output, merged), success evaluation, transcript, recording
-- URL, call type and `costs[]` breakdown, one row per call. Written with the calls row, in the
-- same transaction, by the end-of-call report (webhook) and by the daily sync (REST `Call`), so
-- it outlives the raw `webhook_events` that `prune_jobs` deletes. A later report or sync fills
-- what an earlier one lacked and never blanks a field.
CREATE TABLE call_content (
    call_id            uuid PRIMARY KEY,
    agent_id           uuid NOT NULL REFERENCES agents (id),
    call_type          text,
    summary            text,
    structured_data    jsonb CHECK (jsonb_typeof(structured_data) = 'object'),
    success_evaluation text,
    transcript         text,
    recording_url      text,
    costs              jsonb CHECK (jsonb_typeof(costs) = 'array'),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (agent_id, call_id) REFERENCES calls (agent_id, id) ON DELETE CASCADE
);

-- The agency reads its own calls' content (portal, API); only the webhook and the sync write it.
GRANT SELECT ON call_content TO agent_meter_tenant;
ALTER TABLE call_content ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON call_content TO agent_meter_tenant
    USING (agent_id = current_agent_id());

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'auth')
       AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        EXECUTE 'CREATE POLICY supabase_isolation ON call_content TO authenticated
                     USING (agent_id IN (SELECT id FROM public.agents WHERE user_id = auth.uid()))';
    END IF;
END
$$;

CREATE INDEX call_content_agent ON call_content (agent_id);

-- The portal's search (`/portal/calls?q=`): a case-insensitive substring match (ILIKE) over the
-- agency's transcripts and summaries. Under RLS the planner may not use an index for ILIKE (the
-- operator is not leakproof, so it must run after the policy's filter), so the search is this
-- function: SECURITY DEFINER (it reads past RLS as the owner), pinned search_path, executable by
-- the tenant role only, and scoped to current_agent_id() by its own WHERE (no agent set: no
-- rows). Planned for each pattern (EXECUTE), so a word of 3+ characters uses the trigram GIN
-- indexes below (pg_trgm, a trusted extension in PostgreSQL 13+, when installable) and a shorter
-- one the agency's own rows (call_content_agent).
CREATE FUNCTION search_call_content(pattern text) RETURNS SETOF uuid
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
BEGIN
    RETURN QUERY EXECUTE
        'SELECT call_id FROM public.call_content
          WHERE agent_id = public.current_agent_id()
            AND (transcript ILIKE $1 OR summary ILIKE $1)'
        USING pattern;
END
$$;
REVOKE ALL ON FUNCTION search_call_content(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION search_call_content(text) TO agent_meter_tenant;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm') THEN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
        CREATE INDEX call_content_transcript_trgm ON call_content USING gin (transcript gin_trgm_ops);
        CREATE INDEX call_content_summary_trgm ON call_content USING gin (summary gin_trgm_ops);
    END IF;
END
$$;
