//! Invoices as PDF (`pdf-writer`: a small, maintained, pure-Rust writer from the Typst project;
//! no headless browser at run time). One A4 page per 40 lines, Helvetica (a PDF base font, so
//! nothing is embedded) in WinAnsi encoding, so Spanish accents print.

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str};
use rust_decimal::Decimal;

use crate::money;

/// One printed line: description, quantity, unit price, amount.
pub type PdfLine = (String, Decimal, Decimal, Decimal);

const LINES_PER_PAGE: usize = 40;

/// Text as WinAnsi bytes (Latin-1 covers the accents we use); anything else prints as `?`.
fn ansi(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
        .collect()
}

/// The invoice of `agency` for `month` as a PDF document.
pub fn render(
    agency: &str,
    month: &str,
    status: &str,
    lines: &[PdfLine],
    total: Decimal,
) -> Vec<u8> {
    let mut pdf = Pdf::new();
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let font = Ref::new(3);
    let font_name = Name(b"F1");
    let chunks: Vec<&[PdfLine]> = if lines.is_empty() {
        vec![&[]]
    } else {
        lines.chunks(LINES_PER_PAGE).collect()
    };
    let pages: Vec<(Ref, Ref)> = (0..chunks.len())
        .map(|i| {
            let n = i32::try_from(i).unwrap_or(0);
            (Ref::new(4 + 2 * n), Ref::new(5 + 2 * n))
        })
        .collect();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids(pages.iter().map(|p| p.0))
        .count(i32::try_from(pages.len()).unwrap_or(1));
    pdf.type1_font(font)
        .base_font(Name(b"Helvetica"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    for (i, (chunk, (page_id, content_id))) in chunks.iter().zip(&pages).enumerate() {
        let mut page = pdf.page(*page_id);
        page.media_box(Rect::new(0.0, 0.0, 595.0, 842.0));
        page.parent(tree);
        page.contents(*content_id);
        page.resources().fonts().pair(font_name, font);
        page.finish();

        let mut c = Content::new();
        let mut text = |x: f32, y: f32, size: f32, s: &str| {
            c.begin_text();
            c.set_font(font_name, size);
            c.next_line(x, y);
            c.show(Str(&ansi(s)));
            c.end_text();
        };
        let mut y = 790.0;
        if i == 0 {
            text(50.0, y, 18.0, &format!("Invoice {month}"));
            y -= 24.0;
            text(50.0, y, 12.0, agency);
            y -= 16.0;
            text(50.0, y, 10.0, &format!("Status: {status}"));
            y -= 30.0;
        }
        text(50.0, y, 10.0, "Description");
        text(360.0, y, 10.0, "Quantity");
        text(430.0, y, 10.0, "Unit price");
        text(510.0, y, 10.0, "Amount");
        y -= 18.0;
        for (description, quantity, price, amount) in chunk.iter() {
            let short: String = description.chars().take(60).collect();
            text(50.0, y, 9.0, &short);
            text(360.0, y, 9.0, &quantity.normalize().to_string());
            text(430.0, y, 9.0, &price.normalize().to_string());
            text(
                510.0,
                y,
                9.0,
                &format!("${:.2}", money::round_line(*amount)),
            );
            y -= 15.0;
        }
        if i + 1 == chunks.len() {
            y -= 10.0;
            text(
                430.0,
                y,
                12.0,
                &format!("Total: ${:.2}", money::round_line(total)),
            );
        }
        pdf.stream(*content_id, &c.finish());
    }
    pdf.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pdf_with_many_lines_has_every_line_and_the_total_once() {
        let lines: Vec<PdfLine> = (0..85)
            .map(|i| {
                (
                    format!("línea {i}"),
                    Decimal::ONE,
                    Decimal::ONE,
                    Decimal::ONE,
                )
            })
            .collect();
        let pdf = render(
            "Agencia Ñandú",
            "2026-11",
            "finalized",
            &lines,
            Decimal::from(85),
        );
        assert!(pdf.starts_with(b"%PDF-"));
        let text = String::from_utf8_lossy(&pdf);
        assert_eq!(text.matches("Total: $85.00").count(), 1);
        assert!(text.contains("/Count 3"), "three pages for 85 lines");
        // Non-ASCII text is a hex string of WinAnsi bytes: "lí" is 6C ED.
        assert!(
            text.to_ascii_uppercase().contains("<6CED6E6561"),
            "accents in WinAnsi"
        );
    }
}
