//! Gemini `generateContent`: is there rooftop solar in this image? One image in, a validated
//! [`SolarScan`] (finding, token usage, model version) out.

use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::Secret;
use crate::providers::{
    CircuitBreaker, MAX_RESPONSE_BYTES, ProviderError, classify_status, excerpt, exchange,
    retry_after_header, seconds,
};

/// The provider name in errors.
pub const PROVIDER: &str = "gemini";

/// Who holds the panels, as the model reads it from the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ownership {
    /// Paid for and owned by the homeowner.
    Owned,
    /// Leased from a solar company (or a power purchase agreement).
    Leased,
    /// Bought on a loan, possibly with a lien.
    Financed,
    /// Not determinable from the image.
    Unknown,
}

/// The model's validated answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SolarFinding {
    pub has_solar: bool,
    pub panel_count: Option<u32>,
    pub ownership: Ownership,
    pub installer: Option<String>,
    /// 0.0 to 1.0.
    pub confidence: f64,
}

/// Token counts from `usageMetadata` (the provider's cost). `total_tokens` includes any
/// "thinking" tokens, which are billed at the output rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub prompt_tokens: u64,
    pub candidates_tokens: u64,
    pub total_tokens: u64,
}

/// One paid scan: save it before anything else can fail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SolarScan {
    pub finding: SolarFinding,
    pub usage: TokenUsage,
    pub model_version: Option<String>,
}

/// The Gemini client; cheap to share behind an `Arc`.
pub struct GeminiClient {
    base_url: String,
    api_key: Option<Secret>,
    model: String,
    http: reqwest::Client,
    breaker: CircuitBreaker,
}

const PROMPT: &str = "You are inspecting a photo or aerial image of a home for an insurance agency. \
Answer only from what is visible. Are there rooftop solar panels? If so, estimate how many panels \
(null if you cannot count them). If a sign, sticker or document in the image shows whether the \
system is owned, leased or financed, say so; otherwise answer \"unknown\". Give the installer's \
name only if it is legible in the image, else null. confidence is your confidence from 0 to 1 in \
has_solar.";

impl GeminiClient {
    /// `base_url` like `https://generativelanguage.googleapis.com`; `model` like
    /// `gemini-2.5-flash` (a leading `models/` is accepted). A missing key makes every call
    /// fail permanently.
    pub fn new(
        base_url: String,
        api_key: Option<Secret>,
        model: String,
        http: reqwest::Client,
        breaker: CircuitBreaker,
    ) -> Self {
        Self {
            base_url,
            api_key,
            model,
            http,
            breaker,
        }
    }

    /// Sends the image inline (base64 `inline_data`) with a prompt about rooftop solar panels,
    /// asking for JSON under a response schema, and validates the answer.
    pub async fn scan_solar(
        &self,
        image: &[u8],
        mime_type: &str,
        address: Option<&str>,
    ) -> Result<SolarScan, ProviderError> {
        let Some(key) = &self.api_key else {
            return Err(ProviderError::permanent(
                PROVIDER,
                "API key not configured (GEMINI_API_KEY)",
            ));
        };
        if image.is_empty() {
            return Err(ProviderError::permanent(PROVIDER, "empty image"));
        }
        self.breaker.check()?;
        let result = self.send(key, image, mime_type, address).await;
        self.breaker.record(&result);
        result
    }

    async fn send(
        &self,
        key: &Secret,
        image: &[u8],
        mime_type: &str,
        address: Option<&str>,
    ) -> Result<SolarScan, ProviderError> {
        let model = self.model.trim().trim_start_matches("models/");
        let url = format!(
            "{}/v1beta/models/{model}:generateContent",
            self.base_url.trim_end_matches('/')
        );
        let request = self
            .http
            .post(url)
            .header("x-goog-api-key", key.expose())
            .json(&request_body(image, mime_type, address));
        let (status, headers, body) = exchange(PROVIDER, request, MAX_RESPONSE_BYTES).await?;
        if !status.is_success() {
            return Err(classify_error(status, &headers, &body));
        }
        parse_response(&body)
    }
}

fn request_body(image: &[u8], mime_type: &str, address: Option<&str>) -> Value {
    let mut prompt = PROMPT.to_string();
    if let Some(address) = address.map(str::trim).filter(|a| !a.is_empty()) {
        let address: String = address.chars().take(200).collect();
        prompt.push_str(&format!(
            " The property's address, for context only: {address:?}."
        ));
    }
    json!({
        "contents": [{
            "role": "user",
            "parts": [
                {"inline_data": {"mime_type": mime_type, "data": base64::engine::general_purpose::STANDARD.encode(image)}},
                {"text": prompt},
            ],
        }],
        "generationConfig": {
            "responseMimeType": "application/json",
            "responseSchema": {
                "type": "OBJECT",
                "properties": {
                    "has_solar": {"type": "BOOLEAN"},
                    "panel_count": {"type": "INTEGER", "nullable": true},
                    "ownership": {
                        "type": "STRING",
                        "enum": ["owned", "leased", "financed", "unknown"],
                    },
                    "installer": {"type": "STRING", "nullable": true},
                    "confidence": {"type": "NUMBER"},
                },
                "required": ["has_solar", "ownership", "confidence"],
            },
            "temperature": 0,
        },
    })
}

/// 400/403/404 permanent; 429 transient (RetryInfo or Retry-After) unless a per-day quota ran
/// out; 5xx transient.
fn classify_error(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
) -> ProviderError {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let error = &parsed["error"];
    let message = match (error["status"].as_str(), error["message"].as_str()) {
        (Some(s), Some(m)) => format!("{s}: {m}"),
        (None, Some(m)) => m.to_string(),
        _ => String::from_utf8_lossy(body).into_owned(),
    };
    if status != reqwest::StatusCode::TOO_MANY_REQUESTS {
        return classify_status(PROVIDER, status, headers, &message);
    }
    let details = error["details"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let per_day = details
        .iter()
        .filter(|d| type_is(d, "google.rpc.QuotaFailure"))
        .flat_map(|d| d["violations"].as_array().into_iter().flatten())
        .any(|v| v["quotaId"].as_str().is_some_and(|q| q.contains("PerDay")));
    if per_day {
        return ProviderError::permanent(
            PROVIDER,
            format!("daily quota exhausted: {}", excerpt(&message)),
        );
    }
    let retry_info = details
        .iter()
        .filter(|d| type_is(d, "google.rpc.RetryInfo"))
        .find_map(|d| d["retryDelay"].as_str().and_then(parse_retry_delay));
    ProviderError::Transient {
        provider: PROVIDER,
        reason: format!("HTTP 429: {}", excerpt(&message)),
        retry_after: retry_info.or_else(|| retry_after_header(headers)),
    }
}

fn type_is(detail: &Value, name: &str) -> bool {
    detail["@type"].as_str().is_some_and(|t| t.ends_with(name))
}

/// A protobuf JSON duration such as `"2s"` or `"1.5s"`.
fn parse_retry_delay(text: &str) -> Option<Duration> {
    seconds(text.trim().strip_suffix('s')?.parse().ok()?)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateResponse {
    #[serde(default)]
    candidates: Vec<Candidate>,
    prompt_feedback: Option<PromptFeedback>,
    usage_metadata: Option<UsageMetadata>,
    model_version: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    content: Option<Content>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Content {
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Deserialize)]
struct Part {
    text: Option<String>,
    #[serde(default)]
    thought: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    block_reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    total_token_count: Option<u64>,
}

/// The answer as the model wrote it, before validation.
#[derive(Deserialize)]
struct RawFinding {
    has_solar: Option<bool>,
    panel_count: Option<f64>,
    ownership: Option<String>,
    installer: Option<String>,
    confidence: Option<f64>,
}

fn parse_response(body: &[u8]) -> Result<SolarScan, ProviderError> {
    let bad = |reason: String| ProviderError::permanent(PROVIDER, reason);
    let response: GenerateResponse = serde_json::from_slice(body)
        .map_err(|e| bad(format!("malformed generateContent response: {e}")))?;
    if let Some(reason) = response.prompt_feedback.and_then(|f| f.block_reason) {
        return Err(bad(format!("prompt blocked: {reason}")));
    }
    let candidate = response
        .candidates
        .into_iter()
        .next()
        .ok_or_else(|| bad("no candidates in the response".into()))?;
    if let Some(reason) = candidate.finish_reason.filter(|r| r != "STOP") {
        return Err(bad(format!("generation stopped: finishReason {reason}")));
    }
    let text: String = candidate
        .content
        .map(|c| c.parts)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| !p.thought)
        .filter_map(|p| p.text)
        .collect();
    let finding = validate(&text).map_err(bad)?;
    let usage = response.usage_metadata.map_or(
        TokenUsage {
            prompt_tokens: 0,
            candidates_tokens: 0,
            total_tokens: 0,
        },
        |u| TokenUsage {
            prompt_tokens: u.prompt_token_count,
            candidates_tokens: u.candidates_token_count,
            total_tokens: u
                .total_token_count
                .unwrap_or(u.prompt_token_count + u.candidates_token_count),
        },
    );
    Ok(SolarScan {
        finding,
        usage,
        model_version: response.model_version,
    })
}

fn validate(text: &str) -> Result<SolarFinding, String> {
    let text = text.trim();
    let text = text
        .strip_prefix("```json")
        .and_then(|t| t.strip_suffix("```"))
        .unwrap_or(text);
    if text.trim().is_empty() {
        return Err("empty answer text".into());
    }
    let raw: RawFinding =
        serde_json::from_str(text).map_err(|e| format!("answer is not the expected JSON: {e}"))?;
    let has_solar = raw.has_solar.ok_or("answer lacks has_solar")?;
    let ownership = match raw.ownership.as_deref().map(str::trim) {
        None => return Err("answer lacks ownership".into()),
        Some(o) => serde_json::from_value(Value::String(o.to_ascii_lowercase()))
            .map_err(|_| format!("answer has an unknown ownership {o:?}"))?,
    };
    let confidence = raw.confidence.ok_or("answer lacks confidence")?;
    if !(0.0..=1.0).contains(&confidence) {
        return Err(format!("confidence {confidence} is outside 0..=1"));
    }
    let panel_count = match raw.panel_count {
        None => None,
        Some(n) if n >= 0.0 && n.fract() == 0.0 && n <= f64::from(u32::MAX) => Some(n as u32),
        Some(n) => return Err(format!("panel_count {n} is not a count")),
    };
    let installer = raw
        .installer
        .map(|i| i.trim().to_string())
        .filter(|i| !i.is_empty());
    Ok(SolarFinding {
        has_solar,
        panel_count,
        ownership,
        installer,
        confidence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_are_validated() {
        let ok = validate(r#"{"has_solar":true,"panel_count":18,"ownership":"Leased","installer":" SunRun ","confidence":0.9}"#)
            .expect("valid");
        assert_eq!(ok.panel_count, Some(18));
        assert_eq!(ok.ownership, Ownership::Leased);
        assert_eq!(ok.installer.as_deref(), Some("SunRun"));
        assert!(validate(r#"{"has_solar":false,"ownership":"unknown","confidence":1.2}"#).is_err());
        assert!(validate(r#"{"ownership":"owned","confidence":0.5}"#).is_err());
        assert!(validate(r#"{"has_solar":true,"ownership":"rented","confidence":0.5}"#).is_err());
        assert!(
            validate(r#"{"has_solar":true,"panel_count":-1,"ownership":"owned","confidence":0.5}"#)
                .is_err()
        );
        assert!(parse_retry_delay("1.5s") == Some(Duration::from_millis(1500)));
    }
}
