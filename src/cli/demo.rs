//! `agent-meter demo`: the whole product in one command, on a fresh `agent_meter_demo` database
//! of the local default server. Vapi, Discord and every tool's provider are LOCAL STAND-INS on
//! loopback (each tool declares its own, [`crate::tools::StandIn`]); the real clients talk to
//! them over HTTP and nothing in the service is bypassed.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use crate::{
    app::{self, Roles},
    billing::{self, Month},
    cli::{
        self,
        billing::{Format, InvoicesCommand, MonthArgs},
    },
    config::{Config, Kind},
    jobs::{Deps, sync_calls::SyncCalls},
    store::{db, queue, seed},
    tools::{self, ToolSpec},
};
use anyhow::Context as _;
use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::IntoResponse,
    routing::{any, get, post},
};
use chrono::{Duration as Days, Utc};
use serde_json::{Value, json};
use tokio::sync::watch;

const SECRET: &str = "demo-webhook-secret";
const OPS_TOKEN: &str = "demo-ops-token";

/// The stand-ins' shared state: whether a tool's provider is "down", what Discord received,
/// Vapi's call log.
#[derive(Default)]
struct Stand {
    down: AtomicBool,
    discord_posts: AtomicUsize,
    calls: std::sync::Mutex<Vec<Value>>,
}

/// A tool's provider stand-in: its registered answer, or a 403 while it is "down".
fn tool_stand_in(stand: &Stand, tool: &'static ToolSpec) -> (StatusCode, Json<Value>) {
    if stand.down.load(Ordering::SeqCst) && std::ptr::eq(tool, outage_tool()) {
        let e = json!({"error": {"code": 403, "message": "API key expired (stand-in outage)", "status": "PERMISSION_DENIED"}});
        return (StatusCode::FORBIDDEN, Json(e));
    }
    (StatusCode::OK, Json(((tool.stand_in)().answer)()))
}

/// The tool whose provider the demo takes down for a while (the first registered).
fn outage_tool() -> &'static ToolSpec {
    &tools::registry()[0]
}

async fn discord(State(s): State<Arc<Stand>>) -> StatusCode {
    s.discord_posts.fetch_add(1, Ordering::SeqCst);
    StatusCode::NO_CONTENT
}

/// `GET /call` as Vapi answers it: filtered by `phoneNumberId` and the `createdAt` window.
async fn vapi_calls(
    State(s): State<Arc<Stand>>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    let time = |k: &str| {
        q.get(k)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    };
    let (ge, lt) = (time("createdAtGe"), time("createdAtLt"));
    let calls = s.calls.lock().map(|c| c.clone()).unwrap_or_default();
    let mut hits: Vec<Value> = calls
        .into_iter()
        .filter(|c| {
            q.get("phoneNumberId")
                .is_none_or(|p| c["phoneNumberId"] == p.as_str())
        })
        .filter(|c| {
            let created = c["createdAt"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
            created.is_some_and(|t| ge.is_none_or(|g| t >= g) && lt.is_none_or(|l| t < l))
        })
        .collect();
    hits.reverse(); // newest first, like Vapi
    Json(Value::Array(hits))
}

async fn vapi_call(State(s): State<Arc<Stand>>, Path(id): Path<String>) -> impl IntoResponse {
    let calls = s.calls.lock().map(|c| c.clone()).unwrap_or_default();
    match calls.into_iter().find(|c| c["id"] == id.as_str()) {
        Some(c) => (StatusCode::OK, Json(c)),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "no such call"})),
        ),
    }
}

async fn start_stand_ins(stand: Arc<Stand>) -> anyhow::Result<String> {
    let mut router = Router::new();
    for tool in tools::registry() {
        let path = format!("/{}{}", tool.name, (tool.stand_in)().route);
        router = router.route(
            &path,
            any(move |State(s): State<Arc<Stand>>| async move { tool_stand_in(&s, tool) }),
        );
    }
    let router = router
        .route("/discord/{agent}", post(discord))
        .route("/vapi/call", get(vapi_calls))
        .route("/vapi/call/{id}", get(vapi_call))
        .with_state(stand);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(base)
}

pub async fn run(
    database_url: Option<&str>,
    bind: std::net::SocketAddr,
    stay: bool,
) -> anyhow::Result<()> {
    println!(
        "agent-meter demo: Vapi, Discord and the tools' providers ({}) are LOCAL STAND-INS on 127.0.0.1.\n",
        tools::registry()
            .iter()
            .map(|t| t.provider)
            .collect::<Vec<_>>()
            .join(", ")
    );
    // A fresh demo database on the server of DATABASE_URL, else of the local default.
    let resolved = db::resolve_database_url(database_url).await?;
    let base = resolved
        .url
        .rsplit_once('/')
        .map(|(b, _)| b.to_string())
        .unwrap_or(resolved.url.clone());
    let mut admin =
        <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{base}/postgres")).await?;
    sqlx::query("DROP DATABASE IF EXISTS agent_meter_demo WITH (FORCE)")
        .execute(&mut admin)
        .await?;
    db::create_database_if_missing(admin, "agent_meter_demo").await?;
    let url = format!("{base}/agent_meter_demo");
    let pool = db::connect(&url, 24)
        .await
        .context("connecting to the demo database")?;
    crate::app::migrate(&pool).await?;
    seed::run(&pool).await?;
    println!("1. database {url} migrated and seeded (5 agents, default prices)");

    let stand = Arc::new(Stand::default());
    let stand_base = start_stand_ins(stand.clone()).await?;
    sqlx::query("UPDATE agents SET discord_webhook_url = $1 || '/discord/' || id")
        .bind(&stand_base)
        .execute(&pool)
        .await?;
    sqlx::query("UPDATE agents SET vapi_assistant_id = 'asst_demo_prescott' WHERE email = 'client2@agent-meter.example'")
        .execute(&pool)
        .await?;
    let mut vars: HashMap<String, String> = [
        ("VAPI_WEBHOOK_SECRET", SECRET.to_string()),
        ("OPS_TOKEN", OPS_TOKEN.to_string()),
        ("BIND_ADDR", bind.to_string()),
        ("VAPI_BASE_URL", format!("{stand_base}/vapi")),
        ("VAPI_API_KEY", "stand-in".into()),
        ("DISCORD_ENABLED", "true".into()),
        ("JOB_BACKOFF_BASE_MS", "300".into()),
        ("TOOL_RESULT_WAIT_MS", "1500".into()),
        ("IMAGE_FETCH_ALLOW_PRIVATE", "true".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for tool in tools::registry() {
        for s in tool.settings.iter().filter(|s| s.kind == Kind::Secret) {
            vars.insert(s.name.into(), "stand-in".into());
        }
        let url = (tool.stand_in)().url.name;
        vars.insert(url.into(), format!("{stand_base}/{}", tool.name));
    }
    let config = Arc::new(Config::from_vars(vars)?);
    // The demo's agencies start billing this month, so its invoices show a whole first month
    // (subscription and setup fee) whatever day it runs.
    sqlx::query("UPDATE agents SET billing_starts_on = $1")
        .bind(Month::containing(Utc::now(), config.billing_timezone).first_day)
        .execute(&pool)
        .await?;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("binding {bind} (set BIND_ADDR or PORT to use another)"))?;
    let web = format!("http://{}", listener.local_addr()?);
    let (stop, shutdown) = watch::channel(false);
    let service = tokio::spawn(app::run(
        pool.clone(),
        config.clone(),
        Roles::ALL,
        Some(listener),
        shutdown,
    ));
    println!("2. service running at {web} (web + worker + clock), stand-ins at {stand_base}");

    let agents: Vec<(uuid::Uuid, String, String)> =
        sqlx::query_as("SELECT id, email, vapi_phone_number_id FROM agents ORDER BY email")
            .fetch_all(&pool)
            .await?;
    let http = reqwest::Client::new();
    let post = |body: Value| {
        let http = http.clone();
        let web = web.clone();
        async move {
            http.post(format!("{web}/vapi/webhook"))
                .header("x-vapi-secret", SECRET)
                .json(&body)
                .send()
                .await
                .map(|r| r.status())
        }
    };
    let now = Utc::now();
    let mut sent = 0;
    for (n, (_, email, phone)) in agents.iter().enumerate() {
        if n == 3 {
            stand.down.store(true, Ordering::SeqCst);
            println!(
                "   ! the {} stand-in ({}) starts rejecting requests (an expired key) ...",
                outage_tool().provider,
                outage_tool().name
            );
        }
        for k in 0..2 {
            let call = format!("demo-{n}-{k}");
            let caller = format!("+1602555{n}{k}00");
            let customer = json!({"number": caller});
            let started = now - Days::minutes(((n * 2 + k) * 7 + 5) as i64);
            let ended = started + Days::seconds(95 + (n * 31 + k * 17) as i64);
            let c = json!({"id": call, "phoneNumberId": phone, "customer": customer});
            post(json!({"message": {"type": "assistant-request", "call": c}})).await?;
            post(json!({"message": {"type": "status-update", "status": "in-progress", "call": c}}))
                .await?;
            // Every registered tool, with its example arguments.
            let address = format!("{n}{k} Pine St, Flagstaff AZ");
            let tool_calls: Vec<Value> = crate::tools::registry()
                .iter()
                .map(|t| {
                    json!({"id": format!("{call}-{}", t.name), "name": t.name,
                                "arguments": t.example(&address)})
                })
                .collect();
            post(json!({"message": {"type": "tool-calls", "call": c, "toolCallList": tool_calls}}))
                .await?;
            let vapi_record = json!({"id": call, "phoneNumberId": phone, "customer": customer, "status": "ended",
                "startedAt": started, "endedAt": ended, "endedReason": "customer-ended-call", "cost": 0.27,
                "createdAt": started, "updatedAt": ended});
            if let Ok(mut calls) = stand.calls.lock() {
                calls.push(vapi_record);
            }
            // One report is "lost" on its way to us: the daily sync will find the call.
            if !(n == 1 && k == 1) {
                post(json!({"message": {"type": "end-of-call-report", "call": c, "startedAt": started,
                    "endedAt": ended, "endedReason": "customer-ended-call", "cost": 0.27}}))
                .await?;
            }
            sent += 1;
        }
        println!("   {email}: 2 calls replayed (assistant-request, tool calls, status, report)");
    }
    println!("3. {sent} calls replayed through the real webhook");
    wait_for_queue(&pool).await?;

    let mut conn = pool.acquire().await?;
    let failed = queue::list(
        &mut conn,
        &queue::JobFilter {
            status: Some("failed".into()),
            ..Default::default()
        },
    )
    .await?;
    println!(
        "4. {} job(s) failed during the outage, e.g.: {}",
        failed.len(),
        failed
            .first()
            .and_then(|f| f.last_error.clone())
            .unwrap_or_default()
    );
    stand.down.store(false, Ordering::SeqCst);
    let ids: Vec<String> = failed.into_iter().map(|f| f.id).collect();
    let retried = queue::retry(&mut conn, &ids).await?;
    queue::audit(&mut conn, "demo", "retry", &retried, None).await?;
    drop(conn);
    println!(
        "   the stand-in is back; re-ran {} failed job(s) (what `agent-meter jobs retry --failed` does)",
        retried.len()
    );
    wait_for_queue(&pool).await?;

    let deps = Deps::new(pool.clone(), config.clone());
    let today = now.with_timezone(&config.billing_timezone).date_naive();
    for date in [today.pred_opt().unwrap_or(today), today] {
        let r = SyncCalls {
            date,
            agent_id: None,
            slice: None,
        }
        .sync(&deps)
        .await?;
        if r.seen > 0 {
            println!(
                "5. daily Vapi sync for {date}: {} calls seen, {} metered (the lost report), {} corrected",
                r.seen, r.metered, r.corrected
            );
        }
    }
    let month = Month::containing(now, config.billing_timezone);
    billing::rollup(&pool, month, config.billing_timezone, None).await?;
    println!(
        "6. invoices rolled up for {month}; {} Discord notes posted to the stand-in\n",
        stand.discord_posts.load(Ordering::SeqCst)
    );
    cli::billing::usage(&deps, MonthArgs { month, agent: None }, Format::Table).await?;
    println!();
    cli::billing::invoices(
        &deps,
        InvoicesCommand::Show {
            month: MonthArgs { month, agent: None },
            format: Format::Table,
        },
    )
    .await?;
    println!("Ops API:   curl -H 'Authorization: Bearer {OPS_TOKEN}' {web}/ops/queues");
    println!("Metrics:   {web}/metrics");
    println!(
        "Agent API: agent-meter agents token client1@agent-meter.example   (with DATABASE_URL={url})"
    );
    if stay {
        println!("\nServing until Ctrl-C.");
        app::termination_signal().await;
    }
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(20), service).await;
    pool.close().await;
    Ok(())
}

/// Waits (bounded) until no job is waiting or running.
async fn wait_for_queue(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    const LIMIT: Duration = Duration::from_secs(60);
    let started = std::time::Instant::now();
    loop {
        let open = queue::open_jobs(pool).await?;
        if open == 0 {
            return Ok(());
        }
        if started.elapsed() > LIMIT {
            anyhow::bail!("the demo's queue did not drain in {LIMIT:?}: {open} job(s) still open");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
