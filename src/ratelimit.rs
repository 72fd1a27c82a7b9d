//! Rate limits: GCRA (governor) per API key or JWT subject, and per account, both at the rate
//! of the account's plan (so an account's extra keys do not multiply its rate); per client
//! address (`server::client::client_ip`) for failed authentications (brute force of API keys
//! and the operator token); and the render budgets of delivery: new renders per client
//! address, new variants per original.
//!
//! Owns the limiters and the `X-RateLimit-*` numbers. Per node: with N nodes behind a
//! balancer a client can reach N times the rate (documented in the README). Must never block
//! a request: a check is a few atomic operations.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

/// A keyed limiter that reports the remaining allowance.
type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

fn keyed<K: std::hash::Hash + Eq + Clone>(quota: Quota) -> Keyed<K> {
    RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>()
}

/// Failed authentications a client IP may make per minute (with this burst) before 429s.
const AUTH_FAILURES_PER_MINUTE: u32 = 20;

/// The numbers of the `X-RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateState {
    pub(crate) limit: u32,
    pub(crate) remaining: u32,
    /// Unix seconds at which the full limit is available again.
    pub(crate) reset: i64,
    /// Set when the request is refused: seconds until one more is allowed.
    pub(crate) retry_after: Option<u64>,
}

pub(crate) struct RateLimits {
    clock: DefaultClock,
    /// Addresses over their failed-authentication allowance, until it refills: every bad
    /// credential from them is refused (one that cannot be valid without a lookup); a valid
    /// one is still served (see `api::handle`).
    blocked: std::sync::Mutex<HashMap<IpAddr, (std::time::Instant, RateState)>>,
    /// One keyed limiter per distinct plan rate.
    by_rate: Mutex<HashMap<u32, Arc<Keyed<String>>>>,
    auth_failures: Keyed<IpAddr>,
    /// New renders per client network; `None` when off.
    client_renders: Option<Budget<IpAddr>>,
    /// New variants per original of an account (`cache::scope`); `None` when off.
    image_variants: Option<Budget<String>>,
}

/// A keyed limiter with the figures its `X-RateLimit-*`/`Retry-After` numbers need.
struct Budget<K: std::hash::Hash + Eq + Clone> {
    limiter: Keyed<K>,
    /// Allowance per `period`, and the burst.
    rate: u32,
    period: Duration,
    burst: u32,
}

impl<K: std::hash::Hash + Eq + Clone> Budget<K> {
    fn new(rate: u32, period: Duration, burst: u32) -> Option<Budget<K>> {
        let rate_nz = NonZeroU32::new(rate)?;
        let burst_nz = NonZeroU32::new(burst).unwrap_or(rate_nz);
        let quota = Quota::with_period(period / rate)?.allow_burst(burst_nz);
        Some(Budget {
            limiter: keyed(quota),
            rate,
            period,
            burst: burst_nz.get(),
        })
    }

    fn take(&self, clock: &DefaultClock, key: &K) -> RateState {
        self.take_n(clock, key, 1)
    }

    /// Takes `n` units at once (at least 1, at most the burst, so a costly request can always
    /// pass on a full allowance).
    fn take_n(&self, clock: &DefaultClock, key: &K, n: u32) -> RateState {
        let interval = self.period / self.rate;
        let n = NonZeroU32::new(n.clamp(1, self.burst)).unwrap_or(NonZeroU32::MIN);
        match self.limiter.check_key_n(key, n) {
            Ok(outcome) => state_over(clock, self.burst, interval, outcome),
            // Not reachable with `n` at most the burst; refused like an empty allowance.
            Err(_) => RateState {
                limit: self.burst,
                remaining: 0,
                reset: now_unix() + (interval * self.burst).as_secs_f64().ceil() as i64,
                retry_after: Some((interval * n.get()).as_secs_f64().ceil().max(1.0) as u64),
            },
        }
    }

    fn shrink(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

impl Default for RateLimits {
    /// No render budgets (tests of the other limits; the node uses [`RateLimits::new`]).
    fn default() -> Self {
        RateLimits::new(&crate::config::RenderBudgets {
            client_per_minute: 0,
            client_burst: 0,
            image_variants_per_hour: 0,
            unsigned_max_quality: 100,
            unsigned_max_pixels: u64::MAX,
            unsigned_avif_max_pixels: u64::MAX,
        })
    }
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN))
}

fn now_unix() -> i64 {
    crate::store::now_unix()
}

impl RateLimits {
    pub(crate) fn new(budgets: &crate::config::RenderBudgets) -> RateLimits {
        RateLimits {
            clock: DefaultClock::default(),
            blocked: std::sync::Mutex::new(HashMap::new()),
            by_rate: Mutex::new(HashMap::new()),
            auth_failures: keyed(per_minute(AUTH_FAILURES_PER_MINUTE)),
            client_renders: Budget::new(
                budgets.client_per_minute,
                Duration::from_secs(60),
                budgets.client_burst,
            ),
            image_variants: Budget::new(
                budgets.image_variants_per_hour,
                Duration::from_secs(3600),
                budgets.image_variants_per_hour,
            ),
        }
    }

    /// Takes `cost` new renders (see `delivery::budget::render_cost`: 1 for a still) from the
    /// allowance of `client`'s network; `None` when the budget is off.
    pub(crate) fn client_render(&self, client: IpAddr, cost: u32) -> Option<RateState> {
        let budget = self.client_renders.as_ref()?;
        Some(budget.take_n(&self.clock, &network_of(client), cost))
    }

    /// Takes one new variant from the hourly allowance of an original (`scope`); `None` when
    /// the cap is off.
    pub(crate) fn image_variant(&self, scope: &str) -> Option<RateState> {
        let budget = self.image_variants.as_ref()?;
        Some(budget.take(&self.clock, &scope.to_string()))
    }

    /// Takes one request from `who`'s allowance at `per_minute`.
    pub(crate) fn check(&self, who: &str, per_minute_limit: u32) -> RateState {
        let limiter = {
            let mut by_rate = self.by_rate.lock().unwrap_or_else(|p| p.into_inner());
            by_rate
                .entry(per_minute_limit)
                .or_insert_with(|| Arc::new(keyed(per_minute(per_minute_limit))))
                .clone()
        };
        let key = who.to_string();
        let outcome = limiter.check_key(&key);
        state(&self.clock, per_minute_limit, outcome)
    }

    /// Takes one request from both the key's (or JWT subject's) allowance and its account's,
    /// each `per_minute_limit`; the answer is the tighter of the two. A request the key's own
    /// limit refuses does not use the account's allowance (so one key over its rate does not
    /// starve the account's other keys); one the account's limit refuses has used one of the
    /// key's.
    pub(crate) fn check_key_and_account(
        &self,
        key_id: &str,
        account: &str,
        per_minute_limit: u32,
    ) -> RateState {
        let by_key = self.check(key_id, per_minute_limit);
        if by_key.retry_after.is_some() {
            return by_key;
        }
        // Key ids are `key_…` or `jwt:…`: no account name (`[a-z0-9_-]`) with this prefix
        // can meet one.
        let by_account = self.check(&format!("account:{account}"), per_minute_limit);
        tighter(by_key, by_account)
    }

    /// Counts one failed authentication from `ip` (an IPv6 address counts for its /64); a
    /// refusal means "answer 429 instead", and the address is blocked until it may try again.
    pub(crate) fn auth_failure(&self, ip: IpAddr) -> RateState {
        let ip = network_of(ip);
        let outcome = self.auth_failures.check_key(&ip);
        let rate = state(&self.clock, AUTH_FAILURES_PER_MINUTE, outcome);
        if let Some(secs) = rate.retry_after {
            let until = std::time::Instant::now() + Duration::from_secs(secs);
            self.blocked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(ip, (until, rate));
        }
        rate
    }

    /// The refusal to answer when `ip` is blocked for failed authentications.
    pub(crate) fn blocked(&self, ip: IpAddr) -> Option<RateState> {
        let ip = network_of(ip);
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        let (until, rate) = *blocked.get(&ip)?;
        let now = std::time::Instant::now();
        if now >= until {
            blocked.remove(&ip);
            return None;
        }
        Some(RateState {
            retry_after: Some((until - now).as_secs().max(1)),
            ..rate
        })
    }

    /// Forgets keys whose allowance is full again (bounded memory); run periodically.
    pub(crate) fn shrink(&self) {
        for limiter in self
            .by_rate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        self.auth_failures.retain_recent();
        self.auth_failures.shrink_to_fit();
        if let Some(b) = &self.client_renders {
            b.shrink();
        }
        if let Some(b) = &self.image_variants {
            b.shrink();
        }
        let now = std::time::Instant::now();
        self.blocked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (until, _)| *until > now);
    }
}

/// The state to report of two checks of one request: a refusal first, else the one with less
/// allowance left (the later reset on a tie).
fn tighter(a: RateState, b: RateState) -> RateState {
    match (a.retry_after, b.retry_after) {
        (Some(_), _) => a,
        (None, Some(_)) => b,
        (None, None) if (b.remaining, a.reset) < (a.remaining, b.reset) => b,
        (None, None) => a,
    }
}

/// The unit a client controls: its IPv4 address, or the /64 of its IPv6 address.
pub(crate) fn network_of(ip: IpAddr) -> IpAddr {
    let ip = ip.to_canonical();
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::V6(octets.into())
        }
    }
}

type Outcome = Result<
    governor::middleware::StateSnapshot,
    governor::NotUntil<<DefaultClock as Clock>::Instant>,
>;

/// For a per-minute `limit` whose burst is the limit.
fn state(clock: &DefaultClock, limit: u32, outcome: Outcome) -> RateState {
    state_over(
        clock,
        limit,
        Duration::from_secs(60) / limit.max(1),
        outcome,
    )
}

/// `limit` is the burst, `interval` the time one unit takes to come back.
fn state_over(clock: &DefaultClock, limit: u32, interval: Duration, outcome: Outcome) -> RateState {
    match outcome {
        Ok(snapshot) => {
            let remaining = snapshot.remaining_burst_capacity();
            let refill = interval * (limit.saturating_sub(remaining));
            RateState {
                limit,
                remaining,
                reset: now_unix() + refill.as_secs_f64().ceil() as i64,
                retry_after: None,
            }
        }
        Err(not_until) => {
            let wait = not_until.wait_time_from(clock.now());
            let full = interval * limit;
            RateState {
                limit,
                remaining: 0,
                reset: now_unix() + full.as_secs_f64().ceil() as i64,
                retry_after: Some(wait.as_secs_f64().ceil().max(1.0) as u64),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_plan_rate_then_429s() {
        let limits = RateLimits::default();
        for n in 0..5 {
            let s = limits.check("key_a", 5);
            assert_eq!((s.limit, s.remaining, s.retry_after), (5, 4 - n, None));
        }
        let refused = limits.check("key_a", 5);
        assert_eq!(refused.remaining, 0);
        assert!(refused.retry_after.is_some_and(|s| (1..=12).contains(&s)));
        // Another key has its own allowance.
        assert_eq!(limits.check("key_b", 5).remaining, 4);
    }

    #[test]
    fn keys_of_one_account_share_its_allowance() {
        let limits = RateLimits::default();
        for n in 0..3 {
            assert_eq!(
                limits.check_key_and_account("key_a", "acme", 5).remaining,
                4 - n
            );
        }
        // key_b has 4 of its own left, the account 1: the account's figure is reported.
        let s = limits.check_key_and_account("key_b", "acme", 5);
        assert_eq!((s.remaining, s.retry_after), (1, None));
        assert_eq!(
            limits.check_key_and_account("key_b", "acme", 5).remaining,
            0
        );
        let refused = limits.check_key_and_account("key_b", "acme", 5);
        assert!(refused.retry_after.is_some());
        assert!(
            limits
                .check_key_and_account("key_c", "acme", 5)
                .retry_after
                .is_some()
        );
        // Another account is not affected.
        assert_eq!(
            limits.check_key_and_account("key_d", "bravo", 5).remaining,
            4
        );
    }

    #[test]
    fn failed_authentications_are_limited_per_ip() {
        let limits = RateLimits::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..AUTH_FAILURES_PER_MINUTE {
            assert!(limits.auth_failure(ip).retry_after.is_none());
        }
        assert!(limits.auth_failure(ip).retry_after.is_some());
        assert!(
            limits
                .auth_failure("192.0.2.8".parse().unwrap())
                .retry_after
                .is_none()
        );
    }
}
