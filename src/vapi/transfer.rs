//! Warm transfer to a person at the agency: the transfer number (E.164), the hours it may be
//! used (`always`, `never`, or weekly ranges like `Mon-Fri 08:00-17:00, Sat 09:00-12:00` read in
//! BILLING_TIMEZONE), and the in-hours decision, a pure function of the instant.

use std::fmt;

use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;

/// Whether `number` is an E.164 phone number: `+`, a non-zero digit, 7 to 15 digits in all.
pub fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// One weekly range: the days (Monday first) and `[start, end)` in minutes after midnight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    days: [bool; 7],
    start: u32,
    end: u32,
}

/// When a transfer may be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hours {
    /// Any time: the assistant gets the number itself.
    Always,
    /// No time (a switch for holidays): the assistant always takes a message.
    Never,
    /// Within any of these ranges, in the billing time zone.
    Weekly(Vec<Window>),
}

fn day(name: &str) -> Result<usize, String> {
    DAYS.iter()
        .position(|d| d.eq_ignore_ascii_case(name))
        .ok_or_else(|| format!("unknown day {name:?}: use Mon, Tue, Wed, Thu, Fri, Sat, Sun"))
}

fn minutes(hhmm: &str) -> Result<u32, String> {
    let bad = || format!("bad time {hhmm:?}: use HH:MM, 24-hour, 00:00 to 24:00");
    let (h, m) = hhmm.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn window(range: &str) -> Result<Window, String> {
    let (days, times) = range
        .split_once(char::is_whitespace)
        .ok_or_else(|| format!("{range:?}: expected days then times, e.g. Mon-Fri 08:00-17:00"))?;
    let mut set = [false; 7];
    match days.split_once('-') {
        // A range may wrap the week end: Fri-Mon is Friday to Monday.
        Some((from, to)) => {
            let (from, to) = (day(from)?, day(to)?);
            let mut d = from;
            loop {
                set[d] = true;
                if d == to {
                    break;
                }
                d = (d + 1) % 7;
            }
        }
        None => set[day(days)?] = true,
    }
    let (start, end) = times
        .trim()
        .split_once('-')
        .ok_or_else(|| format!("{range:?}: expected times like 08:00-17:00"))?;
    let (start, end) = (minutes(start.trim())?, minutes(end.trim())?);
    if start >= end {
        return Err(format!(
            "{range:?}: the end must be after the start (split an overnight range in two: Mon-Fri 22:00-24:00, Tue-Sat 00:00-06:00)"
        ));
    }
    Ok(Window {
        days: set,
        start,
        end,
    })
}

impl std::str::FromStr for Hours {
    type Err = String;

    /// `always`, `never`, or comma-separated `DAYS HH:MM-HH:MM` ranges (`DAYS` one day or
    /// `Day-Day`), case-insensitive.
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("always") {
            return Ok(Hours::Always);
        }
        if text.eq_ignore_ascii_case("never") {
            return Ok(Hours::Never);
        }
        if text.is_empty() {
            return Err(
                "no hours: give ranges like \"Mon-Fri 08:00-17:00\", or always, or never".into(),
            );
        }
        text.split(',')
            .map(|r| window(r.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map(Hours::Weekly)
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Days as runs from Monday (a wrapped range such as Fri-Mon prints as Mon, Fri-Sun).
        let mut runs = Vec::new();
        let mut d = 0;
        while d < 7 {
            if !self.days[d] {
                d += 1;
                continue;
            }
            let first = d;
            while d + 1 < 7 && self.days[d + 1] {
                d += 1;
            }
            runs.push(if first == d {
                DAYS[d].to_string()
            } else {
                format!("{}-{}", DAYS[first], DAYS[d])
            });
            d += 1;
        }
        let hhmm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
        let times = format!("{}-{}", hhmm(self.start), hhmm(self.end));
        let parts: Vec<String> = runs.iter().map(|r| format!("{r} {times}")).collect();
        f.write_str(&parts.join(", "))
    }
}

impl fmt::Display for Hours {
    /// The canonical form (what is stored), which parses back to the same hours.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hours::Always => f.write_str("always"),
            Hours::Never => f.write_str("never"),
            Hours::Weekly(windows) => {
                let parts: Vec<String> = windows.iter().map(Window::to_string).collect();
                f.write_str(&parts.join(", "))
            }
        }
    }
}

impl Hours {
    /// Whether a transfer may be made at `at`, read as a wall-clock time in `tz`.
    pub fn contains(&self, at: DateTime<Utc>, tz: Tz) -> bool {
        match self {
            Hours::Always => true,
            Hours::Never => false,
            Hours::Weekly(windows) => {
                let local = at.with_timezone(&tz);
                let weekday = local.weekday().num_days_from_monday() as usize;
                let minute = local.hour() * 60 + local.minute();
                windows
                    .iter()
                    .any(|w| w.days[weekday] && w.start <= minute && minute < w.end)
            }
        }
    }
}

/// What the caller hears before being connected (both languages: our callers use either).
pub const CONNECTING: &str =
    "One moment, I'm connecting you with an agent now. Un momento, le comunico con un agente.";

/// The transfer to `number`: a warm transfer, where the agent hears a short summary of the call
/// before the caller is connected.
pub fn destination(number: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "number",
        "number": number,
        "message": CONNECTING,
        "description": "A licensed agent of the agency, for callers who ask for a person or need one now.",
        "transferPlan": {
            "mode": "warm-transfer-say-summary",
            "summaryPlan": {
                "enabled": true,
                "messages": [
                    {"role": "system", "content": "You brief a licensed insurance agent who is about to take a transferred call. In two or three English sentences: the caller's name, what they want, the property address if given, and anything already promised."},
                    {"role": "user", "content": "Here is the transcript:\n\n{{transcript}}"}
                ]
            }
        }
    })
}

/// The answer out of hours: no transfer; the assistant takes a message.
pub fn closed_answer(hours: &Hours, tz: Tz) -> String {
    format!(
        "The agency's agents are not available right now (transfer hours: {hours}, {tz}). Do not \
         transfer. Take a message: the caller's name, number, what they need and the best time to \
         call back, and say a licensed agent will call back."
    )
}

/// Our answer to a `transfer-destination-request` for an agency whose transfer number is
/// `number`, asked at `at`: the number (a warm transfer) within `hours`, else an error that tells
/// the assistant to take a message. Also says whether it was within the hours.
pub fn request_answer(
    number: &str,
    hours: &Hours,
    at: DateTime<Utc>,
    tz: Tz,
) -> (serde_json::Value, bool) {
    if hours.contains(at, tz) {
        (
            serde_json::json!({"destination": destination(number)}),
            true,
        )
    } else {
        (
            serde_json::json!({"error": closed_answer(hours, tz)}),
            false,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn hours(text: &str) -> Hours {
        text.parse().expect(text)
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .expect("instant")
    }

    #[test]
    fn the_grammar_accepts_ranges_and_keywords_and_prints_them_canonically() {
        assert_eq!(hours("always"), Hours::Always);
        assert_eq!(hours(" NEVER "), Hours::Never);
        let h = hours("mon-fri 08:00-17:00,  Sat 09:00-12:00");
        assert_eq!(h.to_string(), "Mon-Fri 08:00-17:00, Sat 09:00-12:00");
        assert_eq!(hours(&h.to_string()), h);
        assert_eq!(
            hours("Fri-Mon 10:00-24:00").to_string(),
            "Mon 10:00-24:00, Fri-Sun 10:00-24:00"
        );
        assert_eq!(hours("Sun 00:00-24:00").to_string(), "Sun 00:00-24:00");
    }

    #[test]
    fn the_grammar_refuses_what_it_cannot_read_with_a_reason() {
        for (text, says) in [
            ("", "no hours"),
            ("Mon-Fri", "expected days then times"),
            ("Mon-Fri 8:00-17:00", "bad time"),
            ("Mon-Fri 08:00-25:00", "bad time"),
            ("Mon-Fri 08:60-17:00", "bad time"),
            ("Mon-Fri 17:00-08:00", "end must be after the start"),
            ("Mon-Fri 08:00-08:00", "end must be after the start"),
            ("Lun-Vie 08:00-17:00", "unknown day"),
            ("Mon-Fri 08:00", "expected times"),
            ("Mon-Fri 08:00-17:00,", "expected days then times"),
        ] {
            let err = text.parse::<Hours>().expect_err(text);
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }

    #[test]
    fn phoenix_hours_hold_all_year_without_daylight_saving() {
        let tz = chrono_tz::America::Phoenix; // UTC-7 all year
        let h = hours("Mon-Fri 08:00-17:00, Sat 09:00-12:00");
        // Wednesday 2026-01-14 and 2026-07-15: 08:00 local is 15:00 UTC in both.
        for (y, mo, d) in [(2026, 1, 14), (2026, 7, 15)] {
            assert!(!h.contains(utc(y, mo, d, 14, 59), tz), "07:59");
            assert!(h.contains(utc(y, mo, d, 15, 0), tz), "08:00 opens");
            assert!(h.contains(utc(y, mo, d, 23, 59), tz), "16:59");
            assert!(!h.contains(utc(y, mo, d + 1, 0, 0), tz), "17:00 closes");
        }
        // Saturday 2026-01-17 09:00-12:00 local = 16:00-19:00 UTC; Sunday closed.
        assert!(h.contains(utc(2026, 1, 17, 16, 0), tz));
        assert!(!h.contains(utc(2026, 1, 17, 19, 0), tz));
        assert!(!h.contains(utc(2026, 1, 18, 18, 0), tz));
        // Friday 17:30 local is Saturday 00:30 UTC: the local day counts.
        assert!(!h.contains(utc(2026, 1, 17, 0, 30), tz));
    }

    #[test]
    fn hours_follow_the_wall_clock_across_daylight_saving() {
        let tz = chrono_tz::America::New_York;
        let h = hours("Mon-Fri 08:00-17:00");
        // Winter (EST, UTC-5): 08:00 is 13:00 UTC. Summer (EDT, UTC-4): 08:00 is 12:00 UTC.
        assert!(!h.contains(utc(2026, 1, 14, 12, 30), tz));
        assert!(h.contains(utc(2026, 1, 14, 13, 0), tz));
        assert!(h.contains(utc(2026, 7, 15, 12, 0), tz));
        assert!(!h.contains(utc(2026, 7, 15, 21, 0), tz), "17:00 EDT");
        // Monday 2026-03-09, the day after the spring change: 08:00 EDT = 12:00 UTC.
        assert!(h.contains(utc(2026, 3, 9, 12, 0), tz));
        assert!(!h.contains(utc(2026, 3, 9, 11, 59), tz));
    }

    #[test]
    fn always_and_never_ignore_the_clock() {
        let at = utc(2026, 12, 25, 3, 0);
        assert!(Hours::Always.contains(at, chrono_tz::America::Phoenix));
        assert!(!Hours::Never.contains(at, chrono_tz::America::Phoenix));
    }

    #[test]
    fn the_request_gets_the_number_in_hours_and_a_message_outside() {
        let tz = chrono_tz::America::Phoenix;
        let h = hours("Mon-Fri 08:00-17:00");
        // Wednesday 2026-01-14 10:00 local (17:00 UTC), then 20:00 local (03:00 UTC next day).
        let (open, in_hours) = request_answer("+19285550100", &h, utc(2026, 1, 14, 17, 0), tz);
        assert!(in_hours);
        assert_eq!(open["destination"]["number"], "+19285550100");
        assert_eq!(open["destination"]["message"], CONNECTING);
        assert!(open.get("error").is_none());
        let (closed, in_hours) = request_answer("+19285550100", &h, utc(2026, 1, 15, 3, 0), tz);
        assert!(!in_hours);
        assert!(closed.get("destination").is_none());
        let error = closed["error"].as_str().expect("error");
        assert!(
            error.contains("Take a message") && error.contains("Mon-Fri 08:00-17:00"),
            "{error}"
        );
    }

    #[test]
    fn only_e164_numbers_are_transfer_numbers() {
        assert!(is_e164("+19285550100"));
        assert!(is_e164("+5215512345678"));
        for bad in [
            "9285550100",
            "+0928555010",
            "+1 928 555 0100",
            "+1928-555",
            "+",
            "+123456",
            "+1234567890123456",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
    }
}
