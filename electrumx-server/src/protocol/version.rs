//! Protocol versions and `server.version` negotiation.

use std::fmt;

/// A protocol version, compared as a tuple (`1.4` < `1.4.2` < `1.6`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

/// Oldest version served.
pub const MIN: Version = Version(1, 4, 0);
/// Newest version served.
pub const MAX: Version = Version(1, 7, 0);

impl Version {
    /// Parses `"1.4"` or `"1.4.2"`.
    pub fn parse(s: &str) -> Option<Version> {
        let mut parts = s.trim().split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = match parts.next() {
            Some(p) => p.parse().ok()?,
            None => 0,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Version(major, minor, patch))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.2 == 0 {
            write!(f, "{}.{}", self.0, self.1)
        } else {
            write!(f, "{}.{}.{}", self.0, self.1, self.2)
        }
    }
}

/// Our software version string, as `server.version` and `server.features` report it.
pub fn server_version() -> String {
    format!("electrumx-rs {}", env!("CARGO_PKG_VERSION"))
}

/// The version to use given the client's `protocol_version` argument (a string, or a
/// `[min, max]` pair); `None` if there is no common version or the argument is malformed.
pub fn negotiate(arg: Option<&serde_json::Value>) -> Option<Version> {
    let (client_min, client_max) = match arg {
        None => (MIN, MIN),
        Some(serde_json::Value::String(s)) => {
            let v = Version::parse(s)?;
            (v, v)
        }
        Some(serde_json::Value::Array(a)) if a.len() == 2 => (
            Version::parse(a[0].as_str()?)?,
            Version::parse(a[1].as_str()?)?,
        ),
        _ => return None,
    };
    let chosen = client_max.min(MAX);
    (chosen >= client_min.max(MIN)).then_some(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn negotiation_follows_the_spec() {
        assert_eq!(negotiate(Some(&json!("1.4"))), Some(Version(1, 4, 0)));
        assert_eq!(
            negotiate(Some(&json!(["1.4", "1.6"]))),
            Some(Version(1, 6, 0))
        );
        assert_eq!(negotiate(Some(&json!(["1.4", "1.9"]))), Some(MAX));
        assert_eq!(MAX.to_string(), "1.7");
        assert_eq!(negotiate(Some(&json!("1.4.2"))), Some(Version(1, 4, 2)));
        assert_eq!(negotiate(None), Some(MIN));
        assert_eq!(negotiate(Some(&json!(["1.8", "2.0"]))), None);
        assert_eq!(negotiate(Some(&json!("1.2"))), None);
        assert_eq!(negotiate(Some(&json!(["1.4"]))), None);
        assert_eq!(negotiate(Some(&json!("x"))), None);
        assert_eq!(negotiate(Some(&json!(14))), None);
        assert_eq!(Version(1, 4, 0).to_string(), "1.4");
        assert!(Version(1, 4, 2) > Version(1, 4, 0));
    }
}
