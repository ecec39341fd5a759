-- Reverses 20261128000001_schema.up.sql. Destroys all agent-meter data: back it up first.
DROP TABLE IF EXISTS invoice_lines;
DROP TABLE IF EXISTS invoices;
DROP TABLE IF EXISTS agent_usage_metrics;
DROP TABLE IF EXISTS pricing_config;
DROP TABLE IF EXISTS webhook_events;
DROP TABLE IF EXISTS calls;
DROP TABLE IF EXISTS tags;
DROP TABLE IF EXISTS risk_assessments;
DROP TABLE IF EXISTS properties;
DROP TABLE IF EXISTS leads;
DROP TABLE IF EXISTS agents;
