DROP TABLE IF EXISTS agent_api_tokens;
