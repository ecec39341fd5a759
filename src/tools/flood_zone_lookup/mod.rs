//! `flood_zone_lookup`: the FEMA flood zone at the property (National Flood Hazard Layer), one
//! `flood_zone_lookup` usage row per tool call (price 0.00: FEMA is free, still metered; key
//! `tool_call:{id}`). A `flood` finding; the lead is tagged `flood_risk` in a Special Flood
//! Hazard Area. A registered tool ([`crate::tools`]).

pub mod nfhl;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{CallContext, Category, Finding, Place, StandIn, Tool};
use crate::{
    config::{Kind, Setting},
    jobs::{Deps, Job, JobError},
};
use nfhl::{FemaClient, FloodZone};

/// FEMA's flood hazard zones layer (layer 28 of the public NFHL MapServer).
pub const NFHL_URL: Setting = Setting {
    name: "FEMA_NFHL_URL",
    kind: Kind::Url,
    default: Some("https://hazards.fema.gov/arcgis/rest/services/public/NFHL/MapServer/28"),
    required: false,
    about: "FEMA National Flood Hazard Layer, Flood Hazard Zones",
};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FloodZoneLookup {
    #[serde(flatten)]
    pub call: CallContext,
    #[serde(flatten)]
    pub place: Place,
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
    const PROVIDER: &'static str = nfhl::PROVIDER;
    const RUNNING: &'static str =
        "The flood zone check is running; the result will be ready in a moment.";
    const FAILED: &'static str =
        "FEMA's flood map could not be checked right now; an agent will confirm the flood zone.";
    const CATEGORY: Category = Category::Lookup;
    const SETTINGS: &'static [Setting] = &[NFHL_URL];
    /// What the assistant sends.
    type Args = Place;

    fn parameters() -> serde_json::Value {
        Place::parameters(json!({}))
    }

    fn validate(place: &Place) -> Result<(), String> {
        place.validate()
    }

    fn job(place: Place, call: &CallContext) -> Self {
        FloodZoneLookup {
            call: call.clone(),
            place,
        }
    }

    fn say(finding: &serde_json::Value) -> Option<String> {
        serde_json::from_value(finding["zone"].clone())
            .ok()
            .map(|z| describe(&z))
    }

    fn example() -> serde_json::Value {
        Place::example()
    }

    fn stand_in() -> StandIn {
        StandIn {
            url: &NFHL_URL,
            route: "/query",
            // A high-risk zone (AE) everywhere.
            answer: || {
                json!({"features": [{"attributes": {"FLD_ZONE": "AE", "ZONE_SUBTY": null,
                                                    "SFHA_TF": "T"}}]})
            },
        }
    }
}

impl Job for FloodZoneLookup {
    const QUEUE: &'static str = "flood_zone_lookup";
    const MAX_ATTEMPTS: usize = 8;

    async fn run(self, deps: &Deps) -> Result<(), JobError> {
        // FEMA is free: a re-run asks again; the writer keeps the finding saved first.
        let fema = super::place::layer_client(deps, &NFHL_URL, nfhl::PROVIDER, FemaClient::new);
        let place = &self.place;
        let zone = fema.flood_zone(place.latitude, place.longitude).await?;
        let sfha = zone.special_flood_hazard_area;
        let finding = Finding {
            result: place.result(json!({"zone": zone})),
            facts: json!({"flood_zone": zone.zone, "special_flood_hazard_area": sfha}),
            tags: if sfha { vec!["flood_risk"] } else { Vec::new() },
            provider_cost_usd: None,
            metadata: json!({"flood_zone": zone.zone, "special_flood_hazard_area": sfha}),
            note: format!("🌊 Flood check: {}", describe(&zone)),
            address: self.place.address,
        };
        self.call.record::<Self>(deps, finding).await?;
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

#[cfg(test)]
mod plans {
    use serde_json::json;

    use super::FloodZoneLookup;
    use crate::tools::Tool;

    #[test]
    fn a_job_round_trips_through_its_flattened_place() {
        // Flattened, numbers are buffered in serde_json's arbitrary-precision form.
        let job =
            FloodZoneLookup::plan(json!({"latitude": 35.2, "longitude": -111.6})).expect("valid");
        let back: super::FloodZoneLookup = serde_json::from_slice(&job).expect("job");
        assert_eq!((back.place.latitude, back.place.longitude), (35.2, -111.6));
    }

    #[test]
    fn arguments_are_checked() {
        assert!(FloodZoneLookup::plan(json!({"latitude": 33.4, "longitude": -112.0})).is_ok());
        assert!(FloodZoneLookup::plan(json!({"latitude": 35})).is_err());
        assert!(FloodZoneLookup::plan(json!({"latitude": 35, "longitude": 200})).is_err());
        assert!(FloodZoneLookup::plan(json!({"latitude": "x", "longitude": 1})).is_err());
    }
}
