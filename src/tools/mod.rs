//! The billable tools: one registry, one module per tool.
//!
//! A tool is a job module that implements [`Tool`]: its name and aliases, its arguments and their
//! validation, the function declaration the assistant gets, its finding kind, metric, provider
//! and spoken texts. [`registry`] lists them, one line each; parsing tool calls, enqueueing, the
//! assistant's tool list, worker registration, the start-up check and `tools list` all iterate
//! it. Nothing outside a tool's module names a tool, and an unknown name is an error, never a
//! default tool.
//!
//! Tool calls are read in every shape Vapi uses: `{id, name, arguments}`,
//! `{id, type, function: {name, arguments}}`, arguments as an object or a JSON string, a tool's
//! aliases (the seed deployment's names), and the legacy `function-call` (`{name, parameters}`).

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::watch;
use uuid::Uuid;

use crate::jobs::{
    Deps, Job, flood_zone_lookup::FloodZoneLookup, solar_ocr_scan::SolarOcrScan,
    water_lookup::WaterLookup,
};

/// Every billable tool, one line each. Adding a tool: README, "Adding a tool".
pub fn registry() -> &'static [ToolSpec] {
    static REGISTRY: LazyLock<Vec<ToolSpec>> = LazyLock::new(|| {
        vec![
            ToolSpec::of::<SolarOcrScan>(),
            ToolSpec::of::<WaterLookup>(),
            ToolSpec::of::<FloodZoneLookup>(),
        ]
    });
    &REGISTRY
}

/// The queue names of every job kind, tools first (checked against `jobs/README.md` in tests).
pub fn queues() -> Vec<&'static str> {
    registry()
        .iter()
        .map(|t| t.queue)
        .chain(crate::jobs::QUEUES.iter().copied())
        .collect()
}

/// What a tool call is made in: the agent, its caller's lead, the call.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub agent_id: Uuid,
    pub lead_id: Option<Uuid>,
    pub tool_call_id: String,
    /// Vapi's id of the call the tool was called in (its finding is shown with that call).
    pub vapi_call_id: Option<String>,
    pub requested_at: Option<DateTime<Utc>>,
}

/// A billable tool: a job (its queue and attempts) plus everything the assistant and billing
/// need to know about it.
pub trait Tool: Job {
    /// The canonical name: what the assistant calls and agents are given.
    const NAME: &'static str;
    /// Other names accepted in tool calls (older deployments' names).
    const ALIASES: &'static [&'static str];
    /// What the assistant is told the tool does.
    const DESCRIPTION: &'static str;
    /// The system prompt's hint on when to use it.
    const WHEN_TO_USE: &'static str;
    /// `risk_assessments.kind` of its finding (kept in `finding_kinds`).
    const KIND: &'static str;
    /// `agent_usage_metrics.metric_type` of its usage row (priced in `pricing_config`).
    const METRIC: &'static str;
    /// The outside API it calls.
    const PROVIDER: &'static str;
    /// What the caller hears while it runs ("The flood check is running; ...").
    const RUNNING: &'static str;
    /// What the caller hears when it failed for good.
    const FAILED: &'static str;

    /// Its arguments as the assistant sends them.
    type Args: DeserializeOwned;

    /// JSON schema of [`Self::Args`] for the function declaration.
    fn parameters() -> Value;

    /// Checks arguments beyond their shape; the error is said back to the assistant.
    fn validate(args: &Self::Args) -> Result<(), String>;

    /// The job for a valid call.
    fn job(args: Self::Args, call: &CallContext) -> Self;

    /// What the caller hears about a saved finding (`None`: unreadable, say [`Self::RUNNING`]).
    fn say(finding: &Value) -> Option<String>;

    /// Valid example arguments (the demo calls every tool with them).
    fn example() -> Value;
}

/// A registered tool, type-erased so the registry is one list.
pub struct ToolSpec {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub description: &'static str,
    pub when_to_use: &'static str,
    pub kind: &'static str,
    pub metric: &'static str,
    pub provider: &'static str,
    pub queue: &'static str,
    pub max_attempts: usize,
    pub running: &'static str,
    pub failed: &'static str,
    parameters: fn() -> Value,
    plan: fn(Value, &CallContext) -> Result<Vec<u8>, String>,
    say: fn(&Value) -> Option<String>,
    example: fn() -> Value,
    supervise: fn(Deps, watch::Receiver<bool>) -> BoxFuture<'static, ()>,
}

impl ToolSpec {
    pub fn of<T: Tool>() -> Self {
        Self {
            name: T::NAME,
            aliases: T::ALIASES,
            description: T::DESCRIPTION,
            when_to_use: T::WHEN_TO_USE,
            kind: T::KIND,
            metric: T::METRIC,
            provider: T::PROVIDER,
            queue: T::QUEUE,
            max_attempts: T::MAX_ATTEMPTS,
            running: T::RUNNING,
            failed: T::FAILED,
            parameters: T::parameters,
            plan: plan::<T>,
            say: T::say,
            example: T::example,
            supervise: |deps, shutdown| {
                Box::pin(crate::jobs::supervise::supervise::<T>(deps, shutdown))
            },
        }
    }

    /// The function declaration a transient assistant carries.
    pub fn declaration(&self) -> Value {
        json!({"type": "function", "function": {
            "name": self.name,
            "description": self.description,
            "parameters": (self.parameters)(),
        }})
    }

    /// True when `name` is this tool's name or one of its aliases.
    pub fn answers_to(&self, name: &str) -> bool {
        self.name == name || self.aliases.contains(&name)
    }

    /// Validates a call's arguments and encodes its job (JSON, as queued).
    pub fn plan(&self, arguments: &Value, call: &CallContext) -> Result<Vec<u8>, String> {
        let arguments = match arguments {
            Value::String(s) if s.trim().is_empty() => Value::Object(Default::default()),
            Value::String(s) => {
                serde_json::from_str(s).map_err(|e| format!("arguments are not JSON: {e}"))?
            }
            Value::Null => Value::Object(Default::default()),
            other => other.clone(),
        };
        (self.plan)(arguments, call)
    }

    /// What the caller hears about a saved finding.
    pub fn say(&self, finding: &Value) -> String {
        (self.say)(finding).unwrap_or_else(|| self.running.to_string())
    }

    /// Valid example arguments, with `address` when the tool takes one.
    pub fn example(&self, address: &str) -> Value {
        let mut args = (self.example)();
        if let Some(obj) = args.as_object_mut()
            && (self.parameters)()["properties"].get("address").is_some()
        {
            obj.insert("address".into(), address.into());
        }
        args
    }

    /// Runs this tool's worker until shutdown (see [`crate::jobs::supervise::supervise`]).
    pub fn supervise(&self, deps: Deps, shutdown: watch::Receiver<bool>) -> BoxFuture<'static, ()> {
        (self.supervise)(deps, shutdown)
    }
}

/// Numbers the model sent as strings (`"latitude": "34.54"`), read as the numbers they spell,
/// for the properties the tool declares as `number` or `integer`; anything else is left for the
/// tool's own parsing to accept or refuse.
fn numbers_spelled_as_strings(arguments: &mut Value, parameters: &Value) {
    let (Some(args), Some(props)) = (
        arguments.as_object_mut(),
        parameters["properties"].as_object(),
    ) else {
        return;
    };
    for (name, schema) in props {
        let numeric = matches!(schema["type"].as_str(), Some("number" | "integer"));
        let Some(Value::String(text)) = args.get(name).filter(|_| numeric) else {
            continue;
        };
        let number = text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .and_then(serde_json::Number::from_f64);
        if let Some(n) = number {
            args.insert(name.clone(), Value::Number(n));
        }
    }
}

fn plan<T: Tool>(mut arguments: Value, call: &CallContext) -> Result<Vec<u8>, String> {
    numbers_spelled_as_strings(&mut arguments, &T::parameters());
    let args: T::Args = serde_json::from_value(arguments)
        .map_err(|e| format!("bad arguments for {}: {e}", T::NAME))?;
    T::validate(&args).map_err(|e| format!("{}: {e}", T::NAME))?;
    serde_json::to_vec(&T::job(args, call)).map_err(|e| format!("{}: {e}", T::NAME))
}

/// The default price of the tool's metric in force today (in the billing time zone).
pub async fn price_today(
    conn: &mut sqlx::PgConnection,
    tool: &ToolSpec,
    tz: chrono_tz::Tz,
) -> Result<Option<rust_decimal::Decimal>, sqlx::Error> {
    let today = Utc::now().with_timezone(&tz).date_naive();
    crate::store::pricing::default_price_on(conn, tool.metric, today).await
}

/// Adds every registered tool's finding kind to `finding_kinds` (run by `migrate`, so a new tool
/// needs no migration of its own).
pub async fn sync_kinds(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    let kinds: Vec<&str> = registry().iter().map(|t| t.kind).collect();
    crate::store::tools::add_kinds(pool, &kinds).await
}

/// The start-up check of every web and worker: each registered tool has its finding kind allowed
/// and a default price in force today; else an error naming each tool and what it lacks.
pub async fn check(pool: &sqlx::PgPool, tz: chrono_tz::Tz) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    let mut problems = Vec::new();
    for t in registry() {
        if !crate::store::tools::kind_allowed(&mut conn, t.kind).await? {
            problems.push(format!(
                "{}: finding kind {:?} is not in finding_kinds (run `agent-meter migrate`)",
                t.name, t.kind
            ));
        }
        if price_today(&mut conn, t, tz).await?.is_none() {
            problems.push(format!(
                "{}: no default {} price in force today \
                 (`agent-meter prices set {} <USD> --from <YYYY-MM-DD> --unit <unit>`)",
                t.name, t.metric, t.metric
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("registered tools cannot run: {}", problems.join("; "))
    }
}

/// Latitude and longitude in range (WGS 84 degrees), for tools that take a point.
pub fn check_coordinates(latitude: f64, longitude: f64) -> Result<(), String> {
    if (-90.0..=90.0).contains(&latitude) && (-180.0..=180.0).contains(&longitude) {
        Ok(())
    } else {
        Err("latitude/longitude out of range".into())
    }
}

/// The registered tool called `name` (or aliased so).
pub fn find(name: &str) -> Option<&'static ToolSpec> {
    registry().iter().find(|t| t.answers_to(name))
}

/// The tools an agent has: `allowed` names them (`None`: every registered tool).
pub fn of_agent(allowed: Option<&[String]>) -> Vec<&'static ToolSpec> {
    registry()
        .iter()
        .filter(|t| allowed.is_none_or(|names| names.iter().any(|n| n == t.name)))
        .collect()
}

/// Checks a list of tool names (for `agents set --tools`): every name registered, canonical.
pub fn canonical_names(names: &[String]) -> Result<Vec<String>, String> {
    names
        .iter()
        .map(|n| {
            find(n.trim()).map(|t| t.name.to_string()).ok_or_else(|| {
                let known: Vec<&str> = registry().iter().map(|t| t.name).collect();
                format!("unknown tool {n:?} (known: {})", known.join(", "))
            })
        })
        .collect()
}

/// One tool call as received.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: Value,
}

/// Reads `message.toolCallList` (or `toolCalls`); entries without an id are skipped.
pub fn from_message(message: &Value) -> Vec<ToolCall> {
    let list = message
        .get("toolCallList")
        .or_else(|| message.get("toolCalls"))
        .and_then(Value::as_array);
    list.into_iter()
        .flatten()
        .filter_map(|item| {
            let id = item.get("id")?.as_str()?.to_string();
            let function = item.get("function");
            let name = item
                .get("name")
                .or_else(|| function.and_then(|f| f.get("name")))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let arguments = item
                .get("arguments")
                .or_else(|| function.and_then(|f| f.get("arguments")))
                .or_else(|| item.get("parameters"))
                .cloned()
                .unwrap_or(Value::Null);
            Some(ToolCall {
                id,
                name,
                arguments,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn call() -> CallContext {
        CallContext {
            agent_id: Uuid::nil(),
            lead_id: None,
            tool_call_id: "t1".into(),
            vapi_call_id: Some("call-1".into()),
            requested_at: None,
        }
    }

    #[test]
    fn names_and_aliases_are_unique_and_every_tool_is_complete() {
        let mut seen = HashSet::new();
        let mut queues = HashSet::new();
        for t in registry() {
            for name in std::iter::once(&t.name).chain(t.aliases) {
                assert!(seen.insert(*name), "{name} names two tools");
            }
            assert!(queues.insert(t.queue), "{} shares a queue", t.name);
            for (what, text) in [
                ("description", t.description),
                ("when_to_use", t.when_to_use),
                ("kind", t.kind),
                ("metric", t.metric),
                ("provider", t.provider),
                ("running", t.running),
                ("failed", t.failed),
            ] {
                assert!(!text.trim().is_empty(), "{} has no {what}", t.name);
            }
            assert!(t.max_attempts >= 3, "{} leaves no headroom", t.name);
            let d = t.declaration();
            assert_eq!(d["function"]["name"], t.name);
            assert_eq!(d["function"]["parameters"]["type"], "object");
            // Its example is valid, and every required parameter is declared.
            t.plan(&t.example("1 Main St"), &call())
                .unwrap_or_else(|e| panic!("{}'s example: {e}", t.name));
            for required in d["function"]["parameters"]["required"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let name = required.as_str().expect("name");
                assert!(
                    d["function"]["parameters"]["properties"]
                        .get(name)
                        .is_some(),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn every_shape_and_alias_is_read() {
        let msg = json!({"toolCallList": [
            {"id": "t1", "name": "solar-ocr-scanner", "arguments": {"image_url": "https://x/y.jpg"}},
            {"id": "t2", "type": "function", "function": {"name": "adwr-lookup",
             "arguments": "{\"latitude\": 35.2, \"longitude\": -111.6}"}},
            {"name": "no id"}
        ]});
        let calls = from_message(&msg);
        assert_eq!(calls.len(), 2);
        let solar = find(&calls[0].name).expect("solar alias");
        assert_eq!(solar.name, "solar_ocr_scan");
        assert!(solar.plan(&calls[0].arguments, &call()).is_ok());
        let water = find(&calls[1].name).expect("water alias");
        assert_eq!(water.name, "water_lookup");
        let job: Value =
            serde_json::from_slice(&water.plan(&calls[1].arguments, &call()).expect("water"))
                .expect("json");
        assert_eq!(job["radius_m"], 805);
    }

    #[test]
    fn unknown_names_pick_no_tool_and_bad_arguments_are_errors() {
        assert!(find("crystal_ball").is_none());
        assert!(find("").is_none());
        assert!(canonical_names(&["crystal_ball".into()]).is_err());
        assert_eq!(
            canonical_names(&["adwr-lookup".into(), "flood_zone_lookup".into()]).expect("known"),
            vec!["water_lookup".to_string(), "flood_zone_lookup".to_string()]
        );
        let plan = |name: &str, arguments: Value| find(name).expect(name).plan(&arguments, &call());
        assert!(plan("solar_ocr_scan", json!({})).is_err());
        assert!(plan("solar_ocr_scan", json!({"image_base64": "AAAA"})).is_err());
        assert!(plan("solar_ocr_scan", json!({"image_url": "file:///etc/passwd"})).is_err());
        assert!(plan("water_lookup", json!({"latitude": 135, "longitude": 1})).is_err());
        assert!(plan("water_lookup", json!("{not json")).is_err());
        assert!(
            plan(
                "water_lookup",
                json!({"latitude": 35, "longitude": -111, "radius_m": -1})
            )
            .is_err()
        );
        assert!(plan("flood_zone_lookup", json!({"latitude": 35})).is_err());
        assert!(
            plan(
                "flood_zone_lookup",
                json!({"latitude": 35, "longitude": 200})
            )
            .is_err()
        );
        assert!(
            plan(
                "flood_zone_lookup",
                json!({"latitude": "x", "longitude": 1})
            )
            .is_err()
        );
        // Numbers spelled as strings are the numbers they spell; junk and infinities are not.
        assert!(
            plan(
                "water_lookup",
                json!({"latitude": " 34.54", "longitude": "-112.47"})
            )
            .is_ok()
        );
        assert!(
            plan(
                "water_lookup",
                json!({"latitude": "1e999", "longitude": "1"})
            )
            .is_err()
        );
        assert!(plan("water_lookup", json!({"latitude": "NaN", "longitude": "1"})).is_err());
        assert!(
            plan(
                "water_lookup",
                json!({"latitude": "34.5x", "longitude": "1"})
            )
            .is_err()
        );
        assert!(
            plan(
                "flood_zone_lookup",
                json!({"latitude": 33.4, "longitude": -112.0})
            )
            .is_ok()
        );
        assert!(
            plan(
                "solar_ocr_scan",
                json!({"image_base64": "AAAA", "mime_type": "image/png"})
            )
            .is_ok()
        );
    }

    #[test]
    fn an_agent_gets_only_its_tools() {
        assert_eq!(of_agent(None).len(), registry().len());
        let only = of_agent(Some(&["flood_zone_lookup".to_string()]));
        assert_eq!(
            only.iter().map(|t| t.name).collect::<Vec<_>>(),
            ["flood_zone_lookup"]
        );
        assert!(of_agent(Some(&[])).is_empty());
    }
}
