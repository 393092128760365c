//! The peer blacklist (`BLACKLIST_URL`): a JSON list of host names, `*.domain` wildcards
//! (matching a host's last two labels) and IP addresses, refreshed every 10 minutes.

use super::netaddr;
use serde_json::Value;
use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

/// Time between refreshes (ElectrumX's 600 s).
pub const REFRESH: Duration = Duration::from_secs(600);
/// Largest blacklist document accepted.
pub const MAX_BYTES: usize = 4 << 20;
/// Longest a fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Blacklisted hosts, wildcards and addresses, lower case.
#[derive(Clone, Debug, Default)]
pub struct Blacklist {
    entries: HashSet<String>,
}

impl Blacklist {
    /// Parses the JSON list; entries that are not strings are ignored.
    pub fn parse(text: &str) -> Result<Blacklist, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let list = v.as_array().ok_or("not a JSON list")?;
        Ok(Blacklist {
            entries: list
                .iter()
                .filter_map(Value::as_str)
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect(),
        })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the host, its `*.<sld>` wildcard or its address is listed.
    pub fn contains(&self, host: &str, ip: Option<IpAddr>) -> bool {
        if self.entries.is_empty() {
            return false;
        }
        self.entries.contains(&host.to_ascii_lowercase())
            || self.entries.contains(&netaddr::wildcard_domain(host))
            || ip.is_some_and(|ip| self.entries.contains(&ip.to_string()))
    }

    /// Fetches and parses the list at `url`.
    pub async fn fetch(url: &str) -> Result<Blacklist, String> {
        let text = super::http::fetch(url, MAX_BYTES, FETCH_TIMEOUT).await?;
        Blacklist::parse(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_wildcards_and_addresses() {
        let b = Blacklist::parse(r#"["Bad.example.com", "*.evil.org", "1.2.3.4", 7, ""]"#).unwrap();
        assert_eq!(b.len(), 3);
        assert!(b.contains("bad.EXAMPLE.com", None));
        assert!(!b.contains("good.example.com", None));
        assert!(b.contains("a.b.evil.org", None));
        assert!(b.contains("evil.org", None));
        assert!(b.contains("fine.net", Some("1.2.3.4".parse().unwrap())));
        assert!(Blacklist::parse("{}").is_err());
        assert!(Blacklist::parse("nope").is_err());
    }
}
