//! What the suite's checks share: the real `agent-meter` binary as child processes, a Gemini
//! stand-in that numbers its answers, and bulk solar jobs.

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use agent_meter::{jobs, tools::solar_ocr_scan::SolarOcrScan};
use serde_json::{Value, json};
use sqlx::{Connection as _, PgPool};

use crate::helpers::*;

pub const PNG_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

/// A running `agent-meter` process; its stderr (JSON logs) goes to a file kept on failure.
pub struct Proc {
    pub child: tokio::process::Child,
    pub pid: u32,
    pub log: PathBuf,
}

impl Proc {
    pub fn start(args: &[&str], env: &[(String, String)]) -> Proc {
        let log = std::env::temp_dir().join(format!("am-proc-{}.log", uuid::Uuid::new_v4()));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_agent-meter"));
        cmd.args(args)
            .env_remove("DATABASE_URL")
            .env_remove("AGENT_METER_FAILPOINTS")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true);
        let child = cmd.spawn().expect("start agent-meter");
        let pid = child.id().expect("pid");
        Proc { child, pid, log }
    }

    /// SIGKILL, and reap it.
    pub async fn kill9(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// SIGTERM (what a platform sends on deploy or scale-in).
    pub fn term(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
    }

    /// True once the process has exited (crashed, aborted or stopped).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// A `web` process on a free loopback port, once it answers `/healthz`; returns it and its
    /// base URL.
    pub async fn web(db: &TestDb) -> (Proc, String) {
        Self::web_with(env(db, "http://127.0.0.1:9", &[])).await
    }

    /// [`Proc::web`] with an environment of the caller's (its `BIND_ADDR` is chosen here).
    pub async fn web_with(mut vars: Vec<(String, String)>) -> (Proc, String) {
        // Port 0: the process binds a port of the kernel's choosing and logs it, so no other
        // test can take the port between a pick here and the bind there.
        vars.retain(|(k, _)| k != "BIND_ADDR" && k != "LOG_FORMAT");
        vars.push(("BIND_ADDR".into(), "127.0.0.1:0".into()));
        vars.push(("LOG_FORMAT".into(), "json".into()));
        let web = Proc::start(&["web"], &vars);
        let addr = eventually(30, "the web process to log its address", || async {
            web.log_text().lines().find_map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).ok()?;
                (v["fields"]["message"] == "web listening")
                    .then(|| v["fields"]["addr"].as_str().map(str::to_string))
                    .flatten()
            })
        })
        .await;
        let base = format!("http://{addr}");
        let http = reqwest::Client::new();
        eventually(30, "the web process to answer", || {
            let (http, base) = (http.clone(), base.clone());
            async move {
                let r = http.get(format!("{base}/healthz")).send().await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
        (web, base)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            eprintln!(
                "log of agent-meter pid {} kept at {}",
                self.pid,
                self.log.display()
            );
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// The environment of a child process on `db`, with providers at the given stand-ins.
pub fn env(db: &TestDb, gemini: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    env_at(&db.url, gemini, extra)
}

/// [`env`] for a database given by URL (a private server's, say).
pub fn env_at(url: &str, gemini: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut vars = owned(&[
        ("DATABASE_URL", url),
        ("VAPI_WEBHOOK_SECRET", SHARED_SECRET),
        ("VAPI_HMAC_SECRET", HMAC_SECRET),
        ("GEMINI_BASE_URL", gemini),
        ("GEMINI_API_KEY", "test-gemini-key"),
        ("GEMINI_MODEL", "gemini-test"),
        ("DISCORD_ENABLED", "false"),
        ("WORKER_HEARTBEAT_SECS", "1"),
        ("WORKER_MISSED_HEARTBEATS", "3"),
        ("JOB_TIMEOUT_SECS", "2"),
        ("WORKER_CONCURRENCY", "8"),
        // Five processes share the test server with the rest of the suite (max_connections 100).
        ("DATABASE_MAX_CONNECTIONS", "10"),
        ("JOB_BACKOFF_BASE_MS", "100"),
        ("LOG_FORMAT", "json"),
        ("RUST_LOG", "info"),
    ]);
    for (k, v) in extra {
        vars.retain(|(name, _)| name != k);
        vars.push((k.to_string(), v.to_string()));
    }
    vars
}

/// A free loopback port (bound, then released for a child to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A private PostgreSQL cluster under a fresh temporary directory, started, with the guard that
/// stops and removes it. Its port is picked before the server binds it, so another test may take
/// it in between: then it is started again on another.
pub async fn private_cluster() -> (agent_meter::store::db::LocalCluster, Stopper) {
    let root = std::env::temp_dir().join(format!("am-pg-{}", uuid::Uuid::new_v4().simple()));
    let mut tries = 0;
    loop {
        tries += 1;
        let cluster = agent_meter::store::db::LocalCluster::new(root.join("data"), free_port());
        match cluster.start().await {
            Ok(()) => return (cluster.clone(), Stopper(cluster)),
            Err(e) if tries < 3 => {
                eprintln!("private PostgreSQL did not start, trying another port: {e:#}")
            }
            Err(e) => {
                let _stopper = Stopper(cluster);
                panic!("a private PostgreSQL for this test: {e:#}");
            }
        }
    }
}

/// A Gemini stand-in that answers every scan after `delay`, numbering its answers: the
/// installer of answer k is `serial-k`, and each request is logged with its job's marker
/// (`job-NNNNN`, taken from the address in the prompt).
#[derive(Clone)]
pub struct NumberedGemini {
    pub url: String,
    pub calls: Arc<Mutex<Vec<(String, u64)>>>,
}

impl NumberedGemini {
    pub async fn start(delay: Duration) -> NumberedGemini {
        let calls: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
        let log = calls.clone();
        let app = axum::Router::new().fallback(move |body: String| {
            let log = log.clone();
            async move {
                let marker = body
                    .find("job-")
                    .and_then(|at| body.get(at..at + 9))
                    .unwrap_or("unknown")
                    .to_string();
                let serial = {
                    let mut calls = log.lock().expect("calls");
                    let serial = calls.len() as u64 + 1;
                    calls.push((marker, serial));
                    serial
                };
                tokio::time::sleep(delay).await;
                axum::Json(numbered_answer(serial))
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        NumberedGemini { url, calls }
    }

    pub fn count(&self) -> usize {
        self.calls.lock().expect("calls").len()
    }

    /// The last serial issued per job marker.
    pub fn last_serials(&self) -> std::collections::HashMap<String, u64> {
        let mut last = std::collections::HashMap::new();
        for (marker, serial) in self.calls.lock().expect("calls").iter() {
            last.insert(marker.clone(), *serial);
        }
        last
    }
}

fn numbered_answer(serial: u64) -> Value {
    let finding = json!({"has_solar": true, "panel_count": 12, "ownership": "owned",
                         "installer": format!("serial-{serial}"), "confidence": 0.9});
    json!({
        "candidates": [{"content": {"role": "model", "parts": [{"text": finding.to_string()}]},
                        "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 1000, "candidatesTokenCount": 30, "totalTokenCount": 1030},
    })
}

/// Queues solar scans `jobs` spread over the five seeded agents; job `i` carries the marker
/// `job-{i:05}` in its address and the tool call id `tc-{i}`.
pub async fn enqueue_scans(pool: &PgPool, jobs: std::ops::Range<usize>) {
    let agents: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM agents ORDER BY email")
        .fetch_all(pool)
        .await
        .expect("agents");
    let mut tx = pool.begin().await.expect("begin");
    for i in jobs {
        let job = SolarOcrScan {
            call: agent_meter::tools::CallContext {
                agent_id: agents[i % agents.len()],
                lead_id: None,
                tool_call_id: format!("tc-{i}"),
                vapi_call_id: None,
                requested_at: None,
            },
            image_url: None,
            image_base64: Some(PNG_BASE64.into()),
            mime_type: Some("image/png".into()),
            address: Some(format!("job-{i:05} Elm St, Flagstaff")),
        };
        jobs::enqueue(&mut tx, &job, Some(&job.call.key()))
            .await
            .expect("enqueue");
    }
    tx.commit().await.expect("commit");
}

/// Jobs of `queue` by status.
pub async fn statuses(pool: &PgPool, queue: &str) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT status, count(*) FROM apalis.jobs WHERE job_type = $1 GROUP BY status ORDER BY status",
    )
    .bind(queue)
    .fetch_all(pool)
    .await
    .expect("statuses")
}

pub async fn done(pool: &PgPool, queue: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE job_type = $1 AND status = 'Done'")
        .bind(queue)
        .fetch_one(pool)
        .await
        .expect("done")
}

/// Usage rows, distinct keys.
pub async fn usage(pool: &PgPool, metric: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*), count(DISTINCT (agent_id, idempotency_key)) FROM agent_usage_metrics WHERE metric_type = $1",
    )
    .bind(metric)
    .fetch_one(pool)
    .await
    .expect("usage")
}

/// Stops the private server (and removes its files) however the test ends.
pub struct Stopper(pub agent_meter::store::db::LocalCluster);

impl Drop for Stopper {
    fn drop(&mut self) {
        let cluster = self.0.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(async {
                    let _ = cluster.pg_ctl(&["stop", "-m", "immediate"]).await;
                });
            }
            if let Some(parent) = cluster.dir.parent() {
                let _ = std::fs::remove_dir_all(parent);
            }
        })
        .join();
    }
}

/// Sends `count` signed end-of-call reports (`{prefix}-{i}`, round-robin over the five agents and
/// over `webs`' base URLs), `parallel` at a time; returns each answer's status (0: no answer).
pub async fn send_reports(webs: &[&str], prefix: &str, count: usize, parallel: usize) -> Vec<u16> {
    use futures::StreamExt;
    let http = reqwest::Client::new();
    futures::stream::iter(0..count)
        .map(|i| {
            let http = http.clone();
            let url = format!("{}/vapi/webhook", webs[i % webs.len()]);
            let body = end_of_call_report(&format!("{prefix}-{i}"), PHONES[i % 5]);
            async move {
                http.post(url)
                    .header("x-vapi-secret", SHARED_SECRET)
                    .json(&body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await
}

/// Waits until every queue of a process has registered its worker. Each look is a connection
/// of its own, closed at once: a backend reports its transactions when it exits, so nothing of
/// ours is counted later, inside a measurement.
pub async fn workers_registered(db: &TestDb, at_least: i64) {
    eventually(30, "the workers to register", || async {
        let mut c = sqlx::PgConnection::connect(&db.url).await.ok()?;
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.workers")
            .fetch_one(&mut c)
            .await
            .ok()?;
        let _ = c.close().await;
        (n >= at_least).then_some(())
    })
    .await;
}
