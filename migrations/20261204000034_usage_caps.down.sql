DROP TABLE usage_cap_holds;
DROP TABLE usage_cap_notices;
ALTER TABLE agents DROP COLUMN cap_action, DROP COLUMN usage_cap_usd;
