//! Every environment variable the service reads, validated once at start-up.
//!
//! | variable | default | secret |
//! | --- | --- | --- |
//! | `DATABASE_URL` | local default, see [`crate::store::db::resolve_database_url`] | yes (may hold a password) |
//! | `BIND_ADDR` | `127.0.0.1:8080`; `PORT` set means `0.0.0.0:$PORT` | no |
//! | `VAPI_CREDENTIALS` | none (a JSON array of Vapi `authenticationPlan` objects) | yes |
//! | `VAPI_CREDENTIALS_FILE` | none (a file holding that array) | no |
//! | `PUBLIC_BASE_URL` | none (our public URL, for HMAC payloads with `{url}`) | no |
//! | `VAPI_SERVER_CREDENTIAL_ID` | none (a credential made in Vapi: our transient assistant's `server.credentialId`; needs `PUBLIC_BASE_URL`) | no |
//! | `VAPI_WEBHOOK_SECRET` | none (legacy `X-Vapi-Secret` header) | yes |
//! | `VAPI_HMAC_SECRET` | none (HMAC-SHA256 `x-signature`) | yes |
//! | `VAPI_API_KEY` | none | yes |
//! | `VAPI_BASE_URL` | `https://api.vapi.ai` | no |
//! | `DISCORD_ENABLED` | `false` | no |
//! | `OPS_TOKEN` | none (one unnamed operator, `ops`) | yes |
//! | `OPS_TOKENS` | none (`name:token,...`: named operators; with neither, ops is disabled; no two share a token; 24+ characters each in production) | yes |
//! | `OPS_SESSION_HOURS` | `12` (ops page sessions) | no |
//! | `PORTAL_SESSION_HOURS` | `168` (agency portal sessions) | no |
//! | `SUPABASE_URL` | none (Supabase sign-in off unless the secret is set) | no |
//! | `SUPABASE_JWT_SECRET` | none (legacy HS256 Supabase tokens) | yes |
//! | `SUPABASE_JWT_AUDIENCE` | `authenticated` | no |
//! | `METRICS_TOKEN` | none (`/metrics` open) | yes |
//! | `METRICS_CACHE_SECS` | `5` (queue gauges reused by scrapes within this many seconds) | no |
//! | `BILLING_TIMEZONE` | `America/Phoenix` | no |
//! | `LOG_FORMAT` | `text` (`text` or `json`) | no |
//! | `RUST_LOG` | `info` | no |
//! | `APP_ENV` | `development` | no |
//! | `WEBHOOK_MAX_BODY_BYTES` | `8388608` (a 60-minute call's report with its artifact is MBs) | no |
//! | `CLOCK_CATCH_UP_DAYS` | `90` (how far back a starting clock replays missed ticks) | no |
//! | `WEBHOOK_EVENT_RETENTION_DAYS` | `7` (raw high-volume events kept before `prune_jobs` deletes them) | no |
//! | `WORKER_CONCURRENCY` | `8` | no |
//! | `WORKER_HEARTBEAT_SECS` | `10` | no |
//! | `WORKER_MISSED_HEARTBEATS` | `3` | no |
//! | `JOB_TIMEOUT_SECS` | `20` (must stay under the orphan window) | no |
//! | `JOB_BACKOFF_BASE_MS` | `5000` (first retry wait; doubles per attempt) | no |
//! | `TOOL_RESULT_WAIT_MS` | `3000` (how long a tool-call answer waits for its job) | no |
//! | `DATABASE_MAX_CONNECTIONS` | by role (see [`Config::pool_size`]; the process's pool) | no |
//! | `WORKER_FETCH_BATCH` | `2 x WORKER_CONCURRENCY` (jobs claimed per fetch) | no |
//! | `WORKER_POLL_SECS` | `1` (an idle queue looks for due work this often; NOTIFY wakes it at once) | no |
//! | `IMAGE_MAX_BYTES` | `10485760` (images fetched for solar scans) | no |
//! | `IMAGE_FETCH_ALLOW_PRIVATE` | `false` (allow image URLs on private/loopback addresses; tests, demos) | no |
//! | `JOB_RETENTION_DAYS` | `14` (finished jobs kept before `prune_jobs` deletes them) | no |
//! | `PROVIDER_BREAKER_OPEN_SECS` | `30` (an open circuit refuses calls this long, then tries one) | no |
//!
//! Each tool's own variables (its provider's URL, key, model) are declared in its module
//! ([`settings::Setting`]) and listed by `agent-meter tools env`.

pub mod credentials;
mod secrets;
pub mod settings;

pub use secrets::{MIN_PRODUCTION_OPS_TOKEN, OpsToken, Secret, same_secret};
use secrets::{ops_tokens, strong_ops_tokens};
pub use settings::{Kind, Setting};

use std::{collections::HashMap, net::SocketAddr, str::FromStr, time::Duration};

/// Pool of a `web` process's handlers.
const POOL_WEB: u32 = 6;
/// Pool of a `clock` process (a tick, a catch-up check).
const POOL_CLOCK: u32 = 2;
/// Pool of a one-shot command (`migrate`, `jobs`, `invoices`, ...).
const POOL_COMMAND: u32 = 4;

use chrono_tz::Tz;

/// A configuration problem, always naming the variable at fault.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

fn bad(var: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        problem: problem.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Everything the service needs, read from the environment once.
#[derive(Debug, Clone)]
pub struct Config {
    /// `None` means "resolve the local default" (see `db::resolve_database_url`).
    pub database_url: Option<Secret>,
    pub bind_addr: SocketAddr,
    pub vapi_webhook_secret: Option<Secret>,
    pub vapi_hmac_secret: Option<Secret>,
    /// `VAPI_CREDENTIALS` (or its file): the plans a webhook request may pass by.
    pub vapi_credentials: Vec<crate::config::credentials::Credential>,
    /// Our public base URL (`https://meter.example.com`), for `{url}` in HMAC payloads.
    pub public_base_url: Option<String>,
    /// The id of a credential created in Vapi (dashboard or API), named as our transient
    /// assistant's `server.credentialId` so Vapi signs or authenticates what it sends us.
    pub vapi_server_credential_id: Option<String>,
    pub vapi_api_key: Option<Secret>,
    pub vapi_base_url: String,
    pub discord_enabled: bool,
    /// Who may use the ops API and page: `OPS_TOKENS` (named) and `OPS_TOKEN` (named `ops`).
    pub ops_tokens: Vec<OpsToken>,
    pub ops_session_ttl: Duration,
    /// How long an agency stays signed in to the portal.
    pub portal_session_ttl: Duration,
    /// The Supabase project (`https://<ref>.supabase.co`): its JWKS verifies ES256/RS256 tokens.
    pub supabase_url: Option<String>,
    /// The legacy HS256 JWT secret of the Supabase project.
    pub supabase_jwt_secret: Option<Secret>,
    pub supabase_jwt_audience: String,
    /// Bearer token for `/metrics`; open when unset.
    pub metrics_token: Option<Secret>,
    pub metrics_cache: Duration,
    pub billing_timezone: Tz,
    pub log_format: LogFormat,
    pub app_env: String,
    pub webhook_max_body_bytes: usize,
    pub tool_result_wait: Duration,
    /// The process's pool size, when set; see [`Config::pool_size`].
    pub database_max_connections: Option<u32>,
    /// Days of finished jobs `prune_jobs` keeps.
    pub job_retention_days: u32,
    /// Days raw high-volume events (`conversation-update`, `speech-update`, `transcript`,
    /// `model-output`) are kept; reports, status updates and tool calls are kept for good.
    pub event_retention_days: u32,
    /// How far back a starting clock replays ticks missed since the last one recorded.
    pub clock_catch_up_days: u32,
    /// How long a provider's open circuit breaker refuses calls before one trial.
    pub breaker_open_for: Duration,
    pub image_max_bytes: usize,
    /// Let image URLs reach loopback/private addresses (never in production: SSRF).
    pub image_fetch_allow_private: bool,
    pub worker: WorkerConfig,
    /// Invoices go to Stripe when `STRIPE_API_KEY` is set; `None`: finalized here only.
    pub stripe: Option<StripeConfig>,
    /// `STRIPE_WEBHOOK_SECRET` (`whsec_...`, comma-separated for rotation); none: `POST
    /// /stripe/webhook` is 404.
    pub stripe_webhook_secrets: Vec<Secret>,
    /// The operator's Discord channel (`OPS_DISCORD_WEBHOOK_URL`): payment failures.
    pub ops_discord_webhook_url: Option<Secret>,
    /// Agencies' webhook endpoints may be `http` and private (`OUTBOUND_ALLOW_PRIVATE`; tests,
    /// demos; refused in production).
    pub outbound_allow_private: bool,
    /// Waits before each attempt of an outbound delivery (`OUTBOUND_RETRY_SCHEDULE`, seconds).
    pub outbound_retry_schedule: Vec<Duration>,
    /// Attempts each delivery lane runs at once (`OUTBOUND_CONCURRENCY`): they wait on the
    /// agencies' systems, not on us.
    pub outbound_concurrency: usize,
    /// The longest a healthy endpoint takes to answer (`OUTBOUND_SLOW_ANSWER_MS`, 1 s): past it an
    /// attempt is cut off and the endpoint's deliveries go to the slow lane.
    pub outbound_slow_answer: Duration,
    /// The environment as read, for the tools' own variables ([`Config::setting`]).
    pub raw: settings::Raw,
}

/// Queue worker tuning; the orphan window is `heartbeat x missed_heartbeats`.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub concurrency: usize,
    /// Jobs claimed per fetch. Twice the concurrency keeps the next jobs at hand while the
    /// running ones finish (no-op throughput 13k -> 17.6k jobs/s in the calls benchmark); the
    /// extra ones wait under this worker, handed back on stop or by orphan rescue. A fetch grows
    /// to 16 times this while a backlog of quick jobs drains (`jobs::backend`).
    pub fetch_batch: usize,
    pub heartbeat: Duration,
    pub missed_heartbeats: usize,
    pub job_timeout: Duration,
    /// The wait before the first retry; each later retry doubles it (capped, with jitter).
    pub backoff_base: Duration,
    /// How often an idle queue looks for work nobody announced (retries come due, ops re-runs,
    /// a lost notification); a NOTIFY wakes it at once.
    pub poll: Duration,
}

/// Stripe's API, for sending invoices ([`crate::providers::stripe`]).
#[derive(Debug, Clone)]
pub struct StripeConfig {
    pub api_key: Secret,
    /// `STRIPE_BASE_URL`, default `https://api.stripe.com`.
    pub base_url: String,
    /// `STRIPE_DAYS_UNTIL_DUE` (1 to 365, default 14).
    pub days_until_due: u32,
}

impl WorkerConfig {
    /// How long a silent worker's jobs wait before another worker may take them.
    pub fn orphan_window(&self) -> Duration {
        self.heartbeat * self.missed_heartbeats as u32
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 8,
            fetch_batch: 16,
            heartbeat: Duration::from_secs(10),
            missed_heartbeats: 3,
            job_timeout: Duration::from_secs(20),
            backoff_base: Duration::from_secs(5),
            poll: Duration::from_secs(1),
        }
    }
}

impl Config {
    /// Connections the process may open (its pool, the LISTEN connection included):
    /// `DATABASE_MAX_CONNECTIONS`, else by role: web 6, worker `WORKER_CONCURRENCY + 2` (10 by
    /// default), clock 2, one more for the LISTEN connection of a web or worker, and 4 for a
    /// one-shot command. README, "Connections", adds them up for a deployment.
    pub fn pool_size(&self, web: bool, worker: bool, clock: bool) -> u32 {
        if let Some(n) = self.database_max_connections {
            return n;
        }
        let concurrency = u32::try_from(self.worker.concurrency).unwrap_or(u32::MAX);
        let mut size = 0u32;
        if web {
            size += POOL_WEB;
        }
        if worker {
            size = size.saturating_add(concurrency.saturating_add(2));
        }
        if clock {
            size += POOL_CLOCK;
        }
        if web || worker {
            size += 1; // the process's one LISTEN connection (jobs::listen)
        }
        if size == 0 { POOL_COMMAND } else { size }
    }

    /// Reads the process environment (after `.env`, loaded by `main`).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars().collect())
    }

    /// Builds the configuration from an explicit map, so tests need no process env.
    pub fn from_vars(vars: HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |name: &str| vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let secret = |name: &str| get(name).map(Secret::new);
        let text = |name: &str, default: &str| get(name).unwrap_or(default).to_string();

        let bind_addr = match (get("PORT"), get("BIND_ADDR")) {
            (Some(port), _) => {
                let port: u16 = port
                    .parse()
                    .map_err(|_| bad("PORT", format!("not a port number: {port:?}")))?;
                SocketAddr::from(([0, 0, 0, 0], port))
            }
            (None, Some(addr)) => addr
                .parse()
                .map_err(|_| bad("BIND_ADDR", format!("not host:port: {addr:?}")))?,
            (None, None) => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };
        let billing_timezone = match get("BILLING_TIMEZONE") {
            Some(tz) => Tz::from_str(tz)
                .map_err(|_| bad("BILLING_TIMEZONE", format!("unknown IANA time zone {tz:?}")))?,
            None => chrono_tz::America::Phoenix,
        };
        // Private image hosts are for tests and demos on loopback; in production they would let a
        // caller's image URL reach our own network.
        let image_fetch_allow_private = boolean(&get, "IMAGE_FETCH_ALLOW_PRIVATE")?;
        if image_fetch_allow_private && text("APP_ENV", "").eq_ignore_ascii_case("production") {
            return Err(bad(
                "IMAGE_FETCH_ALLOW_PRIVATE",
                "must not be true with APP_ENV=production (image URLs could reach private addresses)",
            ));
        }
        let outbound_allow_private = boolean(&get, "OUTBOUND_ALLOW_PRIVATE")?;
        if outbound_allow_private && text("APP_ENV", "").eq_ignore_ascii_case("production") {
            return Err(bad(
                "OUTBOUND_ALLOW_PRIVATE",
                "must not be true with APP_ENV=production (webhook URLs could reach private addresses)",
            ));
        }
        let ops_tokens = ops_tokens(get("OPS_TOKENS"), secret("OPS_TOKEN"))?;
        strong_ops_tokens(
            &ops_tokens,
            text("APP_ENV", "").eq_ignore_ascii_case("production"),
        )?;
        let log_format = match get("LOG_FORMAT").unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => return Err(bad("LOG_FORMAT", format!("{other:?} is not text or json"))),
        };
        let defaults = WorkerConfig::default();
        let concurrency: usize = number(&get, "WORKER_CONCURRENCY", defaults.concurrency)?;
        let worker = WorkerConfig {
            concurrency,
            fetch_batch: number(&get, "WORKER_FETCH_BATCH", concurrency.max(1) * 2)?,
            heartbeat: Duration::from_secs(number(&get, "WORKER_HEARTBEAT_SECS", 10)?),
            missed_heartbeats: number(
                &get,
                "WORKER_MISSED_HEARTBEATS",
                defaults.missed_heartbeats,
            )?,
            job_timeout: Duration::from_secs(number(&get, "JOB_TIMEOUT_SECS", 20)?),
            backoff_base: Duration::from_millis(number(&get, "JOB_BACKOFF_BASE_MS", 5000)?),
            poll: match get("WORKER_POLL_SECS") {
                None => defaults.poll,
                Some(v) => v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| (0.01..=3600.0).contains(s))
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| {
                        bad(
                            "WORKER_POLL_SECS",
                            format!("not a number of seconds from 0.01 to 3600: {v:?}"),
                        )
                    })?,
            },
        };
        if worker.job_timeout >= worker.orphan_window() {
            return Err(bad(
                "JOB_TIMEOUT_SECS",
                "must be shorter than WORKER_HEARTBEAT_SECS x WORKER_MISSED_HEARTBEATS, \
                 or a slow job would be run twice",
            ));
        }
        let vapi_credentials = match (get("VAPI_CREDENTIALS"), get("VAPI_CREDENTIALS_FILE")) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "VAPI_CREDENTIALS",
                    "set VAPI_CREDENTIALS or VAPI_CREDENTIALS_FILE, not both",
                ));
            }
            (Some(json), None) => {
                crate::config::credentials::parse(json).map_err(|e| bad("VAPI_CREDENTIALS", e))?
            }
            (None, Some(path)) => {
                let json = std::fs::read_to_string(path).map_err(|e| {
                    bad(
                        "VAPI_CREDENTIALS_FILE",
                        format!("cannot read {path:?}: {}", e.kind()),
                    )
                })?;
                crate::config::credentials::parse(&json)
                    .map_err(|e| bad("VAPI_CREDENTIALS_FILE", e))?
            }
            (None, None) => Vec::new(),
        };
        for url_var in [
            "PUBLIC_BASE_URL",
            "VAPI_BASE_URL",
            "STRIPE_BASE_URL",
            "OPS_DISCORD_WEBHOOK_URL",
        ] {
            if let Some(url) = get(url_var) {
                reqwest::Url::parse(url).map_err(|e| bad(url_var, format!("not a URL: {e}")))?;
            }
        }
        // The credential goes with the server URL it authenticates: an assistant `server` with a
        // credential and no URL would leave which URL Vapi signs for to the phone number.
        if get("VAPI_SERVER_CREDENTIAL_ID").is_some() && get("PUBLIC_BASE_URL").is_none() {
            return Err(bad(
                "VAPI_SERVER_CREDENTIAL_ID",
                "needs PUBLIC_BASE_URL: the credential signs what Vapi sends to our server.url",
            ));
        }
        Ok(Self {
            database_url: secret("DATABASE_URL"),
            bind_addr,
            vapi_webhook_secret: secret("VAPI_WEBHOOK_SECRET"),
            vapi_hmac_secret: secret("VAPI_HMAC_SECRET"),
            vapi_credentials,
            public_base_url: get("PUBLIC_BASE_URL").map(|u| u.trim_end_matches('/').to_string()),
            vapi_server_credential_id: get("VAPI_SERVER_CREDENTIAL_ID").map(str::to_string),
            vapi_api_key: secret("VAPI_API_KEY"),
            vapi_base_url: text("VAPI_BASE_URL", "https://api.vapi.ai"),
            discord_enabled: boolean(&get, "DISCORD_ENABLED")?,
            ops_tokens,
            ops_session_ttl: Duration::from_secs(
                number(&get, "OPS_SESSION_HOURS", 12u64)?.clamp(1, 24 * 30) * 3600,
            ),
            portal_session_ttl: Duration::from_secs(
                number(&get, "PORTAL_SESSION_HOURS", 24 * 7u64)?.clamp(1, 24 * 90) * 3600,
            ),
            supabase_url: get("SUPABASE_URL").map(|u| u.trim_end_matches('/').to_string()),
            supabase_jwt_secret: secret("SUPABASE_JWT_SECRET"),
            supabase_jwt_audience: text("SUPABASE_JWT_AUDIENCE", "authenticated"),
            metrics_token: secret("METRICS_TOKEN"),
            metrics_cache: Duration::from_secs(number(&get, "METRICS_CACHE_SECS", 5u64)?),
            billing_timezone,
            log_format,
            app_env: text("APP_ENV", "development"),
            webhook_max_body_bytes: number(&get, "WEBHOOK_MAX_BODY_BYTES", 8 * 1024 * 1024)?,
            tool_result_wait: Duration::from_millis(number(&get, "TOOL_RESULT_WAIT_MS", 3000)?),
            database_max_connections: match get("DATABASE_MAX_CONNECTIONS") {
                None => None,
                Some(_) => Some(number(&get, "DATABASE_MAX_CONNECTIONS", 0u32)?.max(2)),
            },
            job_retention_days: number(&get, "JOB_RETENTION_DAYS", 14)?,
            event_retention_days: number(&get, "WEBHOOK_EVENT_RETENTION_DAYS", 7)?,
            clock_catch_up_days: number(&get, "CLOCK_CATCH_UP_DAYS", 90)?,
            breaker_open_for: Duration::from_secs(
                number(&get, "PROVIDER_BREAKER_OPEN_SECS", 30u64)?.max(1),
            ),
            image_max_bytes: number(&get, "IMAGE_MAX_BYTES", 10 * 1024 * 1024)?,
            image_fetch_allow_private,
            worker,
            stripe: match secret("STRIPE_API_KEY") {
                None => None,
                Some(api_key) => Some(StripeConfig {
                    api_key,
                    base_url: text("STRIPE_BASE_URL", "https://api.stripe.com")
                        .trim_end_matches('/')
                        .to_string(),
                    days_until_due: number(&get, "STRIPE_DAYS_UNTIL_DUE", 14u32)
                        .ok()
                        .filter(|d| (1..=365).contains(d))
                        .ok_or_else(|| {
                            bad(
                                "STRIPE_DAYS_UNTIL_DUE",
                                "not a number of days from 1 to 365",
                            )
                        })?,
                }),
            },
            stripe_webhook_secrets: stripe_webhook_secrets(get("STRIPE_WEBHOOK_SECRET"))?,
            ops_discord_webhook_url: secret("OPS_DISCORD_WEBHOOK_URL"),
            outbound_allow_private,
            outbound_retry_schedule: retry_schedule(get("OUTBOUND_RETRY_SCHEDULE"))?,
            outbound_concurrency: number(&get, "OUTBOUND_CONCURRENCY", 64)?,
            outbound_slow_answer: slow_answer(number(&get, "OUTBOUND_SLOW_ANSWER_MS", 1000)?)?,
            raw: settings::Raw::new(&vars),
        })
    }

    /// Serving webhooks without a way to authenticate them would accept forgeries.
    pub fn require_webhook_secret(&self) -> Result<(), ConfigError> {
        if self.vapi_webhook_secret.is_none()
            && self.vapi_hmac_secret.is_none()
            && self.vapi_credentials.is_empty()
        {
            return Err(bad(
                "VAPI_WEBHOOK_SECRET",
                "set VAPI_CREDENTIALS (Vapi authenticationPlan objects), VAPI_WEBHOOK_SECRET or \
                 VAPI_HMAC_SECRET to serve the webhook",
            ));
        }
        Ok(())
    }

    /// The operator whose ops token `given` is (each token compared in constant time).
    pub fn operator(&self, given: &[u8]) -> Option<&str> {
        self.ops_token(given).map(|t| t.name.as_str())
    }

    /// The ops credential `given` is (every token compared, in constant time).
    pub fn ops_token(&self, given: &[u8]) -> Option<&OpsToken> {
        let mut found = None;
        for t in &self.ops_tokens {
            if t.token.matches(given) && found.is_none() {
                found = Some(t);
            }
        }
        found
    }

    pub fn is_production(&self) -> bool {
        self.app_env.eq_ignore_ascii_case("production")
    }
}

/// Svix's schedule: at once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
pub const DEFAULT_RETRY_SCHEDULE: &str = "0,5,300,1800,7200,18000,36000,36000";

/// `OUTBOUND_RETRY_SCHEDULE`: 1 to 20 waits in whole seconds (each at most a day).
fn retry_schedule(value: Option<&str>) -> Result<Vec<Duration>, ConfigError> {
    let value = value.unwrap_or(DEFAULT_RETRY_SCHEDULE);
    let waits: Option<Vec<Duration>> = value
        .split(',')
        .map(|s| s.trim().parse::<u64>().ok().filter(|s| *s <= 86_400))
        .map(|s| s.map(Duration::from_secs))
        .collect();
    match waits {
        Some(w) if (1..=20).contains(&w.len()) => Ok(w),
        _ => Err(bad(
            "OUTBOUND_RETRY_SCHEDULE",
            "1 to 20 waits in whole seconds (at most 86400 each), comma-separated",
        )),
    }
}

/// `STRIPE_WEBHOOK_SECRET`: one or more `whsec_...` secrets, comma-separated.
fn stripe_webhook_secrets(value: Option<&str>) -> Result<Vec<Secret>, ConfigError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.starts_with("whsec_") && s.len() > "whsec_".len() {
                Ok(Secret::new(s))
            } else {
                Err(bad(
                    "STRIPE_WEBHOOK_SECRET",
                    "each secret is the endpoint's signing secret, whsec_...",
                ))
            }
        })
        .collect()
}

/// `OUTBOUND_SLOW_ANSWER_MS`: 1 ms up to the attempt's whole 15 s budget.
fn slow_answer(ms: u64) -> Result<Duration, ConfigError> {
    if (1..=15_000).contains(&ms) {
        Ok(Duration::from_millis(ms))
    } else {
        Err(bad(
            "OUTBOUND_SLOW_ANSWER_MS",
            format!("{ms} is not between 1 and 15000 milliseconds"),
        ))
    }
}

fn number<'a, T: FromStr>(
    get: &impl Fn(&str) -> Option<&'a str>,
    var: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match get(var) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| bad(var, format!("not a positive whole number: {v:?}"))),
    }
}

fn boolean<'a>(
    get: &impl Fn(&str) -> Option<&'a str>,
    var: &'static str,
) -> Result<bool, ConfigError> {
    match get(var).map(|v| v.to_ascii_lowercase()) {
        None => Ok(false),
        Some(v) if ["1", "true", "yes", "on"].contains(&v.as_str()) => Ok(true),
        Some(v) if ["0", "false", "no", "off"].contains(&v.as_str()) => Ok(false),
        Some(v) => Err(bad(var, format!("{v:?} is not true or false"))),
    }
}

#[cfg(test)]
mod tests;
