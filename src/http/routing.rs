//! Phone number (or saved assistant, or agent id) to agent, answered from memory: Vapi's
//! assistant-request deadline is about 7.5 s and a busy webhook should not pay a round trip per
//! message for a lookup that rarely changes. Entries (including "no such agent") live for
//! [`ROUTING_TTL`], so a new or re-pointed number is seen within a few seconds.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sqlx::PgPool;

use crate::{
    store::agents::{self, Agent},
    vapi::RouteKey,
};

/// How long a routing answer is trusted.
pub const ROUTING_TTL: Duration = Duration::from_secs(2);
/// Beyond this many numbers the cache is cleared rather than grown (bounds memory against a
/// stranger sending random phone number ids).
const MAX_ENTRIES: usize = 10_000;

/// When the answer was read, and the agent (or `None`: no agent answers to the key).
type Entry = (Instant, Option<Arc<Agent>>);

#[derive(Default)]
pub struct RoutingCache {
    entries: Mutex<HashMap<RouteKey, Entry>>,
}

impl RoutingCache {
    /// The first agent any of `keys` names, trying them in order.
    pub async fn agent_for_any(
        &self,
        pool: &PgPool,
        keys: &[RouteKey],
    ) -> Result<Option<Arc<Agent>>, sqlx::Error> {
        for key in keys {
            if let Some(agent) = self.agent_for(pool, key).await? {
                return Ok(Some(agent));
            }
        }
        Ok(None)
    }

    /// The agent `key` names, if any.
    pub async fn agent_for(
        &self,
        pool: &PgPool,
        key: &RouteKey,
    ) -> Result<Option<Arc<Agent>>, sqlx::Error> {
        if let Some(hit) = self.cached(key) {
            return Ok(hit);
        }
        let mut conn = pool.acquire().await?;
        let agent = agents::for_route(&mut conn, key).await?.map(Arc::new);
        if let Ok(mut map) = self.entries.lock() {
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            map.insert(key.clone(), (Instant::now(), agent.clone()));
        }
        Ok(agent)
    }

    fn cached(&self, key: &RouteKey) -> Option<Option<Arc<Agent>>> {
        let map = self.entries.lock().ok()?;
        let (at, agent) = map.get(key)?;
        (at.elapsed() < ROUTING_TTL).then(|| agent.clone())
    }
}
