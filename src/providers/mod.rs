//! Clients for the outside APIs every part shares (Vapi REST, Discord, image fetching, the ArcGIS
//! point query): bytes in, a typed answer or a classified [`ProviderError`] out. They know nothing
//! of the database or the job queue. A tool's own provider client lives in its module under
//! `src/tools/`, built on [`Providers::http`] and [`Providers::breaker`].
//!
//! Every client shares one [`http_client`] (connect and total timeouts) and has its own
//! [`CircuitBreaker`]. Error reasons never carry a URL or a key: reqwest errors are stripped of
//! their URL, and Discord webhook URLs are scrubbed besides.

pub mod arcgis;
pub mod discord;
pub mod image;
pub mod outbound;
pub mod stripe;
pub mod vapi;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use reqwest::{StatusCode, header::HeaderMap};

/// Connect timeout of every client built by [`http_client`] (shortened to the total if smaller).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Total request timeout used by [`Providers::from_config`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(12);
/// Total time for fetching an image. With Gemini's 12 s a scan stays inside the 20 s job timeout.
pub const IMAGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait we accept from a `Retry-After` header or a Gemini `RetryInfo`; larger values are
/// clamped (the retry then simply meets another 429).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Consecutive transient failures that open a provider's breaker.
pub const BREAKER_THRESHOLD: u32 = 5;
/// Largest response body any client reads (error bodies included).
pub(crate) const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// A classified failure of an outside call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// Worth retrying later (timeouts, connection resets, 5xx, 408, 429, circuit open).
    #[error("{provider}: {reason}")]
    Transient {
        provider: &'static str,
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help (most 4xx, malformed/invalid/blocked answers, per-day quota).
    #[error("{provider}: {reason}")]
    Permanent {
        provider: &'static str,
        reason: String,
    },
}

impl ProviderError {
    /// A transient failure without a suggested wait.
    pub fn transient(provider: &'static str, reason: impl Into<String>) -> Self {
        Self::Transient {
            provider,
            reason: reason.into(),
            retry_after: None,
        }
    }

    /// A permanent failure.
    pub fn permanent(provider: &'static str, reason: impl Into<String>) -> Self {
        Self::Permanent {
            provider,
            reason: reason.into(),
        }
    }

    /// True when a later retry may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }

    /// The wait the provider asked for, if any (transient failures only).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Transient { retry_after, .. } => *retry_after,
            Self::Permanent { .. } => None,
        }
    }

    /// The provider's name, e.g. `"gemini"`.
    pub fn provider(&self) -> &'static str {
        match self {
            Self::Transient { provider, .. } | Self::Permanent { provider, .. } => provider,
        }
    }

    /// The reason without the provider prefix.
    pub fn reason(&self) -> &str {
        match self {
            Self::Transient { reason, .. } | Self::Permanent { reason, .. } => reason,
        }
    }

    /// The same error with every occurrence of `secret` in its reason replaced.
    pub(crate) fn scrubbed(mut self, secret: &str) -> Self {
        if !secret.is_empty() {
            let (Self::Transient { reason, .. } | Self::Permanent { reason, .. }) = &mut self;
            if reason.contains(secret) {
                *reason = reason.replace(secret, "[redacted]");
            }
        }
        self
    }
}

/// A client with a connect timeout of 3 s (or `timeout`, if shorter) and a total request timeout
/// of `timeout`. [`Providers::from_config`] uses 15 s.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .timeout(timeout)
        .user_agent(concat!("agent-meter/", env!("CARGO_PKG_VERSION")))
        .build()
        // Only fails if the TLS backend cannot initialise, which rustls with its bundled roots
        // does not do; there is no sensible way to run without an HTTP client.
        .expect("the reqwest client with rustls builds")
}

#[derive(Debug, Default)]
struct BreakerState {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    /// Set while the one half-open trial request is out; a trial lost (cancelled) for longer
    /// than `open_for` is given up and another one let through.
    trial_started: Option<Instant>,
}

/// One per provider: after `threshold` consecutive transient failures it opens for `open_for`;
/// while open, [`check`](Self::check) fails fast with `Transient { retry_after: Some(remaining) }`
/// without any request; after that one trial request is let through (half-open); a success closes
/// it, a transient failure re-opens it. Permanent failures are not counted as failures: the
/// provider answered, so they reset the count like a success.
#[derive(Debug)]
pub struct CircuitBreaker {
    provider: &'static str,
    threshold: u32,
    open_for: Duration,
    state: Mutex<BreakerState>,
}

impl CircuitBreaker {
    /// A closed breaker; a `threshold` of 0 is treated as 1.
    pub fn new(provider: &'static str, threshold: u32, open_for: Duration) -> Self {
        Self {
            provider,
            threshold: threshold.max(1),
            open_for,
            state: Mutex::new(BreakerState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        // The state is a few integers updated atomically under the lock: a panic elsewhere
        // cannot leave it half-written, so a poisoned lock is safe to reuse.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ok when a request may be sent now; otherwise a transient error saying how long to wait.
    pub fn check(&self) -> Result<(), ProviderError> {
        let now = Instant::now();
        let mut state = self.state();
        let Some(open_until) = state.open_until else {
            return Ok(());
        };
        if now < open_until {
            return Err(self.open_error(open_until - now));
        }
        match state.trial_started {
            Some(started) if now.duration_since(started) < self.open_for => {
                Err(self.open_error(self.open_for - now.duration_since(started)))
            }
            _ => {
                state.trial_started = Some(now);
                Ok(())
            }
        }
    }

    /// Feeds the outcome of a request let through by [`check`](Self::check).
    pub fn record<T>(&self, result: &Result<T, ProviderError>) {
        let mut state = self.state();
        match result {
            Err(e) if e.is_transient() => {
                state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                let half_open = state.open_until.is_some();
                if half_open || state.consecutive_failures >= self.threshold {
                    if !half_open {
                        tracing::warn!(
                            provider = self.provider,
                            failures = state.consecutive_failures,
                            open_for_ms = self.open_for.as_millis() as u64,
                            "circuit breaker opened"
                        );
                    }
                    state.open_until = Some(Instant::now() + self.open_for);
                    state.trial_started = None;
                }
            }
            _ => {
                if state.open_until.is_some() {
                    tracing::info!(provider = self.provider, "circuit breaker closed");
                }
                *state = BreakerState::default();
            }
        }
    }

    /// True while requests are being refused (open, or half-open with the trial out).
    pub fn is_open(&self) -> bool {
        self.state().open_until.is_some()
    }

    fn open_error(&self, remaining: Duration) -> ProviderError {
        ProviderError::Transient {
            provider: self.provider,
            reason: "circuit open after repeated failures; no request sent".into(),
            retry_after: Some(remaining),
        }
    }
}

/// Status classification shared by clients: 408, 429 and 5xx are transient (a `Retry-After`
/// header in seconds or as an HTTP date is honoured, clamped to [`MAX_RETRY_AFTER`]); anything
/// else (other 4xx, unexpected 1xx/2xx/3xx) is permanent.
pub fn classify_status(
    provider: &'static str,
    status: StatusCode,
    headers: &HeaderMap,
    body_excerpt: &str,
) -> ProviderError {
    let excerpt = excerpt(body_excerpt);
    let reason = if excerpt.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {excerpt}")
    };
    if status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        ProviderError::Transient {
            provider,
            reason,
            retry_after: retry_after_header(headers),
        }
    } else {
        ProviderError::Permanent { provider, reason }
    }
}

/// The `Retry-After` header as a wait: delta-seconds (fractions accepted) or an HTTP date.
pub(crate) fn retry_after_header(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<f64>() {
        return seconds(secs);
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO).min(MAX_RETRY_AFTER))
}

/// Seconds (possibly fractional) as a clamped duration; negative or non-finite gives `None`.
pub(crate) fn seconds(secs: f64) -> Option<Duration> {
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(
        secs.min(MAX_RETRY_AFTER.as_secs_f64()),
    ))
}

/// A short single-line excerpt of a response body for error reasons.
pub(crate) fn excerpt(text: &str) -> String {
    const MAX_CHARS: usize = 300;
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}...", &flat[..cut]),
        None => flat,
    }
}

/// reqwest errors: timeout, connect, request (reset, closed) and body-read errors are transient;
/// decode, builder and redirect errors are permanent. Never includes the URL (it may hold a
/// secret).
pub fn classify_reqwest(provider: &'static str, err: reqwest::Error) -> ProviderError {
    let err = err.without_url();
    let mut reason = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !reason.ends_with(&text) {
            reason = format!("{reason}: {text}");
        }
        source = cause.source();
    }
    if err.is_timeout() {
        return ProviderError::transient(provider, format!("timed out: {reason}"));
    }
    if let Some(status) = err.status() {
        return classify_status(provider, status, &HeaderMap::new(), "");
    }
    if err.is_decode() || err.is_builder() || err.is_redirect() {
        ProviderError::permanent(provider, reason)
    } else {
        // connect, request (reset, closed early), body, upgrade and anything new
        ProviderError::transient(provider, reason)
    }
}

/// Reads a response body, failing permanently past `max_bytes` (checked against Content-Length
/// first, then while streaming).
pub(crate) async fn read_limited(
    provider: &'static str,
    response: reqwest::Response,
    max_bytes: usize,
) -> Result<Vec<u8>, ProviderError> {
    read_at_most(provider, response, max_bytes)
        .await?
        .ok_or_else(|| {
            ProviderError::permanent(provider, format!("response over {max_bytes} bytes"))
        })
}

/// The body, or `None` as soon as it is known to be over `max_bytes` (by its length, or while
/// reading: the rest is never read).
pub(crate) async fn read_at_most(
    provider: &'static str,
    mut response: reqwest::Response,
    max_bytes: usize,
) -> Result<Option<Vec<u8>>, ProviderError> {
    if response
        .content_length()
        .is_some_and(|len| len > max_bytes as u64)
    {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| classify_reqwest(provider, e))?
    {
        if body.len() + chunk.len() > max_bytes {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// Sends `request` and reads its answer (at most `max_bytes`): status, headers and body,
/// whatever the status (the caller classifies a failure); network errors are classified here.
pub(crate) async fn exchange(
    provider: &'static str,
    request: reqwest::RequestBuilder,
    max_bytes: usize,
) -> Result<(StatusCode, HeaderMap, Vec<u8>), ProviderError> {
    let response = request
        .send()
        .await
        .map_err(|e| classify_reqwest(provider, e))?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = read_limited(provider, response, max_bytes).await?;
    Ok((status, headers, body))
}

/// A non-2xx answer classified by [`classify_status`], with a body excerpt.
pub(crate) async fn status_error(
    provider: &'static str,
    response: reqwest::Response,
) -> ProviderError {
    let status = response.status();
    let headers = response.headers().clone();
    let body = read_limited(provider, response, 64 * 1024)
        .await
        .unwrap_or_default();
    classify_status(provider, status, &headers, &String::from_utf8_lossy(&body))
}

/// All four clients, built from configuration.
#[derive(Clone)]
pub struct Providers {
    /// The one HTTP client ([`DEFAULT_TIMEOUT`]) every provider client is built on.
    pub http: reqwest::Client,
    /// How long an open breaker refuses calls (`PROVIDER_BREAKER_OPEN_SECS`).
    pub breaker_open_for: Duration,
    /// Vapi REST (daily sync).
    pub vapi: Arc<vapi::VapiClient>,
    /// Agent notifications.
    pub discord: Arc<discord::DiscordClient>,
    /// Caller-supplied image URLs: public addresses only (checked on the one resolution it
    /// connects with), no redirects, no proxy, a short timeout.
    pub image: Arc<image::ImageFetcher>,
}

impl Providers {
    /// Builds the shared clients on one [`http_client`] ([`DEFAULT_TIMEOUT`]), each with its
    /// breaker ([`Providers::breaker`]).
    pub fn from_config(config: &crate::config::Config) -> Self {
        let http = http_client(DEFAULT_TIMEOUT);
        let open_for = config.breaker_open_for;
        let breaker = |name| CircuitBreaker::new(name, BREAKER_THRESHOLD, open_for);
        Self {
            vapi: Arc::new(vapi::VapiClient::new(
                config.vapi_base_url.clone(),
                config.vapi_api_key.clone(),
                http.clone(),
                breaker(vapi::PROVIDER),
            )),
            discord: Arc::new(discord::DiscordClient::new(
                http.clone(),
                breaker(discord::PROVIDER),
            )),
            image: Arc::new(image::ImageFetcher::new(config.image_fetch_allow_private)),
            http,
            breaker_open_for: open_for,
        }
    }

    /// A new closed breaker for `provider`: [`BREAKER_THRESHOLD`] consecutive failures open it
    /// for `PROVIDER_BREAKER_OPEN_SECS`.
    pub fn breaker(&self, provider: &'static str) -> CircuitBreaker {
        CircuitBreaker::new(provider, BREAKER_THRESHOLD, self.breaker_open_for)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, "7".parse().expect("header"));
        assert_eq!(retry_after_header(&headers), Some(Duration::from_secs(7)));
        headers.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("header"),
        );
        assert_eq!(retry_after_header(&headers), Some(Duration::ZERO));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        headers.insert(reqwest::header::RETRY_AFTER, later.parse().expect("header"));
        let wait = retry_after_header(&headers).expect("a date in the future");
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120));
    }

    #[test]
    fn statuses_are_classified() {
        let h = HeaderMap::new();
        for code in [408, 429, 500, 502, 503, 504] {
            let s = StatusCode::from_u16(code).expect("status");
            assert!(classify_status("t", s, &h, "").is_transient(), "{code}");
        }
        for code in [400, 401, 403, 404, 422] {
            let s = StatusCode::from_u16(code).expect("status");
            assert!(!classify_status("t", s, &h, "").is_transient(), "{code}");
        }
    }

    #[test]
    fn breaker_permanent_failures_do_not_open_it() {
        let b = CircuitBreaker::new("t", 2, Duration::from_secs(60));
        let permanent: Result<(), _> = Err(ProviderError::permanent("t", "bad"));
        let transient: Result<(), _> = Err(ProviderError::transient("t", "down"));
        b.record(&transient);
        b.record(&permanent);
        b.record(&transient);
        assert!(b.check().is_ok());
        b.record(&transient);
        let err = b.check().expect_err("open");
        assert!(
            err.retry_after()
                .is_some_and(|d| d > Duration::from_secs(59))
        );
    }
}
