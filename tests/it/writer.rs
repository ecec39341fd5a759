//! The effects writer: many tool jobs' effects per transaction, each exactly once, a bad one
//! failing alone.

use std::sync::Arc;

use agent_meter::{
    jobs::{
        JobError,
        writer::{self, Recorded, ToolEffect},
    },
    store::{findings, leads},
};
use rust_decimal::Decimal;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::*;

fn effect(agent_id: Uuid, lead_id: Uuid, key: &str) -> ToolEffect {
    ToolEffect {
        agent_id,
        lead_id: Some(lead_id),
        vapi_call_id: Some(format!("call-{key}")),
        address: Some(format!("{key} Elm St, Flagstaff")),
        kind: findings::WATER,
        key: key.to_string(),
        result: json!({"summary": {"well_count": 1}, "key": key}),
        facts: json!({"water_source": "private_well"}),
        tags: Vec::new(),
        metric: "water_lookup",
        quantity: Decimal::ONE,
        provider_cost_usd: None,
        metadata: json!({"tool_call_id": key}),
        discord_note: None,
        wake: None,
        late_message: String::new(),
    }
}

#[tokio::test]
async fn a_batch_writes_each_effect_once_and_a_bad_effect_fails_alone() {
    let db = TestDb::seeded().await;
    let config = Arc::new(test_config(&[]));
    let (a, b) = db.two_agents().await;
    let mut conn = db.pool.acquire().await.expect("conn");
    let (lead_a, _) = leads::upsert_by_phone(&mut conn, a, "+16025550101")
        .await
        .expect("lead a");
    let (lead_b, _) = leads::upsert_by_phone(&mut conn, b, "+16025550102")
        .await
        .expect("lead b");
    drop(conn);

    let mut effects: Vec<ToolEffect> = (0..40)
        .map(|i| match i % 2 {
            0 => effect(a, lead_a, &format!("tool_call:t{i}")),
            _ => effect(b, lead_b, &format!("tool_call:t{i}")),
        })
        .collect();
    // The same tool call twice in one batch (a rescued job racing its original).
    effects.push(effect(a, lead_a, "tool_call:t0"));
    // No price for this metric: the finding is kept, the job fails for good.
    let mut unpriced = effect(a, lead_a, "tool_call:unpriced");
    unpriced.metric = "no_such_metric";
    effects.push(unpriced);
    // Agent b's lead under agent a: the database refuses it, and only it.
    effects.push(effect(a, lead_b, "tool_call:foreign"));

    let outcomes = writer::write_all(&db.pool, &config, &effects).await;
    assert_eq!(outcomes.len(), effects.len());
    for (i, outcome) in outcomes.iter().take(40).enumerate() {
        assert!(
            matches!(outcome, Ok(Recorded { written: true, .. })),
            "effect {i}: {outcome:?}"
        );
    }
    let first = outcomes[0].as_ref().expect("t0").finding_id;
    assert!(
        matches!(&outcomes[40], Ok(r) if !r.written && r.finding_id == first),
        "the repeat reuses t0's finding and meters nothing: {:?}",
        outcomes[40]
    );
    assert!(
        matches!(&outcomes[41], Err(JobError::Permanent(m)) if m.contains("no no_such_metric price")),
        "{:?}",
        outcomes[41]
    );
    assert!(
        matches!(&outcomes[42], Err(JobError::Permanent(m)) if m.contains("database refused")),
        "an integrity error fails the same way every time: {:?}",
        outcomes[42]
    );

    let (usage, keys): (i64, i64) = db
        .row(
            "SELECT count(*), count(DISTINCT idempotency_key) FROM agent_usage_metrics
              WHERE metric_type = 'water_lookup'",
        )
        .await;
    assert_eq!((usage, keys), (40, 40));
    assert_eq!(
        db.count(
            "SELECT count(*) FROM risk_assessments WHERE idempotency_key = 'tool_call:unpriced'"
        )
        .await,
        1,
        "an unpriced effect keeps its (paid) finding"
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM risk_assessments WHERE idempotency_key = 'tool_call:foreign'"
        )
        .await,
        0
    );
    assert_eq!(
        db.count("SELECT count(*) FROM properties WHERE water_source = 'private_well'")
            .await,
        41
    );
    let linked: i64 = db
        .count(
            "SELECT count(*) FROM agent_usage_metrics u JOIN risk_assessments r
               ON r.id = (u.metadata->>'risk_assessment_id')::uuid AND r.agent_id = u.agent_id
              WHERE u.metadata ? 'pricing_config_id'",
        )
        .await;
    assert_eq!(linked, 40, "every usage row names its finding and price");

    // Everything again (jobs are at-least-once): nothing new is written.
    let again = writer::write_all(&db.pool, &config, &effects[..40]).await;
    assert!(
        again.iter().all(|o| matches!(o, Ok(r) if !r.written)),
        "{again:?}"
    );
    assert_eq!(db.count(USAGE_ROWS).await, 40);
}

#[tokio::test]
async fn concurrent_writes_through_the_writer_each_get_their_own_answer() {
    let db = TestDb::seeded().await;
    let deps = agent_meter::jobs::Deps::new(db.pool.clone(), Arc::new(test_config(&[])));
    let a = db.agent_id("ph_placeholder_client3").await;
    let mut conn = db.pool.acquire().await.expect("conn");
    let (lead, _) = leads::upsert_by_phone(&mut conn, a, "+16025550103")
        .await
        .expect("lead");
    drop(conn);
    let writes = (0..200).map(|i| {
        deps.writer
            .write(effect(a, lead, &format!("tool_call:c{i}")))
    });
    let outcomes = futures::future::join_all(writes).await;
    let ids: std::collections::HashSet<Uuid> = outcomes
        .iter()
        .map(|o| o.as_ref().expect("written").finding_id)
        .collect();
    assert_eq!(ids.len(), 200, "one finding per tool call");
    assert_eq!(db.count(USAGE_ROWS).await, 200);
}

/// Issue 14, item 3: a paid answer is committed on its own before any effect; an effect that can
/// never be written fails the job for good, the provider is asked once, and nothing is billed.
#[tokio::test]
async fn a_paid_answer_is_kept_and_never_paid_twice_when_its_effect_keeps_failing() {
    use agent_meter::{
        jobs::{Deps, Job},
        tools::solar_ocr_scan::SolarOcrScan,
    };
    use wiremock::{
        Mock, ResponseTemplate,
        matchers::{method, path},
    };
    let mocks = Mocks::start().await;
    Mock::given(method("POST"))
        .and(path(GEMINI_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(gemini_solar_answer()))
        .mount(&mocks.gemini)
        .await;
    let db = TestDb::seeded().await;
    let (a, b) = db.two_agents().await;
    let mut conn = db.pool.acquire().await.expect("conn");
    let (lead_of_b, _) = leads::upsert_by_phone(&mut conn, b, "+16025550102")
        .await
        .expect("lead b");
    drop(conn);
    let vars = mocks.config();
    let borrowed: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let deps = Deps::new(db.pool.clone(), Arc::new(test_config(&borrowed)));
    // Agent a's scan names agent b's lead: the database refuses the effect every time.
    let job = SolarOcrScan {
        call: agent_meter::tools::CallContext {
            agent_id: a,
            lead_id: Some(lead_of_b),
            tool_call_id: "tc-refused".into(),
            vapi_call_id: None,
            requested_at: None,
        },
        image_url: None,
        image_base64: Some("iVBORw0KGgo=".into()),
        mime_type: Some("image/png".into()),
        address: Some("1 Elm St".into()),
    };
    for attempt in 0..2 {
        let e = job.clone().run(&deps).await.expect_err("refused");
        assert!(
            matches!(&e, JobError::Permanent(m) if m.contains("database refused")),
            "attempt {attempt}: {e:?}"
        );
    }
    assert_eq!(requests(&mocks.gemini).await, 1, "Gemini paid once");
    assert_eq!(
        db.count("SELECT count(*) FROM provider_answers WHERE key = 'tool_call:tc-refused'")
            .await,
        1
    );
    assert_eq!(db.count(USAGE_ROWS).await, 0);
}

#[tokio::test]
async fn new_findings_are_announced_only_to_agencies_whose_endpoints_want_them() {
    let db = TestDb::seeded().await;
    let config = Arc::new(test_config(&[]));
    let (a, b) = db.two_agents().await;
    let c = db.agent_id(PHONES[2]).await;
    let mut conn = db.pool.acquire().await.expect("conn");
    let mut leads = Vec::new();
    for (agent, phone) in [
        (a, "+16025550101"),
        (b, "+16025550102"),
        (c, "+16025550103"),
    ] {
        let (lead, _) = leads::upsert_by_phone(&mut conn, agent, phone)
            .await
            .expect("lead");
        leads.push(lead);
    }
    let (lead_a, lead_b, lead_c) = (leads[0], leads[1], leads[2]);
    use agent_meter::store::outbound::add_endpoint;
    add_endpoint(
        &mut conn,
        a,
        "https://hooks.example.com/a",
        None,
        "whsec_dGVzdA==",
    )
    .await
    .expect("a listens to everything");
    let calls_only = ["call.ended".to_string()];
    add_endpoint(
        &mut conn,
        c,
        "https://hooks.example.com/c",
        Some(&calls_only),
        "whsec_dGVzdA==",
    )
    .await
    .expect("c listens to calls only");
    drop(conn);

    let effects = vec![
        effect(a, lead_a, "tool_call:a1"),
        effect(b, lead_b, "tool_call:b1"),
        effect(c, lead_c, "tool_call:c1"),
        effect(a, lead_a, "tool_call:a2"),
    ];
    let outcomes = writer::write_all(&db.pool, &config, &effects).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    let announced: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT agent_id, type FROM webhook_messages ORDER BY agent_id")
            .fetch_all(&db.pool)
            .await
            .expect("messages");
    assert_eq!(
        announced,
        [(a, "finding.created".into()), (a, "finding.created".into())]
    );
    assert_eq!(db.count("SELECT count(*) FROM webhook_deliveries").await, 2);
}
