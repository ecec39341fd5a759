//! `meter_call`: one `vapi_call_minutes` usage row per ended call, keyed `vapi_call:{call id}`.
//!
//! Enqueued by the webhook for every `end-of-call-report`. Quantity is minutes to 6 places, priced
//! at the call's end time. The key makes the webhook path and the daily sync agree.

use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Deps, Job, JobError, effects};
use crate::{
    money,
    store::{
        calls::{self, Call},
        usage::metric,
    },
};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MeterCall {
    pub agent_id: Uuid,
    pub vapi_call_id: String,
}

impl MeterCall {
    pub fn idempotency_key(&self) -> String {
        format!("vapi_call:{}", self.vapi_call_id)
    }
}

impl Job for MeterCall {
    const QUEUE: &'static str = "meter_call";
    const MAX_ATTEMPTS: usize = 8;

    async fn run(self, deps: &Deps) -> Result<(), JobError> {
        let mut tx = crate::store::db::tenant_tx(&deps.pool, self.agent_id).await?;
        let mut call = calls::find(&mut tx, self.agent_id, &self.vapi_call_id)
            .await?
            .ok_or_else(|| JobError::Permanent(format!("call {} not found", self.vapi_call_id)))?;
        // The report lacked timing: ask Vapi when we can (a call that never connected has none
        // there either; without a key, a report with no start is taken as never connected).
        let ask = deps.config.vapi_api_key.is_some() || !never_connected(&call);
        if call.duration_seconds.is_none() && ask {
            // The report lacked timing: ask Vapi (outside the transaction), record, carry on.
            tx.rollback().await?;
            let fetched = deps.providers.vapi.get_call(&self.vapi_call_id).await?;
            let report = fetched.report();
            tx = crate::store::db::tenant_tx(&deps.pool, self.agent_id).await?;
            calls::upsert_report(&mut tx, self.agent_id, &report).await?;
            call = calls::find(&mut tx, self.agent_id, &self.vapi_call_id)
                .await?
                .ok_or_else(|| {
                    JobError::Permanent(format!("call {} not found", self.vapi_call_id))
                })?;
        }
        let written = meter_minutes(&mut tx, deps, &call, &self.idempotency_key(), None).await?;
        tx.commit().await?;
        crate::telemetry::usage_recorded(metric::VAPI_CALL_MINUTES, u64::from(written));
        tracing::info!(agent.id = %self.agent_id, call.id = %self.vapi_call_id, metric = metric::VAPI_CALL_MINUTES,
                       key = %self.idempotency_key(), written, "metered");
        Ok(())
    }
}

/// An ended call that never started: an outbound call nobody answered, a call that failed
/// before connecting. Its report has an end or a reason, and no start.
pub fn never_connected(call: &Call) -> bool {
    call.started_at.is_none()
        && (call.ended_at.is_some()
            || call.ended_reason.is_some()
            || call.status.as_deref() == Some("ended"))
}

/// Writes the call's `vapi_call_minutes` row under `key` (once), priced at the call's end.
/// `corrects` names the original key when this row re-bills a corrected duration.
pub async fn meter_minutes(
    tx: &mut PgConnection,
    deps: &Deps,
    call: &Call,
    key: &str,
    corrects: Option<&str>,
) -> Result<bool, JobError> {
    // A call that started after its agency's cancellation took effect is kept, never billed.
    let cancelled_on: Option<chrono::NaiveDate> =
        sqlx::query_scalar("SELECT cancelled_on FROM agents WHERE id = $1")
            .bind(call.agent_id)
            .fetch_optional(&mut *tx)
            .await?
            .flatten();
    let started = call.started_at.or(call.ended_at).unwrap_or(call.updated_at);
    if !crate::lifecycle::meters(cancelled_on, started, deps.config.billing_timezone) {
        tracing::info!(agent.id = %call.agent_id, call.id = %call.vapi_call_id, %started,
                       "not metered: the call started after the agency's cancellation");
        return Ok(false);
    }
    let seconds = match call.duration_seconds {
        Some(seconds) => seconds,
        // Nobody answered: billed as 0 minutes (the key then says the call is settled).
        None if never_connected(call) => rust_decimal::Decimal::ZERO,
        None => {
            return Err(JobError::Permanent(format!(
                "call {} has no duration, not even from the Vapi API (not ended yet?)",
                call.vapi_call_id
            )));
        }
    };
    effects::meter(
        tx,
        deps,
        effects::Metered {
            agent_id: call.agent_id,
            metric: metric::VAPI_CALL_MINUTES,
            key,
            quantity: money::minutes_from_seconds(seconds),
            occurred_at: call.ended_at.unwrap_or(call.updated_at),
            provider_cost_usd: call.vapi_cost_usd,
            metadata: serde_json::json!({
                "vapi_call_id": call.vapi_call_id,
                "duration_seconds": seconds.to_string(),
                "corrects": corrects,
            }),
        },
    )
    .await
}
