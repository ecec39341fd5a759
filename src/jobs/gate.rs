//! The gate in front of a worker's fetch ([`Gate`]): the fetch reaches PostgreSQL only when
//! there may be work (see [`super::backend`]), and the wake-ups a parked worker needs otherwise
//! (a finished job's ack, a due heartbeat) come without opening it ([`Gate::nudge`]).
//!
//! apalis-core 1.0's `Persisted` reads its lifecycle channel (finished jobs' results) and its
//! heartbeat timer only in its ready state, when the worker task is polled. A job's future runs
//! inside the worker task, so its end wakes the worker; but a wake-up that comes while a fetch is
//! in flight is spent on that fetch, and an empty fetch parks the worker without looking at the
//! channel or the timer. So an empty fetch from the database nudges the worker once more
//! (`GatedPersistence::fetch_next`), and the gate's driver nudges it every heartbeat interval.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Waker},
    time::Duration,
};

use tokio::sync::Notify;

/// Whether the next fetch may reach the database, and whom to wake when it may.
#[derive(Debug)]
pub struct Gate {
    open: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Gate {
    pub(super) fn new() -> Arc<Self> {
        // Open at start: a new worker looks once for whatever is already waiting.
        Arc::new(Self {
            open: AtomicBool::new(true),
            waker: Mutex::new(None),
        })
    }

    /// Opens the gate and wakes the worker parked on it.
    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        let waker = self.waker.lock().ok().and_then(|mut w| w.take());
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Takes the right to fetch once. The waker is stored *before* the flag is read, so an
    /// [`open`](Self::open) racing with this call either is seen here or wakes the worker.
    pub(super) fn pass(&self, cx: &Context<'_>) -> bool {
        if let Ok(mut w) = self.waker.lock() {
            match w.as_ref() {
                Some(old) if old.will_wake(cx.waker()) => {}
                _ => *w = Some(cx.waker().clone()),
            }
        }
        self.open.swap(false, Ordering::SeqCst)
    }

    /// Opens the gate for the next fetch without waking anyone (the worker is running).
    pub(super) fn keep_open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    /// Wakes the worker without opening the gate: it then writes what its finished jobs left
    /// in apalis's lifecycle channel and sends a heartbeat that is due, and parks again (no
    /// fetch). Without it a job that ended during the worker's fetch kept its ack, and a
    /// heartbeat timer that fired then was not looked at, until the next wake-up (seen as a
    /// retry that waited up to 30 s; module docs).
    pub fn nudge(&self) {
        let waker = self.waker.lock().ok().and_then(|w| w.clone());
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Opens `gate` whenever `signal` fires ([`QueueSignals::poll_due`] fires it for work nobody
/// announced), and at least every `fallback` otherwise; nudges the worker every `beat` (its
/// heartbeat interval) in between, so a heartbeat never waits for the gate ([`Gate::nudge`]).
/// Runs until aborted.
pub async fn drive_gate(gate: Arc<Gate>, signal: Arc<Notify>, fallback: Duration, beat: Duration) {
    let beat = beat.max(Duration::from_millis(100));
    let mut open_at = tokio::time::Instant::now() + fallback;
    loop {
        let wake_at = open_at.min(tokio::time::Instant::now() + beat);
        tokio::select! {
            _ = signal.notified() => {}
            _ = tokio::time::sleep_until(wake_at) => {
                if tokio::time::Instant::now() < open_at {
                    gate.nudge();
                    continue;
                }
            }
        }
        gate.open();
        open_at = tokio::time::Instant::now() + fallback;
    }
}
