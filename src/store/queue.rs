//! Every SQL statement of ours that touches apalis's schema (`apalis.jobs`, `apalis.workers`,
//! `apalis.get_jobs`), in one place, written against **apalis-postgres 1.0.0** (pinned exactly in
//! `Cargo.toml`). Columns, statuses and the JSON shape of `last_result` are apalis's; an apalis
//! upgrade starts by re-reading this file (README, "Upgrading apalis").
//!
//! The ops view of the queue: jobs in our own terms, re-runs, cancels, and the audit trail.
//!
//! Status in our terms, from apalis's columns:
//! - `pending`: waiting to run, including a failed job with attempts left (it shows its last error);
//! - `running`: fetched or running;
//! - `failed`: no further attempt will be made (a permanent error, or attempts used up);
//! - `done`; `cancelled`: stopped by ops before it ran.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

/// SQL for our status of an `apalis.jobs` row `j`.
const STATUS_SQL: &str = "CASE
    WHEN j.status = 'Done' THEN 'done'
    WHEN j.status = 'Killed' AND j.last_result ? 'Cancelled' THEN 'cancelled'
    WHEN j.status = 'Killed' OR (j.status = 'Failed' AND j.attempts >= j.max_attempts) THEN 'failed'
    WHEN j.status IN ('Queued', 'Running') THEN 'running'
    ELSE 'pending' END";

/// Rows not finished (`Done` is the one status kept by the thousands until pruned); migration
/// 0019's partial index holds exactly these.
const UNFINISHED_SQL: &str = "AND j.status <> 'Done'";

/// The agent a job acts for, read from its JSON arguments.
const AGENT_SQL: &str = "(convert_from(j.job, 'UTF8')::jsonb ->> 'agent_id')";

#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
pub struct JobFilter {
    /// pending, running, failed, done or cancelled.
    pub status: Option<String>,
    /// The queue (job kind), e.g. meter_call.
    pub kind: Option<String>,
    /// The agent's email.
    pub agent: Option<String>,
    /// Only jobs scheduled at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// At most this many (default 100, at most 10,000).
    pub limit: Option<i64>,
}

pub const STATUSES: &[&str] = &["pending", "running", "failed", "done", "cancelled"];

impl JobFilter {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(s) = &self.status
            && !STATUSES.contains(&s.as_str())
        {
            return Err(format!("status must be one of {}", STATUSES.join(", ")));
        }
        if self.limit.is_some_and(|l| !(1..=10_000).contains(&l)) {
            return Err("limit must be 1 to 10000".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct JobRow {
    pub id: String,
    pub kind: String,
    pub status: String,
    pub agent_id: Option<String>,
    pub agent_email: Option<String>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
    pub done_at: Option<DateTime<Utc>>,
    /// The last error, when the last attempt failed.
    pub last_error: Option<String>,
}

fn select(extra: &str) -> String {
    format!(
        "SELECT j.id, j.job_type AS kind, {STATUS_SQL} AS status, {AGENT_SQL} AS agent_id,
                a.email AS agent_email, j.attempts, j.max_attempts, j.run_at, j.done_at,
                COALESCE(j.last_result ->> 'Err', j.last_result ->> 'Cancelled') AS last_error
           FROM apalis.jobs j
           LEFT JOIN agents a ON a.id::text = {AGENT_SQL}
          WHERE ($1::text IS NULL OR {STATUS_SQL} = $1)
            AND ($2::text IS NULL OR j.job_type = $2)
            AND ($3::text IS NULL OR a.email = $3)
            AND ($4::timestamptz IS NULL OR j.run_at >= $4)
            {extra}
          ORDER BY j.run_at DESC, j.id
          LIMIT $5"
    )
}

pub async fn list(conn: &mut PgConnection, f: &JobFilter) -> Result<Vec<JobRow>, sqlx::Error> {
    // Any status but `done` is an unfinished row: said in plain SQL, the partial index of
    // unfinished jobs (migration 0019) serves it instead of a scan of 14 days of finished ones.
    let unfinished = match f.status.as_deref() {
        Some(s) if s != "done" => UNFINISHED_SQL,
        _ => "",
    };
    sqlx::query_as(sqlx::AssertSqlSafe(select(unfinished)))
        .bind(&f.status)
        .bind(&f.kind)
        .bind(&f.agent)
        .bind(f.since)
        .bind(f.limit.unwrap_or(100))
        .fetch_all(conn)
        .await
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: JobRow,
    #[schema(value_type = Object)]
    pub args: serde_json::Value,
    pub lock_by: Option<String>,
    pub lock_at: Option<DateTime<Utc>>,
    /// Every failed attempt we recorded, oldest first.
    pub failures: Vec<FailureRow>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct FailureRow {
    pub attempt: i32,
    pub at: DateTime<Utc>,
    pub permanent: bool,
    pub error: String,
}

pub async fn show(conn: &mut PgConnection, id: &str) -> Result<Option<JobDetail>, sqlx::Error> {
    let row: Option<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(select("AND j.id = $6")))
        .bind(None::<String>)
        .bind(None::<String>)
        .bind(None::<String>)
        .bind(None::<DateTime<Utc>>)
        .bind(1i64)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(job) = row else { return Ok(None) };
    let (args, lock_by, lock_at): (Vec<u8>, Option<String>, Option<DateTime<Utc>>) =
        sqlx::query_as("SELECT job, lock_by, lock_at FROM apalis.jobs WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
    let failures = sqlx::query_as(
        "SELECT attempt, at, permanent, error FROM job_failures WHERE job_id = $1 ORDER BY at, id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(JobDetail {
        job,
        args: serde_json::from_slice(&args).unwrap_or(serde_json::Value::Null),
        lock_by,
        lock_at,
        failures,
    }))
}

/// Re-queues failed or cancelled jobs with a fresh set of attempts. Jobs in any other state are
/// left alone (a running job is never run twice by ops). Returns the ids re-queued.
pub async fn retry(conn: &mut PgConnection, ids: &[String]) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "UPDATE apalis.jobs j SET status = 'Pending', attempts = 0, run_at = now(), lock_by = NULL,
                lock_at = NULL, done_at = NULL
          WHERE j.id = ANY($1) AND ({STATUS_SQL}) IN ('failed', 'cancelled')
          RETURNING j.id"
    )))
    .bind(ids)
    .fetch_all(conn)
    .await
}

/// Cancels jobs that have not started (pending); running, done or failed jobs are left alone.
pub async fn cancel(
    conn: &mut PgConnection,
    ids: &[String],
    actor: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "UPDATE apalis.jobs j SET status = 'Killed', done_at = now(), lock_by = NULL, lock_at = NULL,
                last_result = jsonb_build_object('Cancelled', 'cancelled by ' || $2)
          WHERE j.id = ANY($1) AND ({STATUS_SQL}) = 'pending'
          RETURNING j.id"
    )))
    .bind(ids)
    .bind(actor)
    .fetch_all(conn)
    .await
}

/// Writes the audit row of one ops action.
pub async fn audit(
    conn: &mut PgConnection,
    actor: &str,
    action: &str,
    job_ids: &[String],
    filter: Option<&JobFilter>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO ops_audit (actor, action, job_ids, filter, affected) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(actor)
    .bind(action)
    .bind(job_ids)
    .bind(filter.map(|f| serde_json::to_value(f).unwrap_or_default()))
    .bind(i32::try_from(job_ids.len()).unwrap_or(i32::MAX))
    .execute(conn)
    .await?;
    Ok(())
}

/// Records one failed attempt (called by the worker; cheap, only on failure).
pub async fn record_failure(
    conn: &mut PgConnection,
    job_id: &str,
    queue: &str,
    attempt: usize,
    permanent: bool,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO job_failures (job_id, queue, attempt, permanent, error) VALUES ($1, $2, $3, $4, $5)")
        .bind(job_id)
        .bind(queue)
        .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
        .bind(permanent)
        .bind(error)
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct QueueRow {
    pub kind: String,
    pub agent_email: Option<String>,
    /// Jobs waiting (pending, including retries not yet due).
    pub depth: i64,
    pub running: i64,
    pub failed: i64,
    /// Seconds since the oldest waiting job was due.
    pub oldest_age_secs: Option<f64>,
}

/// Depth and oldest age per kind and per agent.
pub async fn queues(conn: &mut PgConnection) -> Result<Vec<QueueRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH s AS (SELECT j.job_type, {STATUS_SQL} AS st, j.run_at, {AGENT_SQL} AS agent_id FROM apalis.jobs j
                     WHERE j.status <> 'Done')
         SELECT s.job_type AS kind, a.email AS agent_email,
                count(*) FILTER (WHERE st = 'pending') AS depth,
                count(*) FILTER (WHERE st = 'running') AS running,
                count(*) FILTER (WHERE st = 'failed') AS failed,
                GREATEST(0, EXTRACT(EPOCH FROM now() - min(run_at) FILTER (WHERE st = 'pending')))::float8 AS oldest_age_secs
           FROM s LEFT JOIN agents a ON a.id::text = s.agent_id
          GROUP BY s.job_type, a.email ORDER BY 1, 2"
    )))
    .fetch_all(conn)
    .await
}

/// Waiting jobs and the oldest wait per kind, for the metrics gauges: statuses and times only,
/// never a job's arguments, so a scrape stays cheap whatever the backlog holds.
pub async fn waiting_by_kind(
    conn: &mut PgConnection,
) -> Result<Vec<(String, i64, f64)>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT j.job_type, count(*),
                GREATEST(0, EXTRACT(EPOCH FROM now() - min(j.run_at)))::float8
           FROM apalis.jobs j
          WHERE j.status IN ('Pending', 'Failed') AND {STATUS_SQL} = 'pending'
          GROUP BY j.job_type"
    )))
    .fetch_all(conn)
    .await
}

/// The apalis version this module, migration 0007 and [`crate::app::worker::backend`] were written
/// against.
pub const APALIS_VERSION: &str = "apalis-postgres 1.0.0";

/// apalis's NOTIFY channel for inserted jobs (payload `{"job_type", "id", "run_at"}`), sent by its
/// `notify_workers` trigger for jobs due now.
pub const JOB_INSERTED_CHANNEL: &str = "apalis::job::insert";

/// Enqueues a job (JSON arguments) on the caller's connection, so it commits or rolls back with
/// the caller's other writes. apalis's own insert.
pub async fn push(
    conn: &mut PgConnection,
    queue: &str,
    args: Vec<u8>,
    max_attempts: usize,
    idempotency_key: Option<&str>,
    due: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(), apalis_postgres::Error> {
    let mut task = apalis::prelude::TaskBuilder::new(args).max_attempts(max_attempts);
    if let Some(key) = idempotency_key {
        task = task.idempotency_key(key);
    }
    if let Some(due) = due {
        task = task.run_at_timestamp(u64::try_from(due.timestamp()).unwrap_or(0));
    }
    apalis_postgres::queries::push_tasks(conn, queue, vec![task.build()]).await
}

/// One finished run, as apalis reports it to its backend.
pub type RunResult = apalis_core::backend::TaskResult<serde_json::Value>;

/// Records the finished runs of `worker`'s jobs in one statement: what apalis-postgres's
/// `handle_result.sql` writes (status, attempts, `last_result` as `{"Ok": ..}` or `{"Err": ..}`,
/// `done_at`), from arrays rather than a JSON document, and a finished job (`Done`, `Killed`)
/// lets go of its worker here rather than in migration 0007's trigger. A job no longer in
/// `worker`'s hands (rescued as an orphan, re-run by ops) is left alone. Rows are updated in id
/// order, as apalis locks them. Returns the rows updated.
pub async fn record_results(
    conn: &mut PgConnection,
    worker: &str,
    results: &[&RunResult],
) -> Result<u64, sqlx::Error> {
    let mut rows: Vec<(String, i32, serde_json::Value, String)> = results
        .iter()
        .map(|r| {
            let result = serde_json::to_value(&r.result).unwrap_or(serde_json::Value::Null);
            let attempt = i32::try_from(r.attempt).unwrap_or(i32::MAX);
            (r.task_id.to_string(), attempt, result, r.status.to_string())
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let mut ids = Vec::with_capacity(rows.len());
    let mut attempts = Vec::with_capacity(rows.len());
    let mut outcomes = Vec::with_capacity(rows.len());
    let mut statuses = Vec::with_capacity(rows.len());
    for (id, attempt, result, status) in rows {
        ids.push(id);
        attempts.push(attempt);
        outcomes.push(result);
        statuses.push(status);
    }
    let updated = sqlx::query(
        "UPDATE apalis.jobs j
            SET status = r.status, attempts = r.attempt, last_result = r.result, done_at = now(),
                lock_by = CASE WHEN r.status IN ('Done', 'Killed') THEN NULL ELSE j.lock_by END
           FROM unnest($1::text[], $2::int4[], $3::jsonb[], $4::text[])
                AS r(id, attempt, result, status)
          WHERE j.id = r.id AND j.lock_by = $5",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&outcomes)
    .bind(&statuses)
    .bind(worker)
    .execute(conn)
    .await?;
    Ok(updated.rows_affected())
}

/// Which of `queues` have a job that a fetch would take now (the fetch's own conditions, on
/// apalis's partial fetch index): one statement for every queue of a process.
pub async fn due_queues(pool: &PgPool, queues: &[String]) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT q FROM unnest($1::text[]) AS q
          WHERE EXISTS (SELECT 1 FROM apalis.jobs j
                         WHERE j.job_type = q
                           AND (j.status = 'Pending'
                                OR (j.status = 'Failed' AND j.attempts < j.max_attempts))
                           AND j.run_at < now())",
    )
    .bind(queues)
    .fetch_all(pool)
    .await
}

/// Which of `keys` are already queued (any status) on `queue`.
pub async fn queued_keys(
    conn: &mut PgConnection,
    queue: &str,
    keys: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT idempotency_key FROM apalis.jobs WHERE job_type = $1 AND idempotency_key = ANY($2)",
    )
    .bind(queue)
    .bind(keys)
    .fetch_all(conn)
    .await
}

/// True when the job queued under `key` on `queue` has failed for good (killed, or out of
/// attempts): whoever waits for its result can stop waiting.
pub async fn gave_up(conn: &mut PgConnection, queue: &str, key: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM apalis.jobs
                         WHERE job_type = $1 AND idempotency_key = $2
                           AND (status = 'Killed' OR (status = 'Failed' AND attempts >= max_attempts)))",
    )
    .bind(queue)
    .bind(key)
    .fetch_one(conn)
    .await
}

/// Moves a job's next run `delay` into the future.
pub async fn defer(pool: &PgPool, job_id: &str, delay: Duration) -> Result<(), sqlx::Error> {
    // Whole milliseconds: sqlx refuses to encode a `Duration` with sub-microsecond digits as an
    // interval, and a breaker's remaining time (from `Instant`s) always has them. That refusal
    // once left retries undeferred, so an open circuit burned every attempt in milliseconds.
    let millis = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 1000);
    sqlx::query(
        "UPDATE apalis.jobs SET run_at = now() + $2 * interval '1 millisecond' WHERE id = $1",
    )
    .bind(job_id)
    .bind(millis)
    .execute(pool)
    .await?;
    Ok(())
}

/// Hands a stopped worker's unstarted jobs back to the queue: `Queued` ones always, `Running`
/// ones too after a graceful stop (in-flight jobs have finished by then). Since migration 0035 a
/// fetched job is `Running` at once, so after a crash its jobs wait for orphan rescue (`Queued`
/// ones only come from a database still on migration 0007's fetch). Returns how many.
pub async fn release_unstarted(
    pool: &PgPool,
    worker: &str,
    graceful: bool,
) -> Result<u64, sqlx::Error> {
    let released = sqlx::query(
        "UPDATE apalis.jobs SET status = 'Pending', lock_by = NULL, lock_at = NULL
          WHERE lock_by = $1 AND (status = 'Queued' OR ($2 AND status = 'Running'))",
    )
    .bind(worker)
    .bind(graceful)
    .execute(pool)
    .await?;
    Ok(released.rows_affected())
}

/// Registers a worker (apalis-postgres's `queries/worker/register.sql`, whose Rust wrapper
/// takes a timestamp type apalis does not export). A name already registered is refused.
///
/// apalis lets a known name re-register when `pg_try_advisory_lock(hashtext(id))` succeeds, a
/// session lock on whatever pooled connection ran it, never released: that connection then
/// holds it for its whole life, across unrelated statements. Every run of ours takes a fresh
/// name (`worker::supervise`), so a known name is a real duplicate and no lock is needed.
pub async fn register_worker(
    conn: &mut PgConnection,
    queue: &str,
    worker: &str,
    layers: &str,
) -> Result<(), apalis_postgres::Error> {
    let registered = sqlx::query(
        "INSERT INTO apalis.workers (id, worker_type, storage_name, layers, last_seen)
         VALUES ($1, $2, 'PgStorage', $3, now())
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(worker)
    .bind(queue)
    .bind(layers)
    .execute(conn)
    .await?;
    if registered.rows_affected() == 0 {
        return Err(apalis_postgres::Error::WorkerAlreadyExists(
            worker.to_string(),
        ));
    }
    Ok(())
}

/// Deletes `Done` jobs finished more than `keep_days` ago and workers silent for a day with no
/// job, then refreshes the planner's statistics. Returns the jobs deleted.
pub async fn prune(pool: &PgPool, keep_days: i32) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query(
        "DELETE FROM apalis.jobs
          WHERE status = 'Done' AND done_at < now() - make_interval(days => $1)",
    )
    .bind(keep_days)
    .execute(pool)
    .await?
    .rows_affected();
    sqlx::query(
        "DELETE FROM apalis.workers w WHERE last_seen < now() - interval '1 day'
                  AND NOT EXISTS (SELECT 1 FROM apalis.jobs j WHERE j.lock_by = w.id)",
    )
    .execute(pool)
    .await?;
    sqlx::query("ANALYZE apalis.jobs").execute(pool).await?;
    Ok(deleted)
}

/// Jobs still to run: waiting, fetched, running, or failed with attempts left.
pub async fn open_jobs(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM apalis.jobs WHERE status IN ('Pending', 'Queued', 'Running')
            OR (status = 'Failed' AND attempts < max_attempts)",
    )
    .fetch_one(pool)
    .await
}

/// True once apalis's schema exists (readiness).
pub async fn schema_exists(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT to_regclass('apalis.jobs') IS NOT NULL")
        .fetch_one(pool)
        .await
}

/// The migration that last replaced apalis's `get_jobs` (0007 did first).
const QUEUE_MIGRATION: &str = include_str!("../../migrations/20261204000035_queue_cost.up.sql");
const QUEUE_MIGRATION_NAME: &str = "20261204000035_queue_cost";
/// The migration that adds our trigger on `apalis.jobs`.
const TRIGGER_MIGRATION_NAME: &str = "20261128000007_queue_scaling";

/// The body of `apalis.get_jobs` that [`QUEUE_MIGRATION`] installs (between its `$$`).
fn installed_get_jobs_body() -> Option<&'static str> {
    let start = QUEUE_MIGRATION.find("AS $$")? + "AS $$".len();
    let len = QUEUE_MIGRATION[start..].find("$$")?;
    Some(&QUEUE_MIGRATION[start..start + len])
}

/// How the queue's SQL in the database differs from what this build expects.
#[derive(Debug, thiserror::Error)]
pub enum QueueSchemaError {
    #[error(
        "apalis.get_jobs(text, text, integer) is missing: run `agent-meter migrate` \
         (this build expects {APALIS_VERSION} with migration {QUEUE_MIGRATION_NAME})"
    )]
    MissingGetJobs,
    #[error(
        "apalis.get_jobs is not the body migration {QUEUE_MIGRATION_NAME} installed \
         ({APALIS_VERSION}): something replaced it (an apalis upgrade re-running its migrations, \
         or a manual change). Queue fetches would silently differ between databases; see README, \
         \"Upgrading apalis\". First differing line: {differs}"
    )]
    GetJobsDrift { differs: String },
    #[error(
        "trigger agent_meter_release_finished on apalis.jobs is missing: run `agent-meter migrate` \
         (migration {TRIGGER_MIGRATION_NAME})"
    )]
    MissingTrigger,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Checks at start-up that `apalis.get_jobs` is exactly the body we installed and that our
/// trigger is in place, so a fresh and an upgraded database cannot drift apart unnoticed.
pub async fn check_schema(pool: &PgPool) -> Result<(), QueueSchemaError> {
    let body: Option<String> = sqlx::query_scalar(
        "SELECT prosrc FROM pg_proc
          WHERE oid = to_regprocedure('apalis.get_jobs(text, text, integer)')",
    )
    .fetch_optional(pool)
    .await?;
    let Some(body) = body else {
        return Err(QueueSchemaError::MissingGetJobs);
    };
    let expected = installed_get_jobs_body().unwrap_or_default();
    if body.trim() != expected.trim() {
        let differs = body
            .trim()
            .lines()
            .zip(expected.trim().lines().chain(std::iter::repeat("")))
            .find(|(got, want)| got.trim() != want.trim())
            .map(|(got, want)| format!("database has {:?}, expected {:?}", got.trim(), want.trim()))
            .unwrap_or_else(|| "the bodies differ in length".into());
        return Err(QueueSchemaError::GetJobsDrift { differs });
    }
    let trigger: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_trigger
                         WHERE tgname = 'agent_meter_release_finished'
                           AND tgrelid = to_regclass('apalis.jobs'))",
    )
    .fetch_one(pool)
    .await?;
    if !trigger {
        return Err(QueueSchemaError::MissingTrigger);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_installed_get_jobs_body_is_found_in_the_migration() {
        let body = installed_get_jobs_body().expect("body");
        assert!(body.contains("FOR UPDATE SKIP LOCKED"), "{body}");
        assert!(body.contains("ANY (ARRAY(SELECT id FROM jobs))"), "{body}");
    }
}
