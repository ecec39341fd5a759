//! Tool calls from Vapi: which tool, with which arguments, validated before anything is queued.
//!
//! Accepts every shape Vapi uses: `{id, name, arguments}`, `{id, type, function: {name, arguments}}`,
//! arguments as an object or a JSON string, the seed's names as aliases, and the legacy
//! `function-call` (`{name, parameters}`).

use serde::Deserialize;
use serde_json::Value;

/// Default water search radius: half a mile.
pub const DEFAULT_RADIUS_M: u32 = 805;
const MAX_RADIUS_M: u32 = 10_000;

/// One tool call as received.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: Value,
}

/// A validated request for one of our tools.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolRequest {
    Solar(SolarArgs),
    Water(WaterArgs),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SolarArgs {
    #[serde(default)]
    pub image_url: Option<String>,
    #[serde(default)]
    pub image_base64: Option<String>,
    #[serde(default)]
    pub mime_type: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WaterArgs {
    pub latitude: f64,
    pub longitude: f64,
    #[serde(default)]
    pub radius_m: Option<f64>,
    #[serde(default)]
    pub address: Option<String>,
}

/// Canonical tool names.
pub const SOLAR_OCR_SCAN: &str = "solar_ocr_scan";
pub const WATER_LOOKUP: &str = "water_lookup";

/// The canonical name of a tool, accepting the seed deployment's names.
pub fn canonical_name(name: &str) -> Option<&'static str> {
    match name {
        "solar_ocr_scan" | "solar-ocr-scanner" | "solar_ocr_scanner" => Some(SOLAR_OCR_SCAN),
        "water_lookup" | "adwr-lookup" | "adwr_lookup" => Some(WATER_LOOKUP),
        _ => None,
    }
}

/// Reads `message.toolCallList` (or `toolCalls`); entries without an id are skipped.
pub fn from_message(message: &Value) -> Vec<ToolCall> {
    let list = message
        .get("toolCallList")
        .or_else(|| message.get("toolCalls"))
        .and_then(Value::as_array);
    list.into_iter()
        .flatten()
        .filter_map(|item| {
            let id = item.get("id")?.as_str()?.to_string();
            let function = item.get("function");
            let name = item
                .get("name")
                .or_else(|| function.and_then(|f| f.get("name")))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let arguments = item
                .get("arguments")
                .or_else(|| function.and_then(|f| f.get("arguments")))
                .or_else(|| item.get("parameters"))
                .cloned()
                .unwrap_or(Value::Null);
            Some(ToolCall {
                id,
                name,
                arguments,
            })
        })
        .collect()
}

/// Validates a call's arguments for its tool; the error is said back to the assistant.
pub fn parse(call: &ToolCall) -> Result<ToolRequest, String> {
    let tool = canonical_name(&call.name).ok_or_else(|| format!("unknown tool {:?}", call.name))?;
    let arguments = match &call.arguments {
        Value::String(s) if s.trim().is_empty() => Value::Object(Default::default()),
        Value::String(s) => {
            serde_json::from_str(s).map_err(|e| format!("arguments are not JSON: {e}"))?
        }
        Value::Null => Value::Object(Default::default()),
        other => other.clone(),
    };
    match tool {
        SOLAR_OCR_SCAN => {
            let args: SolarArgs = serde_json::from_value(arguments)
                .map_err(|e| format!("bad arguments for {tool}: {e}"))?;
            let has_url = args
                .image_url
                .as_deref()
                .is_some_and(|u| u.starts_with("http://") || u.starts_with("https://"));
            let has_inline = args.image_base64.as_deref().is_some_and(|b| !b.is_empty());
            match (has_url, has_inline) {
                (false, false) => Err(format!(
                    "{tool} needs image_url (http/https) or image_base64 with mime_type"
                )),
                (false, true)
                    if args
                        .mime_type
                        .as_deref()
                        .is_none_or(|m| !m.starts_with("image/") && m != "application/pdf") =>
                {
                    Err(format!(
                        "{tool}: image_base64 needs mime_type (image/* or application/pdf)"
                    ))
                }
                _ => Ok(ToolRequest::Solar(args)),
            }
        }
        _ => {
            let args: WaterArgs = serde_json::from_value(arguments)
                .map_err(|e| format!("bad arguments for {tool}: {e}"))?;
            if !(-90.0..=90.0).contains(&args.latitude)
                || !(-180.0..=180.0).contains(&args.longitude)
            {
                return Err(format!("{tool}: latitude/longitude out of range"));
            }
            if let Some(r) = args.radius_m
                && !(r > 0.0 && r <= f64::from(MAX_RADIUS_M))
            {
                return Err(format!("{tool}: radius_m must be in (0, {MAX_RADIUS_M}]"));
            }
            Ok(ToolRequest::Water(args))
        }
    }
}

impl WaterArgs {
    pub fn radius(&self) -> u32 {
        self.radius_m
            .map(|r| r.round() as u32)
            .unwrap_or(DEFAULT_RADIUS_M)
            .max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_shape_and_alias_is_read() {
        let msg = json!({"toolCallList": [
            {"id": "t1", "name": "solar-ocr-scanner", "arguments": {"image_url": "https://x/y.jpg"}},
            {"id": "t2", "type": "function", "function": {"name": "adwr-lookup",
             "arguments": "{\"latitude\": 35.2, \"longitude\": -111.6}"}},
            {"name": "no id"}
        ]});
        let calls = from_message(&msg);
        assert_eq!(calls.len(), 2);
        assert!(matches!(parse(&calls[0]), Ok(ToolRequest::Solar(_))));
        let Ok(ToolRequest::Water(w)) = parse(&calls[1]) else {
            panic!("water")
        };
        assert_eq!(w.radius(), DEFAULT_RADIUS_M);
    }

    #[test]
    fn bad_arguments_and_unknown_tools_are_errors() {
        let call = |name: &str, arguments: Value| ToolCall {
            id: "x".into(),
            name: name.into(),
            arguments,
        };
        assert!(parse(&call("crystal_ball", json!({}))).is_err());
        assert!(parse(&call("solar_ocr_scan", json!({}))).is_err());
        assert!(parse(&call("solar_ocr_scan", json!({"image_base64": "AAAA"}))).is_err());
        assert!(
            parse(&call(
                "solar_ocr_scan",
                json!({"image_url": "file:///etc/passwd"})
            ))
            .is_err()
        );
        assert!(
            parse(&call(
                "water_lookup",
                json!({"latitude": 135, "longitude": 1})
            ))
            .is_err()
        );
        assert!(parse(&call("water_lookup", json!("{not json"))).is_err());
        assert!(
            parse(&call(
                "water_lookup",
                json!({"latitude": 35, "longitude": -111, "radius_m": -1})
            ))
            .is_err()
        );
        assert!(
            parse(&call(
                "solar_ocr_scan",
                json!({"image_base64": "AAAA", "mime_type": "image/png"})
            ))
            .is_ok()
        );
    }
}
