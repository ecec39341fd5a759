//! The answer to Vapi's `assistant-request`: the agent's own Vapi assistant with per-call
//! overrides, or a transient assistant carrying the agent's prompt or the default persona, its
//! call length, the caller details Vapi extracts after the call, and its warm transfer.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    store::agents::Agent,
    tools,
    vapi::transfer::{self, Hours},
};

/// The default persona: bilingual, Arizona, insurance. `{agency_name}` is filled in.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are the friendly bilingual (Spanish and English) phone \
receptionist for {agency_name}, an independent insurance agency in Arizona. Answer in the caller's \
language; switch naturally if they mix Spanish and English. Help with home, auto, renters and \
landlord insurance questions, collect the caller's name, property address and the best time to \
call back, and never quote a final premium: a licensed agent of {agency_name} confirms every quote. \
Arizona matters: ask whether the home has rooftop solar panels (owned, leased or financed) and \
whether it is on a private well or city water. Keep answers short and warm.";

/// The default first sentence when the agent has no greeting of its own.
pub fn default_greeting(agency_name: &str) -> String {
    format!("Thanks for calling {agency_name}. ¡Hola! How can I help you today?")
}

/// The system prompt for an agent: its own, else the default persona followed by when to use
/// each of the agent's tools; `{agency_name}` filled.
pub fn system_prompt(agent: &Agent) -> String {
    let own = agent
        .system_prompt
        .as_deref()
        .filter(|p| !p.trim().is_empty());
    let prompt = match own {
        Some(own) => own.to_string(),
        None => std::iter::once(DEFAULT_SYSTEM_PROMPT)
            .chain(
                tools::of_agent(agent.tools.as_deref())
                    .iter()
                    .map(|t| t.when_to_use),
            )
            .collect::<Vec<_>>()
            .join(" "),
    };
    let prompt = match agent.transfer_number.as_deref().filter(|n| !n.is_empty()) {
        Some(_) => format!("{prompt} {TRANSFER_WHEN}"),
        None => prompt,
    };
    prompt.replace("{agency_name}", &agent.agency_name)
}

/// Added to the prompt of an agent with a transfer number (its own prompt too: it chose to
/// have transfers).
pub const TRANSFER_WHEN: &str = "When the caller asks for a person, or needs a licensed agent now (a claim in progress, a binding decision), use the transferCall tool. If it says the agents are not available, take a message instead: name, number, what they need and the best time to call back.";

fn greeting(agent: &Agent) -> String {
    agent
        .greeting
        .as_deref()
        .filter(|g| !g.trim().is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| default_greeting(&agent.agency_name))
}

/// The function tools the agent's transient assistant may call (answered by our `tool-calls`
/// handler): exactly the agent's tools, from the registry.
pub fn tool_definitions(agent: &Agent) -> Value {
    Value::Array(
        tools::of_agent(agent.tools.as_deref())
            .iter()
            .map(|t| t.declaration())
            .collect(),
    )
}

/// Vapi's own `transferCall` tool when the agent has a transfer number (not a billable tool, so
/// not in the registry). With hours `always` the number is its destination and Vapi transfers
/// by itself; with limited hours it has no destination, so Vapi asks us with a
/// `transfer-destination-request` and we apply the hours then. Hours that cannot be read
/// (edited by hand in the database) are treated as limited: we answer, and refuse.
pub fn transfer_tool(agent: &Agent) -> Option<Value> {
    let number = agent.transfer_number.as_deref().filter(|n| !n.is_empty())?;
    let hours = agent.transfer_hours.as_deref().map(str::parse::<Hours>);
    let destinations = match hours {
        Some(Ok(Hours::Always)) => json!([transfer::destination(number)]),
        _ => json!([]),
    };
    Some(json!({
        "type": "transferCall",
        "destinations": destinations,
        "messages": [{"type": "request-failed", "content": "I couldn't connect you right now; let me take a message and an agent will call you back. No pude comunicarle ahora; le tomo un mensaje y un agente le devolverá la llamada."}],
    }))
}

/// The caller details Vapi extracts from the transcript after the call (`artifactPlan.
/// structuredOutputs`, the spec's replacement for the deprecated `analysisPlan.
/// structuredDataPlan`); they arrive in the end-of-call report's `artifact.structuredOutputs`.
pub fn caller_details_output() -> Value {
    let text = |description: &str| json!({"type": "string", "description": description});
    json!({
        "name": "caller_details",
        "type": "ai",
        "description": "Who called and what they need, for the agency's callback.",
        "schema": {
            "type": "object",
            "properties": {
                "caller_name": text("The caller's full name as they gave it."),
                "property_address": text("The address of the property to insure: street, city, state, ZIP."),
                "email": {"type": "string", "format": "email", "description": "The caller's email address, if given."},
                "coverage_interest": {
                    "type": "array",
                    "description": "The coverage the caller asked about.",
                    "items": {"type": "string", "enum": ["home", "auto", "renters", "landlord", "umbrella", "commercial", "other"]}
                },
                "best_callback_time": text("When the caller prefers a call back, in their words (e.g. weekdays after 5 pm)."),
            },
            "required": []
        }
    })
}

/// The server messages a transient assistant asks Vapi for: what we store, meter or answer.
pub const SERVER_MESSAGES: &[&str] = &[
    "end-of-call-report",
    "status-update",
    "tool-calls",
    "function-call",
    "transfer-destination-request",
    "transfer-update",
    "handoff-destination-request",
    "conversation-update",
    "hang",
];

/// Vapi's `CreateAssistantDTO.name` holds at most 40 characters.
pub const MAX_NAME_CHARS: usize = 40;

/// `{agency} receptionist`, shortened on a character boundary to fit Vapi's limit.
fn assistant_name(agency_name: &str) -> String {
    let full = format!("{agency_name} receptionist");
    if full.chars().count() <= MAX_NAME_CHARS {
        return full;
    }
    let mut short: String = agency_name.chars().take(MAX_NAME_CHARS - 1).collect();
    short = short.trim_end().to_string();
    short.push('…');
    short
}

/// Where a transient assistant reports: our webhook, and the Vapi credential it signs with.
#[derive(Debug, Clone, Copy, Default)]
pub struct Server<'a> {
    pub url: Option<&'a str>,
    pub credential_id: Option<&'a str>,
}

/// The whole answer for a routed caller. `server.url`, when we know our public URL, is where a
/// transient assistant reports, whatever the phone number or org says; its `credentialId` goes
/// with it (never alone: see `VAPI_SERVER_CREDENTIAL_ID` in [`crate::config`]).
pub fn answer(
    agent: &Agent,
    lead_id: Option<Uuid>,
    caller: Option<&str>,
    server: Server<'_>,
) -> Value {
    let variables = json!({
        "agency_name": agent.agency_name,
        "agent_id": agent.id,
        "lead_id": lead_id,
        "caller_number": caller,
    });
    match agent
        .vapi_assistant_id
        .as_deref()
        .filter(|id| !id.is_empty())
    {
        Some(assistant_id) => json!({
            "assistantId": assistant_id,
            "assistantOverrides": {
                "firstMessage": greeting(agent),
                "variableValues": variables,
            }
        }),
        None => {
            let mut tools = tool_definitions(agent);
            if let (Some(transfer), Some(list)) = (transfer_tool(agent), tools.as_array_mut()) {
                list.push(transfer);
            }
            let mut assistant = json!({
                "name": assistant_name(&agent.agency_name),
                "firstMessage": greeting(agent),
                "model": {
                    "provider": "openai",
                    "model": "gpt-4o",
                    "messages": [{"role": "system", "content": system_prompt(agent)}],
                    "tools": tools,
                },
                // Vapi's own default is 10 minutes; the agency chooses (1 to 720 minutes).
                "maxDurationSeconds": i64::from(agent.max_call_minutes) * 60,
                "artifactPlan": {"structuredOutputs": [caller_details_output()]},
                "serverMessages": SERVER_MESSAGES,
                // Live control, so a finding that comes after the answer can still be said.
                "monitorPlan": {"controlEnabled": true},
                "metadata": variables,
            });
            if let (Some(url), Some(obj)) = (server.url, assistant.as_object_mut()) {
                let mut server_json = json!({"url": url});
                if let Some(id) = server.credential_id {
                    server_json["credentialId"] = json!(id);
                }
                obj.insert("server".into(), server_json);
            }
            json!({ "assistant": assistant })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> Agent {
        Agent {
            id: Uuid::nil(),
            agency_name: "Sedona Red Rock Insurance".into(),
            email: "a@b.c".into(),
            phone_number: None,
            vapi_phone_number_id: None,
            vapi_assistant_id: None,
            discord_webhook_url: None,
            greeting: None,
            system_prompt: None,
            status: "active".into(),
            tools: None,
            billing_starts_on: chrono::NaiveDate::MIN,
            cancelled_on: None,
            max_call_minutes: 30,
            transfer_number: None,
            transfer_hours: None,
            usage_cap_usd: None,
            cap_action: "alert".into(),
        }
    }

    fn transfer_of(a: &Value) -> Option<&Value> {
        a["assistant"]["model"]["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .find(|t| t["type"] == "transferCall")
    }

    #[test]
    fn the_call_length_caller_details_and_signed_server_are_the_agents() {
        let mut ag = agent();
        ag.max_call_minutes = 45;
        let server = Server {
            url: Some("https://meter.example.com/vapi/webhook"),
            credential_id: Some("cred-123"),
        };
        let a = answer(&ag, None, None, server);
        assert_eq!(a["assistant"]["maxDurationSeconds"], 2700);
        assert_eq!(a["assistant"]["server"]["credentialId"], "cred-123");
        let schema = &a["assistant"]["artifactPlan"]["structuredOutputs"][0]["schema"];
        for field in [
            "caller_name",
            "property_address",
            "email",
            "coverage_interest",
            "best_callback_time",
        ] {
            assert!(schema["properties"][field].is_object(), "{field}");
        }
        // No URL, no server at all: a credential alone would not say where it signs for.
        let alone = Server {
            url: None,
            credential_id: Some("cred-123"),
        };
        assert!(
            answer(&ag, None, None, alone)["assistant"]
                .get("server")
                .is_none()
        );
    }

    #[test]
    fn the_transfer_tool_follows_the_agents_number_and_hours() {
        let mut ag = agent();
        assert!(transfer_of(&answer(&ag, None, None, Server::default())).is_none());
        ag.transfer_number = Some("+19285550100".into());
        ag.transfer_hours = Some("always".into());
        let a = answer(&ag, None, None, Server::default());
        let tool = transfer_of(&a).expect("transferCall");
        assert_eq!(tool["destinations"][0]["number"], "+19285550100");
        assert_eq!(tool["destinations"][0]["type"], "number");
        let prompt = a["assistant"]["model"]["messages"][0]["content"]
            .as_str()
            .expect("prompt");
        assert!(prompt.contains("transferCall"), "{prompt}");
        // Limited hours: no destination, so Vapi asks us and we apply the hours.
        ag.transfer_hours = Some("Mon-Fri 08:00-17:00".into());
        let a = answer(&ag, None, None, Server::default());
        let tool = transfer_of(&a).expect("transferCall");
        assert_eq!(tool["destinations"], json!([]));
        // The registry's tools are still all there, and only they have a function.
        assert_eq!(
            a["assistant"]["model"]["tools"].as_array().map(Vec::len),
            Some(tools::registry().len() + 1)
        );
    }

    #[test]
    fn default_persona_is_bilingual_and_names_the_agency() {
        let a = answer(&agent(), None, Some("+1"), Server::default());
        let prompt = a["assistant"]["model"]["messages"][0]["content"]
            .as_str()
            .expect("prompt");
        assert!(prompt.contains("Sedona Red Rock Insurance") && prompt.contains("Spanish"));
        assert!(!prompt.contains("{agency_name}"));
        assert!(
            a["assistant"]["firstMessage"]
                .as_str()
                .expect("greeting")
                .contains("Sedona")
        );
    }

    #[test]
    fn own_prompt_and_assistant_id_are_used() {
        let mut ag = agent();
        ag.system_prompt = Some("Only English. You work for {agency_name}.".into());
        let a = answer(&ag, None, None, Server::default());
        assert_eq!(
            a["assistant"]["model"]["messages"][0]["content"],
            "Only English. You work for Sedona Red Rock Insurance."
        );
        ag.vapi_assistant_id = Some("asst_1".into());
        ag.greeting = Some("Hola!".into());
        let a = answer(&ag, None, None, Server::default());
        assert_eq!(a["assistantId"], "asst_1");
        assert_eq!(a["assistantOverrides"]["firstMessage"], "Hola!");
        assert_eq!(
            a["assistantOverrides"]["variableValues"]["agency_name"],
            "Sedona Red Rock Insurance"
        );
    }

    #[test]
    fn the_assistant_declares_exactly_the_agents_tools() {
        let names = |a: &Value| -> Vec<String> {
            a["assistant"]["model"]["tools"]
                .as_array()
                .expect("tools")
                .iter()
                .map(|t| t["function"]["name"].as_str().expect("name").to_string())
                .collect()
        };
        let all: Vec<String> = tools::registry()
            .iter()
            .map(|t| t.name.to_string())
            .collect();
        assert_eq!(names(&answer(&agent(), None, None, Server::default())), all);
        let (last, first) = (&all[all.len() - 1], &all[0]);
        let mut ag = agent();
        ag.tools = Some(vec![last.clone()]);
        let a = answer(&ag, None, None, Server::default());
        assert_eq!(&names(&a), std::slice::from_ref(last));
        let prompt = a["assistant"]["model"]["messages"][0]["content"]
            .as_str()
            .expect("prompt");
        assert!(prompt.contains(last.as_str()) && !prompt.contains(first.as_str()));
        ag.tools = Some(Vec::new());
        assert!(names(&answer(&ag, None, None, Server::default())).is_empty());
    }

    #[test]
    fn a_long_agency_name_still_fits_vapis_forty_characters() {
        let mut ag = agent();
        ag.agency_name = "Compañía de Seguros Familiares del Gran Cañón y Alrededores".into();
        let name = answer(&ag, None, None, Server::default())["assistant"]["name"]
            .as_str()
            .expect("name")
            .to_string();
        assert!(name.chars().count() <= MAX_NAME_CHARS, "{name}");
        assert!(name.starts_with("Compañía de Seguros"), "{name}");
        assert_eq!(
            assistant_name("Yuma Insurance"),
            "Yuma Insurance receptionist"
        );
        let a = answer(
            &agent(),
            None,
            None,
            Server {
                url: Some("https://meter.example.com/vapi/webhook"),
                credential_id: None,
            },
        );
        assert_eq!(
            a["assistant"]["server"]["url"],
            "https://meter.example.com/vapi/webhook"
        );
        assert!(
            answer(&agent(), None, None, Server::default())["assistant"]
                .get("server")
                .is_none()
        );
    }
}
