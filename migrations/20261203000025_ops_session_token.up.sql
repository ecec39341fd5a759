-- Ops sessions are bound to the token they were opened with (issue 21): token_mac is
-- HMAC-SHA256(key = the operator's token, message = the session id). Each request recomputes it
-- from the configured operator's token and the cookie, so a session whose operator left
-- OPS_TOKENS/OPS_TOKEN, or whose token changed, is refused at once. Neither the token nor the id
-- can be recovered from the row. Sessions opened before this column existed have none and are
-- refused: their operators log in again.
ALTER TABLE ops_sessions ADD COLUMN token_mac bytea;
