//! Configuration tests: every variable read, checked, and named in its error.

use super::*;

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_server_credential_needs_the_public_url_it_signs_for() {
    let e = Config::from_vars(vars(&[("VAPI_SERVER_CREDENTIAL_ID", "cred-1")]))
        .expect_err("no PUBLIC_BASE_URL");
    assert!(
        e.to_string().starts_with("VAPI_SERVER_CREDENTIAL_ID"),
        "{e}"
    );
    let c = Config::from_vars(vars(&[
        ("VAPI_SERVER_CREDENTIAL_ID", " cred-1 "),
        ("PUBLIC_BASE_URL", "https://meter.example.com"),
    ]))
    .expect("config");
    assert_eq!(c.vapi_server_credential_id.as_deref(), Some("cred-1"));
}

#[test]
fn ops_tokens_name_their_operators() {
    let c = Config::from_vars(vars(&[
        ("OPS_TOKENS", "anna:tok-anna, ben@oncall:tok-ben"),
        ("OPS_TOKEN", "tok-shared"),
    ]))
    .expect("config");
    assert_eq!(c.operator(b"tok-anna"), Some("anna"));
    assert_eq!(c.operator(b"tok-ben"), Some("ben@oncall"));
    assert_eq!(c.operator(b"tok-shared"), Some("ops"));
    assert_eq!(c.operator(b"tok-"), None);
    assert_eq!(c.operator(b""), None);
    for bad in [
        "anna",
        ":s3cr3t",
        "an na:s3cr3t",
        "anna:s3cr3t,anna:s3cr3t",
        "anna:",
    ] {
        let e = Config::from_vars(vars(&[("OPS_TOKENS", bad)])).expect_err(bad);
        assert!(e.to_string().starts_with("OPS_TOKENS"), "{e}");
        assert!(!e.to_string().contains("s3cr3t"), "no token in errors: {e}");
    }
    assert!(
        Config::from_vars(vars(&[]))
            .expect("config")
            .ops_tokens
            .is_empty()
    );
}

#[test]
fn operators_sharing_a_token_stop_start_up_naming_them_not_the_token() {
    for (named, unnamed, who) in [
        ("anna:s3cr3t-shared,ben:s3cr3t-shared", None, "anna and ben"),
        ("anna:s3cr3t-shared", Some("s3cr3t-shared"), "anna and ops"),
        (
            "anna:s3cr3t-a,ben:s3cr3t-b,cleo:s3cr3t-b",
            None,
            "ben and cleo",
        ),
    ] {
        let mut v = vec![("OPS_TOKENS", named)];
        v.extend(unnamed.map(|t| ("OPS_TOKEN", t)));
        let e = Config::from_vars(vars(&v)).expect_err(named);
        assert_eq!(
            e.to_string(),
            format!("OPS_TOKENS: operators {who} share a token")
        );
        assert!(!e.to_string().contains("s3cr3t"), "no token in errors: {e}");
    }
    let e = Config::from_vars(vars(&[
        ("OPS_TOKENS", "ops:s3cr3t-a"),
        ("OPS_TOKEN", "s3cr3t-b"),
    ]))
    .expect_err("ops named twice");
    assert_eq!(e.var, "OPS_TOKEN");
    assert!(!e.to_string().contains("s3cr3t"), "{e}");
}

#[test]
fn short_ops_tokens_stop_start_up_in_production_only() {
    let short = "s3cr3t-23-characters-xx"[..23].to_string();
    let long = "s3cr3t-24-characters-xxx";
    assert_eq!(long.chars().count(), MIN_PRODUCTION_OPS_TOKEN);
    let named = format!("anna:{long},ben:{short}");
    let e = Config::from_vars(vars(&[("OPS_TOKENS", &named), ("APP_ENV", "production")]))
        .expect_err("short token");
    assert_eq!(e.var, "OPS_TOKENS");
    assert!(e.to_string().contains("operator ben"), "{e}");
    assert!(!e.to_string().contains("s3cr3t"), "no token in errors: {e}");
    let e = Config::from_vars(vars(&[("OPS_TOKEN", &short), ("APP_ENV", "Production")]))
        .expect_err("short token");
    assert_eq!(e.var, "OPS_TOKEN");
    assert!(e.to_string().contains("operator ops"), "{e}");
    assert!(
        Config::from_vars(vars(&[("OPS_TOKENS", &named)])).is_ok(),
        "short tokens are fine outside production"
    );
    let both = format!("anna:{long}");
    assert!(
        Config::from_vars(vars(&[
            ("OPS_TOKENS", &both),
            ("OPS_TOKEN", "s3cr3t-the-unnamed-ops-one"),
            ("APP_ENV", "production"),
        ]))
        .is_ok()
    );
}

#[test]
fn private_image_hosts_are_refused_in_production() {
    let both = [
        ("IMAGE_FETCH_ALLOW_PRIVATE", "true"),
        ("APP_ENV", "production"),
    ];
    let e = Config::from_vars(vars(&both)).expect_err("refused");
    assert!(e.to_string().contains("IMAGE_FETCH_ALLOW_PRIVATE"), "{e}");
    assert!(
        Config::from_vars(vars(&both[..1])).is_ok(),
        "fine for tests and demos"
    );
    assert!(Config::from_vars(vars(&both[1..])).is_ok());
}

#[test]
fn pool_size_follows_roles_unless_set() {
    let c = Config::from_vars(vars(&[])).expect("config");
    assert_eq!(c.pool_size(true, false, false), 7, "web: 6 + LISTEN");
    assert_eq!(
        c.pool_size(false, true, false),
        11,
        "worker: 8 + 2 + LISTEN"
    );
    assert_eq!(c.pool_size(false, false, true), 2, "clock");
    assert_eq!(c.pool_size(true, true, true), 19, "serve");
    assert_eq!(c.pool_size(false, false, false), 4, "a command");
    // 2 web + 3 worker + 1 clock fit a 60-connection server with room to spare.
    let deployment = 2 * c.pool_size(true, false, false)
        + 3 * c.pool_size(false, true, false)
        + c.pool_size(false, false, true);
    assert_eq!(deployment, 49);
    let c = Config::from_vars(vars(&[("WORKER_CONCURRENCY", "32")])).expect("config");
    assert_eq!(c.pool_size(false, true, false), 35);
    let c = Config::from_vars(vars(&[("DATABASE_MAX_CONNECTIONS", "6")])).expect("config");
    assert_eq!(c.pool_size(true, true, true), 6);
    assert!(Config::from_vars(vars(&[("DATABASE_MAX_CONNECTIONS", "lots")])).is_err());
}

#[test]
fn defaults_bind_to_loopback_8080_in_phoenix() {
    let c = Config::from_vars(vars(&[])).expect("defaults are valid");
    assert_eq!(c.bind_addr.to_string(), "127.0.0.1:8080");
    assert_eq!(c.billing_timezone, chrono_tz::America::Phoenix);
    assert_eq!(c.worker.orphan_window(), Duration::from_secs(30));
}

#[test]
fn port_means_all_interfaces() {
    let c =
        Config::from_vars(vars(&[("PORT", "5000"), ("BIND_ADDR", "127.0.0.1:1")])).expect("valid");
    assert_eq!(c.bind_addr.to_string(), "0.0.0.0:5000");
}

#[test]
fn errors_name_the_variable() {
    let e = Config::from_vars(vars(&[("BILLING_TIMEZONE", "Mars/Olympus")])).expect_err("invalid");
    assert_eq!(e.var, "BILLING_TIMEZONE");
    for bad in ["0", "-1", "soon", "7200"] {
        let e = Config::from_vars(vars(&[("WORKER_POLL_SECS", bad)])).expect_err("invalid");
        assert!(e.to_string().starts_with("WORKER_POLL_SECS:"), "{e}");
    }
    let c = Config::from_vars(vars(&[("WORKER_CONCURRENCY", "5")])).expect("config");
    assert_eq!(c.worker.fetch_batch, 10, "twice the concurrency");
    let c = Config::from_vars(vars(&[("WORKER_FETCH_BATCH", "3")])).expect("config");
    assert_eq!(c.worker.fetch_batch, 3);
    let c = Config::from_vars(vars(&[("WORKER_POLL_SECS", "0.25")])).expect("config");
    assert_eq!(c.worker.poll, Duration::from_millis(250));
    let e = Config::from_vars(vars(&[("WORKER_CONCURRENCY", "many")])).expect_err("invalid");
    assert!(e.to_string().starts_with("WORKER_CONCURRENCY:"), "{e}");
    let e = Config::from_vars(vars(&[("LOG_FORMAT", "xml")])).expect_err("invalid");
    assert_eq!(e.var, "LOG_FORMAT");
}

#[test]
fn serving_needs_a_vapi_secret_and_secrets_stay_redacted() {
    let c = Config::from_vars(vars(&[])).expect("valid");
    assert_eq!(
        c.require_webhook_secret().expect_err("invalid").var,
        "VAPI_WEBHOOK_SECRET"
    );
    let c = Config::from_vars(vars(&[("VAPI_HMAC_SECRET", "hunter2")])).expect("valid");
    assert!(c.require_webhook_secret().is_ok());
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn job_timeout_must_fit_in_the_orphan_window() {
    let e = Config::from_vars(vars(&[("JOB_TIMEOUT_SECS", "30")])).expect_err("invalid");
    assert_eq!(e.var, "JOB_TIMEOUT_SECS");
}

#[test]
fn stripe_is_off_without_its_key_and_its_variables_are_checked() {
    let c = Config::from_vars(vars(&[("STRIPE_DAYS_UNTIL_DUE", "30")])).expect("config");
    assert!(c.stripe.is_none() && c.stripe_webhook_secrets.is_empty());
    let c = Config::from_vars(vars(&[
        ("STRIPE_API_KEY", "sk_test_1"),
        ("STRIPE_WEBHOOK_SECRET", " whsec_a , whsec_b ,"),
    ]))
    .expect("config");
    let stripe = c.stripe.expect("stripe");
    assert_eq!(
        (stripe.base_url.as_str(), stripe.days_until_due),
        ("https://api.stripe.com", 14)
    );
    assert_eq!(c.stripe_webhook_secrets.len(), 2);
    for (var, value) in [
        ("STRIPE_WEBHOOK_SECRET", "not-a-whsec"),
        ("STRIPE_WEBHOOK_SECRET", "whsec_"),
        ("STRIPE_DAYS_UNTIL_DUE", "0"),
        ("STRIPE_DAYS_UNTIL_DUE", "366"),
        ("STRIPE_DAYS_UNTIL_DUE", "two weeks"),
        ("STRIPE_BASE_URL", "not a url"),
        ("OPS_DISCORD_WEBHOOK_URL", "discord"),
    ] {
        let e = Config::from_vars(vars(&[("STRIPE_API_KEY", "sk_test_1"), (var, value)]))
            .expect_err(value);
        let text = e.to_string();
        assert!(text.starts_with(var), "{text}");
        assert!(!text.contains("sk_test_1"), "{text}");
    }
}

#[test]
fn outbound_webhooks_variables_are_checked() {
    let c = Config::from_vars(vars(&[])).expect("config");
    assert_eq!(c.outbound_retry_schedule.len(), 8);
    assert!(!c.outbound_allow_private);
    assert_eq!(c.outbound_slow_answer, Duration::from_secs(1));
    assert_eq!(c.outbound_concurrency, 64);
    let c = Config::from_vars(vars(&[("OUTBOUND_RETRY_SCHEDULE", " 0, 2 ")])).expect("config");
    assert_eq!(
        c.outbound_retry_schedule,
        vec![Duration::ZERO, Duration::from_secs(2)]
    );
    for (var, value) in [
        ("OUTBOUND_RETRY_SCHEDULE", "5,soon"),
        ("OUTBOUND_RETRY_SCHEDULE", "5,,10"),
        ("OUTBOUND_RETRY_SCHEDULE", "-1"),
        ("OUTBOUND_RETRY_SCHEDULE", "86401"),
        ("OUTBOUND_ALLOW_PRIVATE", "maybe"),
        ("OUTBOUND_SLOW_ANSWER_MS", "0"),
        ("OUTBOUND_SLOW_ANSWER_MS", "15001"),
        ("OUTBOUND_SLOW_ANSWER_MS", "1s"),
        ("OUTBOUND_CONCURRENCY", "-2"),
    ] {
        let e = Config::from_vars(vars(&[(var, value)])).expect_err(value);
        assert!(e.to_string().starts_with(var), "{e}");
    }
    let e = Config::from_vars(vars(&[
        ("OUTBOUND_ALLOW_PRIVATE", "true"),
        ("APP_ENV", "production"),
    ]))
    .expect_err("refused in production");
    assert!(e.to_string().starts_with("OUTBOUND_ALLOW_PRIVATE"), "{e}");
}
