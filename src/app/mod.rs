//! Runs the roles (web, worker, clock) of one process, with shutdown passed in as a signal so
//! tests drive it exactly like SIGTERM does.

pub mod clock;
pub mod worker;

use std::sync::Arc;

use sqlx::PgPool;
use tokio::{net::TcpListener, sync::watch};

use crate::{
    config::Config,
    http::{self, AppState},
    jobs::Deps,
};

/// `agent-meter migrate`: the schema ([`crate::store::db::migrate`]), then every registered
/// tool's finding kind (a new tool needs no migration of its own). Safe to run concurrently and
/// repeatedly.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    crate::store::db::migrate(pool).await?;
    crate::tools::sync_kinds(pool)
        .await
        .map_err(sqlx::migrate::MigrateError::Execute)
}

/// Which roles to run.
#[derive(Debug, Clone, Copy)]
pub struct Roles {
    pub web: bool,
    pub worker: bool,
    pub clock: bool,
}

impl Roles {
    pub const ALL: Roles = Roles {
        web: true,
        worker: true,
        clock: true,
    };
}

/// Runs `roles` until `shutdown` turns true, then waits for each to finish its work.
/// `listener` is required when `roles.web` is set.
pub async fn run(
    pool: PgPool,
    config: Arc<Config>,
    roles: Roles,
    listener: Option<TcpListener>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    if roles.worker {
        // A worker on a queue whose SQL drifted from this build's must not start.
        crate::store::queue::check_schema(&pool).await?;
    }
    if roles.worker || roles.web {
        // Every registered tool can be found and priced, or nobody may call it.
        crate::tools::check(&pool, config.billing_timezone).await?;
    }
    let deps = Deps::new(pool.clone(), config.clone());
    // Counters are recorded from the start, whichever roles this process runs.
    let _ = crate::telemetry::handle();
    let state = AppState::new(pool.clone(), config.clone());
    // One LISTEN connection for the whole process, whatever roles it runs.
    let targets = crate::jobs::listen::Targets {
        tool_results: roles.web.then(|| state.tool_results.clone()),
        queues: roles.worker.then(|| deps.signals.clone()),
    };
    let listening = tokio::spawn(crate::jobs::listen::run(
        pool.clone(),
        targets,
        shutdown.clone(),
    ));
    let web = async {
        match (roles.web, listener) {
            (true, Some(listener)) => {
                http::serve_only(listener, state, shutdown.clone()).await?;
                Ok(())
            }
            (true, None) => anyhow::bail!("the web role needs a listener"),
            (false, _) => Ok(()),
        }
    };
    let work = async {
        if roles.worker {
            worker::run(deps.clone(), shutdown.clone()).await;
        }
    };
    let ticks = async {
        if roles.clock {
            let schedule = clock::Schedule::parse(clock::SCHEDULE_TOML)?;
            clock::run(deps.clone(), schedule, shutdown.clone()).await;
        }
        anyhow::Ok(())
    };
    let (web, (), ticks) = tokio::join!(web, work, ticks);
    listening.abort();
    web.and(ticks)
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn termination_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
