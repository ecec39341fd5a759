//! `agent-meter agents webhooks ...`: an agency's own webhook endpoints (Standard Webhooks),
//! their deliveries, and replays.

use chrono::{DateTime, Utc};
use clap::Subcommand;
use uuid::Uuid;

use crate::{jobs::Deps, providers::outbound, store::outbound as store};

#[derive(Subcommand)]
pub enum WebhooksCommand {
    /// Register an endpoint; prints its id and its signing secret (shown once).
    Add {
        /// The agent's email.
        email: String,
        /// Where events are POSTed: https, a public address.
        #[arg(long)]
        url: String,
        /// Only these event types, comma-separated (default: every type): call.ended,
        /// lead.created, lead.updated, finding.created, invoice.finalized, invoice.paid,
        /// invoice.payment_failed.
        #[arg(long)]
        events: Option<String>,
    },
    /// The agent's endpoints (a table, or JSON with --json).
    List {
        /// The agent's email.
        email: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove an endpoint: nothing more is sent to it.
    Remove {
        /// The endpoint's id.
        id: Uuid,
    },
    /// A new signing secret (printed once); the old one keeps signing for 24 hours.
    RotateSecret {
        /// The endpoint's id.
        id: Uuid,
    },
    /// The agent's latest deliveries, newest first.
    Deliveries {
        /// The agent's email.
        email: String,
        /// How many (default 50).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=1000))]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Send a delivery again (the same webhook-id), or every failed one since a time.
    Replay {
        /// The delivery's id.
        #[arg(
            required_unless_present = "failed_since",
            conflicts_with = "failed_since"
        )]
        id: Option<Uuid>,
        /// Replay every failed delivery created at or after this time (RFC 3339).
        #[arg(long)]
        failed_since: Option<DateTime<Utc>>,
        /// With --failed-since: only this agent's (email).
        #[arg(long, requires = "failed_since")]
        agent: Option<String>,
    },
}

/// `--events`: known types only, deduplicated; `None` for every type.
fn parse_events(value: Option<&str>) -> anyhow::Result<Option<Vec<String>>> {
    let Some(value) = value else {
        return Ok(None);
    };
    let mut events: Vec<String> = Vec::new();
    for e in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if !store::EVENT_TYPES.contains(&e) {
            anyhow::bail!(
                "unknown event type {e:?}; known: {}",
                store::EVENT_TYPES.join(", ")
            );
        }
        if !events.iter().any(|x| x == e) {
            events.push(e.to_string());
        }
    }
    anyhow::ensure!(!events.is_empty(), "--events names no event type");
    Ok(Some(events))
}

pub async fn run(deps: &Deps, command: WebhooksCommand) -> anyhow::Result<()> {
    let mut conn = deps.pool.acquire().await?;
    match command {
        WebhooksCommand::Add { email, url, events } => {
            let agent = super::agent(&mut conn, &email).await?;
            let client = outbound::OutboundClient::new(deps.config.outbound_allow_private);
            let url = client
                .check_url(url.trim())
                .map_err(|e| anyhow::anyhow!("--url: {e}"))?;
            let events = parse_events(events.as_deref())?;
            let secret = outbound::new_secret().map_err(anyhow::Error::msg)?;
            let id = store::add_endpoint(
                &mut conn,
                agent.id,
                url.as_str(),
                events.as_deref(),
                &secret,
            )
            .await?;
            println!("endpoint {id}");
            println!("secret {secret}");
            eprintln!("Store the secret now: it is not shown again. It verifies our signatures.");
        }
        WebhooksCommand::List { email, json } => {
            let agent = super::agent(&mut conn, &email).await?;
            let rows = store::endpoints(&mut conn, agent.id).await?;
            super::print_rows(
                json,
                &rows,
                &[("ID", 36), ("URL", 48), ("EVENTS", 30), ("STATE", 0)],
                |e| {
                    let state = match (&e.disabled_at, &e.failing_since) {
                        (Some(at), _) => format!(
                            "disabled {} ({})",
                            at.format("%Y-%m-%d"),
                            e.disabled_reason.as_deref().unwrap_or("")
                        ),
                        (None, Some(since)) => {
                            format!("failing since {}", since.format("%Y-%m-%d %H:%M"))
                        }
                        (None, None) => "ok".into(),
                    };
                    vec![
                        e.id.to_string(),
                        e.url.clone(),
                        e.events.as_ref().map_or("all".into(), |v| v.join(",")),
                        state,
                    ]
                },
            )?;
        }
        WebhooksCommand::Remove { id } => {
            anyhow::ensure!(
                store::remove_endpoint(&mut conn, id, None).await?,
                "no endpoint {id}"
            );
            println!("removed endpoint {id}");
        }
        WebhooksCommand::RotateSecret { id } => {
            let secret = outbound::new_secret().map_err(anyhow::Error::msg)?;
            anyhow::ensure!(
                store::rotate_secret(&mut conn, id, &secret).await?,
                "no endpoint {id}"
            );
            println!("secret {secret}");
            eprintln!("The previous secret keeps signing for 24 hours.");
        }
        WebhooksCommand::Deliveries { email, limit, json } => {
            let agent = super::agent(&mut conn, &email).await?;
            let rows = store::deliveries(&mut conn, agent.id, limit).await?;
            super::print_rows(
                json,
                &rows,
                &[
                    ("ID", 36),
                    ("EVENT", 22),
                    ("ENDPOINT", 36),
                    ("ATTEMPTS", -8),
                    ("STATUS", 9),
                    ("CODE", -4),
                    ("LAST ATTEMPT", 0),
                ],
                |d| {
                    vec![
                        d.id.to_string(),
                        d.event_type.clone(),
                        d.endpoint_id.to_string(),
                        d.attempts.to_string(),
                        d.status.clone(),
                        super::or_dash(d.last_status_code),
                        super::or_dash(d.last_attempt_at.map(|t| t.format("%Y-%m-%d %H:%M:%S"))),
                    ]
                },
            )?;
        }
        WebhooksCommand::Replay {
            id,
            failed_since,
            agent,
        } => {
            let agent_id = match agent {
                Some(email) => Some(super::agent(&mut conn, &email).await?.id),
                None => None,
            };
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            let replayed = store::replay(&mut tx, id, agent_id, failed_since).await?;
            tx.commit().await?;
            if let (Some(id), true) = (id, replayed.is_empty()) {
                anyhow::bail!(
                    "no delivery {id} to replay (unknown, pending, or its endpoint is gone)"
                );
            }
            println!("{} delivery(ies) queued again", replayed.len());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_are_checked() {
        assert_eq!(parse_events(None).expect("all"), None);
        assert_eq!(
            parse_events(Some("call.ended, lead.created,call.ended")).expect("two"),
            Some(vec!["call.ended".to_string(), "lead.created".to_string()])
        );
        assert!(parse_events(Some("call.started")).is_err());
        assert!(parse_events(Some(" , ")).is_err());
    }
}
