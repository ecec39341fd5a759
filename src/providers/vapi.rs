//! The Vapi REST API for the daily reconciliation: one call by id, or every call of a phone
//! number created in a time window. Costs are read exactly, never through `f64`.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, de::DeserializeOwned};

use super::{CircuitBreaker, ProviderError, classify_reqwest, read_limited, status_error};
use crate::config::Secret;

/// The provider name in errors.
pub const PROVIDER: &str = "vapi";
/// Calls asked for per `GET /call` page (Vapi's maximum).
pub const PAGE_LIMIT: usize = 1000;
/// Pages followed before giving up (a million calls in one window is not a real tenant).
const MAX_PAGES: usize = 1000;
/// A page of 1000 full call objects (transcripts, messages) can be large.
const MAX_PAGE_BYTES: usize = 64 * 1024 * 1024;

/// A call as `GET /call` and `GET /call/{id}` return it (the fields we use).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallOut {
    pub id: String,
    #[serde(default)]
    pub phone_number_id: Option<String>,
    #[serde(default)]
    pub customer: Option<CustomerOut>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub ended_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub ended_reason: Option<String>,
    /// USD, exact.
    #[serde(default, with = "rust_decimal::serde::arbitrary_precision_option")]
    pub cost: Option<Decimal>,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
    /// What the call said ([`crate::vapi::CallContent::from_api`]): its `type`, `analysis`,
    /// `artifact` (transcript, recording; not `messages`) and `costs[]`.
    #[serde(default, rename = "type")]
    pub call_type: Option<serde_json::Value>,
    #[serde(default)]
    pub analysis: Option<crate::vapi::AnalysisIn>,
    #[serde(default)]
    pub artifact: Option<crate::vapi::ArtifactIn>,
    #[serde(default)]
    pub costs: Option<serde_json::Value>,
}

/// The caller.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CustomerOut {
    #[serde(default)]
    pub number: Option<String>,
}

/// The Vapi REST client; cheap to share behind an `Arc`.
pub struct VapiClient {
    base_url: String,
    api_key: Option<Secret>,
    http: reqwest::Client,
    breaker: CircuitBreaker,
}

/// Whose calls to list: a phone number's, or an assistant's (web calls have no number).
#[derive(Debug, Clone, Copy)]
pub enum CallsOf<'a> {
    PhoneNumber(&'a str),
    Assistant(&'a str),
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

    /// `GET /call?phoneNumberId=..` (or `assistantId=..`, for web calls that have no number)
    /// `&createdAtGe=..&createdAtLt=..&limit=1000` (a bare JSON array). The endpoint has no cursor and states no order, so a full page (1,000 calls) does
    /// not say which calls it left out: the window is split in two and each half asked again,
    /// until every window comes back short. Nothing is lost whatever order Vapi lists in;
    /// calls are deduplicated by id and returned oldest first.
    pub async fn list_calls(
        &self,
        of: CallsOf<'_>,
        created_at_ge: DateTime<Utc>,
        created_at_lt: DateTime<Utc>,
    ) -> Result<Vec<CallOut>, ProviderError> {
        let url = self.url(&["call"])?;
        let mut seen: HashMap<String, CallOut> = HashMap::new();
        let mut windows = vec![(created_at_ge, created_at_lt)];
        let mut requests = 0;
        while let Some((ge, lt)) = windows.pop() {
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
            let query = [
                match of {
                    CallsOf::PhoneNumber(id) => ("phoneNumberId", id.to_string()),
                    CallsOf::Assistant(id) => ("assistantId", id.to_string()),
                },
                ("createdAtGe", timestamp(ge)),
                ("createdAtLt", timestamp(lt)),
                ("limit", PAGE_LIMIT.to_string()),
            ];
            let page: Vec<CallOut> = self.get_json(url.clone(), &query).await?;
            if page.len() < PAGE_LIMIT {
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
                    format!("cannot page: {PAGE_LIMIT} calls created within one millisecond"),
                ));
            }
            let middle = ge + TimeDelta::milliseconds(span / 2);
            windows.push((middle, lt));
            windows.push((ge, middle));
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
            let body = read_limited(PROVIDER, response, MAX_PAGE_BYTES).await?;
            serde_json::from_slice(&body)
                .map_err(|e| ProviderError::permanent(PROVIDER, format!("malformed response: {e}")))
        }
        .await;
        self.breaker.record(&result);
        result
    }
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
