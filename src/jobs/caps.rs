//! Spend-cap notices: when usage crosses 50%, 80% or 100% of an agency's monthly cap
//! ([`crate::store::caps`]), the agency's Discord, the operator's Discord and the agency's own
//! endpoints (`usage.threshold`) hear of it, once per threshold and month; the portal shows a
//! banner from the same records. Called in every transaction that writes usage (the effects
//! writer, call metering, the daily sync) and when a cap is set.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::notify_discord::{NotifyDiscord, NotifyOps};
use crate::{
    money::usd,
    store::{
        caps::{self, Crossing},
        outbound,
        reports::cents,
    },
};

/// Records and announces the thresholds `agents` crossed in the month containing `at`; how many
/// were crossed. Several crossed at once make one Discord note (naming the highest) and one
/// `usage.threshold` event each.
///
/// In a tenant transaction (call metering runs as the agency), this step runs as the service
/// (it queues notes and records events, which a tenant may not) and the role is restored after.
pub async fn notice(
    tx: &mut PgConnection,
    tz: chrono_tz::Tz,
    agents: &[Uuid],
    at: DateTime<Utc>,
) -> Result<usize, sqlx::Error> {
    if agents.is_empty() {
        return Ok(0);
    }
    let role: String = sqlx::query_scalar("SELECT current_setting('role')")
        .fetch_one(&mut *tx)
        .await?;
    let tenant = role == crate::store::db::TENANT_ROLE;
    if tenant {
        sqlx::query("RESET ROLE").execute(&mut *tx).await?;
    }
    let noticed = announce(tx, tz, agents, at).await;
    if tenant {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SET LOCAL ROLE {}",
            crate::store::db::TENANT_ROLE
        )))
        .execute(&mut *tx)
        .await?;
    }
    noticed
}

/// [`notice`] for a transaction that already runs as the service (the effects writer): no look
/// at the role, no switching.
pub async fn announce(
    tx: &mut PgConnection,
    tz: chrono_tz::Tz,
    agents: &[Uuid],
    at: DateTime<Utc>,
) -> Result<usize, sqlx::Error> {
    let crossed = caps::crossings(tx, agents, at, tz).await?;
    for c in &crossed {
        let id = format!(
            "msg_usage_threshold_{}_{}_{}",
            c.agent_id.simple(),
            c.month.format("%Y%m"),
            c.threshold
        );
        let data = serde_json::json!({
            "threshold_percent": c.threshold,
            "usage_usd": cents(c.usage_usd), "cap_usd": cents(c.cap_usd),
            "cap_action": c.cap_action, "month": c.month.format("%Y-%m").to_string(),
        });
        outbound::emit(tx, c.agent_id, &id, "usage.threshold", data).await?;
    }
    // The highest threshold per agency: its notes.
    let highest = crossed
        .iter()
        .filter(|c| {
            !crossed
                .iter()
                .any(|o| o.agent_id == c.agent_id && o.threshold > c.threshold)
        })
        .collect::<Vec<_>>();
    for c in highest {
        let agency = NotifyDiscord {
            agent_id: c.agent_id,
            content: text(c, false),
        };
        let ops = NotifyOps {
            content: text(c, true),
        };
        let enqueue = async {
            super::enqueue(tx, &agency, None).await?;
            super::enqueue(tx, &ops, None).await
        };
        enqueue
            .await
            .map_err(|e| sqlx::Error::Protocol(format!("enqueue cap notice: {e}")))?;
        tracing::info!(agent.id = %c.agent_id, threshold = c.threshold,
                       usage_usd = %c.usage_usd, cap_usd = %c.cap_usd, "usage cap threshold crossed");
    }
    Ok(crossed.len())
}

/// The note: the percentage, the amount and the cap (and, for the operator, the agency).
fn text(c: &Crossing, for_ops: bool) -> String {
    let who = if for_ops {
        format!("{}: ", c.agency_name)
    } else {
        String::new()
    };
    let then = match (c.threshold >= 100, c.cap_action.as_str()) {
        (true, "block") => {
            " Billable checks (such as solar scans) are now refused until next month or a higher cap."
        }
        (true, _) => " Usage goes on and is billed (the cap only alerts).",
        _ => "",
    };
    format!(
        "⚠️ {who}usage this month is {} — {}% of the {} monthly usage cap.{then}",
        usd(c.usage_usd),
        c.threshold,
        usd(c.cap_usd)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    #[test]
    fn a_note_names_the_percentage_the_amount_and_the_cap() {
        let c = Crossing {
            agent_id: Uuid::nil(),
            agency_name: "Sedona Red Rock Insurance".into(),
            month: chrono::NaiveDate::from_ymd_opt(2026, 11, 1).expect("day"),
            threshold: 80,
            usage_usd: Decimal::new(40_125, 3),
            cap_usd: Decimal::new(50, 0),
            cap_action: "block".into(),
        };
        let note = text(&c, false);
        assert!(
            note.contains("$40.13") && note.contains("80%") && note.contains("$50.00"),
            "{note}"
        );
        assert!(!note.contains("refused"), "{note}");
        assert!(text(&c, true).contains("Sedona Red Rock Insurance: usage"));
        let full = Crossing {
            threshold: 100,
            ..c.clone()
        };
        assert!(text(&full, false).contains("refused"));
        let alert = Crossing {
            cap_action: "alert".into(),
            ..full
        };
        assert!(text(&alert, false).contains("only alerts"));
    }
}
