//! The daemon's lifecycle state, shared read-mostly between the app and the admin API.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Instant, SystemTime};

/// Where the daemon is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Opening the store, loading keys and models, binding sockets.
    Starting = 0,
    /// Serving.
    Ready = 1,
    /// SIGTERM received: new work refused, in-flight work finishing.
    Draining = 2,
}

impl Phase {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Starting,
            1 => Self::Ready,
            _ => Self::Draining,
        }
    }

    /// Lower-case name for APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Draining => "draining",
        }
    }
}

/// Shared lifecycle facts.
#[derive(Debug)]
pub struct Lifecycle {
    phase: AtomicU8,
    in_flight: AtomicUsize,
    /// Monotonic start time (uptime).
    pub started: Instant,
    /// Wall-clock start time.
    pub started_wall: SystemTime,
}

impl Lifecycle {
    /// A lifecycle in `Starting`.
    pub fn new(started: Instant, started_wall: SystemTime) -> Self {
        Self {
            phase: AtomicU8::new(0),
            in_flight: AtomicUsize::new(0),
            started,
            started_wall,
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    /// Moves to `to`; phases only move forward.
    pub fn advance(&self, to: Phase) {
        let v = to as u8;
        let from = self.phase.fetch_max(v, Ordering::AcqRel);
        if from < v {
            log::debug!(from = Phase::from_u8(from).as_str(), to = to.as_str(); "lifecycle transition");
        }
    }

    /// Marks one unit of in-flight work (an API request, later a call) until the guard drops.
    pub fn work(&self) -> WorkGuard<'_> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        WorkGuard(self)
    }

    /// Units of work in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

/// Counts one unit of work while alive.
#[derive(Debug)]
pub struct WorkGuard<'a>(&'a Lifecycle);

impl Drop for WorkGuard<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Clock;

    #[test]
    fn phases_only_move_forward_and_work_is_counted() {
        let l = Lifecycle::new(crate::time::SystemClock.mono(), SystemTime::UNIX_EPOCH);
        assert_eq!(l.phase(), Phase::Starting);
        l.advance(Phase::Draining);
        l.advance(Phase::Ready);
        assert_eq!(l.phase(), Phase::Draining);
        {
            let _a = l.work();
            let _b = l.work();
            assert_eq!(l.in_flight(), 2);
        }
        assert_eq!(l.in_flight(), 0);
    }
}
