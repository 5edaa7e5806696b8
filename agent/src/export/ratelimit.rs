//! Keeps a failing collector or a full queue from flooding the agent's log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Default gap between two warnings of the same kind.
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(10);

const NEVER: u64 = u64::MAX;

/// Lets one event through per interval and counts the ones it held back.
/// Atomic so the hot `submit` path can use it through `&self`.
#[derive(Debug)]
pub(crate) struct RateLimitedLog {
    epoch: Instant,
    interval_ms: u64,
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimitedLog {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            last_ms: AtomicU64::new(NEVER),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when the caller should log now, `n` being how many events
    /// were suppressed since the previous log; `None` to stay quiet.
    pub(crate) fn check(&self) -> Option<u64> {
        self.check_at(Instant::now())
    }

    fn check_at(&self, now: Instant) -> Option<u64> {
        let now_ms = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(NEVER - 1);
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == NEVER || now_ms.saturating_sub(last) >= self.interval_ms;
        // The exchange picks one winner when several threads find it due.
        if due
            && self
                .last_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_event_logs_then_suppresses_until_interval_passes() {
        let log = RateLimitedLog::new(Duration::from_secs(10));
        let t0 = log.epoch;
        assert_eq!(log.check_at(t0), Some(0));
        assert_eq!(log.check_at(t0 + Duration::from_secs(1)), None);
        assert_eq!(log.check_at(t0 + Duration::from_secs(9)), None);
        assert_eq!(log.check_at(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(log.check_at(t0 + Duration::from_secs(11)), None);
        assert_eq!(log.check_at(t0 + Duration::from_secs(25)), Some(1));
    }
}
