-- The queue's own cost (issue 27). A no-op job cost PostgreSQL about 70 us of CPU: three
-- non-HOT updates of its apalis.jobs row (fetch to Queued, lock to Running, ack to Done), each
-- writing an entry into every index, a foreign-key check per fetched row, and a re-planned
-- `get_jobs` per fetch (a LANGUAGE sql function plans its body on every call). Measured with
-- pgbench on this schema (fetch 64 + ack, 4 clients, 2 cores): 23-27k jobs/s before, 35-45k
-- after. Written against apalis-postgres 1.0.0; README, "Upgrading apalis".
--
-- 1. Two indexes that duplicate others: `unique_job_id` is `jobs_pkey` again, `lidx` is
--    `idx_apalis_jobs_lock_by` again. The lock_by index becomes partial: a finished job lets go
--    of its worker (migration 0007), so only jobs in someone's hands are ever looked up by it.
DROP INDEX apalis.unique_job_id;
DROP INDEX apalis.lidx;
DROP INDEX apalis.idx_apalis_jobs_lock_by;
CREATE INDEX agent_meter_jobs_locked ON apalis.jobs (lock_by) WHERE lock_by IS NOT NULL;

-- 2. The foreign key from a job to the worker holding it: checked with a query per fetched row.
--    Nothing relies on it: workers are registered before they fetch, and a worker row is only
--    deleted (`prune_jobs`) after a day of silence and when no job names it.
ALTER TABLE apalis.jobs DROP CONSTRAINT fk_worker_lock_by;

-- 3. get_jobs in PL/pgSQL, whose plan is kept per connection (same rows, order and locking as
--    migration 0007's), and a fetched job is Running at once: the worker no longer sends a
--    second update per job to say it started (its `Lock` event). A job fetched but not yet
--    started is handed back as before on a graceful stop, or by orphan rescue after a crash.
CREATE OR REPLACE FUNCTION apalis.get_jobs(
    worker_id TEXT,
    v_job_type TEXT,
    v_job_count INTEGER DEFAULT 5
)
RETURNS SETOF apalis.jobs
LANGUAGE plpgsql
VOLATILE
AS $$
BEGIN
    RETURN QUERY
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
        status = 'Running',
        lock_by = worker_id,
        lock_at = now()
    WHERE j.id = ANY (ARRAY(SELECT id FROM jobs))
    RETURNING j.*;
END
$$;
