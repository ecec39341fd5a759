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
/// How old an agent read from the database may be and still answer an `assistant-request` while
/// the database is unreachable ([`RoutingCache::last_known`]): the caller hears their agency
/// rather than nothing.
pub const LAST_KNOWN_MAX_AGE: Duration = Duration::from_secs(3600);
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

    /// The agent any of `keys` last named, read at most [`LAST_KNOWN_MAX_AGE`] ago, however
    /// stale (for when the database cannot be asked). "No such agent" is never remembered here:
    /// a number we do not know is not answered from memory.
    pub fn last_known(&self, keys: &[RouteKey]) -> Option<Arc<Agent>> {
        let map = self.entries.lock().ok()?;
        keys.iter().find_map(|key| {
            map.get(key)
                .filter(|(at, _)| at.elapsed() < LAST_KNOWN_MAX_AGE)
                .and_then(|(_, agent)| agent.clone())
        })
    }

    fn cached(&self, key: &RouteKey) -> Option<Option<Arc<Agent>>> {
        let map = self.entries.lock().ok()?;
        let (at, agent) = map.get(key)?;
        (at.elapsed() < ROUTING_TTL).then(|| agent.clone())
    }
}
