//! `sync_calls`: the daily reconciliation with Vapi's API, catching webhooks that never arrived.
//!
//! The clock's daily job fans out one job per agent with a Vapi number; each lists the day's calls (window in `BILLING_TIMEZONE`), upsert
//! them, meter every ended call that has no usage row (`vapi_call:{id}`, the webhook's key), and
//! when Vapi's final duration differs from what was billed, append a reversal and a new row
//! (`vapi_call:{id}:rev{n}` / `vapi_call:{id}:v{n+1}`), never an update in place.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Deps, Job, JobError, meter_call};
use crate::{
    money,
    providers::vapi::{CallOut, CallsOf},
    store::{calls, usage, usage::metric},
    vapi::CallReport,
};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SyncCalls {
    /// The day to reconcile, in `BILLING_TIMEZONE`.
    pub date: NaiveDate,
    /// Only this agent (by id); all agents when absent.
    #[serde(default)]
    pub agent_id: Option<Uuid>,
}

/// What a sync found, in all and per agency.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SyncReport {
    pub agents: usize,
    pub seen: usize,
    pub new: usize,
    pub metered: usize,
    pub corrected: usize,
    /// Ended calls that never connected (no start): stored with their reason, billed 0 minutes.
    pub not_connected: usize,
    /// Calls that could not be recorded (logged each): counted, never stopping the day.
    pub failed: usize,
    pub per_agency: Vec<AgencySync>,
}

/// One agency's part of a sync.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AgencySync {
    pub agent_id: Uuid,
    pub email: String,
    pub seen: usize,
    pub new: usize,
    pub metered: usize,
    pub corrected: usize,
    pub not_connected: usize,
    pub failed: usize,
    /// Why the agency's calls could not be listed at all (the others' sync goes on).
    pub error: Option<String>,
}

impl SyncReport {
    fn add(&mut self, a: AgencySync) {
        self.seen += a.seen;
        self.new += a.new;
        self.metered += a.metered;
        self.corrected += a.corrected;
        self.not_connected += a.not_connected;
        self.failed += a.failed;
        self.per_agency.push(a);
    }
}

impl SyncCalls {
    /// `vapi-sync:{date}` for the day's job (the clock's), `vapi-sync:{date}:{agent}` for the
    /// per-agent jobs it fans out to.
    pub fn idempotency_key(&self) -> String {
        match self.agent_id {
            None => format!("vapi-sync:{}", self.date),
            Some(agent) => format!("vapi-sync:{}:{agent}", self.date),
        }
    }

    /// The day's job for all agents queues one job per agent with a Vapi number (in one
    /// transaction; agents already queued for the day are skipped), so each agent's sync has
    /// the whole job timeout and its own retries, and workers share them.
    pub async fn fan_out(&self, deps: &Deps) -> Result<usize, JobError> {
        let agents: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM agents
              WHERE vapi_phone_number_id IS NOT NULL OR vapi_assistant_id IS NOT NULL ORDER BY id",
        )
        .fetch_all(&deps.pool)
        .await?;
        let per_agent: Vec<SyncCalls> = agents
            .into_iter()
            .map(|agent| SyncCalls {
                date: self.date,
                agent_id: Some(agent),
            })
            .collect();
        let keys: Vec<String> = per_agent.iter().map(Self::idempotency_key).collect();
        let mut tx = deps.pool.begin().await?;
        let queued = crate::store::queue::queued_keys(&mut tx, Self::QUEUE, &keys).await?;
        let mut count = 0;
        for (job, key) in per_agent.iter().zip(&keys) {
            if queued.contains(key) {
                continue;
            }
            super::enqueue(&mut tx, job, Some(key))
                .await
                .map_err(|e| JobError::Transient(format!("enqueue {key}: {e}")))?;
            count += 1;
        }
        tx.commit().await?;
        tracing::info!(date = %self.date, agents = count, "vapi sync fanned out per agent");
        Ok(count)
    }

    /// Runs the reconciliation and reports its counts.
    pub async fn sync(&self, deps: &Deps) -> Result<SyncReport, JobError> {
        let tz = deps.config.billing_timezone;
        let day_start = |d: NaiveDate| {
            tz.from_local_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default())
                .earliest()
                .map(|t| t.with_timezone(&Utc))
        };
        let next = self.date.succ_opt().unwrap_or(self.date);
        let (Some(start), Some(end)) = (day_start(self.date), day_start(next)) else {
            return Err(JobError::Permanent(format!(
                "{} has no midnight in {tz}",
                self.date
            )));
        };
        let agents: Vec<(Uuid, String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT id, email, vapi_phone_number_id, vapi_assistant_id FROM agents
              WHERE (vapi_phone_number_id IS NOT NULL OR vapi_assistant_id IS NOT NULL)
                AND ($1::uuid IS NULL OR id = $1)
              ORDER BY id",
        )
        .bind(self.agent_id)
        .fetch_all(&deps.pool)
        .await?;
        let mut report = SyncReport {
            agents: agents.len(),
            ..SyncReport::default()
        };
        for (agent_id, email, phone_number_id, assistant_id) in agents {
            let mut agency = AgencySync {
                agent_id,
                email,
                ..AgencySync::default()
            };
            // One agency's listing failing never stops the others'.
            let listed = Self::calls_of(
                deps,
                phone_number_id.as_deref(),
                assistant_id.as_deref(),
                start,
                end,
            )
            .await;
            let listed = match listed {
                Ok(listed) => listed,
                // One agency's job: its own retries decide.
                Err(e) if self.agent_id.is_some() => return Err(e),
                Err(e) => {
                    tracing::error!(agent.id = %agent_id, date = %self.date, error = %e,
                                    "vapi sync: the agency's calls could not be listed");
                    agency.error = Some(e.to_string());
                    report.add(agency);
                    continue;
                }
            };
            for call in listed {
                agency.seen += 1;
                match record_call(deps, agent_id, &call).await {
                    Ok(done) => {
                        agency.new += usize::from(done.new);
                        agency.not_connected += usize::from(done.not_connected);
                        let rows = match done.reconciled {
                            Reconciled::Metered => {
                                agency.metered += 1;
                                1
                            }
                            Reconciled::Corrected => {
                                agency.corrected += 1;
                                2 // the reversal and the new row
                            }
                            Reconciled::Unchanged => 0,
                        };
                        crate::telemetry::usage_recorded(metric::VAPI_CALL_MINUTES, rows);
                    }
                    // The database itself failing is worth a retry of the whole agency (what
                    // committed stays; the rest is idempotent).
                    Err(JobError::Transient(e)) => return Err(JobError::Transient(e)),
                    // One call we cannot record is logged and counted; the day goes on.
                    Err(e) => {
                        tracing::error!(agent.id = %agent_id, call.id = %call.id, error = %e,
                                        "vapi sync: call not recorded");
                        agency.failed += 1;
                    }
                }
            }
            report.add(agency);
        }
        tracing::info!(date = %self.date, ?report, "vapi calls reconciled");
        Ok(report)
    }
}

impl SyncCalls {
    /// The agent's calls of the day: those on its number, and its assistant's calls without a
    /// number (web calls) or on its own number; deduplicated by id. A call on another number
    /// belongs to that number's agent and is synced there.
    async fn calls_of(
        deps: &Deps,
        phone_number_id: Option<&str>,
        assistant_id: Option<&str>,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<CallOut>, JobError> {
        let vapi = &deps.providers.vapi;
        let mut calls = match phone_number_id {
            Some(number) => {
                vapi.list_calls(CallsOf::PhoneNumber(number), start, end)
                    .await?
            }
            None => Vec::new(),
        };
        if let Some(assistant) = assistant_id {
            for call in vapi
                .list_calls(CallsOf::Assistant(assistant), start, end)
                .await?
            {
                let ours = call
                    .phone_number_id
                    .as_deref()
                    .is_none_or(|n| Some(n) == phone_number_id);
                if ours && !calls.iter().any(|c| c.id == call.id) {
                    calls.push(call);
                }
            }
        }
        Ok(calls)
    }
}

/// What recording one listed call did.
struct Recorded {
    new: bool,
    not_connected: bool,
    reconciled: Reconciled,
}

/// Records one call of Vapi's listing in its own transaction: its status, or its report when it
/// has ended (whether or not it ever connected), then bills or corrects it.
async fn record_call(deps: &Deps, agent_id: Uuid, call: &CallOut) -> Result<Recorded, JobError> {
    let mut tx = deps.pool.begin().await?;
    let known = calls::find(&mut tx, agent_id, &call.id).await?.is_some();
    // Ended: Vapi says so, or gives an end. A call that never connected (an outbound call nobody
    // answered) has an end and a reason but no start.
    let ended = call.status.as_deref() == Some("ended")
        || (call.ended_at.is_some() && call.status.is_none());
    if ended {
        calls::upsert_report(&mut tx, agent_id, &CallReport::from_api(call)).await?;
        calls::save_api_content(&mut tx, agent_id, call).await?;
    } else if let Some(status) = call.status.as_deref() {
        let customer = call.customer.as_ref().and_then(|c| c.number.as_deref());
        calls::update_status(
            &mut tx,
            agent_id,
            &call.id,
            customer,
            status,
            call.ended_reason.as_deref(),
        )
        .await?;
    }
    let reconciled = if ended {
        reconcile(&mut tx, deps, agent_id, &call.id).await?
    } else {
        Reconciled::Unchanged
    };
    tx.commit().await?;
    Ok(Recorded {
        new: !known,
        not_connected: ended && call.started_at.is_none(),
        reconciled,
    })
}

enum Reconciled {
    Metered,
    Corrected,
    Unchanged,
}

/// Bills the call if nothing was billed, or corrects what was billed if Vapi's duration changed.
async fn reconcile(
    tx: &mut PgConnection,
    deps: &Deps,
    agent_id: Uuid,
    vapi_call_id: &str,
) -> Result<Reconciled, JobError> {
    let Some(call) = calls::find(tx, agent_id, vapi_call_id).await? else {
        return Ok(Reconciled::Unchanged);
    };
    let base_key = format!("vapi_call:{vapi_call_id}");
    type Row = (
        String,
        Decimal,
        Decimal,
        DateTime<Utc>,
        Option<Decimal>,
        bool,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT idempotency_key, quantity, unit_price_usd, occurred_at, provider_cost_usd,
                metadata ? 'reverses'
           FROM agent_usage_metrics
          WHERE agent_id = $1 AND metric_type = $2
            AND (idempotency_key = $3 OR corrects = $3)
          ORDER BY created_at, idempotency_key",
    )
    .bind(agent_id)
    .bind(metric::VAPI_CALL_MINUTES)
    .bind(&base_key)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        let written = meter_call::meter_minutes(tx, deps, &call, &base_key, None).await?;
        return Ok(if written {
            Reconciled::Metered
        } else {
            Reconciled::Unchanged
        });
    }
    let Some(seconds) = call.duration_seconds else {
        return Ok(Reconciled::Unchanged);
    };
    let billed: Decimal = rows.iter().map(|(_, q, ..)| *q).sum();
    let expected = money::minutes_from_seconds(seconds);
    if billed == expected {
        return Ok(Reconciled::Unchanged);
    }
    // The live row is the latest entry (`{base}`, `{base}:v{n}` or a re-pricing's re-entry),
    // told from reversals by what it says it reverses, not by its sign (a zero-minute entry's
    // reversal is zero too). Its reversal nets it exactly: same time (so the same month), same
    // price, quantity, cost and provider cost negated; the new row then carries the final
    // duration and Vapi's final cost once.
    let corrections = rows.iter().filter(|r| r.5).count() + 1;
    let Some((live_key, live_qty, live_price, live_at, live_provider_cost, _)) =
        rows.iter().rev().find(|r| !r.5).cloned()
    else {
        return Ok(Reconciled::Unchanged);
    };
    usage::insert_once(
        tx,
        &usage::NewUsage {
            agent_id,
            metric_type: metric::VAPI_CALL_MINUTES,
            quantity: -live_qty,
            unit_price_usd: live_price,
            provider_cost_usd: live_provider_cost.map(|c| -c),
            occurred_at: live_at,
            idempotency_key: &format!("{base_key}:rev{corrections}"),
            metadata: serde_json::json!({"corrects": base_key, "reverses": live_key,
                                         "vapi_call_id": vapi_call_id, "reason": "vapi final duration differs"}),
        },
    )
    .await?;
    let new_key = format!("{base_key}:v{}", corrections + 1);
    meter_call::meter_minutes(tx, deps, &call, &new_key, Some(&base_key)).await?;
    Ok(Reconciled::Corrected)
}

impl Job for SyncCalls {
    const QUEUE: &'static str = "sync_calls";
    const MAX_ATTEMPTS: usize = 6;

    async fn run(self, deps: &Deps) -> Result<(), JobError> {
        // Nothing to reconcile with: one line, no failed jobs.
        if deps.config.vapi_api_key.is_none() {
            if self.agent_id.is_none() {
                tracing::info!(date = %self.date, "daily Vapi sync skipped: VAPI_API_KEY is not set");
            }
            return Ok(());
        }
        match self.agent_id {
            None => self.fan_out(deps).await.map(|_| ()),
            Some(_) => self.sync(deps).await.map(|_| ()),
        }
    }
}
