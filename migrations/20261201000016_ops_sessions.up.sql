-- Ops page sessions (issue 15): the cookie carries a random id, never a token; only its SHA-256 is
-- stored. Logging out revokes the row; expired rows are refused and pruned.
CREATE TABLE ops_sessions (
    id_hash     bytea PRIMARY KEY,
    operator    text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX ops_sessions_expiry ON ops_sessions (expires_at);
