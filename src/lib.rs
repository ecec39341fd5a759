//! agent-meter: Vapi webhooks in, Postgres-backed jobs, exactly-once usage metering out.
//!
//! - [`config`]: every environment variable, validated once.
//! - [`db`]: pool, migrations (ours and apalis's), the local default database.
//! - [`http`]: the webhook receiver and probes (the `web` role).
//! - [`jobs`]: one module per job kind; [`worker`] registers them (the `worker` role).
//! - [`clock`]: `jobs/schedule.toml` ticks enqueue jobs (the `clock` role).
//! - [`store`]: SQL by table family; [`money`]: exact amounts and the one rounding rule.
//! - [`vapi`]: the Vapi server messages we read; [`seed`]: launch agents and prices.
//! - [`assistant`]: answers to assistant-request; [`tools`]: tool-call parsing.
//! - [`transfer`]: warm transfer to the agency: number, hours, the in-hours decision.
//! - [`providers`]: Gemini, ArcGIS, Vapi and Discord clients that classify their failures.
//! - [`calendar`]: months and days in the billing zone (a leaf).
//! - [`lifecycle`]: an agency's states, moves and dates, in one place.
//! - [`app`]: runs any mix of roles in one process with graceful shutdown.

pub mod app;
pub mod billing;
pub mod cli;
pub mod config;
pub mod failpoint;
pub mod http;
pub mod jobs;
pub mod lifecycle;
pub mod money;
pub mod providers;
pub mod store;
pub mod telemetry;
pub mod tools;
pub mod vapi;
