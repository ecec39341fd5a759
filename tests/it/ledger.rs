//! Every cent once (issue 14): each usage row is billed on exactly one invoice, ever, whatever
//! order usage, rollups, finalizes, skipped months and corrections come in.
//!
//! The property test drives random sequences against a real database and checks the ledger
//! after every step; the named tests pin one scenario each. Its sequences also move the agencies
//! through their lives (`lifecycle::apply`: billing start, pause, resume, cancel, reactivate) at
//! instants the sequence's own clock gives, and roll up and finalize in a zone chosen per step.

use std::collections::BTreeMap;

use agent_meter::{
    billing::{self, FinalizeError, Month, month::day_start},
    lifecycle::{self, Move, MoveError, State},
    money,
    store::{
        pricing, reports,
        usage::{self, NewUsage},
        usage_daily,
    },
};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::{America::Phoenix, Pacific::Kiritimati, Tz, UTC};
use proptest::{
    collection::vec,
    prelude::*,
    test_runner::{Config, RngSeed, TestCaseError, TestRunner},
};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::helpers::*;

/// The months the sequences live in: 2026-10 (before anyone's billing starts) to 2027-03.
const FIRST: &str = "2026-10";
const MONTHS: u8 = 6;

/// `Ok` when nothing was `found`, else a failure saying `what` was, and listing it.
fn none_of<T: std::fmt::Debug>(found: Vec<T>, what: &str) -> Result<(), TestCaseError> {
    if found.is_empty() {
        Ok(())
    } else {
        Err(TestCaseError::fail(format!("{what}: {found:?}")))
    }
}

fn month_at(i: u8) -> Month {
    (0..i).fold(Month::parse(FIRST).expect("month"), |m, _| m.next())
}

/// An instant inside month `i`, `second` seconds after it starts (under 27 days).
fn instant_in(i: u8, second: u32) -> DateTime<Utc> {
    month_at(i).start(Phoenix) + Duration::seconds(i64::from(second % 2_332_800))
}

/// An instant just before month `i` starts in Phoenix and after it starts in Kiritimati (21
/// hours earlier): month `i - 1` in Phoenix, `i` in Kiritimati, either in UTC. A row there is
/// billed in one month or the other depending on the zone of the invoices around it.
fn edge_of(i: u8, second: u32) -> DateTime<Utc> {
    month_at(i).start(Phoenix) - Duration::seconds(1 + i64::from(second % 75_600))
}

/// The billing zones the steps roll up, finalize and move agencies in: the westernmost and the
/// easternmost there are, and UTC between them (month starts up to 21 hours apart).
const ZONES: [Tz; 3] = [Phoenix, UTC, Kiritimati];

/// How far into the current month (from its start in Phoenix) the sequence's clock may go: in
/// every zone of [`ZONES`] the clock is then inside the same month, at least a day from its edges,
/// so "has this month ended" means the same in all of them.
const LATEST: Duration = Duration::days(27);

/// A (metric, unit price) the generated usage is metered at; two minute prices give two lines.
const METERS: [(&str, &str); 4] = [
    ("solar_ocr_scan", "0.075"),
    ("vapi_call_minutes", "0.20"),
    ("vapi_call_minutes", "0.25"),
    ("water_lookup", "0"),
];

/// Prices a re-pricing step may set.
const REPRICES: [&str; 3] = ["0.09", "0.30", "0.125"];

#[derive(Debug, Clone)]
enum Step {
    /// Usage of `agent` occurring `back` months before the current one (0 = on time; on time and
    /// after the clock, the clock moves to it: usage is metered once it happened), or at the
    /// `edge` where that month starts (before it starts in Phoenix, after it does in Kiritimati).
    /// Usage the service would not meter (while the agency is cancelled) is not metered.
    Use {
        agent: usize,
        back: u8,
        meter: usize,
        amount: u32,
        second: u32,
        edge: bool,
    },
    /// A correction: an existing positive row of `agent` reversed and metered again.
    Correct {
        agent: usize,
        pick: u8,
        amount: u32,
    },
    /// The calendar moves to the next month.
    Advance,
    Rollup {
        month: u8,
        zone: usize,
    },
    Finalize {
        month: u8,
        agent: Option<usize>,
        zone: usize,
    },
    /// The ledger's daily summary is brought up to date, as `prune_jobs` does.
    Summarize,
    /// A lifecycle move of `agent`, `hours` after the clock's last instant, days read in `zone`.
    Life {
        agent: usize,
        mv: LifeMove,
        zone: usize,
        hours: u16,
    },
    /// A default price of `METERS[meter]`'s metric at `price` from day `day` of the month `back`
    /// months before the current one (or the day after the metric's latest price, when later),
    /// re-pricing what was metered since (`prices set --reprice`): refused when a finalized
    /// invoice holds a row it would re-price (then nothing changes, the price included);
    /// otherwise reversals and re-entries in the rows' own months, ledger rows like corrections.
    Reprice {
        meter: usize,
        back: u8,
        day: u8,
        price: usize,
        zone: usize,
    },
}

/// The lifecycle moves a sequence makes (see [`Step::Life`]).
#[derive(Debug, Clone)]
enum LifeMove {
    Pause,
    Resume,
    /// `Move::Cancel(None)`: today in the step's zone.
    CancelToday,
    /// A cancellation `days` after today (before: a past cancellation; after: scheduled).
    CancelOn {
        days: i16,
    },
    Reactivate,
    /// Billing starts on `day` (1-28) of month `month`.
    StartOn {
        month: u8,
        day: u8,
    },
}

fn life_move() -> impl Strategy<Value = LifeMove> {
    prop_oneof![
        1 => Just(LifeMove::Pause),
        1 => Just(LifeMove::Resume),
        2 => Just(LifeMove::CancelToday),
        3 => (-45..45i16).prop_map(|days| LifeMove::CancelOn { days }),
        4 => Just(LifeMove::Reactivate),
        2 => (0..MONTHS - 1, 1..29u8).prop_map(|(month, day)| LifeMove::StartOn { month, day }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (
            (0..2usize, 0..3u8, 0..METERS.len()),
            (1..600_000u32, any::<u32>(), proptest::bool::weighted(0.3))
        )
            .prop_map(|((agent, back, meter), (amount, second, edge))| Step::Use {
                agent,
                back,
                meter,
                amount,
                second,
                edge
            }),
        1 => (0..2usize, any::<u8>(), 1..600_000u32)
            .prop_map(|(agent, pick, amount)| Step::Correct { agent, pick, amount }),
        2 => Just(Step::Advance),
        2 => (0..MONTHS, 0..ZONES.len()).prop_map(|(month, zone)| Step::Rollup { month, zone }),
        3 => (0..MONTHS, proptest::option::of(0..2usize), 0..ZONES.len())
            .prop_map(|(month, agent, zone)| Step::Finalize { month, agent, zone }),
        1 => Just(Step::Summarize),
        5 => (0..2usize, life_move(), 0..ZONES.len(), 0..200u16)
            .prop_map(|(agent, mv, zone, hours)| Step::Life { agent, mv, zone, hours }),
        2 => (0..2usize, 0..3u8, 1..29u8, 0..REPRICES.len(), 0..ZONES.len())
            .prop_map(|(meter, back, day, price, zone)| Step::Reprice { meter, back, day, price, zone }),
    ]
}

/// The two agents a sequence bills: the seed's first (billing from 2026-11-01) and a second one
/// whose billing starts mid-December (so its first month, and its setup fee, is 2026-12).
struct World {
    db: TestDb,
    agents: [(Uuid, String); 2],
    /// Index of the current month; usage occurs in it or before.
    now: u8,
    /// How far into the current month (from its start in Phoenix) the clock is; only grows
    /// within a month, at most [`LATEST`].
    into: Duration,
    /// The two agents' lives as the model expects them.
    lives: [Life; 2],
    /// When each usage row of the two agents occurred (agent, instant).
    occurred: Vec<(usize, DateTime<Utc>)>,
    /// (agent, month) finalized so far, as the model expects.
    finalized: Vec<(usize, u8)>,
    /// Finalized invoices as they were when frozen: they must never change.
    frozen: BTreeMap<Uuid, (Decimal, Vec<Line>)>,
    keys: u32,
}

type Line = (String, String, Decimal, Decimal, Decimal);

/// An invoice and metric whose held rows and lines disagree (either sum may be missing).
type HeldVsLines = (Uuid, Option<String>, Option<Decimal>, Option<Decimal>);
/// A usage row (agent, occurred, created) held by a number of invoices, and whether it is
/// stranded (see [`World::settle`]).
type NotOnce = (Uuid, DateTime<Utc>, DateTime<Utc>, i64, bool);
/// An agent, metric and price whose ledger and invoices disagree.
type LedgerVsBilled = (Uuid, String, Decimal, Option<Decimal>, Option<Decimal>);

/// The quiet agents (billable from 2026-11, no usage, finalized only by whole-month finalizes).
const QUIET: usize = 2;

/// An agency's life as the model expects it: what `lifecycle::apply` must have stored, and the
/// months it pays for.
#[derive(Debug, Clone, PartialEq)]
struct Life {
    status: &'static str,
    starts: NaiveDate,
    cancelled_on: Option<NaiveDate>,
    /// Months not billed between a cancellation and a reactivation: [from, to), first days.
    gaps: Vec<(NaiveDate, NaiveDate)>,
    /// The latest reactivation's day (a cancellation cannot be dated before it).
    reactivated: Option<NaiveDate>,
    /// Spans the agency was out of service (cancelled, until reactivated): no usage occurs in
    /// them, as calls then are refused and never metered.
    off: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Life {
    fn new(starts: &str) -> Life {
        Life {
            status: "active",
            starts: starts.parse().expect("day"),
            cancelled_on: None,
            gaps: Vec::new(),
            reactivated: None,
            off: Vec::new(),
        }
    }

    /// The agency's state at `now` with days read in `tz` (the rule the portal and the webhook
    /// enforce).
    fn state(&self, now: DateTime<Utc>, tz: Tz) -> State {
        match self.cancelled_on {
            Some(day) if day_start(day, tz) <= now => State::Cancelled,
            _ if self.status == "paused" => State::Paused,
            _ if self.status == "cancelled" => State::Cancelled,
            _ => State::Active,
        }
    }

    /// Whether the agency pays for month `m`: billing started before the month ends, it was not
    /// cancelled before the month starts, and the month is not in a gap.
    fn billable(&self, m: u8) -> bool {
        let month = month_at(m);
        self.starts < month.next().first_day
            && self.cancelled_on.is_none_or(|c| c >= month.first_day)
            && !self
                .gaps
                .iter()
                .any(|g| g.0 <= month.first_day && month.first_day < g.1)
    }

    /// Whether a call at `at` would be metered: not while the agency is cancelled (taken from
    /// the earliest start of the cancellation day in any zone, so whatever the zone).
    fn meters(&self, at: DateTime<Utc>) -> bool {
        self.cancelled_on
            .is_none_or(|day| at < day_start(day, Kiritimati))
            && !self.off.iter().any(|o| o.0 <= at && at < o.1)
    }
}
impl World {
    async fn new() -> World {
        let db = TestDb::seeded().await;
        let mut agents = Vec::new();
        for phone in [PHONE_1, PHONE_2] {
            let id = db.agent_id(phone).await;
            let email: String = db
                .scalar_with("SELECT email FROM agents WHERE id = $1", id)
                .await;
            agents.push((id, email));
        }
        sqlx::query("UPDATE agents SET billing_starts_on = '2026-12-15' WHERE id = $1")
            .bind(agents[1].0)
            .execute(&db.pool)
            .await
            .expect("second agent starts in December");
        // Only the two agents take part; the other seeded agents are cancelled before October.
        sqlx::query(
            "UPDATE agents SET cancelled_on = '2026-09-01', status = 'cancelled'
              WHERE id <> ALL($1)",
        )
        .bind(vec![agents[0].0, agents[1].0])
        .execute(&db.pool)
        .await
        .expect("others cancelled");
        // Enough quiet agents (billable, no usage) that whole-month rollups take the one-scan
        // path while single-agent finalizes take the by-index one.
        db.execute(
            "INSERT INTO agents (agency_name, email, billing_starts_on)
             SELECT 'Quiet ' || g, 'quiet' || g || '@agent-meter.example', DATE '2026-11-01'
               FROM generate_series(1, 55) g",
        )
        .await;
        let [a, b]: [(Uuid, String); 2] = agents.try_into().expect("two agents");
        World {
            db,
            agents: [a, b],
            now: 1,
            into: Duration::days(1),
            lives: [Life::new("2026-11-01"), Life::new("2026-12-15")],
            occurred: Vec::new(),
            finalized: Vec::new(),
            frozen: BTreeMap::new(),
            keys: 0,
        }
    }

    async fn meter(&mut self, agent: usize, meter: usize, amount: u32, at: DateTime<Utc>) {
        let (metric, price) = METERS[meter];
        let quantity = if metric == "vapi_call_minutes" {
            Decimal::new(i64::from(amount), 5) // up to 6 minutes, to 1/100,000
        } else {
            Decimal::ONE
        };
        self.keys += 1;
        let mut conn = self.db.pool.acquire().await.expect("conn");
        usage::insert_once(
            &mut conn,
            &NewUsage {
                agent_id: self.agents[agent].0,
                metric_type: metric,
                quantity,
                unit_price_usd: price.parse().expect("price"),
                provider_cost_usd: None,
                occurred_at: at,
                idempotency_key: &format!("prop:{}", self.keys),
                metadata: serde_json::json!({}),
            },
        )
        .await
        .expect("usage row");
        self.occurred.push((agent, at));
    }

    /// Reverses one live minutes row (same time and price, negated) and meters it again.
    async fn correct(&mut self, agent: usize, pick: u8, amount: u32) {
        let live: Vec<(String, Decimal, Decimal, DateTime<Utc>)> = sqlx::query_as(
            "SELECT idempotency_key, quantity, unit_price_usd, occurred_at FROM agent_usage_metrics u
              WHERE agent_id = $1 AND metric_type = 'vapi_call_minutes' AND quantity > 0
                AND NOT EXISTS (SELECT 1 FROM agent_usage_metrics r
                                 WHERE r.agent_id = u.agent_id AND r.metadata->>'reverses' = u.idempotency_key)
              ORDER BY created_at",
        )
        .bind(self.agents[agent].0)
        .fetch_all(&self.db.pool)
        .await
        .expect("live rows");
        let Some((key, qty, price, at)) = live.get(usize::from(pick) % live.len().max(1)).cloned()
        else {
            return;
        };
        let mut conn = self.db.pool.acquire().await.expect("conn");
        usage::insert_once(
            &mut conn,
            &NewUsage {
                agent_id: self.agents[agent].0,
                metric_type: "vapi_call_minutes",
                quantity: -qty,
                unit_price_usd: price,
                provider_cost_usd: None,
                occurred_at: at,
                idempotency_key: &format!("{key}:rev"),
                metadata: serde_json::json!({"reverses": key}),
            },
        )
        .await
        .expect("reversal");
        drop(conn);
        self.occurred.push((agent, at));
        let meter = if price == Decimal::new(20, 2) { 1 } else { 2 };
        self.meter(agent, meter, amount, at).await;
    }

    /// The instant the sequence's "now" stands for: inside the current month in every zone.
    fn clock(&self) -> DateTime<Utc> {
        month_at(self.now).start(Phoenix) + self.into
    }

    /// Moves the clock forward to `at`, within the current month (never back).
    fn wait_until(&mut self, at: DateTime<Utc>) {
        let into = (at - month_at(self.now).start(Phoenix)).min(LATEST);
        self.into = self.into.max(into);
    }

    fn billable(&self, agent: usize, m: u8) -> bool {
        match agent {
            QUIET => m >= 1,
            a => self.lives[a].billable(m),
        }
    }

    async fn finalize(&mut self, m: u8, agent: Option<usize>, tz: Tz) -> Result<(), TestCaseError> {
        let who: Vec<usize> = match agent {
            Some(a) => vec![a],
            None => vec![0, 1, QUIET],
        };
        // Every earlier month the agent pays for must be final (the others have no invoice).
        let expect_ok = m < self.now
            && who.iter().all(|&a| {
                !self.billable(a, m)
                    || (0..m)
                        .filter(|&earlier| self.billable(a, earlier))
                        .all(|earlier| self.finalized.contains(&(a, earlier)))
            });
        let email = agent.map(|a| self.agents[a].1.clone());
        let got = billing::finalize(
            &self.db.pool,
            month_at(m),
            tz,
            email.as_deref(),
            self.clock(),
        )
        .await;
        match (&got, expect_ok) {
            (Ok(_), true) => {
                for a in who {
                    if self.billable(a, m) && !self.finalized.contains(&(a, m)) {
                        self.finalized.push((a, m));
                    }
                }
                Ok(())
            }
            (Err(FinalizeError::Order(_)), false) => Ok(()),
            _ => Err(TestCaseError::fail(format!(
                "finalize {} in {tz} for {agent:?} at {}: expected ok={expect_ok}, got {got:?}",
                month_at(m),
                self.clock()
            ))),
        }
    }

    /// What `mv` of `agent` must do at the clock's instant in `tz`: the agent's life after it,
    /// or `None` when it must be refused. The rules are the README's ("An agency's life").
    fn expect_move(&self, agent: usize, mv: &Move, tz: Tz) -> Option<Life> {
        let now = self.clock();
        let today = now.with_timezone(&tz).date_naive();
        let before = &self.lives[agent];
        let from = before.state(now, tz);
        let mut after = before.clone();
        match mv {
            Move::Pause => {
                (from == State::Active).then_some(())?;
                after.status = "paused";
            }
            Move::Resume => {
                (from == State::Paused).then_some(())?;
                after.status = "active";
            }
            Move::Cancel(on) => {
                let on = on.unwrap_or(today);
                before.cancelled_on.is_none().then_some(())?;
                // Not before the current term: the billing start or the latest reactivation.
                let term = before
                    .reactivated
                    .map_or(before.starts, |r| r.max(before.starts));
                (on >= term).then_some(())?;
                let ends = day_start(on, tz);
                if on < today {
                    // A past day only while nothing occurred on or after it and no later
                    // month's invoice is final.
                    let used = self.occurred.iter().any(|o| o.0 == agent && o.1 >= ends);
                    let month = Month::containing(ends, tz);
                    let later = self
                        .finalized
                        .iter()
                        .any(|f| f.0 == agent && month_at(f.1) > month);
                    (!used && !later).then_some(())?;
                }
                if ends <= now {
                    after.status = "cancelled";
                }
                after.cancelled_on = Some(on);
            }
            Move::Reactivate => {
                let cancelled = before.cancelled_on?;
                if from == State::Cancelled {
                    let gone = Month::containing(day_start(cancelled, tz), tz);
                    let back = Month::containing(now, tz);
                    if back > gone.next() {
                        after.gaps.push((gone.next().first_day, back.first_day));
                    }
                    after.off.push((day_start(cancelled, Kiritimati), now));
                }
                after.status = if from == State::Paused {
                    "paused"
                } else {
                    "active"
                };
                after.cancelled_on = None;
                after.reactivated = Some(before.reactivated.map_or(today, |r| r.max(today)));
            }
            Move::BillingStartsOn(day) => {
                // Only while no invoice of the agent is final, not after its cancellation, and
                // never once it was cancelled and reactivated (a gap).
                let finalized = self.finalized.iter().any(|f| f.0 == agent);
                let after_cancel = before.cancelled_on.is_some_and(|c| *day > c);
                (!finalized && !after_cancel && before.gaps.is_empty()).then_some(())?;
                after.starts = *day;
            }
        }
        Some(after)
    }

    /// A lifecycle move through `lifecycle::apply` at the clock's instant: made as the model
    /// expects, or refused with `MoveError::Refused` (then a no-op) when the model refuses it;
    /// never a database error.
    async fn life(&mut self, agent: usize, mv: &LifeMove, tz: Tz) -> Result<(), TestCaseError> {
        let now = self.clock();
        let today = now.with_timezone(&tz).date_naive();
        let mv = match *mv {
            LifeMove::Pause => Move::Pause,
            LifeMove::Resume => Move::Resume,
            LifeMove::CancelToday => Move::Cancel(None),
            LifeMove::CancelOn { days } => {
                Move::Cancel(Some(today + Duration::days(i64::from(days))))
            }
            LifeMove::Reactivate => Move::Reactivate,
            LifeMove::StartOn { month, day } => Move::BillingStartsOn(
                month_at(month).first_day + Duration::days(i64::from(day) - 1),
            ),
        };
        let expected = self.expect_move(agent, &mv, tz);
        let got = lifecycle::apply(
            &self.db.pool,
            &self.agents[agent].1,
            mv.clone(),
            "prop",
            tz,
            now,
        )
        .await;
        match (got, expected) {
            (Ok(_), Some(after)) => {
                self.lives[agent] = after;
                Ok(())
            }
            (Err(MoveError::Refused(_)), None) => Ok(()),
            (got, expected) => Err(TestCaseError::fail(format!(
                "{mv:?} of agent {agent} at {now} in {tz} ({:?}): expected {expected:?}, got {got:?}",
                self.lives[agent]
            ))),
        }
    }

    /// A retroactive default price, as `prices set --reprice` makes it (one transaction).
    async fn reprice(
        &mut self,
        meter: usize,
        month: u8,
        day: u8,
        price: usize,
        tz: Tz,
    ) -> Result<(), TestCaseError> {
        let metric = METERS[meter].0;
        let price: Decimal = REPRICES[price].parse().expect("price");
        let fail =
            |what: &str, e: &dyn std::fmt::Display| TestCaseError::fail(format!("{what}: {e}"));
        let mut tx = self.db.pool.begin().await.map_err(|e| fail("begin", &e))?;
        // Prices change in date order: the day asked for, or the day after the metric's latest
        // price when that is later (so a sequence's re-pricings take effect, not only refusals).
        let latest: Option<NaiveDate> = sqlx::query_scalar(
            "SELECT max(effective_from) FROM pricing_config WHERE metric_type = $1 AND agent_id IS NULL",
        )
        .bind(metric)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| fail("latest price", &e))?;
        let asked = month_at(month).first_day + chrono::Days::new(u64::from(day) - 1);
        let from = latest.map_or(asked, |l| asked.max(l + chrono::Days::new(1)));
        let id = match pricing::set(&mut tx, None, metric, price, None, None, from).await {
            Ok(id) => id,
            Err(e) => return Err(fail("prices set", &e)),
        };
        let r = pricing::repricing(&mut tx, None, metric, from, tz)
            .await
            .map_err(|e| fail("repricing", &e))?;
        if !r.finalized.is_empty() {
            // Refused under a finalized invoice: the price goes too.
            return tx.rollback().await.map_err(|e| fail("rollback", &e));
        }
        let written = pricing::reprice(&mut tx, None, metric, from, tz, id)
            .await
            .map_err(|e| fail("reprice", &e))?;
        prop_assert_eq!(
            written,
            u64::try_from(r.rows).unwrap_or(0),
            "re-entries, one per row"
        );
        tx.commit().await.map_err(|e| fail("commit", &e))
    }

    async fn apply(&mut self, step: &Step) -> Result<(), TestCaseError> {
        match *step {
            Step::Use {
                agent,
                back,
                meter,
                amount,
                second,
                edge,
            } => {
                let m = self.now.saturating_sub(back);
                let at = if edge {
                    edge_of(m, second)
                } else {
                    instant_in(m, second)
                };
                if self.lives[agent].meters(at) {
                    self.wait_until(at + Duration::seconds(1));
                    self.meter(agent, meter, amount, at).await;
                }
            }
            Step::Correct {
                agent,
                pick,
                amount,
            } => self.correct(agent, pick, amount).await,
            Step::Advance => {
                if self.now < MONTHS - 1 {
                    self.now += 1;
                    self.into = Duration::days(1);
                }
            }
            Step::Reprice {
                meter,
                back,
                day,
                price,
                zone,
            } => {
                let month = self.now.saturating_sub(back);
                self.reprice(meter, month, day, price, ZONES[zone]).await?
            }
            Step::Rollup { month, zone } => {
                billing::rollup(&self.db.pool, month_at(month), ZONES[zone], None)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("rollup: {e}")))?;
            }
            Step::Finalize { month, agent, zone } => {
                self.finalize(month, agent, ZONES[zone]).await?
            }
            Step::Life {
                agent,
                ref mv,
                zone,
                hours,
            } => {
                self.wait_until(self.clock() + Duration::hours(i64::from(hours)));
                self.life(agent, mv, ZONES[zone]).await?;
            }
            Step::Summarize => {
                let cut = billing::rollup::ledger_cut(&self.db.pool)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("ledger cut: {e}")))?;
                usage_daily::refresh(&self.db.pool, Phoenix, cut, std::time::Duration::MAX)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("summary: {e}")))?;
            }
        }
        Ok(())
    }

    /// Reports read through the daily summary say what the ledger says, month by month, however
    /// long ago the summary was brought up to date: events, quantity and billed (per price line,
    /// rounded once) per agent and metric.
    async fn reports_match_ledger(&self) -> Result<(), TestCaseError> {
        type Row = (Uuid, String, i64, Decimal, Decimal);
        for m in 0..MONTHS {
            let month = month_at(m);
            let mut conn = self.db.pool.acquire().await.expect("conn");
            let mut got: Vec<Row> = reports::usage(&mut conn, month, Phoenix, None)
                .await
                .expect("usage report")
                .into_iter()
                .map(|r| {
                    (
                        r.agent_id,
                        r.metric_type,
                        r.events,
                        r.quantity,
                        r.billed_usd,
                    )
                })
                .collect();
            got.sort();
            let want: Vec<Row> = sqlx::query_as(
                "SELECT agent_id, metric_type, sum(n)::int8, sum(q), sum(round(q * p, 2))
                   FROM (SELECT agent_id, metric_type, unit_price_usd AS p, count(*) AS n,
                                sum(quantity) AS q
                           FROM agent_usage_metrics WHERE occurred_at >= $1 AND occurred_at < $2
                          GROUP BY 1, 2, 3) lines
                  GROUP BY 1, 2 ORDER BY 1, 2",
            )
            .bind(month.start(Phoenix))
            .bind(month.next().start(Phoenix))
            .fetch_all(&mut *conn)
            .await
            .expect("ledger");
            if got != want {
                return Err(TestCaseError::fail(format!(
                    "usage report for {month} differs from the ledger: {got:?} vs {want:?}"
                )));
            }
        }
        Ok(())
    }

    /// The ledger's invariants, after any step.
    async fn check(&mut self) -> Result<(), TestCaseError> {
        self.reports_match_ledger().await?;
        let fail = |what: String| Err(TestCaseError::fail(what));
        let pool = &self.db.pool;
        // No row is held by two invoices (drafts or finalized).
        let twice: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM agent_usage_metrics u
              WHERE (SELECT count(*) FROM invoices i WHERE invoice_holds(i, u)) > 1",
        )
        .fetch_one(pool)
        .await
        .expect("held twice");
        if twice > 0 {
            return fail(format!("{twice} usage row(s) held by two invoices"));
        }
        // Nothing lost: a row that existed when a month at or after its own was finalized is
        // held by a finalized invoice.
        let lost: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM agent_usage_metrics u
              WHERE EXISTS (SELECT 1 FROM invoices f WHERE f.agent_id = u.agent_id
                               AND f.status = 'finalized' AND u.occurred_at < f.ends_at
                               AND u.created_at <= f.usage_through)
                AND NOT EXISTS (SELECT 1 FROM invoices f WHERE f.status = 'finalized'
                                   AND invoice_holds(f, u))",
        )
        .fetch_one(pool)
        .await
        .expect("lost rows");
        if lost > 0 {
            return fail(format!(
                "{lost} usage row(s) of a finalized period on no finalized invoice"
            ));
        }
        // Each invoice's usage and adjustment lines are exactly the rows it holds.
        let mismatched: Vec<HeldVsLines> =
            sqlx::query_as(
                "WITH held AS (
                     SELECT i.id, CASE WHEN u.occurred_at >= i.starts_at THEN 'usage' ELSE 'adjustment' END AS kind,
                            u.metric_type, u.unit_price_usd, sum(u.quantity) AS q
                       FROM invoices i JOIN agent_usage_metrics u ON invoice_holds(i, u)
                      GROUP BY 1, 2, 3, 4),
                 lines AS (
                     SELECT invoice_id AS id, kind, metric_type, unit_price_usd, quantity AS q
                       FROM invoice_lines WHERE kind IN ('usage', 'adjustment'))
                 SELECT COALESCE(h.id, l.id), COALESCE(h.metric_type, l.metric_type), h.q, l.q
                   FROM held h FULL JOIN lines l
                     ON l.id = h.id AND l.kind = h.kind AND l.metric_type = h.metric_type
                    AND l.unit_price_usd = h.unit_price_usd
                  WHERE h.q IS DISTINCT FROM l.q",
            )
            .fetch_all(pool)
            .await
            .expect("lines vs held rows");
        none_of(mismatched, "invoice lines differ from the rows they hold")?;
        // Totals are the sum of lines each rounded once; finalized invoices never change; the
        // setup fee is billed at most once, on the agent's first month.
        let invoices: Vec<(Uuid, Uuid, chrono::NaiveDate, String, Decimal)> = sqlx::query_as(
            "SELECT id, agent_id, period_start, status, total_usd FROM invoices ORDER BY period_start",
        )
        .fetch_all(pool)
        .await
        .expect("invoices");
        let mut fees: BTreeMap<Uuid, Vec<chrono::NaiveDate>> = BTreeMap::new();
        for (id, agent, period, status, total) in invoices {
            let lines: Vec<Line> = sqlx::query_as(
                "SELECT kind, metric_type, quantity, unit_price_usd, amount_usd FROM invoice_lines
                  WHERE invoice_id = $1 ORDER BY position",
            )
            .bind(id)
            .fetch_all(pool)
            .await
            .expect("lines");
            for l in &lines {
                if l.4 != money::round_line(money::usage_cost(l.2, l.3)) {
                    return fail(format!("line {l:?} is not rounded once from its quantity"));
                }
                if l.0 == "setup_fee" {
                    fees.entry(agent).or_default().push(period);
                }
            }
            let sum: Decimal = lines.iter().map(|l| l.4).sum();
            if sum != total {
                return fail(format!(
                    "invoice {period} total {total} is not its lines' sum {sum}"
                ));
            }
            if status == "finalized" {
                match self.frozen.get(&id) {
                    Some(before) if *before != (total, lines.clone()) => {
                        return fail(format!("finalized invoice {period} changed"));
                    }
                    Some(_) => {}
                    None => {
                        self.frozen.insert(id, (total, lines));
                    }
                }
            }
        }
        for (i, (agent, _)) in self.agents.iter().enumerate() {
            let first = Month::containing(day_start(self.lives[i].starts, UTC), UTC).first_day;
            match fees.get(agent).map(Vec::as_slice) {
                None => {}
                Some([only]) if *only == first => {}
                Some(other) => return fail(format!("agent {i} setup fees on {other:?}")),
            }
        }
        self.lives_match().await
    }

    /// The agencies' lives are the model's: what each move stored, the months each pays for
    /// (SQL's `billable_in`, the one rule rollups and finalize use) and the invoices that exist:
    /// no invoice, draft or final, of any agent for a month it does not pay for (after its
    /// cancellation month, in a gap, before its billing start; `lifecycle::apply` drops such
    /// drafts, and finalized ones can never fall out of the billed months).
    async fn lives_match(&self) -> Result<(), TestCaseError> {
        let fail = |what: String| Err(TestCaseError::fail(what));
        let pool = &self.db.pool;
        for (i, (agent, _)) in self.agents.iter().enumerate() {
            let want = &self.lives[i];
            let (status, starts, cancelled_on): (String, NaiveDate, Option<NaiveDate>) =
                sqlx::query_as(
                    "SELECT status, billing_starts_on, cancelled_on FROM agents WHERE id = $1",
                )
                .bind(agent)
                .fetch_one(pool)
                .await
                .expect("agent");
            let gaps: Vec<(NaiveDate, NaiveDate)> = sqlx::query_as(
                "SELECT from_month, to_month FROM agent_billing_gaps WHERE agent_id = $1
                  ORDER BY from_month",
            )
            .bind(agent)
            .fetch_all(pool)
            .await
            .expect("gaps");
            if (status.as_str(), starts, cancelled_on, &gaps)
                != (want.status, want.starts, want.cancelled_on, &want.gaps)
            {
                return fail(format!(
                    "agent {i} is ({status}, {starts}, {cancelled_on:?}, {gaps:?}), the model \
                     says {want:?}"
                ));
            }
            let billed: Vec<bool> = sqlx::query_scalar(
                "SELECT billable_in(a.id, a.billing_starts_on, a.cancelled_on, m::date)
                   FROM agents a
                  CROSS JOIN generate_series($2::date, $3::date, interval '1 month') AS m
                  WHERE a.id = $1 ORDER BY m",
            )
            .bind(agent)
            .bind(month_at(0).first_day)
            .bind(month_at(MONTHS - 1).first_day)
            .fetch_all(pool)
            .await
            .expect("billable months");
            let want_billed: Vec<bool> = (0..MONTHS).map(|m| want.billable(m)).collect();
            if billed != want_billed {
                return fail(format!(
                    "agent {i} pays for months {billed:?}, the model says {want_billed:?}"
                ));
            }
        }
        let unbilled: Vec<(Uuid, NaiveDate, String)> = sqlx::query_as(
            "SELECT i.agent_id, i.period_start, i.status FROM invoices i
               JOIN agents a ON a.id = i.agent_id
              WHERE NOT billable_in(a.id, a.billing_starts_on, a.cancelled_on, i.period_start)
              ORDER BY 1, 2",
        )
        .fetch_all(pool)
        .await
        .expect("invoices of unbilled months");
        none_of(unbilled, "invoices for months their agent does not pay for")
    }

    /// The end of a sequence: the calendar runs to the last month, every month is finalized in
    /// order and the running one rolled up. Then, per agent, metric and price, the invoices add
    /// up to the ledger's billable rows, each on exactly one invoice, and each agent has paid its
    /// setup fee once, in its first month.
    ///
    /// Which rows are billable. The sequences meter usage as the service does: never at an
    /// instant the agency is cancelled (calls then are refused and never metered), so no row
    /// occurs in a gap month or after a cancellation month; a row from before billing started is
    /// billable (the first invoice holds it as an adjustment). Every row is billable except late
    /// usage of a cancelled agency that has no open month left: an agency cancelled before the
    /// last month whose row was created after the watermark of its last finalized invoice (a late
    /// report of a call made before the cancellation). No invoice exists to hold it and it stays
    /// "awaiting rollup" (README, "An agency's life"): exactly those rows are held by no invoice.
    async fn settle(&mut self) -> Result<(), TestCaseError> {
        if self.now < MONTHS - 1 {
            self.now = MONTHS - 1;
            self.into = Duration::days(1);
        }
        for m in 0..self.now {
            self.finalize(m, None, Phoenix).await?;
            self.check().await?;
        }
        billing::rollup(&self.db.pool, month_at(self.now), Phoenix, None)
            .await
            .map_err(|e| TestCaseError::fail(format!("rollup: {e}")))?;
        self.check().await?;
        let pool = &self.db.pool;
        let not_once: Vec<NotOnce> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT u.agent_id, u.occurred_at, u.created_at,
                    (SELECT count(*) FROM invoices i WHERE invoice_holds(i, u)), {STRANDED}
               FROM agent_usage_metrics u JOIN agents a ON a.id = u.agent_id
              WHERE (SELECT count(*) FROM invoices i WHERE invoice_holds(i, u))
                    <> CASE WHEN {STRANDED} THEN 0 ELSE 1 END
              ORDER BY u.id"
        )))
        .bind(month_at(self.now).first_day)
        .fetch_all(pool)
        .await
        .expect("held once");
        none_of(
            not_once,
            "usage row(s) (agent, occurred, created, invoices holding it, stranded) not on \
             exactly one invoice after settling (none if stranded)",
        )?;
        for (i, (agent, _)) in self.agents.iter().enumerate() {
            let first = Month::containing(day_start(self.lives[i].starts, UTC), UTC).first_day;
            let fees: Vec<NaiveDate> = sqlx::query_scalar(
                "SELECT i.period_start FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id
                  WHERE l.agent_id = $1 AND l.kind = 'setup_fee' ORDER BY 1",
            )
            .bind(agent)
            .fetch_all(pool)
            .await
            .expect("setup fees");
            if fees != [first] {
                return Err(TestCaseError::fail(format!(
                    "agent {i} ({:?}) paid setup fees on {fees:?}, not once on {first}",
                    self.lives[i]
                )));
            }
        }
        let differ: Vec<LedgerVsBilled> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "WITH ledger AS (SELECT agent_id, metric_type, unit_price_usd, sum(quantity) AS q
                                   FROM agent_usage_metrics u JOIN agents a ON a.id = u.agent_id
                                  WHERE NOT {STRANDED} GROUP BY 1, 2, 3),
                      billed AS (SELECT agent_id, metric_type, unit_price_usd, sum(quantity) AS q
                                   FROM invoice_lines WHERE kind IN ('usage', 'adjustment')
                                  GROUP BY 1, 2, 3)
                 SELECT COALESCE(l.agent_id, b.agent_id), COALESCE(l.metric_type, b.metric_type),
                        COALESCE(l.unit_price_usd, b.unit_price_usd), l.q, b.q
                   FROM ledger l FULL JOIN billed b USING (agent_id, metric_type, unit_price_usd)
                  WHERE l.q IS DISTINCT FROM b.q"
        )))
        .bind(month_at(self.now).first_day)
        .fetch_all(pool)
        .await
        .expect("ledger vs invoices");
        none_of(differ, "invoices and ledger disagree")
    }
}

/// A usage row `u` of agent `a` no invoice can ever hold (see [`World::settle`]): the agent is
/// cancelled and does not pay for the last month (`$1`), and the row was created after the
/// watermark of its latest finalized invoice.
const STRANDED: &str = "COALESCE(a.cancelled_on IS NOT NULL
         AND NOT billable_in(a.id, a.billing_starts_on, a.cancelled_on, $1::date)
         AND u.created_at > (SELECT f.usage_through FROM invoices f
                              WHERE f.agent_id = a.id AND f.status = 'finalized'
                              ORDER BY f.period_start DESC LIMIT 1), false)";

async fn run_sequence(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut world = World::new().await;
    for (i, step) in steps.iter().enumerate() {
        world.apply(step).await?;
        world
            .check()
            .await
            .map_err(|e| TestCaseError::fail(format!("after step {i} ({step:?}): {e}")))?;
    }
    world.settle().await
}

/// Random sequences of usage (on time, late, and at month edges where the zones disagree),
/// corrections, rollups and finalizes (in and out of order, for all agents or one, each in a zone
/// of [`ZONES`]), with months skipped, and lifecycle moves (billing start, pause, resume, cancel
/// today or on a past or future day, reactivate) at the sequence's own clock: each move is made
/// as the model expects or refused with `MoveError::Refused`, never a database error. After every
/// step: no row is held by two invoices, nothing finalized is lost or changed, lines are exactly
/// the rows they hold and totals the sum of rounded lines, the setup fee is at most once and on
/// the first month, the agencies' rows and gaps are the model's, `billable_in` is the model's
/// billed months and no invoice exists for a month its agent does not pay for. At the end every
/// billable row (see [`World::settle`]) is on exactly one invoice, the invoices add up to them,
/// and each agency paid its setup fee once. `LEDGER_CASES` sets how many sequences (default 10,
/// about 45 s in a debug build); `LEDGER_SEED` which (a fixed seed by default, `random` to explore).
#[test]
fn every_usage_row_is_billed_exactly_once_whatever_the_order() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let cases = std::env::var("LEDGER_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(10);
    // The same sequences on every run by default, so the suite never fails by chance;
    // `LEDGER_SEED=random` (or another number) explores others.
    let seed = match std::env::var("LEDGER_SEED").ok().as_deref() {
        Some("random") => RngSeed::Random,
        Some(n) => RngSeed::Fixed(n.parse().expect("LEDGER_SEED is a number or `random`")),
        None => RngSeed::Fixed(20_261_203),
    };
    let mut runner = TestRunner::new(Config {
        cases,
        max_shrink_iters: 200,
        failure_persistence: None,
        rng_seed: seed,
        ..Config::default()
    });
    let result = runner.run(&vec(step(), 5..45), |steps| {
        rt.block_on(run_sequence(steps))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// One solar scan of `agent` occurring `at`, metered under `key` (it must be new).
async fn insert_scan(pool: &sqlx::PgPool, agent: Uuid, at: &str, key: &str) {
    let mut conn = pool.acquire().await.expect("conn");
    let written = usage::insert_once(
        &mut conn,
        &NewUsage {
            agent_id: agent,
            metric_type: "solar_ocr_scan",
            quantity: Decimal::ONE,
            unit_price_usd: Decimal::new(75, 3),
            provider_cost_usd: None,
            occurred_at: at.parse().expect("time"),
            idempotency_key: key,
            metadata: serde_json::json!({}),
        },
    )
    .await
    .expect("usage row");
    assert!(written);
}

/// (state, invoice month, line kind, has a line id) of one usage row, by its key.
async fn provenance(db: &TestDb, key: &str) -> (String, Option<String>, Option<String>, bool) {
    sqlx::query_as(
        "SELECT p.state, to_char(p.invoice_month, 'YYYY-MM'), p.line_kind, p.invoice_line_id IS NOT NULL
           FROM usage_provenance p JOIN agent_usage_metrics u ON u.id = p.usage_id
          WHERE u.idempotency_key = $1",
    )
    .bind(key)
    .fetch_one(&db.pool)
    .await
    .expect("provenance")
}

/// The provenance of a row held by the `month` invoice's `kind` line, in `state`.
fn on(state: &str, month: &str, kind: &str) -> (String, Option<String>, Option<String>, bool) {
    (state.into(), Some(month.into()), Some(kind.into()), true)
}

/// Usage lines (kind, quantity) of the agent's invoice for `m`.
async fn usage_lines(db: &TestDb, agent: Uuid, m: &str) -> Vec<(String, Decimal)> {
    sqlx::query_as(
        "SELECT l.kind, l.quantity FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id
          WHERE i.agent_id = $1 AND i.period_start = $2 AND l.kind IN ('usage', 'adjustment')
          ORDER BY l.position",
    )
    .bind(agent)
    .bind(month(m).first_day)
    .fetch_all(&db.pool)
    .await
    .expect("lines")
}

fn lines(v: &[(&str, i64)]) -> Vec<(String, Decimal)> {
    v.iter()
        .map(|(k, q)| (k.to_string(), Decimal::from(*q)))
        .collect()
}

/// A transaction holding every row of the daily summary: a chunk that needs one waits for it.
async fn summary_held(db: &TestDb) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut holder = db.pool.begin().await.expect("holder");
    sqlx::query("SELECT * FROM usage_daily FOR UPDATE")
        .execute(&mut *holder)
        .await
        .expect("lock the summary rows");
    holder
}

/// [`usage_lines`] of each of the months `ms`.
async fn lines_of(db: &TestDb, agent: Uuid, ms: &[&str]) -> Vec<Vec<(String, Decimal)>> {
    let mut all = Vec::new();
    for m in ms {
        all.push(usage_lines(db, agent, m).await);
    }
    all
}

#[tokio::test]
async fn drafts_never_show_usage_another_invoice_holds_and_late_usage_is_billed_once() {
    let db = TestDb::seeded().await;
    let agent = db.agent_id(PHONE_1).await;
    insert_scan(&db.pool, agent, "2026-11-10T18:00:00Z", "nov-1").await;
    assert_eq!(
        provenance(&db, "nov-1").await,
        ("awaiting rollup".into(), None, None, false)
    );
    // November and December both drafts: November's scan is on November's only.
    let (nov, dec) = ("2026-11", "2026-12");
    rollup(&db.pool, nov, None).await;
    rollup(&db.pool, dec, None).await;
    assert_eq!(
        lines_of(&db, agent, &[nov, dec]).await,
        [lines(&[("usage", 1)]), lines(&[])]
    );
    assert_eq!(
        provenance(&db, "nov-1").await,
        on("pending", "2026-11", "usage")
    );

    finalize(&db.pool, nov, None).await.expect("finalize nov");
    assert_eq!(provenance(&db, "nov-1").await.0, "billed");
    // A late November scan: awaiting, then pending on December (the first open month) only,
    // even with January rolled up as well.
    insert_scan(&db.pool, agent, "2026-11-29T18:00:00Z", "nov-late-1").await;
    assert_eq!(provenance(&db, "nov-late-1").await.0, "awaiting rollup");
    let months = ["2026-12", "2027-01", "2026-11"];
    for m in months {
        rollup(&db.pool, m, None).await;
    }
    // The finalized month is unchanged.
    let adjustment = lines(&[("adjustment", 1)]);
    assert_eq!(
        lines_of(&db, agent, &months).await,
        [adjustment, lines(&[]), lines(&[("usage", 1)])]
    );
    assert_eq!(
        provenance(&db, "nov-late-1").await,
        on("pending", "2026-12", "adjustment")
    );

    // December final: the late scan is billed there; the next late one goes to January.
    finalize(&db.pool, dec, None).await.expect("finalize dec");
    insert_scan(&db.pool, agent, "2026-11-30T18:00:00Z", "nov-late-2").await;
    rollup(&db.pool, "2027-01", None).await;
    assert_eq!(
        provenance(&db, "nov-late-1").await,
        on("billed", "2026-12", "adjustment")
    );
    assert_eq!(
        provenance(&db, "nov-late-2").await,
        on("pending", "2027-01", "adjustment")
    );
    assert_eq!(
        usage_lines(&db, agent, "2027-01").await,
        lines(&[("adjustment", 1)])
    );

    // The accountant's view of November's usage: where each part is billed.
    let out = agent_meter_on(
        &db,
        &[
            "invoices", "trace", "--month", "2026-11", "--format", "json",
        ],
    )
    .await;
    let rows: serde_json::Value = serde_json::from_slice(&out).expect("json");
    let ours: Vec<(String, String, String, i64)> = rows
        .as_array()
        .expect("array")
        .iter()
        .filter(|r| r["agent_id"] == agent.to_string())
        .map(|r| {
            (
                r["state"].as_str().unwrap_or_default().to_string(),
                r["invoice"].as_str().unwrap_or_default().to_string(),
                r["line_kind"].as_str().unwrap_or_default().to_string(),
                r["events"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        ours,
        vec![
            ("billed".into(), "2026-11".into(), "usage".into(), 1),
            ("billed".into(), "2026-12".into(), "adjustment".into(), 1),
            ("pending".into(), "2027-01".into(), "adjustment".into(), 1),
        ]
    );
}

#[tokio::test]
async fn usage_metered_while_its_month_is_finalized_is_billed_exactly_once() {
    let db = TestDb::seeded().await;
    let agent = db.agent_id(PHONE_1).await;
    // A writer metering November scans the whole time the month is finalized.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (pool, stop) = (db.pool.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u32;
            // Until told to stop, and a few rows after: those are late usage for sure.
            let mut after_stop = 0;
            while after_stop < 5 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    after_stop += 1;
                }
                n += 1;
                insert_scan(&pool, agent, "2026-11-20T18:00:00Z", &format!("race:{n}")).await;
            }
            n
        })
    };
    eventually(10, "the writer has metered some rows", || async {
        let n: i64 = db.scalar("SELECT count(*) FROM agent_usage_metrics").await;
        (n >= 20).then_some(())
    })
    .await;
    finalize(&db.pool, "2026-11", None)
        .await
        .expect("finalize nov");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = i64::from(writer.await.expect("writer"));
    rollup(&db.pool, "2026-12", None).await;
    let nov_lines = usage_lines(&db, agent, "2026-11").await;
    let dec_lines = usage_lines(&db, agent, "2026-12").await;
    let on_nov: Decimal = nov_lines.iter().map(|l| l.1).sum();
    let on_dec: Decimal = dec_lines.iter().map(|l| l.1).sum();
    assert!(on_nov > Decimal::ZERO, "{nov_lines:?}");
    assert!(
        on_dec > Decimal::ZERO,
        "rows metered after the watermark: {dec_lines:?}"
    );
    assert_eq!(on_nov + on_dec, Decimal::from(written), "every row once");
    assert_eq!(db.count(NOT_HELD_ONCE).await, 0);
}

/// The daily summary (migration 0022): built at most a day of the ledger at a time when its
/// budget runs out, its days in the billing zone, one per zone; reports read through it equal
/// the ledger before, during and after.
#[tokio::test]
async fn the_daily_summary_is_exact_whenever_it_was_brought_up_to_date() {
    let db = TestDb::seeded().await;
    let agent = db.agent_id(PHONE_1).await;
    // Three scans metered on three days (created_at as it was then); the second occurred at
    // 23:30 in Phoenix, already the next day in UTC; the third is late, created on Dec 1.
    for (key, occurred, created) in [
        (
            "d1",
            "2026-11-03T12:00:00-07:00",
            "2026-11-03T12:00:01-07:00",
        ),
        (
            "d2",
            "2026-11-04T23:30:00-07:00",
            "2026-11-05T00:10:00-07:00",
        ),
        (
            "d3",
            "2026-11-30T23:59:00-07:00",
            "2026-12-01T00:30:00-07:00",
        ),
    ] {
        let (metric, quantity, price) = SCAN;
        UsageRow::new(agent, (metric, quantity, Some(price)), occurred, key)
            .created(created)
            .insert(&db.pool)
            .await;
    }
    let november = month("2026-11");
    let report = |tz: chrono_tz::Tz| {
        let pool = db.pool.clone();
        async move {
            let mut conn = pool.acquire().await.expect("conn");
            reports::usage(&mut conn, november, tz, None)
                .await
                .expect("report")
                .into_iter()
                .map(|r| (r.metric_type, r.events, r.billed_usd.to_string()))
                .collect::<Vec<_>>()
        }
    };
    let days = |zone: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_as::<_, (String, i64)>(
                "SELECT day::text, events FROM usage_daily WHERE time_zone = $1 ORDER BY day",
            )
            .bind(zone)
            .fetch_all(&pool)
            .await
            .expect("summary")
        }
    };
    let three = vec![("solar_ocr_scan".to_string(), 3, "0.23".to_string())];
    assert_eq!(report(Phoenix).await, three, "the ledger alone");

    // No budget: each run adds one day of created_at and commits; reports stay exact. The cut
    // is the test's own, not today: it is half a day after the last row was created, so the
    // third run reaches it whatever day the suite runs on (a cut of now() adds a run per day).
    let cut: chrono::DateTime<chrono::Utc> = "2026-12-01T12:00:00Z".parse().expect("cut");
    let mut runs = Vec::new();
    loop {
        let r = usage_daily::refresh(&db.pool, Phoenix, cut, std::time::Duration::ZERO)
            .await
            .expect("refresh");
        runs.push((r.rows, r.complete));
        assert_eq!(report(Phoenix).await, three, "mid-build, after {runs:?}");
        if r.complete || runs.len() > 10 {
            break;
        }
    }
    assert_eq!(runs, [(1, false), (1, false), (1, true)]);
    assert_eq!(
        days("America/Phoenix").await,
        [
            ("2026-11-03".to_string(), 1),
            ("2026-11-04".to_string(), 1),
            ("2026-11-30".to_string(), 1)
        ],
        "days are Phoenix days"
    );
    let again = usage_daily::refresh(&db.pool, Phoenix, cut, std::time::Duration::MAX)
        .await
        .expect("refresh again");
    assert_eq!((again.rows, again.complete), (0, true), "nothing twice");
    // A row metered after the summary's cut is read from the ledger.
    insert_scan(&db.pool, agent, "2026-11-10T10:00:00Z", "d4").await;
    let four = vec![("solar_ocr_scan".to_string(), 4, "0.30".to_string())];
    assert_eq!(report(Phoenix).await, four);

    // Another billing zone: the Phoenix summary is not used for UTC days...
    let utc = vec![("solar_ocr_scan".to_string(), 3, "0.23".to_string())];
    assert_eq!(
        report(chrono_tz::UTC).await,
        utc,
        "in UTC the late scan is December's"
    );
    // ...until one is built in that zone; the Phoenix one is left as it was.
    let cut = billing::rollup::ledger_cut(&db.pool).await.expect("cut");
    let rebuilt = usage_daily::refresh(&db.pool, chrono_tz::UTC, cut, std::time::Duration::MAX)
        .await
        .expect("rebuild in UTC");
    assert_eq!((rebuilt.rows, rebuilt.complete), (4, true));
    assert_eq!(
        days("UTC").await,
        [
            ("2026-11-03".to_string(), 1),
            ("2026-11-05".to_string(), 1),
            ("2026-11-10".to_string(), 1),
            ("2026-12-01".to_string(), 1)
        ]
    );
    assert_eq!(report(chrono_tz::UTC).await, utc);
    assert_eq!(report(Phoenix).await, four);
    // By month (the portal's usage page): the summary's days and the ledger's rows alike.
    let by_month = |tz: chrono_tz::Tz| {
        let pool = db.pool.clone();
        async move {
            let mut conn = pool.acquire().await.expect("conn");
            let (from, to) = (month("2026-10").first_day, month("2027-01").first_day);
            usage_daily::totals(&mut conn, from, to, tz, usage_daily::Periods::Months)
                .await
                .expect("totals")
                .into_iter()
                .map(|t| (t.period.to_string(), t.events))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        by_month(chrono_tz::UTC).await,
        [("2026-11-01".to_string(), 3), ("2026-12-01".to_string(), 1)]
    );
    assert_eq!(by_month(Phoenix).await, [("2026-11-01".to_string(), 4)]);
}

/// A chunk of the summary that cannot finish within the budget (here: blocked by a lock, as a
/// bulk-loaded ledger would be by its size) is cancelled by the server and tried narrower; the
/// run gives up without an error, the summary as it was, and reports stay exact.
#[tokio::test]
async fn a_summary_chunk_over_its_budget_is_cancelled_and_reports_stay_exact() {
    let db = TestDb::seeded().await;
    let agent = db.agent_id(PHONE_1).await;
    insert_scan(&db.pool, agent, "2026-11-10T10:00:00Z", "s1").await;
    let cut = billing::rollup::ledger_cut(&db.pool).await.expect("cut");
    let full = std::time::Duration::MAX;
    let first = usage_daily::refresh(&db.pool, Phoenix, cut, full)
        .await
        .expect("first");
    assert_eq!((first.rows, first.complete), (1, true));
    insert_scan(&db.pool, agent, "2026-11-10T11:00:00Z", "s2").await;

    // Another transaction holds the day's summary row: the next chunk must wait for it.
    let holder = summary_held(&db).await;
    let cut = billing::rollup::ledger_cut(&db.pool).await.expect("cut");
    let started = std::time::Instant::now();
    let blocked = usage_daily::refresh(&db.pool, Phoenix, cut, std::time::Duration::ZERO)
        .await
        .expect("gives up without an error");
    assert_eq!((blocked.rows, blocked.complete), (0, false));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "bounded: {:?}",
        started.elapsed()
    );
    let mut conn = db.pool.acquire().await.expect("conn");
    let report = reports::usage(&mut conn, month("2026-11"), Phoenix, None)
        .await
        .expect("report");
    assert_eq!(
        report
            .iter()
            .map(|r| (r.events, r.billed_usd.to_string()))
            .collect::<Vec<_>>(),
        [(2, "0.15".to_string())]
    );
    holder.rollback().await.expect("release");
    let last = usage_daily::refresh(&db.pool, Phoenix, cut, full)
        .await
        .expect("after");
    assert_eq!((last.rows, last.complete), (1, true));
    let events: i64 = db.scalar("SELECT sum(events)::int8 FROM usage_daily").await;
    assert_eq!(events, 2);
}

/// After a bulk import (rows created in one statement, so no chunk of `created_at` can split
/// them), `agent-meter summarize-usage` brings the summary up to date at once, without the daily
/// job's budget; a rerun adds nothing; a budget out of range is refused by name.
#[tokio::test]
async fn summarize_usage_brings_a_bulk_import_into_the_summary() {
    let db = TestDb::seeded().await;
    let agent = db.agent_id(PHONE_1).await;
    sqlx::query(
        "INSERT INTO agent_usage_metrics (agent_id, metric_type, quantity, unit_price_usd,
                                          cost_usd, occurred_at, idempotency_key)
         SELECT $1, 'solar_ocr_scan', 1, 0.075, 0.075,
                '2026-11-01T12:00:00Z'::timestamptz + (i % 20) * interval '1 day', 'import-' || i
           FROM generate_series(1, 5000) i",
    )
    .bind(agent)
    .execute(&db.pool)
    .await
    .expect("import");
    let (ok, out, err) = crate::cli::run_on(&db.url, &["summarize-usage"]).await;
    assert!(ok, "{err}");
    assert_has_all(&out, &["up to date", ": 5000 ledger row(s) added"]);
    let summarized: (i64, Decimal, i64) = db
        .row(
            "SELECT sum(events)::int8, sum(quantity), count(DISTINCT day)::int8 FROM usage_daily
          WHERE time_zone = 'America/Phoenix'",
        )
        .await;
    assert_eq!(summarized, (5000, Decimal::from(5000), 20));
    let behind: bool = db
        .scalar(
            "SELECT through < (SELECT max(created_at) FROM agent_usage_metrics)
           FROM usage_daily_through WHERE time_zone = 'America/Phoenix'",
        )
        .await;
    assert!(!behind, "the summary reaches the last imported row");

    let (ok, out, err) = crate::cli::run_on(&db.url, &["summarize-usage"]).await;
    assert!(ok && out.contains(": 0 ledger row(s) added"), "{out} {err}");

    // Out of budget (a summary row held by another transaction): exit 1, saying to run again.
    insert_scan(&db.pool, agent, "2026-11-01T13:00:00Z", "after-import").await;
    let holder = summary_held(&db).await;
    let (ok, _, err) = crate::cli::run_on(&db.url, &["summarize-usage", "--budget-secs=1"]).await;
    assert!(!ok && err.contains("run it again"), "{err}");
    holder.rollback().await.expect("release");
    let (ok, out, err) = crate::cli::run_on(&db.url, &["summarize-usage"]).await;
    assert!(ok && out.contains(": 1 ledger row(s) added"), "{out} {err}");
    for bad in ["0", "-5", "abc", "86401"] {
        let arg = format!("--budget-secs={bad}");
        let (ok, _, err) = crate::cli::run_on(&db.url, &["summarize-usage", &arg]).await;
        assert!(!ok && err.contains("--budget-secs"), "{bad}: {err}");
    }
}
