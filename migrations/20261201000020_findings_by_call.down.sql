DROP INDEX risk_assessments_call;
ALTER TABLE risk_assessments DROP COLUMN vapi_call_id;
