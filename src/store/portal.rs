//! Agency portal sign-in links: one-time, random secrets with only their SHA-256 at rest (see
//! [`super::secrets`]); the sessions they open are [`super::sessions::PORTAL`].

use std::time::Duration;

use sqlx::PgConnection;
use uuid::Uuid;

use super::secrets::{digest, new_secret};

/// A sign-in link token for `agent_id`, valid for `ttl`, usable once.
pub async fn create_link(
    conn: &mut PgConnection,
    agent_id: Uuid,
    ttl: Duration,
) -> Result<String, sqlx::Error> {
    let token = new_secret()?;
    sqlx::query(
        "INSERT INTO portal_sign_in_tokens (token_hash, agent_id, expires_at)
         VALUES ($1, $2, now() + make_interval(secs => $3))",
    )
    .bind(digest(&token))
    .bind(agent_id)
    .bind(ttl.as_secs_f64())
    .execute(conn)
    .await?;
    Ok(token)
}

/// Uses a link token up: its agent when it was unused and unexpired (atomically: two clicks
/// racing get one session).
pub async fn redeem_link(
    conn: &mut PgConnection,
    token: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    if token.len() != 64 {
        return Ok(None);
    }
    sqlx::query_scalar(
        "UPDATE portal_sign_in_tokens SET used_at = now()
          WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now()
          RETURNING agent_id",
    )
    .bind(digest(token))
    .fetch_optional(conn)
    .await
}
