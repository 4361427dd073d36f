//! The per-client rate limit of chat events: a token bucket, pure (the caller passes the time).

use tokio::time::Instant;

/// What to do with one client event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Admit,
    /// Over the rate: refuse this event.
    Refuse,
    /// Over the rate for `strikes` events since the client last kept to it: disconnect it.
    Disconnect,
}

/// A token bucket of `burst` tokens refilled at `per_sec` tokens a second; one event takes one.
/// Refusals count as strikes until the bucket is full again, that is until the client has kept
/// to its rate long enough to earn its whole burst back.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    /// Refusals that disconnect; 0: never.
    strikes: u32,
    tokens: f64,
    last: Instant,
    refused: u32,
}

impl RateLimiter {
    /// `per_sec` 0 admits everything.
    pub fn new(per_sec: u32, burst: u32, strikes: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self { per_sec: f64::from(per_sec), burst, strikes, tokens: burst, last: now, refused: 0 }
    }

    pub fn admit(&mut self, now: Instant) -> Verdict {
        if self.per_sec == 0.0 {
            return Verdict::Admit;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        if self.tokens >= self.burst {
            self.refused = 0;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Admit;
        }
        self.refused = self.refused.saturating_add(1);
        if self.strikes > 0 && self.refused >= self.strikes {
            Verdict::Disconnect
        } else {
            Verdict::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10, 5, 0, t0);
        assert!((0..5).all(|_| r.admit(t0) == Verdict::Admit));
        assert_eq!(r.admit(t0), Verdict::Refuse);
        // 10 a second: one token every 100 ms.
        assert_eq!(r.admit(t0 + Duration::from_millis(100)), Verdict::Admit);
        assert_eq!(r.admit(t0 + Duration::from_millis(150)), Verdict::Refuse);
        // A long pause refills the burst, no more.
        let later = t0 + Duration::from_secs(60);
        assert!((0..5).all(|_| r.admit(later) == Verdict::Admit));
        assert_eq!(r.admit(later), Verdict::Refuse);
    }

    #[test]
    fn persistent_abuse_disconnects_and_a_pause_forgives() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10, 2, 3, t0);
        assert_eq!((r.admit(t0), r.admit(t0)), (Verdict::Admit, Verdict::Admit));
        assert_eq!((r.admit(t0), r.admit(t0)), (Verdict::Refuse, Verdict::Refuse));
        // Back within the burst after a full refill: the strikes are forgotten.
        let t1 = t0 + Duration::from_millis(200);
        assert_eq!((r.admit(t1), r.admit(t1)), (Verdict::Admit, Verdict::Admit));
        assert_eq!((r.admit(t1), r.admit(t1)), (Verdict::Refuse, Verdict::Refuse));
        assert_eq!(r.admit(t1), Verdict::Disconnect);
    }

    #[test]
    fn sending_at_twice_the_rate_is_abuse() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10, 5, 20, t0);
        let verdicts: Vec<Verdict> = (0..200).map(|i| r.admit(t0 + Duration::from_millis(50 * i))).collect();
        assert!(verdicts.contains(&Verdict::Disconnect), "{verdicts:?}");
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(0, 0, 1, t0);
        assert!((0..10_000).all(|_| r.admit(t0) == Verdict::Admit));
    }
}
