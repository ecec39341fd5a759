//! Job kinds: one file each (payload, queue name, run). `crate::worker` registers them all.
//!
//! Every job is at-least-once; its effects are exactly-once through business idempotency keys.
//! A job's `run` says at the call site which failures retry ([`JobError::Transient`]) and which
//! stop at once with the reason stored ([`JobError::Permanent`]).

pub mod meter_call;
pub mod prune_jobs;

use std::{future::Future, sync::Arc, time::Duration};

use apalis::prelude::TaskBuilder;
use serde::{Serialize, de::DeserializeOwned};
use sqlx::{PgConnection, PgPool};

use crate::config::Config;

/// What every job may use: the pool and the configuration.
#[derive(Clone)]
pub struct Deps {
    pub pool: PgPool,
    pub config: Arc<Config>,
}

/// Why a job run failed, and so whether to run it again.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt later (database blip, upstream 5xx, timeout).
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying cannot help (bad payload, missing price); stored and not retried.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl From<sqlx::Error> for JobError {
    fn from(e: sqlx::Error) -> Self {
        // Any database failure may clear on its own; data problems are classified by the caller.
        JobError::Transient(format!("database: {e}"))
    }
}

/// A kind of job: its queue, its retry budget, and its work.
pub trait Job: Serialize + DeserializeOwned + Send + Sync + Unpin + 'static {
    /// The apalis queue (`apalis.jobs.job_type`); explicit, never a Rust type path.
    const QUEUE: &'static str;
    /// Attempts before the job stays `Failed`. Leave headroom: shutdowns and orphan rescues
    /// also count as attempts in apalis.
    const MAX_ATTEMPTS: usize;

    fn run(self, deps: &Deps) -> impl Future<Output = Result<(), JobError>> + Send;
}

/// Enqueues `job` on the caller's connection, so it commits (or rolls back) with the caller's
/// other writes. `idempotency_key`, when given, is unique per queue while the job row exists.
pub async fn enqueue<J: Job>(
    conn: &mut PgConnection,
    job: &J,
    idempotency_key: Option<&str>,
) -> Result<(), apalis_postgres::Error> {
    let args = serde_json::to_vec(job).map_err(apalis_postgres::Error::JsonError)?;
    let mut task = TaskBuilder::new(args).max_attempts(J::MAX_ATTEMPTS);
    if let Some(key) = idempotency_key {
        task = task.idempotency_key(key);
    }
    apalis_postgres::queries::push_tasks(conn, J::QUEUE, vec![task.build()]).await
}

/// Enqueues on a pooled connection of its own.
pub async fn enqueue_now<J: Job>(
    pool: &PgPool,
    job: &J,
    idempotency_key: Option<&str>,
) -> Result<(), apalis_postgres::Error> {
    let mut conn = pool.acquire().await?;
    enqueue(&mut conn, job, idempotency_key).await
}

/// The wait before attempt `attempt + 1`: 5 s doubling to at most 30 min, with up to 20 %
/// jitter so a burst of failures does not come back as a burst.
pub fn backoff(attempt: usize) -> Duration {
    let base = 5u64.saturating_mul(1u64 << attempt.min(20)).min(30 * 60);
    let jitter_ms = rand_fraction_permille() * base * 200 / 1000;
    Duration::from_secs(base) + Duration::from_millis(jitter_ms)
}

/// A cheap random number in 0..1000 (jitter needs no cryptography).
fn rand_fraction_permille() -> u64 {
    u64::from(uuid::Uuid::new_v4().as_bytes()[0]) * 1000 / 256
}

/// Moves a failed job's next run into the future. apalis re-fetches a `Failed` job with attempts
/// left as soon as `run_at` has passed and never moves `run_at` itself, so without this a
/// failing job burns all its attempts within milliseconds.
pub async fn defer(pool: &PgPool, job_id: &str, delay: Duration) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE apalis.jobs SET run_at = now() + $2 WHERE id = $1")
        .bind(job_id)
        .bind(delay)
        .execute(pool)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let first = backoff(0);
        assert!(
            first >= Duration::from_secs(5) && first <= Duration::from_secs(6),
            "{first:?}"
        );
        let second = backoff(1);
        assert!(second >= Duration::from_secs(10) && second <= Duration::from_secs(12));
        assert!(backoff(60) <= Duration::from_secs(36 * 60));
    }
}
