GRANT SELECT, UPDATE ON late_findings TO agent_meter_tenant;
