ALTER TABLE agent_usage_metrics ADD CONSTRAINT agent_usage_metrics_agent_id_id_key UNIQUE (agent_id, id);
ALTER TABLE risk_assessments ADD CONSTRAINT risk_assessments_agent_id_id_key UNIQUE (agent_id, id);
