//! Job kinds: one file each (payload, queue name, run). the tools are jobs too (`crate::tools`); `crate::app::worker` registers every queue.
//!
//! Every job is at-least-once; its effects are exactly-once through business idempotency keys.
//! A job's `run` says at the call site which failures retry ([`JobError::Transient`]) and which
//! stop at once with the reason stored ([`JobError::Permanent`]).

pub mod backend;
pub mod caps;
pub mod effects;
pub mod gate;
pub mod invoice_rollup;
pub mod listen;
pub mod meter_call;
pub mod notify_discord;
pub mod outbound;
pub mod prune_jobs;
pub mod stripe;
pub mod supervise;
pub mod sync_calls;
pub mod tool_results;
pub mod writer;

use std::{future::Future, sync::Arc, time::Duration};

use serde::{Serialize, de::DeserializeOwned};
use sqlx::{PgConnection, PgPool};

use crate::{
    config::Config,
    providers::{ProviderError, Providers},
};

/// What every job may use: the pool, the configuration and the provider clients.
#[derive(Clone)]
pub struct Deps {
    pub pool: PgPool,
    pub config: Arc<Config>,
    pub providers: Providers,
    /// Commits tool jobs' effects, many per transaction.
    pub writer: writer::Writer,
    /// Wake-ups per queue, fed by the process's LISTEN connection ([`listen`]).
    pub signals: Arc<backend::QueueSignals>,
    /// Clients the tools build on first use, one of each type per process ([`Deps::client`]).
    clients: Arc<Clients>,
}

type Clients = std::sync::Mutex<
    std::collections::HashMap<std::any::TypeId, Arc<dyn std::any::Any + Send + Sync>>,
>;

impl Deps {
    pub fn new(pool: PgPool, config: Arc<Config>) -> Self {
        let providers = Providers::from_config(&config);
        let writer = writer::Writer::new(pool.clone(), config.clone());
        let signals = Arc::new(backend::QueueSignals::default());
        Self {
            pool,
            config,
            providers,
            writer,
            signals,
            clients: Arc::default(),
        }
    }

    /// The process's one `C`, built by `build` on first use: a tool's own provider client, whose
    /// breaker must outlive a single job.
    pub fn client<C: Send + Sync + 'static>(&self, build: impl FnOnce(&Deps) -> C) -> Arc<C> {
        let id = std::any::TypeId::of::<C>();
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients
            .get(&id)
            .cloned()
            .and_then(|c| c.downcast::<C>().ok())
        {
            return client;
        }
        let client = Arc::new(build(self));
        clients.insert(id, client.clone());
        client
    }
}

/// The jobs that are not tools, each named once: their queues ([`QUEUES`]) and their
/// supervisors ([`supervise_others`]) come from this one list.
macro_rules! other_jobs {
    ($($job:ty),* $(,)?) => {
        /// The queues of the jobs that are not tools (tools: [`crate::tools::registry`]).
        pub const QUEUES: &[&str] = &[$(<$job>::QUEUE),*];

        /// Starts a supervised worker for each job in [`QUEUES`] on `set`.
        pub fn supervise_others(
            set: &mut tokio::task::JoinSet<()>,
            deps: &Deps,
            shutdown: &tokio::sync::watch::Receiver<bool>,
        ) {
            $(set.spawn(supervise::supervise::<$job>(deps.clone(), shutdown.clone()));)*
        }
    };
}

other_jobs!(
    meter_call::MeterCall,
    notify_discord::NotifyDiscord,
    notify_discord::NotifyOps,
    sync_calls::SyncCalls,
    invoice_rollup::InvoiceRollup,
    prune_jobs::PruneJobs,
    stripe::StripePush,
    stripe::StripeEvent,
    outbound::DeliverWebhook,
    outbound::DeliverWebhookSlow,
);

/// Why a job run failed, and so whether to run it again.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt later (database blip, upstream 5xx, timeout).
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying cannot help (bad payload, missing price); stored and not retried.
    #[error("permanent: {0}")]
    Permanent(String),
    /// Transient, and the other side said when to come back (`Retry-After`, `retryDelay`).
    #[error("throttled: {reason}")]
    Throttled {
        reason: String,
        retry_after: Duration,
    },
}

impl From<ProviderError> for JobError {
    fn from(e: ProviderError) -> Self {
        crate::telemetry::provider_error(e.provider(), !e.is_transient());
        match (&e, e.retry_after()) {
            (ProviderError::Permanent { .. }, _) => JobError::Permanent(e.to_string()),
            (_, Some(retry_after)) => JobError::Throttled {
                reason: e.to_string(),
                retry_after,
            },
            (_, None) => JobError::Transient(e.to_string()),
        }
    }
}

/// The longest wait a provider's `Retry-After` may impose on one retry.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(300);

impl JobError {
    /// How long to wait before the next attempt, given the attempt just failed (0-based).
    pub fn retry_wait(&self, attempt: usize, base: Duration) -> Duration {
        let wait = backoff(attempt, base);
        match self {
            JobError::Throttled { retry_after, .. } => {
                wait.max((*retry_after).min(RETRY_AFTER_CAP))
            }
            _ => wait,
        }
    }
}

impl From<sqlx::Error> for JobError {
    /// Data and integrity errors (SQLSTATE classes 22 and 23) fail the same way every time:
    /// permanent. Everything else (connections, serialization, timeouts) may clear: transient.
    fn from(e: sqlx::Error) -> Self {
        let class = match &e {
            sqlx::Error::Database(d) => d.code().map(|c| c.chars().take(2).collect::<String>()),
            _ => None,
        };
        match class.as_deref() {
            Some("22" | "23") => JobError::Permanent(format!("database refused the data: {e}")),
            _ => JobError::Transient(format!("database: {e}")),
        }
    }
}

/// A kind of job: its queue, its retry budget, and its work.
pub trait Job: Serialize + DeserializeOwned + Send + Sync + Unpin + 'static {
    /// The apalis queue (`apalis.jobs.job_type`); explicit, never a Rust type path.
    const QUEUE: &'static str;
    /// Attempts before the job stays `Failed`. Leave headroom: shutdowns and orphan rescues
    /// also count as attempts in apalis.
    const MAX_ATTEMPTS: usize;

    /// Jobs one worker runs at once: `WORKER_CONCURRENCY` unless the kind says otherwise.
    fn concurrency(config: &Config) -> usize {
        config.worker.concurrency
    }

    fn run(self, deps: &Deps) -> impl Future<Output = Result<(), JobError>> + Send;
}

/// Enqueues `job` on the caller's connection, so it commits (or rolls back) with the caller's
/// other writes. `idempotency_key`, when given, is unique per queue while the job row exists.
pub async fn enqueue<J: Job>(
    conn: &mut PgConnection,
    job: &J,
    idempotency_key: Option<&str>,
) -> Result<(), apalis_postgres::Error> {
    enqueue_due(conn, job, idempotency_key, None).await
}

/// [`enqueue_due`] inside the caller's transaction, where a job already queued under
/// `idempotency_key` (any status) is not an error: `Ok(false)`, and the transaction goes on
/// (a savepoint keeps the failed insert from aborting it).
pub async fn enqueue_once<J: Job>(
    tx: &mut PgConnection,
    job: &J,
    idempotency_key: &str,
    due: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<bool, apalis_postgres::Error> {
    sqlx::query("SAVEPOINT enqueue_once")
        .execute(&mut *tx)
        .await?;
    match enqueue_due(tx, job, Some(idempotency_key), due).await {
        Ok(()) => {
            sqlx::query("RELEASE SAVEPOINT enqueue_once")
                .execute(&mut *tx)
                .await?;
            Ok(true)
        }
        Err(apalis_postgres::Error::Database(e)) if crate::store::is_unique_violation(&e) => {
            sqlx::query("ROLLBACK TO SAVEPOINT enqueue_once")
                .execute(&mut *tx)
                .await?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// [`enqueue`], due at `due` (now when `None`). A job due in the past runs at once, after every
/// job due earlier: the fetch takes the oldest `run_at` first.
pub async fn enqueue_due<J: Job>(
    conn: &mut PgConnection,
    job: &J,
    idempotency_key: Option<&str>,
    due: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(), apalis_postgres::Error> {
    let args = serde_json::to_vec(job).map_err(apalis_postgres::Error::JsonError)?;
    crate::store::queue::push(conn, J::QUEUE, args, J::MAX_ATTEMPTS, idempotency_key, due).await
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

/// The wait before attempt `attempt + 1`: `base` doubling per attempt to at most 30 min, plus up
/// to 20 % jitter so a burst of failures does not come back as a burst.
pub fn backoff(attempt: usize, base: Duration) -> Duration {
    let cap_ms: u64 = 30 * 60 * 1000;
    let base_ms = u64::try_from(base.as_millis()).unwrap_or(cap_ms);
    let wait_ms = base_ms.saturating_mul(1u64 << attempt.min(20)).min(cap_ms);
    let jitter_ms = rand_fraction_permille() * wait_ms / 5000;
    Duration::from_millis(wait_ms + jitter_ms)
}

/// A cheap random number in 0..1000 (jitter needs no cryptography).
fn rand_fraction_permille() -> u64 {
    u64::from(uuid::Uuid::new_v4().as_bytes()[0]) * 1000 / 256
}

/// Moves a failed job's next run into the future. apalis re-fetches a `Failed` job with attempts
/// left as soon as `run_at` has passed and never moves `run_at` itself, so without this a
/// failing job burns all its attempts within milliseconds.
pub async fn defer(pool: &PgPool, job_id: &str, delay: Duration) -> Result<(), sqlx::Error> {
    crate::store::queue::defer(pool, job_id, delay).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let base = Duration::from_secs(5);
        let first = backoff(0, base);
        assert!(
            first >= Duration::from_secs(5) && first <= Duration::from_secs(6),
            "{first:?}"
        );
        let second = backoff(1, base);
        assert!(second >= Duration::from_secs(10) && second <= Duration::from_secs(12));
        assert!(backoff(60, base) <= Duration::from_secs(36 * 60));
    }

    #[test]
    fn retry_after_is_honoured_up_to_a_cap() {
        let base = Duration::from_millis(100);
        let throttled = |secs| JobError::Throttled {
            reason: "429".into(),
            retry_after: Duration::from_secs(secs),
        };
        assert!(throttled(2).retry_wait(0, base) >= Duration::from_secs(2));
        assert_eq!(throttled(3600).retry_wait(0, base), RETRY_AFTER_CAP);
        assert!(JobError::Transient("x".into()).retry_wait(0, base) < Duration::from_secs(1));
    }
}
