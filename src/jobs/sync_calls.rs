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
};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SyncCalls {
    /// The day to reconcile, in `BILLING_TIMEZONE`.
    pub date: NaiveDate,
    /// Only this agent's calls (by id); every agency's when absent.
    pub agent_id: Option<Uuid>,
    /// One of the day's [`SLICES`] equal slices (the day's job fans out one job per slice, each
    /// with the whole job timeout and its own retries); the whole day when absent.
    pub slice: Option<u8>,
}

/// The day's job fans out this many slices of the day.
pub const SLICES: u8 = 24;

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
    /// Calls that no agency owns by the webhook's rules (another org number, a squad): counted.
    pub unroutable: usize,
    /// Every agency with a Vapi number or assistant (or the one asked for), by email.
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
}

impl SyncCalls {
    /// `vapi-sync:{date}` for the day's job (the clock's), `vapi-sync:{date}:s{NN}` for the
    /// slices it fans out to, `vapi-sync:{date}:{agent}` for one agency's.
    pub fn idempotency_key(&self) -> String {
        match (self.agent_id, self.slice) {
            (Some(agent), _) => format!("vapi-sync:{}:{agent}", self.date),
            (None, Some(slice)) => format!("vapi-sync:{}:s{slice:02}", self.date),
            (None, None) => format!("vapi-sync:{}", self.date),
        }
    }

    /// The day's job queues one job per slice of the day (in one transaction; slices already
    /// queued are skipped).
    pub async fn fan_out(&self, deps: &Deps) -> Result<usize, JobError> {
        let slices: Vec<SyncCalls> = (0..SLICES)
            .map(|slice| SyncCalls {
                date: self.date,
                agent_id: None,
                slice: Some(slice),
            })
            .collect();
        let keys: Vec<String> = slices.iter().map(Self::idempotency_key).collect();
        let mut tx = deps.pool.begin().await?;
        let queued = crate::store::queue::queued_keys(&mut tx, Self::QUEUE, &keys).await?;
        let mut count = 0;
        for (job, key) in slices.iter().zip(&keys) {
            if queued.contains(key) {
                continue;
            }
            super::enqueue(&mut tx, job, Some(key))
                .await
                .map_err(|e| JobError::Transient(format!("enqueue {key}: {e}")))?;
            count += 1;
        }
        tx.commit().await?;
        tracing::info!(date = %self.date, slices = count, "vapi sync fanned out per slice of the day");
        Ok(count)
    }

    /// The window this job lists: the day in `BILLING_TIMEZONE`, or its slice.
    fn window(&self, tz: chrono_tz::Tz) -> Result<(DateTime<Utc>, DateTime<Utc>), JobError> {
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
        let Some(slice) = self.slice.filter(|s| *s < SLICES) else {
            return Ok((start, end));
        };
        // Equal slices of the day as it is (23 or 25 hours across a change of clocks).
        let at = |i: u8| start + (end - start) * i32::from(i) / i32::from(SLICES);
        Ok((
            at(slice),
            if slice + 1 == SLICES {
                end
            } else {
                at(slice + 1)
            },
        ))
    }

    /// Lists the organisation's calls created in the window once, routes each by the webhook's
    /// own rules (our `agent_id`, the number, the saved assistant) and records it for its
    /// agency: web calls with our transient assistant are found as well as phone calls, each call
    /// is stored and billed for one agency, and one call that cannot be recorded is logged and
    /// counted while the rest goes on.
    pub async fn sync(&self, deps: &Deps) -> Result<SyncReport, JobError> {
        let (start, end) = self.window(deps.config.billing_timezone)?;
        let agents: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT id, email FROM agents
              WHERE (vapi_phone_number_id IS NOT NULL OR vapi_assistant_id IS NOT NULL
                     OR id = $1)
                AND ($1::uuid IS NULL OR id = $1)
              ORDER BY email, id",
        )
        .bind(self.agent_id)
        .fetch_all(&deps.pool)
        .await?;
        let mut report = SyncReport {
            agents: agents.len(),
            per_agency: agents
                .into_iter()
                .map(|(agent_id, email)| AgencySync {
                    agent_id,
                    email,
                    ..AgencySync::default()
                })
                .collect(),
            ..SyncReport::default()
        };
        let listed = deps
            .providers
            .vapi
            .list_calls(CallsOf::Org, start, end)
            .await?;
        for call in listed {
            let agent = {
                let mut conn = deps.pool.acquire().await?;
                route(&mut conn, &call).await?
            };
            let Some(agent_id) = agent else {
                tracing::debug!(call.id = %call.id, "vapi sync: no agency owns this call");
                report.unroutable += 1;
                continue;
            };
            // Another agency's call (a sync for one agency), or an agency made since the list.
            let Some(agency) = report
                .per_agency
                .iter_mut()
                .find(|a| a.agent_id == agent_id)
            else {
                continue;
            };
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
                // The database itself failing is worth a retry (what committed stays; the rest
                // is idempotent).
                Err(JobError::Transient(e)) => return Err(JobError::Transient(e)),
                // One call we cannot record is logged and counted; the day goes on.
                Err(e) => {
                    tracing::error!(agent.id = %agent_id, call.id = %call.id, error = %e,
                                    "vapi sync: call not recorded");
                    agency.failed += 1;
                }
            }
        }
        for a in &report.per_agency {
            report.seen += a.seen;
            report.new += a.new;
            report.metered += a.metered;
            report.corrected += a.corrected;
            report.not_connected += a.not_connected;
            report.failed += a.failed;
        }
        tracing::info!(date = %self.date, slice = ?self.slice, seen = report.seen, new = report.new,
                       metered = report.metered, corrected = report.corrected,
                       not_connected = report.not_connected, failed = report.failed,
                       unroutable = report.unroutable, "vapi calls reconciled");
        Ok(report)
    }
}

/// The agency that owns `call` by the webhook's rules: the first of its keys an agent answers to.
async fn route(conn: &mut PgConnection, call: &CallOut) -> Result<Option<Uuid>, sqlx::Error> {
    for key in call.route_keys() {
        if let Some(agent) = crate::store::agents::for_route(&mut *conn, &key).await? {
            return Ok(Some(agent.id));
        }
    }
    Ok(None)
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
        if calls::upsert_report(&mut tx, agent_id, &call.report())
            .await?
            .is_some()
        {
            calls::save_content(&mut tx, agent_id, &call.id, &call.content()).await?;
            crate::store::outbound::call_ended(&mut tx, agent_id, &call.id).await?;
        }
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
    // A call another agency recorded first stays that agency's: nothing was written here.
    let ours = calls::find(&mut tx, agent_id, &call.id).await?.is_some();
    let reconciled = if ended && ours {
        reconcile(&mut tx, deps, agent_id, &call.id).await?
    } else {
        Reconciled::Unchanged
    };
    tx.commit().await?;
    Ok(Recorded {
        new: !known && ours,
        not_connected: ours && ended && call.started_at.is_none(),
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
            if self.agent_id.is_none() && self.slice.is_none() {
                tracing::info!(date = %self.date, "daily Vapi sync skipped: VAPI_API_KEY is not set");
            }
            return Ok(());
        }
        match (self.agent_id, self.slice) {
            (None, None) => self.fan_out(deps).await.map(|_| ()),
            _ => self.sync(deps).await.map(|_| ()),
        }
    }
}
