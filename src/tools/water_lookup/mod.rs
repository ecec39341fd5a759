//! `water_lookup`: registered wells near the property from the ADWR well registry (ArcGIS), one
//! `water_lookup` usage row per tool call (price 0.00, still metered; key `tool_call:{id}`).
//! A registered tool ([`crate::tools`]).

pub mod wells;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{CallContext, Category, Finding, Place, StandIn, Tool};
use crate::{
    config::{Kind, Setting},
    jobs::{Deps, Job, JobError},
};
use wells::{WaterSummary, WellRegistry};

/// The well registry layer (ending `/FeatureServer/0`).
pub const WELLS_URL: Setting = Setting {
    name: "ADWR_WELLS_URL",
    kind: Kind::Url,
    default: Some(
        "https://services.arcgis.com/C34zQ7veRS0V1t04/ArcGIS/rest/services/Well_Registry_2024/FeatureServer/0",
    ),
    required: false,
    about: "ADWR well registry ArcGIS layer",
};

/// Default search radius: half a mile.
pub const DEFAULT_RADIUS_M: u32 = 805;
const MAX_RADIUS_M: u32 = 10_000;

/// What the assistant sends.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WaterArgs {
    #[serde(flatten)]
    pub place: Place,
    pub radius_m: Option<f64>,
}

impl Tool for WaterLookup {
    const NAME: &'static str = "water_lookup";
    const ALIASES: &'static [&'static str] = &["adwr-lookup", "adwr_lookup"];
    const DESCRIPTION: &'static str =
        "Find registered wells near the property (Arizona ADWR well registry).";
    const WHEN_TO_USE: &'static str = "When you know the property's coordinates, use the water_lookup tool to learn whether it is on a private well.";
    const KIND: &'static str = "water";
    const METRIC: &'static str = "water_lookup";
    const PROVIDER: &'static str = wells::PROVIDER;
    const RUNNING: &'static str =
        "The water check is running; the result will be ready in a moment.";
    const FAILED: &'static str =
        "The well registry could not be checked right now; an agent will confirm the water source.";
    const CATEGORY: Category = Category::Lookup;
    const SETTINGS: &'static [Setting] = &[WELLS_URL];
    type Args = WaterArgs;

    fn parameters() -> serde_json::Value {
        Place::parameters(json!({
            "radius_m": {"type": "number", "description": "search radius in metres, default 805"}
        }))
    }

    fn validate(a: &WaterArgs) -> Result<(), String> {
        a.place.validate()?;
        match a.radius_m {
            Some(r) if !(r > 0.0 && r <= f64::from(MAX_RADIUS_M)) => {
                Err(format!("radius_m must be in (0, {MAX_RADIUS_M}]"))
            }
            _ => Ok(()),
        }
    }

    fn job(a: WaterArgs, call: &CallContext) -> Self {
        WaterLookup {
            call: call.clone(),
            place: a.place,
            radius_m: a
                .radius_m
                .map(|r| r.round() as u32)
                .unwrap_or(DEFAULT_RADIUS_M)
                .max(1),
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
        Place::example()
    }

    fn stand_in() -> StandIn {
        StandIn {
            url: &WELLS_URL,
            route: "/query",
            answer: || {
                let well = |id: u64, lat: f64, lon: f64, depth: u32| {
                    json!({"attributes": {"REGISTRY_ID": id, "WELL_DEPTH": depth,
                                          "WATER_LEVEL": depth / 2, "WATER_USE": "DOMESTIC",
                                          "WELL_CANCELLED": "N"},
                           "geometry": {"x": lon, "y": lat}})
                };
                json!({"features": [well(551_234, 35.1984, -111.6513, 420),
                                    well(551_900, 35.2011, -111.6490, 610)],
                       "exceededTransferLimit": false})
            },
        }
    }
}

/// A registered well this close is taken as the property's own water source.
const OWN_WELL_WITHIN_M: f64 = 150.0;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WaterLookup {
    #[serde(flatten)]
    pub call: CallContext,
    #[serde(flatten)]
    pub place: Place,
    pub radius_m: u32,
}

impl Job for WaterLookup {
    const QUEUE: &'static str = "water_lookup";
    const MAX_ATTEMPTS: usize = 8;

    async fn run(self, deps: &Deps) -> Result<(), JobError> {
        // The registry is free, so there is no saved answer to look up first: a re-run asks again
        // and the writer keeps the finding saved first (the usage row is keyed all the same).
        let registry =
            super::place::layer_client(deps, &WELLS_URL, wells::PROVIDER, WellRegistry::new);
        let place = &self.place;
        let found = registry
            .wells_near(place.latitude, place.longitude, self.radius_m)
            .await?;
        let summary = wells::summarize(&found, place.latitude, place.longitude);
        let finding = Finding {
            result: place.result(json!({"summary": summary, "radius_m": self.radius_m})),
            facts: json!({"water_source": water_source(&summary)}),
            tags: Vec::new(),
            provider_cost_usd: None,
            metadata: json!({"well_count": summary.well_count}),
            note: format!("💧 Water check: {}", describe(&summary, self.radius_m)),
            address: self.place.address,
        };
        self.call.record::<Self>(deps, finding).await?;
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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::WaterLookup;
    use crate::tools::Tool;

    #[test]
    fn arguments_are_checked_and_numbers_spelled_as_strings_read() {
        let job: Value = serde_json::from_slice(
            &WaterLookup::plan(json!("{\"latitude\": 35.2, \"longitude\": -111.6}"))
                .expect("valid"),
        )
        .expect("json");
        assert_eq!(job["radius_m"], 805);
        assert!(WaterLookup::plan(json!({"latitude": 135, "longitude": 1})).is_err());
        assert!(
            WaterLookup::plan(json!({"latitude": 35, "longitude": -111, "radius_m": -1})).is_err()
        );
        assert!(WaterLookup::plan(json!({"latitude": " 34.54", "longitude": "-112.47"})).is_ok());
        assert!(WaterLookup::plan(json!({"latitude": "1e999", "longitude": "1"})).is_err());
        assert!(WaterLookup::plan(json!({"latitude": "NaN", "longitude": "1"})).is_err());
        assert!(WaterLookup::plan(json!({"latitude": "34.5x", "longitude": "1"})).is_err());
    }
}
