//! `meter_call`: one `vapi_call_minutes` usage row per ended call, keyed `vapi_call:{call id}`.
//!
//! Enqueued by the webhook for every `end-of-call-report`. Quantity is minutes to 6 places, priced
//! at the call's end time. The key makes the webhook path and the daily sync agree.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Deps, Job, JobError};
use crate::{
    money,
    store::{calls, pricing, usage, usage::metric},
    vapi::CallReport,
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
        let mut tx = deps.pool.begin().await?;
        let mut call = calls::find(&mut tx, self.agent_id, &self.vapi_call_id)
            .await?
            .ok_or_else(|| JobError::Permanent(format!("call {} not found", self.vapi_call_id)))?;
        if call.duration_seconds.is_none() {
            // The report lacked timing: ask Vapi (outside the transaction), record, carry on.
            tx.rollback().await?;
            let fetched = deps.providers.vapi.get_call(&self.vapi_call_id).await?;
            let report = CallReport::from_api(&fetched);
            tx = deps.pool.begin().await?;
            calls::upsert_report(&mut tx, self.agent_id, &report).await?;
            call = calls::find(&mut tx, self.agent_id, &self.vapi_call_id)
                .await?
                .ok_or_else(|| {
                    JobError::Permanent(format!("call {} not found", self.vapi_call_id))
                })?;
        }
        let seconds = call.duration_seconds.ok_or_else(|| {
            JobError::Permanent(format!(
                "call {} has no duration, not even from the Vapi API (not ended yet?)",
                self.vapi_call_id
            ))
        })?;
        let occurred_at = call.ended_at.unwrap_or(call.updated_at);
        let tz = deps.config.billing_timezone;
        let price = pricing::price_at(
            &mut tx,
            self.agent_id,
            metric::VAPI_CALL_MINUTES,
            occurred_at,
            tz,
        )
        .await?
        .ok_or_else(|| {
            JobError::Permanent(format!(
                "no {} price in force on {} ({tz})",
                metric::VAPI_CALL_MINUTES,
                occurred_at.with_timezone(&tz).date_naive()
            ))
        })?;
        let key = self.idempotency_key();
        let written = usage::insert_once(
            &mut tx,
            &usage::NewUsage {
                agent_id: self.agent_id,
                metric_type: metric::VAPI_CALL_MINUTES,
                quantity: money::minutes_from_seconds(seconds),
                unit_price_usd: price.unit_price_usd,
                provider_cost_usd: call.vapi_cost_usd,
                occurred_at,
                idempotency_key: &key,
                metadata: serde_json::json!({
                    "vapi_call_id": self.vapi_call_id,
                    "duration_seconds": seconds.to_string(),
                    "pricing_config_id": price.id,
                }),
            },
        )
        .await?;
        tx.commit().await?;
        tracing::info!(agent.id = %self.agent_id, call.id = %self.vapi_call_id, written, "metered call minutes");
        Ok(())
    }
}
