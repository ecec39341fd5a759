DROP INDEX apalis.agent_meter_jobs_unfinished;
