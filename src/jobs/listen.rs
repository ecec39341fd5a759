//! The process's one LISTEN connection. Every NOTIFY a process cares about arrives here and is
//! fanned out in memory: jobs inserted into a queue wake that queue's worker
//! ([`QueueSignals`]), finished tool calls wake the webhook requests waiting for them
//! ([`ToolResults`]). One connection whatever the number of queues, so a process's connection
//! budget is its pool (README, "Connections").

use std::{sync::Arc, time::Duration};

use serde::Deserialize;
use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::watch;

use super::{backend::QueueSignals, effects::TOOL_RESULTS_CHANNEL, tool_results::ToolResults};
use crate::store::queue;

/// Who hears what; a role that is not running leaves its part empty.
#[derive(Clone, Default)]
pub struct Targets {
    pub tool_results: Option<Arc<ToolResults>>,
    pub queues: Option<Arc<QueueSignals>>,
}

impl Targets {
    fn channels(&self) -> Vec<&'static str> {
        let mut channels = Vec::new();
        if self.queues.is_some() {
            channels.push(queue::JOB_INSERTED_CHANNEL);
        }
        if self.tool_results.is_some() {
            channels.push(TOOL_RESULTS_CHANNEL);
        }
        channels
    }

    fn deliver(&self, channel: &str, payload: &str) {
        match (channel, &self.queues, &self.tool_results) {
            (queue::JOB_INSERTED_CHANNEL, Some(queues), _) => {
                #[derive(Deserialize)]
                struct Inserted<'a> {
                    job_type: &'a str,
                }
                if let Ok(job) = serde_json::from_str::<Inserted>(payload) {
                    queues.notify(job.job_type);
                }
            }
            (TOOL_RESULTS_CHANNEL, _, Some(results)) => results.wake(payload),
            _ => {}
        }
    }

    /// After a (re)connection: anything announced while we were away is looked for once.
    fn resync(&self) {
        if let Some(queues) = &self.queues {
            queues.notify_all();
        }
    }
}

/// Listens until shutdown, reconnecting with backoff after a lost connection.
pub async fn run(pool: PgPool, targets: Targets, mut shutdown: watch::Receiver<bool>) {
    let channels = targets.channels();
    if channels.is_empty() {
        return;
    }
    let mut wait = Duration::from_millis(250);
    loop {
        let session = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen_all(channels.iter().copied()).await?;
            tracing::debug!(?channels, "listening");
            targets.resync();
            wait = Duration::from_millis(250);
            loop {
                // `None`: the connection dropped and was re-established (eager reconnect).
                match listener.try_recv().await? {
                    Some(n) => targets.deliver(n.channel(), n.payload()),
                    None => targets.resync(),
                }
            }
            #[expect(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            r = session => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, ?wait, "notification listener lost; reconnecting");
                }
            }
            _ = shutdown.wait_for(|s| *s) => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        wait = (wait * 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// True when `queue`'s signal holds a wake-up (consumes it).
    async fn woken(signals: &QueueSignals, queue: &str) -> bool {
        let signal = signals.of(queue);
        tokio::time::timeout(Duration::from_millis(20), signal.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn an_insert_wakes_only_its_queue_and_garbage_wakes_nobody() {
        let signals = Arc::new(QueueSignals::new(&["a_queue", "meter_call"]));
        let results = Arc::new(ToolResults::default());
        let targets = Targets {
            tool_results: Some(results.clone()),
            queues: Some(signals.clone()),
        };
        let inserted = queue::JOB_INSERTED_CHANNEL;
        targets.deliver(
            inserted,
            r#"{"job_type":"a_queue","id":"01J","run_at":"2026-12-01T00:00:00Z"}"#,
        );
        assert!(woken(&signals, "a_queue").await);
        assert!(!woken(&signals, "meter_call").await);

        let long = "x".repeat(100_000);
        for garbage in [
            "",
            "not json",
            "{}",
            r#"{"job_type": 7}"#,
            r#"{"job_type": "some_other_apps_queue"}"#,
            long.as_str(),
            "\u{0}\u{1}",
        ] {
            targets.deliver(inserted, garbage);
            targets.deliver("some_channel_we_never_listen_on", garbage);
        }
        assert!(!woken(&signals, "a_queue").await);
        assert!(!woken(&signals, "meter_call").await);

        // A tool result goes to its waiter, whatever else arrives.
        let waiting = results.register("call_1");
        targets.deliver(TOOL_RESULTS_CHANNEL, "call_1");
        assert!(waiting.await.is_ok());
    }

    #[tokio::test]
    async fn a_reconnect_makes_every_queue_look_once() {
        let signals = Arc::new(QueueSignals::new(&["a", "b"]));
        let targets = Targets {
            tool_results: None,
            queues: Some(signals.clone()),
        };
        assert_eq!(targets.channels(), vec![queue::JOB_INSERTED_CHANNEL]);
        targets.resync();
        assert!(woken(&signals, "a").await);
        assert!(woken(&signals, "b").await);
        assert!(!woken(&signals, "a").await, "one look, not a storm");
    }
}
