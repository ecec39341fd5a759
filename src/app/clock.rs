//! The clock role: reads `jobs/schedule.toml` and, on each tick, enqueues that entry's job with
//! the key `{job}:{tick}`. Several clocks may run; the queue's unique key lets one tick win.

use std::str::FromStr;

use apalis_cron::CronScheduler;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::watch;

use crate::{
    billing::Month,
    jobs::{
        self, Deps, Job, invoice_rollup::InvoiceRollup, prune_jobs::PruneJobs,
        sync_calls::SyncCalls,
    },
};

/// The schedule shipped with this build.
pub const SCHEDULE_TOML: &str = include_str!("../../jobs/schedule.toml");

#[derive(Debug, Deserialize)]
pub struct Schedule {
    #[serde(rename = "entry")]
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Entry {
    pub job: String,
    pub cron: String,
    #[serde(default)]
    pub description: String,
}

/// The jobs a schedule entry may name.
pub const SCHEDULABLE: &[&str] = &[PruneJobs::QUEUE, SyncCalls::QUEUE, InvoiceRollup::QUEUE];

impl Schedule {
    /// Parses and checks every entry: a known job and a valid cron expression.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let schedule: Schedule = toml::from_str(text)?;
        for e in &schedule.entries {
            anyhow::ensure!(
                SCHEDULABLE.contains(&e.job.as_str()),
                "schedule entry names unknown job {:?}",
                e.job
            );
            cron::Schedule::from_str(&e.cron).map_err(|err| {
                anyhow::anyhow!("entry {:?}: bad cron {:?}: {err}", e.job, e.cron)
            })?;
        }
        Ok(schedule)
    }
}

/// Enqueues the job of the tick at `tick` under its period's key: `prune_jobs:{tick}`,
/// `vapi-sync:{yesterday}` (the day that just ended, in the billing zone), or
/// `invoice-rollup:{previous month}`. `Ok(false)` when another clock already did.
pub async fn enqueue_tick(deps: &Deps, job: &str, tick: DateTime<Utc>) -> anyhow::Result<bool> {
    let tz = deps.config.billing_timezone;
    let sync = || {
        let today = tick.with_timezone(&tz).date_naive();
        SyncCalls {
            date: today.pred_opt().unwrap_or(today),
            agent_id: None,
            slice: None,
        }
    };
    let rollup = || InvoiceRollup {
        month: Month::containing(tick, tz).previous().label(),
    };
    let key = match job {
        PruneJobs::QUEUE => format!("prune_jobs:{}", tick.format("%Y-%m-%dT%H:%M:%SZ")),
        SyncCalls::QUEUE => sync().idempotency_key(),
        InvoiceRollup::QUEUE => rollup().idempotency_key(),
        other => anyhow::bail!("unknown job {other:?}"),
    };
    // The tick and its job commit together; the first clock to record the tick wins.
    let mut tx = deps.pool.begin().await?;
    if !crate::store::clock_ticks::record(&mut tx, &key, job, tick).await? {
        return Ok(false);
    }
    sqlx::query("SAVEPOINT tick").execute(&mut *tx).await?;
    // Due at its tick: ticks replayed after an outage run at once, oldest first (run_at has
    // whole seconds, so jobs queued within one second would otherwise run in any order).
    let due = Some(tick);
    let queued = match job {
        PruneJobs::QUEUE => {
            jobs::enqueue_due(&mut tx, &PruneJobs::default(), Some(&key), due).await
        }
        SyncCalls::QUEUE => jobs::enqueue_due(&mut tx, &sync(), Some(&key), due).await,
        _ => jobs::enqueue_due(&mut tx, &rollup(), Some(&key), due).await,
    };
    match queued {
        Ok(()) => {}
        // Queued before ticks were recorded: keep the record, the job is there.
        Err(apalis_postgres::Error::Database(e)) if crate::store::is_unique_violation(&e) => {
            sqlx::query("ROLLBACK TO SAVEPOINT tick")
                .execute(&mut *tx)
                .await?;
        }
        Err(e) => return Err(e.into()),
    }
    tx.commit().await?;
    Ok(true)
}

/// The entry's ticks strictly after `from` and up to `now`, oldest first (at most 10,000).
pub fn ticks_between(
    entry: &Entry,
    from: DateTime<Utc>,
    now: DateTime<Utc>,
    tz: chrono_tz::Tz,
) -> Vec<DateTime<Utc>> {
    let Ok(cron) = cron::Schedule::from_str(&entry.cron) else {
        return Vec::new();
    };
    cron.after(&from.with_timezone(&tz))
        .map(|t| t.with_timezone(&Utc))
        .take_while(|t| *t <= now)
        .take(10_000)
        .collect()
}

/// The entry's most recent tick before `now` (in the billing zone), if the schedule has one.
pub fn last_tick(entry: &Entry, now: DateTime<Utc>, tz: chrono_tz::Tz) -> Option<DateTime<Utc>> {
    let cron = cron::Schedule::from_str(&entry.cron).ok()?;
    cron.after(&now.with_timezone(&tz))
        .next_back()
        .map(|t| t.with_timezone(&Utc))
}

/// At start-up: ticks missed while no clock ran are never replayed by the cron stream, so every
/// tick since the last one recorded (at most `CLOCK_CATCH_UP_DAYS` back) is enqueued, oldest
/// first, so a long outage heals itself in order; a first start (nothing recorded) enqueues the
/// last tick only. Recorded ticks are no-ops, so any number of clocks may do this at once.
pub async fn catch_up(deps: &Deps, schedule: &Schedule, now: DateTime<Utc>) {
    let tz = deps.config.billing_timezone;
    let window = chrono::Duration::days(i64::from(deps.config.clock_catch_up_days));
    for entry in &schedule.entries {
        let latest = async {
            let mut conn = deps.pool.acquire().await?;
            crate::store::clock_ticks::latest(&mut conn, &entry.job).await
        };
        let ticks = match latest.await {
            Ok(Some(from)) => ticks_between(entry, from.max(now - window), now, tz),
            Ok(None) => last_tick(entry, now, tz).into_iter().collect(),
            Err(e) => {
                tracing::warn!(job = %entry.job, error = %e, "could not read the recorded ticks");
                continue;
            }
        };
        for tick in ticks {
            match enqueue_tick(deps, &entry.job, tick).await {
                Ok(true) => {
                    tracing::info!(job = %entry.job, %tick, "missed tick enqueued at start-up")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(job = %entry.job, %tick, error = %e, "could not enqueue a missed tick")
                }
            }
        }
    }
}

/// Runs every entry until `shutdown` turns true.
pub async fn run(deps: Deps, schedule: Schedule, shutdown: watch::Receiver<bool>) {
    catch_up(&deps, &schedule, Utc::now()).await;
    let tasks = schedule.entries.into_iter().map(|entry| {
        let deps = deps.clone();
        let mut shutdown = shutdown.clone();
        async move {
            let Ok(cron) = cron::Schedule::from_str(&entry.cron) else {
                return;
            };
            let tz = deps.config.billing_timezone;
            tracing::info!(job = %entry.job, cron = %entry.cron, %tz, "clock entry armed");
            let mut ticks = Box::pin(CronScheduler::new(cron).with_timezone(tz).into_stream());
            loop {
                let tick = tokio::select! {
                    t = ticks.next() => t,
                    _ = shutdown.wait_for(|stop| *stop) => return,
                };
                let Some(tick) = tick else { return };
                let at = match tick {
                    Ok(t) => DateTime::<Utc>::from_timestamp(t.get_timestamp() as i64, 0)
                        .unwrap_or_else(Utc::now),
                    Err(e) => {
                        tracing::error!(job = %entry.job, error = %e, "cron stream failed");
                        continue;
                    }
                };
                match enqueue_tick(&deps, &entry.job, at).await {
                    Ok(true) => tracing::info!(job = %entry.job, %at, "tick enqueued"),
                    Ok(false) => {
                        tracing::info!(job = %entry.job, %at, "tick already enqueued elsewhere")
                    }
                    Err(e) => {
                        tracing::error!(job = %entry.job, %at, error = %e, "tick not enqueued")
                    }
                }
            }
        }
    });
    futures::future::join_all(tasks).await;
}
