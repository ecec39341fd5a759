ALTER TABLE ops_sessions DROP COLUMN token_mac;
