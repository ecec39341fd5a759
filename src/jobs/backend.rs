//! The queue backend our workers run on: apalis-postgres's tables, SQL and task lifecycle, with a
//! fetch that only reaches PostgreSQL when there may be work.
//!
//! Why not `PostgresStorage::with_pubsub().poll_with_interval(..)`: in apalis-core 1.0 a poll
//! strategy only *wakes* the worker; it never gates the fetch. `Persisted::poll_next` starts a
//! fetch on every poll of the worker, and anything that re-polls the worker task (another
//! queue's I/O in the same task, a heartbeat timer, the listener) started another one: an idle
//! worker ran 3,400-5,200 `get_jobs` transactions a second. Here the fetch asks its [`Gate`]
//! first. The gate opens when a NOTIFY names the queue, when `WORKER_POLL_SECS` has passed (for
//! retries whose `run_at` came due, ops re-runs and any lost notification), or when the last
//! fetch returned work (a backlog drains with no pause between batches). The `WORKER_POLL_SECS`
//! look is one statement for all of a process's queues ([`QueueSignals::poll_due`]), which opens only the
//! gates of queues with work due. A closed gate answers
//! an empty batch without touching the database, so apalis parks the worker until the gate
//! wakes it; heartbeats and acks go on as before.
//!
//! The queue's own cost per job (issue 27): a fetch is one statement that marks its jobs
//! `Running` (migration 0035; no `Lock` update per job), sized to the backlog ([`FetchSize`]);
//! a batch's ack is one statement ([`crate::store::queue::record_results`]) written in the
//! background while the next fetch runs ([`Acks`]).
//!
//! Matches apalis-core / apalis-postgres **1.0.0** (`SqlxPersistence` in apalis-postgres's
//! `persistence.rs`, whose steps are reproduced here, calling apalis's own queries except the
//! ack; a step that is one statement runs without BEGIN/COMMIT around it). Our SQL on the apalis
//! schema lives in [`crate::store::queue`].

use std::{
    collections::HashMap,
    marker::PhantomData,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use apalis_codec::json::JsonCodec;
use apalis_core::{
    backend::{
        Backend, BackendConfig, WireFormatBackend,
        finalize::Durable,
        persistence::{Persisted, Persistence, TaskEvent, TaskPersistLayer},
    },
    worker::context::WorkerContext,
};
use apalis_postgres::{Config as QueueConfig, Error, PgTask, queries};

pub use super::gate::{Gate, drive_gate};
use crate::store::queue::RunResult;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::Notify;

/// Per-process wake-up signals, one per queue, fed by the process's single LISTEN connection
/// ([`crate::jobs::listen`]). A signal sent while nobody waits is kept (one permit), so a job inserted
/// during a fetch is not missed.
#[derive(Debug, Default)]
pub struct QueueSignals {
    by_queue: Mutex<HashMap<String, Arc<Notify>>>,
    /// Whether this process's look for due work ([`QueueSignals::poll_due`]) has started.
    polling: AtomicBool,
}

impl QueueSignals {
    pub fn new(queues: &[&str]) -> Self {
        let signals = Self::default();
        for q in queues {
            signals.of(q);
        }
        signals
    }

    /// The signal of `queue`, created on first use.
    pub fn of(&self, queue: &str) -> Arc<Notify> {
        match self.by_queue.lock() {
            Ok(mut m) => m.entry(queue.to_string()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    /// A job was inserted into `queue` (queues no worker here serves are ignored).
    pub fn notify(&self, queue: &str) {
        if let Some(n) = self
            .by_queue
            .lock()
            .ok()
            .and_then(|m| m.get(queue).cloned())
        {
            n.notify_one();
        }
    }

    /// Starts, once per process (per set of signals), the look for due work every `poll`:
    /// one statement asks which of the queues with a signal have work due that nobody announced
    /// (a retry whose `run_at` came, an ops re-run, a notification lost while the LISTEN
    /// connection was away) and wakes those. An idle process so costs one transaction per poll
    /// whatever number of queues it serves (each queue's own poll cost one each). When the
    /// database cannot be asked, every queue is woken (its own fetch then meets the error and
    /// its supervisor restarts it). Ends when the signals are dropped.
    pub fn poll_due(self: &Arc<Self>, pool: &PgPool, poll: Duration) {
        if self.polling.swap(true, Ordering::SeqCst) {
            return;
        }
        let signals = Arc::downgrade(self);
        let pool = pool.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(poll).await;
                let Some(signals) = signals.upgrade() else {
                    return;
                };
                let queues: Vec<String> = match signals.by_queue.lock() {
                    Ok(m) => m.keys().cloned().collect(),
                    Err(_) => Vec::new(),
                };
                match crate::store::queue::due_queues(&pool, &queues).await {
                    Ok(due) => due.iter().for_each(|q| signals.notify(q)),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not look for due jobs; waking every queue");
                        signals.notify_all();
                    }
                }
            }
        });
    }

    /// Wakes every queue: after the listener (re)connects, notifications sent while it was away
    /// are lost, so everyone looks once.
    pub fn notify_all(&self) {
        if let Ok(m) = self.by_queue.lock() {
            for n in m.values() {
                n.notify_one();
            }
        }
    }
}

/// How many times `WORKER_FETCH_BATCH` a fetch may ask for while a backlog of quick jobs drains.
pub const FETCH_GROWTH: usize = 16;
/// A batch taken within this of the one before was run quickly: the next may be larger.
const QUICK_BATCH: Duration = Duration::from_millis(250);

/// The size of a queue's next fetch, sized to its backlog: `WORKER_FETCH_BATCH` while the queue
/// keeps up, doubling (to [`FETCH_GROWTH`] times it) while each fetch comes back full and the
/// one before it was done within [`QUICK_BATCH`], i.e. while quick jobs wait in numbers. Large
/// batches cut the statements per job (the queue's own cost); slow jobs never get them, so no
/// worker sits on a pile of slow jobs another could run.
#[derive(Debug)]
struct FetchSize {
    base: usize,
    /// The next fetch's size and when the last fetch returned.
    state: Mutex<(usize, Option<Instant>)>,
}

impl FetchSize {
    fn new(base: usize) -> Self {
        Self {
            base: base.max(1),
            state: Mutex::new((base.max(1), None)),
        }
    }

    fn next(&self) -> usize {
        self.state.lock().map_or(self.base, |s| s.0)
    }

    /// Whether the last fetches came back full of quick jobs (the next is larger than the base).
    fn growing(&self) -> bool {
        self.next() > self.base
    }

    /// A fetch of `asked` returned `got` jobs at `now`.
    fn fetched(&self, asked: usize, got: usize, now: Instant) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let quick = state
            .1
            .is_some_and(|last| now.duration_since(last) < QUICK_BATCH);
        state.0 = if got >= asked && quick {
            (asked * 2).min(self.base * FETCH_GROWTH)
        } else {
            self.base
        };
        state.1 = (got > 0).then_some(now);
    }
}

/// A worker's acks, written in the background so its next fetch and jobs overlap the last
/// batch's ack (the two statements then use both of PostgreSQL's cores instead of taking turns).
/// At most one ack is in flight: the next batch's waits for it, so acks keep their order and a
/// slow database slows the worker rather than piling up acks. A failed ack fails the worker at
/// its next step, as a failed ack in line would have (its jobs stay `Running` under the dead
/// worker's name and are rescued as orphans). The worker's run waits for the last ack
/// ([`Acks::settle`]) before its unstarted jobs are handed back.
#[derive(Debug, Default)]
pub struct Acks {
    in_flight: tokio::sync::Mutex<Option<tokio::task::JoinHandle<Result<(), sqlx::Error>>>>,
    failed: Mutex<Option<String>>,
}

impl Acks {
    /// Waits for the ack in flight, if any; its error, if it failed.
    async fn wait(&self) -> Result<(), Error> {
        let running = self.in_flight.lock().await.take();
        let outcome = match running {
            None => Ok(()),
            Some(handle) => match handle.await {
                Ok(result) => result,
                Err(e) => Err(sqlx::Error::Protocol(format!("ack task: {e}"))),
            },
        };
        if let Err(e) = &outcome
            && let Ok(mut failed) = self.failed.lock()
        {
            *failed = Some(e.to_string());
        }
        outcome.map_err(Error::from)
    }

    /// An error when an ack has failed: the worker must stop.
    fn check(&self) -> Result<(), Error> {
        match self.failed.lock().ok().and_then(|f| f.clone()) {
            Some(e) => Err(Error::from(sqlx::Error::Protocol(format!(
                "an ack failed: {e}"
            )))),
            None => Ok(()),
        }
    }

    /// Writes `results` once the ack before them is written.
    async fn send(
        &self,
        pool: &PgPool,
        worker: &str,
        results: Vec<RunResult>,
    ) -> Result<(), Error> {
        self.wait().await?;
        let (pool, worker) = (pool.clone(), worker.to_string());
        let task = tokio::spawn(async move {
            let refs: Vec<&RunResult> = results.iter().collect();
            let mut conn = pool.acquire().await?;
            crate::store::queue::record_results(&mut conn, &worker, &refs)
                .await
                .map(drop)
        });
        *self.in_flight.lock().await = Some(task);
        Ok(())
    }

    /// Waits for the last ack; logs it if it failed (its jobs are then rescued as orphans).
    pub async fn settle(&self) {
        if let Err(e) = self.wait().await {
            tracing::warn!(error = %e, "the last ack failed; its jobs will be rescued as orphans");
        }
    }
}

/// apalis-postgres's persistence steps (register, heartbeat, fetch, acks, hand-back), with the
/// fetch behind a [`Gate`].
#[derive(Debug, Clone)]
pub struct GatedPersistence {
    pool: PgPool,
    config: QueueConfig,
    gate: Arc<Gate>,
    size: Arc<FetchSize>,
    acks: Arc<Acks>,
    ahead: Arc<Ahead>,
}

/// One fetch of up to `count` of `config.queue`'s jobs for `worker`: one statement
/// (`apalis.get_jobs`), atomic on its own, so no BEGIN/COMMIT round trips.
async fn fetch(
    pool: &PgPool,
    config: &QueueConfig,
    count: usize,
    worker: &WorkerContext,
) -> Result<Vec<PgTask>, Error> {
    let mut config = config.clone();
    config.batch_size = count;
    let mut conn = pool.acquire().await?;
    queries::fetch_next(&mut *conn, &config, worker).await
}

/// The fetch a worker starts while a batch of quick jobs runs, when that batch came back full
/// (a backlog): its jobs are then at hand when the batch is done, instead of the worker waiting
/// for the database between batches. At most one is in flight. Its jobs are the worker's
/// (`Running` under its name) from the moment the statement commits: the worker's run waits for
/// it ([`Ahead::settle`]) before its unstarted jobs are handed back, and after a crash they are
/// rescued as orphans like any fetched job.
#[derive(Debug, Default)]
pub struct Ahead {
    in_flight: FetchInFlight,
}

type FetchInFlight =
    tokio::sync::Mutex<Option<(usize, tokio::task::JoinHandle<Result<Vec<PgTask>, Error>>)>>;

impl Ahead {
    async fn start<F>(&self, asked: usize, fetch: F)
    where
        F: std::future::Future<Output = Result<Vec<PgTask>, Error>> + Send + 'static,
    {
        *self.in_flight.lock().await = Some((asked, tokio::spawn(fetch)));
    }

    /// The fetch started ahead, once done: how many it asked for and what it got.
    async fn take(&self) -> Option<(usize, Result<Vec<PgTask>, Error>)> {
        let (asked, handle) = self.in_flight.lock().await.take()?;
        let fetched = handle.await.unwrap_or_else(|e| {
            Err(Error::from(sqlx::Error::Protocol(format!(
                "fetch task: {e}"
            ))))
        });
        Some((asked, fetched))
    }

    /// Waits for a fetch in flight; its jobs, never started, are then handed back with the
    /// worker's other unstarted jobs.
    pub async fn settle(&self) {
        if let Some((_, Err(e))) = self.take().await {
            tracing::warn!(error = %e, "a fetch ahead failed");
        }
    }
}

impl Persistence for GatedPersistence {
    type Compact = Vec<u8>;
    type Error = Error;
    type Response = Value;

    async fn register(&mut self, worker: &WorkerContext) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        let queue = self.config.queue.as_ref();
        let dead_for = self.config.orphaned_duration().as_secs();
        queries::reenqueue_orphaned(&mut *tx, queue, dead_for).await?;
        crate::store::queue::register_worker(&mut tx, queue, worker.name(), worker.get_service())
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn heartbeat(&mut self, worker: &WorkerContext) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        let queue = self.config.queue.as_ref();
        let dead_for = self.config.orphaned_duration().as_secs();
        queries::keep_alive(&mut *tx, queue, worker).await?;
        queries::reenqueue_orphaned(&mut *tx, queue, dead_for).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn fetch_next(&mut self, worker: &WorkerContext) -> Result<Vec<PgTask>, Error> {
        self.acks.check()?;
        // A fetch started while the last batch ran comes first (it went through the gate then).
        let (asked, tasks) = match self.ahead.take().await {
            Some((asked, fetched)) => (asked, fetched?),
            None => {
                let gate = self.gate.clone();
                let may_fetch = std::future::poll_fn(|cx| Poll::Ready(gate.pass(cx))).await;
                if !may_fetch {
                    return Ok(Vec::new());
                }
                let asked = self.size.next();
                (asked, fetch(&self.pool, &self.config, asked, worker).await?)
            }
        };
        self.size.fetched(asked, tasks.len(), Instant::now());
        if tasks.is_empty() {
            // apalis parks the worker on an empty batch without reading its lifecycle channel
            // or its heartbeat timer, and a wake-up that came while this fetch was in flight (a
            // job finishing, a heartbeat falling due) was spent on it: one more look, without
            // fetching ([`Gate::nudge`]), so that job's ack is not left until the next wake-up.
            self.gate.nudge();
        } else if self.size.growing() {
            // A backlog of quick jobs: the next batch is fetched while this one runs.
            let next = self.size.next();
            let (pool, config, worker) = (self.pool.clone(), self.config.clone(), worker.clone());
            self.ahead
                .start(
                    next,
                    async move { fetch(&pool, &config, next, &worker).await },
                )
                .await;
        } else {
            // More may be waiting: the next fetch goes straight to the database.
            self.gate.keep_open();
        }
        Ok(tasks)
    }

    async fn handle_events(
        &mut self,
        events: Vec<TaskEvent<Value>>,
        worker: &WorkerContext,
    ) -> Result<(), Error> {
        // Only finished runs come here: a fetched job is already `Running` (migration 0035),
        // so the layer sends no `Lock` events.
        let results: Vec<RunResult> = events
            .into_iter()
            .filter_map(|e| match e {
                TaskEvent::Complete(result) => Some(result),
                _ => None,
            })
            .collect();
        if results.is_empty() {
            return self.acks.check();
        }
        // One statement for the batch, in the background (see [`Acks`]).
        self.acks.send(&self.pool, worker.name(), results).await
    }

    async fn reenqueue_abandoned(
        &mut self,
        tasks: Vec<PgTask>,
        worker: &WorkerContext,
    ) -> Result<u64, Error> {
        let ids: Vec<String> = tasks
            .iter()
            .filter_map(|t| t.task_id().map(|id| id.to_string()))
            .collect();
        let mut tx = self.pool.begin().await?;
        let queue = self.config.queue.as_ref();
        let count = queries::reenqueue_abandoned(&mut *tx, queue, worker.name(), &ids).await?;
        if count as usize != tasks.len() {
            return Err(Error::ReenqueueMismatch {
                queued: tasks.len(),
                abandoned: count as usize,
            });
        }
        tx.commit().await?;
        Ok(count)
    }

    async fn push_tasks(&mut self, tasks: Vec<PgTask>) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        queries::push_tasks(&mut *tx, self.config.queue.as_ref(), tasks).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// A worker's backend for the job type `J`: apalis-postgres's wire format and task lifecycle
/// over [`GatedPersistence`].
pub struct GatedBackend<J> {
    persisted: Persisted<GatedPersistence>,
    codec: JsonCodec,
    _job: PhantomData<J>,
}

impl<J> GatedBackend<J> {
    /// A backend for `config.queue`, the gate its fetches ask (open it to make the worker look;
    /// see [`drive_gate`]), its acks and its fetch ahead (settle both when the worker's run
    /// ends, before handing back unstarted jobs).
    pub fn new(pool: &PgPool, config: QueueConfig) -> (Self, Arc<Gate>, Arc<Acks>, Arc<Ahead>) {
        let gate = Gate::new();
        let acks = Arc::new(Acks::default());
        let ahead = Arc::new(Ahead::default());
        let size = Arc::new(FetchSize::new(config.batch_size));
        let persisted = Persisted::new(GatedPersistence {
            pool: pool.clone(),
            config,
            gate: gate.clone(),
            size,
            acks: acks.clone(),
            ahead: ahead.clone(),
        });
        let backend = Self {
            persisted,
            codec: JsonCodec::default(),
            _job: PhantomData,
        };
        (backend, gate, acks, ahead)
    }
}

impl<J> Backend for GatedBackend<J> {
    type Task = PgTask;
    type Error = Error;

    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), Error>> {
        let heartbeat = self.persisted.config.heartbeat_interval;
        self.persisted.poll_ready(cx, worker, heartbeat)
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<PgTask, Error>>> {
        self.persisted.poll_next(cx, worker)
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), Error>> {
        self.persisted.poll_close(cx, worker)
    }
}

impl<J> BackendConfig for GatedBackend<J> {
    type Args = J;
    type Kind = Durable;
    type Id = ulid::Ulid;
    type Config = QueueConfig;
    type Layer = TaskPersistLayer<JsonCodec<Value>, Value>;

    fn config(&self) -> &QueueConfig {
        &self.persisted.config
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> Self::Layer {
        // apalis sizes the channel that carries finished jobs' results to the acks at four
        // batches, and reads it only between batches (on a stop, only once no job runs): a job
        // whose result finds it full waits to send it, still running. With batches larger than the
        // channel (a fetch grown to `FETCH_GROWTH` times the base), a worker stopped during a
        // backlog never finished stopping. Sized to the largest batch, a batch's results fit.
        let batch = self.persisted.config.batch_size * FETCH_GROWTH;
        self.persisted
            .layer(JsonCodec::<Value>::default(), batch)
            .persist_results(true)
            .lock_tasks(false)
    }
}

impl<J> WireFormatBackend for GatedBackend<J> {
    type Codec = JsonCodec;
    type Compact = Vec<u8>;

    fn codec(&self) -> &JsonCodec {
        &self.codec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetch_grows_while_quick_jobs_wait_in_numbers_and_falls_back_at_once() {
        let size = FetchSize::new(64);
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        assert_eq!(size.next(), 64);
        // The first full batch has nothing before it to say how quick jobs are.
        size.fetched(64, 64, ms(0));
        assert_eq!(size.next(), 64);
        size.fetched(64, 64, ms(5));
        assert_eq!(size.next(), 128);
        for (i, want) in [256, 512, 1024, 1024, 1024].into_iter().enumerate() {
            size.fetched(size.next(), size.next(), ms(10 + i as u64));
            assert_eq!(size.next(), want);
        }
        // A batch that took long to run (slow jobs): back to the configured size.
        size.fetched(1024, 1024, ms(10_000));
        assert_eq!(size.next(), 64);
        size.fetched(64, 64, ms(10_001));
        assert_eq!(size.next(), 128);
        // The backlog is gone: a short batch.
        size.fetched(128, 7, ms(10_002));
        assert_eq!(size.next(), 64);
    }
}
