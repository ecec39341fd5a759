//! Money is exact: `Decimal` in Rust, `NUMERIC` in PostgreSQL, and one rounding rule.
//!
//! Usage rows keep unrounded amounts; an invoice line is rounded once, half away from zero, to
//! cents, and an invoice total is the sum of its rounded lines.

pub mod calendar;

use rust_decimal::{Decimal, RoundingStrategy};

/// Decimal places kept for metered quantities (minutes to the microsecond-minute).
pub const QUANTITY_DP: u32 = 6;

/// The one rounding rule for an amount that reaches a customer.
pub fn round_line(amount: Decimal) -> Decimal {
    amount.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// `$12.34`: an amount as a customer reads it, rounded once by [`round_line`].
pub fn usd(amount: Decimal) -> String {
    format!("${:.2}", round_line(amount))
}

/// Unrounded cost of a usage row: quantity x unit price, exact.
pub fn usage_cost(quantity: Decimal, unit_price: Decimal) -> Decimal {
    quantity * unit_price
}

/// Call minutes from seconds, kept to [`QUANTITY_DP`] places (half away from zero).
pub fn minutes_from_seconds(seconds: Decimal) -> Decimal {
    (seconds / Decimal::from(60))
        .round_dp_with_strategy(QUANTITY_DP, RoundingStrategy::MidpointAwayFromZero)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).expect("decimal literal")
    }

    #[test]
    fn three_scans_round_half_away_from_zero_once() {
        let cost = usage_cost(Decimal::from(3), d("0.075"));
        assert_eq!(cost, d("0.225"));
        assert_eq!(round_line(cost), d("0.23"));
    }

    #[test]
    fn a_thousand_scans_bill_seventy_five_dollars_not_eighty() {
        let per_event_sum: Decimal = (0..1000)
            .map(|_| usage_cost(Decimal::ONE, d("0.075")))
            .sum();
        assert_eq!(round_line(per_event_sum), d("75.00"));
    }

    #[test]
    fn minutes_keep_six_places() {
        assert_eq!(minutes_from_seconds(d("90")), d("1.5"));
        assert_eq!(minutes_from_seconds(d("1")), d("0.016667"));
        assert_eq!(round_line(d("-0.125")), d("-0.13"));
    }
}
