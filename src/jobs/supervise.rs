//! One queue's worker under a supervisor that restarts it with backoff and a fresh name.
//! Workers fetch through [`super::backend::GatedBackend`]: at rest a queue costs its heartbeats
//! (the process looks for every queue's due work in one statement per `WORKER_POLL_SECS`,
//! [`super::backend::QueueSignals::poll_due`]), and a NOTIFY wakes it at once.

use std::time::Duration;

use apalis::prelude::*;
use apalis_postgres::Config as QueueConfig;
use tokio::sync::watch;
use tracing::Instrument;

use super::{Deps, Job, JobError, backend};

/// A queue's own look for work, in `WORKER_POLL_SECS`: only a safety net, as the process looks
/// for every queue's due work each `WORKER_POLL_SECS` in one statement.
const OWN_POLL_EVERY: u32 = 30;

/// Keeps one worker for `J` alive. apalis ends `worker.run()` on the first database error and its
/// own monitor restarts at once under the same name; here each restart waits (1 s doubling to
/// 30 s) and takes a new name, so the dead worker's jobs are rescued once its heartbeat lapses.
pub async fn supervise<J: Job>(deps: Deps, mut shutdown: watch::Receiver<bool>) {
    let mut failures: u32 = 0;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let name = format!(
            "{}@{}-{}",
            J::QUEUE,
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let span = tracing::info_span!("worker", queue = J::QUEUE, worker = %name);
        let started = tokio::time::Instant::now();
        let result = run_worker::<J>(&deps, &name, shutdown.clone())
            .instrument(span.clone())
            .await;
        let stopping = *shutdown.borrow();
        release_unstarted(&deps, &name, stopping)
            .instrument(span.clone())
            .await;
        if stopping {
            span.in_scope(|| tracing::info!("worker stopped"));
            return;
        }
        if started.elapsed() > Duration::from_secs(60) {
            failures = 0;
        }
        failures += 1;
        let wait = Duration::from_secs(1 << failures.min(5)).min(Duration::from_secs(30));
        span.in_scope(|| match &result {
            Ok(()) => tracing::warn!(?wait, "worker ended; restarting"),
            Err(e) => tracing::error!(error = %e, ?wait, "worker failed; restarting"),
        });
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

async fn run_worker<J: Job>(
    deps: &Deps,
    name: &str,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    let wc = &deps.config.worker;
    let queue = QueueConfig::default()
        .queue(J::QUEUE)
        .batch_size(wc.fetch_batch.max(1))
        .heartbeat_interval(wc.heartbeat)
        .missed_heartbeats(wc.missed_heartbeats);
    let (backend, gate, acks, ahead) = backend::GatedBackend::<J>::new(&deps.pool, queue);
    // Opens the gate on this queue's signal (its NOTIFY, or the process's poll for due work,
    // `QueueSignals::poll_due`), and on its own only rarely; ends with this run.
    deps.signals.poll_due(&deps.pool, wc.poll);
    let mut gatekeeper = tokio::task::JoinSet::new();
    gatekeeper.spawn(backend::drive_gate(
        gate,
        deps.signals.of(J::QUEUE),
        wc.poll * OWN_POLL_EVERY,
        wc.heartbeat,
    ));
    let worker = WorkerBuilder::new(name)
        .backend(backend)
        .data(deps.clone())
        .concurrency(J::concurrency(&deps.config).max(1))
        .enable_tracing()
        .build(handle::<J>);
    let ran = worker
        .run_until(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
            Ok::<(), WorkerError>(())
        })
        .await;
    // The last batch's ack is written, and a fetch ahead has its jobs, before unstarted jobs
    // are handed back.
    acks.settle().await;
    ahead.settle().await;
    ran
}

/// Runs one job and turns its outcome into apalis's terms: a permanent failure aborts (the job is
/// `Killed`, reason in `last_result`), a transient one pushes `run_at` back before apalis records
/// the failure, so the retry really waits.
async fn handle<J: Job>(
    job: J,
    deps: Data<Deps>,
    attempt: Attempt,
    id: TaskId,
) -> Result<(), BoxDynError> {
    let job_id = id.to_string();
    // The timeout lives here rather than in apalis's layer so a timed-out run is a transient
    // failure with a real backoff like any other (apalis would re-fetch it at once).
    let timeout = deps.config.worker.job_timeout;
    let started = std::time::Instant::now();
    let outcome = tokio::time::timeout(timeout, job.run(&deps))
        .await
        .unwrap_or_else(|_| Err(JobError::Transient(format!("timed out after {timeout:?}"))));
    let label = match &outcome {
        Ok(()) => "done",
        Err(JobError::Permanent(_)) => "failed",
        Err(_) => "retry",
    };
    crate::telemetry::job(J::QUEUE, label, started.elapsed().as_secs_f64());
    match outcome {
        Ok(()) => Ok(()),
        Err(JobError::Permanent(reason)) => {
            record_failure::<J>(&deps, &job_id, attempt.current(), true, &reason).await;
            tracing::warn!(job.id = %job_id, queue = J::QUEUE, %reason, "job failed permanently");
            Err(AbortError::new(reason).into())
        }
        Err(error) => {
            // apalis counts the run in progress: the first run sees attempt 1.
            let base = deps.config.worker.backoff_base;
            let wait = error.retry_wait(attempt.current().saturating_sub(1), base);
            let reason = error.to_string();
            record_failure::<J>(&deps, &job_id, attempt.current(), false, &reason).await;
            if let Err(e) = crate::jobs::defer(&deps.pool, &job_id, wait).await {
                tracing::warn!(job.id = %job_id, error = %e, "could not defer the retry");
            }
            tracing::warn!(job.id = %job_id, queue = J::QUEUE, attempt = attempt.current(), ?wait, %reason, "job failed; will retry");
            Err(reason.into())
        }
    }
}

/// Keeps every failed attempt for `jobs show` (apalis keeps only the last result).
async fn record_failure<J: Job>(
    deps: &Deps,
    job_id: &str,
    attempt: usize,
    permanent: bool,
    reason: &str,
) {
    let recorded = async {
        let mut conn = deps.pool.acquire().await?;
        crate::store::queue::record_failure(&mut conn, job_id, J::QUEUE, attempt, permanent, reason)
            .await
    };
    if let Err(e) = recorded.await {
        tracing::warn!(job.id = %job_id, error = %e, "could not record the failed attempt");
    }
}

/// After a worker stops, jobs it fetched but never started are handed back at once instead of
/// waiting for orphan rescue. After a graceful stop in-flight jobs have finished, so anything
/// still marked `Running` was never going to be acked; after a crash only `Queued` jobs are
/// certainly idle (a `Running` one is left to orphan rescue).
async fn release_unstarted(deps: &Deps, worker: &str, graceful: bool) {
    match crate::store::queue::release_unstarted(&deps.pool, worker, graceful).await {
        Ok(0) => {}
        Ok(released) => tracing::info!(released, "handed unstarted jobs back to the queue"),
        Err(e) => tracing::warn!(error = %e, "could not hand jobs back; orphan rescue will"),
    }
}
