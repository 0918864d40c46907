//! The time the token checks and the login limits go by: the system's, or a [`ManualClock`]'s
//! that only moves when told — so that a test of an expiry or a refill is instant and exact.

use std::{
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant, SystemTime},
};

/// A source of the time.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system's clocks.
    #[default]
    System,
    /// A clock that moves only when advanced.
    Manual(ManualClock),
}

impl Clock {
    /// The wall-clock time (what `exp` and `nbf` are compared with).
    pub fn now(&self) -> SystemTime {
        match self {
            Self::System => SystemTime::now(),
            Self::Manual(manual) => manual.state().wall,
        }
    }

    /// Time elapsed since a fixed point of this process, never going back (what limits count
    /// refills by).
    pub fn elapsed(&self) -> Duration {
        match self {
            Self::System => {
                static START: OnceLock<Instant> = OnceLock::new();
                START.get_or_init(Instant::now).elapsed()
            }
            Self::Manual(manual) => manual.state().elapsed,
        }
    }
}

/// A clock that starts at the system's time and moves only by [`advance`](Self::advance); its
/// clones share one time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Clone, Copy)]
struct State {
    wall: SystemTime,
    elapsed: Duration,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                wall: SystemTime::now(),
                elapsed: Duration::ZERO,
            })),
        }
    }
}

impl ManualClock {
    /// Moves the time on by `by`.
    pub fn advance(&self, by: Duration) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.wall += by;
        state.elapsed += by;
    }

    fn state(&self) -> State {
        *self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl From<ManualClock> for Clock {
    fn from(manual: ManualClock) -> Self {
        Self::Manual(manual)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_its_clones_move_with_it() {
        let manual = ManualClock::default();
        let clock = Clock::from(manual.clone());
        let (wall, elapsed) = (clock.now(), clock.elapsed());
        assert_eq!((clock.now(), clock.elapsed()), (wall, elapsed));
        manual.advance(Duration::from_secs(90));
        assert_eq!(clock.now(), wall + Duration::from_secs(90));
        assert_eq!(clock.elapsed(), elapsed + Duration::from_secs(90));
    }
}
