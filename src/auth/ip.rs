//! Per-IP state with bounded memory: the authentication failure backoff and the connection rate
//! limit.
//!
//! Both are keyed by address, an IPv6 address by its /64 (one host usually owns a whole /64, so
//! per-address state would be trivial to evade). A table holds at most `capacity` addresses; when
//! full it first forgets entries that no longer matter, then an arbitrary one, so a flood of
//! addresses costs bounded memory and at worst weakens the limit for a few of them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Addresses tracked per table, at most.
pub const TABLE_CAPACITY: usize = 16_384;

/// Delay before the refusal of the first failed login from an address; doubles per further
/// consecutive failure.
pub const BACKOFF_BASE: Duration = Duration::from_millis(200);

/// The longest refusal delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(10);

/// Failures older than this are forgotten.
const BACKOFF_MEMORY: Duration = Duration::from_secs(600);

/// An address as the tables key it: IPv4 as is (also when mapped into IPv6), IPv6 by its /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// A bounded map from address to state.
#[derive(Debug)]
struct IpTable<V> {
    map: HashMap<IpAddr, V>,
    capacity: usize,
}

impl<V> IpTable<V> {
    fn new(capacity: usize) -> Self {
        IpTable {
            map: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// The entry for `ip`, made with `new` if absent; makes room first when full.
    fn entry(&mut self, ip: IpAddr, new: impl FnOnce() -> V, stale: impl Fn(&V) -> bool) -> &mut V {
        let ip = key(ip);
        if !self.map.contains_key(&ip) && self.map.len() >= self.capacity {
            self.map.retain(|_, v| !stale(v));
            if self.map.len() >= self.capacity
                && let Some(victim) = self.map.keys().next().copied()
            {
                self.map.remove(&victim);
            }
        }
        self.map.entry(ip).or_insert_with(new)
    }

    fn remove(&mut self, ip: IpAddr) {
        self.map.remove(&key(ip));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

#[derive(Debug)]
struct Failures {
    count: u32,
    last: Instant,
}

/// Slows password guessing: each consecutive failed login from an address delays its refusal
/// longer (200 ms, 400 ms, ... up to 10 s); a successful login resets it.
#[derive(Debug)]
pub struct FailureBackoff {
    table: Mutex<IpTable<Failures>>,
}

impl Default for FailureBackoff {
    fn default() -> Self {
        FailureBackoff::with_capacity(TABLE_CAPACITY)
    }
}

impl FailureBackoff {
    pub fn with_capacity(capacity: usize) -> Self {
        FailureBackoff {
            table: Mutex::new(IpTable::new(capacity)),
        }
    }

    /// Records a failure; returns how long to wait before refusing.
    pub fn failed(&self, ip: IpAddr, now: Instant) -> Duration {
        let mut table = self.table.lock();
        let entry = table.entry(
            ip,
            || Failures {
                count: 0,
                last: now,
            },
            |f| now.saturating_duration_since(f.last) > BACKOFF_MEMORY,
        );
        if now.saturating_duration_since(entry.last) > BACKOFF_MEMORY {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        let doublings = entry.count.saturating_sub(1).min(16);
        BACKOFF_BASE.saturating_mul(1 << doublings).min(BACKOFF_CAP)
    }

    /// Forgets the failures of an address after a successful login.
    pub fn succeeded(&self, ip: IpAddr) {
        self.table.lock().remove(ip);
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.table.lock().len()
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    /// Whether the last attempt was refused, so a burst of refusals is logged once.
    refusing: bool,
}

/// Whether a connection may proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Over the rate; `first` is set for the first refusal of a burst (worth a log line).
    Refused {
        first: bool,
    },
}

/// `max_connection_rate`: a token bucket per address holding up to `rate` connections, refilled
/// at `rate` per second.
#[derive(Debug)]
pub struct ConnectionRate {
    rate: f64,
    table: Mutex<IpTable<Bucket>>,
}

impl ConnectionRate {
    /// `None` when `per_second` is 0 (no limit).
    pub fn new(per_second: u32) -> Option<ConnectionRate> {
        (per_second != 0).then(|| ConnectionRate {
            rate: f64::from(per_second),
            table: Mutex::new(IpTable::new(TABLE_CAPACITY)),
        })
    }

    pub fn admit(&self, ip: IpAddr, now: Instant) -> Admission {
        let rate = self.rate;
        let refill = |b: &Bucket| {
            (b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate).min(rate)
        };
        let mut table = self.table.lock();
        let bucket = table.entry(
            ip,
            || Bucket {
                tokens: rate,
                last: now,
                refusing: false,
            },
            |b| refill(b) >= rate,
        );
        bucket.tokens = refill(bucket);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            bucket.refusing = false;
            Admission::Allowed
        } else {
            let first = !bucket.refusing;
            bucket.refusing = true;
            Admission::Refused { first }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn refusal_delay_doubles_is_capped_and_resets_on_success() {
        let backoff = FailureBackoff::default();
        let now = Instant::now();
        let a = ip("10.0.0.1");
        let delays: Vec<u128> = (0..9).map(|_| backoff.failed(a, now).as_millis()).collect();
        assert_eq!(
            delays,
            [200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
        );
        assert_eq!(
            backoff.failed(ip("10.0.0.2"), now).as_millis(),
            200,
            "per address"
        );
        backoff.succeeded(a);
        assert_eq!(
            backoff.failed(a, now).as_millis(),
            200,
            "reset by a success"
        );
        let later = now + BACKOFF_MEMORY + Duration::from_secs(1);
        backoff.failed(a, now);
        assert_eq!(
            backoff.failed(a, later).as_millis(),
            200,
            "old failures forgotten"
        );
    }

    #[test]
    fn ipv6_addresses_share_their_slash_64() {
        let backoff = FailureBackoff::default();
        let now = Instant::now();
        backoff.failed(ip("2001:db8::1"), now);
        assert_eq!(backoff.failed(ip("2001:db8::ffff:2"), now).as_millis(), 400);
        assert_eq!(backoff.failed(ip("2001:db8:0:1::1"), now).as_millis(), 200);
        backoff.failed(ip("::ffff:10.1.1.1"), now);
        assert_eq!(backoff.failed(ip("10.1.1.1"), now).as_millis(), 400);
    }

    #[test]
    fn tables_stay_bounded_under_a_flood_of_addresses() {
        let backoff = FailureBackoff::with_capacity(100);
        let now = Instant::now();
        for n in 0..10_000u32 {
            backoff.failed(IpAddr::V4(n.into()), now);
        }
        assert!(backoff.tracked() <= 100, "{}", backoff.tracked());
        assert_eq!(backoff.failed(ip("192.0.2.1"), now).as_millis(), 200);
    }

    #[test]
    fn connection_rate_allows_a_burst_then_refills() {
        let limit = ConnectionRate::new(2).expect("limit on");
        let now = Instant::now();
        let a = ip("10.0.0.1");
        assert_eq!(limit.admit(a, now), Admission::Allowed);
        assert_eq!(limit.admit(a, now), Admission::Allowed);
        assert_eq!(limit.admit(a, now), Admission::Refused { first: true });
        assert_eq!(limit.admit(a, now), Admission::Refused { first: false });
        assert_eq!(
            limit.admit(ip("10.0.0.2"), now),
            Admission::Allowed,
            "per address"
        );
        let later = now + Duration::from_millis(500);
        assert_eq!(limit.admit(a, later), Admission::Allowed, "one token back");
        assert_eq!(limit.admit(a, later), Admission::Refused { first: true });
        assert!(ConnectionRate::new(0).is_none());
    }
}
