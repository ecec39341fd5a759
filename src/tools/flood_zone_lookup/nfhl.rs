//! FEMA's National Flood Hazard Layer (an ArcGIS map service): the flood zone at a point.
//!
//! One point-intersect query on the "Flood Hazard Zones" layer (28 of the public NFHL
//! MapServer) for `FLD_ZONE`, `ZONE_SUBTY` and `SFHA_TF`. Errors inside an HTTP 200 are
//! classified like the ADWR registry's ([`crate::providers::arcgis::query`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::providers::{CircuitBreaker, ProviderError, arcgis};

/// The provider name in errors and breakers.
pub const PROVIDER: &str = "fema";

/// The flood zone mapped at a point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FloodZone {
    /// `FLD_ZONE` (e.g. `AE`, `X`, `VE`); `None` where FEMA has mapped no zone.
    pub zone: Option<String>,
    /// `ZONE_SUBTY` (e.g. `0.2 PCT ANNUAL CHANCE FLOOD HAZARD`, `FLOODWAY`).
    pub subtype: Option<String>,
    /// `SFHA_TF = 'T'`: a Special Flood Hazard Area (the 1 % annual chance floodplain).
    pub special_flood_hazard_area: bool,
}

/// The NFHL client; cheap to share behind an `Arc`.
pub struct FemaClient {
    layer_url: String,
    http: reqwest::Client,
    breaker: CircuitBreaker,
}

impl FemaClient {
    /// `layer_url` is the flood hazard zones layer (ending `/MapServer/28`), without `/query`.
    pub fn new(layer_url: String, http: reqwest::Client, breaker: CircuitBreaker) -> Self {
        Self {
            layer_url,
            http,
            breaker,
        }
    }

    /// The zone at a point. Several polygons may touch it (a zone boundary): the one in a Special
    /// Flood Hazard Area wins, as a lender would read it.
    pub async fn flood_zone(
        &self,
        latitude: f64,
        longitude: f64,
    ) -> Result<FloodZone, ProviderError> {
        if !((-90.0..=90.0).contains(&latitude) && (-180.0..=180.0).contains(&longitude)) {
            return Err(ProviderError::permanent(
                PROVIDER,
                format!("invalid coordinates {latitude},{longitude}"),
            ));
        }
        self.breaker.check()?;
        let answer = self.query(latitude, longitude).await;
        self.breaker.record(&answer);
        let features = answer?;
        let zones: Vec<FloodZone> = features.iter().map(parse_zone).collect();
        Ok(zones
            .iter()
            .find(|z| z.special_flood_hazard_area)
            .or_else(|| zones.iter().find(|z| z.zone.is_some()))
            .cloned()
            .unwrap_or(FloodZone {
                zone: None,
                subtype: None,
                special_flood_hazard_area: false,
            }))
    }

    async fn query(&self, latitude: f64, longitude: f64) -> Result<Vec<Value>, ProviderError> {
        let url = format!("{}/query", self.layer_url.trim_end_matches('/'));
        let mut params = arcgis::point_query(latitude, longitude, "FLD_ZONE,ZONE_SUBTY,SFHA_TF");
        params.push(("returnGeometry", "false".into()));
        let mut parsed = arcgis::query(&self.http, PROVIDER, url, &params).await?;
        match parsed.get_mut("features").map(Value::take) {
            Some(Value::Array(features)) => Ok(features),
            _ => Err(ProviderError::permanent(
                PROVIDER,
                "query response has no features array",
            )),
        }
    }
}

fn parse_zone(feature: &Value) -> FloodZone {
    let attr = |name: &str| &feature["attributes"][name];
    FloodZone {
        zone: arcgis::text(attr("FLD_ZONE")),
        subtype: arcgis::text(attr("ZONE_SUBTY")),
        special_flood_hazard_area: arcgis::truthy(attr("SFHA_TF")),
    }
}
