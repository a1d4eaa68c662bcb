//! Requests per second per client: a token bucket for each IP address. Written here
//! rather than taken from `governor`/`tower_governor` (a dozen more crates to build)
//! because all it needs is this: a rate, a burst, and a map that cannot grow forever.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// More clients than this and the full (idle) buckets are dropped.
const MAX_CLIENTS: usize = 10_000;

pub struct RateLimit {
    per_second: f64,
    burst: f64,
    clients: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    /// `per_second` requests a second on average, up to `burst` at once.
    pub fn new(per_second: f64, burst: f64) -> RateLimit {
        RateLimit { per_second, burst: burst.max(1.0), clients: Mutex::new(HashMap::new()) }
    }

    /// Take one request's token for `client` at `now`: Ok, or how long until one is there.
    pub fn take(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut clients = self.clients.lock().expect("rate limit map");
        if clients.len() >= MAX_CLIENTS && !clients.contains_key(&client) {
            let (rate, burst) = (self.per_second, self.burst);
            clients.retain(|_, b| b.tokens + rate * now.saturating_duration_since(b.at).as_secs_f64() < burst);
        }
        let bucket = clients.entry(client).or_insert(Bucket { tokens: self.burst, at: now });
        let refill = self.per_second * now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let limit = RateLimit::new(10.0, 5.0);
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(limit.take(a, t0).is_ok());
        }
        let wait = limit.take(a, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        // Another client has its own bucket.
        assert!(limit.take(b, t0).is_ok());
        // A tenth of a second later, one more; a second later, the burst again and no more.
        assert!(limit.take(a, t0 + Duration::from_millis(100)).is_ok());
        assert!(limit.take(a, t0 + Duration::from_millis(100)).is_err());
        let later = t0 + Duration::from_secs(10);
        assert_eq!((0..8).filter(|_| limit.take(a, later).is_ok()).count(), 5);
    }
}
