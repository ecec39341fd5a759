//! The Vapi server messages we read (`POST /vapi/webhook`), lenient about fields we do not use.
//!
//! Shapes follow Vapi's OpenAPI `ServerMessage*` schemas; see `../shared/notes/providers.md`.

pub mod transfer;

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
    #[serde(default)]
    pub call: Option<CallIn>,
    #[serde(default)]
    pub phone_number: Option<PhoneNumberIn>,
    #[serde(default)]
    pub customer: Option<CustomerIn>,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub ended_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub ended_reason: Option<String>,
    #[serde(default, with = "rust_decimal::serde::arbitrary_precision_option")]
    pub cost: Option<Decimal>,
    #[serde(default, with = "rust_decimal::serde::arbitrary_precision_option")]
    pub duration_seconds: Option<Decimal>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub tool_call_list: Option<Vec<ToolCallIn>>,
    /// The assistant of the call (web and API calls carry no phone number).
    #[serde(default)]
    pub assistant: Option<AssistantIn>,
    /// When Vapi sent the message (a number, milliseconds), as it wrote it.
    #[serde(default)]
    pub timestamp: Option<serde_json::Number>,
    /// An end-of-call report's `analysis` (summary, structured data, success evaluation).
    #[serde(default)]
    pub analysis: Option<AnalysisIn>,
    /// An end-of-call report's `artifact` (transcript, recording, structured outputs).
    #[serde(default)]
    pub artifact: Option<ArtifactIn>,
    /// An end-of-call report's `costs[]`, the parts of `cost`.
    #[serde(default)]
    pub costs: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallIn {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub phone_number_id: Option<String>,
    #[serde(default)]
    pub customer: Option<CustomerIn>,
    /// A saved assistant's id (an agent's `vapi_assistant_id`).
    #[serde(default)]
    pub assistant_id: Option<String>,
    /// A transient assistant (ours carries `metadata.agent_id`).
    #[serde(default)]
    pub assistant: Option<AssistantIn>,
    /// Overrides of a saved assistant (ours carry `variableValues.agent_id`).
    #[serde(default)]
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
    #[serde(default)]
    pub summary: Option<serde_json::Value>,
    #[serde(default)]
    pub structured_data: Option<serde_json::Value>,
    #[serde(default)]
    pub success_evaluation: Option<serde_json::Value>,
}

/// The parts of a call's `artifact` we keep (not `messages`, which can be megabytes), read as
/// any JSON value like [`AnalysisIn`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactIn {
    #[serde(default)]
    pub transcript: Option<serde_json::Value>,
    #[serde(default)]
    pub recording_url: Option<serde_json::Value>,
    /// `{"mono": {"combinedUrl": ...}, "stereoUrl": ...}`, the newer home of the recording.
    #[serde(default)]
    pub recording: Option<serde_json::Value>,
    /// Keyed by output id: `{"<id>": {"name": "caller_details", "result": {...}}}`.
    #[serde(default)]
    pub structured_outputs: Option<serde_json::Value>,
}

/// The parts of an assistant (or its overrides) that can name our agent.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssistantIn {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    #[serde(default)]
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
    #[serde(default)]
    pub id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CustomerIn {
    #[serde(default)]
    pub number: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ToolCallIn {
    #[serde(default)]
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

impl CallReport {
    /// The same facts from Vapi's REST API (`GET /call/{id}`).
    pub fn from_api(call: &crate::providers::vapi::CallOut) -> Self {
        let duration_seconds = duration(call.started_at, call.ended_at, None);
        Self {
            vapi_call_id: call.id.clone(),
            customer_number: call.customer.as_ref().and_then(|c| c.number.clone()),
            started_at: call.started_at,
            ended_at: call.ended_at,
            duration_seconds,
            ended_reason: call.ended_reason.clone(),
            cost: call.cost,
        }
    }
}

/// The name of our transient assistant's structured output ([`crate::assistant`]).
pub const CALLER_DETAILS: &str = "caller_details";

/// Upper bounds on what is kept of a call's text (a 60-minute transcript is ~60 KB).
const MAX_TRANSCRIPT_BYTES: usize = 1024 * 1024;
const MAX_TEXT_BYTES: usize = 64 * 1024;
const MAX_URL_BYTES: usize = 2048;

/// What a call said, as kept in `call_content`: validated, bounded, every part optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallContent {
    /// `inboundPhoneCall`, `outboundPhoneCall`, `webCall`, `vapi.websocketCall`, ...
    pub call_type: Option<String>,
    pub summary: Option<String>,
    /// `analysis.structuredData` merged with the `caller_details` output's result (which wins
    /// on a shared key); always a JSON object.
    pub structured_data: Option<serde_json::Value>,
    /// Vapi's evaluation, as text (a rubric may give `true`, `8` or `"Pass"`).
    pub success_evaluation: Option<String>,
    pub transcript: Option<String>,
    /// As Vapi gave it: shown as a link only when it is `https` ([`is_https_url`]).
    pub recording_url: Option<String>,
    /// `costs[]`, exact numbers as Vapi wrote them; always a JSON array.
    pub costs: Option<serde_json::Value>,
}

/// Who called, from a call's structured data: what fills a lead's empty fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallerDetails {
    pub name: Option<String>,
    pub email: Option<String>,
    pub address: Option<String>,
}

impl CallerDetails {
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.email.is_none() && self.address.is_none()
    }
}

impl CallContent {
    /// From a call's parts, wherever they come from (report or REST `Call`).
    pub fn from_parts(
        call_type: Option<&serde_json::Value>,
        analysis: Option<&AnalysisIn>,
        artifact: Option<&ArtifactIn>,
        costs: Option<&serde_json::Value>,
    ) -> Self {
        let analysis = analysis.cloned().unwrap_or_default();
        let artifact = artifact.cloned().unwrap_or_default();
        let mut structured = match analysis.structured_data {
            Some(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        if let Some(serde_json::Value::Object(details)) =
            caller_details_result(artifact.structured_outputs.as_ref())
        {
            structured.extend(details);
        }
        let recording_url = text(artifact.recording_url.as_ref(), MAX_URL_BYTES).or_else(|| {
            let r = artifact.recording.as_ref()?;
            text(r.pointer("/mono/combinedUrl"), MAX_URL_BYTES)
                .or_else(|| text(r.get("stereoUrl"), MAX_URL_BYTES))
        });
        let success_evaluation = match analysis.success_evaluation {
            Some(serde_json::Value::Bool(b)) => Some(b.to_string()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            other => text(other.as_ref(), MAX_TEXT_BYTES),
        };
        Self {
            call_type: text(call_type, 64),
            summary: text(analysis.summary.as_ref(), MAX_TEXT_BYTES),
            structured_data: (!structured.is_empty())
                .then_some(serde_json::Value::Object(structured)),
            success_evaluation,
            transcript: text(artifact.transcript.as_ref(), MAX_TRANSCRIPT_BYTES),
            recording_url,
            costs: costs
                .filter(|c| c.as_array().is_some_and(|a| !a.is_empty()))
                .cloned(),
        }
    }

    /// The same from Vapi's REST API (`GET /call`, `GET /call/{id}`).
    pub fn from_api(call: &crate::providers::vapi::CallOut) -> Self {
        Self::from_parts(
            call.call_type.as_ref(),
            call.analysis.as_ref(),
            call.artifact.as_ref(),
            call.costs.as_ref(),
        )
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The caller's name, email and property address, when the structured data names them
    /// (our `caller_details` keys, or the usual names a saved assistant's schema uses).
    pub fn caller_details(&self) -> CallerDetails {
        let Some(data) = self.structured_data.as_ref() else {
            return CallerDetails::default();
        };
        let first = |keys: &[&str], max: usize| keys.iter().find_map(|k| text(data.get(*k), max));
        let email = first(
            &["email", "caller_email", "callerEmail", "emailAddress"],
            254,
        )
        .filter(|e| looks_like_email(e));
        CallerDetails {
            name: first(
                &["caller_name", "callerName", "name", "full_name", "fullName"],
                200,
            ),
            email,
            address: first(
                &[
                    "property_address",
                    "propertyAddress",
                    "address",
                    "caller_address",
                ],
                500,
            ),
        }
    }
}

impl MessageIn {
    /// What an `end-of-call-report` says about its call.
    pub fn call_content(&self) -> CallContent {
        CallContent::from_parts(
            self.call.as_ref().and_then(|c| c.call_type.as_ref()),
            self.analysis.as_ref(),
            self.artifact.as_ref(),
            self.costs.as_ref(),
        )
    }
}

/// The `caller_details` output's result among `artifact.structuredOutputs` (keyed by output
/// id, each `{name, result}`; keyed by name is accepted too).
fn caller_details_result(outputs: Option<&serde_json::Value>) -> Option<serde_json::Value> {
    let outputs = outputs?.as_object()?;
    if let Some(by_name) = outputs.get(CALLER_DETAILS) {
        return Some(by_name.get("result").unwrap_or(by_name).clone());
    }
    outputs
        .values()
        .find(|o| o.get("name").and_then(|n| n.as_str()) == Some(CALLER_DETAILS))
        .and_then(|o| o.get("result"))
        .cloned()
}

/// A non-blank string, trimmed and cut to at most `max` bytes (at a character boundary).
fn text(v: Option<&serde_json::Value>, max: usize) -> Option<String> {
    let s = v?.as_str()?.trim();
    if s.is_empty() {
        return None;
    }
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Some(s[..end].to_string())
}

fn looks_like_email(e: &str) -> bool {
    match e.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !e
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
                && !domain.contains('@')
        }
        None => false,
    }
}

/// Whether `url` may be shown as a link: an absolute `https` URL with a host (a recording URL is
/// caller-reachable data: `javascript:` and the like are shown as text, never linked).
pub fn is_https_url(url: &str) -> bool {
    url::Url::parse(url)
        .is_ok_and(|u| u.scheme() == "https" && u.host_str().is_some_and(|h| !h.is_empty()))
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
mod tests {
    use super::*;

    fn parse(json: &str) -> MessageIn {
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

    #[test]
    fn content_merges_structured_data_and_reads_the_recording_wherever_it_is() {
        let m = parse(
            r#"{"message":{"type":"end-of-call-report","call":{"id":"c1","type":"webCall"},
            "analysis":{"summary":"  A quote.  ","structuredData":{"name":"Old","x":1},"successEvaluation":7},
            "artifact":{"transcript":"","recording":{"mono":{"combinedUrl":"https://r.example/m.wav"}},
              "structuredOutputs":{"id-1":{"name":"other","result":{"name":"No"}},
                                   "id-2":{"name":"caller_details","result":{"caller_name":"Ana","email":"ana@example.com","property_address":"1 A St"}}}},
            "costs":[{"type":"vapi","cost":0.1}]}}"#,
        );
        let c = m.call_content();
        assert_eq!(c.call_type.as_deref(), Some("webCall"));
        assert_eq!(c.summary.as_deref(), Some("A quote."));
        assert_eq!(c.success_evaluation.as_deref(), Some("7"));
        assert_eq!(c.transcript, None, "blank is absent");
        assert_eq!(c.recording_url.as_deref(), Some("https://r.example/m.wav"));
        let data = c.structured_data.clone().expect("data");
        assert_eq!(
            (data["name"].as_str(), data["x"].as_i64()),
            (Some("Old"), Some(1))
        );
        let who = c.caller_details();
        assert_eq!(who.name.as_deref(), Some("Ana"), "caller_name before name");
        assert_eq!(who.email.as_deref(), Some("ana@example.com"));
        assert_eq!(who.address.as_deref(), Some("1 A St"));
        assert!(c.costs.is_some());
        // Fields of an unexpected type are dropped, not a failed parse.
        let odd = parse(
            r#"{"message":{"type":"end-of-call-report","call":{"id":"c1","type":5},
            "analysis":{"summary":["x"],"structuredData":"text"},"artifact":{"recordingUrl":{"a":1}},"costs":{}}}"#,
        );
        assert!(odd.call_content().is_empty());
    }

    #[test]
    fn only_https_urls_with_a_host_are_links_and_emails_look_like_emails() {
        assert!(is_https_url("https://storage.vapi.ai/a.wav"));
        for bad in [
            "javascript:alert(1)",
            "http://storage.vapi.ai/a.wav",
            "data:text/html,<script>",
            "//evil.example/a",
            "https:/",
            "",
        ] {
            assert!(!is_https_url(bad), "{bad}");
        }
        assert!(looks_like_email("a.b@example.co"));
        for bad in [
            "not an email",
            "a@b",
            "@example.com",
            "a b@example.com",
            "<a@b.c>",
        ] {
            assert!(!looks_like_email(bad), "{bad}");
        }
    }
}
