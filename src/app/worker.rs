//! The worker role: every job kind, each on its own apalis-postgres queue under its own
//! supervisor ([`crate::jobs::supervise`]): the tools from [`crate::tools::registry`], the other
//! jobs from [`crate::jobs::supervise_others`].

use tokio::sync::watch;

use crate::jobs::{self, Deps};

/// Runs every job kind until `shutdown` turns true, then lets in-flight jobs finish. Each queue
/// is its own task, so one queue's wake-ups never re-poll another's worker.
pub async fn run(deps: Deps, shutdown: watch::Receiver<bool>) {
    let served: Vec<String> = crate::tools::queues()
        .into_iter()
        .chain(jobs::QUEUES.iter().copied())
        .map(str::to_string)
        .collect();
    for queue in &served {
        // Each queue's wake-up signal exists before its worker's first fetch.
        deps.signals.of(queue);
    }
    let mut queues = tokio::task::JoinSet::new();
    for tool in crate::tools::registry() {
        queues.spawn(tool.supervise(deps.clone(), shutdown.clone()));
    }
    jobs::supervise_others(&mut queues, &deps, &shutdown);
    while let Some(done) = queues.join_next().await {
        if let Err(e) = done {
            tracing::error!(error = %e, "a queue's supervisor ended abnormally");
        }
    }
}
