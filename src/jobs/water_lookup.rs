//! `water_lookup`: registered wells near the property from the ADWR well registry (ArcGIS), one
//! `water_lookup` usage row per tool call (price 0.00, still metered; key `tool_call:{id}`).
//! A registered tool ([`crate::tools`]).

use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::{Deps, Job, JobError, effects, writer::ToolEffect};
use crate::{
    providers::arcgis::{self, WaterSummary},
    tools::{CallContext, Tool},
};

/// Default search radius: half a mile.
pub const DEFAULT_RADIUS_M: u32 = 805;
const MAX_RADIUS_M: u32 = 10_000;

/// What the assistant sends.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WaterArgs {
    pub latitude: f64,
    pub longitude: f64,
    #[serde(default)]
    pub radius_m: Option<f64>,
    #[serde(default)]
    pub address: Option<String>,
}

impl Tool for WaterLookup {
    const NAME: &'static str = "water_lookup";
    const ALIASES: &'static [&'static str] = &["adwr-lookup", "adwr_lookup"];
    const DESCRIPTION: &'static str =
        "Find registered wells near the property (Arizona ADWR well registry).";
    const WHEN_TO_USE: &'static str = "When you know the property's coordinates, use the water_lookup tool to learn whether it is on a private well.";
    const KIND: &'static str = "water";
    const METRIC: &'static str = "water_lookup";
    const PROVIDER: &'static str = arcgis::PROVIDER;
    const RUNNING: &'static str =
        "The water check is running; the result will be ready in a moment.";
    const FAILED: &'static str =
        "The well registry could not be checked right now; an agent will confirm the water source.";
    type Args = WaterArgs;

    fn parameters() -> serde_json::Value {
        json!({"type": "object", "properties": {
            "latitude": {"type": "number"},
            "longitude": {"type": "number"},
            "radius_m": {"type": "number", "description": "search radius in metres, default 805"},
            "address": {"type": "string"}
        }, "required": ["latitude", "longitude"]})
    }

    fn validate(a: &WaterArgs) -> Result<(), String> {
        crate::tools::check_coordinates(a.latitude, a.longitude)?;
        match a.radius_m {
            Some(r) if !(r > 0.0 && r <= f64::from(MAX_RADIUS_M)) => {
                Err(format!("radius_m must be in (0, {MAX_RADIUS_M}]"))
            }
            _ => Ok(()),
        }
    }

    fn job(a: WaterArgs, call: &CallContext) -> Self {
        WaterLookup {
            agent_id: call.agent_id,
            lead_id: call.lead_id,
            tool_call_id: call.tool_call_id.clone(),
            vapi_call_id: call.vapi_call_id.clone(),
            latitude: a.latitude,
            longitude: a.longitude,
            radius_m: a
                .radius_m
                .map(|r| r.round() as u32)
                .unwrap_or(DEFAULT_RADIUS_M)
                .max(1),
            address: a.address,
            requested_at: call.requested_at,
        }
    }

    fn say(finding: &serde_json::Value) -> Option<String> {
        let radius = finding["radius_m"]
            .as_u64()
            .and_then(|r| u32::try_from(r).ok())
            .unwrap_or(DEFAULT_RADIUS_M);
        serde_json::from_value(finding["summary"].clone())
            .ok()
            .map(|s| describe(&s, radius))
    }

    fn example() -> serde_json::Value {
        json!({"latitude": 35.1983, "longitude": -111.6513})
    }
}

/// A registered well this close is taken as the property's own water source.
const OWN_WELL_WITHIN_M: f64 = 150.0;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WaterLookup {
    pub agent_id: Uuid,
    pub lead_id: Option<Uuid>,
    pub tool_call_id: String,
    /// The Vapi call it was asked in (absent in jobs queued before it was recorded).
    #[serde(default)]
    pub vapi_call_id: Option<String>,
    pub latitude: f64,
    pub longitude: f64,
    pub radius_m: u32,
    pub address: Option<String>,
    /// When the webhook asked (it may be waiting for the answer); absent for other enqueuers.
    #[serde(default)]
    pub requested_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl WaterLookup {
    pub fn idempotency_key(&self) -> String {
        effects::tool_call_key(&self.tool_call_id)
    }
}

impl Job for WaterLookup {
    const QUEUE: &'static str = "water_lookup";
    const MAX_ATTEMPTS: usize = 8;

    async fn run(self, deps: &Deps) -> Result<(), JobError> {
        let key = self.idempotency_key();
        // The registry is free, so there is no saved answer to look up first: a re-run asks again
        // and the writer keeps the finding saved first (the usage row is keyed all the same).
        let wells = deps
            .providers
            .arcgis
            .wells_near(self.latitude, self.longitude, self.radius_m)
            .await?;
        let summary = arcgis::summarize(&wells, self.latitude, self.longitude);
        let result = json!({"summary": summary, "latitude": self.latitude, "longitude": self.longitude,
                            "radius_m": self.radius_m, "address": self.address});
        let metadata = json!({"tool_call_id": self.tool_call_id, "well_count": summary.well_count});
        deps.writer
            .write(ToolEffect {
                agent_id: self.agent_id,
                lead_id: self.lead_id,
                vapi_call_id: self.vapi_call_id.clone(),
                kind: Self::KIND,
                result,
                facts: json!({"water_source": water_source(&summary)}),
                tags: Vec::new(),
                metric: Self::METRIC,
                quantity: rust_decimal::Decimal::ONE,
                provider_cost_usd: None,
                metadata,
                discord_note: Some(format!(
                    "💧 Water check: {}",
                    describe(&summary, self.radius_m)
                )),
                wake: effects::awaited(&self.tool_call_id, self.requested_at, deps)
                    .map(str::to_string),
                address: self.address,
                key,
            })
            .await?;
        crate::failpoint::hit(crate::failpoint::AFTER_EFFECT_COMMIT);
        Ok(())
    }
}

/// The property's water source as far as the registry tells.
pub fn water_source(summary: &WaterSummary) -> &'static str {
    match &summary.nearest {
        Some(n) if n.distance_m <= OWN_WELL_WITHIN_M => "private_well",
        _ => "no_registered_well",
    }
}

/// What the assistant says about a water finding.
pub fn describe(summary: &WaterSummary, radius_m: u32) -> String {
    let Some(n) = &summary.nearest else {
        return format!("no registered wells within {radius_m} m");
    };
    let opt = |v: &Option<rust_decimal::Decimal>| {
        v.map(|d| format!("{d} ft"))
            .unwrap_or_else(|| "unknown".into())
    };
    format!(
        "{} registered well(s) within {radius_m} m; nearest {} at {:.0} m, depth {}, water level {}, use {}",
        summary.well_count,
        n.registry_id.as_deref().unwrap_or("(no id)"),
        n.distance_m,
        opt(&n.well_depth_ft),
        opt(&n.water_level_ft),
        n.water_use.as_deref().unwrap_or("unknown"),
    )
}
