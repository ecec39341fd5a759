-- Ops: an audit trail of every ops action, and every failed attempt of every job (apalis keeps
-- only the last result).
CREATE TABLE ops_audit (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    actor     text NOT NULL,
    action    text NOT NULL,
    job_ids   text[] NOT NULL DEFAULT '{}',
    filter    jsonb,
    affected  int NOT NULL DEFAULT 0
);

CREATE TABLE job_failures (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id    text NOT NULL,
    queue     text NOT NULL,
    attempt   int NOT NULL,
    at        timestamptz NOT NULL DEFAULT now(),
    permanent boolean NOT NULL,
    error     text NOT NULL
);
CREATE INDEX job_failures_job ON job_failures (job_id, at);
