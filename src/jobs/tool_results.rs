//! Wakes a webhook request waiting for its tool call's job: jobs `NOTIFY` the tool call id on
//! commit (from any process); the process's one `LISTEN` connection ([`crate::jobs::listen`]) fans it
//! out in memory.
//! No database polling: a waiter sleeps on a oneshot until woken or its wait runs out.

use std::{collections::HashMap, sync::Mutex};

use tokio::sync::oneshot;

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

    pub(crate) fn wake(&self, tool_call_id: &str) {
        let senders = self
            .waiters
            .lock()
            .ok()
            .and_then(|mut w| w.remove(tool_call_id));
        for s in senders.into_iter().flatten() {
            let _ = s.send(());
        }
    }
}
