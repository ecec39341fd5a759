//! Wakes a webhook request waiting for its tool call's job: jobs `NOTIFY` the tool call id on
//! commit (from any process); one `LISTEN` connection per web process fans it out in memory.
//! No database polling: a waiter sleeps on a oneshot until woken or its wait runs out.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::{oneshot, watch};

use crate::jobs::effects::TOOL_RESULTS_CHANNEL;

#[derive(Default)]
pub struct ToolResults {
    waiters: Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>,
}

impl ToolResults {
    /// Registers interest in `tool_call_id` (do this before the job can possibly finish).
    pub fn register(&self, tool_call_id: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.waiters.lock() {
            w.entry(tool_call_id.to_string()).or_default().push(tx);
        }
        rx
    }

    /// Forgets waiters whose requests gave up.
    pub fn forget(&self, tool_call_id: &str) {
        if let Ok(mut w) = self.waiters.lock()
            && let Some(list) = w.get_mut(tool_call_id)
        {
            list.retain(|s| !s.is_closed());
            if list.is_empty() {
                w.remove(tool_call_id);
            }
        }
    }

    fn wake(&self, tool_call_id: &str) {
        let senders = self
            .waiters
            .lock()
            .ok()
            .and_then(|mut w| w.remove(tool_call_id));
        for s in senders.into_iter().flatten() {
            let _ = s.send(());
        }
    }

    /// Listens until shutdown, reconnecting with backoff after a lost connection.
    pub async fn listen(self: Arc<Self>, pool: PgPool, mut shutdown: watch::Receiver<bool>) {
        let mut wait = Duration::from_millis(250);
        loop {
            let session = async {
                let mut listener = PgListener::connect_with(&pool).await?;
                listener.listen(TOOL_RESULTS_CHANNEL).await?;
                tracing::debug!("listening for tool results");
                loop {
                    let n = listener.recv().await?;
                    self.wake(n.payload());
                }
                #[expect(unreachable_code)]
                Ok::<(), sqlx::Error>(())
            };
            tokio::select! {
                r = session => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, ?wait, "tool result listener lost; reconnecting");
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
}
