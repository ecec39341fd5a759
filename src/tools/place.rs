//! Where a lookup looks: the property's coordinates, and its address (kept with the finding and
//! its property). The lookups' arguments and jobs carry one (`#[serde(flatten)]`, so the JSON
//! keeps its flat `latitude`, `longitude`, `address`).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Place {
    #[serde(deserialize_with = "number")]
    pub latitude: f64,
    #[serde(deserialize_with = "number")]
    pub longitude: f64,
    pub address: Option<String>,
}

/// A number read through `serde_json::Number`: flattened into a job, a number is buffered as
/// `arbitrary_precision`'s map form, which a plain `f64` refuses.
fn number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    serde_json::Number::deserialize(d)?
        .as_f64()
        .filter(|n| n.is_finite())
        .ok_or_else(|| serde::de::Error::custom("not a finite number"))
}

impl Place {
    /// The JSON schema of a lookup's arguments: a place, and the tool's `extra` properties.
    pub fn parameters(extra: Value) -> Value {
        let mut properties = json!({
            "latitude": {"type": "number"},
            "longitude": {"type": "number"},
            "address": {"type": "string"}
        });
        if let (Some(all), Some(extra)) = (properties.as_object_mut(), extra.as_object()) {
            all.extend(extra.clone());
        }
        json!({"type": "object", "properties": properties, "required": ["latitude", "longitude"]})
    }

    /// Coordinates on Earth.
    pub fn validate(&self) -> Result<(), String> {
        super::check_coordinates(self.latitude, self.longitude)
    }

    /// Valid example arguments (a Flagstaff, Arizona property).
    pub fn example() -> Value {
        json!({"latitude": 35.1983, "longitude": -111.6513})
    }

    /// A finding's result: the place, and the lookup's own `fields`.
    pub fn result(&self, fields: Value) -> Value {
        let mut result = json!({"latitude": self.latitude, "longitude": self.longitude,
                                "address": self.address});
        if let (Some(all), Some(fields)) = (result.as_object_mut(), fields.as_object()) {
            all.extend(fields.clone());
        }
        result
    }
}

/// The process's one client of type `C` for an ArcGIS layer: built by `new` from the layer URL
/// setting `url`, the shared HTTP client and a breaker for `provider`, on first use.
pub fn layer_client<C: Send + Sync + 'static>(
    deps: &crate::jobs::Deps,
    url: &'static crate::config::Setting,
    provider: &'static str,
    new: fn(String, reqwest::Client, crate::providers::CircuitBreaker) -> C,
) -> std::sync::Arc<C> {
    deps.client(|deps| {
        new(
            deps.config.setting(url).unwrap_or_default(),
            deps.providers.http.clone(),
            deps.providers.breaker(provider),
        )
    })
}
