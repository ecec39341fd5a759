-- A call's billed minutes are its base row (`vapi_call:{id}`) plus every correction of it
-- (reversals `:revN` and re-bills `:vN`), which name the base key in metadata->>'corrects'.
-- Read through jsonb, that could not use an index: for the tenant role, Row Level Security
-- evaluates non-leakproof functions (jsonb ->>) only after its own filter, so each lookup
-- scanned all of the agency's usage (the portal's calls page: 1.8 s at 20,000 calls).
-- `corrects` is a plain column mirroring the metadata (a CHECK keeps them equal, so a writer that
-- forgets it fails loudly), indexed only where set (corrections are rare).
ALTER TABLE agent_usage_metrics ADD COLUMN corrects text;

UPDATE agent_usage_metrics SET corrects = metadata ->> 'corrects'
 WHERE metadata ->> 'corrects' IS NOT NULL;

ALTER TABLE agent_usage_metrics
  ADD CONSTRAINT agent_usage_metrics_corrects_mirrors_metadata
  CHECK (corrects IS NOT DISTINCT FROM (metadata ->> 'corrects'));

CREATE INDEX agent_usage_metrics_corrections
    ON agent_usage_metrics (agent_id, metric_type, corrects)
 WHERE corrects IS NOT NULL;

-- A lead's findings (the portal's calls page names them per call): without this, each lookup
-- read all of the agency's findings (0.5 s a page at 20,000).
CREATE INDEX risk_assessments_lead ON risk_assessments (agent_id, lead_id);

-- Calls by agency and time (the time a call started, else when we first heard of it): the
-- portal's newest-first list and its month and 30-day counts, and the ops page's calls per
-- agency for a month, read a range instead of every call the agency ever had.
CREATE INDEX calls_agent_started ON calls (agent_id, (COALESCE(started_at, created_at)));

-- `/v1/leads` pages by (created_at, id) after its cursor: read in index order, not a sort of
-- every lead the agency has (120 ms a page at 20,000 leads, 0.3 ms with it).
CREATE INDEX leads_agent_created ON leads (agent_id, created_at, id);
