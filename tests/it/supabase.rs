//! Agencies on Supabase Auth: their access tokens open `/v1` and the portal. ES256/RS256 against
//! the project's JWKS (a stand-in server), legacy HS256; expiry, audience, issuer, signature,
//! unknown users, `alg: none` and algorithm confusion refused; the JWKS is not refetched per token.

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, ResponseTemplate, matchers::path};

use crate::helpers::*;

const HS_SECRET: &str = "legacy-jwt-secret-0123456789abcdef";
const JWKS_PATH: &str = "/auth/v1/.well-known/jwks.json";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect(name)
}

struct World {
    app: TestApp,
    jwks: MockServer,
    user: uuid::Uuid,
    agent: uuid::Uuid,
}

async fn world() -> World {
    let jwks = MockServer::start().await;
    let set: Value = serde_json::from_slice(&fixture("supabase_jwks.json")).expect("jwks");
    Mock::given(path(JWKS_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(set))
        .mount(&jwks)
        .await;
    let app = TestApp::spawn_web_only_with(&[
        ("SUPABASE_URL", &jwks.uri()),
        ("SUPABASE_JWT_SECRET", HS_SECRET),
    ])
    .await;
    let agent = app.db.agent_id(PHONE_1).await;
    let user = uuid::Uuid::new_v4();
    let set_user =
        "UPDATE agents SET user_id = $1 WHERE vapi_phone_number_id = 'ph_placeholder_client1'";
    app.db.execute_with(set_user, user).await;
    World {
        app,
        jwks,
        user,
        agent,
    }
}

impl World {
    fn claims(&self, sub: uuid::Uuid) -> Value {
        json!({"sub": sub.to_string(), "aud": "authenticated", "role": "authenticated",
               "iss": format!("{}/auth/v1", self.jwks.uri()),
               "exp": chrono::Utc::now().timestamp() + 3600})
    }

    fn token(&self, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
        let key = match alg {
            Algorithm::RS256 => {
                EncodingKey::from_rsa_pem(&fixture("supabase_rs256.pem")).expect("rsa")
            }
            Algorithm::ES256 => {
                EncodingKey::from_ec_pem(&fixture("supabase_es256.pem")).expect("ec")
            }
            _ => EncodingKey::from_secret(HS_SECRET.as_bytes()),
        };
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_string);
        encode(&header, claims, &key).expect("sign")
    }

    async fn me(&self, token: &str) -> u16 {
        self.me_at(&self.app.base, token).await
    }

    /// `GET /v1/me` with `token` on the web instance at `base`: its status.
    async fn me_at(&self, base: &str, token: &str) -> u16 {
        let resp = self
            .app
            .http
            .get(format!("{base}/v1/me"))
            .bearer_auth(token)
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        if status == 200 {
            let body: Value = resp.json().await.expect("json");
            assert_eq!(body["id"], self.agent.to_string(), "the token's agency");
        }
        status
    }
}

#[tokio::test]
async fn supabase_access_tokens_open_the_api_for_their_agency_only_when_valid() {
    let w = world().await;
    let good = w.claims(w.user);
    let rs = w.token(Algorithm::RS256, Some("rsa-key-1"), &good);
    let es = w.token(Algorithm::ES256, Some("ec-key-1"), &good);
    let hs = w.token(Algorithm::HS256, None, &good);
    for t in [&rs, &es, &hs] {
        assert_eq!(w.me(t).await, 200);
    }
    let mut refused = Vec::new();
    let mut expired = good.clone();
    expired["exp"] = json!(chrono::Utc::now().timestamp() - 600);
    refused.push((
        "expired",
        w.token(Algorithm::RS256, Some("rsa-key-1"), &expired),
    ));
    let mut aud = good.clone();
    aud["aud"] = json!("anon");
    refused.push((
        "wrong audience",
        w.token(Algorithm::ES256, Some("ec-key-1"), &aud),
    ));
    let mut iss = good.clone();
    iss["iss"] = json!("https://other.supabase.co/auth/v1");
    refused.push(("wrong issuer", w.token(Algorithm::HS256, None, &iss)));
    let mut no_exp = good.clone();
    no_exp.as_object_mut().expect("object").remove("exp");
    refused.push(("no expiry", w.token(Algorithm::HS256, None, &no_exp)));
    refused.push((
        "unknown user",
        w.token(
            Algorithm::RS256,
            Some("rsa-key-1"),
            &w.claims(uuid::Uuid::new_v4()),
        ),
    ));
    // A signature that does not match: the payload of one token with another's signature.
    let (head_payload, _) = rs.rsplit_once('.').expect("parts");
    let other_sig = es.rsplit_once('.').expect("parts").1;
    refused.push(("wrong signature", format!("{head_payload}.{other_sig}")));
    // Right key id, wrong key kind: an RS256 header naming the EC key.
    refused.push((
        "key kind mismatch",
        w.token(Algorithm::RS256, Some("ec-key-1"), &good),
    ));
    // alg none.
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(good.to_string())
    );
    refused.push(("alg none", none));
    // Algorithm confusion: HS256 "signed" with the published RSA key material as the secret.
    let public = fixture("supabase_jwks.json");
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &good,
        &EncodingKey::from_secret(&public),
    )
    .expect("sign");
    refused.push(("HS256 with the public key", confused));
    for (what, token) in &refused {
        assert_eq!(w.me(token).await, 401, "{what}");
    }
    // Unknown key ids do not refetch the JWKS per token.
    let before = requests(&w.jwks).await;
    for i in 0..5 {
        let t = w.token(Algorithm::RS256, Some(&format!("made-up-{i}")), &good);
        assert_eq!(w.me(&t).await, 401);
    }
    assert_eq!(
        requests(&w.jwks).await,
        before,
        "no refetch within the refresh interval"
    );
    assert!(before <= 2, "{before} JWKS fetches");
}

#[tokio::test]
async fn a_supabase_session_signs_in_to_the_portal() {
    let w = world().await;
    let token = w.token(Algorithm::ES256, Some("ec-key-1"), &w.claims(w.user));
    let client = client();
    // Presented directly.
    let page = client
        .get(format!("{}/portal/", w.app.base))
        .bearer_auth(&token);
    assert_eq!(status_of(page).await, 200);
    // Exchanged for a portal session.
    let signed = client
        .post(format!("{}/portal/sign-in/supabase", w.app.base))
        .form(&[("access_token", token.as_str())])
        .send()
        .await
        .expect("send");
    assert_eq!(signed.status(), 303);
    assert!(
        signed.headers()["set-cookie"]
            .to_str()
            .expect("cookie")
            .starts_with("portal_session=")
    );
    let bad = client
        .post(format!("{}/portal/sign-in/supabase", w.app.base))
        .form(&[("access_token", "eyJ.not.a-token")]);
    assert_eq!(status_of(bad).await, 401);
}

#[tokio::test]
async fn supabase_tokens_must_name_the_project_as_their_issuer() {
    let w = world().await;
    let good = w.claims(w.user);
    let mut missing = good.clone();
    missing.as_object_mut().expect("object").remove("iss");
    let mut wrong = good.clone();
    wrong["iss"] = json!(format!("{}/auth/v2", w.jwks.uri()));
    let mut listed = good.clone();
    listed["iss"] = json!([format!("{}/auth/v1", w.jwks.uri())]);
    for (alg, kid) in [
        (Algorithm::RS256, Some("rsa-key-1")),
        (Algorithm::ES256, Some("ec-key-1")),
        (Algorithm::HS256, None),
    ] {
        assert_eq!(w.me(&w.token(alg, kid, &good)).await, 200, "{alg:?}");
        assert_eq!(
            w.me(&w.token(alg, kid, &missing)).await,
            401,
            "{alg:?} without iss"
        );
        assert_eq!(
            w.me(&w.token(alg, kid, &wrong)).await,
            401,
            "{alg:?} with another iss"
        );
        assert_eq!(
            w.me(&w.token(alg, kid, &listed)).await,
            401,
            "{alg:?} with iss as a list"
        );
    }
}

/// A slow Supabase delays only the sign-ins that need its keys: while a JWKS fetch for an unknown
/// key id hangs, a token with a known key id is answered.
#[tokio::test]
async fn a_slow_jwks_refetch_does_not_stall_sign_ins_with_known_keys() {
    let jwks = MockServer::start().await;
    let set: Value = serde_json::from_slice(&fixture("supabase_jwks.json")).expect("jwks");
    // The first fetch answers at once; every later one takes 3 s.
    Mock::given(path(JWKS_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(set.clone()))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&jwks)
        .await;
    Mock::given(path(JWKS_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(set)
                .set_delay(std::time::Duration::from_secs(3)),
        )
        .mount(&jwks)
        .await;
    let w = World {
        jwks,
        ..world().await
    };
    // A web instance that refetches for any unknown key id at once (not every 30 s).
    let config = std::sync::Arc::new(test_config(&[("SUPABASE_URL", &w.jwks.uri())]));
    let mut state = agent_meter::http::AppState::new(w.app.db.pool.clone(), config.clone());
    state.supabase = agent_meter::http::supabase::SupabaseAuth::from_config(&config)
        .map(|s| std::sync::Arc::new(s.with_min_refresh(std::time::Duration::ZERO)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(agent_meter::http::serve(listener, state, shutdown));

    let known = w.token(Algorithm::RS256, Some("rsa-key-1"), &w.claims(w.user));
    assert_eq!(w.me_at(&base, &known).await, 200, "keys fetched once");
    assert_eq!(requests(&w.jwks).await, 1);

    let unknown = w.token(Algorithm::RS256, Some("rotated-key"), &w.claims(w.user));
    let slow = tokio::spawn({
        let (client, url) = (w.app.http.clone(), format!("{base}/v1/me"));
        async move {
            client
                .get(url)
                .bearer_auth(unknown)
                .send()
                .await
                .expect("send")
                .status()
                .as_u16()
        }
    });
    eventually(10, "the slow JWKS fetch to start", || async {
        (requests(&w.jwks).await == 2).then_some(())
    })
    .await;
    assert_eq!(w.me_at(&base, &known).await, 200);
    assert!(
        !slow.is_finished(),
        "the known key was answered while the refetch for the unknown one was still pending"
    );
    assert_eq!(slow.await.expect("slow request"), 401, "no such key");
}

/// Issue 21: a cancelled agency's Supabase access tokens open neither the API nor the portal.
#[tokio::test]
async fn a_cancelled_agencys_supabase_tokens_are_refused() {
    let w = world().await;
    let token = w.token(Algorithm::HS256, None, &w.claims(w.user));
    assert_eq!(w.me(&token).await, 200);
    let email = w.app.db.email_of(w.agent).await;
    agent_meter::lifecycle::apply(
        &w.app.db.pool,
        &email,
        agent_meter::lifecycle::Move::Cancel(None),
        "test",
        w.app.config.billing_timezone,
        chrono::Utc::now(),
    )
    .await
    .expect("cancel");
    assert_eq!(w.me(&token).await, 401, "the API");
    let portal = w
        .app
        .http
        .post(format!("{}/portal/sign-in/supabase", w.app.base))
        .form(&[("access_token", token.as_str())])
        .send()
        .await
        .expect("send");
    assert_eq!(portal.status().as_u16(), 401, "the portal");
}
