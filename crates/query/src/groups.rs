//! Host groups: checking what the user defines, and resolving who belongs.
//!
//! The store keeps a group's patterns as given ([`HostGroup`]); everything
//! that understands them is here, so every backend, the CLI and the API
//! check and match them the same way. Membership is resolved when asked,
//! from the hosts the store saw in a time range (the senders and the local
//! addresses they logged), so `ws-*` includes tomorrow's new workstation and
//! a range group follows a host that moved into it.
//!
//! A host may be in several groups: [`members`] lists every group with all
//! its members, in the order the groups were first added. A planner that
//! needs one group per host takes the first group that lists it (the
//! earliest added); one that can use all of them may.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use connscope_store::{GroupKind, HostGroup, Store, StoreError, TimeRange};
use serde::Serialize;

/// What is wrong with a group definition or a label, naming the culprit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("a group name must not be empty")]
    EmptyName,
    #[error("a host name must not be empty")]
    EmptyHost,
    #[error("{what} {value:?} is too long ({len} characters)")]
    TooLong {
        what: &'static str,
        value: String,
        len: usize,
    },
    #[error(
        "{what} {value:?} contains {found:?}: use letters, digits, '.', '_' and '-' (starting with a letter or digit)"
    )]
    BadCharacter {
        what: &'static str,
        value: String,
        found: char,
    },
    #[error("name pattern {pattern:?} is not a valid glob: {reason}")]
    BadGlob { pattern: String, reason: String },
    #[error(
        "address range {range:?} is not a valid CIDR (like 10.1.0.0/16 or 2001:db8::/64): {reason}"
    )]
    BadCidr { range: String, reason: String },
    #[error("label {label:?} is not key=value")]
    BadLabel { label: String },
    #[error("group {name:?} has no {kind} to match")]
    NoPatterns { name: String, kind: &'static str },
}

/// The longest group name, label key or label value.
pub const MAX_NAME: usize = 64;

/// Checks a group name or label key: 1 to [`MAX_NAME`] characters, letters,
/// digits, `.`, `_` and `-`, starting with a letter or digit. Names appear in
/// HTML (the map), nft comments and file names, so nothing else is allowed.
pub fn check_name(what: &'static str, value: &str) -> Result<(), GroupError> {
    if value.is_empty() {
        return Err(if what == "group name" {
            GroupError::EmptyName
        } else {
            GroupError::BadLabel {
                label: value.into(),
            }
        });
    }
    let len = value.chars().count();
    if len > MAX_NAME {
        return Err(GroupError::TooLong {
            what,
            value: value.into(),
            len,
        });
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if let Some(found) = value
        .chars()
        .enumerate()
        .find(|&(i, c)| !allowed(c) || (i == 0 && !c.is_ascii_alphanumeric()))
        .map(|(_, c)| c)
    {
        return Err(GroupError::BadCharacter {
            what,
            value: value.into(),
            found,
        });
    }
    Ok(())
}

/// Parses `key=value`; both parts are checked like names.
pub fn parse_label(label: &str) -> Result<(String, String), GroupError> {
    let bad = || GroupError::BadLabel {
        label: label.into(),
    };
    let (key, value) = label.split_once('=').ok_or_else(bad)?;
    if key.is_empty() || value.is_empty() {
        return Err(bad());
    }
    check_name("label key", key)?;
    check_name("label value", value)?;
    Ok((key.into(), value.into()))
}

/// An address range: an address and a prefix length, with no bits set
/// beyond the prefix (`10.1.2.3/16` is refused rather than silently widened).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub network: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, GroupError> {
        let bad = |reason: String| GroupError::BadCidr {
            range: text.into(),
            reason,
        };
        let (address, prefix) = text
            .split_once('/')
            .ok_or_else(|| bad("no /prefix length".into()))?;
        let network: IpAddr = address
            .parse()
            .map_err(|_| bad(format!("{address:?} is not an IP address")))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|&p| p <= max)
            .ok_or_else(|| bad(format!("prefix length {prefix:?} is not 0 to {max}")))?;
        let cidr = Cidr { network, prefix };
        let masked = cidr.masked(network);
        if masked != network {
            return Err(bad(format!(
                "bits set beyond the prefix; did you mean {masked}/{prefix}?"
            )));
        }
        Ok(cidr)
    }

    /// `ip` with the bits beyond this range's prefix cleared.
    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(v4) & mask).into())
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        }
    }

    /// The range of `prefix` bits that holds `ip`.
    pub fn of(ip: IpAddr, prefix: u8) -> Cidr {
        let cidr = Cidr {
            network: ip,
            prefix,
        };
        Cidr {
            network: cidr.masked(ip),
            prefix,
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && self.masked(ip) == self.network
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Checks a host name as given to `--hosts` or a host label: not empty, no
/// white space, control characters or markup.
pub fn check_host(host: &str) -> Result<(), GroupError> {
    let what = "host name";
    if host.is_empty() {
        return Err(GroupError::EmptyHost);
    }
    let len = host.chars().count();
    if len > 253 {
        return Err(GroupError::TooLong {
            what,
            value: host.into(),
            len,
        });
    }
    match host
        .chars()
        .find(|&c| c.is_whitespace() || c.is_control() || "<>&\"'/*?[".contains(c))
    {
        Some(found) => Err(GroupError::BadCharacter {
            what,
            value: host.into(),
            found,
        }),
        None => Ok(()),
    }
}

/// A definition's patterns, checked and compiled.
enum Matcher {
    Names(Vec<glob::Pattern>),
    Addresses(Vec<Cidr>),
    Hosts(BTreeSet<String>),
}

impl Matcher {
    fn new(group: &HostGroup) -> Result<Matcher, GroupError> {
        if group.patterns.is_empty() {
            return Err(GroupError::NoPatterns {
                name: group.name.clone(),
                kind: group.kind.as_str(),
            });
        }
        Ok(match group.kind {
            GroupKind::Names => Matcher::Names(
                group
                    .patterns
                    .iter()
                    .map(|p| {
                        glob::Pattern::new(p).map_err(|e| GroupError::BadGlob {
                            pattern: p.clone(),
                            reason: format!("{} (at character {})", e.msg, e.pos + 1),
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
            GroupKind::Addresses => Matcher::Addresses(
                group
                    .patterns
                    .iter()
                    .map(|p| Cidr::parse(p))
                    .collect::<Result<_, _>>()?,
            ),
            GroupKind::Hosts => {
                for host in &group.patterns {
                    check_host(host)?;
                }
                Matcher::Hosts(group.patterns.iter().cloned().collect())
            }
        })
    }

    fn matches(&self, host: &str, addresses: &BTreeSet<IpAddr>) -> bool {
        match self {
            Matcher::Names(globs) => globs.iter().any(|g| g.matches(host)),
            Matcher::Addresses(ranges) => ranges
                .iter()
                .any(|r| addresses.iter().any(|&ip| r.contains(ip))),
            Matcher::Hosts(hosts) => hosts.contains(host),
        }
    }
}

/// Checks everything in a definition: its name, patterns and labels. The
/// CLI and the API call this before [`Store::put_group`].
pub fn check_group(group: &HostGroup) -> Result<(), GroupError> {
    check_name("group name", &group.name)?;
    Matcher::new(group)?;
    for (key, value) in &group.labels {
        check_name("label key", key)?;
        check_name("label value", value)?;
    }
    Ok(())
}

/// The hosts the store saw in `range`, each with its local addresses seen
/// then: a sender (agent state) whose span from first to last event
/// overlaps the range, and a host with an address whose span from first to
/// last sight does. Spans, not events: a workstation away for a week inside
/// the range is still there, which is what generalising over its group needs.
pub fn hosts_seen(
    store: &dyn Store,
    range: TimeRange,
) -> Result<BTreeMap<String, BTreeSet<IpAddr>>, StoreError> {
    let overlaps = |first, last| first < range.to && range.from <= last;
    let mut hosts: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
    for agent in store.agents()? {
        if agent.events > 0 && overlaps(agent.first_seen, agent.last_seen) {
            hosts.entry(agent.host).or_default();
        }
    }
    for address in store.host_addresses()? {
        if overlaps(address.first_seen, address.last_seen) {
            hosts.entry(address.host).or_default().insert(address.ip);
        }
    }
    Ok(hosts)
}

/// One group and who is in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Membership {
    pub name: String,
    /// Members, sorted.
    pub hosts: Vec<String>,
    /// Hosts a `hosts` group lists that the store did not see in the range
    /// (switched off, renamed, or not logging yet).
    pub unseen: Vec<String>,
}

/// Why members could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum MembersError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored definition no longer checks (written by something else).
    #[error("group {name:?} in the store: {source}")]
    Group { name: String, source: GroupError },
}

/// Every group in the store with its members among the hosts seen in
/// `range`, in the order the groups were added (see the module docs on a host
/// in several groups).
pub fn members(store: &dyn Store, range: TimeRange) -> Result<Vec<Membership>, MembersError> {
    let hosts = hosts_seen(store, range)?;
    store
        .groups()?
        .iter()
        .map(|group| resolve(group, &hosts))
        .collect()
}

/// `group`'s members among `hosts` (as [`hosts_seen`] gives them).
pub fn resolve(
    group: &HostGroup,
    hosts: &BTreeMap<String, BTreeSet<IpAddr>>,
) -> Result<Membership, MembersError> {
    let matcher = Matcher::new(group).map_err(|source| MembersError::Group {
        name: group.name.clone(),
        source,
    })?;
    let unseen = match group.kind {
        GroupKind::Hosts => group
            .patterns
            .iter()
            .filter(|h| !hosts.contains_key(*h))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        _ => Vec::new(),
    };
    Ok(Membership {
        name: group.name.clone(),
        hosts: hosts
            .iter()
            .filter(|(host, addresses)| matcher.matches(host, addresses))
            .map(|(host, _)| host.clone())
            .collect(),
        unseen,
    })
}

/// A group as the API and `groups list --format json` show it: its
/// definition and who is in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupView {
    pub name: String,
    /// `names`, `addresses` or `hosts`.
    pub kind: &'static str,
    pub patterns: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub hosts: Vec<String>,
    pub unseen: Vec<String>,
}

impl GroupView {
    /// `group` with `membership` (resolved from it).
    pub fn new(group: HostGroup, membership: Membership) -> GroupView {
        GroupView {
            name: group.name,
            kind: group.kind.as_str(),
            patterns: group.patterns,
            labels: group.labels.into_iter().collect(),
            hosts: membership.hosts,
            unseen: membership.unseen,
        }
    }
}

/// Each host's groups, in group order: what `report hosts` shows.
pub fn groups_by_host(memberships: &[Membership]) -> BTreeMap<String, Vec<String>> {
    let mut by_host: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for membership in memberships {
        for host in &membership.hosts {
            by_host
                .entry(host.clone())
                .or_default()
                .push(membership.name.clone());
        }
    }
    by_host
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ranges_hold_their_addresses_and_only_their_family() {
        let net = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(net.contains(ip("10.1.255.7")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped is IPv4");
        assert!(!net.contains(ip("::a01:9")), "another family never matches");
        let everything = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(everything.contains(ip("255.255.255.255")));
        assert!(!everything.contains(ip("2001:db8::1")));
        let one = Cidr::parse("2001:db8::1/128").unwrap();
        assert!(one.contains(ip("2001:db8::1")));
        assert!(!one.contains(ip("2001:db8::2")));
        assert_eq!(
            Cidr::of(ip("2001:db8:0:1:aa::5"), 64).to_string(),
            "2001:db8:0:1::/64"
        );
        assert_eq!(Cidr::of(ip("192.0.2.77"), 24).to_string(), "192.0.2.0/24");
    }

    #[test]
    fn names_are_tame() {
        for good in ["ws", "ws-01", "a.b_c", "9lives"] {
            check_name("group name", good).unwrap();
        }
        for (bad, found) in [("-ws", '-'), ("ws/1", '/'), ("ws\"", '"'), ("wé", 'é')] {
            assert_eq!(
                check_name("group name", bad),
                Err(GroupError::BadCharacter {
                    what: "group name",
                    value: bad.into(),
                    found
                })
            );
        }
        let long = "a".repeat(MAX_NAME + 1);
        assert!(matches!(
            check_name("group name", &long),
            Err(GroupError::TooLong { len, .. }) if len == MAX_NAME + 1
        ));
    }
}
