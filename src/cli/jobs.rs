//! `agent-meter jobs ...`: find failed jobs, see why, re-run or cancel them. Every action is
//! written to `ops_audit` with who did it.

use std::io::{BufRead, IsTerminal, Write};

use chrono::{DateTime, Utc};
use clap::Subcommand;
use sqlx::PgPool;

use crate::store::queue::{self, JobFilter};

#[derive(Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many rows.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// One job: its arguments, state, timestamps and every failed attempt.
    Show { id: String },
    /// Re-run failed or cancelled jobs with a fresh set of attempts (metered at most once anyway).
    Retry {
        /// Job ids; or use --failed with filters.
        ids: Vec<String>,
        /// Every failed job matching the filters.
        #[arg(long)]
        failed: bool,
        #[command(flatten)]
        filter: FilterArgs,
        /// Print what would be re-run and stop.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation (needed for --failed without a terminal; job ids given
        /// by name are re-run without asking).
        #[arg(long)]
        yes: bool,
        /// Who is acting, for the audit trail (default: the OS user).
        #[arg(long)]
        actor: Option<String>,
    },
    /// Cancel jobs that have not started yet.
    Cancel {
        ids: Vec<String>,
        /// Who is acting, for the audit trail (default: the OS user).
        #[arg(long)]
        actor: Option<String>,
    },
}

#[derive(clap::Args, Default)]
pub struct FilterArgs {
    /// pending, running, failed, done or cancelled.
    #[arg(long, value_parser = ["pending", "running", "failed", "done", "cancelled"])]
    pub status: Option<String>,
    /// The job kind (queue), e.g. meter_call (`agent-meter tools list` names the tools' queues).
    #[arg(long)]
    pub kind: Option<String>,
    /// The agent's email.
    #[arg(long)]
    pub agent: Option<String>,
    /// Only jobs scheduled at or after this time (RFC 3339, e.g. 2026-11-28T00:00:00Z).
    #[arg(long)]
    pub since: Option<DateTime<Utc>>,
}

impl FilterArgs {
    fn to_filter(&self, limit: i64) -> JobFilter {
        JobFilter {
            status: self.status.clone(),
            kind: self.kind.clone(),
            agent: self.agent.clone(),
            since: self.since,
            limit: Some(limit),
        }
    }
}

/// Who is acting, for the audit trail: `--actor`, else the OS user (`$USER`, `$LOGNAME`).
pub(crate) fn actor(given: Option<&str>) -> String {
    let user = given
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .or_else(|| std::env::var("LOGNAME").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown".into());
    // One line of printable text, bounded: it is stored and shown to operators.
    let user: String = user.chars().filter(|c| !c.is_control()).take(64).collect();
    format!("cli:{user}")
}

pub async fn run(pool: &PgPool, command: JobsCommand) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    // An unknown agency is a typo, not "no jobs".
    let asked = match &command {
        JobsCommand::List { filter, .. } => filter.agent.as_deref(),
        JobsCommand::Retry { filter, .. } => filter.agent.as_deref(),
        _ => None,
    };
    if let Some(email) = asked {
        super::agent(&mut conn, email).await?;
    }
    match command {
        JobsCommand::List {
            filter,
            limit,
            json,
        } => {
            let f = filter.to_filter(limit);
            f.validate().map_err(anyhow::Error::msg)?;
            let rows = queue::list(&mut conn, &f).await?;
            super::print_rows(
                json,
                &rows,
                &[
                    ("ID", 28),
                    ("KIND", 15),
                    ("STATUS", 9),
                    ("AGENT", 30),
                    ("TRIES", -5),
                    ("RUN AT", 20),
                    ("LAST ERROR", 0),
                ],
                |r| {
                    vec![
                        r.id.to_string(),
                        r.kind.to_string(),
                        r.status.to_string(),
                        super::or_dash(r.agent_email.as_deref()),
                        format!("{}/{}", r.attempts, r.max_attempts),
                        r.run_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                        r.last_error.clone().unwrap_or_default(),
                    ]
                },
            )?;
        }
        JobsCommand::Show { id } => {
            let detail = queue::show(&mut conn, &id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no job {id}"))?;
            println!("{}", serde_json::to_string_pretty(&detail)?);
        }
        JobsCommand::Retry {
            ids,
            failed,
            filter,
            dry_run,
            yes,
            actor: who,
        } => {
            let who = actor(who.as_deref());
            let (targets, used_filter) = if failed {
                anyhow::ensure!(ids.is_empty(), "give job ids or --failed, not both");
                let mut f = filter.to_filter(10_000);
                f.status = Some("failed".into());
                let rows = queue::list(&mut conn, &f).await?;
                for r in &rows {
                    println!(
                        "{} {} {} {}",
                        r.id,
                        r.kind,
                        r.agent_email.as_deref().unwrap_or("-"),
                        r.last_error.as_deref().unwrap_or("")
                    );
                }
                (rows.into_iter().map(|r| r.id).collect::<Vec<_>>(), Some(f))
            } else {
                anyhow::ensure!(
                    !ids.is_empty(),
                    "give job ids, or --failed to re-run every failed job"
                );
                (ids, None)
            };
            println!("{} job(s) to re-run", targets.len());
            if dry_run || targets.is_empty() {
                return Ok(());
            }
            // Jobs named one by one are what the caller asked for; a filter's result is confirmed
            // (a script says --yes; without a terminal nobody can answer, so that is an error).
            if used_filter.is_some() && !yes {
                anyhow::ensure!(
                    std::io::stdin().is_terminal(),
                    "not re-running {} job(s) without confirmation: pass --yes (no terminal to ask on)",
                    targets.len()
                );
                if !confirm(&format!("Re-run {} job(s)?", targets.len()))? {
                    println!("nothing done");
                    return Ok(());
                }
            }
            let mut done = Vec::new();
            let progress = std::io::stderr().is_terminal();
            for (i, chunk) in targets.chunks(500).enumerate() {
                let mut tx = pool.begin().await?;
                let retried = queue::retry(&mut tx, chunk).await?;
                queue::audit(&mut tx, &who, "retry", &retried, used_filter.as_ref()).await?;
                tx.commit().await?;
                done.extend(retried);
                let so_far = ((i + 1) * 500).min(targets.len());
                if progress {
                    eprint!(
                        "\r[{:<30}] {so_far}/{}",
                        "#".repeat(so_far * 30 / targets.len()),
                        targets.len()
                    );
                } else if targets.len() > 500 {
                    eprintln!("{so_far}/{} processed", targets.len());
                }
            }
            if progress {
                eprintln!();
            }
            println!("re-queued {} job(s)", done.len());
        }
        JobsCommand::Cancel { ids, actor: who } => {
            anyhow::ensure!(!ids.is_empty(), "give job ids to cancel");
            let who = actor(who.as_deref());
            let mut tx = pool.begin().await?;
            let cancelled = queue::cancel(&mut tx, &ids, &who).await?;
            queue::audit(&mut tx, &who, "cancel", &cancelled, None).await?;
            tx.commit().await?;
            println!(
                "cancelled {} job(s); {} not pending (left as they are)",
                cancelled.len(),
                ids.len() - cancelled.len()
            );
        }
    }
    Ok(())
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
