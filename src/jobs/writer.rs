//! The effects writer: a tool job's whole outcome (finding, property, tag, usage row, Discord
//! note, wake-up) written by one statement, and many jobs' outcomes committed together.
//!
//! A tool job does its provider call, then hands a [`ToolEffect`] to the process's writer and
//! waits for the commit before it returns (so apalis acks only what is durable). The writer takes
//! whatever effects are waiting (up to [`MAX_BATCH`]), writes them in one transaction as the
//! tenant role (`app.agent_id` set per agent) and answers each job. One commit per batch instead
//! of two per job is what lets metered jobs keep up with the queue itself (see the calls
//! benchmark in README).
//!
//! Failure isolation: an effect that cannot be priced still saves its finding (a paid answer is
//! never lost) and fails alone, permanently; a database error in a batch rolls it back and each
//! effect is retried in a transaction of its own, so one bad effect fails only its own job.
//! Exactly-once holds as before: every write is keyed (`ON CONFLICT DO NOTHING`), so a job run
//! again after a crash between commit and ack writes nothing new.

use std::sync::{Arc, OnceLock};

use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

use super::{JobError, effects::TOOL_RESULTS_CHANNEL, notify_discord::NotifyDiscord};
use crate::config::Config;

/// The most effects committed in one transaction.
pub const MAX_BATCH: usize = 64;
/// Writer tasks per process: while one commits, the next batch is being written.
const WRITERS: usize = 2;

/// Everything a finished tool call causes.
#[derive(Debug, Clone)]
pub struct ToolEffect {
    pub agent_id: Uuid,
    pub lead_id: Option<Uuid>,
    /// The property the finding is about (found or created per agent, lead and address).
    pub address: Option<String>,
    /// `risk_assessments.kind`.
    pub kind: &'static str,
    /// The business key of the finding and of the usage row (`tool_call:{id}`).
    pub key: String,
    /// The provider's answer; ignored when a finding is already saved under `key`.
    pub result: serde_json::Value,
    pub has_solar: Option<bool>,
    pub water_source: Option<&'static str>,
    /// A tag for the lead (e.g. `solar`).
    pub tag: Option<&'static str>,
    pub metric: &'static str,
    pub quantity: Decimal,
    pub provider_cost_usd: Option<Decimal>,
    /// Stored on the usage row, with `risk_assessment_id` and `pricing_config_id` added.
    pub metadata: serde_json::Value,
    /// Posted to the agent's Discord when the usage row is first written.
    pub discord_note: Option<String>,
    /// Woken on commit (a webhook may be waiting for this tool call).
    pub wake: Option<String>,
}

/// What the write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    pub finding_id: Uuid,
    /// False when an earlier run already metered this key.
    pub written: bool,
}

type Reply = oneshot::Sender<Result<Recorded, JobError>>;

/// The process's writer; cheap to clone. Its tasks start on first use and end when every clone
/// is dropped.
#[derive(Clone)]
pub struct Writer {
    pool: PgPool,
    config: Arc<Config>,
    queue: Arc<OnceLock<mpsc::Sender<(ToolEffect, Reply)>>>,
}

impl Writer {
    pub fn new(pool: PgPool, config: Arc<Config>) -> Self {
        Self {
            pool,
            config,
            queue: Arc::default(),
        }
    }

    /// Writes `effect` and returns once it is committed (or has failed).
    pub async fn write(&self, effect: ToolEffect) -> Result<Recorded, JobError> {
        let (reply, answer) = oneshot::channel();
        self.sender()
            .send((effect, reply))
            .await
            .map_err(|_| JobError::Transient("the effects writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| JobError::Transient("the effects writer dropped a write".into()))?
    }

    fn sender(&self) -> &mpsc::Sender<(ToolEffect, Reply)> {
        self.queue.get_or_init(|| {
            let (send, receive) = mpsc::channel(MAX_BATCH * 4);
            let receive = Arc::new(Mutex::new(receive));
            for _ in 0..WRITERS {
                let (pool, config, receive) =
                    (self.pool.clone(), self.config.clone(), receive.clone());
                tokio::spawn(async move { run(pool, config, receive).await });
            }
            send
        })
    }
}

async fn run(
    pool: PgPool,
    config: Arc<Config>,
    receive: Arc<Mutex<mpsc::Receiver<(ToolEffect, Reply)>>>,
) {
    loop {
        let mut batch = Vec::new();
        {
            let mut receive = receive.lock().await;
            if receive.recv_many(&mut batch, MAX_BATCH).await == 0 {
                return;
            }
        }
        let (effects, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let outcomes = match write_batch(&pool, &config, &effects).await {
            Ok(outcomes) => outcomes,
            Err(e) if effects.len() > 1 => {
                tracing::warn!(error = %e, effects = effects.len(), "effects batch failed; writing each alone");
                let mut outcomes = Vec::with_capacity(effects.len());
                for effect in &effects {
                    outcomes.push(match write_batch(&pool, &config, std::slice::from_ref(effect)).await {
                        Ok(mut one) => one.pop().unwrap_or_else(|| Err(JobError::Transient("no outcome".into()))),
                        Err(e) => Err(e.into()),
                    });
                }
                outcomes
            }
            Err(e) => vec![Err(e.into())],
        };
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // The job may have timed out and gone; its retry will find the effect written.
            let _ = reply.send(outcome);
        }
    }
}

/// Writes `effects` in one transaction; one outcome per effect, in order.
async fn write_batch(
    pool: &PgPool,
    config: &Config,
    effects: &[ToolEffect],
) -> Result<Vec<Result<Recorded, JobError>>, sqlx::Error> {
    let mut order: Vec<usize> = (0..effects.len()).collect();
    order.sort_by_key(|&i| effects[i].agent_id);
    let mut tx = pool
        .begin_with("BEGIN; SET LOCAL ROLE agent_meter_tenant")
        .await?;
    let mut outcomes: Vec<Result<Recorded, JobError>> = Vec::with_capacity(effects.len());
    outcomes.resize_with(effects.len(), || Err(JobError::Transient("unwritten".into())));
    let mut current_agent = None;
    for i in order {
        let effect = &effects[i];
        if current_agent != Some(effect.agent_id) {
            sqlx::query("SELECT set_config('app.agent_id', $1::text, true)")
                .bind(effect.agent_id)
                .execute(&mut *tx)
                .await?;
            current_agent = Some(effect.agent_id);
        }
        outcomes[i] = write_one(&mut tx, config, effect).await?;
    }
    sqlx::query("RESET ROLE").execute(&mut *tx).await?;
    for (effect, outcome) in effects.iter().zip(&outcomes) {
        if let (Ok(r), Some(note), true) = (outcome, &effect.discord_note, config.discord_enabled)
            && r.written
        {
            let job = NotifyDiscord {
                agent_id: effect.agent_id,
                content: note.clone(),
            };
            super::enqueue(&mut tx, &job, None)
                .await
                .map_err(|e| sqlx::Error::Protocol(format!("enqueue notify_discord: {e}")))?;
        }
    }
    let wake: Vec<&str> = effects
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| o.is_ok())
        .filter_map(|(e, _)| e.wake.as_deref())
        .collect();
    if !wake.is_empty() {
        sqlx::query("SELECT pg_notify($1, id) FROM unnest($2::text[]) AS id")
            .bind(TOOL_RESULTS_CHANNEL)
            .bind(&wake)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    for (effect, outcome) in effects.iter().zip(&outcomes) {
        if let Ok(r) = outcome {
            if r.written {
                crate::telemetry::usage_recorded(effect.metric);
            }
            tracing::info!(agent.id = %effect.agent_id, metric = effect.metric, key = %effect.key,
                           written = r.written, "metered");
        }
    }
    Ok(outcomes)
}

/// One effect, one statement: the property (created or updated), the finding (kept if already
/// saved), the tag, and the usage row at the price in force on the finding's day.
const WRITE_EFFECT: &str = "
WITH prop AS (
    INSERT INTO properties (agent_id, lead_id, address, has_solar, water_source)
    SELECT $1, $2, $3, $7, $8 WHERE $3::text IS NOT NULL
    ON CONFLICT (agent_id, lead_id, address) DO UPDATE
       SET has_solar = COALESCE(EXCLUDED.has_solar, properties.has_solar),
           water_source = COALESCE(EXCLUDED.water_source, properties.water_source)
    RETURNING id
), saved AS (
    INSERT INTO risk_assessments (agent_id, lead_id, property_id, kind, idempotency_key, result)
    VALUES ($1, $2, (SELECT id FROM prop), $4, $5, $6)
    ON CONFLICT (agent_id, kind, idempotency_key) DO NOTHING
    RETURNING id, created_at
), finding AS (
    SELECT id, created_at FROM saved
    UNION ALL
    SELECT id, created_at FROM risk_assessments
     WHERE agent_id = $1 AND kind = $4 AND idempotency_key = $5
), tagged AS (
    INSERT INTO tags (agent_id, lead_id, tag)
    SELECT $1, $2, $9 WHERE $2::uuid IS NOT NULL AND $9::text IS NOT NULL
    ON CONFLICT (agent_id, lead_id, tag) DO NOTHING
), day AS (
    SELECT (created_at AT TIME ZONE $14)::date AS d FROM finding LIMIT 1
), price AS (
    SELECT p.id, p.unit_price_usd FROM pricing_config p, day
     WHERE p.metric_type = $10 AND (p.agent_id = $1 OR p.agent_id IS NULL)
       AND p.effective_from <= day.d AND (p.effective_to IS NULL OR p.effective_to > day.d)
     ORDER BY p.agent_id NULLS LAST, p.effective_from DESC
     LIMIT 1
), usage AS (
    INSERT INTO agent_usage_metrics (agent_id, metric_type, quantity, unit_price_usd, cost_usd,
                                     provider_cost_usd, occurred_at, idempotency_key, metadata)
    SELECT $1, $10, $11, price.unit_price_usd, $11 * price.unit_price_usd, $12, finding.created_at, $5,
           $13::jsonb || jsonb_build_object('risk_assessment_id', finding.id, 'pricing_config_id', price.id)
      FROM finding, price
    ON CONFLICT (agent_id, metric_type, idempotency_key) DO NOTHING
    RETURNING 1
)
SELECT (SELECT id FROM finding LIMIT 1), (SELECT d FROM day), EXISTS (SELECT 1 FROM price),
       EXISTS (SELECT 1 FROM usage)";

async fn write_one(
    conn: &mut PgConnection,
    config: &Config,
    e: &ToolEffect,
) -> Result<Result<Recorded, JobError>, sqlx::Error> {
    let address = e.address.as_deref().map(str::trim).filter(|a| !a.is_empty());
    let (finding, day, priced, written): (Option<Uuid>, Option<chrono::NaiveDate>, bool, bool) =
        sqlx::query_as(WRITE_EFFECT)
            .bind(e.agent_id)
            .bind(e.lead_id)
            .bind(address)
            .bind(e.kind)
            .bind(&e.key)
            .bind(&e.result)
            .bind(e.has_solar)
            .bind(e.water_source)
            .bind(e.tag)
            .bind(e.metric)
            .bind(e.quantity)
            .bind(e.provider_cost_usd)
            .bind(&e.metadata)
            .bind(config.billing_timezone.name())
            .fetch_one(&mut *conn)
            .await?;
    let Some(finding_id) = finding else {
        // Another run saved this key after our statement began: the next attempt will see it.
        return Ok(Err(JobError::Transient(format!(
            "finding {} was being saved concurrently",
            e.key
        ))));
    };
    if !priced {
        let tz = config.billing_timezone;
        let day = day.map(|d| d.to_string()).unwrap_or_default();
        return Ok(Err(JobError::Permanent(format!(
            "no {} price in force on {day} ({tz})",
            e.metric
        ))));
    }
    Ok(Ok(Recorded {
        finding_id,
        written,
    }))
}
