//! `flood_zone_lookup`: the FEMA flood zone at the property (National Flood Hazard Layer), one
//! `flood_zone_lookup` usage row per tool call (price 0.00: FEMA is free, still metered; key
//! `tool_call:{id}`). A `flood` finding; the lead is tagged `flood_risk` in a Special Flood
//! Hazard Area. A registered tool ([`crate::tools`]).

use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::{Deps, Job, JobError, effects, writer::ToolEffect};
use crate::{
    providers::fema::{self, FloodZone},
    tools::{CallContext, Tool},
};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FloodZoneLookup {
    pub agent_id: Uuid,
    pub lead_id: Option<Uuid>,
    pub tool_call_id: String,
    /// The Vapi call it was asked in (absent in jobs queued before it was recorded).
    #[serde(default)]
    pub vapi_call_id: Option<String>,
    pub latitude: f64,
    pub longitude: f64,
    pub address: Option<String>,
    /// When the webhook asked (it may be waiting for the answer); absent for other enqueuers.
    #[serde(default)]
    pub requested_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// What the assistant sends.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FloodArgs {
    pub latitude: f64,
    pub longitude: f64,
    #[serde(default)]
    pub address: Option<String>,
}

impl Tool for FloodZoneLookup {
    const NAME: &'static str = "flood_zone_lookup";
    const ALIASES: &'static [&'static str] = &["flood-zone-lookup", "fema_flood_zone"];
    const DESCRIPTION: &'static str = "Find the property's FEMA flood zone (National Flood Hazard Layer) \
        and whether it is in a Special Flood Hazard Area.";
    const WHEN_TO_USE: &'static str = "When you know the property's coordinates and flood insurance or \
        flooding comes up, use the flood_zone_lookup tool and tell the caller in plain words what the \
        zone means for flood insurance.";
    const KIND: &'static str = "flood";
    const METRIC: &'static str = "flood_zone_lookup";
    const PROVIDER: &'static str = fema::PROVIDER;
    const RUNNING: &'static str =
        "The flood zone check is running; the result will be ready in a moment.";
    const FAILED: &'static str =
        "FEMA's flood map could not be checked right now; an agent will confirm the flood zone.";
    type Args = FloodArgs;

    fn parameters() -> serde_json::Value {
        json!({"type": "object", "properties": {
            "latitude": {"type": "number"},
            "longitude": {"type": "number"},
            "address": {"type": "string"}
        }, "required": ["latitude", "longitude"]})
    }

    fn validate(a: &FloodArgs) -> Result<(), String> {
        crate::tools::check_coordinates(a.latitude, a.longitude)
    }

    fn job(a: FloodArgs, call: &CallContext) -> Self {
        FloodZoneLookup {
            agent_id: call.agent_id,
            lead_id: call.lead_id,
            tool_call_id: call.tool_call_id.clone(),
            vapi_call_id: call.vapi_call_id.clone(),
            latitude: a.latitude,
            longitude: a.longitude,
            address: a.address,
            requested_at: call.requested_at,
        }
    }

    fn say(finding: &serde_json::Value) -> Option<String> {
        serde_json::from_value(finding["zone"].clone())
            .ok()
            .map(|z| describe(&z))
    }

    fn example() -> serde_json::Value {
        json!({"latitude": 35.1983, "longitude": -111.6513})
    }
}

impl Job for FloodZoneLookup {
    const QUEUE: &'static str = "flood_zone_lookup";
    const MAX_ATTEMPTS: usize = 8;

    async fn run(self, deps: &Deps) -> Result<(), JobError> {
        let key = effects::tool_call_key(&self.tool_call_id);
        // FEMA is free: a re-run asks again; the writer keeps the finding saved first.
        let zone = deps
            .providers
            .fema
            .flood_zone(self.latitude, self.longitude)
            .await?;
        let sfha = zone.special_flood_hazard_area;
        deps.writer
            .write(ToolEffect {
                agent_id: self.agent_id,
                lead_id: self.lead_id,
                vapi_call_id: self.vapi_call_id.clone(),
                kind: Self::KIND,
                result: json!({"zone": zone, "latitude": self.latitude, "longitude": self.longitude,
                               "address": self.address}),
                facts: json!({"flood_zone": zone.zone, "special_flood_hazard_area": sfha}),
                tags: if sfha { vec!["flood_risk"] } else { Vec::new() },
                metric: Self::METRIC,
                quantity: rust_decimal::Decimal::ONE,
                provider_cost_usd: None,
                metadata: json!({"tool_call_id": self.tool_call_id, "flood_zone": zone.zone,
                                 "special_flood_hazard_area": sfha}),
                discord_note: Some(format!("🌊 Flood check: {}", describe(&zone))),
                wake: effects::awaited(&self.tool_call_id, self.requested_at, deps)
                    .map(str::to_string),
                address: self.address,
                key,
            })
            .await?;
        Ok(())
    }
}

/// What a flood zone means for flood insurance, in plain words.
pub fn describe(z: &FloodZone) -> String {
    let Some(zone) = z.zone.as_deref() else {
        return "FEMA has no flood zone mapped for this spot, so its flood risk is not determined; \
                flood insurance is not required by a lender, and an agent can still quote it."
            .into();
    };
    let subtype = z.subtype.as_deref().unwrap_or("").to_ascii_uppercase();
    if subtype.contains("FLOODWAY") {
        return format!(
            "the property is in FEMA zone {zone}, inside the regulatory floodway, the highest-risk \
             part of the floodplain. Flood insurance is required for a federally backed mortgage, \
             and a homeowners policy does not cover flood damage."
        );
    }
    if z.special_flood_hazard_area {
        let coastal = if zone.starts_with('V') {
            " with coastal wave hazard"
        } else {
            ""
        };
        return format!(
            "the property is in FEMA zone {zone}, a high-risk Special Flood Hazard Area{coastal} \
             (at least a 1 in 100 chance of flooding each year). Lenders require flood insurance \
             for a federally backed mortgage here, and a homeowners policy does not cover flood \
             damage."
        );
    }
    if zone == "D" {
        return "the property is in FEMA zone D: flood risk there has not been studied. Flood \
                insurance is not required, but it is available and an agent can price it."
            .into();
    }
    if subtype.contains("0.2 PCT") || zone == "B" {
        return format!(
            "the property is in FEMA zone {zone}, a moderate flood risk area (about a 1 in 500 \
             chance each year). Flood insurance is not required, but it is recommended and usually \
             costs less than in a high-risk zone."
        );
    }
    format!(
        "the property is in FEMA zone {zone}, a minimal flood risk area. Flood insurance is not \
         required, but floods happen outside high-risk zones too, and coverage there is usually \
         inexpensive."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(zone: Option<&str>, subtype: Option<&str>, sfha: bool) -> FloodZone {
        FloodZone {
            zone: zone.map(str::to_string),
            subtype: subtype.map(str::to_string),
            special_flood_hazard_area: sfha,
        }
    }

    #[test]
    fn each_kind_of_zone_is_said_in_plain_words() {
        let ae = describe(&zone(Some("AE"), None, true));
        assert!(ae.contains("zone AE") && ae.contains("high-risk") && ae.contains("require"));
        let ve = describe(&zone(Some("VE"), None, true));
        assert!(ve.contains("coastal"));
        let floodway = describe(&zone(Some("AE"), Some("FLOODWAY"), true));
        assert!(floodway.contains("floodway"));
        let shaded = describe(&zone(
            Some("X"),
            Some("0.2 PCT ANNUAL CHANCE FLOOD HAZARD"),
            false,
        ));
        assert!(shaded.contains("moderate") && shaded.contains("not required"));
        let minimal = describe(&zone(
            Some("X"),
            Some("AREA OF MINIMAL FLOOD HAZARD"),
            false,
        ));
        assert!(minimal.contains("minimal") && minimal.contains("not"));
        assert!(describe(&zone(Some("D"), None, false)).contains("not been studied"));
        assert!(describe(&zone(None, None, false)).contains("no flood zone mapped"));
    }
}
