//! Check 5: hostile input against a real `web` process. 10,000 generated bodies (random bytes,
//! invalid UTF-8, truncated JSON, deep nesting, huge numbers, wrong types, unknown message types,
//! missing ids, wrong content types, gzip claims), signed and unsigned: no answer >= 500, the
//! process alive, memory growth under 50 MB. 600 forged, tampered, stale or wrongly-keyed
//! signatures: none accepted. A body trickled in and never finished is cut off.

use std::time::{Duration, Instant};

use agent_meter::http::auth::sign;
use futures::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::support::*;
use crate::helpers::*;

const BODIES: usize = 10_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// One hostile request: body, content type (None: no header), extra headers.
fn hostile(
    rng: &mut Rng,
    i: usize,
) -> (Vec<u8>, Option<&'static str>, Vec<(&'static str, String)>) {
    let report = end_of_call_report(&format!("hostile-{i}"), "ph_placeholder_client1").to_string();
    let body: Vec<u8> = match i % 10 {
        0 => {
            let n = rng.below(4000) as usize;
            rng.bytes(n)
        }
        1 => {
            let mut b = br#"{"message":{"type":"status-update","status":""#.to_vec();
            b.extend([0xff, 0xfe, 0xc3, 0x28, 0xa0, 0xa1]);
            b.extend(br#""}}"#);
            b
        }
        2 => {
            let cut = rng.below(report.len() as u64) as usize;
            report.as_bytes()[..cut].to_vec()
        }
        3 => {
            let depth = 1000 + rng.below(20_000) as usize;
            let mut b = "[".repeat(depth).into_bytes();
            b.extend("]".repeat(depth).into_bytes());
            b
        }
        4 => json!({"message": {"type": "end-of-call-report",
                "call": {"id": format!("huge-{i}"), "phoneNumberId": "ph_placeholder_client1"},
                "durationSeconds": 1e308, "cost": -1e308, "startedAt": "2026-99-99"}})
        .to_string()
        .replace("1e308", "1e99999")
        .into_bytes(),
        5 => {
            let wrong = [
                json!(5),
                json!("x"),
                json!([]),
                json!(null),
                json!({"type": 7}),
            ];
            json!({"message": wrong[rng.below(5) as usize], "call": wrong[rng.below(5) as usize]})
                .to_string()
                .into_bytes()
        }
        6 => json!({"message": {"type": format!("no-such-type-{}", rng.below(1000)),
                                "call": {"id": format!("unk-{i}")}}})
        .to_string()
        .into_bytes(),
        7 => json!({"message": {"type": "end-of-call-report", "call": {}}})
            .to_string()
            .into_bytes(),
        8 => report.clone().into_bytes(),
        _ => report.into_bytes(),
    };
    let content_type = match i % 10 {
        8 => [
            Some("text/plain"),
            None,
            Some("application/x-www-form-urlencoded"),
        ][i % 3],
        _ => Some("application/json"),
    };
    let mut headers = Vec::new();
    if i % 10 == 9 {
        headers.push(("content-encoding", "gzip".to_string()));
    }
    match rng.below(3) {
        0 => {}
        1 => headers.push(("x-vapi-secret", SHARED_SECRET.to_string())),
        _ => {
            let ts = chrono::Utc::now().timestamp();
            headers.push(("x-timestamp", ts.to_string()));
            headers.push(("x-signature", sign(HMAC_SECRET, ts, &body)));
        }
    }
    (body, content_type, headers)
}

async fn send(
    http: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    content_type: Option<&str>,
    headers: &[(&str, String)],
) -> u16 {
    let mut req = http.post(url).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    req.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

#[tokio::test]
async fn hostile_bodies_forged_signatures_and_slow_bodies_are_refused_cleanly() {
    let db = TestDb::seeded().await;
    let (mut web, base) = Proc::web(&db).await;
    let url = format!("{base}/vapi/webhook");
    let http = reqwest::Client::new();

    // Warm up (allocator, pools, caches), then measure from there.
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let run = |rng: &mut Rng, range: std::ops::Range<usize>| {
        let requests: Vec<_> = range.map(|i| hostile(rng, i)).collect();
        let (http, url) = (http.clone(), url.clone());
        futures::stream::iter(requests)
            .map(move |(body, ct, headers)| {
                let (http, url) = (http.clone(), url.clone());
                async move { send(&http, &url, body, ct, &headers).await }
            })
            .buffer_unordered(32)
            .collect::<Vec<u16>>()
    };
    run(&mut rng, 0..500).await;
    let rss_before = web.rss_kib();
    let started = Instant::now();
    let answers = run(&mut rng, 500..500 + BODIES).await;
    let elapsed = started.elapsed();
    let rss_after = web.rss_kib();
    let mut by_status = std::collections::BTreeMap::new();
    for s in &answers {
        *by_status.entry(*s).or_insert(0usize) += 1;
    }
    let alive = !web.exited();
    let healthy = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    let growth_mib = (rss_after.saturating_sub(rss_before)) as f64 / 1024.0;
    println!(
        "reliability 5: {BODIES} hostile bodies in {:.1} s: answers by status {by_status:?}; alive {alive}; \
         healthy {healthy}; RSS {rss_before} KiB -> {rss_after} KiB (+{growth_mib:.1} MiB)",
        elapsed.as_secs_f64()
    );
    assert!(
        answers.iter().all(|s| (1..500).contains(s)),
        "an answer >= 500 or no answer: {by_status:?}"
    );
    assert!(
        alive && healthy,
        "the web process died or stopped answering"
    );
    assert!(growth_mib < 50.0, "memory grew {growth_mib:.1} MiB");
    assert!(!web.log_text().contains("panicked"), "a handler panicked");

    // 600 signatures that must not pass: forged, tampered with, stale, wrong shared secret.
    let events_before = db.count("SELECT count(*) FROM webhook_events").await;
    let mut refused = 0;
    let mut accepted = 0;
    for i in 0..600 {
        let body = end_of_call_report(&format!("forged-{i}"), "ph_placeholder_client2").to_string();
        let now = chrono::Utc::now().timestamp();
        let headers: Vec<(&str, String)> = match i % 4 {
            0 => vec![
                ("x-timestamp", now.to_string()),
                ("x-signature", hex_of(&rng.bytes(32))),
            ],
            1 => vec![
                ("x-timestamp", now.to_string()),
                ("x-signature", sign(HMAC_SECRET, now, b"{}")),
            ],
            2 => {
                let stale = now - 301 - rng.below(86_400) as i64;
                vec![
                    ("x-timestamp", stale.to_string()),
                    ("x-signature", sign(HMAC_SECRET, stale, body.as_bytes())),
                ]
            }
            _ => vec![("x-vapi-secret", format!("{SHARED_SECRET}x"))],
        };
        match send(
            &http,
            &url,
            body.into_bytes(),
            Some("application/json"),
            &headers,
        )
        .await
        {
            401 => refused += 1,
            s if s < 300 => accepted += 1,
            _ => {}
        }
    }
    let events_after = db.count("SELECT count(*) FROM webhook_events").await;
    println!(
        "reliability 5: 600 bad signatures: {refused} refused (401), {accepted} accepted; events stored {}",
        events_after - events_before
    );
    assert_eq!((refused, accepted), (600, 0));
    assert_eq!(events_after, events_before);

    // A body that never finishes: the connection is answered 408 or closed, not held forever.
    let started = Instant::now();
    let mut slow = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .expect("connect");
    let head = format!(
        "POST /vapi/webhook HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         x-vapi-secret: {SHARED_SECRET}\r\ncontent-length: 5000\r\n\r\n{{\"message\":"
    );
    slow.write_all(head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), slow.read_to_end(&mut answer)).await;
    let cut_after = started.elapsed();
    let first_line = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    println!(
        "reliability 5: slow body cut off after {:.1} s: {first_line:?}",
        cut_after.as_secs_f64()
    );
    assert!(read.is_ok(), "the slow body was still held after 30 s");
    assert!(
        first_line.is_empty() || first_line.contains("408"),
        "{first_line}"
    );
    web.term();
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
