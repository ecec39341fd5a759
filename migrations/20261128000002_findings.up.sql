-- One property per (agent, lead, address), so repeated scans of the same house share it.
ALTER TABLE properties
    ADD CONSTRAINT properties_agent_lead_address_key UNIQUE NULLS NOT DISTINCT (agent_id, lead_id, address);
