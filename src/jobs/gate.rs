//! The gate in front of a worker's fetch ([`Gate`]): the fetch reaches PostgreSQL only when
//! there may be work (see [`super::backend`]), and the wake-ups a parked worker needs otherwise
//! (a finished job's ack, a due heartbeat) come without opening it ([`Gate::nudge`]).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Waker},
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
    /// fetch). apalis reads that channel and its heartbeat timer only when something wakes the
    /// worker, and a heartbeat timer that fires during a fetch is not looked at again: a parked
    /// worker could hold a finished job's ack, and skip its heartbeats, until the gate next
    /// opened (30 s at most; seen as a retry that waited that long).
    pub fn nudge(&self) {
        let waker = self.waker.lock().ok().and_then(|w| w.clone());
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// A finished job wakes its worker ([`Gate::nudge`]) once its result is in apalis's lifecycle
/// channel, so its ack is written now rather than at the worker's next wake-up.
#[derive(Debug, Clone)]
pub struct NudgeLayer {
    gate: Arc<Gate>,
}

impl NudgeLayer {
    pub fn new(gate: Arc<Gate>) -> Self {
        Self { gate }
    }
}

impl<S> tower_layer::Layer<S> for NudgeLayer {
    type Service = Nudge<S>;

    fn layer(&self, inner: S) -> Nudge<S> {
        Nudge {
            inner,
            gate: self.gate.clone(),
        }
    }
}

/// See [`NudgeLayer`].
#[derive(Debug, Clone)]
pub struct Nudge<S> {
    inner: S,
    gate: Arc<Gate>,
}

impl<S, R> tower_service::Service<R> for Nudge<S>
where
    S: tower_service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let run = self.inner.call(request);
        let gate = self.gate.clone();
        Box::pin(async move {
            // The inner service (apalis's persist layer) has queued the result when it returns.
            let outcome = run.await;
            gate.nudge();
            outcome
        })
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
