DROP INDEX calls_agent_lead;
