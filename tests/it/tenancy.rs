//! Tenant isolation at the database: the role, the policies, and an audit of the catalog.

use agent_meter::store::db;
use sqlx::{PgPool, Row, postgres::PgPoolOptions};
use uuid::Uuid;

use crate::helpers::*;

/// The tenant tables [`populate`] writes a row of for every agent.
pub(crate) const TENANT_TABLES: &[&str] = &[
    "leads",
    "properties",
    "risk_assessments",
    "tags",
    "calls",
    "agent_usage_metrics",
    "invoices",
    "invoice_lines",
    "webhook_endpoints",
    "webhook_messages",
    "webhook_deliveries",
    "usage_cap_notices",
];

/// Runs `sql` on `conn` inside a savepoint, then rolls back to it: what `sql` did.
async fn attempt(
    conn: &mut sqlx::PgConnection,
    sql: String,
) -> Result<sqlx::postgres::PgQueryResult, sqlx::Error> {
    sqlx::query("SAVEPOINT op")
        .execute(&mut *conn)
        .await
        .expect("savepoint");
    let done = sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut *conn)
        .await;
    sqlx::query("ROLLBACK TO SAVEPOINT op")
        .execute(&mut *conn)
        .await
        .expect("rollback");
    done
}

/// A pool of its own on `db`, of `connections` connections (so that they are reused).
async fn pool_of(db: &TestDb, connections: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(connections)
        .connect(&db.url)
        .await
        .expect("pool")
}

/// One row of every kind for every seeded agent, written as the owner.
async fn populate(pool: &PgPool) -> Vec<Uuid> {
    let agents: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM agents ORDER BY id")
        .fetch_all(pool)
        .await
        .expect("agents");
    for (n, agent) in agents.iter().enumerate() {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "WITH l AS (INSERT INTO leads (agent_id, phone) VALUES ('{agent}', '+1602555{n:04}') RETURNING id),
                  p AS (INSERT INTO properties (agent_id, lead_id, address) SELECT '{agent}', id, '{n} Main St' FROM l RETURNING id, lead_id),
                  r AS (INSERT INTO risk_assessments (agent_id, lead_id, property_id, kind, result, idempotency_key)
                        SELECT '{agent}', lead_id, id, 'solar', '{{}}', 'k{n}' FROM p RETURNING id),
                  t AS (INSERT INTO tags (agent_id, lead_id, tag) SELECT '{agent}', id, 'solar' FROM l RETURNING id),
                  c AS (INSERT INTO calls (agent_id, vapi_call_id, lead_id) SELECT '{agent}', 'call-{n}', id FROM l RETURNING id),
                  u AS (INSERT INTO agent_usage_metrics (agent_id, metric_type, quantity, unit_price_usd, cost_usd, occurred_at, idempotency_key)
                        VALUES ('{agent}', 'solar_ocr_scan', 1, 0.075, 0.075, now(), 'u{n}') RETURNING id),
                  i AS (INSERT INTO invoices (agent_id, period_start, period_end, starts_at, ends_at, time_zone) VALUES ('{agent}', '2026-11-01', '2026-12-01', '2026-11-01 07:00+00', '2026-12-01 07:00+00', 'America/Phoenix') RETURNING id)
             INSERT INTO invoice_lines (agent_id, invoice_id, kind, metric_type, description, quantity, unit_price_usd, amount_usd)
             SELECT '{agent}', id, 'subscription', 'subscription', 's', 1, 249, 249 FROM i"
        )))
        .execute(pool)
        .await
        .expect("populate");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "WITH e AS (INSERT INTO webhook_endpoints (agent_id, url, secret)
                        VALUES ('{agent}', 'https://hooks.example.com/{n}', 'whsec_AAAA') RETURNING id),
                  m AS (INSERT INTO webhook_messages (id, agent_id, type, payload)
                        VALUES ('msg_{n}', '{agent}', 'lead.created', '{{}}') RETURNING id)
             INSERT INTO webhook_deliveries (agent_id, message_id, endpoint_id)
             SELECT '{agent}', m.id, e.id FROM m, e;
             INSERT INTO usage_cap_notices (agent_id, month, threshold, usage_usd, cap_usd)
             VALUES ('{agent}', '2026-11-01', 50, 5, 10)"
        )))
        .execute(pool)
        .await
        .expect("populate webhooks");
    }
    agents
}

#[tokio::test]
async fn every_tenant_sees_and_changes_only_its_own_rows() {
    let db = TestDb::seeded().await;
    let agents = populate(&db.pool).await;
    for (i, agent) in agents.iter().enumerate() {
        let other = agents[(i + 1) % agents.len()];
        let mut tx = db::tenant_tx(&db.pool, *agent).await.expect("tenant tx");
        let me: i64 = sqlx::query_scalar("SELECT count(*) FROM agents")
            .fetch_one(&mut *tx)
            .await
            .expect("agents");
        assert_eq!(me, 1, "an agent sees its own agents row only");
        // The provenance view runs with the caller's rights: RLS applies through it.
        let traced: (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE agent_id <> current_agent_id()) FROM usage_provenance",
        )
        .fetch_one(&mut *tx)
        .await
        .expect("usage_provenance");
        assert_eq!(traced, (1, 0), "usage_provenance as {agent}");
        for table in TENANT_TABLES {
            let seen: (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT count(*), count(*) FILTER (WHERE agent_id <> '{agent}') FROM {table}"
            )))
            .fetch_one(&mut *tx)
            .await
            .expect("select");
            assert_eq!(seen, (1, 0), "{table} as {agent}");
            for (op, sql) in [
                (
                    "update",
                    format!("UPDATE {table} SET agent_id = agent_id WHERE agent_id <> '{agent}'"),
                ),
                (
                    "delete",
                    format!("DELETE FROM {table} WHERE agent_id <> '{agent}'"),
                ),
            ] {
                match attempt(&mut tx, sql).await {
                    Ok(r) => assert_eq!(r.rows_affected(), 0, "{op} {table} as {agent}"),
                    Err(e) => assert!(
                        e.to_string().contains("permission denied"),
                        "{op} {table}: {e}"
                    ),
                }
            }
            // Writing a row for another agent is refused: by the policy's WITH CHECK, the grant,
            // or the composite foreign key; never written.
            let foreign_insert = format!(
                "INSERT INTO {table} SELECT (jsonb_populate_record(NULL::{table}, to_jsonb(x) || jsonb_build_object('agent_id', '{other}'::text, 'id', gen_random_uuid()))).* FROM {table} x LIMIT 1"
            );
            let refused = attempt(&mut tx, foreign_insert).await;
            assert!(
                refused.is_err(),
                "foreign insert into {table} as {agent} was accepted"
            );
        }
        tx.rollback().await.expect("rollback");
    }
    // Nothing was changed by any of it.
    for table in TENANT_TABLES {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&db.pool)
                .await
                .expect("count");
        assert_eq!(n, agents.len() as i64, "{table}");
    }
}

#[tokio::test]
async fn no_tenant_set_means_no_rows_even_on_a_reused_connection() {
    let db = TestDb::seeded().await;
    let agents = populate(&db.pool).await;
    let pool = pool_of(&db, 1).await;
    // Leave the one connection with a used (now empty) app.agent_id.
    db::tenant_tx(&pool, agents[0])
        .await
        .expect("tx")
        .commit()
        .await
        .expect("commit");
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("SET LOCAL ROLE agent_meter_tenant")
        .execute(&mut *tx)
        .await
        .expect("role");
    for table in TENANT_TABLES.iter().chain(&["agents"]) {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&mut *tx)
                .await
                .expect("count");
        assert_eq!(n, 0, "{table} without a tenant");
    }
}

#[tokio::test]
async fn a_thousand_transactions_alternating_tenants_on_two_connections_never_see_a_wrong_row() {
    let db = TestDb::seeded().await;
    let agents = populate(&db.pool).await;
    let pool = pool_of(&db, 2).await;
    let runs = (0..1000).map(|i| {
        let pool = pool.clone();
        let agent = agents[i % agents.len()];
        async move {
            let mut tx = db::tenant_tx(&pool, agent).await.expect("tx");
            let owners: Vec<Uuid> = sqlx::query_scalar("SELECT agent_id FROM leads")
                .fetch_all(&mut *tx)
                .await
                .expect("leads");
            tx.commit().await.expect("commit");
            assert_eq!(owners, vec![agent], "transaction {i}");
        }
    });
    futures::future::join_all(runs).await;
}

#[tokio::test]
async fn the_catalog_keeps_every_tenant_table_isolated() {
    let db = TestDb::seeded().await;
    // Every table with an agent_id column (and agents itself) has RLS on and a tenant policy.
    let unguarded: Vec<String> = db
        .column(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
            AND (c.relname = 'agents' OR EXISTS (SELECT 1 FROM pg_attribute a
                 WHERE a.attrelid = c.oid AND a.attname = 'agent_id' AND NOT a.attisdropped))
            AND c.relname <> 'webhook_events'
            AND (NOT c.relrowsecurity OR NOT EXISTS (
                 SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid
                   AND 'agent_meter_tenant'::regrole = ANY (p.polroles)))",
        )
        .await;
    assert!(
        unguarded.is_empty(),
        "tenant tables without RLS or a policy: {unguarded:?}"
    );
    // The tables the tenant role must never touch.
    for table in [
        "webhook_events",
        "late_findings",
        "apalis.jobs",
        "apalis.workers",
    ] {
        let row = sqlx::query(
            "SELECT has_table_privilege('agent_meter_tenant', $1, 'SELECT') OR
                    has_table_privilege('agent_meter_tenant', $1, 'INSERT') AS any",
        )
        .bind(table)
        .fetch_one(&db.pool)
        .await
        .expect("privilege");
        assert!(!row.get::<bool, _>("any"), "tenant role can reach {table}");
    }
    // No DELETE, TRUNCATE or REFERENCES anywhere (tenant code never deletes); no way around RLS.
    let dangerous: Vec<String> = db
        .column(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname IN ('public', 'apalis') AND c.relkind IN ('r', 'p', 'v')
            AND (has_table_privilege('agent_meter_tenant', c.oid, 'DELETE')
                 OR has_table_privilege('agent_meter_tenant', c.oid, 'TRUNCATE')
                 OR has_table_privilege('agent_meter_tenant', c.oid, 'REFERENCES'))",
        )
        .await;
    assert!(dangerous.is_empty(), "{dangerous:?}");
    let (bypass, superuser): (bool, bool) = db
        .row("SELECT rolbypassrls, rolsuper FROM pg_roles WHERE rolname = 'agent_meter_tenant'")
        .await;
    assert!(!bypass && !superuser);
    // Views run with the caller's rights; SECURITY DEFINER functions the tenant can call pin search_path.
    let leaky_views: Vec<String> = db
        .column(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND c.relkind = 'v'
            AND NOT COALESCE('security_invoker=true' = ANY (c.reloptions), false)",
        )
        .await;
    assert!(leaky_views.is_empty(), "{leaky_views:?}");
    let unpinned: Vec<String> = db
        .column(
            "SELECT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname = 'public' AND p.prosecdef
            AND has_function_privilege('agent_meter_tenant', p.oid, 'EXECUTE')
            AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) s WHERE s LIKE 'search_path=%')",
        )
        .await;
    assert!(unpinned.is_empty(), "{unpinned:?}");
}

/// One agency's negotiated prices are not another's business; defaults stay visible to all.
#[tokio::test]
async fn a_tenant_sees_default_prices_and_its_own_overrides_only() {
    let db = TestDb::seeded().await;
    let agents: Vec<Uuid> = db.column("SELECT id FROM agents ORDER BY id LIMIT 2").await;
    for (agent, price) in agents.iter().zip(["0.05", "0.06"]) {
        sqlx::query(
            "INSERT INTO pricing_config (metric_type, unit_price_usd, unit, effective_from, agent_id)
             VALUES ('solar_ocr_scan', $2::numeric, 'scan', '2026-01-01', $1)",
        )
        .bind(agent)
        .bind(price)
        .execute(&db.pool)
        .await
        .expect("override");
    }
    let mut tx = db::tenant_tx(&db.pool, agents[0]).await.expect("tenant tx");
    let seen: Vec<(Option<Uuid>, String)> = sqlx::query_as(
        "SELECT agent_id, unit_price_usd::text FROM pricing_config WHERE agent_id IS NOT NULL",
    )
    .fetch_all(&mut *tx)
    .await
    .expect("overrides");
    assert_eq!(seen, vec![(Some(agents[0]), "0.050000".to_string())]);
    let defaults: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pricing_config WHERE agent_id IS NULL")
            .fetch_one(&mut *tx)
            .await
            .expect("defaults");
    assert!(defaults > 0);
    // The price in force, as a tenant's job computes it, is still its own override.
    let price: String = sqlx::query_scalar(
        "SELECT unit_price_usd::text FROM price_in_force($1, 'solar_ocr_scan', '2026-11-20')",
    )
    .bind(agents[0])
    .fetch_one(&mut *tx)
    .await
    .expect("price in force");
    assert_eq!(price, "0.050000");
}

#[tokio::test]
async fn a_new_tenant_table_without_a_policy_fails_the_audit() {
    let db = TestDb::seeded().await;
    db.execute(
        "CREATE TABLE notes (id uuid PRIMARY KEY, agent_id uuid NOT NULL REFERENCES agents (id))",
    )
    .await;
    let unguarded: Vec<String> = db
        .column(
            "SELECT c.relname::text FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'public' AND c.relkind = 'r'
                AND EXISTS (SELECT 1 FROM pg_attribute a
                             WHERE a.attrelid = c.oid AND a.attname = 'agent_id')
                AND c.relname <> 'webhook_events'
                AND (NOT c.relrowsecurity
                     OR NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid))",
        )
        .await;
    assert_eq!(unguarded, vec!["notes".to_string()]);
}

/// On a Supabase project (an `auth` schema, `auth.uid()` and the `authenticated` role) the same
/// tables admit exactly the rows of the agent whose `user_id` is the signed-in user.
#[tokio::test]
async fn on_supabase_a_signed_in_user_sees_only_their_agencys_rows() {
    let db = TestDb::empty().await;
    sqlx::raw_sql(
        "DO $$ BEGIN CREATE ROLE authenticated NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
         CREATE SCHEMA auth;
         CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE
             AS $$ SELECT NULLIF(current_setting('request.jwt.claim.sub', true), '')::uuid $$;
         GRANT USAGE ON SCHEMA auth TO authenticated;
         GRANT EXECUTE ON FUNCTION auth.uid() TO authenticated;",
    )
    .execute(&db.pool)
    .await
    .expect("a Supabase-like auth schema");
    agent_meter::app::migrate(&db.pool).await.expect("migrate");
    agent_meter::store::seed::run(&db.pool).await.expect("seed");
    let agents = populate(&db.pool).await;
    let user = Uuid::new_v4();
    sqlx::query("UPDATE agents SET user_id = $1 WHERE id = $2")
        .bind(user)
        .bind(agents[2])
        .execute(&db.pool)
        .await
        .expect("link user");
    sqlx::raw_sql("GRANT USAGE ON SCHEMA public TO authenticated; GRANT SELECT ON agents, leads, agent_usage_metrics TO authenticated;")
        .execute(&db.pool)
        .await
        .expect("Supabase's grants");
    let mut tx = db.pool.begin().await.expect("tx");
    sqlx::query("SET LOCAL ROLE authenticated")
        .execute(&mut *tx)
        .await
        .expect("role");
    sqlx::query("SELECT set_config('request.jwt.claim.sub', $1, true)")
        .bind(user.to_string())
        .execute(&mut *tx)
        .await
        .expect("jwt");
    let owners: Vec<Uuid> = sqlx::query_scalar(
        "SELECT agent_id FROM leads UNION ALL SELECT agent_id FROM agent_usage_metrics",
    )
    .fetch_all(&mut *tx)
    .await
    .expect("rows");
    assert_eq!(owners, vec![agents[2], agents[2]]);
    let visible_agents: i64 = scalar_on(&mut tx, "SELECT count(*) FROM agents").await;
    assert_eq!(visible_agents, 1);
}

/// Findings owed to live calls carry another agency's control URL: no tenant may read them, mark
/// them said or add one (only the owner's webhook and writer touch the table).
#[tokio::test]
async fn a_tenant_cannot_see_or_change_late_findings() {
    let db = TestDb::seeded().await;
    let agents = populate(&db.pool).await;
    db.execute(
        "INSERT INTO late_findings (key, control_url)
         VALUES ('tool_call:tc-other', 'https://vapi.example/control/secret')",
    )
    .await;
    let mut tx = db::tenant_tx(&db.pool, agents[0]).await.expect("tenant tx");
    for sql in [
        "SELECT count(*) FROM late_findings",
        "UPDATE late_findings SET delivered_at = now() WHERE delivered_at IS NULL",
        "INSERT INTO late_findings (key, control_url) VALUES ('tool_call:tc-mine', 'https://evil.example')",
        "DELETE FROM late_findings",
    ] {
        let e = attempt(&mut tx, sql.to_string()).await.expect_err(sql);
        assert!(e.to_string().contains("permission denied"), "{sql}: {e}");
    }
    tx.rollback().await.expect("rollback");
    let untouched: (i64, bool) = db
        .row("SELECT count(*), bool_and(delivered_at IS NULL) FROM late_findings")
        .await;
    assert_eq!(untouched, (1, true), "the owed finding is still owed");
}
