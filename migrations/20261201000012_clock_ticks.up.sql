-- Every clock tick that was enqueued (issue 14): the clock's catch-up replays, in order, every tick
-- since the last one recorded here (within CLOCK_CATCH_UP_DAYS), so a long outage heals itself and
-- no month goes uninvoiced. Queue keys alone cannot tell: finished jobs are pruned after 14 days.
CREATE TABLE clock_ticks (
    key          text PRIMARY KEY,
    job          text NOT NULL,
    tick         timestamptz NOT NULL,
    enqueued_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX clock_ticks_latest ON clock_ticks (job, tick DESC);
