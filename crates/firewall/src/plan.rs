//! The planner: from observed flows to an allowlist, as data. Rendering to
//! nftables or iptables text is separate (`render`), so the decisions made here
//! (what to allow, how far to generalise, what to hold back for review) are
//! tested once and shared by every output format.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use connscope_event::{Family, Protocol, Timestamp};
use connscope_names::name_set;
use serde::{Deserialize, Serialize};

use crate::flow::{as_display, FlowDirection, ObservedFlow};
use crate::net::{normalize, Prefix};

/// How far a peer address is widened before it goes into a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Generalize {
    /// Only the observed address itself (/32 or /128).
    Exact,
    /// The enclosing network of this many bits (e.g. 24 for IPv4, 64 for IPv6).
    Prefix(u8),
    /// Any peer: the rule names only protocol and port.
    Any,
}

/// A `--generalize` value that is none of `exact`, `any` or a prefix length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid generalisation {0:?}: expected exact, any or a prefix length")]
pub struct GeneralizeError(pub String);

impl FromStr for Generalize {
    type Err = GeneralizeError;

    fn from_str(s: &str) -> Result<Generalize, GeneralizeError> {
        match s {
            "exact" => Ok(Generalize::Exact),
            "any" => Ok(Generalize::Any),
            _ => s
                .trim_start_matches('/')
                .parse::<u8>()
                .ok()
                .filter(|len| *len <= 128)
                .map(Generalize::Prefix)
                .ok_or_else(|| GeneralizeError(s.to_owned())),
        }
    }
}

impl fmt::Display for Generalize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Generalize::Exact => f.write_str("exact"),
            Generalize::Prefix(len) => write!(f, "{len}"),
            Generalize::Any => f.write_str("any"),
        }
    }
}

impl Generalize {
    /// The network a peer address is allowed as; `None` means any peer.
    fn widen(self, addr: IpAddr) -> Option<Prefix> {
        match self {
            Generalize::Exact => Some(Prefix::host(addr)),
            Generalize::Any => None,
            Generalize::Prefix(len) => {
                let max = if addr.is_ipv4() { 32 } else { 128 };
                Some(Prefix::new(addr, len.min(max)).expect("length clamped to the family width"))
            }
        }
    }
}

/// What the planner may allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PlanOptions {
    pub generalize_v4: Generalize,
    pub generalize_v6: Generalize,
    /// Flows seen fewer times than this are listed for review, not allowed.
    pub min_count: u64,
    /// End each chain with a reject (TCP reset / ICMP admin-prohibited) rather
    /// than a silent drop.
    pub reject: bool,
}

impl Default for PlanOptions {
    /// Exact addresses, every observed flow allowed, silent drop: a plan checked
    /// against its own history blocks nothing.
    fn default() -> Self {
        PlanOptions {
            generalize_v4: Generalize::Exact,
            generalize_v6: Generalize::Exact,
            min_count: 1,
            reject: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpFamily {
    Ipv4,
    Ipv6,
}

/// Why a rule exists: what was seen that it allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    pub flows: usize,
    pub connections: u64,
    #[serde(serialize_with = "as_display")]
    pub first_seen: Timestamp,
    #[serde(serialize_with = "as_display")]
    pub last_seen: Timestamp,
    pub processes: BTreeSet<String>,
    pub users: BTreeSet<String>,
}

impl Evidence {
    /// The evidence of a single flow.
    pub fn of(flow: &ObservedFlow) -> Evidence {
        Evidence {
            flows: 1,
            connections: flow.connections,
            first_seen: flow.first_seen,
            last_seen: flow.last_seen,
            processes: flow.processes.iter().cloned().collect(),
            users: flow.users.iter().cloned().collect(),
        }
    }

    pub(crate) fn merge(&mut self, other: &Evidence) {
        self.flows += other.flows;
        self.connections += other.connections;
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.processes.extend(other.processes.iter().cloned());
        self.users.extend(other.users.iter().cloned());
    }
}

/// Why a rule allows more than the host itself was seen doing: the
/// generalisation and the evidence that supports it. `None` on a rule means it
/// allows exactly (up to `--generalize` widening) what the host did.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Basis {
    /// Allowed for, or to, a whole group because enough of its members used it.
    Group {
        group: String,
        used_by: usize,
        members: usize,
    },
    /// Peers widened to the subnets the seen peers span.
    Subnet { peers_seen: usize, subnets: usize },
}

impl fmt::Display for Basis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Basis::Group {
                group,
                used_by,
                members,
            } => write!(f, "used by {used_by} of {members} members of {group}"),
            Basis::Subnet {
                peers_seen,
                subnets,
            } => write!(
                f,
                "{peers_seen} peers seen, widened to the {subnets} subnet(s) they span"
            ),
        }
    }
}

/// One allow rule: a direction, protocol, family, the peers (None: any) and the
/// service ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanRule {
    pub direction: FlowDirection,
    #[serde(serialize_with = "as_display")]
    pub protocol: Protocol,
    pub family: IpFamily,
    pub peers: Option<Vec<Prefix>>,
    pub ports: Vec<u16>,
    pub evidence: Evidence,
    /// Why the rule reaches beyond the host's own flows, if it does.
    pub basis: Option<Basis>,
}

impl PlanRule {
    /// The rule lets the (normalised) flow through.
    pub fn allows(&self, flow: &ObservedFlow) -> bool {
        let (_, remote) = flow.packet_addresses();
        let family = if remote.is_ipv4() {
            IpFamily::Ipv4
        } else {
            IpFamily::Ipv6
        };
        self.direction == flow.direction
            && self.protocol == flow.protocol
            && self.family == family
            && self.ports.contains(&flow.service_port)
            && self
                .peers
                .as_ref()
                .is_none_or(|peers| peers.iter().any(|p| p.contains(remote)))
    }
}

/// A rule of a group's ruleset that only some members need: what one member
/// did that the group as a whole does not explain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberException {
    pub host: String,
    pub rule: PlanRule,
}

/// An outbound allow rule for the addresses of one DNS name: `ip daddr
/// @name4_... tcp dport 443 accept` and the IPv6 twin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NameRule {
    /// The name as the host learned it, byte for byte (cleaned wherever
    /// it is written into a ruleset).
    pub name: String,
    #[serde(serialize_with = "as_display")]
    pub protocol: Protocol,
    pub ports: Vec<u16>,
    /// The addresses it was seen at, which the rule does not name: the set
    /// is filled as the host resolves the name.
    pub addresses_seen: Vec<IpAddr>,
    pub evidence: Evidence,
}

impl NameRule {
    /// The set of this name's `family` addresses.
    pub fn set(&self, family: Family) -> String {
        name_set(&self.name, family)
    }
}

/// The rules by name of several plans as one list: a rule per name and
/// protocol, their ports and evidence merged (a group's ruleset).
pub fn merge_name_rules<'a>(rules: impl IntoIterator<Item = &'a NameRule>) -> Vec<NameRule> {
    let mut merged: BTreeMap<(String, Protocol), NameRule> = BTreeMap::new();
    for rule in rules {
        match merged.get_mut(&(rule.name.clone(), rule.protocol)) {
            Some(m) => {
                m.ports.extend(&rule.ports);
                m.ports.sort_unstable();
                m.ports.dedup();
                m.addresses_seen.extend(&rule.addresses_seen);
                m.addresses_seen.sort_unstable();
                m.addresses_seen.dedup();
                m.evidence.merge(&rule.evidence);
            }
            None => {
                merged.insert((rule.name.clone(), rule.protocol), rule.clone());
            }
        }
    }
    merged.into_values().collect()
}

/// A flow the plan does not allow, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReviewItem {
    pub flow: ObservedFlow,
    pub reason: String,
}

/// An allowlist for one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub host: String,
    pub options: PlanOptions,
    pub rules: Vec<PlanRule>,
    pub review: Vec<ReviewItem>,
    /// Flows over the loopback interface, which the base rules accept whole.
    pub loopback_flows: usize,
    /// Flows whose peer address the log lost (`0.0.0.0`: a dual-stack
    /// socket's IPv4 peer as 64-bit tcpspy prints it, see docs/IMPORT.md).
    /// Their ports are open to any peer of the family: the connections were
    /// seen, and blocking them is what a plan must not do.
    pub lost_peer_flows: usize,
    /// In a group's ruleset (`firewall plan --group`), the rules that only
    /// some members need; they are among `rules` too, so no member is blocked.
    pub exceptions: Vec<MemberException>,
    /// Outbound rules by name (`--outbound by-name`, `crate::by_name`):
    /// the flows they allow are not among `rules`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub named_rules: Vec<NameRule>,
}

/// A rule that no packet can match: an `ip6` rule on an IPv4-mapped address
/// (the packets of a dual-stack socket talking IPv4 are IPv4) or on `::`
/// (64-bit tcpspy's print of `::1` and of mapped addresses).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refusing to write the {direction} rule for {protocol} port(s) {ports:?}: peer {peer} is {why}, so no packet can match an ip6 rule on it")]
pub struct UnmatchableRule {
    pub direction: &'static str,
    pub protocol: Protocol,
    pub ports: Vec<u16>,
    pub peer: Prefix,
    pub why: &'static str,
}

impl Plan {
    /// Refuses a plan with a rule that cannot match a packet. [`plan()`]
    /// never builds one; this is the second line of defence before a ruleset
    /// that looks right to `nft -c` silently drops the traffic it was built from.
    pub fn check_matchable(&self) -> Result<(), UnmatchableRule> {
        for rule in &self.rules {
            for peer in rule.peers.iter().flatten() {
                let IpAddr::V6(v6) = peer.addr() else {
                    continue;
                };
                let why = if v6.to_ipv4_mapped().is_some() && peer.prefix_len() >= 96 {
                    "an IPv4-mapped address (the packets are IPv4)"
                } else if v6.is_unspecified() && peer.is_host() {
                    "the unspecified address `::` (64-bit tcpspy's print of ::1 and of mapped addresses)"
                } else {
                    continue;
                };
                return Err(UnmatchableRule {
                    direction: rule.direction.as_str(),
                    protocol: rule.protocol,
                    ports: rule.ports.clone(),
                    peer: *peer,
                    why,
                });
            }
        }
        Ok(())
    }
}

/// Builds the allowlist. Flows are grouped per (direction, protocol, family,
/// port), their peers widened and de-duplicated; ports that end up with the
/// very same peers share one rule, which keeps rulesets short.
pub fn plan(host: &str, flows: &[ObservedFlow], options: PlanOptions) -> Plan {
    type PortKey = (FlowDirection, Protocol, IpFamily, u16);
    let mut per_port: BTreeMap<PortKey, (Vec<Option<Prefix>>, Evidence)> = BTreeMap::new();
    let mut review = Vec::new();
    let mut loopback_flows = 0;
    let mut lost_peer_flows = 0;
    for flow in flows {
        let flow = &flow.normalized();
        if flow.is_loopback() {
            loopback_flows += 1;
            continue;
        }
        if flow.connections < options.min_count {
            review.push(ReviewItem {
                flow: flow.clone(),
                reason: format!(
                    "seen {} time(s), fewer than --min-count {}",
                    flow.connections, options.min_count
                ),
            });
            continue;
        }
        let (family, level) = if flow.is_ipv4() {
            (IpFamily::Ipv4, options.generalize_v4)
        } else {
            (IpFamily::Ipv6, options.generalize_v6)
        };
        let key = (flow.direction, flow.protocol, family, flow.service_port);
        let peer = if flow.remote.is_unspecified() {
            lost_peer_flows += 1;
            None
        } else {
            level.widen(flow.remote)
        };
        match per_port.get_mut(&key) {
            Some((peers, evidence)) => {
                peers.push(peer);
                evidence.merge(&Evidence::of(flow));
            }
            None => {
                per_port.insert(key, (vec![peer], Evidence::of(flow)));
            }
        }
    }

    type RuleKey = (FlowDirection, Protocol, IpFamily, Option<Vec<Prefix>>);
    let mut per_peers: BTreeMap<RuleKey, (Vec<u16>, Evidence)> = BTreeMap::new();
    for ((direction, protocol, family, port), (peers, evidence)) in per_port {
        // One "any" peer makes the whole port open to anyone of that family.
        let peers = peers.into_iter().collect::<Option<Vec<_>>>().map(normalize);
        let key = (direction, protocol, family, peers);
        match per_peers.get_mut(&key) {
            Some((ports, merged)) => {
                ports.push(port);
                merged.merge(&evidence);
            }
            None => {
                per_peers.insert(key, (vec![port], evidence));
            }
        }
    }
    let rules = per_peers
        .into_iter()
        .map(
            |((direction, protocol, family, peers), (ports, evidence))| PlanRule {
                direction,
                protocol,
                family,
                peers,
                ports,
                evidence,
                basis: None,
            },
        )
        .collect();
    Plan {
        host: host.to_owned(),
        options,
        rules,
        review,
        loopback_flows,
        lost_peer_flows,
        exceptions: Vec::new(),
        named_rules: Vec::new(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::test_support::FlowBuilder;

    pub(crate) fn flow(
        direction: FlowDirection,
        proto: Protocol,
        remote: &str,
        port: u16,
        n: u64,
    ) -> ObservedFlow {
        let remote: IpAddr = remote.parse().unwrap();
        let local = if remote.is_ipv4() {
            "192.0.2.1"
        } else {
            "2001:db8::1"
        };
        FlowBuilder::new(direction, local, remote, port)
            .protocol(proto)
            .connections(n)
            .seen(
                Timestamp::from_nanos(1_795_548_137_000_000_000),
                Timestamp::from_nanos(1_795_648_137_000_000_000),
            )
            .processes(["/usr/sbin/sshd"])
            .users(["root"])
            .build()
    }

    use FlowDirection::{Inbound, Outbound};
    use Protocol::{Tcp, Udp};

    #[test]
    fn dual_stack_peers_get_ip_rules_and_tcpspy_pairs_are_loopback() {
        let mut mapped_in = flow(Inbound, Tcp, "::ffff:10.0.0.5", 8443, 3);
        mapped_in.local = "::ffff:10.0.0.1".parse().unwrap();
        let mut mapped_out = flow(Outbound, Tcp, "::ffff:10.0.9.9", 636, 2);
        mapped_out.local = "::ffff:10.0.0.1".parse().unwrap();
        let mut tcpspy_loopback = flow(Inbound, Tcp, "::", 8443, 7);
        tcpspy_loopback.local = "::".parse().unwrap();
        let plan = plan(
            "h",
            &[mapped_in, mapped_out, tcpspy_loopback],
            PlanOptions::default(),
        );
        assert_eq!(plan.loopback_flows, 1);
        let peers: Vec<(IpFamily, String)> = plan
            .rules
            .iter()
            .map(|r| (r.family, r.peers.as_ref().unwrap()[0].to_string()))
            .collect();
        assert_eq!(
            peers,
            [
                (IpFamily::Ipv4, "10.0.0.5".to_owned()),
                (IpFamily::Ipv4, "10.0.9.9".to_owned())
            ]
        );
        plan.check_matchable().unwrap();
    }

    #[test]
    fn a_lost_peer_address_opens_its_port_to_the_family() {
        let mut lost = flow(Inbound, Tcp, "0.0.0.0", 8443, 2);
        lost.local = "0.0.0.0".parse().unwrap();
        let flows = [lost, flow(Inbound, Tcp, "10.0.0.5", 22, 1)];
        let plan = plan("h", &flows, PlanOptions::default());
        assert_eq!((plan.lost_peer_flows, plan.loopback_flows), (1, 0));
        let open: Vec<_> = plan
            .rules
            .iter()
            .map(|r| (r.family, r.ports.clone(), r.peers.is_none()))
            .collect();
        assert_eq!(
            open,
            [
                (IpFamily::Ipv4, vec![8443], true),
                (IpFamily::Ipv4, vec![22], false)
            ]
        );
    }

    #[test]
    fn a_plan_with_an_unmatchable_ip6_rule_is_refused() {
        let mut plan = plan(
            "h",
            &[flow(Inbound, Tcp, "2001:db8::5", 8443, 1)],
            PlanOptions::default(),
        );
        plan.check_matchable().unwrap();
        for (peer, why) in [
            ("::ffff:10.0.0.5", "an IPv4-mapped address"),
            ("::", "the unspecified address"),
        ] {
            plan.rules[0].peers = Some(vec![peer.parse().unwrap()]);
            let err = plan.check_matchable().unwrap_err().to_string();
            assert!(
                err.starts_with(&format!(
                    "refusing to write the inbound rule for tcp port(s) [8443]: peer {peer} is {why}"
                )),
                "{err}"
            );
        }
        // Wide prefixes that happen to start at `::` match real packets.
        plan.rules[0].peers = Some(vec!["::/0".parse().unwrap()]);
        plan.check_matchable().unwrap();
    }

    #[test]
    fn generalize_parses_levels() {
        assert_eq!("exact".parse::<Generalize>().unwrap(), Generalize::Exact);
        assert_eq!("24".parse::<Generalize>().unwrap(), Generalize::Prefix(24));
        assert_eq!("/64".parse::<Generalize>().unwrap(), Generalize::Prefix(64));
        assert_eq!("any".parse::<Generalize>().unwrap(), Generalize::Any);
        assert!("wide".parse::<Generalize>().is_err());
        assert!("129".parse::<Generalize>().is_err());
    }

    #[test]
    fn groups_ports_with_equal_peers_and_widens() {
        let flows = [
            flow(Inbound, Tcp, "10.0.0.5", 22, 3),
            flow(Inbound, Tcp, "10.0.0.7", 22, 1),
            flow(Inbound, Tcp, "10.0.0.9", 80, 2),
            flow(Outbound, Udp, "10.0.1.1", 53, 9),
            flow(Outbound, Tcp, "2001:db8:1::5", 443, 4),
            flow(Inbound, Tcp, "127.0.0.1", 5432, 4),
        ];
        let opts = PlanOptions {
            generalize_v4: Generalize::Prefix(24),
            ..PlanOptions::default()
        };
        let plan = plan("h", &flows, opts);
        assert_eq!(plan.loopback_flows, 1);
        assert_eq!(plan.rules.len(), 3);
        let inbound = &plan.rules[0];
        assert_eq!(inbound.direction, Inbound);
        assert_eq!(inbound.ports, [22, 80]);
        assert_eq!(
            inbound.peers.as_ref().unwrap()[0].to_string(),
            "10.0.0.0/24"
        );
        assert_eq!(inbound.evidence.connections, 6);
        assert_eq!(inbound.evidence.flows, 3);
        let v6 = plan
            .rules
            .iter()
            .find(|r| r.family == IpFamily::Ipv6)
            .unwrap();
        assert_eq!(v6.peers.as_ref().unwrap()[0].to_string(), "2001:db8:1::5");
    }

    #[test]
    fn min_count_holds_rare_flows_for_review() {
        let flows = [
            flow(Inbound, Tcp, "10.0.0.5", 22, 3),
            flow(Inbound, Tcp, "10.0.0.6", 23, 1),
        ];
        let plan = plan(
            "h",
            &flows,
            PlanOptions {
                min_count: 2,
                ..PlanOptions::default()
            },
        );
        assert_eq!(plan.rules.len(), 1);
        assert_eq!(plan.rules[0].ports, [22]);
        assert_eq!(plan.review.len(), 1);
        assert_eq!(plan.review[0].flow.service_port, 23);
    }

    #[test]
    fn any_peer_opens_the_port_for_the_family_only() {
        let flows = [
            flow(Inbound, Tcp, "10.0.0.5", 22, 1),
            flow(Inbound, Tcp, "10.9.0.5", 22, 1),
        ];
        let plan = plan(
            "h",
            &flows,
            PlanOptions {
                generalize_v4: Generalize::Any,
                ..PlanOptions::default()
            },
        );
        assert_eq!(plan.rules.len(), 1);
        assert_eq!(plan.rules[0].peers, None);
        assert_eq!(plan.rules[0].family, IpFamily::Ipv4);
    }
}
