//! What a call said (`call_content`): summary, structured data, transcript, recording, costs,
//! read from an `end-of-call-report` or from Vapi's REST API, validated and bounded.

use super::{AnalysisIn, ArtifactIn, MessageIn};

/// The name of our transient assistant's structured output ([`crate::http::assistant`]).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vapi::tests::parse;

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
