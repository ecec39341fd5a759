//! What our server-rendered pages (the ops page, the portal) share: the document around a page
//! and a table's header row. Markup is maud's, so every value spliced into a page is escaped by
//! construction; only our own constants (the style sheets) go in unescaped, through `PreEscaped`.

use maud::{DOCTYPE, Markup, PreEscaped, html};

/// What a page says in its `<head>`.
pub struct Head<'a> {
    pub title: &'a str,
    /// `<html lang=...>`, when the page says which language it speaks.
    pub lang: Option<&'a str>,
    /// The page's style sheet: a constant of ours, put in as it is.
    pub style: &'static str,
    /// Laid out for a phone's width (`<meta name=viewport>`).
    pub phone: bool,
}

/// A whole HTML document: `head`, then `body`.
pub fn document(head: &Head, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang=[head.lang] {
            head {
                meta charset="utf-8";
                @if head.phone {
                    meta name="viewport" content="width=device-width,initial-scale=1";
                }
                title { (head.title) }
                style { (PreEscaped(head.style)) }
            }
            body { (body) }
        }
    }
}

/// A table's header row, one `<th>` a label.
pub fn head_row(labels: &[&str]) -> Markup {
    html! {
        tr { @for label in labels { th { (label) } } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_the_style_sheet_is_not() {
        let head = Head {
            title: "<b>\"x\" & y</b>",
            lang: Some("es"),
            style: "a>b{color:#222}",
            phone: true,
        };
        let page = document(&head, head_row(&["<i>"])).into_string();
        assert_eq!(
            page,
            "<!DOCTYPE html><html lang=\"es\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
             <title>&lt;b&gt;&quot;x&quot; &amp; y&lt;/b&gt;</title><style>a>b{color:#222}</style>\
             </head><body><tr><th>&lt;i&gt;</th></tr></body></html>"
        );
    }

    #[test]
    fn a_page_without_a_language_or_phone_layout_says_neither() {
        let head = Head {
            title: "t",
            lang: None,
            style: "",
            phone: false,
        };
        let page = document(&head, html! {}).into_string();
        assert!(
            !page.contains("lang=") && !page.contains("viewport"),
            "{page}"
        );
    }
}
