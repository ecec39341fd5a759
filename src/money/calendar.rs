//! Calendar months and days in a time zone (the billing zone): what billing, the lifecycle and
//! the reports count in. A leaf: it needs nothing of the crate.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;

/// A calendar month, `YYYY-MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Month {
    pub first_day: NaiveDate,
}

impl Month {
    pub fn parse(text: &str) -> Result<Month, String> {
        let first_day = NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d")
            .map_err(|_| format!("{text:?} is not a month (YYYY-MM)"))?;
        Ok(Month { first_day })
    }

    pub fn containing(at: DateTime<Utc>, tz: Tz) -> Month {
        let local = at.with_timezone(&tz).date_naive();
        Month {
            first_day: local.with_day(1).unwrap_or(local),
        }
    }

    pub fn next(self) -> Month {
        let (y, m) = (self.first_day.year(), self.first_day.month());
        let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        Month {
            first_day: NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(self.first_day),
        }
    }

    pub fn previous(self) -> Month {
        let (y, m) = (self.first_day.year(), self.first_day.month());
        let (y, m) = if m == 1 { (y - 1, 12) } else { (y, m - 1) };
        Month {
            first_day: NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(self.first_day),
        }
    }

    /// The instant the month starts in `tz`.
    pub fn start(self, tz: Tz) -> DateTime<Utc> {
        day_start(self.first_day, tz)
    }

    /// Whether the month is over at `now` in `tz` (no more usage can occur in it).
    pub fn has_ended(self, tz: Tz, now: DateTime<Utc>) -> bool {
        self.next().start(tz) <= now
    }

    pub fn label(self) -> String {
        self.first_day.format("%Y-%m").to_string()
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

/// The instant `day` begins in `tz` (its first existing local time on a DST change).
pub fn day_start(day: NaiveDate, tz: Tz) -> DateTime<Utc> {
    let midnight = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    tz.from_local_datetime(&midnight)
        .earliest()
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.from_utc_datetime(&midnight))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_ending_at_3_utc_on_december_1st_is_november_in_phoenix() {
        let at = DateTime::parse_from_rfc3339("2026-12-01T03:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        assert_eq!(
            Month::containing(at, chrono_tz::America::Phoenix).label(),
            "2026-11"
        );
        assert_eq!(Month::containing(at, chrono_tz::UTC).label(), "2026-12");
        let nov = Month::parse("2026-11").expect("month");
        assert_eq!(
            nov.start(chrono_tz::America::Phoenix).to_rfc3339(),
            "2026-11-01T07:00:00+00:00"
        );
        assert_eq!(nov.next().label(), "2026-12");
        assert_eq!(
            Month::parse("2026-01").expect("m").previous().label(),
            "2025-12"
        );
        assert!(Month::parse("2026-13").is_err());
        assert!(!nov.has_ended(chrono_tz::America::Phoenix, at));
        assert!(nov.has_ended(chrono_tz::UTC, at));
    }
}
