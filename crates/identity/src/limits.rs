//! Login attempts, limited per user and per client address (the `governor` crate's GCRA).
//!
//! Every attempt counts — a correct password too — so that a guess that happens to be right
//! is refused like the others while the limit holds: the limit cannot be used as an oracle.
//! Once the quota has refilled (`Retry-After` says when), the right password works again.
//! The client address is the one the gateway saw (`X-Forwarded-For`, which the gateway sets
//! and clients cannot).

use governor::{
    Quota, RateLimiter, clock::Clock as _, middleware::NoOpMiddleware,
    state::keyed::DefaultKeyedStateStore,
};
use gozon_http::clock::Clock;
use std::{hash::Hash, net::IpAddr, num::NonZeroU32, sync::Arc, time::Duration};

/// The limits' time: [`Clock::elapsed`], as `governor` counts it.
#[derive(Debug, Clone)]
struct Refills(Clock);

impl governor::clock::Clock for Refills {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

type Limiter<K> = RateLimiter<K, DefaultKeyedStateStore<K>, Refills, NoOpMiddleware<Duration>>;

/// The two limits of login attempts.
#[derive(Clone)]
pub struct LoginLimits {
    per_user: Arc<Limiter<String>>,
    per_client: Arc<Limiter<IpAddr>>,
    clock: Refills,
}

fn limiter<K: Hash + Eq + Clone>(per_minute: NonZeroU32, clock: &Refills) -> Arc<Limiter<K>> {
    let quota = Quota::per_minute(per_minute);
    Arc::new(RateLimiter::new(
        quota,
        DefaultKeyedStateStore::default(),
        clock.clone(),
    ))
}

impl LoginLimits {
    /// `per_user` and `per_client` attempts per minute, each in a burst, refilling as `clock`
    /// tells.
    pub fn new(per_user: NonZeroU32, per_client: NonZeroU32, clock: Clock) -> Self {
        let clock = Refills(clock);
        Self {
            per_user: limiter(per_user, &clock),
            per_client: limiter(per_client, &clock),
            clock,
        }
    }

    /// Counts one attempt for `user` from `client`; `Err` says how long to wait.
    pub fn attempt(&self, user: &str, client: Option<IpAddr>) -> Result<(), Duration> {
        if let Some(client) = client
            && let Err(not_until) = self.per_client.check_key(&client)
        {
            return Err(not_until.wait_time_from(self.clock.now()));
        }
        self.per_user
            .check_key(&user.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets keys whose quota has refilled (run from time to time; bounds memory).
    pub fn forget_idle(&self) {
        self.per_user.retain_recent();
        self.per_client.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gozon_http::clock::ManualClock;

    fn n(value: u32) -> NonZeroU32 {
        NonZeroU32::new(value).unwrap()
    }

    #[test]
    fn the_attempt_past_the_per_user_quota_is_refused_until_one_attempt_has_refilled() {
        let time = ManualClock::default();
        let limits = LoginLimits::new(n(3), n(100), time.clone().into());
        for _ in 0..3 {
            assert!(limits.attempt("alice", None).is_ok());
        }
        // Three a minute: one refills every 20 s.
        let wait = limits.attempt("alice", None).unwrap_err();
        assert_eq!(wait, Duration::from_secs(20));
        assert!(
            limits.attempt("bob", None).is_ok(),
            "other users are not limited"
        );
        time.advance(Duration::from_secs(19));
        assert_eq!(limits.attempt("alice", None), Err(Duration::from_secs(1)));
        time.advance(Duration::from_secs(1));
        assert!(limits.attempt("alice", None).is_ok());
        assert!(limits.attempt("alice", None).is_err(), "one, not more");
    }

    #[test]
    fn one_client_is_limited_across_users() {
        let limits = LoginLimits::new(n(100), n(2), Clock::System);
        let client = Some(IpAddr::from([10, 0, 0, 1]));
        assert!(limits.attempt("a", client).is_ok());
        assert!(limits.attempt("b", client).is_ok());
        assert!(limits.attempt("c", client).is_err());
        assert!(
            limits
                .attempt("c", Some(IpAddr::from([10, 0, 0, 2])))
                .is_ok()
        );
    }
}
