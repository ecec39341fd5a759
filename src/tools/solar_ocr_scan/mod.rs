//! `solar_ocr_scan`: a property photo or document through Gemini Vision, one `solar_ocr_scan`
//! usage row per tool call (key `tool_call:{id}`). A registered tool ([`crate::tools`]).
//!
//! Steps: reuse a saved answer if a previous run paid for one; else fetch the image (size-capped)
//! and ask Gemini ([`gemini`]); then the effects writer saves the answer, updates the property, tags the lead,
//! meters, queues the Discord note and wakes the webhook waiting for this tool call, all in one
//! statement (a missing price fails the job but keeps the paid answer).

pub mod gemini;

use base64::Engine as _;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{CallContext, Category, Finding, StandIn, Tool};
use crate::{
    config::{Kind, Setting},
    jobs::{Deps, Job, JobError, effects},
};
use gemini::{GeminiClient, SolarScan};

pub const API_KEY: Setting = Setting {
    name: "GEMINI_API_KEY",
    kind: Kind::Secret,
    default: None,
    required: false,
    about: "Gemini API key (unset: every scan fails, permanently)",
};
pub const BASE_URL: Setting = Setting {
    name: "GEMINI_BASE_URL",
    kind: Kind::Url,
    default: Some("https://generativelanguage.googleapis.com"),
    required: false,
    about: "Gemini API base URL",
};
pub const MODEL: Setting = Setting {
    name: "GEMINI_MODEL",
    kind: Kind::Text,
    default: Some("gemini-2.5-flash"),
    required: false,
    about: "Gemini model",
};
pub const INPUT_PRICE: Setting = Setting {
    name: "GEMINI_INPUT_USD_PER_MTOK",
    kind: Kind::Decimal,
    default: None,
    required: false,
    about: "Gemini prompt token price, USD per million (with the output price: scans carry a provider cost)",
};
pub const OUTPUT_PRICE: Setting = Setting {
    name: "GEMINI_OUTPUT_USD_PER_MTOK",
    kind: Kind::Decimal,
    default: None,
    required: false,
    about: "Gemini output token price, USD per million",
};

/// What the assistant sends: an image by URL, or inline with its MIME type.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SolarArgs {
    pub image_url: Option<String>,
    pub image_base64: Option<String>,
    pub mime_type: Option<String>,
    pub address: Option<String>,
}

impl Tool for SolarOcrScan {
    const NAME: &'static str = "solar_ocr_scan";
    const ALIASES: &'static [&'static str] = &["solar-ocr-scanner", "solar_ocr_scanner"];
    const DESCRIPTION: &'static str =
        "Check a photo or document of the caller's property for rooftop solar panels.";
    const WHEN_TO_USE: &'static str =
        "When the caller shares a photo or document of the property, use the solar_ocr_scan tool.";
    const KIND: &'static str = "solar";
    const METRIC: &'static str = "solar_ocr_scan";
    const PROVIDER: &'static str = gemini::PROVIDER;
    const RUNNING: &'static str =
        "The solar check is running; the result will be ready in a moment.";
    const FAILED: &'static str =
        "The solar check could not read that image; an agent will look at it and call back.";
    const CATEGORY: Category = Category::Scan;
    const SETTINGS: &'static [Setting] = &[API_KEY, BASE_URL, MODEL, INPUT_PRICE, OUTPUT_PRICE];
    type Args = SolarArgs;

    fn parameters() -> serde_json::Value {
        json!({"type": "object", "properties": {
            "image_url": {"type": "string", "description": "URL of the image"},
            "image_base64": {"type": "string", "description": "The image, base64-encoded"},
            "mime_type": {"type": "string", "description": "e.g. image/jpeg"},
            "address": {"type": "string"}
        }})
    }

    fn validate(args: &SolarArgs) -> Result<(), String> {
        let has_url = args
            .image_url
            .as_deref()
            .is_some_and(|u| u.starts_with("http://") || u.starts_with("https://"));
        let has_inline = args.image_base64.as_deref().is_some_and(|b| !b.is_empty());
        let inline_type_ok = args
            .mime_type
            .as_deref()
            .is_some_and(|m| m.starts_with("image/") || m == "application/pdf");
        match (has_url, has_inline) {
            (false, false) => {
                Err("needs image_url (http/https) or image_base64 with mime_type".into())
            }
            (false, true) if !inline_type_ok => {
                Err("image_base64 needs mime_type (image/* or application/pdf)".into())
            }
            _ => Ok(()),
        }
    }

    fn job(a: SolarArgs, call: &CallContext) -> Self {
        SolarOcrScan {
            call: call.clone(),
            image_url: a.image_url,
            image_base64: a.image_base64,
            mime_type: a.mime_type,
            address: a.address,
        }
    }

    fn say(finding: &serde_json::Value) -> Option<String> {
        serde_json::from_value(finding["scan"].clone())
            .ok()
            .map(|s| describe(&s))
    }

    fn example() -> serde_json::Value {
        json!({"image_base64": "iVBORw0KGgo=", "mime_type": "image/png"})
    }

    fn stand_in() -> StandIn {
        StandIn {
            url: &BASE_URL,
            route: "/v1beta/models/{model}",
            answer: || {
                let finding = json!({"has_solar": true, "panel_count": 22, "ownership": "leased",
                                     "installer": "SunRun", "confidence": 0.91});
                json!({
                    "candidates": [{"content": {"role": "model",
                                                "parts": [{"text": finding.to_string()}]},
                                    "finishReason": "STOP"}],
                    "usageMetadata": {"promptTokenCount": 1290, "candidatesTokenCount": 42,
                                      "totalTokenCount": 1332},
                    "modelVersion": "stand-in"
                })
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SolarOcrScan {
    #[serde(flatten)]
    pub call: CallContext,
    pub image_url: Option<String>,
    pub image_base64: Option<String>,
    pub mime_type: Option<String>,
    pub address: Option<String>,
}

impl SolarOcrScan {
    async fn image(&self, deps: &Deps) -> Result<(Vec<u8>, String), JobError> {
        if let Some(data) = self.image_base64.as_deref().filter(|d| !d.is_empty()) {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|e| JobError::Permanent(format!("image_base64 is not base64: {e}")))?;
            if bytes.len() > deps.config.image_max_bytes {
                return Err(JobError::Permanent("image exceeds IMAGE_MAX_BYTES".into()));
            }
            let mime = self
                .mime_type
                .clone()
                .unwrap_or_else(|| "image/jpeg".into());
            return Ok((bytes, mime));
        }
        let url = self
            .image_url
            .as_deref()
            .ok_or_else(|| JobError::Permanent("no image_url or image_base64".into()))?;
        Ok(deps
            .providers
            .image
            .fetch(url, deps.config.image_max_bytes)
            .await?)
    }

    /// Gemini's cost for this scan, when token prices are configured.
    fn provider_cost(scan: &SolarScan, deps: &Deps) -> Option<Decimal> {
        let input = deps.config.decimal_setting(&INPUT_PRICE)?;
        let output = deps.config.decimal_setting(&OUTPUT_PRICE)?;
        let million = Decimal::from(1_000_000);
        Some(
            (Decimal::from(scan.usage.prompt_tokens) * input
                + Decimal::from(scan.usage.candidates_tokens) * output)
                / million,
        )
    }
}

impl Job for SolarOcrScan {
    const QUEUE: &'static str = "solar_ocr_scan";
    const MAX_ATTEMPTS: usize = 8;

    async fn run(self, deps: &Deps) -> Result<(), JobError> {
        let key = self.call.key();
        let result = effects::saved_or_ask(deps, self.call.agent_id, Self::KIND, &key, || async {
            let (image, mime) = self.image(deps).await?;
            let gemini = deps.client(|deps| {
                GeminiClient::new(
                    deps.config.setting(&BASE_URL).unwrap_or_default(),
                    deps.config.secret_setting(&API_KEY),
                    deps.config.setting(&MODEL).unwrap_or_default(),
                    deps.providers.http.clone(),
                    deps.providers.breaker(gemini::PROVIDER),
                )
            });
            let scan = gemini
                .scan_solar(&image, &mime, self.address.as_deref())
                .await?;
            crate::failpoint::hit(crate::failpoint::AFTER_PROVIDER_ANSWER);
            Ok(json!({"scan": scan, "address": self.address}))
        })
        .await?;
        let scan: SolarScan = serde_json::from_value(result["scan"].clone())
            .map_err(|e| JobError::Permanent(format!("saved solar finding is unreadable: {e}")))?;
        let has_solar = scan.finding.has_solar;
        let finding = Finding {
            result,
            facts: json!({"has_solar": has_solar}),
            tags: if has_solar { vec!["solar"] } else { Vec::new() },
            provider_cost_usd: Self::provider_cost(&scan, deps),
            metadata: json!({"has_solar": has_solar, "tokens": scan.usage}),
            note: format!("☀️ Solar check: {}", describe(&scan)),
            address: self.address.clone(),
        };
        self.call.record::<Self>(deps, finding).await?;
        crate::failpoint::hit(crate::failpoint::AFTER_EFFECT_COMMIT);
        Ok(())
    }
}

/// What the assistant says about a solar finding.
pub fn describe(scan: &SolarScan) -> String {
    let f = &scan.finding;
    if !f.has_solar {
        return format!("no solar panels found (confidence {:.2})", f.confidence);
    }
    let panels = f
        .panel_count
        .map(|n| format!("{n} panels"))
        .unwrap_or_else(|| "panels".into());
    let ownership = serde_json::to_value(f.ownership)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    let installer = f
        .installer
        .as_deref()
        .map(|i| format!(", installer {i}"))
        .unwrap_or_default();
    format!(
        "solar found: {panels}, ownership {ownership}{installer} (confidence {:.2})",
        f.confidence
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::SolarOcrScan;
    use crate::tools::Tool;

    #[test]
    fn an_image_by_https_url_or_inline_with_its_type() {
        assert!(SolarOcrScan::plan(json!({"image_url": "https://x/y.jpg"})).is_ok());
        assert!(SolarOcrScan::plan(json!({})).is_err());
        assert!(SolarOcrScan::plan(json!({"image_base64": "AAAA"})).is_err());
        assert!(SolarOcrScan::plan(json!({"image_url": "file:///etc/passwd"})).is_err());
        assert!(
            SolarOcrScan::plan(json!({"image_base64": "AAAA", "mime_type": "image/png"})).is_ok()
        );
    }
}
