//! `prune_jobs`: deletes finished queue rows older than a retention window and analyzes the
//! table, because nothing in apalis does and fetches slow down as `apalis.jobs` grows; and raw
//! high-volume Vapi events (`conversation-update` and the like) older than theirs.
//!
//! Keeps `Failed`/`Killed` jobs (ops may re-run them) and anything younger than 14 days, which
//! also keeps job-level idempotency keys alive for far longer than any retry window.
//!
//! Also the daily housekeeping of the ledger's daily summary (`store::usage_daily`): rows created
//! since its last run are added up, so reports read about a day's rows of the ledger, not a month's.

use serde::{Deserialize, Serialize};

use super::{Deps, Job, JobError};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct PruneJobs {
    /// Days of finished jobs to keep; default `JOB_RETENTION_DAYS` (14).
    pub keep_days: Option<u32>,
}

impl Job for PruneJobs {
    const QUEUE: &'static str = "prune_jobs";
    const MAX_ATTEMPTS: usize = 3;

    async fn run(self, deps: &Deps) -> Result<(), JobError> {
        let days = self.keep_days.unwrap_or(deps.config.job_retention_days);
        let keep_days = i32::try_from(days).unwrap_or(i32::MAX);
        let deleted = crate::store::queue::prune(&deps.pool, keep_days).await?;
        let event_days = i32::try_from(deps.config.event_retention_days).unwrap_or(i32::MAX);
        let mut conn = deps.pool.acquire().await?;
        let events = crate::store::webhook_events::prune_high_volume(&mut conn, event_days).await?;
        crate::store::late_findings::prune(&mut conn).await?;
        crate::store::caps::prune_holds(&mut conn).await?;
        drop(conn);
        // Half the job's time at most: a first build over a long ledger carries on tomorrow
        // (readers stay exact meanwhile, reading more of the ledger).
        let tz = deps.config.billing_timezone;
        let cut = crate::billing::rollup::ledger_cut(&deps.pool).await?;
        let summary = crate::store::usage_daily::refresh(
            &deps.pool,
            tz,
            cut,
            deps.config.worker.job_timeout / 2,
        )
        .await?;
        tracing::info!(
            deleted,
            keep_days,
            events,
            event_days,
            summarized = summary.rows,
            summary_complete = summary.complete,
            "pruned finished jobs and old raw events; daily usage summary brought up to date"
        );
        Ok(())
    }
}
