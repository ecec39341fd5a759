//! The ops view of the queue: jobs in our own terms, re-runs, cancels, and the audit trail.
//!
//! Status in our terms, from apalis's columns:
//! - `pending`: waiting to run, including a failed job with attempts left (it shows its last error);
//! - `running`: fetched or running;
//! - `failed`: no further attempt will be made (a permanent error, or attempts used up);
//! - `done`; `cancelled`: stopped by ops before it ran.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

/// SQL for our status of an `apalis.jobs` row `j`.
const STATUS_SQL: &str = "CASE
    WHEN j.status = 'Done' THEN 'done'
    WHEN j.status = 'Killed' AND j.last_result ? 'Cancelled' THEN 'cancelled'
    WHEN j.status = 'Killed' OR (j.status = 'Failed' AND j.attempts >= j.max_attempts) THEN 'failed'
    WHEN j.status IN ('Queued', 'Running') THEN 'running'
    ELSE 'pending' END";

/// The agent a job acts for, read from its JSON arguments.
const AGENT_SQL: &str = "(convert_from(j.job, 'UTF8')::jsonb ->> 'agent_id')";

#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
pub struct JobFilter {
    /// pending, running, failed, done or cancelled.
    pub status: Option<String>,
    /// The queue (job kind), e.g. solar_ocr_scan.
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
    sqlx::query_as(sqlx::AssertSqlSafe(select("")))
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
