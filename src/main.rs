//! The `agent-meter` command: one binary, one subcommand per role or chore.

use std::{process::ExitCode, sync::Arc, time::Duration};

use agent_meter::{
    app::{self, Roles},
    cli::{
        self,
        agents::AgentsCommand,
        billing::{Format, InvoicesCommand, MonthArgs, PricesCommand},
        jobs::JobsCommand,
        tools::ToolsCommand,
    },
    config::{Config, LogFormat},
    jobs::Deps,
    store::{db, seed},
    tools,
};
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::sync::watch;

#[derive(Parser)]
#[command(name = "agent-meter", version, about = "Vapi webhooks in, metered usage out: routing and billing for insurance agencies' AI phone lines.", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply database migrations (apalis's queue schema, then ours). Safe to repeat.
    Migrate,
    /// Insert the launch agents and default prices. Idempotent; refuses APP_ENV=production.
    Seed,
    /// Run web, worker and clock in one process (development, small deployments).
    Serve {
        /// Apply migrations before starting.
        #[arg(long)]
        migrate: bool,
        /// Apply the seeds before starting (implies nothing in production: refused there).
        #[arg(long)]
        seed: bool,
    },
    /// Run only the webhook receiver and health probes.
    Web,
    /// Run only the job workers.
    Worker,
    /// Run only the clock, which enqueues the jobs in jobs/schedule.toml. Safe to run more than one.
    Clock,
    /// List, add and change agents (tenants) and their personas.
    #[command(subcommand)]
    Agents(Box<AgentsCommand>),
    /// List prices, or start a new one on a date.
    #[command(subcommand)]
    Prices(PricesCommand),
    /// Monthly invoices: rollup, finalize, show.
    #[command(subcommand)]
    Invoices(InvoicesCommand),
    /// Usage per agent and metric for a month: count, quantity, billed, cost (the provider's, else
    /// the price's unit cost), margin, and which costs were used.
    Usage {
        #[command(flatten)]
        month: MonthArgs,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// See, re-run and cancel jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// The billable tools: what each is, its price in force, how many agents have it.
    #[command(subcommand)]
    Tools(ToolsCommand),
    /// The whole story in one command on a fresh demo database, with local stand-ins for Vapi,
    /// Gemini, ArcGIS and Discord; prints usage, invoices and where to look next.
    Demo {
        /// Stop when the story is told instead of serving until Ctrl-C.
        #[arg(long)]
        exit: bool,
    },
    /// Bring the daily usage summary that reports read up to date now (the daily prune job does
    /// it within half its time budget; run this after a bulk import of usage rows).
    SummarizeUsage {
        /// Give up (exit 1, keeping what was committed) after this many seconds.
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        budget_secs: u64,
    },
    /// Reconcile one day's calls with the Vapi API (what the 03:00 cron does).
    SyncCalls {
        /// The day, YYYY-MM-DD, in BILLING_TIMEZONE.
        #[arg(long)]
        date: chrono::NaiveDate,
        /// Only this agent (by email).
        #[arg(long)]
        agent: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A .env file is for development; real deployments set the environment.
    let _ = dotenvy::dotenv();
    // The tools' own variables are checked with the rest (`tools::check_settings`).
    let config = match Config::from_env().and_then(|c| tools::check_settings(&c).map(|()| c)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("agent-meter: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(config.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agent-meter: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "agent-meter failed");
            eprintln!("agent-meter: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr so command output (`agents list --json`) stays clean on stdout.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    let roles = match &command {
        Command::Serve { .. } => Some(Roles::ALL),
        Command::Web => Some(Roles {
            web: true,
            worker: false,
            clock: false,
        }),
        Command::Worker => Some(Roles {
            web: false,
            worker: true,
            clock: false,
        }),
        Command::Clock => Some(Roles {
            web: false,
            worker: false,
            clock: true,
        }),
        _ => None,
    };
    if roles.is_some_and(|r| r.web) {
        config.require_webhook_secret()?;
    }
    if let Command::Demo { exit } = command {
        anyhow::ensure!(
            !config.is_production(),
            "refusing to run the demo: APP_ENV=production"
        );
        let url = config.database_url.as_ref().map(|s| s.expose().to_string());
        return cli::demo::run(url.as_deref(), config.bind_addr, !exit).await;
    }
    if let Command::Tools(ToolsCommand::Env) = command {
        // Needs no database: the registry's variables, as `.env.example` lists them.
        print!("{}", tools::env_example());
        return Ok(());
    }
    let seeding = matches!(command, Command::Seed | Command::Serve { seed: true, .. });
    if seeding && config.is_production() {
        anyhow::bail!("refusing to seed: APP_ENV=production");
    }
    let resolved =
        db::resolve_database_url(config.database_url.as_ref().map(|s| s.expose())).await?;
    if resolved.source == "DATABASE_URL" {
        tracing::info!(source = resolved.source, "database chosen");
    } else {
        // A local default carries no password, so the URL itself is safe to show.
        tracing::info!(source = resolved.source, url = %resolved.url, "database chosen");
    }
    let pool_size = roles.map_or(config.pool_size(false, false, false), |r| {
        config.pool_size(r.web, r.worker, r.clock)
    });
    let pool = db::connect(&resolved.url, pool_size)
        .await
        .context("connecting to the database")?;

    let migrating = matches!(
        command,
        Command::Migrate | Command::Serve { migrate: true, .. }
    );
    if migrating {
        app::migrate(&pool).await.context("migrating")?;
        tracing::info!("migrations applied");
    }
    if seeding {
        seed::run(&pool).await.context("seeding")?;
        tracing::info!("seeds applied");
    }
    let config = Arc::new(config);
    let deps = || Deps::new(pool.clone(), config.clone());
    match command {
        Command::Agents(cmd) => {
            match *cmd {
                AgentsCommand::Invite { email } => {
                    return cli::agents::invite(&deps(), &email).await;
                }
                AgentsCommand::Webhooks(w) => return cli::webhooks::run(&deps(), w).await,
                _ => {}
            }
            return cli::agents::run(&pool, config.billing_timezone, *cmd).await;
        }
        Command::Jobs(cmd) => return cli::jobs::run(&pool, cmd).await,
        Command::Tools(cmd) => return cli::tools::run(&pool, config.billing_timezone, cmd).await,
        Command::Prices(cmd) => return cli::billing::prices(&deps(), cmd).await,
        Command::Invoices(cmd) => return cli::billing::invoices(&deps(), cmd).await,
        Command::Usage { month, format } => {
            return cli::billing::usage(&deps(), month, format).await;
        }
        Command::SummarizeUsage { budget_secs } => {
            return cli::billing::summarize_usage(&deps(), Duration::from_secs(budget_secs)).await;
        }
        Command::SyncCalls { date, agent } => {
            return cli::billing::sync_calls(&deps(), date, agent.as_deref()).await;
        }
        _ => {}
    }
    let Some(roles) = roles else { return Ok(()) };

    let listener = if roles.web {
        Some(
            tokio::net::TcpListener::bind(config.bind_addr)
                .await
                .with_context(|| format!("binding BIND_ADDR {}", config.bind_addr))?,
        )
    } else {
        None
    };
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        app::termination_signal().await;
        tracing::info!("shutdown requested; finishing in-flight work");
        let _ = stop.send(true);
    });
    app::run(pool.clone(), config, roles, listener, shutdown).await?;
    pool.close().await;
    tracing::info!("stopped");
    Ok(())
}
