//! The database unreachable for a moment (issue 22, item 3.2): an agency routed a moment before
//! is still answered with its assistant; nothing else is answered without being stored.

use std::net::SocketAddr;

use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

use crate::helpers::*;

/// A TCP relay to a PostgreSQL server that can be cut (every connection through it dropped, new
/// ones refused) and restored: the database unreachable for one web instance only.
struct Gate {
    addr: SocketAddr,
    open: watch::Sender<bool>,
}

impl Gate {
    async fn to(upstream: (String, u16)) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (open, watching) = watch::channel(true);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut closed = watching.clone();
                if !*closed.borrow() {
                    continue; // dropped: the database is unreachable
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = closed.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        Gate { addr, open }
    }

    fn cut(&self) {
        self.open.send_replace(false);
    }

    fn restore(&self) {
        self.open.send_replace(true);
    }
}

async fn post(http: &reqwest::Client, base: &str, body: &Value) -> reqwest::Response {
    http.post(format!("{base}/vapi/webhook"))
        .header("x-vapi-secret", SHARED_SECRET)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request reaches the server")
}

/// An `assistant-request` of call `call_id` from `caller` to `phone`: the answer's status and its
/// JSON (`null` when it has none).
async fn ask(http: &reqwest::Client, base: &str, call: (&str, &str), caller: &str) -> (u16, Value) {
    let (call_id, phone) = call;
    let resp = post(http, base, &assistant_request(call_id, phone, caller)).await;
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn assistant_request_is_answered_from_the_routing_cache_while_the_database_is_unreachable() {
    let db = TestDb::seeded().await;
    let direct: PgConnectOptions = db.url.parse().expect("url");
    let gate = Gate::to((direct.get_host().to_string(), direct.get_port())).await;
    let through_gate = direct.host("127.0.0.1").port(gate.addr.port());
    let pool = PgPoolOptions::new()
        .max_connections(5)
        .acquire_timeout(std::time::Duration::from_millis(500))
        .connect_lazy_with(through_gate);
    let (base, _stop) = serve_web_on(pool).await;
    let http = reqwest::Client::new();

    // Routed (and cached) while the database answers.
    let (status, first) = ask(&http, &base, ("c-up", PHONE_1), "+16025550111").await;
    assert_eq!(status, 200);
    assert!(first.get("assistant").is_some(), "{first}");

    gate.cut();
    let (status, answered) = ask(&http, &base, ("c-down", PHONE_1), "+16025550122").await;
    assert_eq!(status, 200, "the caller hears the agency, not silence");
    assert_eq!(
        answered["assistant"]["firstMessage"], first["assistant"]["firstMessage"],
        "the agency's own assistant: {answered}"
    );
    assert_eq!(
        answered["assistant"]["model"], first["assistant"]["model"],
        "the same prompt and tools"
    );
    // Past the cache's TTL the agency is still known (its last answer, however stale).
    tokio::time::sleep(agent_meter::http::routing::ROUTING_TTL).await;
    let (status, stale) = ask(&http, &base, ("c-later", PHONE_1), "+16025550144").await;
    assert_eq!(status, 200);
    assert_eq!(stale["assistant"]["model"], first["assistant"]["model"]);
    // A number this instance has not routed: nothing to answer from, so Vapi retries.
    let (status, _) = ask(&http, &base, ("c-other", PHONE_2), "+16025550133").await;
    assert_eq!(status, 503);
    // Every other message is still stored before it is answered.
    let status = json!({"message": {"type": "status-update", "status": "in-progress",
        "call": {"id": "c-down", "phoneNumberId": PHONE_1, "customer": {"number": "+16025550122"}}}});
    assert_eq!(post(&http, &base, &status).await.status(), 503);
    assert_eq!(
        post(&http, &base, &end_of_call_report("c-up", PHONE_1))
            .await
            .status(),
        503
    );
    assert_eq!(
        db.count("SELECT count(*) FROM leads WHERE phone = '+16025550122'")
            .await,
        0
    );

    // The database is back: Vapi resends the status update, and the caller's lead exists.
    gate.restore();
    eventually(15, "the status update to be stored", || async {
        (post(&http, &base, &status).await.status() == 200).then_some(())
    })
    .await;
    assert_eq!(
        db.count("SELECT count(*) FROM leads WHERE phone = '+16025550122'")
            .await,
        1,
        "the caller answered without the database is a lead after the call's next message"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_events WHERE vapi_call_id = 'c-down'")
            .await,
        1,
        "the status update stored"
    );
}
