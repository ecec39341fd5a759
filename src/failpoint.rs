//! Crash points for the reliability suite. `AGENT_METER_FAILPOINTS=name=N[,name=N...]` makes the
//! process abort (no cleanup, no flush: as close to `kill -9` as a process can do to itself) the
//! N-th time it reaches `name`. Unset in production, where a check is one `OnceLock` read.
//!
//! Hand-written rather than `fail` (tikv): that crate compiles its points in only under a cargo
//! feature, and the suite must run with README's plain `cargo test` against the real binary.
//!
//! Points: `after_provider_answer` (a paid answer is in hand, not yet saved) and
//! `after_effect_commit` (the effects are committed, the job not yet acked) and
//! `after_stripe_invoice` (Stripe made the invoice; its id is not stored, no item is on it).

use std::sync::{
    OnceLock,
    atomic::{AtomicU64, Ordering},
};

pub const AFTER_PROVIDER_ANSWER: &str = "after_provider_answer";
pub const AFTER_EFFECT_COMMIT: &str = "after_effect_commit";
pub const AFTER_STRIPE_INVOICE: &str = "after_stripe_invoice";

struct Point {
    name: String,
    at: u64,
    hits: AtomicU64,
}

fn points() -> &'static [Point] {
    static POINTS: OnceLock<Vec<Point>> = OnceLock::new();
    POINTS.get_or_init(|| {
        std::env::var("AGENT_METER_FAILPOINTS")
            .map(|spec| parse(&spec))
            .unwrap_or_default()
    })
}

fn parse(spec: &str) -> Vec<Point> {
    spec.split(',')
        .filter_map(|item| {
            let (name, at) = item.trim().split_once('=')?;
            Some(Point {
                name: name.to_string(),
                at: at.trim().parse().ok().filter(|n| *n > 0)?,
                hits: AtomicU64::new(0),
            })
        })
        .collect()
}

/// Aborts the process if `name` is armed and this is its N-th hit.
pub fn hit(name: &str) {
    if let Some(at) = counts(points(), name) {
        eprintln!("failpoint {name} reached (hit {at}): aborting");
        std::process::abort();
    }
}

/// Counts a hit of `name` in `points`: `Some(N)` when this is an armed point's N-th hit.
fn counts(points: &[Point], name: &str) -> Option<u64> {
    points
        .iter()
        .filter(|p| p.name == name)
        .find(|p| p.hits.fetch_add(1, Ordering::SeqCst) + 1 == p.at)
        .map(|p| p.at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_counts_and_skips_junk() {
        let points = parse("after_effect_commit=3, after_provider_answer=1,bad,zero=0,x=y");
        let names: Vec<(&str, u64)> = points.iter().map(|p| (p.name.as_str(), p.at)).collect();
        assert_eq!(
            names,
            [("after_effect_commit", 3), ("after_provider_answer", 1)]
        );
    }

    #[test]
    fn a_point_fires_on_its_nth_hit_only_and_unarmed_points_never() {
        let points = parse("after_effect_commit=3");
        let hits: Vec<Option<u64>> = (0..5)
            .map(|_| counts(&points, "after_effect_commit"))
            .collect();
        assert_eq!(hits, [None, None, Some(3), None, None]);
        assert!((0..5).all(|_| counts(&points, "never_armed").is_none()));
        // With nothing armed (the test process has no AGENT_METER_FAILPOINTS), `hit` returns.
        hit("never_armed");
    }
}
