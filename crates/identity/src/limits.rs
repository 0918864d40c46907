//! How often a client may try: login attempts and sign-ups, counted by the `governor` crate's
//! GCRA against the client address ([`gozon_http::client`]: a trusted proxy's
//! `X-Forwarded-For`, else the TCP peer) and the user.
//!
//! Login attempts are limited three ways: per user *and* client, tightly (a guesser is stopped
//! quickly); per user from everywhere, loosely (one guesser cannot lock the user out of their
//! own account from their own address, yet guessing one user stays bounded); per client,
//! whatever the user (one client cannot try many users). Every attempt counts — a correct
//! password too — so that a guess that happens to be right is refused like the others while a
//! limit holds: the limit cannot be used as an oracle. Sign-ups are limited per client: each
//! costs a password hash.

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

/// Attempts allowed per minute, each in a burst.
#[derive(Debug, Clone, Copy)]
pub struct PerMinute {
    pub login_per_user_and_client: NonZeroU32,
    pub login_per_user: NonZeroU32,
    pub login_per_client: NonZeroU32,
    pub signup_per_client: NonZeroU32,
}

/// The limits of login attempts and sign-ups.
#[derive(Clone)]
pub struct Limits {
    per_user_and_client: Arc<Limiter<(String, IpAddr)>>,
    per_user: Arc<Limiter<String>>,
    per_client: Arc<Limiter<IpAddr>>,
    signups: Arc<Limiter<IpAddr>>,
    clock: Refills,
}

fn limiter<K: Hash + Eq + Clone>(per_minute: NonZeroU32, clock: &Refills) -> Arc<Limiter<K>> {
    Arc::new(RateLimiter::new(
        Quota::per_minute(per_minute),
        DefaultKeyedStateStore::default(),
        clock.clone(),
    ))
}

impl Limits {
    /// Limits of `per_minute`, refilling as `clock` tells.
    pub fn new(per_minute: PerMinute, clock: Clock) -> Self {
        let clock = Refills(clock);
        Self {
            per_user_and_client: limiter(per_minute.login_per_user_and_client, &clock),
            per_user: limiter(per_minute.login_per_user, &clock),
            per_client: limiter(per_minute.login_per_client, &clock),
            signups: limiter(per_minute.signup_per_client, &clock),
            clock,
        }
    }

    /// Counts one login attempt for `user` from `client`; `Err` says how long to wait.
    pub fn login(&self, user: &str, client: IpAddr) -> Result<(), Duration> {
        let wait =
            |not_until: governor::NotUntil<Duration>| not_until.wait_time_from(self.clock.now());
        self.per_client.check_key(&client).map_err(wait)?;
        self.per_user_and_client
            .check_key(&(user.to_owned(), client))
            .map_err(wait)?;
        self.per_user.check_key(&user.to_owned()).map_err(wait)
    }

    /// Counts one sign-up from `client`; `Err` says how long to wait.
    pub fn signup(&self, client: IpAddr) -> Result<(), Duration> {
        self.signups
            .check_key(&client)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets keys whose quota has refilled (run from time to time; bounds memory).
    pub fn forget_idle(&self) {
        self.per_user_and_client.retain_recent();
        self.per_user.retain_recent();
        self.per_client.retain_recent();
        self.signups.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gozon_http::clock::ManualClock;

    fn n(value: u32) -> NonZeroU32 {
        NonZeroU32::new(value).unwrap_or(NonZeroU32::MIN)
    }

    fn limits(time: &ManualClock) -> Limits {
        Limits::new(
            PerMinute {
                login_per_user_and_client: n(3),
                login_per_user: n(10),
                login_per_client: n(100),
                signup_per_client: n(2),
            },
            time.clone().into(),
        )
    }

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const AWAY: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn a_guesser_is_refused_until_one_attempt_has_refilled_and_the_owner_elsewhere_is_not() {
        let time = ManualClock::default();
        let limits = limits(&time);
        for _ in 0..3 {
            assert!(limits.login("alice", AWAY).is_ok());
        }
        // Three a minute: one refills every 20 s.
        assert_eq!(limits.login("alice", AWAY), Err(Duration::from_secs(20)));
        assert!(
            limits.login("alice", HOME).is_ok(),
            "not locked out at home"
        );
        assert!(
            limits.login("bob", AWAY).is_ok(),
            "other users are not limited"
        );
        time.advance(Duration::from_secs(19));
        assert_eq!(limits.login("alice", AWAY), Err(Duration::from_secs(1)));
        time.advance(Duration::from_secs(1));
        assert!(limits.login("alice", AWAY).is_ok());
        assert!(limits.login("alice", AWAY).is_err(), "one, not more");
    }

    #[test]
    fn guessing_one_user_from_many_addresses_is_bounded_too() {
        let limits = limits(&ManualClock::default());
        let mut allowed = 0;
        for client in 0..50u8 {
            let client = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 0, client));
            allowed += usize::from(limits.login("alice", client).is_ok());
        }
        assert_eq!(allowed, 10);
    }

    #[test]
    fn sign_ups_from_one_client_are_limited_and_other_clients_are_not() {
        let limits = limits(&ManualClock::default());
        assert!(limits.signup(HOME).is_ok());
        assert!(limits.signup(HOME).is_ok());
        assert!(limits.signup(HOME).is_err());
        assert!(limits.signup(AWAY).is_ok());
    }
}
