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
//! | `GEMINI_API_KEY` | none | yes |
//! | `GEMINI_BASE_URL` | `https://generativelanguage.googleapis.com` | no |
//! | `GEMINI_MODEL` | `gemini-2.5-flash` | no |
//! | `ADWR_WELLS_URL` | the ADWR Well Registry 2024 ArcGIS layer | no |
//! | `FEMA_NFHL_URL` | FEMA's public NFHL MapServer, layer 28 (Flood Hazard Zones) | no |
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
//! | `GEMINI_INPUT_USD_PER_MTOK` | none (Gemini prompt token price, for provider cost) | no |
//! | `GEMINI_OUTPUT_USD_PER_MTOK` | none (Gemini output token price) | no |

pub mod credentials;

use std::{collections::HashMap, fmt, net::SocketAddr, str::FromStr, time::Duration};

/// Pool of a `web` process's handlers.
const POOL_WEB: u32 = 6;
/// Pool of a `clock` process (a tick, a catch-up check).
const POOL_CLOCK: u32 = 2;
/// Pool of a one-shot command (`migrate`, `jobs`, `invoices`, ...).
const POOL_COMMAND: u32 = 4;

use chrono_tz::Tz;
use rust_decimal::Decimal;

/// A value that must never reach a log line or an error body.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself; call only where it is used (a header, a MAC key).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Secret {
    /// Whether `given` is this secret, in constant time whatever the lengths (digests compared).
    pub fn matches(&self, given: &[u8]) -> bool {
        same_secret(given, self.0.as_bytes())
    }
}

/// The one constant-time comparison of a presented secret with the expected one: both are
/// hashed first, so neither the content nor the length leaks through timing.
pub fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    use sha2::Digest;
    use subtle::ConstantTimeEq;
    let (a, b) = (sha2::Sha256::digest(given), sha2::Sha256::digest(expected));
    a.ct_eq(&b).into()
}

/// A named ops credential: the audit trail names `name` for whatever the token does.
#[derive(Clone, Debug)]
pub struct OpsToken {
    pub name: String,
    pub token: Secret,
}

impl OpsToken {
    /// What binds an ops page session to this token: HMAC-SHA256 keyed by the token over the
    /// session id. Stored with the session and recomputed on each request, so a session outlives
    /// neither its operator's place in the config nor the token; neither can be read back from it.
    pub fn session_mac(&self, session_id: &str) -> Vec<u8> {
        use hmac::Mac;
        // HMAC takes a key of any length; the error arm cannot happen.
        match hmac::Hmac::<sha2::Sha256>::new_from_slice(self.token.expose().as_bytes()) {
            Ok(mut mac) => {
                mac.update(b"agent-meter ops session\0");
                mac.update(session_id.as_bytes());
                mac.finalize().into_bytes().to_vec()
            }
            Err(_) => Vec::new(),
        }
    }

    /// Whether `mac` binds session `session_id` to this token (constant time).
    pub fn opened_session(&self, session_id: &str, mac: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        let expected = self.session_mac(session_id);
        !expected.is_empty() && bool::from(expected.ct_eq(mac))
    }
}

/// `OPS_TOKENS=name:token,...` and the unnamed `OPS_TOKEN` (operator `ops`). Names are short
/// and printable; a malformed entry is refused without echoing the token.
fn ops_tokens(named: Option<&str>, unnamed: Option<Secret>) -> Result<Vec<OpsToken>, ConfigError> {
    let mut tokens = Vec::new();
    for (i, entry) in named
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .enumerate()
    {
        if entry.is_empty() {
            continue;
        }
        let (name, token) = entry
            .split_once(':')
            .map(|(n, t)| (n.trim(), t.trim()))
            .unwrap_or(("", ""));
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c));
        if !name_ok || token.is_empty() {
            return Err(bad(
                "OPS_TOKENS",
                format!(
                    "entry {} is not name:token (names: letters, digits, . _ @ -)",
                    i + 1
                ),
            ));
        }
        if tokens.iter().any(|t: &OpsToken| t.name == name) {
            return Err(bad(
                "OPS_TOKENS",
                format!("operator {name:?} is named twice"),
            ));
        }
        tokens.push(OpsToken {
            name: name.to_string(),
            token: Secret::new(token),
        });
    }
    if let Some(token) = unnamed {
        if tokens.iter().any(|t| t.name == "ops") {
            return Err(bad(
                "OPS_TOKEN",
                "its operator \"ops\" is also named in OPS_TOKENS",
            ));
        }
        tokens.push(OpsToken {
            name: "ops".into(),
            token,
        });
    }
    // One token, two operators: the audit would name whichever is listed first.
    for (i, a) in tokens.iter().enumerate() {
        if let Some(b) = tokens[i + 1..].iter().find(|b| b.token == a.token) {
            return Err(bad(
                "OPS_TOKENS",
                format!("operators {} and {} share a token", a.name, b.name),
            ));
        }
    }
    Ok(tokens)
}

/// Shortest ops token accepted with `APP_ENV=production` (characters): a token is all that
/// guards `/ops`, so it must not be guessable.
pub const MIN_PRODUCTION_OPS_TOKEN: usize = 24;

/// With `APP_ENV=production`, every ops token must be at least [`MIN_PRODUCTION_OPS_TOKEN`]
/// characters; the error names the operator, never the token.
fn strong_ops_tokens(tokens: &[OpsToken], production: bool) -> Result<(), ConfigError> {
    if !production {
        return Ok(());
    }
    match tokens
        .iter()
        .find(|t| t.token.expose().chars().count() < MIN_PRODUCTION_OPS_TOKEN)
    {
        Some(weak) => Err(bad(
            if weak.name == "ops" {
                "OPS_TOKEN"
            } else {
                "OPS_TOKENS"
            },
            format!(
                "the token of operator {} is shorter than {MIN_PRODUCTION_OPS_TOKEN} characters \
                 (APP_ENV=production)",
                weak.name
            ),
        )),
        None => Ok(()),
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

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
    pub gemini_api_key: Option<Secret>,
    pub gemini_base_url: String,
    pub gemini_model: String,
    pub adwr_wells_url: String,
    /// FEMA's flood hazard zones layer (flood_zone_lookup).
    pub fema_nfhl_url: String,
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
    /// Gemini token prices (USD per million tokens); both set means scans carry a provider cost.
    pub gemini_usd_per_mtok: Option<(Decimal, Decimal)>,
    pub worker: WorkerConfig,
}

/// Queue worker tuning; the orphan window is `heartbeat x missed_heartbeats`.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub concurrency: usize,
    /// Jobs claimed per fetch. Twice the concurrency keeps the next jobs at hand while the
    /// running ones finish (no-op throughput 13k -> 17.6k jobs/s in the calls benchmark); the
    /// extra ones wait `Queued` under this worker, handed back on stop or by orphan rescue.
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
            size += 1; // the process's one LISTEN connection (crate::jobs::listen)
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
        let price = |var: &'static str| -> Result<Option<Decimal>, ConfigError> {
            get(var)
                .map(|v| {
                    Decimal::from_str(v)
                        .ok()
                        .filter(|d| !d.is_sign_negative())
                        .ok_or_else(|| bad(var, format!("not a non-negative decimal: {v:?}")))
                })
                .transpose()
        };
        let gemini_usd_per_mtok = match (
            price("GEMINI_INPUT_USD_PER_MTOK")?,
            price("GEMINI_OUTPUT_USD_PER_MTOK")?,
        ) {
            (Some(input), Some(output)) => Some((input, output)),
            (None, None) => None,
            _ => {
                return Err(bad(
                    "GEMINI_INPUT_USD_PER_MTOK",
                    "set both GEMINI_INPUT_USD_PER_MTOK and GEMINI_OUTPUT_USD_PER_MTOK, or neither",
                ));
            }
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
            "GEMINI_BASE_URL",
            "ADWR_WELLS_URL",
            "FEMA_NFHL_URL",
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
            gemini_api_key: secret("GEMINI_API_KEY"),
            gemini_base_url: text(
                "GEMINI_BASE_URL",
                "https://generativelanguage.googleapis.com",
            ),
            gemini_model: text("GEMINI_MODEL", "gemini-2.5-flash"),
            adwr_wells_url: text(
                "ADWR_WELLS_URL",
                "https://services.arcgis.com/C34zQ7veRS0V1t04/ArcGIS/rest/services/Well_Registry_2024/FeatureServer/0",
            ),
            fema_nfhl_url: text(
                "FEMA_NFHL_URL",
                "https://hazards.fema.gov/arcgis/rest/services/public/NFHL/MapServer/28",
            ),
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
            gemini_usd_per_mtok,
            worker,
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
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_server_credential_needs_the_public_url_it_signs_for() {
        let e = Config::from_vars(vars(&[("VAPI_SERVER_CREDENTIAL_ID", "cred-1")]))
            .expect_err("no PUBLIC_BASE_URL");
        assert!(
            e.to_string().starts_with("VAPI_SERVER_CREDENTIAL_ID"),
            "{e}"
        );
        let c = Config::from_vars(vars(&[
            ("VAPI_SERVER_CREDENTIAL_ID", " cred-1 "),
            ("PUBLIC_BASE_URL", "https://meter.example.com"),
        ]))
        .expect("config");
        assert_eq!(c.vapi_server_credential_id.as_deref(), Some("cred-1"));
    }

    #[test]
    fn ops_tokens_name_their_operators() {
        let c = Config::from_vars(vars(&[
            ("OPS_TOKENS", "anna:tok-anna, ben@oncall:tok-ben"),
            ("OPS_TOKEN", "tok-shared"),
        ]))
        .expect("config");
        assert_eq!(c.operator(b"tok-anna"), Some("anna"));
        assert_eq!(c.operator(b"tok-ben"), Some("ben@oncall"));
        assert_eq!(c.operator(b"tok-shared"), Some("ops"));
        assert_eq!(c.operator(b"tok-"), None);
        assert_eq!(c.operator(b""), None);
        for bad in [
            "anna",
            ":s3cr3t",
            "an na:s3cr3t",
            "anna:s3cr3t,anna:s3cr3t",
            "anna:",
        ] {
            let e = Config::from_vars(vars(&[("OPS_TOKENS", bad)])).expect_err(bad);
            assert!(e.to_string().starts_with("OPS_TOKENS"), "{e}");
            assert!(!e.to_string().contains("s3cr3t"), "no token in errors: {e}");
        }
        assert!(
            Config::from_vars(vars(&[]))
                .expect("config")
                .ops_tokens
                .is_empty()
        );
    }

    #[test]
    fn operators_sharing_a_token_stop_start_up_naming_them_not_the_token() {
        for (named, unnamed, who) in [
            ("anna:s3cr3t-shared,ben:s3cr3t-shared", None, "anna and ben"),
            ("anna:s3cr3t-shared", Some("s3cr3t-shared"), "anna and ops"),
            (
                "anna:s3cr3t-a,ben:s3cr3t-b,cleo:s3cr3t-b",
                None,
                "ben and cleo",
            ),
        ] {
            let mut v = vec![("OPS_TOKENS", named)];
            v.extend(unnamed.map(|t| ("OPS_TOKEN", t)));
            let e = Config::from_vars(vars(&v)).expect_err(named);
            assert_eq!(
                e.to_string(),
                format!("OPS_TOKENS: operators {who} share a token")
            );
            assert!(!e.to_string().contains("s3cr3t"), "no token in errors: {e}");
        }
        let e = Config::from_vars(vars(&[
            ("OPS_TOKENS", "ops:s3cr3t-a"),
            ("OPS_TOKEN", "s3cr3t-b"),
        ]))
        .expect_err("ops named twice");
        assert_eq!(e.var, "OPS_TOKEN");
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
    }

    #[test]
    fn short_ops_tokens_stop_start_up_in_production_only() {
        let short = "s3cr3t-23-characters-xx"[..23].to_string();
        let long = "s3cr3t-24-characters-xxx";
        assert_eq!(long.chars().count(), MIN_PRODUCTION_OPS_TOKEN);
        let named = format!("anna:{long},ben:{short}");
        let e = Config::from_vars(vars(&[("OPS_TOKENS", &named), ("APP_ENV", "production")]))
            .expect_err("short token");
        assert_eq!(e.var, "OPS_TOKENS");
        assert!(e.to_string().contains("operator ben"), "{e}");
        assert!(!e.to_string().contains("s3cr3t"), "no token in errors: {e}");
        let e = Config::from_vars(vars(&[("OPS_TOKEN", &short), ("APP_ENV", "Production")]))
            .expect_err("short token");
        assert_eq!(e.var, "OPS_TOKEN");
        assert!(e.to_string().contains("operator ops"), "{e}");
        assert!(
            Config::from_vars(vars(&[("OPS_TOKENS", &named)])).is_ok(),
            "short tokens are fine outside production"
        );
        let both = format!("anna:{long}");
        assert!(
            Config::from_vars(vars(&[
                ("OPS_TOKENS", &both),
                ("OPS_TOKEN", "s3cr3t-the-unnamed-ops-one"),
                ("APP_ENV", "production"),
            ]))
            .is_ok()
        );
    }

    #[test]
    fn private_image_hosts_are_refused_in_production() {
        let both = [
            ("IMAGE_FETCH_ALLOW_PRIVATE", "true"),
            ("APP_ENV", "production"),
        ];
        let e = Config::from_vars(vars(&both)).expect_err("refused");
        assert!(e.to_string().contains("IMAGE_FETCH_ALLOW_PRIVATE"), "{e}");
        assert!(
            Config::from_vars(vars(&both[..1])).is_ok(),
            "fine for tests and demos"
        );
        assert!(Config::from_vars(vars(&both[1..])).is_ok());
    }

    #[test]
    fn pool_size_follows_roles_unless_set() {
        let c = Config::from_vars(vars(&[])).expect("config");
        assert_eq!(c.pool_size(true, false, false), 7, "web: 6 + LISTEN");
        assert_eq!(
            c.pool_size(false, true, false),
            11,
            "worker: 8 + 2 + LISTEN"
        );
        assert_eq!(c.pool_size(false, false, true), 2, "clock");
        assert_eq!(c.pool_size(true, true, true), 19, "serve");
        assert_eq!(c.pool_size(false, false, false), 4, "a command");
        // 2 web + 3 worker + 1 clock fit a 60-connection server with room to spare.
        let deployment = 2 * c.pool_size(true, false, false)
            + 3 * c.pool_size(false, true, false)
            + c.pool_size(false, false, true);
        assert_eq!(deployment, 49);
        let c = Config::from_vars(vars(&[("WORKER_CONCURRENCY", "32")])).expect("config");
        assert_eq!(c.pool_size(false, true, false), 35);
        let c = Config::from_vars(vars(&[("DATABASE_MAX_CONNECTIONS", "6")])).expect("config");
        assert_eq!(c.pool_size(true, true, true), 6);
        assert!(Config::from_vars(vars(&[("DATABASE_MAX_CONNECTIONS", "lots")])).is_err());
    }

    #[test]
    fn defaults_bind_to_loopback_8080_in_phoenix() {
        let c = Config::from_vars(vars(&[])).expect("defaults are valid");
        assert_eq!(c.bind_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.billing_timezone, chrono_tz::America::Phoenix);
        assert_eq!(c.worker.orphan_window(), Duration::from_secs(30));
    }

    #[test]
    fn port_means_all_interfaces() {
        let c = Config::from_vars(vars(&[("PORT", "5000"), ("BIND_ADDR", "127.0.0.1:1")]))
            .expect("valid");
        assert_eq!(c.bind_addr.to_string(), "0.0.0.0:5000");
    }

    #[test]
    fn errors_name_the_variable() {
        let e =
            Config::from_vars(vars(&[("BILLING_TIMEZONE", "Mars/Olympus")])).expect_err("invalid");
        assert_eq!(e.var, "BILLING_TIMEZONE");
        for bad in ["0", "-1", "soon", "7200"] {
            let e = Config::from_vars(vars(&[("WORKER_POLL_SECS", bad)])).expect_err("invalid");
            assert!(e.to_string().starts_with("WORKER_POLL_SECS:"), "{e}");
        }
        let c = Config::from_vars(vars(&[("WORKER_CONCURRENCY", "5")])).expect("config");
        assert_eq!(c.worker.fetch_batch, 10, "twice the concurrency");
        let c = Config::from_vars(vars(&[("WORKER_FETCH_BATCH", "3")])).expect("config");
        assert_eq!(c.worker.fetch_batch, 3);
        let c = Config::from_vars(vars(&[("WORKER_POLL_SECS", "0.25")])).expect("config");
        assert_eq!(c.worker.poll, Duration::from_millis(250));
        let e = Config::from_vars(vars(&[("WORKER_CONCURRENCY", "many")])).expect_err("invalid");
        assert!(e.to_string().starts_with("WORKER_CONCURRENCY:"), "{e}");
        let e = Config::from_vars(vars(&[("LOG_FORMAT", "xml")])).expect_err("invalid");
        assert_eq!(e.var, "LOG_FORMAT");
    }

    #[test]
    fn serving_needs_a_vapi_secret_and_secrets_stay_redacted() {
        let c = Config::from_vars(vars(&[])).expect("valid");
        assert_eq!(
            c.require_webhook_secret().expect_err("invalid").var,
            "VAPI_WEBHOOK_SECRET"
        );
        let c = Config::from_vars(vars(&[("VAPI_HMAC_SECRET", "hunter2")])).expect("valid");
        assert!(c.require_webhook_secret().is_ok());
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn job_timeout_must_fit_in_the_orphan_window() {
        let e = Config::from_vars(vars(&[("JOB_TIMEOUT_SECS", "30")])).expect_err("invalid");
        assert_eq!(e.var, "JOB_TIMEOUT_SECS");
    }
}
