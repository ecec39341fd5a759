//! The portal's two languages: English and Spanish labels, and which one a visitor reads
//! (`?lang=es|en`, else the remembered choice, else the browser's first language).

use axum::http::{HeaderMap, header};

use super::LANG_COOKIE;
use crate::http::cookie;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Lang {
    En,
    Es,
}

impl Lang {
    /// The language's code, as in `lang=` and `?lang=`.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Es => "es",
        }
    }

    /// The other language, which the page offers to switch to.
    pub fn other(self) -> Lang {
        match self {
            Lang::En => Lang::Es,
            Lang::Es => Lang::En,
        }
    }

    /// The language's name, in itself.
    pub fn name(self) -> &'static str {
        match self {
            Lang::En => "English",
            Lang::Es => "Español",
        }
    }
}

/// Labels in both languages.
pub fn t(lang: Lang, key: &str) -> &'static str {
    let (en, es) = match key {
        "overview" => ("Overview", "Resumen"),
        "calls" => ("Calls", "Llamadas"),
        "leads" => ("Leads", "Clientes potenciales"),
        "usage" => ("Usage", "Consumo"),
        "invoices" => ("Invoices", "Facturas"),
        "sign_out" => ("Sign out", "Cerrar sesión"),
        "sign_in" => ("Sign in", "Entrar"),
        "this_month" => ("This month", "Este mes"),
        "minutes" => ("Minutes", "Minutos"),
        "scans" => ("Scans", "Escaneos"),
        "lookups" => ("Lookups", "Consultas"),
        "amount" => ("Amount so far", "Importe hasta hoy"),
        "last_30" => ("Calls, last 30 days", "Llamadas, últimos 30 días"),
        "time" => ("Time", "Hora"),
        "caller" => ("Caller", "Llamante"),
        "duration" => ("Duration (s)", "Duración (s)"),
        "billed_minutes" => ("Minutes billed", "Minutos facturados"),
        "findings" => ("Findings", "Hallazgos"),
        "transfers" => ("Transfers", "Transferencias"),
        "out_of_hours" => (
            "out of hours: message taken",
            "fuera de horario: se tomó un mensaje",
        ),
        "phone" => ("Phone", "Teléfono"),
        "name" => ("Name", "Nombre"),
        "property" => ("Property", "Propiedad"),
        "facts" => ("Solar, water, flood", "Solar, agua, inundación"),
        "tags" => ("Tags", "Etiquetas"),
        "month" => ("Month", "Mes"),
        "metric" => ("Metric", "Concepto"),
        "count" => ("Count", "Cantidad"),
        "quantity" => ("Quantity", "Unidades"),
        "status" => ("Status", "Estado"),
        "total" => ("Total", "Total"),
        "unit_price" => ("Unit price", "Precio unitario"),
        "print" => ("Print", "Imprimir"),
        "integrations" => ("Integrations", "Integraciones"),
        "integrations_about" => (
            "Your own systems hear of your calls, leads, findings and invoices at these URLs, signed per Standard Webhooks.",
            "Sus propios sistemas reciben sus llamadas, clientes, hallazgos y facturas en estas URL, firmadas según Standard Webhooks.",
        ),
        "events" => ("Events (empty: all)", "Eventos (vacío: todos)"),
        "add_endpoint" => ("Add an endpoint", "Añadir un destino"),
        "remove" => ("Remove", "Quitar"),
        "deliveries" => ("Deliveries", "Envíos"),
        "attempts" => ("Attempts", "Intentos"),
        "replay" => ("Send again", "Reenviar"),
        "disabled" => ("Disabled", "Desactivado"),
        "failing" => ("Failing", "Fallando"),
        "secret_once" => (
            "Your signing secret, shown only now: store it to verify our signatures.",
            "Su secreto de firma, que solo se muestra ahora: guárdelo para verificar nuestras firmas.",
        ),
        "usage_cap" => ("Usage cap", "Límite de consumo"),
        "cap_notice" => (
            "of your monthly usage cap is used",
            "de su límite mensual de consumo está usado",
        ),
        "cap_blocked" => (
            "Billable checks (such as solar scans) are paused until next month or a higher cap.",
            "Las consultas facturables (como los escaneos solares) están en pausa hasta el mes próximo o un límite mayor.",
        ),
        "payment" => ("Payment", "Pago"),
        "pay" => ("Pay", "Pagar"),
        "paid_on" => ("paid on", "pagada el"),
        "open" => ("Due", "Pendiente"),
        "past_due" => ("Past due", "Vencida"),
        "paid" => ("Paid", "Pagada"),
        "void" => ("Void", "Anulada"),
        "uncollectible" => ("Uncollectible", "Incobrable"),
        "link_used" => (
            "This sign-in link is used up or expired. Ask your account manager for a new one.",
            "Este enlace ya se usó o caducó. Pida uno nuevo a su gestor de cuenta.",
        ),
        "need_link" => (
            "Sign in with the link you received.",
            "Entre con el enlace que recibió.",
        ),
        "press" => (
            "Press the button to sign in to your portal.",
            "Pulse el botón para entrar en su portal.",
        ),
        "too_many" => (
            "Too many failed sign-ins from here. Try again in a minute.",
            "Demasiados intentos fallidos desde aquí. Inténtelo de nuevo en un minuto.",
        ),
        "none" => ("Nothing yet.", "Nada todavía."),
        "older" => ("Older →", "Anteriores →"),
        "newer" => ("← Newer", "← Recientes"),
        "call" => ("Call", "Llamada"),
        "summary" => ("Summary", "Resumen de la llamada"),
        "success" => ("Success evaluation", "Evaluación del resultado"),
        "structured" => ("Caller details", "Datos del llamante"),
        "transcript" => ("Transcript", "Transcripción"),
        "recording" => ("Recording", "Grabación"),
        "listen" => ("Listen", "Escuchar"),
        "costs" => ("Vapi costs", "Costes de Vapi"),
        "cost" => ("Cost (USD)", "Coste (USD)"),
        "part" => ("Part", "Concepto"),
        "type" => ("Type", "Tipo"),
        "inbound" => ("Inbound", "Entrante"),
        "outbound" => ("Outbound", "Saliente"),
        "web" => ("Web", "Web"),
        "ended_reason" => ("Ended", "Finalizó"),
        "search" => (
            "Search transcripts and summaries",
            "Buscar en transcripciones y resúmenes",
        ),
        "search_button" => ("Search", "Buscar"),
        "all_calls" => ("← All calls", "← Todas las llamadas"),
        "no_call" => ("No such call.", "No existe esa llamada."),
        "field" => ("Field", "Campo"),
        "value" => ("Value", "Valor"),
        _ => ("?", "?"),
    };
    match lang {
        Lang::En => en,
        Lang::Es => es,
    }
}

/// `?lang=`, else the remembered choice, else the browser's first language.
pub fn lang_of(headers: &HeaderMap, asked: Option<&str>) -> Lang {
    let browser = || {
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
    };
    let chosen = asked
        .or_else(|| cookie(headers, LANG_COOKIE))
        .or_else(browser)
        .unwrap_or("en");
    let spanish = chosen
        .trim()
        .get(..2)
        .is_some_and(|p| p.eq_ignore_ascii_case("es"));
    if spanish { Lang::Es } else { Lang::En }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), header::HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn the_asked_language_wins_then_the_cookie_then_the_browser() {
        let browser_es = headers(&[(header::ACCEPT_LANGUAGE, "es-MX,es;q=0.9")]);
        assert_eq!(lang_of(&browser_es, None), Lang::Es);
        assert_eq!(lang_of(&browser_es, Some("en")), Lang::En);
        let both = headers(&[
            (header::ACCEPT_LANGUAGE, "es-MX"),
            (header::COOKIE, "portal_lang=en"),
        ]);
        assert_eq!(lang_of(&both, None), Lang::En);
        assert_eq!(lang_of(&HeaderMap::new(), None), Lang::En);
        assert_eq!(lang_of(&HeaderMap::new(), Some("ES")), Lang::Es);
    }
}
