//! `solar_ocr_scan`: a property photo or document through Gemini Vision, one `solar_ocr_scan`
//! usage row per tool call (key `tool_call:{id}`). A registered tool ([`crate::tools`]).
//!
//! Steps: reuse a saved answer if a previous run paid for one; else fetch the image (size-capped)
//! and ask Gemini; then the effects writer saves the answer, updates the property, tags the lead,
//! meters, queues the Discord note and wakes the webhook waiting for this tool call, all in one
//! statement (a missing price fails the job but keeps the paid answer).

use base64::Engine as _;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::{Deps, Job, JobError, effects, writer::ToolEffect};
use crate::{
    providers::{self, gemini::SolarScan},
    tools::{CallContext, Tool},
};

/// What the assistant sends: an image by URL, or inline with its MIME type.
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

impl Tool for SolarOcrScan {
    const NAME: &'static str = "solar_ocr_scan";
    const ALIASES: &'static [&'static str] = &["solar-ocr-scanner", "solar_ocr_scanner"];
    const DESCRIPTION: &'static str =
        "Check a photo or document of the caller's property for rooftop solar panels.";
    const WHEN_TO_USE: &'static str =
        "When the caller shares a photo or document of the property, use the solar_ocr_scan tool.";
    const KIND: &'static str = "solar";
    const METRIC: &'static str = "solar_ocr_scan";
    const PROVIDER: &'static str = providers::gemini::PROVIDER;
    const RUNNING: &'static str =
        "The solar check is running; the result will be ready in a moment.";
    const FAILED: &'static str =
        "The solar check could not read that image; an agent will look at it and call back.";
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
            agent_id: call.agent_id,
            lead_id: call.lead_id,
            tool_call_id: call.tool_call_id.clone(),
            vapi_call_id: call.vapi_call_id.clone(),
            image_url: a.image_url,
            image_base64: a.image_base64,
            mime_type: a.mime_type,
            address: a.address,
            requested_at: call.requested_at,
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
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SolarOcrScan {
    pub agent_id: Uuid,
    pub lead_id: Option<Uuid>,
    pub tool_call_id: String,
    /// The Vapi call it was asked in (absent in jobs queued before it was recorded).
    #[serde(default)]
    pub vapi_call_id: Option<String>,
    pub image_url: Option<String>,
    pub image_base64: Option<String>,
    pub mime_type: Option<String>,
    pub address: Option<String>,
    /// When the webhook asked (it may be waiting for the answer); absent for other enqueuers.
    #[serde(default)]
    pub requested_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl SolarOcrScan {
    pub fn idempotency_key(&self) -> String {
        effects::tool_call_key(&self.tool_call_id)
    }

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
        let (input, output) = deps.config.gemini_usd_per_mtok?;
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
        let key = self.idempotency_key();
        let result = effects::saved_or_ask(deps, self.agent_id, Self::KIND, &key, || async {
            let (image, mime) = self.image(deps).await?;
            let scan = deps
                .providers
                .gemini
                .scan_solar(&image, &mime, self.address.as_deref())
                .await?;
            crate::failpoint::hit(crate::failpoint::AFTER_PROVIDER_ANSWER);
            Ok(json!({"scan": scan, "address": self.address}))
        })
        .await?;
        let scan: SolarScan = serde_json::from_value(result["scan"].clone())
            .map_err(|e| JobError::Permanent(format!("saved solar finding is unreadable: {e}")))?;
        let has_solar = scan.finding.has_solar;
        deps.writer
            .write(ToolEffect {
                agent_id: self.agent_id,
                lead_id: self.lead_id,
                vapi_call_id: self.vapi_call_id.clone(),
                kind: Self::KIND,
                result,
                facts: json!({"has_solar": has_solar}),
                tags: if has_solar { vec!["solar"] } else { Vec::new() },
                metric: Self::METRIC,
                quantity: Decimal::ONE,
                provider_cost_usd: Self::provider_cost(&scan, deps),
                metadata: json!({"tool_call_id": self.tool_call_id, "has_solar": has_solar,
                                 "tokens": scan.usage}),
                discord_note: Some(format!("☀️ Solar check: {}", describe(&scan))),
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
