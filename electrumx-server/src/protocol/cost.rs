//! ElectrumX's anti-abuse cost model. Every session accrues cost for its requests (a price
//! per method), for the bytes it moves (`BANDWIDTH_UNIT_COST` bytes cost 1.0) and for errors;
//! cost decays over time, more slowly for sessions holding many subscriptions. Sessions
//! from the same subnet (/24 IPv4, /48 IPv6; loopback and private addresses exempt) share
//! their group's cost, and a closed session leaves its cost to the group for a while, so
//! reconnecting does not reset it. Above `COST_SOFT_LIMIT` each request is delayed (up to
//! `REQUEST_SLEEP` at the hard limit); at `COST_HARD_LIMIT` the session gets error -101 and
//! is closed. A session handles up to `INITIAL_CONCURRENT` requests at once, fewer as its
//! cost rises: `ceil((1 − fraction) × INITIAL_CONCURRENT)`, fraction being how far the cost
//! is from the soft towards the hard limit.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Settings of the cost model (ElectrumX's names). Both limits 0 disables it.
#[derive(Clone, Debug)]
pub struct CostConfig {
    /// `COST_SOFT_LIMIT`.
    pub soft: f64,
    /// `COST_HARD_LIMIT`.
    pub hard: f64,
    /// `REQUEST_SLEEP`: the delay at the hard limit.
    pub request_sleep: Duration,
    /// `BANDWIDTH_UNIT_COST`: bytes that cost 1.0.
    pub bandwidth_unit: f64,
    /// `SESSION_GROUP_BY_SUBNET_IPV4`.
    pub ipv4_prefix: u8,
    /// `SESSION_GROUP_BY_SUBNET_IPV6`.
    pub ipv6_prefix: u8,
}

impl Default for CostConfig {
    fn default() -> Self {
        CostConfig {
            soft: 1000.0,
            hard: 10000.0,
            request_sleep: Duration::from_millis(2500),
            bandwidth_unit: 5000.0,
            ipv4_prefix: 24,
            ipv6_prefix: 48,
        }
    }
}

impl CostConfig {
    fn enabled(&self) -> bool {
        self.hard > 0.0
    }
}

/// What to do before a request.
#[derive(Debug, PartialEq)]
pub enum Throttle {
    /// Go ahead.
    Proceed,
    /// Wait this long first.
    Sleep(Duration),
    /// Refuse with -101 and close the session.
    Disconnect,
}

#[derive(Default)]
struct Group {
    members: HashMap<u64, f64>,
    retained: f64,
    last_refund: Option<Instant>,
}

/// Cost groups shared by all sessions.
#[derive(Default)]
pub struct CostGroups {
    groups: Mutex<HashMap<String, Group>>,
}

/// Sessions closed between two sweeps of groups without members.
const SWEEP_EVERY: u64 = 64;

impl Group {
    /// Applies the refund of retained cost due since the last one (ElectrumX's pace: 300 ×
    /// HARD / 5000 per 300 s).
    fn refund(&mut self, hard: f64, now: Instant) {
        if let Some(last) = self.last_refund {
            let refund = now.duration_since(last).as_secs_f64() * hard / 5000.0;
            self.retained = (self.retained - refund).max(0.0);
        }
        self.last_refund = Some(now);
    }
}

/// Drops the groups left without members whose retained cost has been refunded, so the
/// table holds only subnets with sessions or a recent cost (it grew with every subnet
/// ever seen).
fn sweep(groups: &mut HashMap<String, Group>, hard: f64) {
    let now = Instant::now();
    groups.retain(|_, g| {
        if !g.members.is_empty() {
            return true;
        }
        g.refund(hard, now);
        g.retained > 0.0
    });
}

impl CostGroups {
    /// Per group: the summed cost of its live sessions and its retained cost.
    pub fn snapshot(&self) -> HashMap<String, (f64, f64)> {
        self.groups
            .lock()
            .iter()
            .map(|(name, g)| (name.clone(), (g.members.values().sum(), g.retained)))
            .collect()
    }
}

/// The group key of an address, or `None` if it is exempt (loopback, private, link-local).
pub fn group_of(ip: IpAddr, cfg: &CostConfig) -> Option<String> {
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_unspecified() {
                return None;
            }
            let bits = u32::from(v4)
                & (u32::MAX
                    .checked_shl(32 - cfg.ipv4_prefix.min(32) as u32)
                    .unwrap_or(0));
            Some(format!(
                "{}/{}",
                std::net::Ipv4Addr::from(bits),
                cfg.ipv4_prefix
            ))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return group_of(IpAddr::V4(v4), cfg);
            }
            let seg = v6.segments();
            if v6.is_loopback()
                || v6.is_unspecified()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
            {
                return None;
            }
            let bits = u128::from(v6)
                & (u128::MAX
                    .checked_shl(128 - cfg.ipv6_prefix.min(128) as u32)
                    .unwrap_or(0));
            Some(format!(
                "{}/{}",
                std::net::Ipv6Addr::from(bits),
                cfg.ipv6_prefix
            ))
        }
    }
}

/// One session's cost account.
pub struct SessionCost {
    cfg: Arc<CostConfig>,
    groups: Arc<CostGroups>,
    id: u64,
    group: Option<String>,
    cost: f64,
    last: Instant,
    last_extra: f64,
    last_fraction: f64,
}

impl SessionCost {
    /// Opens an account for a new session (connecting costs 5.0, as in ElectrumX).
    pub fn new(cfg: Arc<CostConfig>, groups: Arc<CostGroups>, id: u64, ip: IpAddr) -> Self {
        let group = group_of(ip, &cfg);
        let mut s = SessionCost {
            cfg,
            groups,
            id,
            group,
            cost: 0.0,
            last: Instant::now(),
            last_extra: 0.0,
            last_fraction: 0.0,
        };
        s.charge(5.0);
        s
    }

    /// Adds cost.
    pub fn charge(&mut self, amount: f64) {
        if !self.cfg.enabled() {
            return;
        }
        self.cost += amount.max(0.0);
        if let Some(g) = &self.group {
            self.groups
                .groups
                .lock()
                .entry(g.clone())
                .or_default()
                .members
                .insert(self.id, self.cost);
        }
    }

    /// Adds the cost of moving `bytes`.
    pub fn charge_bytes(&mut self, bytes: usize) {
        if self.cfg.bandwidth_unit > 0.0 {
            self.charge(bytes as f64 / self.cfg.bandwidth_unit);
        }
    }

    /// Current cost of this session (after decay).
    pub fn cost(&mut self, subscriptions: usize) -> f64 {
        let now = Instant::now();
        let rate = self.cfg.hard / (10000.0 + 5.0 * subscriptions as f64);
        self.cost = (self.cost - now.duration_since(self.last).as_secs_f64() * rate).max(0.0);
        self.last = now;
        self.cost
    }

    fn extra_from_group(&self) -> f64 {
        let Some(g) = &self.group else { return 0.0 };
        let mut groups = self.groups.groups.lock();
        let Some(group) = groups.get_mut(g) else {
            return 0.0;
        };
        group.refund(self.cfg.hard, Instant::now());
        let others: f64 = group
            .members
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(_, c)| c)
            .sum();
        group.retained + others
    }

    /// Requests the session may have in progress at once, as of its last [`throttle`]
    /// (ElectrumX's rule: `ceil((1 − fraction) × initial)`, at least one).
    ///
    /// [`throttle`]: SessionCost::throttle
    pub fn allowed_concurrency(&self, initial: usize) -> usize {
        (((1.0 - self.last_fraction) * initial as f64).ceil() as usize).clamp(1, initial.max(1))
    }

    /// The cost this session bore from its group (other members and retained cost) when
    /// its last request was admitted (ElectrumX's `XCost`).
    pub fn last_extra(&self) -> f64 {
        self.last_extra
    }

    /// Cost the session may still accrue before the hard limit (infinite when the model
    /// is off): a batch stops there, item by item.
    pub fn room(&mut self, subscriptions: usize) -> f64 {
        if !self.cfg.enabled() {
            return f64::INFINITY;
        }
        let total = self.cost(subscriptions) + self.extra_from_group();
        (self.cfg.hard - total).max(0.0)
    }

    /// What to do before the next request, given the session's subscriptions.
    pub fn throttle(&mut self, subscriptions: usize) -> Throttle {
        if !self.cfg.enabled() {
            return Throttle::Proceed;
        }
        self.last_extra = self.extra_from_group();
        let total = self.cost(subscriptions) + self.last_extra;
        let span = (self.cfg.hard - self.cfg.soft).max(1.0);
        let fraction = ((total - self.cfg.soft) / span).max(0.0);
        self.last_fraction = fraction.min(1.0);
        if fraction >= 1.0 {
            Throttle::Disconnect
        } else if fraction > 0.0 {
            Throttle::Sleep(self.cfg.request_sleep.mul_f64(fraction))
        } else {
            Throttle::Proceed
        }
    }
}

impl Drop for SessionCost {
    fn drop(&mut self) {
        let Some(g) = &self.group else { return };
        let mut groups = self.groups.groups.lock();
        if let Some(group) = groups.get_mut(g) {
            group.refund(self.cfg.hard, Instant::now());
            group.members.remove(&self.id);
            group.retained += self.cost;
            if group.members.is_empty() && group.retained <= 0.0 {
                groups.remove(g);
            }
        }
        // Every so often, the groups whose sessions all left and whose cost is refunded go.
        if self.id.is_multiple_of(SWEEP_EVERY) {
            sweep(&mut groups, self.cfg.hard);
        }
    }
}

/// The base price of a request for a method the table does not have (methods served have
/// theirs in the table).
pub const UNKNOWN_METHOD_COST: f64 = 1.0;

/// Extra cost of an error reply (bad requests are not free).
pub fn error_cost(code: i64) -> f64 {
    if code == crate::protocol::jsonrpc::code::PARSE_ERROR {
        1000.0
    } else {
        100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_exemptions() {
        let cfg = CostConfig::default();
        assert_eq!(
            group_of("8.8.8.8".parse().unwrap(), &cfg).unwrap(),
            "8.8.8.0/24"
        );
        assert_eq!(
            group_of("2001:db8:1:2::5".parse().unwrap(), &cfg).unwrap(),
            "2001:db8:1::/48"
        );
        assert!(group_of("127.0.0.1".parse().unwrap(), &cfg).is_none());
        assert!(group_of("192.168.1.4".parse().unwrap(), &cfg).is_none());
        assert!(group_of("::1".parse().unwrap(), &cfg).is_none());
    }

    /// Groups whose sessions all left keep their cost only until it is refunded; then a
    /// sweep drops them, so the table does not grow with every subnet ever seen.
    #[test]
    fn groups_without_members_are_swept_once_refunded() {
        // A hard limit this high refunds a million a second: 20 ms refunds everything.
        let cfg = Arc::new(CostConfig {
            soft: 1000.0,
            hard: 5e9,
            ..CostConfig::default()
        });
        let groups = Arc::new(CostGroups::default());
        for (id, ip) in [(1, "8.8.8.8"), (2, "9.9.9.9")] {
            let mut s = SessionCost::new(cfg.clone(), groups.clone(), id, ip.parse().unwrap());
            s.charge(100.0);
        }
        assert_eq!(groups.snapshot().len(), 2, "both keep their retained cost");
        let live = SessionCost::new(cfg.clone(), groups.clone(), 3, "7.7.7.7".parse().unwrap());
        std::thread::sleep(Duration::from_millis(20));
        sweep(&mut groups.groups.lock(), cfg.hard);
        let left = groups.snapshot();
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(
            left.contains_key("7.7.7.0/24"),
            "a group with a live session stays"
        );
        drop(live);
    }

    #[test]
    fn throttles_then_disconnects_and_groups_share() {
        let cfg = Arc::new(CostConfig {
            soft: 10.0,
            hard: 20.0,
            ..CostConfig::default()
        });
        let groups = Arc::new(CostGroups::default());
        let ip: IpAddr = "8.8.8.8".parse().unwrap();
        let mut a = SessionCost::new(cfg.clone(), groups.clone(), 1, ip);
        assert_eq!(a.throttle(0), Throttle::Proceed);
        assert_eq!(a.allowed_concurrency(10), 10);
        a.charge(10.0);
        assert!(matches!(a.throttle(0), Throttle::Sleep(_)));
        // Cost 15 of soft 10 / hard 20 (less a little decay): half way, so about half the
        // concurrency, rounded up.
        let allowed = a.allowed_concurrency(10);
        assert!((5..=6).contains(&allowed), "{allowed}");
        // A second session from the same /24 pays for the first.
        let mut b = SessionCost::new(cfg.clone(), groups.clone(), 2, "8.8.8.9".parse().unwrap());
        assert!(matches!(b.throttle(0), Throttle::Sleep(_)));
        a.charge(20.0);
        assert_eq!(a.throttle(0), Throttle::Disconnect);
        assert_eq!(b.throttle(0), Throttle::Disconnect);
        // Closing keeps the cost with the group.
        drop(a);
        assert_eq!(b.throttle(0), Throttle::Disconnect);
        // Disabled: never throttles.
        let off = Arc::new(CostConfig {
            soft: 0.0,
            hard: 0.0,
            ..CostConfig::default()
        });
        let mut c = SessionCost::new(off, groups, 3, ip);
        c.charge(1e9);
        assert_eq!(c.throttle(0), Throttle::Proceed);
    }
}
