//! The process's one LISTEN connection. Every NOTIFY a process cares about arrives here and is
//! fanned out in memory: jobs inserted into a queue wake that queue's worker
//! ([`QueueSignals`]), finished tool calls wake the webhook requests waiting for them
//! ([`ToolResults`]). One connection whatever the number of queues, so a process's connection
//! budget is its pool (README, "Connections").

use std::{sync::Arc, time::Duration};

use serde::Deserialize;
use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::watch;

use crate::{
    http::tool_results::ToolResults, jobs::effects::TOOL_RESULTS_CHANNEL, store::queue,
    worker::backend::QueueSignals,
};

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
