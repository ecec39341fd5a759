-- Migration 0007's get_jobs, apalis's indexes and foreign key.
CREATE OR REPLACE FUNCTION apalis.get_jobs(
    worker_id TEXT,
    v_job_type TEXT,
    v_job_count INTEGER DEFAULT 5
)
RETURNS SETOF apalis.jobs
LANGUAGE sql
VOLATILE
AS $$
    WITH jobs AS (
        SELECT id
        FROM apalis.jobs
        WHERE
            (
                status = 'Pending'
                OR (
                    status = 'Failed'
                    AND attempts < max_attempts
                )
            )
            AND run_at < now()
            AND job_type = v_job_type
        ORDER BY priority DESC, run_at ASC
        LIMIT v_job_count
        FOR UPDATE SKIP LOCKED
    )
    UPDATE apalis.jobs j
    SET
        status = 'Queued',
        lock_by = worker_id,
        lock_at = now()
    WHERE j.id = ANY (ARRAY(SELECT id FROM jobs))
    RETURNING j.*;
$$;

ALTER TABLE apalis.jobs
    ADD CONSTRAINT fk_worker_lock_by FOREIGN KEY (lock_by) REFERENCES apalis.workers (id);
DROP INDEX apalis.agent_meter_jobs_locked;
CREATE INDEX idx_apalis_jobs_lock_by ON apalis.jobs (lock_by);
CREATE INDEX lidx ON apalis.jobs (lock_by);
CREATE UNIQUE INDEX unique_job_id ON apalis.jobs (id);
