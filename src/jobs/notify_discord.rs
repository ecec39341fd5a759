//! `notify_discord`: a short note to the agent's Discord webhook (new lead, finished finding).
//!
//! Best effort and never in the way of metering: enqueued by the metering transaction, run on its
//! own queue. Skipped when `DISCORD_ENABLED` is off or the agent has no webhook URL.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Deps, Job, JobError};
use crate::store::agents;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NotifyDiscord {
    pub agent_id: Uuid,
    pub content: String,
}

impl Job for NotifyDiscord {
    const QUEUE: &'static str = "notify_discord";
    const MAX_ATTEMPTS: usize = 6;

    async fn run(self, deps: &Deps) -> Result<(), JobError> {
        if !deps.config.discord_enabled {
            return Ok(());
        }
        let mut conn = deps.pool.acquire().await?;
        let agent = agents::find(&mut conn, self.agent_id).await?;
        drop(conn);
        let Some(url) = agent
            .and_then(|a| a.discord_webhook_url)
            .filter(|u| !u.is_empty())
        else {
            return Ok(());
        };
        deps.providers.discord.post(&url, &self.content).await?;
        tracing::info!(agent.id = %self.agent_id, "discord note posted");
        Ok(())
    }
}

/// A note to the operator's channel (`OPS_DISCORD_WEBHOOK_URL`), e.g. a failed payment. Skipped
/// when the URL is not set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NotifyOps {
    pub content: String,
}

impl Job for NotifyOps {
    const QUEUE: &'static str = "notify_ops";
    const MAX_ATTEMPTS: usize = 6;

    async fn run(self, deps: &Deps) -> Result<(), JobError> {
        let Some(url) = &deps.config.ops_discord_webhook_url else {
            return Ok(());
        };
        deps.providers
            .discord
            .post(url.expose(), &self.content)
            .await?;
        tracing::info!("ops note posted");
        Ok(())
    }
}
