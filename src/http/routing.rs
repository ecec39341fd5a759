//! Phone number to agent, answered from memory: Vapi's assistant-request deadline is about
//! 7.5 s and a busy webhook should not pay a round trip per message for a lookup that rarely
//! changes. Entries (including "no such number") live for [`ROUTING_TTL`], so a new or re-pointed
//! number is seen within a few seconds.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sqlx::PgPool;

use crate::store::agents::{self, Agent};

/// How long a routing answer is trusted.
pub const ROUTING_TTL: Duration = Duration::from_secs(2);
/// Beyond this many numbers the cache is cleared rather than grown (bounds memory against a
/// stranger sending random phone number ids).
const MAX_ENTRIES: usize = 10_000;

/// When the answer was read, and the agent (or `None`: no agent owns the number).
type Entry = (Instant, Option<Arc<Agent>>);

#[derive(Default)]
pub struct RoutingCache {
    entries: Mutex<HashMap<String, Entry>>,
}

impl RoutingCache {
    /// The agent owning `phone_number_id`, if any.
    pub async fn agent_for(
        &self,
        pool: &PgPool,
        phone_number_id: &str,
    ) -> Result<Option<Arc<Agent>>, sqlx::Error> {
        if let Some(hit) = self.cached(phone_number_id) {
            return Ok(hit);
        }
        let mut conn = pool.acquire().await?;
        let agent = agents::find_by_phone_number_id(&mut conn, phone_number_id)
            .await?
            .map(Arc::new);
        if let Ok(mut map) = self.entries.lock() {
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            map.insert(phone_number_id.to_string(), (Instant::now(), agent.clone()));
        }
        Ok(agent)
    }

    fn cached(&self, phone_number_id: &str) -> Option<Option<Arc<Agent>>> {
        let map = self.entries.lock().ok()?;
        let (at, agent) = map.get(phone_number_id)?;
        (at.elapsed() < ROUTING_TTL).then(|| agent.clone())
    }
}
