//! Discord webhooks for agent notifications. A webhook URL is a secret (its path holds the
//! token): it never reaches a log line or an error reason.

use serde_json::{Value, json};

use super::{
    CircuitBreaker, ProviderError, classify_reqwest, classify_status, read_limited,
    retry_after_header, seconds,
};

/// The provider name in errors.
pub const PROVIDER: &str = "discord";
/// Discord's limit on `content`, in characters.
pub const MAX_CONTENT_CHARS: usize = 2000;

/// The Discord webhook client; one breaker for all webhooks (they share an upstream).
pub struct DiscordClient {
    http: reqwest::Client,
    breaker: CircuitBreaker,
}

impl DiscordClient {
    /// A client over the shared HTTP client.
    pub fn new(http: reqwest::Client, breaker: CircuitBreaker) -> Self {
        Self { http, breaker }
    }

    /// POSTs `{"content": ...}` (truncated to 2000 characters, mentions disabled). 2xx is Ok; 429
    /// is transient with `retry_after` from the JSON body (seconds, may be fractional) or the
    /// `Retry-After` header; 400/401/403/404 permanent; 5xx transient.
    pub async fn post(&self, webhook_url: &str, content: &str) -> Result<(), ProviderError> {
        let url = reqwest::Url::parse(webhook_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| ProviderError::permanent(PROVIDER, "invalid webhook URL"))?;
        if content.trim().is_empty() {
            return Err(ProviderError::permanent(PROVIDER, "empty message"));
        }
        self.breaker.check()?;
        let result = self.send(url, content).await;
        self.breaker.record(&result);
        // Defence in depth: nothing above should echo the URL, but make sure.
        let token_path = webhook_url
            .split_once("/webhooks/")
            .map_or("", |(_, path)| path);
        result.map_err(|e| e.scrubbed(webhook_url).scrubbed(token_path))
    }

    async fn send(&self, url: reqwest::Url, content: &str) -> Result<(), ProviderError> {
        let response = self
            .http
            .post(url)
            .json(&json!({
                "content": truncate(content, MAX_CONTENT_CHARS),
                "allowed_mentions": {"parse": []},
            }))
            .send()
            .await
            .map_err(|e| classify_reqwest(PROVIDER, e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let headers = response.headers().clone();
        let body = read_limited(PROVIDER, response, 64 * 1024)
            .await
            .unwrap_or_default();
        let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let message = parsed["message"].as_str().map_or_else(
            || String::from_utf8_lossy(&body).into_owned(),
            str::to_string,
        );
        let mut error = classify_status(PROVIDER, status, &headers, &message);
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS
            && let ProviderError::Transient { retry_after, .. } = &mut error
        {
            *retry_after = parsed["retry_after"]
                .as_f64()
                .and_then(seconds)
                .or_else(|| retry_after_header(&headers));
        }
        Err(error)
    }
}

/// At most `max_chars` characters, cut on a character boundary.
fn truncate(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => &text[..cut],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_character_boundaries() {
        assert_eq!(truncate("héllo", 2), "hé");
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate(&"é".repeat(2500), 2000).chars().count(), 2000);
    }
}
