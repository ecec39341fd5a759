DROP INDEX leads_agent_created;
DROP INDEX calls_agent_started;
DROP INDEX risk_assessments_lead;
DROP INDEX agent_usage_metrics_corrections;
ALTER TABLE agent_usage_metrics DROP CONSTRAINT agent_usage_metrics_corrects_mirrors_metadata;
ALTER TABLE agent_usage_metrics DROP COLUMN corrects;
