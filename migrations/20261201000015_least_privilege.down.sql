DROP POLICY tenant_prices ON pricing_config;
ALTER TABLE pricing_config DISABLE ROW LEVEL SECURITY;
GRANT DELETE ON leads, properties, risk_assessments, tags, calls TO agent_meter_tenant;
