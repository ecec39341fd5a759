//! `agent-meter agents ...`: list, add and change agents (tenants), including their greeting and
//! system prompt (the per-agent persona the assistant-request answer uses).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use sqlx::PgPool;

use chrono_tz::Tz;

use crate::{
    lifecycle::{self, Move, State},
    store::{
        agents::{self, AgentChanges},
        caps,
    },
};

#[derive(Subcommand)]
pub enum AgentsCommand {
    /// Show every agent (a table, or JSON with --json).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create an agent.
    Add(AddArgs),
    /// Change an agent, found by email. An empty value ("") clears a field.
    Set(SetArgs),
    /// Print a one-time sign-in link to the agency portal (valid 24 h, usable once) and, when
    /// the agent has a Discord webhook and DISCORD_ENABLED is true, post it there too.
    Invite {
        /// The agent's email.
        email: String,
    },
    /// Print a new API token for the agent (shown once; only its hash is stored), or revoke all.
    Token {
        /// The agent's email.
        email: String,
        /// Revoke every live token instead of creating one.
        #[arg(long)]
        revoke: bool,
    },
    /// The agency's own webhook endpoints (Standard Webhooks): add, list, remove, rotate a
    /// secret, see deliveries, replay.
    #[command(subcommand)]
    Webhooks(super::webhooks::WebhooksCommand),
    /// Suspend service (calls get an error answer, tool calls are refused); still billed.
    Pause(MoveArgs),
    /// End a pause: back in service.
    Resume(MoveArgs),
    /// Cancel: out of service from the day (today by default), billed through its month.
    Cancel {
        #[command(flatten)]
        who: MoveArgs,
        /// The day it takes effect, YYYY-MM-DD in BILLING_TIMEZONE: today by default; a past day
        /// only while nothing was metered since and no later month is finalized; a future day
        /// schedules it.
        #[arg(long)]
        on: Option<chrono::NaiveDate>,
    },
    /// Bring a cancelled agency back (or withdraw a scheduled cancellation): billed again from
    /// this month, with no second setup fee.
    Reactivate(MoveArgs),
}

#[derive(Args)]
pub struct MoveArgs {
    /// The agent's email.
    pub email: String,
    /// Who is acting, for the audit trail (default: the OS user).
    #[arg(long)]
    pub actor: Option<String>,
}

#[derive(Args)]
pub struct AddArgs {
    /// The agency's name, as callers hear it.
    #[arg(long)]
    pub agency_name: String,
    /// Unique login/contact email.
    #[arg(long)]
    pub email: String,
    /// The agency's phone number (E.164, e.g. +19285550106).
    #[arg(long)]
    pub phone_number: Option<String>,
    /// Vapi's id of that phone number (routes calls to this agent).
    #[arg(long)]
    pub vapi_phone_number_id: Option<String>,
    #[command(flatten)]
    pub persona: PersonaArgs,
}

#[derive(Args)]
pub struct SetArgs {
    /// The agent's email.
    pub email: String,
    #[arg(long)]
    pub agency_name: Option<String>,
    #[arg(long)]
    pub phone_number: Option<String>,
    #[arg(long)]
    pub vapi_phone_number_id: Option<String>,
    /// active, paused or cancelled: the same moves as `agents resume|reactivate`, `pause` and
    /// `cancel` (today).
    #[arg(long, value_parser = ["active", "paused", "cancelled"])]
    pub status: Option<String>,
    /// The day billing starts, YYYY-MM-DD (its month bills the setup fee and the first
    /// subscription); refused once an invoice of the agent is finalized.
    #[arg(long)]
    pub billing_starts_on: Option<chrono::NaiveDate>,
    /// Who is acting, for the audit trail of --status and --billing-starts-on (default: the OS user).
    #[arg(long)]
    pub actor: Option<String>,
    /// The tools its assistant gets, comma-separated (`agent-meter tools list`); `all` (the
    /// default for a new agent) gives every registered tool, "" none.
    #[arg(long)]
    pub tools: Option<String>,
    /// Vapi ends a call of its assistant after this many minutes (1 to 720; 30 for a new agent).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=720))]
    pub max_call_minutes: Option<i32>,
    /// Where its assistant may warm-transfer a caller who asks for a person: E.164, e.g.
    /// +19285550100; "" clears (no transfers). Needs --transfer-hours the first time.
    #[arg(long, value_parser = parse_transfer_number)]
    pub transfer_number: Option<String>,
    /// When transfers are made, in BILLING_TIMEZONE: "Mon-Fri 08:00-17:00, Sat 09:00-12:00"
    /// (comma-separated ranges, 24-hour), `always` or `never`. Outside them the assistant takes
    /// a message.
    #[arg(long, value_parser = parse_transfer_hours)]
    pub transfer_hours: Option<String>,
    /// A monthly cap on usage charges in USD (not the subscription or setup fee), per
    /// BILLING_TIMEZONE month: notices at 50, 80 and 100%; "" removes it.
    #[arg(long, value_parser = parse_usage_cap)]
    pub usage_cap: Option<UsageCap>,
    /// At the cap: `alert` (notices only, the default) or `block` (billable tool calls are
    /// refused, before any provider is asked; calls themselves never are).
    #[arg(long, value_parser = ["alert", "block"])]
    pub cap_action: Option<String>,
    #[command(flatten)]
    pub persona: PersonaArgs,
}

/// `--usage-cap`: dollars and cents above zero, or none (`""`).
#[derive(Debug, Clone, Copy)]
pub struct UsageCap(Option<rust_decimal::Decimal>);

fn parse_usage_cap(value: &str) -> Result<UsageCap, String> {
    let value = value.trim().trim_start_matches('$');
    if value.is_empty() {
        return Ok(UsageCap(None));
    }
    let cap: rust_decimal::Decimal = value
        .parse()
        .map_err(|_| format!("{value:?} is not an amount in USD (e.g. 50 or 49.99)"))?;
    if cap <= rust_decimal::Decimal::ZERO
        || cap.scale() > 2
        || cap >= rust_decimal::Decimal::from(10_000_000_000i64)
    {
        return Err(format!(
            "{value} is not a cap: more than 0, at most cents, under 10,000,000,000"
        ));
    }
    Ok(UsageCap(Some(cap)))
}

/// `--transfer-number`: E.164, or "" to clear.
fn parse_transfer_number(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.is_empty() || crate::vapi::transfer::is_e164(value) {
        return Ok(value.to_string());
    }
    Err(format!(
        "{value:?} is not an E.164 number: a +, the country code and the number, digits only (e.g. +19285550100)"
    ))
}

/// `--transfer-hours`: stored in canonical form; "" clears.
fn parse_transfer_hours(value: &str) -> Result<String, String> {
    if value.trim().is_empty() {
        return Ok(String::new());
    }
    value
        .parse::<crate::vapi::transfer::Hours>()
        .map(|h| h.to_string())
}

/// `agents list`: the transfer number and its hours, or `-`.
fn transfer_text(a: &agents::Agent) -> String {
    match (&a.transfer_number, &a.transfer_hours) {
        (Some(n), Some(h)) => format!("{n} {h}"),
        (Some(n), None) => n.clone(),
        (None, _) => "-".to_string(),
    }
}

/// `--tools`: `all` is every registered tool (stored as NULL, so new tools come with it).
fn parse_tools(value: &str) -> anyhow::Result<Option<Vec<String>>> {
    if value.trim() == "all" {
        return Ok(None);
    }
    let names: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect();
    let mut names = crate::tools::canonical_names(&names).map_err(anyhow::Error::msg)?;
    names.dedup();
    Ok(Some(names))
}

#[derive(Args)]
pub struct PersonaArgs {
    /// The first sentence callers hear.
    #[arg(long)]
    pub greeting: Option<String>,
    /// A file holding the agent's system prompt ({agency_name} is filled in).
    #[arg(long)]
    pub system_prompt_file: Option<PathBuf>,
    /// Use this Vapi assistant (with per-call overrides) instead of a transient one.
    #[arg(long)]
    pub vapi_assistant_id: Option<String>,
    /// The agent's Discord webhook for notes on leads and findings.
    #[arg(long)]
    pub discord_webhook_url: Option<String>,
}

impl PersonaArgs {
    /// `changes` with the persona's fields (the system prompt read from its file).
    fn into_changes(self, changes: AgentChanges) -> anyhow::Result<AgentChanges> {
        let system_prompt = self
            .system_prompt_file
            .as_ref()
            .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display())))
            .transpose()?;
        Ok(AgentChanges {
            system_prompt,
            vapi_assistant_id: self.vapi_assistant_id,
            discord_webhook_url: self.discord_webhook_url,
            greeting: self.greeting,
            ..changes
        })
    }
}

/// Makes one lifecycle move and says what it did.
async fn make_move(
    pool: &PgPool,
    tz: Tz,
    email: &str,
    mv: Move,
    actor: Option<&str>,
) -> anyhow::Result<()> {
    let who = crate::cli::jobs::actor(actor);
    let moved = lifecycle::apply(pool, email, mv, &who, tz, chrono::Utc::now()).await?;
    println!("{email}: {} -> {}; {}", moved.from, moved.to, moved.summary);
    Ok(())
}

pub async fn run(pool: &PgPool, tz: Tz, command: AgentsCommand) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    let now = chrono::Utc::now();
    match command {
        AgentsCommand::List { json } => {
            let list = agents::list(&mut conn).await?;
            let capped = caps::status(&mut conn, None, now, tz).await?;
            let cap_of = |id| capped.iter().find(|c| c.agent_id == id);
            if json {
                let rows: Vec<_> = list
                    .iter()
                    .map(|a| {
                        serde_json::json!({
                            "id": a.id, "agency_name": a.agency_name, "email": a.email,
                            "phone_number": a.phone_number, "vapi_phone_number_id": a.vapi_phone_number_id,
                            "vapi_assistant_id": a.vapi_assistant_id, "status": a.state(now, tz).as_str(),
                            "billing_starts_on": a.billing_starts_on, "cancelled_on": a.cancelled_on,
                            "greeting": a.greeting, "has_system_prompt": a.system_prompt.is_some(),
                            "has_discord": a.discord_webhook_url.is_some(),
                            "tools": crate::tools::of_agent(a.tools.as_deref()).iter().map(|t| t.name).collect::<Vec<_>>(),
                            "max_call_minutes": a.max_call_minutes,
                            "transfer_number": a.transfer_number, "transfer_hours": a.transfer_hours,
                            "usage_cap_usd": a.usage_cap_usd.map(|c| c.to_string()),
                            "cap_action": a.usage_cap_usd.map(|_| a.cap_action.as_str()),
                            "cap_usage_usd": cap_of(a.id).map(|c| crate::money::round_line(c.usage_usd).to_string()),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                let columns = [
                    ("AGENCY", 30),
                    ("EMAIL", 32),
                    ("PHONE", 14),
                    ("VAPI PHONE ID", 26),
                    ("STATUS", 9),
                    ("BILLED FROM", 10),
                    ("CANCELS", 10),
                    ("MAX MIN", 8),
                    ("PERSONA", 24),
                    ("USAGE CAP", 30),
                    ("TRANSFER", 0),
                ];
                super::print_table(
                    &columns,
                    list.iter().map(|a| {
                        let persona = match (&a.vapi_assistant_id, &a.system_prompt) {
                            (Some(id), _) => format!("assistant {id}"),
                            (None, Some(_)) => "own prompt".to_string(),
                            (None, None) => "default".to_string(),
                        };
                        vec![
                            a.agency_name.clone(),
                            a.email.clone(),
                            super::or_dash(a.phone_number.as_deref()),
                            super::or_dash(a.vapi_phone_number_id.as_deref()),
                            a.state(now, tz).as_str().to_string(),
                            a.billing_starts_on.to_string(),
                            super::or_dash(a.cancelled_on),
                            a.max_call_minutes.to_string(),
                            persona,
                            cap_of(a.id).map_or_else(|| "-".to_string(), |c| c.describe()),
                            transfer_text(a),
                        ]
                    }),
                );
            }
        }
        AgentsCommand::Pause(m) => {
            make_move(pool, tz, &m.email, Move::Pause, m.actor.as_deref()).await?
        }
        AgentsCommand::Resume(m) => {
            make_move(pool, tz, &m.email, Move::Resume, m.actor.as_deref()).await?
        }
        AgentsCommand::Cancel { who, on } => {
            make_move(pool, tz, &who.email, Move::Cancel(on), who.actor.as_deref()).await?
        }
        AgentsCommand::Reactivate(m) => {
            make_move(pool, tz, &m.email, Move::Reactivate, m.actor.as_deref()).await?
        }
        AgentsCommand::Add(a) => {
            let profile = a.persona.into_changes(AgentChanges {
                phone_number: a.phone_number,
                vapi_phone_number_id: a.vapi_phone_number_id,
                ..AgentChanges::default()
            })?;
            match agents::insert(&mut conn, &a.agency_name, &a.email, &profile).await {
                Ok(id) => println!("added agent {id} ({})", a.email),
                Err(e) if crate::store::is_unique_violation(&e) => {
                    anyhow::bail!(
                        "{}",
                        taken(&mut conn, &e, profile.vapi_assistant_id.as_deref()).await?
                    )
                }
                Err(e) => return Err(e.into()),
            }
        }
        AgentsCommand::Webhooks(_) => {
            anyhow::bail!("agents webhooks: needs the service configuration (run through main)")
        }
        AgentsCommand::Invite { email } => {
            anyhow::bail!(
                "agents invite {email}: needs the service configuration (run through main)"
            )
        }
        AgentsCommand::Token { email, revoke } => {
            let agent = super::agent(&mut conn, &email).await?;
            if revoke {
                let n = agents::revoke_tokens(&mut conn, agent.id).await?;
                println!("revoked {n} token(s) of {email}");
            } else {
                println!("{}", agents::new_token(&mut conn, agent.id).await?);
                eprintln!(
                    "Store this token now: it is not shown again. Use it as `Authorization: Bearer <token>`."
                );
            }
        }
        AgentsCommand::Set(s) => {
            let agent = super::agent(&mut conn, &s.email).await?;
            // The life of the agency goes through its one state machine.
            if let Some(status) = s.status.as_deref() {
                let mv = match (status, agent.state(now, tz)) {
                    ("paused", _) => Move::Pause,
                    ("cancelled", _) => Move::Cancel(None),
                    (_, State::Paused) => Move::Resume,
                    _ => Move::Reactivate,
                };
                make_move(pool, tz, &s.email, mv, s.actor.as_deref()).await?;
            }
            if let Some(day) = s.billing_starts_on {
                make_move(
                    pool,
                    tz,
                    &s.email,
                    Move::BillingStartsOn(day),
                    s.actor.as_deref(),
                )
                .await?;
            }
            let changes = s.persona.into_changes(AgentChanges {
                agency_name: s.agency_name,
                phone_number: s.phone_number,
                vapi_phone_number_id: s.vapi_phone_number_id,
                tools: s.tools.as_deref().map(parse_tools).transpose()?,
                max_call_minutes: s.max_call_minutes,
                transfer_number: s.transfer_number,
                transfer_hours: s.transfer_hours,
                usage_cap_usd: s.usage_cap.map(|c| c.0),
                cap_action: s.cap_action,
                ..AgentChanges::default()
            })?;
            let capping = changes.usage_cap_usd.is_some() || changes.cap_action.is_some();
            let mut tx = pool.begin().await?;
            match agents::update(&mut tx, &s.email, &changes).await {
                Ok(true) => {
                    if capping {
                        // A cap set below this month's usage is heard of at once.
                        crate::jobs::caps::notice(&mut tx, tz, &[agent.id], now).await?;
                    }
                    tx.commit().await?;
                    println!("updated {}", s.email);
                    if capping {
                        let status = caps::status(&mut conn, Some(&[agent.id]), now, tz).await?;
                        match status.first() {
                            Some(cap) => println!("usage cap: {}", cap.describe()),
                            None => println!("usage cap: none"),
                        }
                    }
                }
                Ok(false) => anyhow::bail!("no agent with email {}", s.email),
                Err(e) if constraint(&e) == Some("agents_transfer_needs_hours") => {
                    anyhow::bail!(
                        "a transfer number needs its hours: add --transfer-hours \"Mon-Fri 08:00-17:00\" (in BILLING_TIMEZONE), always or never"
                    )
                }
                Err(e) if crate::store::is_unique_violation(&e) => {
                    anyhow::bail!(
                        "{}",
                        taken(&mut conn, &e, changes.vapi_assistant_id.as_deref()).await?
                    )
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// What a unique violation on `agents` means, naming the owner of a Vapi assistant (a Vapi
/// assistant belongs to one agency, so its web calls are billed to one).
async fn taken(
    conn: &mut sqlx::PgConnection,
    e: &sqlx::Error,
    assistant: Option<&str>,
) -> anyhow::Result<String> {
    let constraint = match e {
        sqlx::Error::Database(d) => d.constraint().unwrap_or_default().to_string(),
        _ => String::new(),
    };
    Ok(match (constraint.as_str(), assistant) {
        ("agents_one_owner_per_assistant", Some(id)) => {
            let owner: Option<String> =
                sqlx::query_scalar("SELECT email FROM agents WHERE vapi_assistant_id = $1")
                    .bind(id)
                    .fetch_optional(conn)
                    .await?;
            format!(
                "Vapi assistant {id} belongs to {}: an assistant has one agency",
                owner.as_deref().unwrap_or("another agent")
            )
        }
        ("agents_email_key", _) => "an agent with that email already exists".to_string(),
        _ => "that Vapi phone number id belongs to another agent".to_string(),
    })
}

/// The constraint a database error names, if any.
fn constraint(e: &sqlx::Error) -> Option<&str> {
    e.as_database_error().and_then(|d| d.constraint())
}

/// How long a portal sign-in link stays valid.
pub const INVITE_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// `agents invite EMAIL`: a one-time portal link, printed, and posted to the agency's Discord when
/// it has a webhook and `DISCORD_ENABLED` is true. The link is never written to a job or a log
/// (only its hash is stored), so it is posted here, directly.
pub async fn invite(deps: &crate::jobs::Deps, email: &str) -> anyhow::Result<()> {
    let mut conn = deps.pool.acquire().await?;
    let agent = super::agent(&mut conn, email).await?;
    // A cancelled agency may still read its invoices, for a while.
    let tz = deps.config.billing_timezone;
    anyhow::ensure!(
        lifecycle::invoices_readable(agent.cancelled_on, chrono::Utc::now(), tz),
        "{email} was cancelled on {} and its invoices are no longer open to it (after {} months)",
        agent
            .cancelled_on
            .map_or_else(String::new, |d| d.to_string()),
        lifecycle::INVOICE_ACCESS_MONTHS
    );
    let token = crate::store::portal::create_link(&mut conn, agent.id, INVITE_TTL).await?;
    drop(conn);
    let base = deps
        .config
        .public_base_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", deps.config.bind_addr));
    let link = format!("{base}/portal/sign-in?token={token}");
    println!("{link}");
    eprintln!("valid for 24 hours, once; only its hash is stored");
    let webhook = agent.discord_webhook_url.filter(|u| !u.is_empty());
    if let (true, Some(url)) = (deps.config.discord_enabled, webhook) {
        let note = format!(
            "Your agent-meter portal: {link}\n(Valid for 24 hours, once. Tu portal: el enlace vale 24 horas, una vez.)"
        );
        match deps.providers.discord.post(&url, &note).await {
            Ok(()) => eprintln!("posted to the agency's Discord"),
            Err(e) => eprintln!("not posted to Discord ({e}); send the link yourself"),
        }
    }
    Ok(())
}
