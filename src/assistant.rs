//! The answer to Vapi's `assistant-request`: the agent's own Vapi assistant with per-call
//! overrides, or a transient assistant carrying the agent's prompt or the default persona.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::{store::agents::Agent, tools};

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
    prompt.replace("{agency_name}", &agent.agency_name)
}

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

/// The server messages a transient assistant asks Vapi for: what we store, meter or answer.
pub const SERVER_MESSAGES: &[&str] = &[
    "end-of-call-report",
    "status-update",
    "tool-calls",
    "function-call",
    "transfer-destination-request",
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

/// The whole answer for a routed caller. `server_url`, when we know our public URL, is where a
/// transient assistant reports, whatever the phone number or org says.
pub fn answer(
    agent: &Agent,
    lead_id: Option<Uuid>,
    caller: Option<&str>,
    server_url: Option<&str>,
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
            let mut assistant = json!({
                "name": assistant_name(&agent.agency_name),
                "firstMessage": greeting(agent),
                "model": {
                    "provider": "openai",
                    "model": "gpt-4o",
                    "messages": [{"role": "system", "content": system_prompt(agent)}],
                    "tools": tool_definitions(agent),
                },
                "serverMessages": SERVER_MESSAGES,
                // Live control, so a finding that comes after the answer can still be said.
                "monitorPlan": {"controlEnabled": true},
                "metadata": variables,
            });
            if let (Some(url), Some(obj)) = (server_url, assistant.as_object_mut()) {
                obj.insert("server".into(), json!({"url": url}));
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
        }
    }

    #[test]
    fn default_persona_is_bilingual_and_names_the_agency() {
        let a = answer(&agent(), None, Some("+1"), None);
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
        let a = answer(&ag, None, None, None);
        assert_eq!(
            a["assistant"]["model"]["messages"][0]["content"],
            "Only English. You work for Sedona Red Rock Insurance."
        );
        ag.vapi_assistant_id = Some("asst_1".into());
        ag.greeting = Some("Hola!".into());
        let a = answer(&ag, None, None, None);
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
        assert_eq!(names(&answer(&agent(), None, None, None)), all);
        let mut ag = agent();
        ag.tools = Some(vec!["flood_zone_lookup".into()]);
        let a = answer(&ag, None, None, None);
        assert_eq!(names(&a), ["flood_zone_lookup"]);
        let prompt = a["assistant"]["model"]["messages"][0]["content"]
            .as_str()
            .expect("prompt");
        assert!(prompt.contains("flood_zone_lookup") && !prompt.contains("solar_ocr_scan"));
        ag.tools = Some(Vec::new());
        assert!(names(&answer(&ag, None, None, None)).is_empty());
    }

    #[test]
    fn a_long_agency_name_still_fits_vapis_forty_characters() {
        let mut ag = agent();
        ag.agency_name = "Compañía de Seguros Familiares del Gran Cañón y Alrededores".into();
        let name = answer(&ag, None, None, None)["assistant"]["name"]
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
            Some("https://meter.example.com/vapi/webhook"),
        );
        assert_eq!(
            a["assistant"]["server"]["url"],
            "https://meter.example.com/vapi/webhook"
        );
        assert!(
            answer(&agent(), None, None, None)["assistant"]
                .get("server")
                .is_none()
        );
    }
}
