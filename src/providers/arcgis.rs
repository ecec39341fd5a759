//! ArcGIS REST point queries, shared by every tool that reads an ArcGIS layer (feature or map
//! service): the query parameters for a point, and one classified `GET {layer}/query`.

use serde_json::Value;

use super::{MAX_RESPONSE_BYTES, ProviderError, classify_reqwest, read_limited, status_error};

/// The parameters of a query for the features at (or, with `distance`, near) a WGS 84 point.
pub fn point_query(latitude: f64, longitude: f64, out_fields: &str) -> Vec<(&'static str, String)> {
    vec![
        ("f", "json".to_string()),
        ("where", "1=1".into()),
        ("geometry", format!("{longitude},{latitude}")),
        ("geometryType", "esriGeometryPoint".into()),
        ("inSR", "4326".into()),
        ("spatialRel", "esriSpatialRelIntersects".into()),
        ("outFields", out_fields.into()),
    ]
}

/// One ArcGIS REST query (`GET {layer}/query`), any layer: the HTTP status, a size-capped body,
/// JSON, and the `error` object ArcGIS puts inside an HTTP 200, each classified for `provider`.
pub async fn query(
    http: &reqwest::Client,
    provider: &'static str,
    url: String,
    params: &[(&str, String)],
) -> Result<Value, ProviderError> {
    let response = http
        .get(url)
        .query(params)
        .send()
        .await
        .map_err(|e| classify_reqwest(provider, e))?;
    if !response.status().is_success() {
        return Err(status_error(provider, response).await);
    }
    let body = read_limited(provider, response, MAX_RESPONSE_BYTES).await?;
    let parsed: Value = serde_json::from_slice(&body).map_err(|e| {
        ProviderError::permanent(provider, format!("malformed query response: {e}"))
    })?;
    match parsed.get("error") {
        Some(error) => Err(classify_body_error(provider, error)),
        None => Ok(parsed),
    }
}

/// `{"error": {"code", "message", "details"}}` inside an HTTP 200: 408/429/5xx transient, any
/// other code (400, 498 invalid token, 499 token required, or none) permanent.
fn classify_body_error(provider: &'static str, error: &Value) -> ProviderError {
    let code = error["code"].as_i64();
    let mut reason = format!(
        "error {}: {}",
        code.map_or_else(|| "without code".to_string(), |c| c.to_string()),
        error["message"].as_str().unwrap_or("no message")
    );
    let details: Vec<&str> = error["details"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !details.is_empty() {
        reason = format!("{reason} ({})", details.join("; "));
    }
    let reason = super::excerpt(&reason);
    match code {
        Some(408 | 429 | 500..=599) => ProviderError::transient(provider, reason),
        _ => ProviderError::permanent(provider, reason),
    }
}

/// A string or number as trimmed text; empty or null is `None`.
pub fn text(value: &Value) -> Option<String> {
    let s = match value {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (!s.is_empty()).then_some(s)
}

/// `true`, a non-zero number, or `Y`/`YES`/`TRUE`/`1` (any case).
pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => matches!(
            s.trim().to_ascii_uppercase().as_str(),
            "Y" | "YES" | "TRUE" | "T" | "1"
        ),
        _ => false,
    }
}
