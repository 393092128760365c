//! ElectrumX's peer rules as pure functions: the retry schedule, when a peer is forgotten,
//! the one-peer-per-address rule checked before verifying, and which peers a
//! `server.peers.subscribe` answer carries.

use super::peer::Peer;
use rand::seq::SliceRandom;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// Peer timing, in seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// A peer verified within this period is good (ElectrumX's `STALE_SECS`, 3 h).
    pub stale_secs: f64,
    /// Base of the failure backoff (ElectrumX's `WAKEUP_SECS`, 300 s).
    pub wakeup_secs: f64,
    /// At most one accepted `server.add_peer` per bucket in this period (600 s).
    pub add_pause_secs: f64,
}

/// ElectrumX's timing.
pub const ELECTRUMX_SCHEDULE: Schedule = Schedule {
    stale_secs: 3.0 * 3600.0,
    wakeup_secs: 300.0,
    add_pause_secs: 600.0,
};

/// Largest exponent of the failure backoff (300 s × 2^12 ≈ 14 days).
const MAX_BACKOFF_EXP: u32 = 12;

impl Schedule {
    /// Time until the next attempt: just before the peer turns stale after a success
    /// (`try_count` 0: 3 h − 10 min), else `wakeup × 2^try_count`.
    pub fn pause(&self, try_count: u32) -> Duration {
        let secs = if try_count == 0 {
            self.stale_secs - 2.0 * self.wakeup_secs
        } else {
            self.wakeup_secs * f64::from(1u32 << try_count.min(MAX_BACKOFF_EXP))
        };
        Duration::from_secs_f64(secs.max(1.0))
    }
}

/// Whether a peer that just failed is forgotten: after 10 failures in a row if it was
/// good once (and is not bad), else after 3.
pub fn should_forget(peer: &Peer) -> bool {
    let limit = if peer.last_good > 0.0 && !peer.bad {
        10
    } else {
        3
    };
    peer.try_count >= limit
}

/// Before verifying `peer` (just reached at its address): `Err(reason)` if another recently
/// good peer already holds its bucket (one per IPv4 address / IPv6 /64), or, for an onion
/// peer, if onion peers are over half of at least 200 recent ones.
pub fn bucket_rule(peer: &Peer, others_recent: &[&Peer]) -> Result<(), String> {
    if peer.is_tor() {
        let onion = others_recent.iter().filter(|p| p.is_tor()).count();
        let half = others_recent.len() / 2;
        if onion > half && half >= 100 {
            return Err("too many onion peers already".into());
        }
        return Ok(());
    }
    let bucket = peer.internal_bucket();
    if others_recent
        .iter()
        .any(|p| !p.is_tor() && p.internal_bucket() == bucket)
    {
        return Err(format!("too many peers already in bucket {bucket}"));
    }
    Ok(())
}

/// The peers of a `server.peers.subscribe` answer, as indices into `recent`: our own
/// identities (`mine`, always), then at most two random peers per IPv4 /16 or IPv6 /56
/// bucket, then random onion peers up to max(10, ¼ of the answer) — 50 when the
/// requester comes through our Tor proxy.
pub fn select_for_subscribe(
    recent: &[&Peer],
    mine: &[usize],
    requester_is_tor: bool,
    rng: &mut impl rand::Rng,
) -> Vec<usize> {
    let mut chosen: Vec<usize> = Vec::new();
    let mut seen: HashSet<usize> = HashSet::new();
    for &i in mine {
        if seen.insert(i) {
            chosen.push(i);
        }
    }
    let mut onion = Vec::new();
    let mut buckets: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, p) in recent.iter().enumerate() {
        if p.is_tor() {
            onion.push(i);
        } else {
            buckets.entry(p.external_bucket()).or_default().push(i);
        }
    }
    for mut members in buckets.into_values() {
        members.shuffle(rng);
        for i in members.into_iter().take(2) {
            if seen.insert(i) {
                chosen.push(i);
            }
        }
    }
    onion.shuffle(rng);
    let max_onion = if requester_is_tor {
        50
    } else {
        (chosen.len() / 4).max(10)
    };
    for i in onion.into_iter().take(max_onion) {
        if seen.insert(i) {
            chosen.push(i);
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(host: &str, ip: &str) -> Peer {
        let mut p = Peer::from_real_name(&format!("{host} t"), "test", 50001, 50002);
        if !ip.is_empty() {
            p.ip_addr = Some(ip.parse().unwrap());
        }
        p
    }

    #[test]
    fn schedule_and_forgetting() {
        let s = ELECTRUMX_SCHEDULE;
        assert_eq!(s.pause(0), Duration::from_secs(3 * 3600 - 600));
        assert_eq!(s.pause(1), Duration::from_secs(600));
        assert_eq!(s.pause(3), Duration::from_secs(2400));
        assert_eq!(s.pause(1000), s.pause(MAX_BACKOFF_EXP));
        let mut p = peer("a.example.com", "1.2.3.4");
        p.try_count = 2;
        assert!(!should_forget(&p));
        p.try_count = 3;
        assert!(should_forget(&p), "never good: forgotten after 3");
        p.last_good = 1.0;
        assert!(!should_forget(&p));
        p.try_count = 10;
        assert!(should_forget(&p), "once good: forgotten after 10");
        p.try_count = 3;
        p.bad = true;
        assert!(should_forget(&p), "bad: forgotten after 3");
    }

    #[test]
    fn one_verified_peer_per_address() {
        let a = peer("a.example.com", "1.2.3.4");
        let same_ip = peer("b.example.com", "1.2.3.4");
        let same_16 = peer("c.example.com", "1.2.9.9");
        assert!(
            bucket_rule(&same_ip, &[&a])
                .unwrap_err()
                .contains("bucket 1.2.3.4")
        );
        assert!(bucket_rule(&same_16, &[&a]).is_ok());
        let v6a = peer("d.example.com", "2a01:4f8:1:2::1");
        let v6b = peer("e.example.com", "2a01:4f8:1:2::2");
        let v6c = peer("f.example.com", "2a01:4f8:1:3::1");
        assert!(bucket_rule(&v6b, &[&v6a]).is_err());
        assert!(bucket_rule(&v6c, &[&v6a]).is_ok());
        let onion = peer("x.onion", "");
        let others: Vec<Peer> = (0..250)
            .map(|i| peer(&format!("o{i}.onion"), ""))
            .chain((0..150).map(|i| peer(&format!("h{i}.example.com"), &format!("9.{i}.0.1"))))
            .collect();
        let refs: Vec<&Peer> = others.iter().collect();
        assert!(bucket_rule(&onion, &refs).is_err());
        assert!(
            bucket_rule(&onion, &refs[..150]).is_ok(),
            "few peers: onion always fine"
        );
    }

    #[test]
    fn subscribe_answer_takes_two_per_subnet() {
        let peers: Vec<Peer> = vec![
            peer("a1.example.com", "1.2.3.4"),
            peer("a2.example.com", "1.2.3.5"),
            peer("a3.example.com", "1.2.200.6"),
            peer("b.example.com", "5.6.7.8"),
            peer("v6a.example.com", "2a01:4f8:1:200::1"),
            peer("v6b.example.com", "2a01:4f8:1:2ff::1"),
            peer("v6c.example.com", "2a01:4f8:1:2aa::1"),
        ];
        let onions: Vec<Peer> = (0..30).map(|i| peer(&format!("o{i}.onion"), "")).collect();
        let all: Vec<&Peer> = peers.iter().chain(onions.iter()).collect();
        let mut rng = rand::rng();
        for _ in 0..20 {
            let chosen = select_for_subscribe(&all, &[0], false, &mut rng);
            let hosts: Vec<&str> = chosen.iter().map(|&i| all[i].host.as_str()).collect();
            assert_eq!(hosts[0], "a1.example.com", "our own identity comes first");
            let in_12 = hosts.iter().filter(|h| h.starts_with("a")).count();
            assert!(
                (2..=3).contains(&in_12),
                "{hosts:?}: ourselves + at most 2 of 1.2/16"
            );
            assert!(hosts.contains(&"b.example.com"));
            assert_eq!(hosts.iter().filter(|h| h.starts_with("v6")).count(), 2);
            assert_eq!(hosts.iter().filter(|h| h.ends_with(".onion")).count(), 10);
            let mut dedup = chosen.clone();
            dedup.sort();
            dedup.dedup();
            assert_eq!(dedup.len(), chosen.len());
        }
        let tor = select_for_subscribe(&all, &[], true, &mut rng);
        assert_eq!(tor.iter().filter(|&&i| all[i].is_tor()).count(), 30);
    }
}
