//! `water_lookup`: registered wells near the property from the ADWR well registry (ArcGIS), one
//! `water_lookup` usage row per tool call (price 0.00, still metered; key `tool_call:{id}`).

use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::{Deps, Job, JobError, effects, writer::ToolEffect};
use crate::{
    providers::arcgis::{self, WaterSummary},
    store::{findings, usage::metric},
};

/// A registered well this close is taken as the property's own water source.
const OWN_WELL_WITHIN_M: f64 = 150.0;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WaterLookup {
    pub agent_id: Uuid,
    pub lead_id: Option<Uuid>,
    pub tool_call_id: String,
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
                kind: findings::WATER,
                result,
                has_solar: None,
                water_source: Some(water_source(&summary)),
                tag: None,
                metric: metric::WATER_LOOKUP,
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
