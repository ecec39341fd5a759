//! The effects writer: a tool job's whole outcome (finding, property facts, tags, usage row,
//! Discord note, wake-up) written by one statement, and many jobs' outcomes committed together.
//! It knows no tool: a [`ToolEffect`] carries its finding kind, facts, tags and metric as data.
//!
//! A tool job does its provider call, then hands a [`ToolEffect`] to the process's writer and
//! waits for the commit before it returns (so apalis acks only what is durable). The writer takes
//! whatever effects are waiting (up to [`MAX_BATCH`]), writes them, whichever agencies they are
//! for, with one statement in one transaction and answers each job. One commit per batch instead
//! of two per job, and one statement per batch instead of one per agency, is what lets metered
//! jobs keep up with the queue itself (see the calls benchmark in README).
//!
//! Tenancy: the writer is the service writing what its own jobs found, not a tenant, so it runs
//! as the service role; each row carries its effect's agent and every join in the statement
//! matches on it, and the composite foreign keys refuse an effect that names another agency's
//! lead or property (a test holds this). It wrote as the tenant role once, one statement per
//! agency: each statement cost ~0.7 ms of executor set-up however few rows it wrote, which with
//! five agencies in a batch was a third of the writer's time.
//!
//! Failure isolation: an effect that cannot be priced still saves its finding (a paid answer is
//! never lost) and fails alone, permanently; a database error in a batch rolls it back and each
//! effect is retried in a transaction of its own, so one bad effect fails only its own job.
//! Exactly-once holds as before: every write is keyed (`ON CONFLICT DO NOTHING`), so a job run
//! again after a crash between commit and ack writes nothing new.

use std::sync::{Arc, OnceLock};

use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{JobError, effects::TOOL_RESULTS_CHANNEL, notify_discord::NotifyDiscord};
use crate::config::Config;

/// The most effects committed in one transaction. One writer task per process: while it
/// commits, the next batch gathers (measured: one writer with larger batches beats two or four).
pub const MAX_BATCH: usize = 64;

/// Everything a finished tool call causes.
#[derive(Debug, Clone)]
pub struct ToolEffect {
    pub agent_id: Uuid,
    pub lead_id: Option<Uuid>,
    /// The Vapi call the tool was asked in (`risk_assessments.vapi_call_id`).
    pub vapi_call_id: Option<String>,
    /// The property the finding is about (found or created per agent, lead and address).
    pub address: Option<String>,
    /// `risk_assessments.kind` (a row of `finding_kinds`).
    pub kind: &'static str,
    /// The business key of the finding and of the usage row (`tool_call:{id}`).
    pub key: String,
    /// The provider's answer; ignored when a finding is already saved under `key`.
    pub result: serde_json::Value,
    /// What the finding tells about the property (a JSON object; merged into
    /// `properties.facts`, later keys win). `{}` for nothing.
    pub facts: serde_json::Value,
    /// Tags for the lead (e.g. `solar`, `flood_risk`).
    pub tags: Vec<&'static str>,
    pub metric: &'static str,
    pub quantity: Decimal,
    pub provider_cost_usd: Option<Decimal>,
    /// Stored on the usage row, with `risk_assessment_id` and `pricing_config_id` added.
    pub metadata: serde_json::Value,
    /// Posted to the agent's Discord when the usage row is first written.
    pub discord_note: Option<String>,
    /// Woken on commit (a webhook may be waiting for this tool call).
    pub wake: Option<String>,
    /// Said into the live call when its webhook stopped waiting before the finding was saved.
    pub late_message: String,
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

/// After a commit: the findings a live call is still owed (its tool-calls answer went out
/// without them) are claimed and said through the call's control URL. The writer does not wait
/// for it (`(key, agent, message)` per committed effect), so neither the claim nor a slow or dead
/// call holds up metering; it must come after the commit (see `http::tool_calls::late`).
async fn say_late_findings(pool: PgPool, committed: Vec<(String, Uuid, String)>) {
    // One primary-key statement per batch; the table only holds calls that are waiting.
    let keys: Vec<String> = committed.iter().map(|(key, ..)| key.clone()).collect();
    if keys.is_empty() {
        return;
    }
    let claimed = async {
        let mut conn = pool.acquire().await?;
        crate::store::late_findings::claim(&mut conn, &keys).await
    };
    let claimed = match claimed.await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "could not look for findings owed to live calls");
            return;
        }
    };
    for (key, control_url) in claimed {
        let Some((_, agent, content)) = committed.iter().find(|(k, ..)| *k == key) else {
            continue;
        };
        let (agent, content) = (*agent, content.clone());
        let http = late_http().clone();
        tokio::spawn(async move {
            match crate::providers::vapi::add_message(&http, &control_url, &content).await {
                Ok(()) => tracing::info!(agent.id = %agent, %key, "late finding said in the call"),
                Err(e) => {
                    tracing::warn!(agent.id = %agent, %key, error = %e, "late finding not delivered")
                }
            }
        });
    }
}

/// The client for control URLs (short timeout: a call that has ended does not answer).
fn late_http() -> &'static reqwest::Client {
    static HTTP: OnceLock<reqwest::Client> = OnceLock::new();
    HTTP.get_or_init(|| crate::providers::http_client(std::time::Duration::from_secs(5)))
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
            tokio::spawn(run(self.pool.clone(), self.config.clone(), receive));
            send
        })
    }
}

async fn run(pool: PgPool, config: Arc<Config>, mut receive: mpsc::Receiver<(ToolEffect, Reply)>) {
    loop {
        let mut batch = Vec::new();
        if receive.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let (effects, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let outcomes = write_all(&pool, &config, &effects).await;
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // The job may have timed out and gone; its retry will find the effect written.
            let _ = reply.send(outcome);
        }
    }
}

/// Writes `effects` in one transaction, or, if that fails, each in a transaction of its own;
/// one outcome per effect, in order.
pub async fn write_all(
    pool: &PgPool,
    config: &Config,
    effects: &[ToolEffect],
) -> Vec<Result<Recorded, JobError>> {
    match write_batch(pool, config, effects).await {
        Ok(outcomes) => outcomes,
        Err(e) if effects.len() > 1 => {
            tracing::warn!(error = %e, effects = effects.len(), "effects batch failed; writing each alone");
            let mut outcomes = Vec::with_capacity(effects.len());
            for effect in effects {
                outcomes.push(
                    match write_batch(pool, config, std::slice::from_ref(effect)).await {
                        Ok(mut one) => one
                            .pop()
                            .unwrap_or_else(|| Err(JobError::Transient("no outcome".into()))),
                        Err(e) => Err(e.into()),
                    },
                );
            }
            outcomes
        }
        Err(e) => vec![Err(e.into())],
    }
}

/// Writes `effects` in one transaction; one outcome per effect, in order.
async fn write_batch(
    pool: &PgPool,
    config: &Config,
    effects: &[ToolEffect],
) -> Result<Vec<Result<Recorded, JobError>>, sqlx::Error> {
    // The statement's shape does not depend on its arrays: plan it once per connection, not on
    // every call (planning was a third of its cost).
    let mut tx = pool
        .begin_with("BEGIN; SET LOCAL plan_cache_mode = force_generic_plan")
        .await?;
    let mut outcomes: Vec<Result<Recorded, JobError>> = Vec::with_capacity(effects.len());
    outcomes.resize_with(effects.len(), || {
        Err(JobError::Transient("unwritten".into()))
    });
    let mut agencies = vec![Agency::default(); effects.len()];
    for round in rounds(effects) {
        for (i, outcome, agency) in write_set(&mut tx, config, effects, &round).await? {
            outcomes[i] = outcome;
            agencies[i] = agency;
        }
    }
    // Capped agencies hear when this batch's usage crosses 50, 80 or 100% of their cap.
    let mut capped: Vec<Uuid> = effects
        .iter()
        .zip(&outcomes)
        .zip(&agencies)
        .filter(|((_, o), g)| g.capped && o.as_ref().is_ok_and(|r| r.written))
        .map(|((e, _), _)| e.agent_id)
        .collect();
    capped.sort_unstable();
    capped.dedup();
    super::caps::announce(
        &mut tx,
        config.billing_timezone,
        &capped,
        chrono::Utc::now(),
    )
    .await?;
    // The agencies' endpoints hear of each new finding (once: the id is the finding's); only
    // agencies with an endpoint cost a statement.
    for ((effect, outcome), agency) in effects.iter().zip(&outcomes).zip(&agencies) {
        if let Ok(r) = outcome
            && agency.hooked
        {
            let id = format!("msg_finding_created_{}", r.finding_id.simple());
            let data = serde_json::json!({
                "finding_id": r.finding_id, "tool": effect.metric, "kind": effect.kind,
                "result": effect.result, "lead_id": effect.lead_id,
                "vapi_call_id": effect.vapi_call_id,
            });
            crate::store::outbound::emit(&mut tx, effect.agent_id, &id, "finding.created", data)
                .await?;
        }
    }
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
    let committed = effects
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| o.is_ok())
        .map(|(e, _)| (e.key.clone(), e.agent_id, e.late_message.clone()))
        .collect();
    tokio::spawn(say_late_findings(pool.clone(), committed));
    for (effect, outcome) in effects.iter().zip(&outcomes) {
        if let Ok(r) = outcome {
            crate::telemetry::usage_recorded(effect.metric, u64::from(r.written));
            tracing::info!(agent.id = %effect.agent_id, metric = effect.metric, key = %effect.key,
                           written = r.written, "metered");
        }
    }
    Ok(outcomes)
}

/// The statements a batch needs: rounds of effect indexes in which no (agent, kind, key)
/// repeats (a later round sees what an earlier one wrote). Almost always one round.
fn rounds(effects: &[ToolEffect]) -> Vec<Vec<usize>> {
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    for (i, e) in effects.iter().enumerate() {
        let same = |j: &usize| {
            let o = &effects[*j];
            o.agent_id == e.agent_id && o.kind == e.kind && o.key == e.key
        };
        match rounds.iter_mut().find(|round| !round.iter().any(same)) {
            Some(round) => round.push(i),
            None => rounds.push(vec![i]),
        }
    }
    rounds
}

/// Effects of any agencies, one statement: the properties (created or updated), the findings
/// (kept where already saved), the tags, and the usage rows at the price in force on each
/// finding's day. (agent, kind, key) is distinct within one call. Every row is written under its
/// effect's agent and every join matches on it; the composite foreign keys ((agent_id, lead_id)
/// to leads, (agent_id, property_id) to properties) refuse an effect naming another agency's
/// lead.
const WRITE_EFFECTS: &str = "
WITH input AS (
    SELECT * FROM unnest($1::int[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[],
                         $7::jsonb[], $8::jsonb[], $9::jsonb[], $10::text[], $11::numeric[],
                         $12::numeric[], $13::jsonb[], $15::text[])
        AS i(n, agent_id, lead_id, address, kind, key, result, facts, tags, metric, quantity,
             provider_cost_usd, metadata, vapi_call_id)
), prop AS (
    -- Every effect's facts on the same property, merged in order (later keys win). Rows are
    -- locked in key order, so two transactions writing the same properties cannot deadlock.
    INSERT INTO properties AS p (agent_id, lead_id, address, facts)
    SELECT i.agent_id, i.lead_id, i.address,
           COALESCE((SELECT jsonb_object_agg(f.key, f.value ORDER BY j.n)
                       FROM input j, jsonb_each(j.facts) AS f(key, value)
                      WHERE j.agent_id = i.agent_id AND j.lead_id IS NOT DISTINCT FROM i.lead_id
                        AND j.address = i.address),
                    '{}'::jsonb)
      FROM (SELECT DISTINCT agent_id, lead_id, address FROM input WHERE address IS NOT NULL) i
     ORDER BY i.agent_id, i.lead_id, i.address
    ON CONFLICT (agent_id, lead_id, address) DO UPDATE
       SET facts = p.facts || EXCLUDED.facts
    RETURNING id, agent_id, lead_id, address
), saved AS (
    INSERT INTO risk_assessments (agent_id, lead_id, property_id, kind, idempotency_key, result,
                                  vapi_call_id)
    SELECT i.agent_id, i.lead_id, prop.id, i.kind, i.key, i.result, i.vapi_call_id
      FROM input i
      LEFT JOIN prop ON prop.agent_id = i.agent_id
                    AND prop.lead_id IS NOT DISTINCT FROM i.lead_id AND prop.address = i.address
    ON CONFLICT (agent_id, kind, idempotency_key) DO NOTHING
    RETURNING id, agent_id, kind, idempotency_key, created_at
), finding AS (
    SELECT i.n, f.id, f.created_at, (f.created_at AT TIME ZONE $14)::date AS day
      FROM input i
      JOIN LATERAL (
          SELECT id, created_at FROM saved
           WHERE saved.agent_id = i.agent_id AND saved.kind = i.kind
             AND saved.idempotency_key = i.key
          UNION ALL
          SELECT id, created_at FROM risk_assessments r
           WHERE r.agent_id = i.agent_id AND r.kind = i.kind AND r.idempotency_key = i.key
          LIMIT 1
      ) f ON true
), tagged AS (
    INSERT INTO tags (agent_id, lead_id, tag)
    SELECT DISTINCT i.agent_id, i.lead_id, t.tag
      FROM input i, jsonb_array_elements_text(i.tags) AS t(tag)
     WHERE i.lead_id IS NOT NULL
     ORDER BY i.agent_id, i.lead_id, t.tag
    ON CONFLICT (agent_id, lead_id, tag) DO NOTHING
), price AS (
    -- One look per agency, metric and day (a batch holds a handful), not one per effect.
    SELECT k.agent_id, k.metric, k.day, price.id, price.unit_price_usd
      FROM (SELECT DISTINCT i.agent_id, i.metric, f.day FROM finding f JOIN input i USING (n)) k
      LEFT JOIN LATERAL price_in_force(k.agent_id, k.metric, k.day) price ON true
), priced AS (
    SELECT f.n, f.id AS finding_id, f.created_at, f.day, price.id AS price_id, price.unit_price_usd
      FROM finding f
      JOIN input i USING (n)
      LEFT JOIN price ON price.agent_id = i.agent_id AND price.metric = i.metric
                     AND price.day = f.day
), usage AS (
    INSERT INTO agent_usage_metrics (agent_id, metric_type, quantity, unit_price_usd, cost_usd,
                                     provider_cost_usd, occurred_at, idempotency_key, metadata,
                                     corrects)
    SELECT i.agent_id, i.metric, i.quantity, p.unit_price_usd, i.quantity * p.unit_price_usd,
           i.provider_cost_usd, p.created_at, i.key,
           i.metadata || jsonb_build_object('risk_assessment_id', p.finding_id,
                                            'pricing_config_id', p.price_id),
           i.metadata ->> 'corrects'
      FROM priced p
      JOIN input i USING (n)
     WHERE p.price_id IS NOT NULL
    ON CONFLICT (agent_id, metric_type, idempotency_key) DO NOTHING
    RETURNING agent_id, metric_type, idempotency_key
), agency AS (
    -- What the rest of the transaction needs to know, so it asks only when it must: whether
    -- the agency has a spend cap, and whether it has any endpoint (emit picks those that want
    -- the event).
    SELECT a.id, a.usage_cap_usd IS NOT NULL AS capped,
           EXISTS (SELECT 1 FROM webhook_endpoints w
                    WHERE w.agent_id = a.id AND w.removed_at IS NULL) AS hooked
      FROM agents a
     WHERE a.id IN (SELECT agent_id FROM input)
)
SELECT i.n, p.finding_id, p.day, p.price_id IS NOT NULL,
       EXISTS (SELECT 1 FROM usage u
                WHERE u.agent_id = i.agent_id AND u.metric_type = i.metric
                  AND u.idempotency_key = i.key),
       COALESCE(g.capped, false), COALESCE(g.hooked, false)
  FROM input i
  LEFT JOIN priced p USING (n)
  LEFT JOIN agency g ON g.id = i.agent_id";

type Row = (
    i32,
    Option<Uuid>,
    Option<chrono::NaiveDate>,
    Option<bool>,
    bool,
    bool,
    bool,
);

/// What the statement said of an effect's agency.
#[derive(Debug, Clone, Copy, Default)]
struct Agency {
    /// It has a spend cap (its crossings are looked for).
    capped: bool,
    /// It has an endpoint (new findings are offered to `emit`).
    hooked: bool,
}

/// Writes `effects[i]` for each `i` in `round` (distinct keys); the outcome of each, and what
/// the statement saw of its agency.
async fn write_set(
    conn: &mut PgConnection,
    config: &Config,
    effects: &[ToolEffect],
    round: &[usize],
) -> Result<Vec<(usize, Result<Recorded, JobError>, Agency)>, sqlx::Error> {
    let chosen: Vec<&ToolEffect> = round.iter().map(|&i| &effects[i]).collect();
    let column = |f: fn(&ToolEffect) -> Option<&str>| -> Vec<Option<&str>> {
        chosen.iter().map(|e| f(e)).collect()
    };
    let n: Vec<i32> = (0..).take(chosen.len()).collect();
    let address = column(|e| {
        e.address
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
    });
    let rows: Vec<Row> = sqlx::query_as(WRITE_EFFECTS)
        .bind(&n)
        .bind(chosen.iter().map(|e| e.agent_id).collect::<Vec<_>>())
        .bind(chosen.iter().map(|e| e.lead_id).collect::<Vec<_>>())
        .bind(address)
        .bind(column(|e| Some(e.kind)))
        .bind(column(|e| Some(e.key.as_str())))
        .bind(chosen.iter().map(|e| &e.result).collect::<Vec<_>>())
        .bind(chosen.iter().map(|e| &e.facts).collect::<Vec<_>>())
        .bind(
            chosen
                .iter()
                .map(|e| serde_json::json!(e.tags))
                .collect::<Vec<_>>(),
        )
        .bind(column(|e| Some(e.metric)))
        .bind(chosen.iter().map(|e| e.quantity).collect::<Vec<_>>())
        .bind(
            chosen
                .iter()
                .map(|e| e.provider_cost_usd)
                .collect::<Vec<_>>(),
        )
        .bind(chosen.iter().map(|e| &e.metadata).collect::<Vec<_>>())
        .bind(config.billing_timezone.name())
        .bind(column(|e| e.vapi_call_id.as_deref()))
        .fetch_all(&mut *conn)
        .await?;
    let mut outcomes = Vec::with_capacity(rows.len());
    for (n, finding, day, priced, written, capped, hooked) in rows {
        let Some(&i) = usize::try_from(n).ok().and_then(|n| round.get(n)) else {
            continue;
        };
        outcomes.push((
            i,
            outcome(config, &effects[i], finding, day, priced, written),
            Agency { capped, hooked },
        ));
    }
    Ok(outcomes)
}

fn outcome(
    config: &Config,
    e: &ToolEffect,
    finding: Option<Uuid>,
    day: Option<chrono::NaiveDate>,
    priced: Option<bool>,
    written: bool,
) -> Result<Recorded, JobError> {
    let Some(finding_id) = finding else {
        // Another run saved this key after our statement began: the next attempt will see it.
        return Err(JobError::Transient(format!(
            "finding {} was being saved concurrently",
            e.key
        )));
    };
    if priced != Some(true) {
        let tz = config.billing_timezone;
        let day = day.map(|d| d.to_string()).unwrap_or_default();
        return Err(JobError::Permanent(format!(
            "no {} price in force on {day} ({tz})",
            e.metric
        )));
    }
    Ok(Recorded {
        finding_id,
        written,
    })
}
