//! The Vapi REST API for the daily reconciliation: one call by id, or every call of a phone
//! number, an assistant or the whole organisation created in a time window. Costs are read
//! exactly, never through `f64`.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, de::DeserializeOwned};

use super::{CircuitBreaker, ProviderError, classify_reqwest, read_at_most, status_error};
use crate::config::Secret;

/// The provider name in errors.
pub const PROVIDER: &str = "vapi";
/// Calls asked for per `GET /call` page (Vapi's maximum).
pub const PAGE_LIMIT: usize = 1000;
/// Pages followed before giving up (a million calls in one window is not a real tenant).
const MAX_PAGES: usize = 1000;
/// The most of one response read: a page over it is asked again with fewer calls.
const MAX_PAGE_BYTES: usize = 64 * 1024 * 1024;

/// A call as `GET /call` and `GET /call/{id}` return it (the fields we use).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallOut {
    pub id: String,
    pub phone_number_id: Option<String>,
    pub customer: Option<CustomerOut>,
    pub status: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub ended_reason: Option<String>,
    /// USD, exact.
    #[serde(default, with = "rust_decimal::serde::arbitrary_precision_option")]
    pub cost: Option<Decimal>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// A saved assistant's id; the assistant itself (transient: ours carries
    /// `metadata.agent_id`) and its overrides: what routes a call without a number.
    pub assistant_id: Option<String>,
    pub assistant: Option<crate::vapi::AssistantIn>,
    pub assistant_overrides: Option<crate::vapi::AssistantIn>,
    /// What the call said ([`CallOut::content`]): its `type`, `analysis`,
    /// `artifact` (transcript, recording; not `messages`) and `costs[]`.
    #[serde(default, rename = "type")]
    pub call_type: Option<serde_json::Value>,
    pub analysis: Option<crate::vapi::AnalysisIn>,
    pub artifact: Option<crate::vapi::ArtifactIn>,
    pub costs: Option<serde_json::Value>,
}

impl CallOut {
    /// The keys that may name the call's agency, by the webhook's own rule.
    pub fn route_keys(&self) -> Vec<crate::vapi::RouteKey> {
        crate::vapi::route_keys(
            self.phone_number_id.as_deref(),
            self.assistant_id.as_deref(),
            &[self.assistant.as_ref(), self.assistant_overrides.as_ref()],
        )
    }

    /// The call's facts as an `end-of-call-report` would give them.
    pub fn report(&self) -> crate::vapi::CallReport {
        crate::vapi::CallReport {
            vapi_call_id: self.id.clone(),
            customer_number: self.customer.as_ref().and_then(|c| c.number.clone()),
            started_at: self.started_at,
            ended_at: self.ended_at,
            duration_seconds: crate::vapi::duration(self.started_at, self.ended_at, None),
            ended_reason: self.ended_reason.clone(),
            cost: self.cost,
        }
    }

    /// What the call said, as an `end-of-call-report` would give it.
    pub fn content(&self) -> crate::vapi::CallContent {
        crate::vapi::CallContent::from_parts(
            self.call_type.as_ref(),
            self.analysis.as_ref(),
            self.artifact.as_ref(),
            self.costs.as_ref(),
        )
    }
}

/// The caller.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CustomerOut {
    pub number: Option<String>,
}

/// The Vapi REST client; cheap to share behind an `Arc`.
pub struct VapiClient {
    base_url: String,
    api_key: Option<Secret>,
    http: reqwest::Client,
    breaker: CircuitBreaker,
}

/// Whose calls to list: a phone number's, an assistant's (web calls have no number), or the
/// whole organisation's (the daily sync, which routes each call itself).
#[derive(Debug, Clone, Copy)]
pub enum CallsOf<'a> {
    PhoneNumber(&'a str),
    Assistant(&'a str),
    Org,
}

impl VapiClient {
    /// `base_url` like `https://api.vapi.ai`. A missing key makes every call fail permanently.
    pub fn new(
        base_url: String,
        api_key: Option<Secret>,
        http: reqwest::Client,
        breaker: CircuitBreaker,
    ) -> Self {
        Self {
            base_url,
            api_key,
            http,
            breaker,
        }
    }

    /// `GET /call/{id}`; 404 is permanent.
    pub async fn get_call(&self, id: &str) -> Result<CallOut, ProviderError> {
        if id.trim().is_empty() {
            return Err(ProviderError::permanent(PROVIDER, "empty call id"));
        }
        let url = self.url(&["call", id])?;
        self.get_json(url, &[]).await
    }

    /// `GET /call?phoneNumberId=..` (or `assistantId=..`, or neither for the whole organisation)
    /// `&createdAtGe=..&createdAtLt=..&limit=1000` (a bare JSON array). The endpoint has no
    /// cursor and states no order, so a full page does not say which calls it left out: the
    /// window is split in two and each half asked again, until every window comes back short.
    /// Calls carry their artifacts (a long call's transcript and messages run to megabytes), so a
    /// page over [`MAX_PAGE_BYTES`] is not read: the window is asked again with a quarter of the
    /// `limit`, down to one call a page. Nothing is lost whatever order Vapi lists in; calls are
    /// deduplicated by id and returned oldest first.
    pub async fn list_calls(
        &self,
        of: CallsOf<'_>,
        created_at_ge: DateTime<Utc>,
        created_at_lt: DateTime<Utc>,
    ) -> Result<Vec<CallOut>, ProviderError> {
        let url = self.url(&["call"])?;
        let mut seen: HashMap<String, CallOut> = HashMap::new();
        let mut windows = vec![(created_at_ge, created_at_lt, PAGE_LIMIT)];
        let mut requests = 0;
        while let Some((ge, lt, limit)) = windows.pop() {
            if lt <= ge {
                continue;
            }
            requests += 1;
            if requests > MAX_PAGES {
                return Err(ProviderError::permanent(
                    PROVIDER,
                    format!("more than {MAX_PAGES} pages of calls; narrow the window"),
                ));
            }
            let mut query = vec![
                ("createdAtGe", timestamp(ge)),
                ("createdAtLt", timestamp(lt)),
                ("limit", limit.to_string()),
            ];
            match of {
                CallsOf::PhoneNumber(id) => query.insert(0, ("phoneNumberId", id.to_string())),
                CallsOf::Assistant(id) => query.insert(0, ("assistantId", id.to_string())),
                CallsOf::Org => {}
            }
            let Some(body) = self.get_body(url.clone(), &query, MAX_PAGE_BYTES).await? else {
                if limit == 1 {
                    return Err(ProviderError::permanent(
                        PROVIDER,
                        format!("one call is over {MAX_PAGE_BYTES} bytes"),
                    ));
                }
                tracing::info!(
                    limit,
                    "a page of calls over {MAX_PAGE_BYTES} bytes: asking for fewer"
                );
                windows.push((ge, lt, (limit / 4).max(1)));
                continue;
            };
            let page: Vec<CallOut> = parse(&body)?;
            if page.len() < limit {
                for call in page {
                    seen.entry(call.id.clone()).or_insert(call);
                }
                continue;
            }
            // Full: this window holds more than one page. Halve it (whole milliseconds, as the
            // API's timestamps are) and ask for each half.
            let span = (lt - ge).num_milliseconds();
            if span <= 1 {
                return Err(ProviderError::permanent(
                    PROVIDER,
                    format!("cannot page: {limit} calls created within one millisecond"),
                ));
            }
            let middle = ge + TimeDelta::milliseconds(span / 2);
            windows.push((middle, lt, limit));
            windows.push((ge, middle, limit));
        }
        Ok(oldest_first(seen))
    }

    fn url(&self, segments: &[&str]) -> Result<reqwest::Url, ProviderError> {
        let mut url = reqwest::Url::parse(&self.base_url)
            .map_err(|e| ProviderError::permanent(PROVIDER, format!("invalid base URL: {e}")))?;
        url.path_segments_mut()
            .map_err(|()| ProviderError::permanent(PROVIDER, "invalid base URL"))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        url: reqwest::Url,
        query: &[(&str, String)],
    ) -> Result<T, ProviderError> {
        match self.get_body(url, query, MAX_PAGE_BYTES).await? {
            Some(body) => parse(&body),
            None => Err(ProviderError::permanent(
                PROVIDER,
                format!("response over {MAX_PAGE_BYTES} bytes"),
            )),
        }
    }

    /// The body of a `GET`, or `None` when it is over `max_bytes` (not read).
    async fn get_body(
        &self,
        url: reqwest::Url,
        query: &[(&str, String)],
        max_bytes: usize,
    ) -> Result<Option<Vec<u8>>, ProviderError> {
        let Some(key) = &self.api_key else {
            return Err(ProviderError::permanent(
                PROVIDER,
                "API key not configured (VAPI_API_KEY)",
            ));
        };
        self.breaker.check()?;
        let result = async {
            let response = self
                .http
                .get(url)
                .query(query)
                .bearer_auth(key.expose())
                .send()
                .await
                .map_err(|e| classify_reqwest(PROVIDER, e))?;
            if !response.status().is_success() {
                return Err(status_error(PROVIDER, response).await);
            }
            read_at_most(PROVIDER, response, max_bytes).await
        }
        .await;
        self.breaker.record(&result);
        result
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProviderError> {
    serde_json::from_slice(body)
        .map_err(|e| ProviderError::permanent(PROVIDER, format!("malformed response: {e}")))
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn oldest_first(calls: HashMap<String, CallOut>) -> Vec<CallOut> {
    let mut calls: Vec<CallOut> = calls.into_values().collect();
    calls.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    calls
}

/// Puts `content` into a live call through its `call.monitor.controlUrl` (Vapi's
/// `ClientInboundMessageAddMessage`): a system message the assistant answers at once. No API
/// key: the control URL is the credential, and it is never logged.
pub async fn add_message(
    http: &reqwest::Client,
    control_url: &str,
    content: &str,
) -> Result<(), ProviderError> {
    let url = reqwest::Url::parse(control_url)
        .ok()
        .filter(|u| matches!(u.scheme(), "https" | "http"))
        .ok_or_else(|| ProviderError::permanent(PROVIDER, "control URL is not http(s)"))?;
    let body = serde_json::json!({
        "type": "add-message",
        "message": {"role": "system", "content": content},
        "triggerResponseEnabled": true,
    });
    let response = http
        .post(url)
        .json(&body)
        .send()
        .await
        .map_err(|e| classify_reqwest(PROVIDER, e))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(status_error(PROVIDER, response).await)
    }
}
