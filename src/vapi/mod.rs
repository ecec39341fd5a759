//! The Vapi server messages we read (`POST /vapi/webhook`), lenient about fields we do not use.
//!
//! Shapes follow Vapi's OpenAPI `ServerMessage*` schemas; see `../shared/notes/providers.md`.

pub mod content;
pub mod transfer;

pub use content::{CALLER_DETAILS, CallContent, CallerDetails, is_https_url};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// `{"message": {...}}`, the envelope of every server message.
#[derive(Debug, Deserialize)]
pub struct EnvelopeIn {
    pub message: MessageIn,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageIn {
    #[serde(rename = "type")]
    pub kind: String,
    pub call: Option<CallIn>,
    pub phone_number: Option<PhoneNumberIn>,
    pub customer: Option<CustomerIn>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub ended_reason: Option<String>,
    #[serde(default, with = "rust_decimal::serde::arbitrary_precision_option")]
    pub cost: Option<Decimal>,
    #[serde(default, with = "rust_decimal::serde::arbitrary_precision_option")]
    pub duration_seconds: Option<Decimal>,
    pub status: Option<String>,
    pub tool_call_list: Option<Vec<ToolCallIn>>,
    /// The assistant of the call (web and API calls carry no phone number).
    pub assistant: Option<AssistantIn>,
    /// When Vapi sent the message (a number, milliseconds), as it wrote it.
    pub timestamp: Option<serde_json::Number>,
    /// An end-of-call report's `analysis` (summary, structured data, success evaluation).
    pub analysis: Option<AnalysisIn>,
    /// An end-of-call report's `artifact` (transcript, recording, structured outputs).
    pub artifact: Option<ArtifactIn>,
    /// An end-of-call report's `costs[]`, the parts of `cost`.
    pub costs: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallIn {
    pub id: Option<String>,
    pub phone_number_id: Option<String>,
    pub customer: Option<CustomerIn>,
    /// A saved assistant's id (an agent's `vapi_assistant_id`).
    pub assistant_id: Option<String>,
    /// A transient assistant (ours carries `metadata.agent_id`).
    pub assistant: Option<AssistantIn>,
    /// Overrides of a saved assistant (ours carry `variableValues.agent_id`).
    pub assistant_overrides: Option<AssistantIn>,
    /// `inboundPhoneCall`, `outboundPhoneCall`, `webCall`, ...
    #[serde(default, rename = "type")]
    pub call_type: Option<serde_json::Value>,
}

/// A call's `analysis` (report or REST `Call`). Every field is read as any JSON value and
/// validated later ([`CallContent`]): a field of an unexpected type is dropped, never a 400.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisIn {
    pub summary: Option<serde_json::Value>,
    pub structured_data: Option<serde_json::Value>,
    pub success_evaluation: Option<serde_json::Value>,
}

/// The parts of a call's `artifact` we keep (not `messages`, which can be megabytes), read as
/// any JSON value like [`AnalysisIn`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactIn {
    pub transcript: Option<serde_json::Value>,
    pub recording_url: Option<serde_json::Value>,
    /// `{"mono": {"combinedUrl": ...}, "stereoUrl": ...}`, the newer home of the recording.
    pub recording: Option<serde_json::Value>,
    /// Keyed by output id: `{"<id>": {"name": "caller_details", "result": {...}}}`.
    pub structured_outputs: Option<serde_json::Value>,
}

/// The parts of an assistant (or its overrides) that can name our agent.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssistantIn {
    pub id: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub variable_values: Option<serde_json::Value>,
}

/// A way a message names its agent, most specific first (see [`MessageIn::route_keys`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteKey {
    /// `call.phoneNumberId` (or `phoneNumber.id`): inbound and outbound phone calls.
    PhoneNumber(String),
    /// `call.assistantId` (or the assistant's `id`): an agent's own saved assistant.
    Assistant(String),
    /// `agent_id` in the assistant's `metadata` or the overrides' `variableValues`, which our
    /// assistant-request answers carry.
    Agent(uuid::Uuid),
}

#[derive(Debug, Deserialize)]
pub struct PhoneNumberIn {
    pub id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CustomerIn {
    pub number: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ToolCallIn {
    pub id: Option<String>,
}

/// What the webhook needs to know about an `end-of-call-report`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct CallReport {
    pub vapi_call_id: String,
    pub customer_number: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_seconds: Option<Decimal>,
    pub ended_reason: Option<String>,
    pub cost: Option<Decimal>,
}

impl MessageIn {
    /// The call id, when the message is about a call.
    pub fn call_id(&self) -> Option<&str> {
        self.call
            .as_ref()
            .and_then(|c| c.id.as_deref())
            .filter(|id| !id.is_empty())
    }

    /// The tenant key: `call.phoneNumberId`, else `phoneNumber.id`.
    pub fn phone_number_id(&self) -> Option<&str> {
        self.call
            .as_ref()
            .and_then(|c| c.phone_number_id.as_deref())
            .or_else(|| self.phone_number.as_ref().and_then(|p| p.id.as_deref()))
            .filter(|id| !id.is_empty())
    }

    /// Every key that may name the message's agent, in the order they are tried (see
    /// [`route_keys`]).
    pub fn route_keys(&self) -> Vec<RouteKey> {
        let call = self.call.as_ref();
        route_keys(
            self.phone_number_id(),
            call.and_then(|c| c.assistant_id.as_deref()),
            &[
                call.and_then(|c| c.assistant.as_ref()),
                call.and_then(|c| c.assistant_overrides.as_ref()),
                self.assistant.as_ref(),
            ],
        )
    }

    pub fn customer_number(&self) -> Option<&str> {
        self.call
            .as_ref()
            .and_then(|c| c.customer.as_ref())
            .or(self.customer.as_ref())
            .and_then(|c| c.number.as_deref())
    }

    /// The key that makes a redelivery of this message a duplicate. Messages that may
    /// legitimately repeat with different content (transcript updates and the like) are keyed by
    /// a digest of their body, so only byte-identical redeliveries collapse.
    pub fn dedupe_key(&self, body: &[u8]) -> String {
        let call = self.call_id().unwrap_or("-");
        match self.kind.as_str() {
            "end-of-call-report" | "assistant-request" => format!("{}:{call}", self.kind),
            // With Vapi's timestamp when it gives one: a call may pass a status twice
            // (in-progress, forwarding, in-progress again), and a redelivery repeats its stamp.
            "status-update" => match &self.timestamp {
                Some(at) => format!(
                    "status-update:{call}:{}:{at}",
                    self.status.as_deref().unwrap_or("-")
                ),
                None => format!(
                    "status-update:{call}:{}",
                    self.status.as_deref().unwrap_or("-")
                ),
            },
            "tool-calls" => {
                let ids: Vec<&str> = self
                    .tool_call_list
                    .iter()
                    .flatten()
                    .filter_map(|t| t.id.as_deref())
                    .collect();
                if ids.is_empty() {
                    format!("tool-calls:{call}:{}", digest(body))
                } else {
                    format!("tool-calls:{}", ids.join(","))
                }
            }
            other => format!("{other}:{call}:{}", digest(body)),
        }
    }

    /// The call an `end-of-call-report` is about, when it names one (`call` is optional in
    /// Vapi's schema: a report without it is stored and answered, not metered).
    pub fn call_report(&self) -> Option<CallReport> {
        Some(CallReport {
            vapi_call_id: self.call_id()?.to_string(),
            customer_number: self.customer_number().map(str::to_string),
            started_at: self.started_at,
            ended_at: self.ended_at,
            duration_seconds: duration(self.started_at, self.ended_at, self.duration_seconds),
            ended_reason: self.ended_reason.clone(),
            cost: self.cost,
        })
    }
}

/// A call's billable seconds, by one rule on every path (webhook, sync): `endedAt - startedAt`
/// to the millisecond; Vapi's schema has no `durationSeconds`, so it is only a fallback when the
/// timestamps are missing. Timestamps out of order, or a negative fallback, mean "unknown" (the
/// meter job then asks Vapi's API), never a 400.
pub fn duration(
    started_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    fallback: Option<Decimal>,
) -> Option<Decimal> {
    match (started_at, ended_at) {
        (Some(start), Some(end)) => {
            (end >= start).then(|| Decimal::new((end - start).num_milliseconds(), 3))
        }
        _ => fallback.filter(|d| !d.is_sign_negative()),
    }
}

fn digest(body: &[u8]) -> String {
    hex::encode(&Sha256::digest(body)[..12])
}

/// The keys that may name a call's agency, in the order they are tried, one rule for the webhook
/// and the daily sync: an `agent_id` we put in the assistant (`metadata`, or the overrides'
/// `variableValues`: our own answer names the agency outright), then the phone number, then the
/// saved assistant (`assistantId`, or an assistant's `id`).
pub fn route_keys(
    phone_number_id: Option<&str>,
    assistant_id: Option<&str>,
    assistants: &[Option<&AssistantIn>],
) -> Vec<RouteKey> {
    let mut keys = Vec::new();
    for a in assistants.iter().flatten() {
        for bag in [&a.metadata, &a.variable_values].into_iter().flatten() {
            let agent = bag
                .get("agent_id")
                .and_then(|v| v.as_str())
                .and_then(|v| uuid::Uuid::parse_str(v).ok());
            if let Some(agent) = agent.map(RouteKey::Agent)
                && !keys.contains(&agent)
            {
                keys.push(agent);
            }
        }
    }
    if let Some(id) = phone_number_id.filter(|id| !id.is_empty()) {
        keys.push(RouteKey::PhoneNumber(id.to_string()));
    }
    let saved = assistant_id
        .into_iter()
        .chain(assistants.iter().flatten().filter_map(|a| a.id.as_deref()));
    for id in saved.filter(|id| !id.is_empty()) {
        let key = RouteKey::Assistant(id.to_string());
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The message of a webhook body.
    pub(crate) fn parse(json: &str) -> MessageIn {
        serde_json::from_str::<EnvelopeIn>(json)
            .expect("valid message")
            .message
    }

    #[test]
    fn report_duration_comes_from_timestamps_and_cost_stays_exact() {
        let m = parse(
            r#"{"message":{"type":"end-of-call-report","call":{"id":"c1","phoneNumberId":"ph1",
            "customer":{"number":"+19285550100"}},"startedAt":"2026-11-01T10:00:00Z",
            "endedAt":"2026-11-01T10:01:30.500Z","cost":0.1234567890123,"endedReason":"hangup"}}"#,
        );
        let r = m.call_report().expect("valid report");
        assert_eq!(r.duration_seconds, Some(Decimal::new(90_500, 3)));
        assert_eq!(r.cost, Some(Decimal::new(1_234_567_890_123, 13)));
        assert_eq!(m.phone_number_id(), Some("ph1"));
        assert_eq!(r.customer_number.as_deref(), Some("+19285550100"));
    }

    #[test]
    fn timestamps_win_duration_seconds_is_a_fallback_and_disorder_is_unknown() {
        let m = parse(
            r#"{"message":{"type":"end-of-call-report","call":{"id":"c1"},"durationSeconds":42,
            "startedAt":"2026-11-01T10:00:00Z","endedAt":"2026-11-01T10:00:30Z"}}"#,
        );
        let r = m.call_report().expect("a call");
        assert_eq!(r.duration_seconds, Some(Decimal::new(30_000, 3)));
        let m = parse(
            r#"{"message":{"type":"end-of-call-report","call":{"id":"c1"},"durationSeconds":42}}"#,
        );
        assert_eq!(
            m.call_report().expect("a call").duration_seconds,
            Some(Decimal::from(42))
        );
        let m = parse(
            r#"{"message":{"type":"end-of-call-report","call":{"id":"c1"},
            "startedAt":"2026-11-01T10:00:00Z","endedAt":"2026-11-01T09:00:00Z"}}"#,
        );
        assert_eq!(m.call_report().expect("a call").duration_seconds, None);
        let m = parse(r#"{"message":{"type":"end-of-call-report","endedReason":"x"}}"#);
        assert!(m.call_report().is_none(), "no call: nothing to meter");
    }

    #[test]
    fn dedupe_keys_separate_what_differs() {
        let a =
            parse(r#"{"message":{"type":"status-update","status":"ringing","call":{"id":"c"}}}"#);
        let b = parse(r#"{"message":{"type":"status-update","status":"ended","call":{"id":"c"}}}"#);
        assert_ne!(a.dedupe_key(b"x"), b.dedupe_key(b"x"));
        let t =
            parse(r#"{"message":{"type":"tool-calls","toolCallList":[{"id":"t1"},{"id":"t2"}]}}"#);
        assert_eq!(t.dedupe_key(b"anything"), "tool-calls:t1,t2");
        let u = parse(r#"{"message":{"type":"speech-update","call":{"id":"c"}}}"#);
        assert_ne!(u.dedupe_key(b"one"), u.dedupe_key(b"two"));
    }
}
