//! Agents: the tenants, found by their Vapi phone number id.

use sqlx::PgConnection;
use uuid::Uuid;

/// The routing facts about an agent.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Agent {
    pub id: Uuid,
    pub agency_name: String,
    pub email: String,
    pub phone_number: Option<String>,
    pub vapi_phone_number_id: Option<String>,
    pub vapi_assistant_id: Option<String>,
    pub discord_webhook_url: Option<String>,
    pub greeting: Option<String>,
    pub system_prompt: Option<String>,
    pub status: String,
    /// The tools its assistant declares (registered names); `None`: every registered tool.
    pub tools: Option<Vec<String>>,
    pub billing_starts_on: chrono::NaiveDate,
    /// The day its cancellation takes effect (a future day: scheduled); see [`crate::lifecycle`].
    pub cancelled_on: Option<chrono::NaiveDate>,
    /// The transient assistant's `maxDurationSeconds`, in minutes (1 to 720).
    pub max_call_minutes: i32,
    /// Where the assistant may transfer a caller (E.164), and when ([`crate::vapi::transfer::Hours`]
    /// text; always set with the number).
    pub transfer_number: Option<String>,
    pub transfer_hours: Option<String>,
    /// The monthly cap on usage charges, if any ([`super::caps`]), and what reaching it does
    /// (`alert` or `block`).
    pub usage_cap_usd: Option<rust_decimal::Decimal>,
    pub cap_action: String,
}

impl Agent {
    /// Its state at `now` ([`crate::lifecycle::state`]).
    pub fn state(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        tz: chrono_tz::Tz,
    ) -> crate::lifecycle::State {
        crate::lifecycle::state(&self.status, self.cancelled_on, now, tz)
    }

    /// Whether it answers calls and runs tools now.
    pub fn in_service(&self, tz: chrono_tz::Tz) -> bool {
        self.state(chrono::Utc::now(), tz) == crate::lifecycle::State::Active
    }
}

const COLUMNS: &str =
    "id, agency_name, email, phone_number, vapi_phone_number_id, vapi_assistant_id,
                       discord_webhook_url, greeting, system_prompt, status, tools,
                       billing_starts_on, cancelled_on, max_call_minutes, transfer_number,
                       transfer_hours, usage_cap_usd, cap_action";

/// The agent matching `condition` on `$1` (a constant: it is pasted into the SQL), if any.
async fn one<'q, T>(
    conn: &mut PgConnection,
    condition: &'static str,
    value: T,
) -> Result<Option<Agent>, sqlx::Error>
where
    T: 'q + Send + sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM agents WHERE {condition}"
    )))
    .bind(value)
    .fetch_optional(conn)
    .await
}

/// The agent that owns a Vapi phone number, if any.
pub async fn find_by_phone_number_id(
    conn: &mut PgConnection,
    phone_number_id: &str,
) -> Result<Option<Agent>, sqlx::Error> {
    one(conn, "vapi_phone_number_id = $1", phone_number_id).await
}

/// Every agent, by agency name.
pub async fn list(conn: &mut PgConnection) -> Result<Vec<Agent>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM agents ORDER BY agency_name, email"
    )))
    .fetch_all(conn)
    .await
}

pub async fn find(conn: &mut PgConnection, agent_id: Uuid) -> Result<Option<Agent>, sqlx::Error> {
    one(conn, "id = $1", agent_id).await
}

/// The agent whose own saved Vapi assistant this is (web, dashboard and API calls name the
/// assistant, not a number).
pub async fn find_by_assistant_id(
    conn: &mut PgConnection,
    assistant_id: &str,
) -> Result<Option<Agent>, sqlx::Error> {
    one(
        conn,
        "vapi_assistant_id = $1 ORDER BY created_at LIMIT 1",
        assistant_id,
    )
    .await
}

/// The agent a routing key names (see [`crate::vapi::route_keys`]), if any: the webhook's
/// routing cache and the daily sync resolve keys alike.
pub async fn for_route(
    conn: &mut PgConnection,
    key: &crate::vapi::RouteKey,
) -> Result<Option<Agent>, sqlx::Error> {
    use crate::vapi::RouteKey;
    match key {
        RouteKey::PhoneNumber(id) => find_by_phone_number_id(conn, id).await,
        RouteKey::Assistant(id) => find_by_assistant_id(conn, id).await,
        RouteKey::Agent(id) => find(conn, *id).await,
    }
}

pub async fn find_by_email(
    conn: &mut PgConnection,
    email: &str,
) -> Result<Option<Agent>, sqlx::Error> {
    one(conn, "email = $1", email).await
}

/// A new agent named `agency_name` with `email`, then `profile` applied ([`update`]) in the
/// same transaction; the email and Vapi phone number id must be unused.
pub async fn insert(
    conn: &mut PgConnection,
    agency_name: &str,
    email: &str,
    profile: &AgentChanges,
) -> Result<Uuid, sqlx::Error> {
    use sqlx::Connection;
    let mut tx = conn.begin().await?;
    let id =
        sqlx::query_scalar("INSERT INTO agents (agency_name, email) VALUES ($1, $2) RETURNING id")
            .bind(agency_name)
            .bind(email)
            .fetch_one(&mut *tx)
            .await?;
    update(&mut tx, email, profile).await?;
    tx.commit().await?;
    Ok(id)
}

/// Changes to an agent; `None` leaves a field as it is, `Some("")` clears it.
#[derive(Default)]
pub struct AgentChanges {
    pub agency_name: Option<String>,
    pub phone_number: Option<String>,
    pub vapi_phone_number_id: Option<String>,
    pub vapi_assistant_id: Option<String>,
    pub discord_webhook_url: Option<String>,
    pub greeting: Option<String>,
    pub system_prompt: Option<String>,
    /// `Some(None)`: every registered tool; `Some(Some(names))`: just those.
    pub tools: Option<Option<Vec<String>>>,
    pub max_call_minutes: Option<i32>,
    /// E.164, checked by the caller (and the database); `Some("")` clears.
    pub transfer_number: Option<String>,
    /// Canonical [`crate::vapi::transfer::Hours`] text; `Some("")` clears.
    pub transfer_hours: Option<String>,
    /// `Some(None)` removes the cap.
    pub usage_cap_usd: Option<Option<rust_decimal::Decimal>>,
    /// `alert` or `block` (checked by the database).
    pub cap_action: Option<String>,
}

/// Applies `changes` to the agent with `email`; `false` when no such agent.
pub async fn update(
    conn: &mut PgConnection,
    email: &str,
    c: &AgentChanges,
) -> Result<bool, sqlx::Error> {
    // COALESCE keeps unchanged fields; NULLIF turns an explicit "" into NULL (cleared).
    let rows = sqlx::query(
        "UPDATE agents SET
            agency_name          = COALESCE($2, agency_name),
            phone_number         = CASE WHEN $3::text IS NULL THEN phone_number ELSE NULLIF($3, '') END,
            vapi_phone_number_id = CASE WHEN $4::text IS NULL THEN vapi_phone_number_id ELSE NULLIF($4, '') END,
            vapi_assistant_id    = CASE WHEN $5::text IS NULL THEN vapi_assistant_id ELSE NULLIF($5, '') END,
            discord_webhook_url  = CASE WHEN $6::text IS NULL THEN discord_webhook_url ELSE NULLIF($6, '') END,
            greeting             = CASE WHEN $7::text IS NULL THEN greeting ELSE NULLIF($7, '') END,
            system_prompt        = CASE WHEN $8::text IS NULL THEN system_prompt ELSE NULLIF($8, '') END,
            tools                = CASE WHEN $9 THEN $10::text[] ELSE tools END,
            max_call_minutes     = COALESCE($11, max_call_minutes),
            transfer_number      = CASE WHEN $12::text IS NULL THEN transfer_number ELSE NULLIF($12, '') END,
            transfer_hours       = CASE WHEN $13::text IS NULL THEN transfer_hours ELSE NULLIF($13, '') END,
            usage_cap_usd        = CASE WHEN $14 THEN $15::numeric ELSE usage_cap_usd END,
            cap_action           = COALESCE($16, cap_action)
          WHERE email = $1",
    )
    .bind(email)
    .bind(&c.agency_name)
    .bind(&c.phone_number)
    .bind(&c.vapi_phone_number_id)
    .bind(&c.vapi_assistant_id)
    .bind(&c.discord_webhook_url)
    .bind(&c.greeting)
    .bind(&c.system_prompt)
    .bind(c.tools.is_some())
    .bind(c.tools.clone().flatten())
    .bind(c.max_call_minutes)
    .bind(&c.transfer_number)
    .bind(&c.transfer_hours)
    .bind(c.usage_cap_usd.is_some())
    .bind(c.usage_cap_usd.flatten())
    .bind(&c.cap_action)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(rows == 1)
}

/// A new API token for the agent: returned once, stored only as a SHA-256 hash.
pub async fn new_token(conn: &mut PgConnection, agent_id: Uuid) -> Result<String, sqlx::Error> {
    let token = format!("amk_{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    sqlx::query("INSERT INTO agent_api_tokens (agent_id, token_hash) VALUES ($1, $2)")
        .bind(agent_id)
        .bind(token_hash(&token))
        .execute(conn)
        .await?;
    Ok(token)
}

/// Revokes every live token of the agent; returns how many.
pub async fn revoke_tokens(conn: &mut PgConnection, agent_id: Uuid) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE agent_api_tokens SET revoked_at = now() WHERE agent_id = $1 AND revoked_at IS NULL",
    )
    .bind(agent_id)
    .execute(conn)
    .await?
    .rows_affected())
}

/// The agent a token belongs to, if any and not cancelled at now (in zone `tz`).
pub async fn agent_for_token(
    conn: &mut PgConnection,
    token: &str,
    tz: chrono_tz::Tz,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT t.agent_id FROM agent_api_tokens t JOIN agents a ON a.id = t.agent_id
          WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND {}",
        crate::lifecycle::not_cancelled_sql("a", "$2")
    )))
    .bind(token_hash(token))
    .bind(tz.name())
    .fetch_optional(conn)
    .await
}

fn token_hash(token: &str) -> Vec<u8> {
    super::secrets::digest(token)
}

/// The agent whose Supabase user is `user_id` (`agents.user_id`), if any.
/// Not when that agent is cancelled at now (in zone `tz`).
pub async fn agent_for_user(
    conn: &mut PgConnection,
    user_id: Uuid,
    tz: chrono_tz::Tz,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT a.id FROM agents a WHERE a.user_id = $1 AND {}
          ORDER BY a.created_at LIMIT 1",
        crate::lifecycle::not_cancelled_sql("a", "$2")
    )))
    .bind(user_id)
    .bind(tz.name())
    .fetch_optional(conn)
    .await
}
