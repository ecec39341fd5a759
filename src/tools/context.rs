//! What every tool job shares: the call it was asked in, and how its finding is recorded.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::Tool;
use crate::jobs::{
    Deps, JobError, effects,
    writer::{Recorded, ToolEffect},
};

/// What a tool call is made in: the agent, its caller's lead, the call. Every tool's job carries
/// it (flattened: the queued JSON keeps these as top-level fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallContext {
    pub agent_id: Uuid,
    pub lead_id: Option<Uuid>,
    pub tool_call_id: String,
    /// Vapi's id of the call the tool was called in (its finding is shown with that call; absent
    /// in jobs queued before it was recorded).
    pub vapi_call_id: Option<String>,
    /// When the webhook asked (it may be waiting for the answer); absent for other enqueuers.
    pub requested_at: Option<DateTime<Utc>>,
}

impl CallContext {
    /// The business key of the tool call's finding and usage row (`tool_call:{id}`).
    pub fn key(&self) -> String {
        effects::tool_call_key(&self.tool_call_id)
    }

    /// Saves `T`'s finding for this call and meters it, once per tool call however often the job
    /// runs ([`crate::jobs::writer`]).
    pub async fn record<T: Tool>(
        &self,
        deps: &Deps,
        finding: Finding,
    ) -> Result<Recorded, JobError> {
        let mut metadata = finding.metadata;
        if let Some(m) = metadata.as_object_mut() {
            m.insert("tool_call_id".into(), self.tool_call_id.clone().into());
        }
        let late_message = format!(
            "The {} result is ready: {}. Tell the caller now.",
            T::NAME,
            T::say(&finding.result).unwrap_or_else(|| T::RUNNING.to_string())
        );
        deps.writer
            .write(ToolEffect {
                agent_id: self.agent_id,
                lead_id: self.lead_id,
                vapi_call_id: self.vapi_call_id.clone(),
                address: finding.address,
                kind: T::KIND,
                key: self.key(),
                result: finding.result,
                facts: finding.facts,
                tags: finding.tags,
                metric: T::METRIC,
                quantity: rust_decimal::Decimal::ONE,
                provider_cost_usd: finding.provider_cost_usd,
                metadata,
                discord_note: Some(finding.note),
                wake: effects::awaited(&self.tool_call_id, self.requested_at, deps)
                    .map(str::to_string),
                late_message,
            })
            .await
    }
}

/// What a tool found, beyond the call it was asked in ([`CallContext::record`]).
pub struct Finding {
    /// The property it is about.
    pub address: Option<String>,
    /// The provider's answer as saved (ignored when a finding is already saved for the call).
    pub result: Value,
    /// What it tells about the property (merged into `properties.facts`).
    pub facts: Value,
    /// Tags for the lead.
    pub tags: Vec<&'static str>,
    /// What the provider charged us, when known.
    pub provider_cost_usd: Option<rust_decimal::Decimal>,
    /// Stored on the usage row (`tool_call_id` is added).
    pub metadata: Value,
    /// Posted to the agent's Discord.
    pub note: String,
}
