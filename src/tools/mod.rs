//! The billable tools: one registry, one module per tool.
//!
//! A tool is one module under `src/tools/` that implements [`Tool`]: its name and aliases, its
//! arguments and their validation, the function declaration the assistant gets, its job, its
//! finding kind, metric and report category, its provider client (or a shared one such as the
//! ArcGIS point query), its environment variables, its demo stand-in and its spoken texts.
//! [`registry`] lists them, one line each; parsing tool calls, enqueueing, the assistant's tool
//! list, worker registration, the start-up checks, reports, the portal, the demo and
//! `tools list|env` all iterate it. Nothing outside a tool's module and its registry line names
//! a tool (a test reads `src/` for it), and an unknown name is an error, never a default tool.
//!
//! Tool calls are read in every shape Vapi uses: `{id, name, arguments}`,
//! `{id, type, function: {name, arguments}}`, arguments as an object or a JSON string, a tool's
//! aliases (the seed deployment's names), and the legacy `function-call` (`{name, parameters}`).

mod context;
pub mod flood_zone_lookup;
pub mod place;
pub mod solar_ocr_scan;
pub mod water_lookup;

pub use context::{CallContext, Finding};
pub use place::Place;

use std::sync::LazyLock;

use chrono::Utc;
use futures::future::BoxFuture;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::{
    config::{Config, ConfigError, Setting},
    jobs::{Deps, Job},
};

/// Every billable tool, one line each. Adding a tool: README, "Adding a tool".
pub fn registry() -> &'static [ToolSpec] {
    static REGISTRY: LazyLock<Vec<ToolSpec>> = LazyLock::new(|| {
        vec![
            ToolSpec::of::<solar_ocr_scan::SolarOcrScan>(),
            ToolSpec::of::<water_lookup::WaterLookup>(),
            ToolSpec::of::<flood_zone_lookup::FloodZoneLookup>(),
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

/// How reports, the money view and the portal group a tool's usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// Reads an image or document (priced per scan).
    Scan,
    /// Looks a property up in a public register or map.
    Lookup,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Scan => "scan",
            Category::Lookup => "lookup",
        }
    }
}

/// The metrics of every registered tool in `category` (reports and the portal sum them).
pub fn metrics_of(category: Category) -> Vec<&'static str> {
    registry()
        .iter()
        .filter(|t| t.category == category)
        .map(|t| t.metric)
        .collect()
}

/// The demo's stand-in for a tool's provider (`agent-meter demo`): the demo points `url` at its
/// stand-in server, sets the tool's secret settings to `"stand-in"`, and answers `route` (below
/// that URL, axum path syntax, any method) with `answer()`.
pub struct StandIn {
    pub url: &'static Setting,
    pub route: &'static str,
    pub answer: fn() -> Value,
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
    /// How reports and the portal group its usage.
    const CATEGORY: Category;
    /// The environment variables it reads (its provider's URL, key, ...).
    const SETTINGS: &'static [Setting];

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

    /// The demo's stand-in for its provider.
    fn stand_in() -> StandIn;

    /// The plan for `arguments` in a test call (each tool's own argument tests use it).
    #[cfg(test)]
    fn plan(arguments: Value) -> Result<Vec<u8>, String>
    where
        Self: Sized,
    {
        ToolSpec::of::<Self>().plan(&arguments, &tests::call())
    }
}

/// A registered tool, type-erased so the registry is one list.
pub struct ToolSpec {
    pub name: &'static str,
    /// Its module below `src/tools/` (where everything of the tool lives).
    pub module: &'static str,
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
    pub category: Category,
    pub settings: &'static [Setting],
    pub stand_in: fn() -> StandIn,
    parameters: fn() -> Value,
    plan: fn(Value, &CallContext) -> Result<Vec<u8>, String>,
    say: fn(&Value) -> Option<String>,
    example: fn() -> Value,
    supervise: fn(Deps, watch::Receiver<bool>) -> BoxFuture<'static, ()>,
}

impl ToolSpec {
    pub fn of<T: Tool>() -> Self {
        // `agent_meter::tools::<module>::<Type>`.
        let module = std::any::type_name::<T>()
            .split("::")
            .nth(2)
            .unwrap_or_default();
        Self {
            name: T::NAME,
            module,
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
            category: T::CATEGORY,
            settings: T::SETTINGS,
            stand_in: T::stand_in,
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

/// The start-up check of every role: each registered tool's variables are usable (required ones
/// set, URLs that parse, decimals that read); else an error naming the variable.
pub fn check_settings(config: &Config) -> Result<(), ConfigError> {
    registry()
        .iter()
        .flat_map(|t| t.settings)
        .try_for_each(|s| config.check_setting(s))
}

/// `.env.example`'s block of tool variables, from the registry (`agent-meter tools env`).
pub fn env_example() -> String {
    registry()
        .iter()
        .map(|t| {
            crate::config::settings::env_example(
                &format!("{} ({}): {}", t.name, t.provider, t.description),
                t.settings,
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
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
pub(crate) mod tests {
    use std::collections::HashSet;

    use uuid::Uuid;

    use super::*;

    pub(crate) fn call() -> CallContext {
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
        for t in registry() {
            let args = t.example("1 Main St");
            for name in std::iter::once(&t.name).chain(t.aliases) {
                let msg = json!({"toolCallList": [
                    {"id": "t1", "name": name, "arguments": args},
                    {"id": "t2", "type": "function", "function": {"name": name,
                     "arguments": args.to_string()}},
                    {"id": "t3", "name": name, "parameters": args},
                    {"name": "no id"}
                ]});
                let calls = from_message(&msg);
                assert_eq!(calls.len(), 3, "{name}");
                for c in calls {
                    let found = find(&c.name).expect("registered");
                    assert_eq!(found.name, t.name);
                    found.plan(&c.arguments, &call()).expect("valid");
                }
            }
        }
    }

    #[test]
    fn unknown_names_pick_no_tool() {
        assert!(find("crystal_ball").is_none());
        assert!(find("").is_none());
        assert!(canonical_names(&["crystal_ball".into()]).is_err());
        let aliases: Vec<String> = registry()
            .iter()
            .map(|t| t.aliases.first().unwrap_or(&t.name).to_string())
            .collect();
        let names: Vec<String> = registry().iter().map(|t| t.name.to_string()).collect();
        assert_eq!(canonical_names(&aliases).expect("known"), names);
        for t in registry() {
            assert!(t.plan(&json!("{not json"), &call()).is_err(), "{}", t.name);
        }
    }

    #[test]
    fn an_agent_gets_only_its_tools() {
        assert_eq!(of_agent(None).len(), registry().len());
        let last = registry()[registry().len() - 1].name;
        let only = of_agent(Some(&[last.to_string()]));
        assert_eq!(only.iter().map(|t| t.name).collect::<Vec<_>>(), [last]);
        assert!(of_agent(Some(&[])).is_empty());
    }
}
