-- The ops views (`/ops/`, `/ops/queues`, `jobs list --status failed|pending|running|cancelled`)
-- read unfinished jobs only, but apalis.jobs also keeps 14 days of finished ones (pruned by
-- `prune_jobs`): without this index each view scanned them all (160 ms at 2 million rows).
-- Written against apalis-postgres 1.0.0 (see store::queue).
CREATE INDEX agent_meter_jobs_unfinished ON apalis.jobs (run_at DESC, id) WHERE status <> 'Done';
