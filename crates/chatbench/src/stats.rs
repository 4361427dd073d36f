//! Measurements of the load generator: a fixed-size latency histogram (bounded memory however
//! long a run lasts), counters, and the servers' RSS and CPU time read from `/proc`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Sub-buckets per power of two: values are kept to within 1/16 (~6 %).
const SUB: u32 = 16;
const SUB_BITS: u32 = 4;
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB as usize;

/// A log-linear histogram of microseconds, shared lock-free by every client task.
pub struct Histogram {
    counts: Box<[AtomicU64]>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self { counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect() }
    }
}

fn bucket_of(v: u64) -> usize {
    if v < u64::from(SUB) {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS
    let shift = exp - SUB_BITS;
    let mantissa = (v >> shift) as u32 - SUB; // 0..SUB
    ((shift + 1) * SUB + mantissa) as usize
}

/// The largest value a bucket holds (so reported percentiles never understate).
fn bucket_high(b: usize) -> u64 {
    let b = b as u32;
    if b < SUB {
        return u64::from(b);
    }
    let shift = b / SUB - 1;
    let mantissa = u64::from(b % SUB + SUB);
    ((mantissa + 1) << shift) - 1
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts now, and zeroes them: one step of a scenario reads its own samples.
    pub fn take(&self) -> Summary {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.swap(0, Ordering::Relaxed)).collect();
        Summary::from_counts(&counts)
    }
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Summary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Summary {
    fn from_counts(counts: &[u64]) -> Self {
        let count: u64 = counts.iter().sum();
        if count == 0 {
            return Self::default();
        }
        let at = |q: f64| {
            let rank = ((count as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (b, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return bucket_high(b) as f64 / 1000.0;
                }
            }
            0.0
        };
        Self { count, p50_ms: at(0.50), p90_ms: at(0.90), p99_ms: at(0.99), max_ms: at(1.0) }
    }
}

/// The generator's clock: microseconds since its first use, embedded in messages so that the
/// receiving client task computes the delivery latency (sender and receivers are one process).
pub fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

pub fn since_us(sent: u64) -> Duration {
    Duration::from_micros(now_us().saturating_sub(sent))
}

/// Counters of one run, shared by every client task.
#[derive(Default)]
pub struct Counters {
    /// `chat message` events received (one per member per message).
    pub deliveries: AtomicU64,
    /// `chat message` events sent.
    pub sent: AtomicU64,
    /// Sends skipped because the client's command queue was full (the generator is behind).
    pub send_skipped: AtomicU64,
    /// HTTP requests completed (polling clients).
    pub requests: AtomicU64,
    /// Sessions that ended before the run did.
    pub disconnects: AtomicU64,
    pub errors: AtomicU64,
}

impl Counters {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// RSS and CPU time of a set of server processes, from `/proc`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProcSample {
    pub rss_kib: u64,
    /// User plus system time.
    pub cpu_s: f64,
    /// User time (utime): the servers' own code.
    pub user_s: f64,
    /// System time (stime): the kernel on their behalf. On loopback this includes much of the
    /// receiving side's TCP stack, run in the sender's system call.
    pub sys_s: f64,
}

impl ProcSample {
    /// The sum over `pids`; processes that are gone count as zero.
    pub fn read(pids: &[u32]) -> Self {
        let ticks = clock_ticks();
        let mut s = Self::default();
        for pid in pids {
            if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                let rss = status.lines().find_map(|l| l.strip_prefix("VmRSS:"));
                s.rss_kib += rss.and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()).unwrap_or(0);
            }
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                // Fields after the command name (which may hold spaces): state is field 3;
                // utime and stime are fields 14 and 15.
                if let Some((_, rest)) = stat.rsplit_once(')') {
                    let f: Vec<&str> = rest.split_whitespace().collect();
                    let t = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                    s.user_s += t(14) as f64 / ticks;
                    s.sys_s += t(15) as f64 / ticks;
                }
            }
        }
        s.cpu_s = s.user_s + s.sys_s;
        s
    }

    pub fn delta(self, before: Self) -> Self {
        Self {
            rss_kib: self.rss_kib.saturating_sub(before.rss_kib),
            cpu_s: self.cpu_s - before.cpu_s,
            user_s: self.user_s - before.user_s,
            sys_s: self.sys_s - before.sys_s,
        }
    }
}

/// `sysconf(_SC_CLK_TCK)`: 100 on every Linux this runs on.
fn clock_ticks() -> f64 {
    100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_bound_their_values() {
        for v in [0, 1, 15, 16, 17, 31, 32, 100, 999, 1000, 12_345, 1 << 40] {
            let b = bucket_of(v);
            assert!(bucket_high(b) >= v, "{v} in bucket {b} high {}", bucket_high(b));
            assert!(bucket_high(b) <= v + v / 16 + 1, "{v}: bucket too wide");
            assert!(b < BUCKETS);
        }
        assert!(bucket_of(u64::MAX) < BUCKETS);
    }

    #[test]
    fn percentiles() {
        let h = Histogram::default();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let s = h.take();
        assert_eq!(s.count, 100);
        assert!((49.0..53.0).contains(&s.p50_ms), "{s:?}");
        assert!((98.0..104.0).contains(&s.p99_ms), "{s:?}");
        assert_eq!(h.take().count, 0, "take resets");
    }
}
