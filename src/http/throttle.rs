//! Failed sign-ins per client: after [`MAX_FAILURES`] failures within [`WINDOW`] from one client,
//! `/ops/login` and the portal's sign-ins answer 429 (with `Retry-After`) until the oldest of
//! them ages out, even for the right token. Successful sign-ins are not counted. In process and
//! bounded: at most [`MAX_CLIENTS`] clients of [`MAX_FAILURES`] instants each.
//!
//! The client is the peer address (no forwarded header is trusted anywhere in the service); an
//! IPv6 client is its /64, since one host commonly holds a whole /64.

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};

/// Failures a client may make within [`WINDOW`] before it is refused.
pub const MAX_FAILURES: usize = 10;
/// The sliding window failures are counted in.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Clients remembered at once; past this, clients with no failure in the window are forgotten
/// first, then the one whose last failure is oldest.
const MAX_CLIENTS: usize = 10_000;

/// The doors with a lock of their own: an ops operator's and an agency's.
#[derive(Default)]
pub struct SignIns {
    /// `POST /ops/login`.
    pub ops: FailureLimiter,
    /// `POST /portal/sign-in` and `POST /portal/sign-in/supabase`.
    pub portal: FailureLimiter,
}

/// Recent failures per client, in a sliding window.
pub struct FailureLimiter {
    max_failures: usize,
    window: Duration,
    max_clients: usize,
    /// Per client, the instants of its latest failures (at most `max_failures`), oldest first.
    clients: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl Default for FailureLimiter {
    fn default() -> Self {
        Self::new(MAX_FAILURES, WINDOW, MAX_CLIENTS)
    }
}

impl FailureLimiter {
    pub fn new(max_failures: usize, window: Duration, max_clients: usize) -> Self {
        Self {
            max_failures: max_failures.max(1),
            window,
            max_clients: max_clients.max(1),
            clients: Mutex::default(),
        }
    }

    /// `Ok` when `client` may try now; else how long until it may.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        // Nothing panics while holding the lock; a poisoned map is still a valid map.
        let map = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(failures) = map.get(&client) else {
            return Ok(());
        };
        let recent: Vec<&Instant> = failures
            .iter()
            .filter(|t| now.saturating_duration_since(**t) < self.window)
            .collect();
        match recent.first() {
            Some(oldest) if recent.len() >= self.max_failures => {
                Err(self.window - now.saturating_duration_since(**oldest))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed attempt by `client` at `now`.
    pub fn failed(&self, client: IpAddr, now: Instant) {
        let mut map = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if !map.contains_key(&client) && map.len() >= self.max_clients {
            let window = self.window;
            map.retain(|_, f| {
                f.back()
                    .is_some_and(|t| now.saturating_duration_since(*t) < window)
            });
            if map.len() >= self.max_clients
                && let Some(stalest) = map
                    .iter()
                    .min_by_key(|(_, f)| f.back().copied())
                    .map(|(ip, _)| *ip)
            {
                map.remove(&stalest);
            }
        }
        let failures = map.entry(client).or_default();
        failures.push_back(now);
        while failures.len() > self.max_failures {
            failures.pop_front();
        }
    }

    #[cfg(test)]
    fn clients(&self) -> usize {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The client a request comes from, as the limiter keys it (see the module doc). A router served
/// without connection info (never the case in [`super::serve_only`]) puts everyone in one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client(pub IpAddr);

impl Client {
    pub fn of(ip: IpAddr) -> Client {
        Client(match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
            },
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        Ok(Client::of(ip))
    }
}

/// 429 with `Retry-After` (whole seconds, at least 1) and `body`.
pub fn too_many(retry_after: Duration, body: impl IntoResponse) -> Response {
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let mut response = (StatusCode::TOO_MANY_REQUESTS, body).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn the_eleventh_try_within_the_window_is_refused_for_that_client_only() {
        let limiter = FailureLimiter::new(10, Duration::from_secs(60), 100);
        let (a, b) = (ip("203.0.113.7"), ip("198.51.100.9"));
        let t0 = Instant::now();
        for i in 0..10 {
            let at = t0 + Duration::from_secs(i);
            assert_eq!(limiter.check(a, at), Ok(()), "try {}", i + 1);
            limiter.failed(a, at);
        }
        let at = t0 + Duration::from_secs(10);
        assert_eq!(
            limiter.check(a, at),
            Err(Duration::from_secs(50)),
            "until the first failure is a minute old"
        );
        assert_eq!(limiter.check(b, at), Ok(()), "another client is unaffected");
        limiter.failed(b, at);
        assert_eq!(limiter.check(b, at), Ok(()));
        // The window slides: one failure ages out, one more try is allowed.
        assert_eq!(
            limiter.check(a, t0 + Duration::from_secs(59)),
            Err(Duration::from_secs(1))
        );
        let later = t0 + Duration::from_secs(60);
        assert_eq!(limiter.check(a, later), Ok(()));
        limiter.failed(a, later);
        assert_eq!(
            limiter.check(a, later),
            Err(Duration::from_secs(1)),
            "the second failure (at 1 s) is now the oldest"
        );
        assert_eq!(limiter.check(a, t0 + Duration::from_secs(200)), Ok(()));
    }

    #[test]
    fn memory_is_bounded_and_stale_clients_go_first() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(60), 4);
        let t0 = Instant::now();
        for i in 0..50u8 {
            limiter.failed(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)), t0);
        }
        assert_eq!(limiter.clients(), 4, "never more than the bound");
        let later = t0 + Duration::from_secs(100);
        for _ in 0..3 {
            limiter.failed(ip("192.0.2.1"), later);
        }
        assert_eq!(
            limiter.clients(),
            1,
            "clients idle for a window are forgotten"
        );
        assert!(limiter.check(ip("192.0.2.1"), later).is_err());
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64_and_mapped_ipv4_is_ipv4() {
        assert_eq!(
            Client::of(ip("2001:db8:1:2:aaaa::1")),
            Client::of(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            Client::of(ip("2001:db8:1:2::1")),
            Client::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            Client::of(ip("::ffff:203.0.113.7")),
            Client(ip("203.0.113.7"))
        );
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        let r = too_many(Duration::from_millis(1500), "slow down");
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        let r = too_many(Duration::ZERO, "slow down");
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }
}
