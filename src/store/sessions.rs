//! Server-side sessions, the ops page's (`ops_sessions`, migration 0016) and the agency portal's
//! (`portal_sessions`, migration 0017): a random id in the cookie (256 bits from the operating
//! system, hex), only its SHA-256 at rest, an expiry, revocable. One shape on two tables, each
//! naming its owner: an operator's name, or an agent's id. Ops sessions are also bound to the
//! operator's token, so one outlives neither the operator's place in the config nor the token.

use std::{marker::PhantomData, time::Duration};

use sqlx::{PgConnection, Postgres};
use uuid::Uuid;

use super::secrets::{digest, new_secret};

/// The sessions of one table, owned by a `T`.
pub struct Sessions<T> {
    table: &'static str,
    owner: &'static str,
    owned_by: PhantomData<fn() -> T>,
}

/// Ops page sessions, owned by the operator's name (from `OPS_TOKENS`).
pub const OPS: Sessions<String> = Sessions {
    table: "ops_sessions",
    owner: "operator",
    owned_by: PhantomData,
};

/// Agency portal sessions, owned by the agent's id.
pub const PORTAL: Sessions<Uuid> = Sessions {
    table: "portal_sessions",
    owner: "agent_id",
    owned_by: PhantomData,
};

impl<T> Sessions<T>
where
    T: for<'q> sqlx::Encode<'q, Postgres>
        + for<'r> sqlx::Decode<'r, Postgres>
        + sqlx::Type<Postgres>
        + Send
        + Unpin,
{
    /// A new session for `owner`, valid for `ttl`; returns the id for the cookie.
    pub async fn create(
        &self,
        conn: &mut PgConnection,
        owner: T,
        ttl: Duration,
    ) -> Result<String, sqlx::Error> {
        let id = new_secret()?;
        self.prune(conn).await?;
        let insert = format!(
            "INSERT INTO {} (id_hash, {}, expires_at) VALUES ($1, $2, now() + make_interval(secs => $3))",
            self.table, self.owner
        );
        sqlx::query(sqlx::AssertSqlSafe(insert))
            .bind(digest(&id))
            .bind(owner)
            .bind(ttl.as_secs_f64())
            .execute(&mut *conn)
            .await?;
        Ok(id)
    }

    /// Expired sessions go as new ones come (no background job needed for so few rows).
    async fn prune(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        let prune = format!(
            "DELETE FROM {} WHERE expires_at < now() - interval '1 day'",
            self.table
        );
        sqlx::query(sqlx::AssertSqlSafe(prune))
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// The owner of a live session (not expired, not revoked), if `id` is one.
    pub async fn owner(&self, conn: &mut PgConnection, id: &str) -> Result<Option<T>, sqlx::Error> {
        let Some(select) = self.live(self.owner, id) else {
            return Ok(None);
        };
        sqlx::query_scalar(sqlx::AssertSqlSafe(select))
            .bind(digest(id))
            .fetch_optional(conn)
            .await
    }

    /// The query of `columns` of the live session (not expired, not revoked) whose id hashes to
    /// `$1`; `None` when `id` cannot be a session id.
    fn live(&self, columns: &str, id: &str) -> Option<String> {
        (id.len() == 64).then(|| {
            format!(
                "SELECT {columns} FROM {} WHERE id_hash = $1 AND revoked_at IS NULL AND expires_at > now()",
                self.table
            )
        })
    }

    /// Ends a session (logout, sign-out); later requests with its cookie are refused.
    pub async fn revoke(&self, conn: &mut PgConnection, id: &str) -> Result<(), sqlx::Error> {
        let update = format!(
            "UPDATE {} SET revoked_at = now() WHERE id_hash = $1 AND revoked_at IS NULL",
            self.table
        );
        sqlx::query(sqlx::AssertSqlSafe(update))
            .bind(digest(id))
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// Ops sessions are also bound to the token they were opened with (migration 0025): `token_mac`
/// is computed by the caller from the token and the new session's id
/// ([`crate::config::OpsToken::session_mac`]), and compared again on every request.
impl Sessions<String> {
    /// A new session for `operator`, bound by `mac(id)`; returns the id for the cookie.
    pub async fn create_bound(
        &self,
        conn: &mut PgConnection,
        operator: &str,
        ttl: Duration,
        mac: impl FnOnce(&str) -> Vec<u8>,
    ) -> Result<String, sqlx::Error> {
        let id = new_secret()?;
        self.prune(conn).await?;
        let insert = format!(
            "INSERT INTO {} (id_hash, {}, token_mac, expires_at)
             VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
            self.table, self.owner
        );
        sqlx::query(sqlx::AssertSqlSafe(insert))
            .bind(digest(&id))
            .bind(operator)
            .bind(mac(&id))
            .bind(ttl.as_secs_f64())
            .execute(&mut *conn)
            .await?;
        Ok(id)
    }

    /// The operator of a live session and the token binding it was opened with (`None` for a
    /// session from before bindings, which the caller refuses).
    pub async fn bound_owner(
        &self,
        conn: &mut PgConnection,
        id: &str,
    ) -> Result<Option<(String, Option<Vec<u8>>)>, sqlx::Error> {
        let Some(select) = self.live(&format!("{}, token_mac", self.owner), id) else {
            return Ok(None);
        };
        sqlx::query_as(sqlx::AssertSqlSafe(select))
            .bind(digest(id))
            .fetch_optional(conn)
            .await
    }
}
