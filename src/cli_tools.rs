//! `agent-meter tools list [--json]`: every registered tool, its price in force and how many
//! agents have it. Also the start-up check every web and worker runs: each registered tool has an
//! allowed finding kind and a price in force, else the process names the tool and stops.

use chrono_tz::Tz;
use clap::Subcommand;
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use crate::tools::{self, ToolSpec};

#[derive(Subcommand)]
pub enum ToolsCommand {
    /// Every registered tool: name, aliases, metric, price in force, queue, provider, agents.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
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
}

pub async fn run(pool: &PgPool, tz: Tz, command: ToolsCommand) -> anyhow::Result<()> {
    let ToolsCommand::List { json } = command;
    let mut conn = pool.acquire().await?;
    let mut rows = Vec::new();
    for t in tools::registry() {
        rows.push(ToolRow {
            name: t.name,
            aliases: t.aliases,
            kind: t.kind,
            metric: t.metric,
            price_usd: price_today(&mut conn, t, tz).await?,
            queue: t.queue,
            provider: t.provider,
            agents: agents_with(&mut conn, t).await?,
        });
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<36} {:<20} {:>9} {:<20} {:<8} {:>6}",
        "TOOL", "ALIASES", "METRIC", "PRICE", "QUEUE", "PROVIDER", "AGENTS"
    );
    for r in rows {
        println!(
            "{:<20} {:<36} {:<20} {:>9} {:<20} {:<8} {:>6}",
            r.name,
            r.aliases.join(", "),
            r.metric,
            r.price_usd
                .map_or_else(|| "none".to_string(), |p| p.to_string()),
            r.queue,
            r.provider,
            r.agents
        );
    }
    Ok(())
}

/// The default price of the tool's metric in force today.
async fn price_today(
    conn: &mut PgConnection,
    tool: &ToolSpec,
    tz: Tz,
) -> Result<Option<Decimal>, sqlx::Error> {
    let today = chrono::Utc::now().with_timezone(&tz).date_naive();
    crate::store::pricing::default_price_on(conn, tool.metric, today).await
}

async fn agents_with(conn: &mut PgConnection, tool: &ToolSpec) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM agents WHERE tools IS NULL OR $1 = ANY (tools)")
        .bind(tool.name)
        .fetch_one(conn)
        .await
}

/// Adds every registered tool's finding kind to `finding_kinds` (run by `migrate`).
pub async fn sync_kinds(pool: &PgPool) -> Result<(), sqlx::Error> {
    let kinds: Vec<&str> = tools::registry().iter().map(|t| t.kind).collect();
    sqlx::query(
        "INSERT INTO finding_kinds (kind) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
    )
    .bind(&kinds)
    .execute(pool)
    .await?;
    Ok(())
}

/// Every registered tool has its finding kind allowed and a price in force today; else an error
/// naming each tool and what it lacks.
pub async fn check(pool: &PgPool, tz: Tz) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    let mut problems = Vec::new();
    for t in tools::registry() {
        let allowed: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM finding_kinds WHERE kind = $1)")
                .bind(t.kind)
                .fetch_one(&mut *conn)
                .await?;
        if !allowed {
            problems.push(format!(
                "{}: finding kind {:?} is not in finding_kinds (run `agent-meter migrate`)",
                t.name, t.kind
            ));
        }
        if price_today(&mut conn, t, tz).await?.is_none() {
            problems.push(format!(
                "{}: no default {} price in force today \
                 (`agent-meter prices set {} <USD> --from <YYYY-MM-DD> --unit <unit>`)",
                t.name, t.metric, t.metric
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("registered tools cannot run: {}", problems.join("; "))
    }
}
