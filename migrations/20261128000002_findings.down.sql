ALTER TABLE properties DROP CONSTRAINT IF EXISTS properties_agent_lead_address_key;
