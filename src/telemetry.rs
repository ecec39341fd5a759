//! Prometheus metrics (`GET /metrics`), through the `metrics` facade: counters and histograms are
//! recorded where things happen; queue depth and age are read from the database at scrape time.
//!
//! Names: `agent_meter_webhook_requests_total{type,status}`, `agent_meter_jobs_total{kind,outcome}`,
//! `agent_meter_job_duration_seconds{kind}`, `agent_meter_job_retries_total{kind}`,
//! `agent_meter_usage_recorded_total{metric}`, `agent_meter_provider_errors_total{provider,class}`,
//! `agent_meter_queue_depth{kind}`, `agent_meter_queue_oldest_age_seconds{kind}`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once; later calls reuse it.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
                ])
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            Some(handle)
        })
        .as_ref()
}

pub fn webhook(kind: &str, status: u16) {
    metrics::counter!("agent_meter_webhook_requests_total", "type" => kind.to_string(), "status" => status.to_string())
        .increment(1);
}

pub fn job(kind: &'static str, outcome: &'static str, seconds: f64) {
    metrics::counter!("agent_meter_jobs_total", "kind" => kind, "outcome" => outcome).increment(1);
    metrics::histogram!("agent_meter_job_duration_seconds", "kind" => kind).record(seconds);
    if outcome == "retry" {
        metrics::counter!("agent_meter_job_retries_total", "kind" => kind).increment(1);
    }
}

pub fn usage_recorded(metric: &str, rows: u64) {
    metrics::counter!("agent_meter_usage_recorded_total", "metric" => metric.to_string())
        .increment(rows);
}

pub fn provider_error(provider: &'static str, permanent: bool) {
    let class = if permanent { "permanent" } else { "transient" };
    metrics::counter!("agent_meter_provider_errors_total", "provider" => provider, "class" => class).increment(1);
}

pub fn queue(kind: &str, depth: i64, oldest_age_secs: f64) {
    metrics::gauge!("agent_meter_queue_depth", "kind" => kind.to_string()).set(depth as f64);
    metrics::gauge!("agent_meter_queue_oldest_age_seconds", "kind" => kind.to_string())
        .set(oldest_age_secs);
}
