//! `prune_jobs`: deletes finished queue rows older than a retention window and analyzes the
//! table, because nothing in apalis does and fetches slow down as `apalis.jobs` grows; and raw
//! high-volume Vapi events (`conversation-update` and the like) older than theirs.
//!
//! Keeps `Failed`/`Killed` jobs (ops may re-run them) and anything younger than 14 days, which
//! also keeps job-level idempotency keys alive for far longer than any retry window.

use serde::{Deserialize, Serialize};

use super::{Deps, Job, JobError};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct PruneJobs {
    /// Days of finished jobs to keep; default `JOB_RETENTION_DAYS` (14).
    #[serde(default)]
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
        drop(conn);
        tracing::info!(
            deleted,
            keep_days,
            events,
            event_days,
            "pruned finished jobs and old raw events"
        );
        Ok(())
    }
}
