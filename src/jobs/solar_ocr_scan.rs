//! `solar_ocr_scan`: a property photo or document through Gemini Vision, one `solar_ocr_scan`
//! usage row per tool call (key `tool_call:{id}`).
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
    store::{findings, usage::metric},
};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SolarOcrScan {
    pub agent_id: Uuid,
    pub lead_id: Option<Uuid>,
    pub tool_call_id: String,
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
        if !deps.config.image_fetch_allow_private {
            providers::ensure_public_url(url).await?;
        }
        Ok(providers::fetch_image(&deps.providers.http, url, deps.config.image_max_bytes).await?)
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
        let result = effects::saved_or_ask(deps, self.agent_id, findings::SOLAR, &key, || async {
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
                kind: findings::SOLAR,
                result,
                has_solar: Some(has_solar),
                water_source: None,
                tag: has_solar.then_some("solar"),
                metric: metric::SOLAR_OCR_SCAN,
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
