//! `agent-meter tools list [--json]`: every registered tool, its default price in force, how many
//! agents have it and how many of them pay their own price.

use chrono_tz::Tz;
use clap::Subcommand;
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::PgPool;

use crate::tools;

#[derive(Subcommand)]
pub enum ToolsCommand {
    /// Every registered tool: name, aliases, metric, default price in force, queue, provider,
    /// agents, and how many agents pay their own price.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Every tool's environment variables with their defaults, as `.env.example` lists them
    /// (needs no database).
    Env,
}

#[derive(Debug, Serialize)]
struct ToolRow {
    name: &'static str,
    aliases: &'static [&'static str],
    kind: &'static str,
    metric: &'static str,
    /// The default price in force today (BILLING_TIMEZONE); `None`: no price, the tool cannot run.
    #[serde(with = "rust_decimal::serde::str_option")]
    price_usd: Option<Decimal>,
    queue: &'static str,
    provider: &'static str,
    /// Agents whose assistant declares it.
    agents: i64,
    /// Agents paying their own price today instead of the default (`prices` lists them).
    overrides: i64,
}

pub async fn run(pool: &PgPool, tz: Tz, command: ToolsCommand) -> anyhow::Result<()> {
    let ToolsCommand::List { json } = command else {
        print!("{}", crate::tools::env_example());
        return Ok(());
    };
    let mut conn = pool.acquire().await?;
    let today = chrono::Utc::now().with_timezone(&tz).date_naive();
    let mut rows = Vec::new();
    for t in tools::registry() {
        rows.push(ToolRow {
            name: t.name,
            aliases: t.aliases,
            kind: t.kind,
            metric: t.metric,
            price_usd: tools::price_today(&mut conn, t, tz).await?,
            queue: t.queue,
            provider: t.provider,
            agents: crate::store::tools::agents_with(&mut conn, t.name).await?,
            overrides: crate::store::pricing::overrides_on(&mut conn, t.metric, today).await?,
        });
    }
    super::print_rows(
        json,
        &rows,
        &[
            ("TOOL", 20),
            ("ALIASES", 36),
            ("METRIC", 20),
            ("PRICE", -9),
            ("QUEUE", 20),
            ("PROVIDER", 8),
            ("AGENTS", -6),
            ("OVERRIDES", -9),
        ],
        |r| {
            vec![
                r.name.to_string(),
                r.aliases.join(", "),
                r.metric.to_string(),
                r.price_usd
                    .map_or_else(|| "none".to_string(), |p| p.to_string()),
                r.queue.to_string(),
                r.provider.to_string(),
                r.agents.to_string(),
                r.overrides.to_string(),
            ]
        },
    )
}
