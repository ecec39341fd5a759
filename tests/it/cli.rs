//! The `agent-meter` binary: help on every command, configuration errors, seed guard.

use std::process::Command;

use crate::helpers::*;

fn agent_meter() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agent-meter"));
    // Run in an empty directory so a developer's .env cannot leak in.
    cmd.current_dir(std::env::temp_dir());
    for var in [
        "DATABASE_URL",
        "VAPI_WEBHOOK_SECRET",
        "VAPI_HMAC_SECRET",
        "APP_ENV",
        "PORT",
        "BIND_ADDR",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

#[test]
fn every_command_has_help() {
    for sub in [
        None,
        Some("migrate"),
        Some("seed"),
        Some("serve"),
        Some("web"),
        Some("worker"),
        Some("clock"),
    ] {
        let mut cmd = agent_meter();
        if let Some(s) = sub {
            cmd.arg(s);
        }
        let out = cmd.arg("--help").output().expect("run");
        assert!(out.status.success(), "{sub:?} --help");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage: agent-meter"), "{sub:?}: {text}");
    }
}

#[test]
fn a_bad_variable_is_named_and_exits_2() {
    let out = agent_meter()
        .arg("migrate")
        .env("BILLING_TIMEZONE", "Mars/Olympus_Mons")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("BILLING_TIMEZONE"), "{err}");
}

#[test]
fn web_refuses_to_start_without_a_vapi_secret() {
    let out = agent_meter()
        .arg("web")
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:9/none")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("VAPI_WEBHOOK_SECRET"), "{err}");
}

#[tokio::test]
async fn seed_refuses_production_and_migrate_then_seed_work() {
    let db = TestDb::empty().await;
    let out = agent_meter()
        .arg("seed")
        .env("APP_ENV", "production")
        .env("DATABASE_URL", &db.url)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("production"));

    for sub in ["migrate", "seed", "seed"] {
        let out = agent_meter()
            .arg(sub)
            .env("DATABASE_URL", &db.url)
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{sub}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(db.count("SELECT count(*) FROM agents").await, 5);
}
