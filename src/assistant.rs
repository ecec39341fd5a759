//! The answer to Vapi's `assistant-request`: the agent's own Vapi assistant with per-call
//! overrides, or a transient assistant carrying the agent's prompt or the default persona.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::store::agents::Agent;

/// The default persona: bilingual, Arizona, insurance. `{agency_name}` is filled in.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are the friendly bilingual (Spanish and English) phone \
receptionist for {agency_name}, an independent insurance agency in Arizona. Answer in the caller's \
language; switch naturally if they mix Spanish and English. Help with home, auto, renters and \
landlord insurance questions, collect the caller's name, property address and the best time to \
call back, and never quote a final premium: a licensed agent of {agency_name} confirms every quote. \
Arizona matters: ask whether the home has rooftop solar panels (owned, leased or financed) and \
whether it is on a private well or city water. When the caller shares a photo or document of the \
property, use the solar_ocr_scan tool; when you know the property's coordinates, use the \
water_lookup tool. Keep answers short and warm.";

/// The default first sentence when the agent has no greeting of its own.
pub fn default_greeting(agency_name: &str) -> String {
    format!("Thanks for calling {agency_name}. ¡Hola! How can I help you today?")
}

/// The system prompt for an agent: its own, else the default persona; `{agency_name}` filled.
pub fn system_prompt(agent: &Agent) -> String {
    let template = agent
        .system_prompt
        .as_deref()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or(DEFAULT_SYSTEM_PROMPT);
    template.replace("{agency_name}", &agent.agency_name)
}

fn greeting(agent: &Agent) -> String {
    agent
        .greeting
        .as_deref()
        .filter(|g| !g.trim().is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| default_greeting(&agent.agency_name))
}

/// The function tools a transient assistant may call (answered by our `tool-calls` handler).
pub fn tool_definitions() -> Value {
    json!([
        {"type": "function", "function": {
            "name": "solar_ocr_scan",
            "description": "Check a photo or document of the caller's property for rooftop solar panels.",
            "parameters": {"type": "object", "properties": {
                "image_url": {"type": "string", "description": "URL of the image"},
                "image_base64": {"type": "string", "description": "The image, base64-encoded"},
                "mime_type": {"type": "string", "description": "e.g. image/jpeg"},
                "address": {"type": "string"}
            }}
        }},
        {"type": "function", "function": {
            "name": "water_lookup",
            "description": "Find registered wells near the property (Arizona ADWR well registry).",
            "parameters": {"type": "object", "properties": {
                "latitude": {"type": "number"},
                "longitude": {"type": "number"},
                "radius_m": {"type": "number", "description": "search radius in metres, default 805"},
                "address": {"type": "string"}
            }, "required": ["latitude", "longitude"]}
        }}
    ])
}

/// The whole answer for a routed caller.
pub fn answer(agent: &Agent, lead_id: Option<Uuid>, caller: Option<&str>) -> Value {
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
        None => json!({
            "assistant": {
                "name": format!("{} receptionist", agent.agency_name),
                "firstMessage": greeting(agent),
                "model": {
                    "provider": "openai",
                    "model": "gpt-4o",
                    "messages": [{"role": "system", "content": system_prompt(agent)}],
                    "tools": tool_definitions(),
                },
                "metadata": variables,
            }
        }),
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
        }
    }

    #[test]
    fn default_persona_is_bilingual_and_names_the_agency() {
        let a = answer(&agent(), None, Some("+1"));
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
        let a = answer(&ag, None, None);
        assert_eq!(
            a["assistant"]["model"]["messages"][0]["content"],
            "Only English. You work for Sedona Red Rock Insurance."
        );
        ag.vapi_assistant_id = Some("asst_1".into());
        ag.greeting = Some("Hola!".into());
        let a = answer(&ag, None, None);
        assert_eq!(a["assistantId"], "asst_1");
        assert_eq!(a["assistantOverrides"]["firstMessage"], "Hola!");
        assert_eq!(
            a["assistantOverrides"]["variableValues"]["agency_name"],
            "Sedona Red Rock Insurance"
        );
    }
}
