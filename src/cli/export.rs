//! CSV exports (`usage`, `invoices show|trace --format csv`): RFC 4180 through the `csv`
//! crate, every cell safe to open in a spreadsheet.

/// CSV on stdout: `header`, then `rows`, each cell made safe to open in a spreadsheet ([`cell`]).
pub fn print_csv<const N: usize>(
    header: [&str; N],
    rows: impl IntoIterator<Item = [String; N]>,
) -> anyhow::Result<()> {
    write_csv(std::io::stdout().lock(), header, rows)
}

/// CSV through the `csv` crate (RFC 4180 quoting: a cell with a comma, quote or line break is
/// quoted, its quotes doubled; records end in `\n`), every cell passed through [`cell`].
fn write_csv<const N: usize>(
    out: impl std::io::Write,
    header: [&str; N],
    rows: impl IntoIterator<Item = [String; N]>,
) -> anyhow::Result<()> {
    let mut csv = csv::Writer::from_writer(out);
    csv.write_record(header)?;
    for row in rows {
        for c in &row {
            csv.write_field(cell(c).as_bytes())?;
        }
        csv.write_record(None::<&[u8]>)?; // ends the record
    }
    csv.flush()?;
    Ok(())
}

/// A cell a spreadsheet shows as text and never runs as a formula (OWASP, "CSV injection").
///
/// The rule: a cell that begins with `=`, `+`, `-`, `@`, a tab or a carriage return is prefixed
/// with a single quote `'`, unless the whole cell is a plain number (an optional `-`, digits, and
/// optionally `.` and digits), which a spreadsheet reads as a number and cannot run. The rule
/// reads the cell, not where it came from: an agency name (user input) such as
/// `=HYPERLINK(...)`, `+1+1`, `@SUM(A1)` or `-2+3` is neutralised, while our own negative
/// amounts (`-12.50`, a credit) stay numbers a spreadsheet can add up. An agency named `-12.50`
/// is shown as that number, which runs nothing.
fn cell(text: &str) -> std::borrow::Cow<'_, str> {
    let risky = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if risky && !is_plain_number(text) {
        format!("'{text}").into()
    } else {
        text.into()
    }
}

/// `-12.50`, `3`, `0.075`: an optional minus, digits, optionally a point and digits.
fn is_plain_number(text: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    match unsigned.split_once('.') {
        Some((whole, fraction)) => digits(whole) && digits(fraction),
        None => digits(unsigned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv_of<const N: usize>(header: [&str; N], rows: Vec<[&str; N]>) -> String {
        let mut out = Vec::new();
        let rows = rows.into_iter().map(|r| r.map(str::to_string));
        write_csv(&mut out, header, rows).expect("csv");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn hostile_agency_names_are_neutralised_and_quoted_exactly() {
        let names = [
            "=HYPERLINK(\"http://x\",\"y\")",
            "+1+1",
            "@SUM(A1)",
            "-2+3",
            "Smith, \"Best\" Insurance\nLLC",
            "\t=1",
            "Plain Agency",
        ];
        let rows = names.iter().map(|n| [*n, "-12.50", "0.23"]).collect();
        assert_eq!(
            csv_of(["agency_name", "amount", "total"], rows),
            "agency_name,amount,total\n\
             \"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\",-12.50,0.23\n\
             '+1+1,-12.50,0.23\n\
             '@SUM(A1),-12.50,0.23\n\
             '-2+3,-12.50,0.23\n\
             \"Smith, \"\"Best\"\" Insurance\nLLC\",-12.50,0.23\n\
             '\t=1,-12.50,0.23\n\
             Plain Agency,-12.50,0.23\n"
        );
    }

    #[test]
    fn only_plain_numbers_keep_a_leading_minus() {
        for number in ["-12.50", "-3", "0.075", "12"] {
            assert_eq!(cell(number), number);
        }
        for text in ["-", "-.5", "-1.", "-1e5", "-1-1", "- 3", "--1", "-0x10"] {
            assert_eq!(cell(text), format!("'{text}"), "{text}");
        }
    }
}
