//! Login attempts, limited per user and per client address (the `governor` crate's GCRA).
//!
//! Every attempt counts — a correct password too — so that a guess that happens to be right
//! is refused like the others while the limit holds: the limit cannot be used as an oracle.
//! Once the quota has refilled (`Retry-After` says when), the right password works again.
//! The client address is the one the gateway saw (`X-Forwarded-For`, which the gateway sets
//! and clients cannot).

use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};
use std::{net::IpAddr, num::NonZeroU32, sync::Arc, time::Duration};

/// The two limits of login attempts.
#[derive(Clone)]
pub struct LoginLimits {
    per_user: Arc<DefaultKeyedRateLimiter<String>>,
    per_client: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

impl LoginLimits {
    /// `per_user` and `per_client` attempts per minute, each in a burst.
    pub fn new(per_user: NonZeroU32, per_client: NonZeroU32) -> Self {
        Self {
            per_user: Arc::new(RateLimiter::keyed(Quota::per_minute(per_user))),
            per_client: Arc::new(RateLimiter::keyed(Quota::per_minute(per_client))),
        }
    }

    /// Counts one attempt for `user` from `client`; `Err` says how long to wait.
    pub fn attempt(&self, user: &str, client: Option<IpAddr>) -> Result<(), Duration> {
        let clock = DefaultClock::default();
        if let Some(client) = client
            && let Err(not_until) = self.per_client.check_key(&client)
        {
            return Err(not_until.wait_time_from(clock.now()));
        }
        self.per_user
            .check_key(&user.to_owned())
            .map_err(|not_until| not_until.wait_time_from(clock.now()))
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

    fn n(value: u32) -> NonZeroU32 {
        NonZeroU32::new(value).unwrap()
    }

    #[test]
    fn the_attempt_past_the_per_user_quota_is_refused_with_a_wait() {
        let limits = LoginLimits::new(n(3), n(100));
        for _ in 0..3 {
            assert!(limits.attempt("alice", None).is_ok());
        }
        let wait = limits.attempt("alice", None).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(
            limits.attempt("bob", None).is_ok(),
            "other users are not limited"
        );
    }

    #[test]
    fn one_client_is_limited_across_users() {
        let limits = LoginLimits::new(n(100), n(2));
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
