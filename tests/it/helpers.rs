//! Test scaffolding: a fresh database per test, the app on an ephemeral port, polling helpers.

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use agent_meter::{
    app::{self, Roles},
    config::Config,
    store::{db, seed},
};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

pub use crate::books::*;

/// Counts the usage ledger's rows.
pub const USAGE_ROWS: &str = "SELECT count(*) FROM agent_usage_metrics";

pub const SHARED_SECRET: &str = "test-shared-secret";
pub const HMAC_SECRET: &str = "test-hmac-secret";
/// The first seeded agent's placeholder Vapi phone number id.
pub const PHONE_1: &str = "ph_placeholder_client1";
pub const PHONE_2: &str = "ph_placeholder_client2";
/// The five seeded agents' Vapi phone number ids.
pub const PHONES: [&str; 5] = [
    "ph_placeholder_client1",
    "ph_placeholder_client2",
    "ph_placeholder_client3",
    "ph_placeholder_client4",
    "ph_placeholder_client5",
];

/// The server that hosts test databases, resolved once per run: `TEST_DATABASE_URL`; else the
/// first local server that answers (`postgres@127.0.0.1:5432`, then `localhost` as the OS user);
/// else the private cluster under `.data/postgres`, started on demand, as `serve` would.
pub fn admin_url() -> String {
    static ADMIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ADMIN
        .get_or_init(|| {
            if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
                return url;
            }
            std::thread::spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    let user = db::local_user().await;
                    for url in [
                        "postgres://postgres@127.0.0.1:5432/postgres".to_string(),
                        format!("postgres://{user}@localhost/postgres"),
                    ] {
                        if db::answers(&url).await {
                            return url;
                        }
                    }
                    db::private_cluster_admin_url()
                        .await
                        .expect("no PostgreSQL answers and the private cluster did not start")
                })
            })
            .join()
            .expect("resolving the test database server")
        })
        .clone()
}

fn url_for(database: &str) -> String {
    let admin = admin_url();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    format!("{base}/{database}")
}

/// A database of its own, dropped (forcibly) when the value is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    /// An empty database: no migrations.
    pub async fn empty() -> TestDb {
        let name = format!("am_test_{}", uuid::Uuid::new_v4().simple());
        let admin = PgConnection::connect(&admin_url())
            .await
            .expect("connect to the test PostgreSQL (set TEST_DATABASE_URL?)");
        db::create_database_if_missing(admin, &name)
            .await
            .expect("create test database");
        let url = url_for(&name);
        let pool = db::connect(&url, 20).await.expect("connect test database");
        TestDb { name, url, pool }
    }

    /// Migrated (apalis's schema and ours) and seeded.
    pub async fn seeded() -> TestDb {
        let t = Self::empty().await;
        agent_meter::app::migrate(&t.pool).await.expect("migrate");
        seed::run(&t.pool).await.expect("seed");
        t
    }

    pub async fn agent_id(&self, phone_number_id: &str) -> uuid::Uuid {
        sqlx::query_scalar("SELECT id FROM agents WHERE vapi_phone_number_id = $1")
            .bind(phone_number_id)
            .fetch_one(&self.pool)
            .await
            .expect("seeded agent")
    }

    /// The agents on [`PHONE_1`] and [`PHONE_2`].
    pub async fn two_agents(&self) -> (uuid::Uuid, uuid::Uuid) {
        (self.agent_id(PHONE_1).await, self.agent_id(PHONE_2).await)
    }

    /// The email of agent `id`.
    pub async fn email_of(&self, id: uuid::Uuid) -> String {
        sqlx::query_scalar("SELECT email FROM agents WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .expect("agent email")
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        self.scalar(sql).await
    }

    /// The one value `sql` selects.
    pub async fn scalar<T>(&self, sql: &'static str) -> T
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
    {
        self.column(sql).await.into_iter().next().expect(sql)
    }

    /// Waits (up to `secs`) until `sql` selects a value; the first it selects. Panics naming
    /// `what` if it never does.
    pub async fn scalar_within<T>(&self, secs: u64, what: &str, sql: &'static str) -> T
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
    {
        eventually(secs, what, || async {
            self.column(sql).await.into_iter().next()
        })
        .await
    }

    /// [`TestDb::scalar_within`] for a whole row.
    pub async fn row_within<T>(&self, secs: u64, what: &str, sql: &'static str) -> T
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        eventually(secs, what, || async {
            self.rows(sql).await.into_iter().next()
        })
        .await
    }

    /// The one value `sql` selects with `arg` as its `$1`.
    pub async fn scalar_with<T, A>(&self, sql: &'static str, arg: A) -> T
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
        A: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send,
    {
        sqlx::query_scalar(sql)
            .bind(arg)
            .fetch_one(&self.pool)
            .await
            .expect(sql)
    }

    /// The one row `sql` selects.
    pub async fn row<T>(&self, sql: &'static str) -> T
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        self.rows(sql).await.into_iter().next().expect(sql)
    }

    /// Every row `sql` selects.
    pub async fn rows<T>(&self, sql: &'static str) -> Vec<T>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        sqlx::query_as(sql).fetch_all(&self.pool).await.expect(sql)
    }

    /// Runs `sql`, which must succeed.
    pub async fn execute(&self, sql: &'static str) {
        sqlx::query(sql).execute(&self.pool).await.expect(sql);
    }

    /// The column `sql` selects, row by row.
    pub async fn column<T>(&self, sql: &'static str) -> Vec<T>
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
    {
        sqlx::query_scalar(sql)
            .fetch_all(&self.pool)
            .await
            .expect(sql)
    }

    /// Runs `sql` with `arg` as its `$1`; it must succeed.
    pub async fn execute_with<A>(&self, sql: &'static str, arg: A)
    where
        A: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send,
    {
        sqlx::query(sql)
            .bind(arg)
            .execute(&self.pool)
            .await
            .expect(sql);
    }

    /// What each of the counting statements `sqls` counts.
    pub async fn counts(&self, sqls: &[&'static str]) -> Vec<i64> {
        let mut counts = Vec::with_capacity(sqls.len());
        for sql in sqls {
            counts.push(self.count(sql).await);
        }
        counts
    }

    /// The text column `sql` selects, row by row.
    pub async fn strings(&self, sql: &'static str) -> Vec<String> {
        self.column(sql).await
    }

    /// Waits (up to `secs`) until `sql` counts `n`; panics naming `what` if it never does.
    pub async fn count_reaches(&self, sql: &'static str, n: i64, secs: u64, what: &str) {
        eventually(secs, what, || async {
            (self.count(sql).await == n).then_some(())
        })
        .await;
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime; do the async cleanup on a thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut c) = PgConnection::connect(&admin_url()).await {
                    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut c).await;
                }
            });
        })
        .join();
    }
}

/// Variables as owned pairs.
pub fn owned(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The configuration tests run with; `extra` overrides or adds variables.
pub fn test_config(extra: &[(&str, &str)]) -> Config {
    let mut vars: HashMap<String, String> = owned(&[
        ("VAPI_WEBHOOK_SECRET", SHARED_SECRET),
        ("VAPI_HMAC_SECRET", HMAC_SECRET),
        ("WORKER_HEARTBEAT_SECS", "2"),
        ("WORKER_MISSED_HEARTBEATS", "2"),
        ("JOB_TIMEOUT_SECS", "3"),
        ("WORKER_CONCURRENCY", "4"),
    ])
    .into_iter()
    .collect();
    vars.extend(owned(extra));
    Config::from_vars(vars).expect("test config is valid")
}

/// A listener at a loopback port of the kernel's choosing, and the base URL it will serve.
pub async fn loopback() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    (listener, base)
}

/// The service running in-process against its own database.
pub struct TestApp {
    pub db: TestDb,
    pub base: String,
    pub http: reqwest::Client,
    pub config: Arc<Config>,
    stop: watch::Sender<bool>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// Web and worker (no clock) on a seeded database.
    pub async fn spawn() -> TestApp {
        Self::spawn_with(
            Roles {
                web: true,
                worker: true,
                clock: false,
            },
            &[],
        )
        .await
    }

    /// Web and worker (no clock) on a seeded database, with `extra` configuration.
    pub async fn spawn_working(extra: &[(&str, &str)]) -> TestApp {
        Self::spawn_web(true, extra).await
    }

    /// The web role, the worker too when `worker`, on a seeded database.
    async fn spawn_web(worker: bool, extra: &[(&str, &str)]) -> TestApp {
        let (web, clock) = (true, false);
        Self::spawn_with(Roles { web, worker, clock }, extra).await
    }

    /// Web only: jobs stay in the queue for the test to inspect.
    pub async fn spawn_web_only() -> TestApp {
        Self::spawn_web_only_with(&[]).await
    }

    /// [`TestApp::spawn_web_only`] with the configuration `extra`.
    pub async fn spawn_web_only_with(extra: &[(&str, &str)]) -> TestApp {
        Self::spawn_web(false, extra).await
    }

    pub async fn spawn_with(roles: Roles, extra: &[(&str, &str)]) -> TestApp {
        let db = TestDb::seeded().await;
        Self::spawn_on(db, roles, extra).await
    }

    pub async fn spawn_on(db: TestDb, roles: Roles, extra: &[(&str, &str)]) -> TestApp {
        let config = Arc::new(test_config(extra));
        let (listener, base) = loopback().await;
        let (stop, shutdown) = watch::channel(false);
        let handle = tokio::spawn(app::run(
            db.pool.clone(),
            config.clone(),
            roles,
            Some(listener),
            shutdown,
        ));
        TestApp {
            db,
            base,
            http: reqwest::Client::new(),
            config,
            stop,
            handle: Some(handle),
        }
    }

    /// Sends SIGTERM's equivalent and waits for every role to finish.
    pub async fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(20), h)
                .await
                .expect("shutdown within 20 s")
                .expect("app task")
                .expect("app result");
        }
    }

    /// POSTs `body` with the shared secret.
    pub async fn post(&self, body: &Value) -> reqwest::Response {
        self.post_raw(
            body.to_string().into_bytes(),
            &[("x-vapi-secret", SHARED_SECRET.to_string())],
        )
        .await
    }

    /// The text of page `path` of the app, as the session `cookie` (`name=value`) sees it.
    pub async fn page(&self, path: &str, cookie: &str) -> String {
        client()
            .get(format!("{}{path}", self.base))
            .header("cookie", cookie)
            .header("accept-language", "en")
            .send()
            .await
            .expect("page")
            .text()
            .await
            .expect("text")
    }

    /// GETs `path` (`/healthz`) of the app.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        get_url(format!("{}{path}", self.base)).await
    }

    /// POSTs `body` with the shared secret; the JSON answer.
    pub async fn answer(&self, body: &Value) -> Value {
        self.post(body).await.json().await.expect("json")
    }

    /// POSTs a `tool-calls` message of call `call_id` on [`PHONE_1`] asking for `calls`.
    pub async fn post_tools(&self, call_id: &str, calls: Value) -> reqwest::Response {
        self.post(&tool_calls(call_id, PHONE_1, calls)).await
    }

    /// [`TestApp::post_tools`]'s JSON answer.
    pub async fn tools_answer(&self, call_id: &str, calls: Value) -> Value {
        self.answer(&tool_calls(call_id, PHONE_1, calls)).await
    }

    pub async fn post_raw(&self, body: Vec<u8>, headers: &[(&str, String)]) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!("{}/vapi/webhook", self.base))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        req.send().await.expect("request reaches the server")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

/// An `end-of-call-report` for `call_id` on `phone_number_id`: 150 s long, Vapi cost 0.42.
pub fn end_of_call_report(call_id: &str, phone_number_id: &str) -> Value {
    json!({"message": {
        "type": "end-of-call-report",
        "call": {"id": call_id, "phoneNumberId": phone_number_id,
                 "customer": {"number": "+16025550199"}},
        "startedAt": "2026-11-20T17:00:00.000Z",
        "endedAt": "2026-11-20T17:02:30.000Z",
        "endedReason": "customer-ended-call",
        "cost": 0.42,
        "artifact": {"transcript": "AI: Hola! ..."},
        "analysis": {}
    }})
}

/// Asserts that `text` contains `part`, showing the whole text when it does not.
#[track_caller]
pub fn assert_has(text: &str, part: &str) {
    assert!(text.contains(part), "{part:?} is not in: {text}");
}

/// Asserts that `text` contains every one of `parts`, showing the whole text when it does not.
#[track_caller]
pub fn assert_has_all(text: &str, parts: &[&str]) {
    for part in parts {
        assert_has(text, part);
    }
}

/// Polls `check` every 50 ms until it yields `Some`, or panics after `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs} s waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GETs `url` with a client of its own.
pub async fn get_url(url: String) -> reqwest::Response {
    reqwest::get(url).await.expect("send")
}

/// Waits until the queue has no job left to run (every job `Done`, `Failed` past its attempts,
/// or `Killed`).
pub async fn drain(pool: &PgPool, secs: u64) {
    eventually(secs, "the queue to drain", || async {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM apalis.jobs
              WHERE status IN ('Pending', 'Queued', 'Running')
                 OR (status = 'Failed' AND attempts < max_attempts)",
        )
        .fetch_one(pool)
        .await
        .ok()?;
        (open == 0).then_some(())
    })
    .await
}

/// Only the web role, on any pool (even one whose database is gone), at an ephemeral port.
/// Returns the base URL and the sender that stops it.
pub async fn serve_web_on(pool: PgPool) -> (String, watch::Sender<bool>) {
    serve_web_with(pool, &[]).await
}

/// [`serve_web_on`] with the configuration `extra`: another web instance on the same database,
/// as after a restart with a changed configuration.
pub async fn serve_web_with(pool: PgPool, extra: &[(&str, &str)]) -> (String, watch::Sender<bool>) {
    let (listener, base) = loopback().await;
    let (stop, shutdown) = watch::channel(false);
    let state = agent_meter::http::AppState::new(pool, Arc::new(test_config(extra)));
    tokio::spawn(agent_meter::http::serve(listener, state, shutdown));
    (base, stop)
}

/// Local stand-ins for every outside API, and the configuration that points the app at them.
pub struct Mocks {
    pub gemini: wiremock::MockServer,
    pub arcgis: wiremock::MockServer,
    pub vapi: wiremock::MockServer,
    pub discord: wiremock::MockServer,
}

pub const GEMINI_PATH: &str = "/v1beta/models/gemini-test:generateContent";
pub const ARCGIS_QUERY_PATH: &str = "/layer/0/query";

impl Mocks {
    /// Stand-ins whose Gemini refuses every scan as a bad request (HTTP 400), saying `message`.
    pub async fn gemini_refusing(message: &str) -> Mocks {
        let mocks = Mocks::start().await;
        gemini_error(400, message, "INVALID_ARGUMENT")
            .mount(&mocks.gemini)
            .await;
        mocks
    }

    pub async fn start() -> Mocks {
        Mocks {
            gemini: wiremock::MockServer::start().await,
            arcgis: wiremock::MockServer::start().await,
            vapi: wiremock::MockServer::start().await,
            discord: wiremock::MockServer::start().await,
        }
    }

    pub fn config(&self) -> Vec<(String, String)> {
        vec![
            ("GEMINI_BASE_URL".into(), self.gemini.uri()),
            ("GEMINI_API_KEY".into(), "test-gemini-key".into()),
            ("GEMINI_MODEL".into(), "gemini-test".into()),
            (
                "ADWR_WELLS_URL".into(),
                format!("{}/layer/0", self.arcgis.uri()),
            ),
            ("VAPI_BASE_URL".into(), self.vapi.uri()),
            ("VAPI_API_KEY".into(), "test-vapi-key".into()),
            ("DISCORD_ENABLED".into(), "true".into()),
            ("JOB_BACKOFF_BASE_MS".into(), "200".into()),
            ("IMAGE_FETCH_ALLOW_PRIVATE".into(), "true".into()),
        ]
    }

    /// The Discord webhook URL an agent would hold.
    pub fn discord_url(&self) -> String {
        format!("{}/api/webhooks/123/secret-token", self.discord.uri())
    }
}

/// Vapi's organisation-wide `GET /call` listing `calls` (the sync routes each to its agency).
pub async fn vapi_lists(mocks: &Mocks, calls: Value) {
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .and(wiremock::matchers::path("/call"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(calls))
        .mount(&mocks.vapi)
        .await;
}

impl TestApp {
    /// Web and worker on a seeded database, every provider pointed at `mocks`.
    pub async fn spawn_with_mocks(mocks: &Mocks, extra: &[(&str, &str)]) -> TestApp {
        let mut vars = mocks.config();
        // A tool-call answer waits for its job; on a loaded machine a fresh worker may take more
        // than the default 3 s to pick it up. The answer still returns as soon as the job ends;
        // tests about the wait itself set their own.
        vars.push(("TOOL_RESULT_WAIT_MS".into(), "10000".into()));
        vars.extend(owned(extra));
        let borrowed: Vec<(&str, &str)> =
            vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Self::spawn_with(
            Roles {
                web: true,
                worker: true,
                clock: false,
            },
            &borrowed,
        )
        .await
    }
}

/// Gemini answering every scan with `answer` (mount it on `mocks.gemini`).
pub fn gemini_replying(answer: wiremock::ResponseTemplate) -> wiremock::Mock {
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path(GEMINI_PATH))
        .respond_with(answer)
}

/// Google's error answer: HTTP `code`, its `message` and error `status`.
pub fn google_error(code: u16, message: &str, status: &str) -> wiremock::ResponseTemplate {
    wiremock::ResponseTemplate::new(code)
        .set_body_json(json!({"error": {"code": code, "message": message, "status": status}}))
}

/// Gemini refusing every scan with [`google_error`] (mount it on `mocks.gemini`).
pub fn gemini_error(code: u16, message: &str, status: &str) -> wiremock::Mock {
    gemini_replying(google_error(code, message, status))
}

/// Gemini's answer for a roof with 18 owned panels.
pub fn gemini_solar_answer() -> Value {
    let finding = json!({"has_solar": true, "panel_count": 18, "ownership": "owned",
                         "installer": "SunPower", "confidence": 0.93});
    json!({
        "candidates": [{"content": {"role": "model", "parts": [{"text": finding.to_string()}]},
                        "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 1290, "candidatesTokenCount": 40, "totalTokenCount": 1330},
        "modelVersion": "gemini-test"
    })
}

/// Gemini answering `gemini_solar_answer()` after `delay` (mount it on `mocks.gemini`).
pub fn gemini_slow(delay: Duration) -> wiremock::Mock {
    gemini_replying(
        wiremock::ResponseTemplate::new(200)
            .set_body_json(gemini_solar_answer())
            .set_delay(delay),
    )
}

/// One ArcGIS feature (a well) near Flagstaff.
pub fn well(id: u64, lat: f64, lon: f64) -> Value {
    json!({"attributes": {"REGISTRY_ID": id, "OWNER_NAME": "SMITH", "WELL_DEPTH": 420,
                          "WATER_LEVEL": 260, "WATER_USE": "DOMESTIC", "INSTALLED": 946684800000i64,
                          "WELL_CANCELLED": "N"},
           "geometry": {"x": lon, "y": lat}})
}

/// ArcGIS answering every query with one well near Flagstaff (mounted on `mocks.arcgis`).
pub async fn arcgis_one_well(mocks: &Mocks) {
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .and(wiremock::matchers::path(ARCGIS_QUERY_PATH))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(json!({
            "features": [well(551_234, 35.1984, -111.6513)], "exceededTransferLimit": false})))
        .mount(&mocks.arcgis)
        .await;
}

/// A `tool-calls` message from a caller on `phone_number_id`.
pub fn tool_calls(call_id: &str, phone_number_id: &str, calls: Value) -> Value {
    json!({"message": {
        "type": "tool-calls",
        "call": {"id": call_id, "phoneNumberId": phone_number_id, "customer": {"number": "+16025550199"}},
        "toolCallList": calls
    }})
}

/// An `assistant-request` from `caller` to `phone_number_id`.
pub fn assistant_request(call_id: &str, phone_number_id: &str, caller: &str) -> Value {
    json!({"message": {
        "type": "assistant-request",
        "call": {"id": call_id, "phoneNumberId": phone_number_id, "customer": {"number": caller}}
    }})
}

/// A running app (ops token `ops_token`) with one failed solar scan: Gemini refuses the first
/// request permanently with `status` and `message`, then answers. Returns the failed job's id.
pub async fn spawn_with_failed_scan(
    mocks: &Mocks,
    ops_token: &str,
    status: u16,
    message: &str,
) -> (TestApp, String) {
    spawn_with_failed_scan_and(mocks, &[("OPS_TOKEN", ops_token)], status, message).await
}

/// [`spawn_with_failed_scan`] with the configuration `extra` (ops tokens among it).
pub async fn spawn_with_failed_scan_and(
    mocks: &Mocks,
    extra: &[(&str, &str)],
    status: u16,
    message: &str,
) -> (TestApp, String) {
    use wiremock::{
        Mock, ResponseTemplate,
        matchers::{method, path},
    };
    gemini_error(status, message, "INVALID_ARGUMENT")
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&mocks.gemini)
        .await;
    Mock::given(method("POST"))
        .and(path(GEMINI_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(gemini_solar_answer()))
        .mount(&mocks.gemini)
        .await;
    let mut config = vec![("TOOL_RESULT_WAIT_MS", "50")];
    config.extend_from_slice(extra);
    let app = TestApp::spawn_with_mocks(mocks, &config).await;
    let call = json!({"id": "tc-failing", "name": "solar_ocr_scan",
                      "arguments": {"image_base64": "iVBORw0KGgo=", "mime_type": "image/png"}});
    app.post(&tool_calls("call-failing", PHONE_1, json!([call])))
        .await;
    let id: String = app
        .db
        .scalar_within(
            15,
            "the scan to fail",
            "SELECT id FROM apalis.jobs WHERE status = 'Killed'",
        )
        .await;
    (app, id)
}

/// Queues a `prune_jobs` job due tomorrow (so it stays pending) and returns its id.
pub async fn pending_job(pool: &PgPool) -> String {
    let job = agent_meter::jobs::prune_jobs::PruneJobs::default();
    let mut conn = pool.acquire().await.expect("conn");
    let task = apalis::prelude::TaskBuilder::new(serde_json::to_vec(&job).expect("json"))
        .max_attempts(3)
        .run_after(Duration::from_secs(86_400))
        .build();
    apalis_postgres::queries::push_tasks(&mut *conn, "prune_jobs", vec![task])
        .await
        .expect("push");
    sqlx::query_scalar(
        "SELECT id FROM apalis.jobs WHERE job_type = 'prune_jobs' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .expect("id")
}

/// A stand-in Discord that takes every webhook post (204).
pub async fn discord_accepting() -> wiremock::MockServer {
    let discord = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(204))
        .mount(&discord)
        .await;
    discord
}

/// How many requests a stand-in server received.
pub async fn requests(server: &wiremock::MockServer) -> usize {
    server.received_requests().await.map_or(0, |r| r.len())
}

/// Runs the `agent-meter` binary on `db` and returns its standard output (it must succeed).
pub async fn agent_meter_on(db: &TestDb, args: &[&str]) -> Vec<u8> {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_agent-meter"))
        .args(args)
        .env("DATABASE_URL", &db.url)
        .current_dir(std::env::temp_dir())
        .output()
        .await
        .expect("run");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Debian's Chromium (or another Chrome) for the browser tests, when installed.
pub fn chromium() -> Option<std::path::PathBuf> {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.exists())
}

/// Chromium for a browser test: CI installs it (`.ci/run`), so there its absence fails the test;
/// elsewhere the test is skipped, saying so.
pub fn chromium_or_skip() -> Option<std::path::PathBuf> {
    let found = chromium();
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "Chromium is required in CI"
        );
        eprintln!("skipped: no Chromium on this machine (apt-get install chromium)");
    }
    found
}

/// Headless Chromium at `path` for the browser tests (`window`: pixels wide and high).
pub fn headless_browser(
    path: std::path::PathBuf,
    window: Option<(u32, u32)>,
) -> anyhow::Result<headless_chrome::Browser> {
    let args: Vec<&std::ffi::OsStr> = [
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
    ]
    .iter()
    .map(std::ffi::OsStr::new)
    .collect();
    headless_chrome::Browser::new(headless_chrome::LaunchOptions {
        path: Some(path),
        headless: true,
        sandbox: false,
        window_size: window,
        args,
        idle_browser_timeout: Duration::from_secs(60),
        ..headless_chrome::LaunchOptions::default()
    })
}

/// An HTTP client that does not follow redirects (to see a 303 and its cookie).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Sends `req`: the answer's status.
pub async fn status_of(req: reqwest::RequestBuilder) -> u16 {
    req.send().await.expect("send").status().as_u16()
}

/// The one value `sql` selects on `conn`.
pub async fn scalar_on<T>(conn: &mut PgConnection, sql: &'static str) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    sqlx::query_scalar(sql).fetch_one(conn).await.expect(sql)
}

/// Logs in to the ops page with `token`; the whole `Set-Cookie` of the session (its `name=value`
/// is the part before the first `;`).
pub async fn ops_login(app: &TestApp, token: &str) -> String {
    post_token(app, "/ops/login", token)
        .await
        .expect("ops login: 303")
}

/// POSTs the form `token=…` to `path`: the whole `Set-Cookie` of its 303, or the status of
/// another answer.
pub async fn post_token(app: &TestApp, path: &str, token: &str) -> Result<String, u16> {
    let resp = client()
        .post(format!("{}{path}", app.base))
        .form(&[("token", token)])
        .send()
        .await
        .expect("send");
    if resp.status() != 303 {
        return Err(resp.status().as_u16());
    }
    let cookie = resp.headers()["set-cookie"].to_str().expect("cookie");
    Ok(cookie.to_string())
}

/// A session cookie's `name=value` (what a browser sends back).
pub fn cookie_pair(cookie: &str) -> String {
    cookie.split(';').next().expect("pair").to_string()
}

/// Tests that read "this month" (the portal's and the money view's default) would straddle the
/// month turn in `tz` if they ran across it: when the turn is less than five minutes away, wait
/// until just after it.
pub async fn clear_of_month_turn(tz: chrono_tz::Tz) {
    let now = chrono::Utc::now();
    let turn = agent_meter::billing::Month::containing(now, tz)
        .next()
        .start(tz);
    if turn - now < chrono::Duration::minutes(5) {
        let wait = (turn - now).to_std().unwrap_or_default() + Duration::from_secs(2);
        println!("the month turns at {turn}: starting after it, in {wait:?}");
        tokio::time::sleep(wait).await;
    }
}

/// A portal session (cookie `name=value`) for the agent of `phone`.
pub async fn portal_cookie(app: &TestApp, phone: &str) -> String {
    let agent = app.db.agent_id(phone).await;
    let mut conn = app.db.pool.acquire().await.expect("conn");
    let ttl = std::time::Duration::from_secs(600);
    let link = agent_meter::store::portal::create_link(&mut conn, agent, ttl)
        .await
        .expect("link");
    drop(conn);
    portal_sign_in(app, link).await
}

/// Uses a portal sign-in link's `token` up; the session cookie's `name=value`.
pub async fn portal_sign_in(app: &TestApp, token: String) -> String {
    let cookie = post_token(app, "/portal/sign-in", &token).await;
    cookie_pair(&cookie.expect("sign in: 303"))
}

/// `GET /v1/leads/{lead}` with an API `token`: the lead's detail.
pub async fn lead_detail(app: &TestApp, token: &str, lead: uuid::Uuid) -> Value {
    client()
        .get(format!("{}/v1/leads/{lead}", app.base))
        .bearer_auth(token)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json")
}
