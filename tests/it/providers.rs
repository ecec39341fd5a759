//! Outside-API clients against wiremock over loopback (no database): request shapes, parsing,
//! failure classification, the circuit breaker and the image size cap.

use std::{str::FromStr, time::Duration};

use agent_meter::{
    config::Secret,
    providers::{
        CircuitBreaker, ProviderError,
        discord::DiscordClient,
        http_client,
        image::{ImageFetcher, PublicResolver},
        vapi::VapiClient,
    },
    tools::{
        solar_ocr_scan::gemini::{GeminiClient, Ownership},
        water_lookup::wells::{WellRegistry as ArcGisClient, summarize},
    },
};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{header, method, path, query_param},
};

/// `result`'s error, which must be transient (a retry may succeed) or not, as `transient` says.
#[track_caller]
fn failed<T: std::fmt::Debug>(result: Result<T, ProviderError>, transient: bool) -> ProviderError {
    let e = result.expect_err("an error");
    assert_eq!(e.is_transient(), transient, "{e}");
    e
}

/// `server` answering `path` with an image of `len` bytes of type `mime`.
async fn serve_image(server: &MockServer, path_: &str, len: usize, mime: &str) {
    Mock::given(path(path_))
        .respond_with(ResponseTemplate::new(200).set_body_raw(vec![7u8; len], mime))
        .mount(server)
        .await;
}

fn utc(text: &str) -> DateTime<Utc> {
    text.parse().expect("timestamp")
}

const GEMINI_PATH: &str = "/v1beta/models/gemini-test:generateContent";

fn breaker(name: &'static str) -> CircuitBreaker {
    CircuitBreaker::new(name, 5, Duration::from_secs(30))
}

fn gemini(server: &MockServer) -> GeminiClient {
    GeminiClient::new(
        server.uri(),
        Some(Secret::new("gem-key")),
        "gemini-test".into(),
        http_client(Duration::from_secs(5)),
        breaker("gemini"),
    )
}

fn vapi_at(uri: String, timeout: Duration, breaker: CircuitBreaker) -> VapiClient {
    VapiClient::new(
        uri,
        Some(Secret::new("vapi-key")),
        http_client(timeout),
        breaker,
    )
}

fn arcgis(server: &MockServer) -> ArcGisClient {
    let layer = format!("{}/FeatureServer/0", server.uri());
    ArcGisClient::new(
        layer,
        http_client(Duration::from_secs(5)),
        breaker("arcgis"),
    )
}

fn gemini_answer(text: &str) -> Value {
    json!({
        "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 1290, "candidatesTokenCount": 40, "totalTokenCount": 1400},
        "modelVersion": "gemini-test-001"
    })
}

async fn gemini_replies(
    template: ResponseTemplate,
) -> Result<agent_meter::tools::solar_ocr_scan::gemini::SolarScan, ProviderError> {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(GEMINI_PATH))
        .respond_with(template)
        .mount(&server)
        .await;
    gemini(&server)
        .scan_solar(b"jpeg", "image/jpeg", None)
        .await
}

fn google_error(code: u16, status: &str, details: Value) -> ResponseTemplate {
    ResponseTemplate::new(code).set_body_json(
        json!({"error": {"code": code, "message": "nope", "status": status, "details": details}}),
    )
}

#[tokio::test]
async fn gemini_scan_sends_the_image_inline_with_a_schema_and_parses_the_finding() {
    let server = MockServer::start().await;
    let answer = r#"{"has_solar": true, "panel_count": 22, "ownership": "leased", "installer": "SunRun", "confidence": 0.87}"#;
    Mock::given(method("POST"))
        .and(path(GEMINI_PATH))
        .and(header("x-goog-api-key", "gem-key"))
        .respond_with(ResponseTemplate::new(200).set_body_json(gemini_answer(answer)))
        .expect(1)
        .mount(&server)
        .await;
    let scan = gemini(&server)
        .scan_solar(b"\xff\xd8jpeg", "image/jpeg", Some("1 Main St, Phoenix AZ"))
        .await
        .expect("scan");
    assert!(scan.finding.has_solar);
    assert_eq!(scan.finding.panel_count, Some(22));
    assert_eq!(scan.finding.ownership, Ownership::Leased);
    assert_eq!(scan.finding.installer.as_deref(), Some("SunRun"));
    assert_eq!(scan.finding.confidence, 0.87);
    assert_eq!(
        (
            scan.usage.prompt_tokens,
            scan.usage.candidates_tokens,
            scan.usage.total_tokens
        ),
        (1290, 40, 1400)
    );
    assert_eq!(scan.model_version.as_deref(), Some("gemini-test-001"));

    let requests = server.received_requests().await.expect("recorded");
    let body: Value = serde_json::from_slice(&requests[0].body).expect("json body");
    let parts = &body["contents"][0]["parts"];
    assert_eq!(parts[0]["inline_data"]["mime_type"], "image/jpeg");
    assert_eq!(parts[0]["inline_data"]["data"], "/9hqcGVn");
    assert!(
        parts[1]["text"]
            .as_str()
            .expect("prompt")
            .contains("1 Main St")
    );
    let config = &body["generationConfig"];
    assert_eq!(config["responseMimeType"], "application/json");
    assert_eq!(config["responseSchema"]["type"], "OBJECT");
    assert_eq!(
        config["responseSchema"]["required"],
        json!(["has_solar", "ownership", "confidence"])
    );
}

#[tokio::test]
async fn gemini_bad_request_is_permanent_and_unavailable_is_transient() {
    failed(
        gemini_replies(google_error(400, "INVALID_ARGUMENT", json!([]))).await,
        false,
    );
    failed(
        gemini_replies(google_error(503, "UNAVAILABLE", json!([]))).await,
        true,
    );
}

#[tokio::test]
async fn gemini_rate_limit_honours_retry_info_but_a_daily_quota_is_permanent() {
    let retry = json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}]);
    let e = failed(
        gemini_replies(google_error(429, "RESOURCE_EXHAUSTED", retry)).await,
        true,
    );
    assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));

    let daily = json!([
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
            {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
             "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "41s"}
    ]);
    let e = failed(
        gemini_replies(google_error(429, "RESOURCE_EXHAUSTED", daily)).await,
        false,
    );
    assert!(e.to_string().contains("daily quota"), "{e}");
}

#[tokio::test]
async fn gemini_blocked_or_unparseable_answers_are_permanent() {
    let blocked = json!({"promptFeedback": {"blockReason": "SAFETY"}});
    let e = gemini_replies(ResponseTemplate::new(200).set_body_json(blocked))
        .await
        .expect_err("blocked");
    assert!(!e.is_transient() && e.to_string().contains("SAFETY"), "{e}");

    let stopped = json!({"candidates": [{"content": {"parts": []}, "finishReason": "SAFETY"}]});
    let e = gemini_replies(ResponseTemplate::new(200).set_body_json(stopped))
        .await
        .expect_err("safety");
    assert!(!e.is_transient() && e.to_string().contains("SAFETY"), "{e}");

    let garbled = gemini_answer("I think there are panels");
    let e = gemini_replies(ResponseTemplate::new(200).set_body_json(garbled))
        .await
        .expect_err("text");
    assert!(!e.is_transient() && e.to_string().contains("JSON"), "{e}");

    let out_of_range =
        gemini_answer(r#"{"has_solar": true, "ownership": "owned", "confidence": 7}"#);
    let e = gemini_replies(ResponseTemplate::new(200).set_body_json(out_of_range))
        .await
        .expect_err("range");
    assert!(
        !e.is_transient() && e.to_string().contains("confidence"),
        "{e}"
    );
}

#[tokio::test]
async fn gemini_without_a_key_fails_permanently_without_a_request() {
    let server = MockServer::start().await;
    let client = GeminiClient::new(
        server.uri(),
        None,
        "m".into(),
        http_client(Duration::from_secs(1)),
        breaker("gemini"),
    );
    let e = client
        .scan_solar(b"x", "image/png", None)
        .await
        .expect_err("no key");
    assert!(
        !e.is_transient() && e.to_string().contains("not configured"),
        "{e}"
    );
    assert!(
        server
            .received_requests()
            .await
            .expect("recorded")
            .is_empty()
    );
}

fn feature(id: Value, depth: Value, x: f64, y: f64) -> Value {
    json!({"attributes": {"REGISTRY_ID": id, "OWNER_NAME": "SMITH", "WELL_DEPTH": depth,
        "WATER_LEVEL": 180.25, "WATER_USE": "DOMESTIC", "WELL_CANCELLED": "N"},
        "geometry": {"x": x, "y": y}})
}

#[tokio::test]
async fn arcgis_follows_the_transfer_limit_across_pages_and_returns_every_well() {
    let server = MockServer::start().await;
    let page1: Vec<Value> = (0..3)
        .map(|i| feature(json!(550000 + i), json!(300), -112.07, 33.451))
        .collect();
    let cancelled = json!({"attributes": {"REGISTRY_ID": "55-9", "WELL_CANCELLED": "Y"}, "geometry": {"x": -112.0, "y": 33.0}});
    let page2 = vec![
        feature(json!("55-777"), json!(0), -112.07, 33.46),
        cancelled,
    ];
    Mock::given(method("GET"))
        .and(path("/FeatureServer/0/query"))
        .and(query_param("resultOffset", "0"))
        .and(query_param("geometry", "-112.07,33.45"))
        .and(query_param("where", "1=1"))
        .and(query_param("distance", "1609"))
        .and(query_param("units", "esriSRUnit_Meter"))
        .and(query_param("inSR", "4326"))
        .and(query_param("outSR", "4326"))
        .and(query_param("resultRecordCount", "1000"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"features": page1, "exceededTransferLimit": true})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/FeatureServer/0/query"))
        .and(query_param("resultOffset", "3"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"features": page2})))
        .mount(&server)
        .await;
    let wells = arcgis(&server)
        .wells_near(33.45, -112.07, 1609)
        .await
        .expect("wells");
    assert_eq!(wells.len(), 4, "cancelled well skipped");
    assert_eq!(wells[0].registry_id.as_deref(), Some("550000"));
    assert_eq!(wells[0].well_depth_ft, Some(Decimal::from(300)));
    assert_eq!(
        wells[0].water_level_ft,
        Some(Decimal::from_str("180.25").expect("decimal"))
    );
    assert_eq!(wells[3].registry_id.as_deref(), Some("55-777"));
    assert_eq!(wells[3].well_depth_ft, None, "0 means unknown");
    let summary = summarize(&wells, 33.45, -112.07);
    assert_eq!(summary.well_count, 4);
    assert_eq!(summary.nearest.expect("nearest").distance_m, 111.2);
}

#[tokio::test]
async fn arcgis_errors_inside_http_200_are_classified_by_their_code() {
    for (code, transient) in [(400, false), (498, false), (500, true)] {
        let server = MockServer::start().await;
        let body = json!({"error": {"code": code, "message": "Unable to complete operation.", "details": []}});
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
            .mount(&server)
            .await;
        let answer = arcgis(&server).wells_near(33.45, -112.07, 500).await;
        let e = answer.expect_err("error body");
        assert_eq!(e.is_transient(), transient, "code {code}: {e}");
    }
}

#[tokio::test]
async fn vapi_get_call_sends_the_bearer_key_and_reads_cost_exactly() {
    let server = MockServer::start().await;
    let body = r#"{"id": "call-1", "phoneNumberId": "ph-1", "customer": {"number": "+16025550100"},
        "status": "ended", "startedAt": "2026-03-01T17:00:00.000Z", "endedAt": "2026-03-01T17:02:05.500Z",
        "endedReason": "customer-ended-call", "cost": 0.1234567, "createdAt": "2026-03-01T16:59:59.000Z"}"#;
    Mock::given(method("GET"))
        .and(path("/call/call-1"))
        .and(header("authorization", "Bearer vapi-key"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/json"))
        .mount(&server)
        .await;
    let client = vapi_at(server.uri(), Duration::from_secs(5), breaker("vapi"));
    let call = client.get_call("call-1").await.expect("call");
    assert_eq!(
        call.cost,
        Some(Decimal::from_str("0.1234567").expect("decimal"))
    );
    assert_eq!(
        call.customer.and_then(|c| c.number).as_deref(),
        Some("+16025550100")
    );
    assert_eq!(call.ended_reason.as_deref(), Some("customer-ended-call"));
    assert_eq!(call.ended_at, Some(utc("2026-03-01T17:02:05.5Z")));
    failed(client.get_call("missing").await, false);
}

/// A stand-in for `GET /call` that answers like the real one: the calls whose `createdAt` is in
/// `[createdAtGe, createdAtLt)`, at most `limit`, in an order of its choosing (here oldest
/// first, the order a "newest first" pager would lose calls in).
struct CallList {
    calls: Vec<Value>,
    newest_first: bool,
}

impl wiremock::Respond for CallList {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let param = |name: &str| {
            request
                .url
                .query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.to_string())
        };
        let (Some(ge), Some(lt), Some(limit)) = (
            param("createdAtGe").map(|t| utc(&t)),
            param("createdAtLt").map(|t| utc(&t)),
            param("limit").and_then(|l| l.parse::<usize>().ok()),
        ) else {
            return ResponseTemplate::new(400);
        };
        let mut hits: Vec<&Value> = self
            .calls
            .iter()
            .filter(|c| {
                let at = utc(c["createdAt"].as_str().unwrap_or_default());
                at >= ge && at < lt
            })
            .collect();
        if self.newest_first {
            hits.reverse();
        }
        hits.truncate(limit);
        ResponseTemplate::new(200).set_body_json(hits)
    }
}

#[tokio::test]
async fn vapi_list_calls_loses_nothing_whatever_order_vapi_lists_in() {
    let day = utc("2026-03-01T00:00:00Z");
    let call = |i: i64| {
        let at = day + chrono::TimeDelta::seconds(i * 30);
        json!({"id": format!("c{i}"), "phoneNumberId": "ph-1", "createdAt": at.to_rfc3339(), "cost": 0.05})
    };
    // 2,500 calls in one day, plus two at the very same millisecond.
    let mut calls: Vec<Value> = (0..2500).map(call).collect();
    calls.push(
        json!({"id": "twin", "phoneNumberId": "ph-1", "createdAt": "2026-03-01T00:00:00.000Z"}),
    );
    for newest_first in [false, true] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/call"))
            .and(query_param("phoneNumberId", "ph-1"))
            .and(query_param("limit", "1000"))
            .respond_with(CallList {
                calls: calls.clone(),
                newest_first,
            })
            .mount(&server)
            .await;
        let client = vapi_at(server.uri(), Duration::from_secs(5), breaker("vapi"));
        let listed = client
            .list_calls(
                agent_meter::providers::vapi::CallsOf::PhoneNumber("ph-1"),
                day,
                day + chrono::TimeDelta::days(1),
            )
            .await
            .expect("calls");
        assert_eq!(listed.len(), 2501, "newest first: {newest_first}");
        let mut ids: Vec<&str> = listed.iter().map(|c| c.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 2501, "no call twice");
        assert!(
            listed
                .windows(2)
                .all(|w| w[0].created_at <= w[1].created_at),
            "oldest first"
        );
        let requests = server.received_requests().await.expect("recorded").len();
        assert!(requests <= 8, "{requests} requests for 2,501 calls");
    }
}

#[tokio::test]
async fn discord_posts_content_and_classifies_failures_without_echoing_the_webhook() {
    let server = MockServer::start().await;
    let hook = format!("{}/api/webhooks/123/s3cr3t-token", server.uri());
    Mock::given(method("POST"))
        .and(path("/api/webhooks/123/s3cr3t-token"))
        .respond_with(ResponseTemplate::new(204))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let client = DiscordClient::new(http_client(Duration::from_secs(5)), breaker("discord"));
    client.post(&hook, &"é".repeat(2500)).await.expect("posted");
    let body: Value =
        serde_json::from_slice(&server.received_requests().await.expect("recorded")[0].body)
            .expect("json");
    assert_eq!(
        body["content"].as_str().expect("content").chars().count(),
        2000
    );

    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).set_body_json(
            json!({"message": "You are being rate limited.", "retry_after": 1.5, "global": false}),
        ))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let e = client.post(&hook, "hello").await.expect_err("429");
    assert!(e.is_transient());
    assert_eq!(e.retry_after(), Some(Duration::from_millis(1500)));

    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"message": "Unknown Webhook", "code": 10015})),
        )
        .mount(&server)
        .await;
    let e = failed(client.post(&hook, "hello").await, false);
    let shown = format!("{e} {e:?}");
    assert!(
        !shown.contains("s3cr3t-token") && !shown.contains(&hook),
        "{shown}"
    );
}

#[tokio::test]
async fn a_connection_dropped_by_the_server_is_transient() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    let client = vapi_at(
        format!("http://{addr}"),
        Duration::from_secs(5),
        breaker("vapi"),
    );
    failed(client.get_call("call-1").await, true);
}

#[tokio::test]
async fn a_response_slower_than_the_client_timeout_is_transient() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let client = vapi_at(server.uri(), Duration::from_millis(300), breaker("vapi"));
    failed(client.get_call("slow").await, true);
}

#[tokio::test]
async fn the_circuit_breaker_fails_fast_once_open_and_closes_after_a_success() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let client = vapi_at(
        server.uri(),
        Duration::from_secs(5),
        // Open long enough that a slow machine cannot reach the fourth call after it closed.
        CircuitBreaker::new("vapi", 3, Duration::from_secs(2)),
    );
    for _ in 0..3 {
        assert!(client.get_call("c").await.expect_err("503").is_transient());
    }
    let e = client.get_call("c").await.expect_err("open");
    assert!(
        e.is_transient() && e.to_string().contains("circuit open"),
        "{e}"
    );
    assert!(e.retry_after().is_some_and(|d| d <= Duration::from_secs(2)));
    assert_eq!(
        server.received_requests().await.expect("recorded").len(),
        3,
        "no request while open"
    );

    server.reset().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "c"})))
        .mount(&server)
        .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(client.get_call("c").await.expect("half-open trial").id, "c");
    assert_eq!(client.get_call("c").await.expect("closed").id, "c");
    assert_eq!(server.received_requests().await.expect("recorded").len(), 2);
}

#[tokio::test]
async fn fetch_image_enforces_the_size_cap_and_reports_the_mime_type() {
    let server = MockServer::start().await;
    serve_image(&server, "/small.png", 100, "image/png").await;
    serve_image(&server, "/big.jpg", 5000, "image/jpeg").await;
    // The mock is on loopback: only a fetcher that allows private hosts (tests, demos) reaches it.
    let images = ImageFetcher::new(true);
    let url = |name: &str| format!("{}/{name}", server.uri());
    let (bytes, mime) = images.fetch(&url("small.png"), 1000).await.expect("small");
    assert_eq!((bytes.len(), mime.as_str()), (100, "image/png"));
    failed(images.fetch(&url("big.jpg"), 1000).await, false);
    failed(images.fetch(&url("missing.jpg"), 1000).await, false);
}

/// SSRF: an image server on loopback is never reached, whatever the URL's spelling, and a name
/// that resolves to loopback is refused by the resolver the client connects with (no check-then-
/// resolve-again gap a zero-TTL DNS answer could slip through).
#[tokio::test]
async fn image_urls_never_reach_non_public_addresses_in_any_spelling() {
    let server = MockServer::start().await;
    serve_image(&server, "/x.png", 10, "image/png").await;
    let port = server.address().port();
    let images = ImageFetcher::new(false);
    for host in [
        "127.0.0.1".to_string(),
        "127.1".into(),
        "2130706433".into(),
        "0x7f000001".into(),
        "0177.0.0.1".into(),
        "[::1]".into(),
        "[::ffff:127.0.0.1]".into(),
        "[::ffff:7f00:1]".into(),
        "[64:ff9b::7f00:1]".into(),
        "localhost".into(),
        "0.0.0.0".into(),
        "169.254.169.254".into(),
        "100.64.0.1".into(),
    ] {
        let url = format!("http://{host}:{port}/x.png");
        let e = images.fetch(&url, 1000).await.expect_err(&url);
        assert!(!e.is_transient(), "{url}: {e}");
        assert!(e.to_string().contains("non-public"), "{url}: {e}");
        assert!(
            !e.to_string().contains(&port.to_string()),
            "no URL in errors: {e}"
        );
    }
    assert_eq!(
        server.received_requests().await.expect("recorded").len(),
        0,
        "nothing reached the loopback server"
    );
    // The resolver alone (as reqwest uses it for every connection) refuses loopback names.
    let resolved =
        reqwest::dns::Resolve::resolve(&PublicResolver, "localhost".parse().expect("name")).await;
    assert!(resolved.is_err());
    // Other schemes and hostless URLs are refused before any connection.
    for url in [
        "file:///etc/passwd",
        "gopher://example.com/",
        "http:///x.png",
    ] {
        assert!(images.fetch(url, 1000).await.is_err(), "{url}");
    }
}
