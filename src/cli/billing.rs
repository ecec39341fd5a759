//! Billing commands: `prices`, `invoices`, `usage` and `sync-calls`.

use chrono::NaiveDate;
use clap::{Subcommand, ValueEnum};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::export::print_csv;
use crate::{
    billing::{self, Month},
    jobs::{Deps, sync_calls::SyncCalls},
    store::{pricing, reports},
};

#[derive(Subcommand)]
pub enum PricesCommand {
    /// Every price range, defaults first, then per-agent overrides.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Start a new price on a date; the range in force then ends that day.
    Set {
        /// The metric (subscription, setup_fee, vapi_call_minutes, or a tool's: `agent-meter tools list`).
        metric: String,
        /// Unit price in USD, e.g. 0.075.
        price: Decimal,
        /// First day of the new price (YYYY-MM-DD, in BILLING_TIMEZONE).
        #[arg(long)]
        from: NaiveDate,
        /// Only for this agent (an override of the default).
        #[arg(long)]
        agent: Option<String>,
        /// The unit (scan, minute, month, ...); defaults to the metric's previous unit.
        #[arg(long)]
        unit: Option<String>,
        /// Our cost per unit, for margins.
        #[arg(long)]
        cost: Option<Decimal>,
        /// A day before today re-prices what was metered since: without this the price is
        /// refused (saying how many rows it would re-price); with it those rows are reversed and
        /// entered again at the new price (refused where a finalized invoice holds them).
        #[arg(long)]
        reprice: bool,
    },
}

#[derive(Subcommand)]
pub enum InvoicesCommand {
    /// Build (or rebuild) the month's draft invoices.
    Rollup(MonthArgs),
    /// Rebuild and freeze the month's drafts; later usage goes to the next month as adjustments.
    Finalize(MonthArgs),
    /// Print the month's invoices.
    Show {
        #[command(flatten)]
        month: MonthArgs,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Where the usage that occurred in the month is billed: the invoice and line holding it
    /// (billed when final, pending on a draft), or awaiting a rollup.
    Trace {
        #[command(flatten)]
        month: MonthArgs,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(clap::Args)]
pub struct MonthArgs {
    /// The month, YYYY-MM (a calendar month in BILLING_TIMEZONE).
    #[arg(long, value_parser = parse_month)]
    pub month: Month,
    /// Only this agent (by email).
    #[arg(long)]
    pub agent: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

fn parse_month(s: &str) -> Result<Month, String> {
    Month::parse(s)
}

/// The id of the agent with `email`, when one is asked for; an unknown email is an error naming it.
async fn agent_id(deps: &Deps, email: Option<&str>) -> anyhow::Result<Option<Uuid>> {
    let Some(email) = email else { return Ok(None) };
    let mut conn = deps.pool.acquire().await?;
    Ok(Some(super::agent(&mut conn, email).await?.id))
}

pub async fn prices(deps: &Deps, command: PricesCommand) -> anyhow::Result<()> {
    let mut conn = deps.pool.acquire().await?;
    match command {
        PricesCommand::List { json } => {
            let rows = pricing::list(&mut conn).await?;
            super::print_rows(
                json,
                &rows,
                &[
                    ("METRIC", 20),
                    ("UNIT", 8),
                    ("PRICE", -12),
                    ("COST", -10),
                    ("FROM", 12),
                    ("TO", 12),
                    ("AGENT", 0),
                ],
                |r| {
                    vec![
                        r.metric_type.clone(),
                        r.unit.clone(),
                        r.unit_price_usd.normalize().to_string(),
                        super::or_dash(r.unit_cost_usd.map(|c| c.normalize())),
                        r.effective_from.to_string(),
                        super::or_dash(r.effective_to),
                        r.agent_email.clone().unwrap_or_else(|| "(default)".into()),
                    ]
                },
            )?;
        }
        PricesCommand::Set {
            metric,
            price,
            from,
            agent,
            unit,
            cost,
            reprice,
        } => {
            anyhow::ensure!(!price.is_sign_negative(), "a price cannot be negative");
            drop(conn);
            let agent_id = agent_id(deps, agent.as_deref()).await?;
            let tz = deps.config.billing_timezone;
            let today = chrono::Utc::now().with_timezone(&tz).date_naive();
            let mut tx = deps.pool.begin().await?;
            let id = pricing::set(
                &mut tx,
                agent_id,
                &metric,
                price,
                cost,
                unit.as_deref(),
                from,
            )
            .await?;
            // A price from a past day re-prices what was metered since: only when asked, and
            // never under a finalized invoice. Refusing rolls the new price back.
            let mut repriced = 0;
            if from < today {
                let r = pricing::repricing(&mut tx, agent_id, &metric, from, tz).await?;
                anyhow::ensure!(
                    reprice,
                    "{from} is before today ({today} in {tz}): {} metered {metric} row(s) since then \
                     would be re-priced. Run again with --reprice to re-price them by reversal and \
                     re-entry, or start the price today or later",
                    r.rows
                );
                anyhow::ensure!(
                    r.finalized.is_empty(),
                    "{} metered {metric} row(s) since {from} would be re-priced, and finalized \
                     invoices ({}) hold some of them: refused, nothing changed",
                    r.rows,
                    r.finalized.join(", ")
                );
                repriced = pricing::reprice(&mut tx, agent_id, &metric, from, tz, id).await?;
            }
            tx.commit().await?;
            println!(
                "{metric} costs {} from {from} (price id {id})",
                price.normalize()
            );
            if from < today {
                println!("re-priced {repriced} metered row(s) by reversal and re-entry");
            }
        }
    }
    Ok(())
}

pub async fn invoices(deps: &Deps, command: InvoicesCommand) -> anyhow::Result<()> {
    let tz = deps.config.billing_timezone;
    let only = match &command {
        InvoicesCommand::Rollup(m) | InvoicesCommand::Finalize(m) => &m.agent,
        InvoicesCommand::Show { month, .. } | InvoicesCommand::Trace { month, .. } => &month.agent,
    };
    // A mistyped email would otherwise filter down to nothing and succeed ("0 invoice(s)").
    agent_id(deps, only.as_deref()).await?;
    match command {
        InvoicesCommand::Rollup(m) => {
            let done = billing::rollup(&deps.pool, m.month, tz, m.agent.as_deref()).await?;
            for o in &done {
                let state = if o.rebuilt {
                    "draft"
                } else {
                    "finalized, unchanged"
                };
                println!(
                    "{} {} total {} ({state})",
                    m.month,
                    o.agent_id,
                    reports::cents(o.total)
                );
            }
            println!("{} invoice(s) for {}", done.len(), m.month);
        }
        InvoicesCommand::Finalize(m) => {
            let stripe = deps.config.stripe.is_some();
            let done = billing::finalize_for(
                &deps.pool,
                m.month,
                tz,
                m.agent.as_deref(),
                chrono::Utc::now(),
                stripe,
            )
            .await?;
            println!(
                "{} invoice(s) finalized for {}",
                done.iter().filter(|o| o.rebuilt).count(),
                m.month
            );
            if stripe {
                let queued = crate::jobs::stripe::enqueue_pending(&deps.pool)
                    .await
                    .map_err(|e| anyhow::anyhow!("queueing Stripe pushes: {e}"))?;
                println!("{queued} invoice(s) queued for Stripe");
            }
        }
        InvoicesCommand::Show { month, format } => {
            let mut conn = deps.pool.acquire().await?;
            let list =
                reports::invoices(&mut conn, month.month.first_day, month.agent.as_deref()).await?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&list)?),
                Format::Csv => {
                    let header = [
                        "agent_id",
                        "agency_name",
                        "period",
                        "status",
                        "kind",
                        "metric_type",
                        "quantity",
                        "unit_price",
                        "amount",
                        "total",
                        "payment_status",
                    ];
                    let rows = list.iter().flat_map(|i| {
                        i.lines.iter().map(move |l| {
                            [
                                i.agent_id.to_string(),
                                i.agency_name.to_string(),
                                i.period.to_string(),
                                i.status.to_string(),
                                l.kind.to_string(),
                                l.metric_type.to_string(),
                                l.quantity.to_string(),
                                l.unit_price.to_string(),
                                l.amount.to_string(),
                                i.total.to_string(),
                                i.payment_status.clone().unwrap_or_default(),
                            ]
                        })
                    });
                    print_csv(header, rows)?;
                }
                Format::Table => {
                    for i in &list {
                        let payment = match (&i.payment_status, i.paid_at) {
                            (Some(p), Some(at)) => format!(", {p} {}", at.format("%Y-%m-%d")),
                            (Some(p), None) => format!(", {p}"),
                            (None, _) => String::new(),
                        };
                        println!(
                            "{} — {} ({}{payment}) [agent {}]",
                            i.agency_name, i.period, i.status, i.agent_id
                        );
                        for l in &i.lines {
                            println!(
                                "  {:<12} {:<18} {:>14} x {:>10} = {:>10}",
                                l.kind, l.metric_type, l.quantity, l.unit_price, l.amount
                            );
                        }
                        println!("  {:<12} {:>59}\n", "TOTAL", i.total);
                    }
                }
            }
        }
        InvoicesCommand::Trace { month, format } => {
            trace(deps, month, format).await?;
        }
    }
    Ok(())
}

async fn trace(deps: &Deps, m: MonthArgs, format: Format) -> anyhow::Result<()> {
    let tz = deps.config.billing_timezone;
    let mut conn = deps.pool.acquire().await?;
    let rows = reports::provenance(
        &mut conn,
        m.month.start(tz),
        m.month.next().start(tz),
        m.agent.as_deref(),
    )
    .await?;
    let or_dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Format::Csv => {
            let header = [
                "agent_id",
                "agency_name",
                "metric_type",
                "unit_price",
                "state",
                "invoice",
                "line_kind",
                "invoice_line_id",
                "count",
                "quantity",
            ];
            let rows = rows.iter().map(|r| {
                [
                    r.agent_id.to_string(),
                    r.agency_name.to_string(),
                    r.metric_type.to_string(),
                    r.unit_price.to_string(),
                    r.state.to_string(),
                    r.invoice.clone().unwrap_or_default(),
                    r.line_kind.clone().unwrap_or_default(),
                    r.invoice_line_id.map(|l| l.to_string()).unwrap_or_default(),
                    r.events.to_string(),
                    r.quantity.to_string(),
                ]
            });
            print_csv(header, rows)?;
        }
        Format::Table => {
            println!(
                "{:<36} {:<24} {:<18} {:>10} {:<16} {:<8} {:<10} {:>7} {:>14}",
                "AGENT",
                "AGENCY",
                "METRIC",
                "PRICE",
                "STATE",
                "INVOICE",
                "LINE",
                "COUNT",
                "QUANTITY"
            );
            for r in &rows {
                println!(
                    "{:<36} {:<24} {:<18} {:>10} {:<16} {:<8} {:<10} {:>7} {:>14}",
                    r.agent_id,
                    r.agency_name,
                    r.metric_type,
                    r.unit_price,
                    r.state,
                    or_dash(&r.invoice),
                    or_dash(&r.line_kind),
                    r.events,
                    r.quantity
                );
            }
        }
    }
    Ok(())
}

pub async fn usage(deps: &Deps, m: MonthArgs, format: Format) -> anyhow::Result<()> {
    let tz = deps.config.billing_timezone;
    agent_id(deps, m.agent.as_deref()).await?; // an unknown email is an error, not no rows
    let mut conn = deps.pool.acquire().await?;
    let rows = reports::usage(&mut conn, m.month, tz, m.agent.as_deref()).await?;
    match format {
        Format::Json => {
            let out: Vec<_> = rows
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "agent_id": r.agent_id, "agency_name": r.agency_name, "metric_type": r.metric_type, "count": r.events,
                        "quantity": r.quantity.normalize().to_string(), "billed": reports::cents(r.billed_usd),
                        "provider_cost": reports::cents(r.provider_cost_usd), "cost": reports::cents(r.cost_usd),
                        "margin": reports::cents(r.margin_usd()), "cost_source": r.costs.source(),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Format::Csv => {
            let header = [
                "agent_id",
                "agency_name",
                "metric_type",
                "count",
                "quantity",
                "billed",
                "cost",
                "margin",
                "cost_source",
            ];
            let rows = rows.iter().map(|r| {
                [
                    r.agent_id.to_string(),
                    r.agency_name.to_string(),
                    r.metric_type.to_string(),
                    r.events.to_string(),
                    r.quantity.normalize().to_string(),
                    reports::cents(r.billed_usd),
                    reports::cents(r.cost_usd),
                    reports::cents(r.margin_usd()),
                    r.costs.source().to_string(),
                ]
            });
            print_csv(header, rows)?;
        }
        Format::Table => {
            println!(
                "{:<36} {:<30} {:<18} {:>7} {:>14} {:>10} {:>10} {:>10} {:<9}",
                "AGENT",
                "AGENCY",
                "METRIC",
                "COUNT",
                "QUANTITY",
                "BILLED",
                "COST",
                "MARGIN",
                "COST FROM"
            );
            for r in &rows {
                println!(
                    "{:<36} {:<30} {:<18} {:>7} {:>14} {:>10} {:>10} {:>10} {:<9}",
                    r.agent_id,
                    r.agency_name,
                    r.metric_type,
                    r.events,
                    r.quantity.normalize(),
                    reports::cents(r.billed_usd),
                    reports::cents(r.cost_usd),
                    reports::cents(r.margin_usd()),
                    r.costs.source()
                );
            }
        }
    }
    Ok(())
}

/// `summarize-usage`: the daily summary brought up to the ledger's cut of now, in chunks that
/// each commit; an error (exit 1) when the budget runs out first (a rerun carries on).
pub async fn summarize_usage(deps: &Deps, budget: std::time::Duration) -> anyhow::Result<()> {
    let tz = deps.config.billing_timezone;
    let cut = crate::billing::rollup::ledger_cut(&deps.pool).await?;
    let done = crate::store::usage_daily::refresh(&deps.pool, tz, cut, budget).await?;
    if !done.complete {
        anyhow::bail!(
            "the summary took {} ledger row(s) but is not up to date after {} s; run it again (or with a larger --budget-secs) to carry on",
            done.rows,
            budget.as_secs()
        );
    }
    println!(
        "usage summary ({}) up to date through {}: {} ledger row(s) added",
        tz.name(),
        cut.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        done.rows
    );
    Ok(())
}

pub async fn sync_calls(deps: &Deps, date: NaiveDate, agent: Option<&str>) -> anyhow::Result<()> {
    let agent_id = agent_id(deps, agent).await?;
    anyhow::ensure!(
        deps.config.vapi_api_key.is_some(),
        "VAPI_API_KEY is not set: there is no Vapi API to reconcile with"
    );
    let report = SyncCalls {
        date,
        agent_id,
        slice: None,
    }
    .sync(deps)
    .await?;
    for a in &report.per_agency {
        println!(
            "{date} {}: {} found, {} new, {} metered, {} corrected, {} not connected, {} failed",
            a.email, a.seen, a.new, a.metered, a.corrected, a.not_connected, a.failed
        );
    }
    println!(
        "{date}: {} agent(s), {} call(s) seen, {} new, {} metered, {} corrected, {} not connected, {} failed, {} unroutable",
        report.agents,
        report.seen,
        report.new,
        report.metered,
        report.corrected,
        report.not_connected,
        report.failed,
        report.unroutable
    );
    let failed: Vec<&str> = report
        .per_agency
        .iter()
        .filter(|a| a.failed > 0)
        .map(|a| a.email.as_str())
        .collect();
    anyhow::ensure!(
        failed.is_empty(),
        "not everything was synced for: {} (the others were)",
        failed.join(", ")
    );
    Ok(())
}
