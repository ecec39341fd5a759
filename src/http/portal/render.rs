//! The portal's shared markup (maud: whatever is spliced in is escaped): the page around every
//! view with the agency's navigation, tables, the paged list with its newer/older links, the
//! overview's chart, and how money is written.

use chrono::NaiveDate;
use maud::{Markup, html};
use rust_decimal::Decimal;

use super::i18n::{Lang, t};
use crate::{
    http::html::{Head, document, head_row},
    money,
};

const STYLE: &str = "body{font:15px system-ui,sans-serif;margin:0;color:#222}main{padding:1em;max-width:60em;margin:auto}
nav{background:#23395d;padding:.6em 1em;display:flex;flex-wrap:wrap;gap:.8em;align-items:center}nav a{color:#fff;text-decoration:none}
nav form{margin-left:auto}table{border-collapse:collapse;width:100%;margin:.5em 0 1.5em}td,th{border-bottom:1px solid #ddd;padding:.35em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f4}.cards{display:flex;flex-wrap:wrap;gap:.8em}.card{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;min-width:8em}
.card b{display:block;font-size:1.4em}.banner{background:#fff4e0;border:1px solid #e0a040;border-radius:6px;padding:.6em 1em}.bar{fill:#4a7bd0}.num{text-align:right}@media print{nav{display:none}}";

/// The navigation's links: path and label.
const NAV: [(&str, &str); 6] = [
    ("/portal/", "overview"),
    ("/portal/calls", "calls"),
    ("/portal/leads", "leads"),
    ("/portal/usage", "usage"),
    ("/portal/invoices", "invoices"),
    ("/portal/integrations", "integrations"),
];

/// A whole portal page titled `title`; with the signed-in `agency`'s navigation when there is one.
pub fn page(lang: Lang, agency: Option<&str>, title: &str, body: Markup) -> Markup {
    let head = Head {
        title,
        lang: Some(lang.code()),
        style: STYLE,
        phone: true,
    };
    document(
        &head,
        html! {
            @if let Some(name) = agency {
                nav {
                    strong style="color:#fff" { (name) }
                    @for (path, label) in NAV {
                        a href=(path) { (t(lang, label)) }
                    }
                    a href={ "?lang=" (lang.other().code()) } { (lang.other().name()) }
                    form method="post" action="/portal/sign-out" {
                        button { (t(lang, "sign_out")) }
                    }
                }
            }
            main {
                h1 { (title) }
                (body)
            }
        },
    )
}

/// A page before sign-in that says one label, `key`.
pub fn notice(lang: Lang, key: &str) -> Markup {
    page(lang, None, "agent-meter", html! { p { (t(lang, key)) } })
}

/// A table headed by the labels `keys`, one row a vector of cells; "nothing yet" when empty.
pub fn table(lang: Lang, keys: &[&str], rows: &[Vec<Markup>]) -> Markup {
    let head: Vec<&str> = keys.iter().map(|key| t(lang, key)).collect();
    html! {
        @if rows.is_empty() {
            p { (t(lang, "none")) }
        } @else {
            table {
                (head_row(&head))
                @for row in rows {
                    tr { @for cell in row { td { (cell) } } }
                }
            }
        }
    }
}

/// One page of a long list at `/portal/{list}`.
pub struct Paged<'a> {
    /// The list's path under `/portal/` and its label.
    pub list: &'a str,
    /// The labels of its columns.
    pub head: &'a [&'a str],
    pub rows: Vec<Vec<Markup>>,
    /// The page shown, from 0.
    pub page: u32,
    /// Whether an older page exists.
    pub more: bool,
    /// More of the pages' query (`&q=...`, already URL-encoded).
    pub query: String,
}

impl Paged<'_> {
    /// The list's table and the links to newer and older pages around it.
    pub fn render(&self, lang: Lang) -> Markup {
        let link = |page: u32| format!("/portal/{}?page={page}{}", self.list, self.query);
        html! {
            (table(lang, self.head, &self.rows))
            p.pager {
                @if self.page > 0 {
                    a href=(link(self.page - 1)) rel="prev" { (t(lang, "newer")) }
                    " "
                }
                @if self.more {
                    a href=(link(self.page + 1)) rel="next" id="older" { (t(lang, "older")) }
                }
            }
        }
    }
}

/// An amount of money as the portal writes it: `$12.30`, rounded as an invoice line is.
pub fn money_text(d: Decimal) -> String {
    money::usd(d)
}

/// Calls per day up to `today` as bars (inline SVG: no script, prints).
pub fn chart(days: &[(NaiveDate, i64)], today: NaiveDate) -> Markup {
    let max = days.iter().map(|d| d.1).max().unwrap_or(0).max(1);
    html! {
        svg #chart viewBox="0 0 310 110" width="100%" height="150" preserveAspectRatio="none"
            role="img" aria-label={ "calls per day, most " (max) } {
            line x1="0" y1="105.5" x2="310" y2="105.5" stroke="#999" stroke-width=".5" {}
            @for (day, n) in days {
                @let x = (30 - (today - *day).num_days().clamp(0, 30)) * 10;
                @let h = n * 100 / max;
                rect.bar x=(x) y=(105 - h) width="8" height=(h) {
                    title { (day) ": " (n) }
                }
            }
        }
        p style="display:flex;justify-content:space-between;color:#666;margin:0" {
            span { (today - chrono::Duration::days(30)) }
            span { "max " (max) }
            span { (today) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_in_page_escapes_the_agency_and_offers_the_other_language() {
        let html = page(Lang::Es, Some("<Seguros & Co>"), "Resumen", html! {}).into_string();
        assert!(html.contains("<html lang=\"es\">"), "{html}");
        assert!(html.contains("&lt;Seguros &amp; Co&gt;"), "{html}");
        assert!(html.contains("<a href=\"?lang=en\">English</a>"), "{html}");
        assert!(html.contains("<button>Cerrar sesión</button>"), "{html}");
    }

    #[test]
    fn a_paged_list_links_to_its_neighbours_keeping_the_query() {
        let paged = Paged {
            list: "calls",
            head: &["time"],
            rows: vec![vec![html! { "<x>" }]],
            page: 1,
            more: true,
            query: "&q=a%26b".into(),
        };
        let html = paged.render(Lang::En).into_string();
        assert_eq!(
            html,
            "<table><tr><th>Time</th></tr><tr><td>&lt;x&gt;</td></tr></table><p class=\"pager\">\
             <a href=\"/portal/calls?page=0&amp;q=a%26b\" rel=\"prev\">← Newer</a> \
             <a href=\"/portal/calls?page=2&amp;q=a%26b\" rel=\"next\" id=\"older\">Older →</a></p>"
        );
        let empty = Paged {
            rows: Vec::new(),
            page: 0,
            more: false,
            ..paged
        };
        assert_eq!(
            empty.render(Lang::En).into_string(),
            "<p>Nothing yet.</p><p class=\"pager\"></p>"
        );
    }
}
