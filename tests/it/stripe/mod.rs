//! Getting paid (issue 24): finalized invoices go to a stateful Stripe stand-in exactly once
//! whatever fails or re-runs, and Stripe's signed events move the payment status.

mod standin;

use agent_meter::billing::{self, Month};
use chrono_tz::America::Phoenix;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use standin::StripeStandIn;

use crate::helpers::*;

const WEBHOOK_SECRET: &str = "whsec_test_standin";
const OPS_TOKEN: &str = "stripe-ops-token-0123456789";

/// The ops page (its money view) as operator anna.
async fn ops_page(app: &TestApp) -> String {
    let cookie = ops_login(app, OPS_TOKEN).await;
    app.page("/ops/", cookie.split(';').next().expect("pair"))
        .await
}

fn stripe_vars(standin: &StripeStandIn) -> Vec<(&'static str, String)> {
    vec![
        ("STRIPE_API_KEY", "sk_test_standin".to_string()),
        ("STRIPE_BASE_URL", standin.url.clone()),
        (
            "STRIPE_WEBHOOK_SECRET",
            format!("whsec_old_one,{WEBHOOK_SECRET}"),
        ),
        ("JOB_BACKOFF_BASE_MS", "100".to_string()),
        // A push makes several calls: room for them on a loaded machine.
        ("WORKER_HEARTBEAT_SECS", "5".to_string()),
        ("JOB_TIMEOUT_SECS", "8".to_string()),
    ]
}

async fn spawn(standin: &StripeStandIn, extra: &[(&str, String)]) -> TestApp {
    let mut vars = stripe_vars(standin);
    vars.extend(extra.iter().cloned());
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    TestApp::spawn_working(&vars).await
}

/// The first agent's November 2026 (one scan: 249.00 + 500.00 + 0.08), finalized for Stripe
/// and its push queued; the invoice's id.
async fn finalize_november(db: &TestDb) -> uuid::Uuid {
    let invoice = finalize_november_unqueued(db).await;
    queue_pushes(db).await;
    invoice
}

/// November finalized for Stripe, its push not queued yet (a test may change it first).
async fn finalize_november_unqueued(db: &TestDb) -> uuid::Uuid {
    let agent = db.agent_id(PHONE_1).await;
    let email = db.email_of(agent).await;
    let scan = ("solar_ocr_scan", "1", Some("0.075"));
    UsageRow::new(agent, scan, "2026-11-20T18:00:00Z", "stripe-scan")
        .insert(&db.pool)
        .await;
    let nov = Month::parse("2026-11").expect("month");
    let done = billing::finalize_for(&db.pool, nov, Phoenix, Some(&email), later(), true)
        .await
        .expect("finalize");
    let [one] = done.as_slice() else {
        panic!("one invoice finalized: {done:?}")
    };
    one.invoice_id
}

/// Queues the pending push (one), and a second ask queues nothing more.
async fn queue_pushes(db: &TestDb) {
    let queued = agent_meter::jobs::stripe::enqueue_pending(&db.pool)
        .await
        .expect("enqueue");
    assert_eq!(queued, 1);
    // Asked again (a rollup after a finalize), nothing more is queued.
    let again = agent_meter::jobs::stripe::enqueue_pending(&db.pool)
        .await
        .expect("enqueue again");
    assert_eq!(again, 0);
}

async fn sent(db: &TestDb) {
    db.count_reaches(
        "SELECT count(*) FROM invoices WHERE stripe_push = 'sent'",
        1,
        60,
        "the invoice sent to Stripe",
    )
    .await;
}

/// Exactly one customer, one open invoice of 749.08 with our three lines, at Stripe.
fn one_of_each(standin: &StripeStandIn, invoice: uuid::Uuid) {
    let books = standin.books();
    assert_eq!(books.customers.len(), 1, "{:#?}", books.customers);
    assert_eq!(books.invoices.len(), 1, "{:#?}", books.invoices);
    let inv = &books.invoices[0];
    assert_eq!(inv["status"], "open");
    assert_eq!(inv["amount_due"], 74908);
    assert_eq!(inv["metadata"]["invoice_id"], invoice.to_string());
    let mut amounts: Vec<i64> = books
        .items
        .iter()
        .map(|i| i["amount"].as_i64().expect("amount"))
        .collect();
    amounts.sort_unstable();
    assert_eq!(amounts, vec![8, 24900, 50000]);
}

fn signed(body: &str, secret: &str, t: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// POSTs a Stripe event (the fixture's envelope around `object`) signed with `secret`.
async fn post_event(
    app: &TestApp,
    id: &str,
    kind: &str,
    object: Value,
    signature: Option<String>,
) -> reqwest::Response {
    let mut event: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/stripe/event.json"
        ))
        .expect("fixture"),
    )
    .expect("json");
    event["id"] = json!(id);
    event["type"] = json!(kind);
    event["data"] = json!({"object": object});
    let body = event.to_string();
    let signature =
        signature.unwrap_or_else(|| signed(&body, WEBHOOK_SECRET, chrono::Utc::now().timestamp()));
    app.http
        .post(format!("{}/stripe/webhook", app.base))
        .header("stripe-signature", signature)
        .body(body)
        .send()
        .await
        .expect("post")
}

async fn payment(db: &TestDb, invoice: uuid::Uuid) -> (Option<String>, bool) {
    sqlx::query_as("SELECT payment_status, paid_at IS NOT NULL FROM invoices WHERE id = $1")
        .bind(invoice)
        .fetch_one(&db.pool)
        .await
        .expect("invoice")
}

async fn payment_becomes(db: &TestDb, invoice: uuid::Uuid, want: &str) {
    eventually(30, want, || async {
        (payment(db, invoice).await.0.as_deref() == Some(want)).then_some(())
    })
    .await;
}

/// A stand-in, the app, and November's invoice sent to Stripe (its id).
async fn november_sent() -> (StripeStandIn, TestApp, uuid::Uuid) {
    let standin = StripeStandIn::start().await;
    let app = spawn(&standin, &[]).await;
    let invoice = finalize_november(&app.db).await;
    sent(&app.db).await;
    (standin, app, invoice)
}

fn stripe_invoice(standin: &StripeStandIn) -> Value {
    standin.books().invoices[0].clone()
}

#[tokio::test]
async fn finalizing_sends_one_stripe_invoice_and_payment_events_come_back() {
    let (standin, app, invoice) = november_sent().await;
    one_of_each(&standin, invoice);
    let agent = app.db.agent_id(PHONE_1).await.to_string();
    {
        let books = standin.books();
        let customer = &books.customers[0];
        assert_eq!(customer["metadata"]["agent_id"], agent);
        assert!(customer["email"].is_string() && customer["name"].is_string());
        // Every POST carries a key derived from our ids; the invoice asks nothing pending in.
        for post in books.seen.iter().filter(|s| s.method == "POST") {
            let key = post.key.as_deref().expect("an Idempotency-Key");
            assert!(key.starts_with("agent-meter:invoice:"), "{key}");
        }
        let create = books
            .seen
            .iter()
            .find(|s| s.path == "/v1/invoices")
            .expect("create");
        for (k, v) in [
            ("collection_method", "send_invoice"),
            ("days_until_due", "14"),
            ("pending_invoice_items_behavior", "exclude"),
        ] {
            assert!(
                create.form.contains(&(k.into(), v.into())),
                "{k}: {:?}",
                create.form
            );
        }
    }
    // Stripe's ids are stored on our invoice and lines; it is open for payment.
    let (stripe_id, url): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT stripe_invoice_id, hosted_invoice_url FROM invoices WHERE id = $1")
            .bind(invoice)
            .fetch_one(&app.db.pool)
            .await
            .expect("row");
    let at_stripe = stripe_invoice(&standin);
    assert_eq!(stripe_id.as_deref(), at_stripe["id"].as_str());
    assert!(url.is_some_and(|u| u.starts_with("https://")));
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM invoice_lines WHERE stripe_item_id IS NOT NULL")
            .await,
        3
    );
    assert_eq!(
        payment(&app.db, invoice).await,
        (Some("open".into()), false)
    );

    // Paid: the event is applied once; its redelivery is a 2xx that changes nothing.
    let mut paid = at_stripe.clone();
    paid["status"] = json!("paid");
    paid["status_transitions"]["paid_at"] = json!(1_900_000_100);
    let r = post_event(&app, "evt_paid_1", "invoice.paid", paid.clone(), None).await;
    assert_eq!(r.status(), 200);
    payment_becomes(&app.db, invoice, "paid").await;
    assert!(payment(&app.db, invoice).await.1, "paid_at is set");
    let again = post_event(&app, "evt_paid_1", "invoice.paid", paid, None).await;
    assert_eq!(again.status(), 200);
    assert_eq!(
        again.json::<Value>().await.expect("json")["duplicate"],
        true
    );
    assert_eq!(app.db.count("SELECT count(*) FROM stripe_events").await, 1);

    // A late failure never moves a paid invoice back.
    let r = post_event(
        &app,
        "evt_failed_late",
        "invoice.payment_failed",
        at_stripe,
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    app.db
        .count_reaches(
            "SELECT count(*) FROM stripe_events WHERE applied_at IS NOT NULL",
            2,
            30,
            "both events applied",
        )
        .await;
    assert_eq!(payment(&app.db, invoice).await.0.as_deref(), Some("paid"));

    // Everyone sees it: the CLI's JSON.
    let out = agent_meter_on(
        &app.db,
        &["invoices", "show", "--month", "2026-11", "--format", "json"],
    )
    .await;
    let shown: Value = serde_json::from_slice(&out).expect("json");
    let mine = shown
        .as_array()
        .expect("list")
        .iter()
        .find(|i| i["payment_status"].is_string())
        .expect("an invoice with a payment status");
    assert_eq!(mine["payment_status"], "paid");
}

#[tokio::test]
async fn a_500_creating_the_invoice_and_a_429_on_finalize_are_retried_into_one_invoice() {
    let standin = StripeStandIn::start().await;
    standin.fail("create_invoice", 500);
    standin.fail("finalize", 429);
    let app = spawn(&standin, &[]).await;
    let invoice = finalize_november(&app.db).await;
    sent(&app.db).await;
    one_of_each(&standin, invoice);
    let books = standin.books();
    assert_eq!(
        books.posts("/v1/invoices"),
        2,
        "the 500, then the one that made it"
    );
    assert_eq!(
        books.posts("/finalize"),
        2,
        "the 429, then the one that made it"
    );
    assert_eq!(books.posts("/v1/customers"), 1);
}

#[tokio::test]
async fn a_second_finalize_and_a_rerun_of_a_sent_invoice_make_nothing_new() {
    let (standin, app, invoice) = november_sent().await;
    let posts_before = standin.books().posts("");

    // Finalizing again changes nothing and queues nothing.
    let nov = Month::parse("2026-11").expect("month");
    let email = app.db.email_of(app.db.agent_id(PHONE_1).await).await;
    billing::finalize_for(&app.db.pool, nov, Phoenix, Some(&email), later(), true)
        .await
        .expect("finalize again");
    let queued = agent_meter::jobs::stripe::enqueue_pending(&app.db.pool)
        .await
        .expect("enqueue");
    assert_eq!(queued, 0);

    // As if the job had stopped after Stripe sent the invoice but before we recorded it: the
    // push runs again, finds everything by its ids and makes nothing new.
    sqlx::query("UPDATE invoices SET stripe_push = 'pending' WHERE id = $1")
        .bind(invoice)
        .execute(&app.db.pool)
        .await
        .expect("reset");
    let mut conn = app.db.pool.acquire().await.expect("conn");
    let job = agent_meter::jobs::stripe::StripePush {
        invoice_id: invoice,
    };
    agent_meter::jobs::enqueue(&mut conn, &job, Some("stripe-push:again"))
        .await
        .expect("enqueue");
    drop(conn);
    sent(&app.db).await;
    one_of_each(&standin, invoice);
    let books = standin.books();
    let new_posts: Vec<_> = books
        .seen
        .iter()
        .filter(|s| s.method == "POST")
        .skip(posts_before)
        .collect();
    assert!(
        new_posts.iter().all(|p| p.path.ends_with("/send")),
        "only the send is asked again (and replayed by its key): {new_posts:?}"
    );
}

#[tokio::test]
async fn a_total_stripe_disagrees_with_fails_the_push_with_both_figures() {
    let standin = StripeStandIn::start().await;
    let app = spawn(&standin, &[("OPS_TOKENS", format!("anna:{OPS_TOKEN}"))]).await;
    let invoice = finalize_november_unqueued(&app.db).await;
    // Our total says a cent more than the lines Stripe is sent (changed before the push is
    // queued, so no push can see the true total first).
    app.db
        .execute_with(
            "UPDATE invoices SET total_usd = total_usd + 0.01 WHERE id = $1",
            invoice,
        )
        .await;
    queue_pushes(&app.db).await;
    app.db
        .count_reaches(
            "SELECT count(*) FROM invoices WHERE stripe_error IS NOT NULL",
            1,
            120,
            "the push stopped",
        )
        .await;
    app.db
        .count_reaches(
            "SELECT count(*) FROM apalis.jobs WHERE job_type = 'stripe_push' AND status = 'Killed'",
            1,
            30,
            "the push job killed",
        )
        .await;
    let error: String = app
        .db
        .scalar_with("SELECT stripe_error FROM invoices WHERE id = $1", invoice)
        .await;
    assert!(
        error.contains("74908") && error.contains("74909"),
        "{error}"
    );
    let books = standin.books();
    assert_eq!(
        books.posts("/finalize") + books.posts("/send"),
        0,
        "nothing was billed"
    );
}

#[tokio::test]
async fn a_payment_failure_tells_the_operator_and_a_deleted_customer_is_forgotten() {
    let standin = StripeStandIn::start().await;
    let discord = discord_accepting().await;
    let ops_url = format!("{}/api/webhooks/1/ops", discord.uri());
    let app = spawn(&standin, &[("OPS_DISCORD_WEBHOOK_URL", ops_url)]).await;
    let invoice = finalize_november(&app.db).await;
    sent(&app.db).await;
    let at_stripe = stripe_invoice(&standin);
    let r = post_event(
        &app,
        "evt_failed_1",
        "invoice.payment_failed",
        at_stripe,
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    payment_becomes(&app.db, invoice, "past_due").await;
    let note = eventually(30, "the ops note", || async {
        let requests = discord.received_requests().await.unwrap_or_default();
        requests
            .first()
            .map(|r| String::from_utf8_lossy(&r.body).to_string())
    })
    .await;
    assert!(
        note.contains("2026-11") && note.contains("749.08"),
        "{note}"
    );

    let customer = standin.books().customers[0].clone();
    let r = post_event(&app, "evt_cus_gone", "customer.deleted", customer, None).await;
    assert_eq!(r.status(), 200);
    app.db
        .count_reaches(
            "SELECT count(*) FROM agents WHERE stripe_customer_id IS NULL",
            5,
            30,
            "the customer forgotten",
        )
        .await;
}

#[tokio::test]
async fn forged_stale_and_malformed_events_are_refused_and_nothing_is_stored() {
    let standin = StripeStandIn::start().await;
    let app = spawn(&standin, &[]).await;
    let now = chrono::Utc::now().timestamp();
    let body = json!({"id": "evt_x", "type": "invoice.paid", "data": {"object": {}}}).to_string();
    let cases: Vec<(&str, Option<String>, String)> = vec![
        ("no signature", None, body.clone()),
        (
            "another secret",
            Some(signed(&body, "whsec_attacker", now)),
            body.clone(),
        ),
        (
            "stale",
            Some(signed(&body, WEBHOOK_SECRET, now - 3600)),
            body.clone(),
        ),
        ("garbage", Some("t=abc,v1=zz".into()), body.clone()),
        (
            "not JSON",
            Some(signed("{{{", WEBHOOK_SECRET, now)),
            "{{{".into(),
        ),
        (
            "no event id",
            Some(signed(r#"{"type":"invoice.paid"}"#, WEBHOOK_SECRET, now)),
            r#"{"type":"invoice.paid"}"#.into(),
        ),
    ];
    for (what, signature, body) in cases {
        let mut req = app
            .http
            .post(format!("{}/stripe/webhook", app.base))
            .body(body);
        if let Some(s) = signature {
            req = req.header("stripe-signature", s);
        }
        let r = req.send().await.expect("post");
        assert_eq!(r.status(), 400, "{what}");
        let text = r.text().await.expect("body");
        assert!(!text.contains(WEBHOOK_SECRET), "{what}: {text}");
    }
    assert_eq!(app.db.count("SELECT count(*) FROM stripe_events").await, 0);

    // Without a webhook secret the route does not exist.
    let plain = TestApp::spawn_web_only().await;
    let r = plain
        .http
        .post(format!("{}/stripe/webhook", plain.base))
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn a_crash_after_stripe_made_the_invoice_leaves_one_invoice_after_a_restart() {
    use crate::reliability::support::{Proc, env};
    let standin = StripeStandIn::start().await;
    let db = TestDb::seeded().await;
    let invoice = finalize_november(&db).await;
    let vars = stripe_vars(&standin);
    let mut extra: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let calm = env(&db, "http://127.0.0.1:9", &extra);
    extra.push(("AGENT_METER_FAILPOINTS", "after_stripe_invoice=1"));
    let mut worker = Proc::start(&["worker"], &env(&db, "http://127.0.0.1:9", &extra));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while !worker.exited() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker never reached the failpoint"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Stripe has the invoice; we have not stored its id, and it has no items.
    {
        let books = standin.books();
        assert_eq!((books.invoices.len(), books.items.len()), (1, 0));
    }
    let stored: Option<String> =
        sqlx::query_scalar("SELECT stripe_invoice_id FROM invoices WHERE id = $1")
            .bind(invoice)
            .fetch_one(&db.pool)
            .await
            .expect("row");
    assert_eq!(stored, None);

    // A fresh worker finds it by our id in its metadata and finishes it.
    let _worker = Proc::start(&["worker"], &calm);
    sent(&db).await;
    one_of_each(&standin, invoice);
    assert_eq!(
        standin.books().posts("/v1/invoices"),
        1,
        "found, not made again"
    );
}

#[tokio::test]
async fn the_agency_sees_what_it_owes_and_pays_and_the_operator_sees_receivables() {
    clear_of_month_turn(Phoenix).await;
    let standin = StripeStandIn::start().await;
    let app = spawn(
        &standin,
        &[("OPS_TOKENS", "anna:stripe-ops-token-0123456789".into())],
    )
    .await;
    let invoice = finalize_november(&app.db).await;
    sent(&app.db).await;
    let pay_url = stripe_invoice(&standin)["hosted_invoice_url"]
        .as_str()
        .expect("url")
        .to_string();

    // The portal: the status and a Pay button to Stripe's page.
    let agent = app.db.agent_id(PHONE_1).await;
    let mut conn = app.db.pool.acquire().await.expect("conn");
    let link = agent_meter::store::portal::create_link(
        &mut conn,
        agent,
        std::time::Duration::from_secs(600),
    )
    .await
    .expect("link");
    let token = agent_meter::store::agents::new_token(&mut conn, agent)
        .await
        .expect("token");
    drop(conn);
    let cookie = portal_sign_in(&app, link).await;
    let page = app.page("/portal/invoices/2026-11", &cookie).await;
    assert!(
        page.contains("id=\"pay\"") && page.contains(&pay_url),
        "{page}"
    );
    assert!(page.contains("Due"), "{page}");

    // The API.
    let list: Value = client()
        .get(format!("{}/v1/invoices", app.base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("api")
        .json()
        .await
        .expect("json");
    assert_eq!(list["data"][0]["payment_status"], "open", "{list}");
    assert_eq!(list["data"][0]["hosted_invoice_url"], pay_url.as_str());

    // The operator: 749.08 open.
    let money = ops_page(&app).await;
    assert!(
        money.contains("id=\"receivables\"") && money.contains("749.08 (1)"),
        "{money}"
    );

    // Paid: no button any more, and it counts as paid this month (paid now).
    let mut paid = stripe_invoice(&standin);
    paid["status"] = json!("paid");
    paid["status_transitions"]["paid_at"] = json!(chrono::Utc::now().timestamp());
    post_event(&app, "evt_paid_portal", "invoice.paid", paid, None).await;
    payment_becomes(&app.db, invoice, "paid").await;
    let page = app.page("/portal/invoices/2026-11", &cookie).await;
    assert!(
        !page.contains("id=\"pay\"") && page.contains("Paid"),
        "{page}"
    );
}
