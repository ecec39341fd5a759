-- A lead's calls (/v1/leads/{id}, the lead's detail) are read by (agent, lead); without this index
-- that read scanned the agency's calls (4.7 ms a lead at 20,000 calls). Also serves the foreign key
-- to leads when a lead is deleted.
CREATE INDEX calls_agent_lead ON calls (agent_id, lead_id) WHERE lead_id IS NOT NULL;
