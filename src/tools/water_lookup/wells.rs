//! The ADWR well registry (an ArcGIS feature layer, read with the shared
//! [`crate::providers::arcgis`] point query): wells within a radius of a point, and a summary
//! (count, nearest well) for a water risk assessment.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::providers::{
    CircuitBreaker, ProviderError,
    arcgis::{point_query, query, text, truthy},
};

/// The provider name in errors.
pub const PROVIDER: &str = "arcgis";
/// Features asked for per page.
pub const PAGE_SIZE: usize = 1000;
/// Pages followed before giving up (a radius this dense should be narrowed).
pub const MAX_PAGES: usize = 20;
const OUT_FIELDS: &str =
    "REGISTRY_ID,OWNER_NAME,WELL_DEPTH,WATER_LEVEL,WATER_USE,INSTALLED,WELL_CANCELLED";

/// One registered, not cancelled well. Depths are feet; 0 in the registry means unknown (`None`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Well {
    pub registry_id: Option<String>,
    pub owner_name: Option<String>,
    #[serde(default, with = "rust_decimal::serde::arbitrary_precision_option")]
    pub well_depth_ft: Option<Decimal>,
    #[serde(default, with = "rust_decimal::serde::arbitrary_precision_option")]
    pub water_level_ft: Option<Decimal>,
    pub water_use: Option<String>,
    pub latitude: f64,
    pub longitude: f64,
}

/// How many wells are near, and the nearest one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaterSummary {
    pub well_count: usize,
    pub nearest: Option<NearestWell>,
}

/// The well nearest the point, with its distance in metres (to 0.1 m).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NearestWell {
    pub registry_id: Option<String>,
    pub distance_m: f64,
    #[serde(default, with = "rust_decimal::serde::arbitrary_precision_option")]
    pub well_depth_ft: Option<Decimal>,
    #[serde(default, with = "rust_decimal::serde::arbitrary_precision_option")]
    pub water_level_ft: Option<Decimal>,
    pub water_use: Option<String>,
}

/// The well registry client; cheap to share behind an `Arc`.
pub struct WellRegistry {
    layer_url: String,
    http: reqwest::Client,
    breaker: CircuitBreaker,
}

impl WellRegistry {
    /// `layer_url` is the feature layer (ending `/FeatureServer/0`), without `/query`.
    pub fn new(layer_url: String, http: reqwest::Client, breaker: CircuitBreaker) -> Self {
        Self {
            layer_url,
            http,
            breaker,
        }
    }

    /// Every not-cancelled well within `radius_m` metres, following `exceededTransferLimit` with
    /// `resultOffset` for up to [`MAX_PAGES`] pages of [`PAGE_SIZE`]; more than that is a
    /// permanent error rather than a silently short list.
    pub async fn wells_near(
        &self,
        latitude: f64,
        longitude: f64,
        radius_m: u32,
    ) -> Result<Vec<Well>, ProviderError> {
        if !((-90.0..=90.0).contains(&latitude) && (-180.0..=180.0).contains(&longitude)) {
            return Err(ProviderError::permanent(
                PROVIDER,
                format!("invalid coordinates {latitude},{longitude}"),
            ));
        }
        let mut wells = Vec::new();
        let mut offset = 0;
        for _ in 0..MAX_PAGES {
            self.breaker.check()?;
            let page = self.page(latitude, longitude, radius_m, offset).await;
            self.breaker.record(&page);
            let (features, exceeded) = page?;
            offset += features.len();
            wells.extend(features.iter().filter_map(parse_well));
            if !exceeded || features.is_empty() {
                return Ok(wells);
            }
        }
        Err(ProviderError::permanent(
            PROVIDER,
            format!(
                "more than {} wells within {radius_m} m; narrow the radius",
                MAX_PAGES * PAGE_SIZE
            ),
        ))
    }

    async fn page(
        &self,
        latitude: f64,
        longitude: f64,
        radius_m: u32,
        offset: usize,
    ) -> Result<(Vec<Value>, bool), ProviderError> {
        let url = format!("{}/query", self.layer_url.trim_end_matches('/'));
        let mut params = point_query(latitude, longitude, OUT_FIELDS);
        params.extend([
            ("distance", radius_m.to_string()),
            ("units", "esriSRUnit_Meter".into()),
            ("returnGeometry", "true".into()),
            ("outSR", "4326".into()),
            ("resultOffset", offset.to_string()),
            ("resultRecordCount", PAGE_SIZE.to_string()),
        ]);
        let mut parsed = query(&self.http, PROVIDER, url, &params).await?;
        let exceeded = truthy(&parsed["exceededTransferLimit"]);
        match parsed.get_mut("features").map(Value::take) {
            Some(Value::Array(features)) => Ok((features, exceeded)),
            _ => Err(ProviderError::permanent(
                PROVIDER,
                "query response has no features array",
            )),
        }
    }
}

fn parse_well(feature: &Value) -> Option<Well> {
    let empty = Map::new();
    let attrs = feature["attributes"].as_object().unwrap_or(&empty);
    let attr = |name: &str| attrs.get(name).unwrap_or(&Value::Null);
    if truthy(attr("WELL_CANCELLED")) {
        return None;
    }
    let longitude = feature["geometry"]["x"]
        .as_f64()
        .filter(|v| v.is_finite())?;
    let latitude = feature["geometry"]["y"]
        .as_f64()
        .filter(|v| v.is_finite())?;
    Some(Well {
        registry_id: text(attr("REGISTRY_ID")),
        owner_name: text(attr("OWNER_NAME")),
        well_depth_ft: known_decimal(attr("WELL_DEPTH")),
        water_level_ft: known_decimal(attr("WATER_LEVEL")),
        water_use: text(attr("WATER_USE")),
        latitude,
        longitude,
    })
}

/// An exact decimal from a number or numeric string; 0 (unknown) or negative is `None`.
fn known_decimal(value: &Value) -> Option<Decimal> {
    let s = text(value)?;
    let d = Decimal::from_str(&s)
        .or_else(|_| Decimal::from_scientific(&s))
        .ok()?;
    (d > Decimal::ZERO).then(|| d.normalize())
}

/// Great-circle distance in metres (haversine, mean Earth radius).
pub fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    const EARTH_RADIUS_M: f64 = 6_371_008.8;
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
}

/// The count of `wells` and the nearest one to the point (haversine, rounded to 0.1 m).
pub fn summarize(wells: &[Well], latitude: f64, longitude: f64) -> WaterSummary {
    let nearest = wells
        .iter()
        .map(|w| (haversine_m(latitude, longitude, w.latitude, w.longitude), w))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(distance, w)| NearestWell {
            registry_id: w.registry_id.clone(),
            distance_m: (distance * 10.0).round() / 10.0,
            well_depth_ft: w.well_depth_ft,
            water_level_ft: w.water_level_ft,
            water_use: w.water_use.clone(),
        });
    WaterSummary {
        well_count: wells.len(),
        nearest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn features_become_wells_with_unknowns_as_none() {
        let f = json!({"attributes": {"REGISTRY_ID": 55123456, "OWNER_NAME": " SMITH ",
            "WELL_DEPTH": 0, "WATER_LEVEL": 212.5, "WATER_USE": "DOMESTIC", "WELL_CANCELLED": "N"},
            "geometry": {"x": -112.07, "y": 33.45}});
        let w = parse_well(&f).expect("a well");
        assert_eq!(w.registry_id.as_deref(), Some("55123456"));
        assert_eq!(w.owner_name.as_deref(), Some("SMITH"));
        assert_eq!(w.well_depth_ft, None);
        assert_eq!(w.water_level_ft, Some(Decimal::new(2125, 1)));
        let cancelled = json!({"attributes": {"WELL_CANCELLED": 1}, "geometry": {"x": 0, "y": 0}});
        assert!(parse_well(&cancelled).is_none());
    }

    #[test]
    fn summary_finds_the_nearest_well() {
        let well = |lat, lon, id: &str| Well {
            registry_id: Some(id.into()),
            owner_name: None,
            well_depth_ft: None,
            water_level_ft: None,
            water_use: None,
            latitude: lat,
            longitude: lon,
        };
        let s = summarize(
            &[well(33.46, -112.07, "far"), well(33.451, -112.07, "near")],
            33.45,
            -112.07,
        );
        assert_eq!(s.well_count, 2);
        let n = s.nearest.expect("nearest");
        assert_eq!(n.registry_id.as_deref(), Some("near"));
        assert!((n.distance_m - 111.2).abs() < 0.05, "{}", n.distance_m);
        assert_eq!(summarize(&[], 0.0, 0.0).nearest, None);
    }
}
