//! Every answer we give Vapi, validated against Vapi's published OpenAPI document (issue 13,
//! item 3) with a JSON Schema validator: assistant-request for each kind of agent, tool-calls,
//! and the messages Vapi waits on. The document is Vapi's, read where the workplace keeps it
//! (`shared/vapi/openapi.json` beside the checkout, or `VAPI_OPENAPI`); it is not copied here.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::helpers::*;

/// Vapi's OpenAPI document, if it can be found.
pub fn spec() -> Option<Value> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("VAPI_OPENAPI")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    let mut dir = Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    while let Some(d) = dir {
        candidates.push(d.join("shared/vapi/openapi.json"));
        candidates.push(d.join("../shared/vapi/openapi.json"));
        dir = d.parent().map(PathBuf::from);
    }
    candidates.push(PathBuf::from("/work/shared/vapi/openapi.json"));
    let path = candidates.into_iter().find(|p| p.is_file())?;
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Two defects of the published document, repaired before validating (each would refuse every
/// value, valid or not): an `enum` of strings on an array itself (`serverMessages`; the same
/// `enum` is on its `items`), and JavaScript regex literals as patterns (`"/^[a-z]+$/"`, which a
/// JSON Schema validator reads as requiring the slashes).
fn repair(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.get("type").and_then(Value::as_str) == Some("array") {
                map.remove("enum");
            }
            if let Some(Value::String(p)) = map.get_mut("pattern")
                && p.len() > 1
                && p.starts_with('/')
                && p.ends_with('/')
            {
                *p = p[1..p.len() - 1].to_string();
            }
            map.values_mut().for_each(repair);
        }
        Value::Array(items) => items.iter_mut().for_each(repair),
        _ => {}
    }
}

/// A validator for `components.schemas.{name}` (refs resolve inside the document).
fn validator(spec: &Value, name: &str) -> jsonschema::Validator {
    let mut components = spec["components"].clone();
    repair(&mut components);
    let schema = json!({
        "$ref": format!("#/components/schemas/{name}"),
        "components": components,
    });
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .build(&schema)
        .expect("Vapi's schema compiles")
}

pub fn assert_valid(spec: &Value, name: &str, answer: &Value) {
    let v = validator(spec, name);
    let errors: Vec<String> = v
        .iter_errors(answer)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{name}: {errors:#?}\n{answer:#}");
}

#[tokio::test]
async fn every_answer_we_give_vapi_fits_its_published_schema() {
    let Some(spec) = spec() else {
        eprintln!("SKIPPED: Vapi's OpenAPI document not found (set VAPI_OPENAPI)");
        return;
    };
    // The validator refuses what Vapi would: a name over 40 characters, results that are not a list.
    let assistant = validator(&spec, "ServerMessageResponseAssistantRequest");
    assert!(!assistant.is_valid(&json!({"assistant": {"name": "x".repeat(41)}})));
    assert!(assistant.is_valid(&json!({"assistant": {"name": "x".repeat(40)}})));
    assert!(!validator(&spec, "ServerMessageResponseToolCalls").is_valid(&json!({"results": "x"})));
    assert!(
        !validator(&spec, "ServerMessageResponseCallEndpointingRequest")
            .is_valid(&json!({"timeoutSeconds": 99}))
    );

    let app = TestApp::spawn_with_mocks(
        &Mocks::start().await,
        &[
            ("PUBLIC_BASE_URL", "https://meter.example.com"),
            (
                "VAPI_SERVER_CREDENTIAL_ID",
                "550e8400-e29b-41d4-a716-446655440000",
            ),
            ("TOOL_RESULT_WAIT_MS", "200"),
        ],
    )
    .await;
    let pool = &app.db.pool;
    let set = |sql: &'static str| async move {
        sqlx::query(sql).execute(pool).await.expect(sql);
    };
    // One agent of each kind (transfers: at any time with the number declared, limited hours
    // asked of us, never; the longest call Vapi allows).
    set("UPDATE agents SET agency_name = 'Compañía de Seguros Familiares del Gran Cañón y Alrededores', max_call_minutes = 720, transfer_number = '+19285550100', transfer_hours = 'always' WHERE vapi_phone_number_id = 'ph_placeholder_client1'").await;
    set("UPDATE agents SET vapi_assistant_id = 'asst_saved' WHERE vapi_phone_number_id = 'ph_placeholder_client2'").await;
    set("UPDATE agents SET tools = ARRAY['flood_zone_lookup'], system_prompt = 'Only English, for {agency_name}.', max_call_minutes = 1, transfer_number = '+15205550199', transfer_hours = 'Mon-Fri 08:00-17:00, Sat 09:00-12:00' WHERE vapi_phone_number_id = 'ph_placeholder_client3'").await;
    set("UPDATE agents SET tools = ARRAY[]::text[], transfer_number = '+16025550111', transfer_hours = 'never' WHERE vapi_phone_number_id = 'ph_placeholder_client4'").await;
    set(
        "UPDATE agents SET status = 'paused' WHERE vapi_phone_number_id = 'ph_placeholder_client5'",
    )
    .await;

    for (n, phone) in PHONES.iter().chain(&["ph_nobody"]).enumerate() {
        let answer: Value = app
            .post(&assistant_request(
                &format!("schema-{n}"),
                phone,
                "+16025550150",
            ))
            .await
            .json()
            .await
            .expect("json");
        assert_valid(&spec, "ServerMessageResponseAssistantRequest", &answer);
        let transfer = answer["assistant"]["model"]["tools"]
            .as_array()
            .and_then(|tools| tools.iter().find(|t| t["type"] == "transferCall"));
        match n {
            0 => {
                let name = answer["assistant"]["name"].as_str().expect("name");
                assert!(name.chars().count() <= 40, "{name}");
                assert_eq!(
                    answer["assistant"]["server"],
                    json!({"url": "https://meter.example.com/vapi/webhook",
                           "credentialId": "550e8400-e29b-41d4-a716-446655440000"})
                );
                assert_eq!(answer["assistant"]["maxDurationSeconds"], 43200);
                let to = &transfer.expect("transferCall")["destinations"][0];
                assert_eq!(to["number"], "+19285550100");
                assert!(
                    answer["assistant"]["artifactPlan"]["structuredOutputs"][0]["schema"]
                        ["properties"]["best_callback_time"]
                        .is_object()
                );
            }
            2 | 3 => {
                assert_eq!(transfer.expect("transferCall")["destinations"], json!([]));
                let minutes = if n == 2 { 1 } else { 30 };
                assert_eq!(answer["assistant"]["maxDurationSeconds"], minutes * 60);
            }
            _ => assert!(transfer.is_none(), "#{n}: {answer}"),
        }
    }

    let calls = json!([
        {"id": "ok", "name": "water_lookup", "arguments": {"latitude": 35.2, "longitude": -111.6}},
        {"id": "bad", "name": "water_lookup", "arguments": {"latitude": "north"}},
        {"id": "unknown", "name": "crystal_ball", "arguments": {}}
    ]);
    let answer = app.tools_answer("schema-tools", calls).await;
    assert_valid(&spec, "ServerMessageResponseToolCalls", &answer);

    // Transfers: in hours (client1, `always`) the number, out of hours (client4, `never`) the
    // error that makes the assistant take a message.
    let transfer_schema = "ServerMessageResponseTransferDestinationRequest";
    for (phone, connects) in [(PHONE_1, true), (PHONES[3], false)] {
        let message = json!({"message": {"type": "transfer-destination-request", "call": {"id": format!("schema-transfer-{phone}"), "phoneNumberId": phone}}});
        let answer: Value = app.post(&message).await.json().await.expect("json");
        assert_eq!(answer.get("destination").is_some(), connects, "{answer}");
        assert_eq!(answer.get("error").is_some(), !connects, "{answer}");
        assert_valid(&spec, transfer_schema, &answer);
    }

    for (kind, schema) in [
        (
            "transfer-destination-request",
            "ServerMessageResponseTransferDestinationRequest",
        ),
        (
            "handoff-destination-request",
            "ServerMessageResponseHandoffDestinationRequest",
        ),
        (
            "knowledge-base-request",
            "ServerMessageResponseKnowledgeBaseRequest",
        ),
        (
            "call.endpointing.request",
            "ServerMessageResponseCallEndpointingRequest",
        ),
    ] {
        let message = json!({"message": {"type": kind, "call": {"id": format!("schema-{kind}"), "phoneNumberId": PHONE_1}}});
        let r = app.post(&message).await;
        assert_eq!(r.status(), 200, "{kind}");
        let answer: Value = r.json().await.expect("json");
        assert!(
            answer.get("received").is_none(),
            "{kind} gets a real answer: {answer}"
        );
        assert_valid(&spec, schema, &answer);
    }
}

/// A minimal instance of `schema`: required properties only, first alternatives, first enum
/// values; enough to be a message Vapi could send.
fn example(spec: &Value, schema: &Value, depth: usize) -> Value {
    if depth > 16 {
        return Value::Null;
    }
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let target = r
            .strip_prefix("#/")
            .map(|path| path.split('/').fold(spec, |v, key| &v[key]))
            .unwrap_or(&Value::Null);
        return example(spec, target, depth + 1);
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        let mut merged = serde_json::Map::new();
        for part in all {
            if let Value::Object(m) = example(spec, part, depth + 1) {
                merged.extend(m);
            }
        }
        return Value::Object(merged);
    }
    if let Some(first) = schema
        .get("oneOf")
        .or_else(|| schema.get("anyOf"))
        .and_then(Value::as_array)
        .and_then(|alts| alts.first())
    {
        return example(spec, first, depth + 1);
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        if schema.get("type").and_then(Value::as_str) == Some("array") {
            return json!([first]);
        }
        return first.clone();
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") | None => {
            let mut object = serde_json::Map::new();
            for name in schema["required"].as_array().into_iter().flatten() {
                let name = name.as_str().unwrap_or_default();
                object.insert(
                    name.into(),
                    example(spec, &schema["properties"][name], depth + 1),
                );
            }
            Value::Object(object)
        }
        Some("array") => match schema.get("minItems").and_then(Value::as_u64) {
            Some(n) if n > 0 => json!([example(spec, &schema["items"], depth + 1)]),
            _ => json!([]),
        },
        Some("string") => match schema.get("format").and_then(Value::as_str) {
            Some("date-time") => json!("2026-11-20T17:00:00.000Z"),
            _ => json!("x"),
        },
        Some("number") | Some("integer") => schema.get("minimum").cloned().unwrap_or(json!(0)),
        Some("boolean") => json!(false),
        Some(_) => Value::Null,
    }
}

/// The schema Vapi validates our answer to a message `type` against, when it expects one.
fn answer_schema(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "assistant-request" => "ServerMessageResponseAssistantRequest",
        "tool-calls" => "ServerMessageResponseToolCalls",
        "transfer-destination-request" => "ServerMessageResponseTransferDestinationRequest",
        "handoff-destination-request" => "ServerMessageResponseHandoffDestinationRequest",
        "knowledge-base-request" => "ServerMessageResponseKnowledgeBaseRequest",
        "call.endpointing.request" => "ServerMessageResponseCallEndpointingRequest",
        "campaign.predial" => "ServerMessageResponseCampaignPredial",
        _ => return None,
    })
}

#[tokio::test]
async fn every_server_message_type_in_vapis_spec_is_answered_2xx_inside_its_schema() {
    let Some(spec) = spec() else {
        eprintln!("SKIPPED: Vapi's OpenAPI document not found (set VAPI_OPENAPI)");
        return;
    };
    let app = TestApp::spawn_web_only().await;
    let variants = spec["components"]["schemas"]["ServerMessage"]["properties"]["message"]["oneOf"]
        .as_array()
        .expect("ServerMessage variants")
        .clone();
    assert!(variants.len() >= 20, "{} variants", variants.len());
    let mut kinds = Vec::new();
    for variant in &variants {
        let mut message = example(&spec, variant, 0);
        if message.get("type").is_none() {
            // `tool-calls` does not list its `type` as required; Vapi always sends it.
            let name = variant["$ref"]
                .as_str()
                .and_then(|r| r.rsplit('/').next())
                .unwrap_or("");
            message["type"] =
                spec["components"]["schemas"][name]["properties"]["type"]["enum"][0].clone();
        }
        let kind = message["type"]
            .as_str()
            .expect("every message has a type")
            .to_string();
        // Each message twice: as generated (no call: optional for most), and on a routed call.
        for (n, with_call) in [false, true].into_iter().enumerate() {
            if with_call {
                message["call"] = json!({"id": format!("corpus-{kind}"), "phoneNumberId": PHONE_1});
            }
            let body = json!({"message": message});
            let r = app.post(&body).await;
            let status = r.status().as_u16();
            let answer: Value = r.json().await.unwrap_or(Value::Null);
            assert!(
                (200..300).contains(&status),
                "{kind} #{n}: {status} {answer}\n{body}"
            );
            if let Some(schema) = answer_schema(&kind) {
                assert_valid(&spec, schema, &answer);
            }
        }
        kinds.push(kind);
    }
    println!(
        "{} server message types replayed: {}",
        kinds.len(),
        kinds.join(", ")
    );
    assert_eq!(
        app.db
            .count("SELECT count(DISTINCT message_type) FROM webhook_events")
            .await,
        kinds.len() as i64,
        "each type stored"
    );
}
