//! Rule hygiene: which rules of a running policy have stopped earning their
//! place, judged from what the hosts' firewalls counted and what the hosts
//! did, not from the draft's evidence alone (docs/POLICY.md "Rule hygiene").
//!
//! - **Unused**: no host running the version counted a packet on the rule in
//!   the last N days. Judged only once the version has been reported for N
//!   days (a rule loaded yesterday is not unused, only new); a rule a person
//!   approved is listed but never suggested for removal.
//! - **Over-broad**: the rule allows much more than the traffic it carried in
//!   those N days: any peer while only a few were seen, a network at least
//!   256 times the size of the peers seen in it (a /8 with one peer), or
//!   ports of which only some were used. Traffic is matched to rules as
//!   nftables does, first matching rule of its direction.
//!
//! The counters come from the agents' firewall reports
//! ([`record_counters`], called by the collector for each report), kept
//! per rule by the store (`Store::rule_hits`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use connscope_event::Timestamp;
use connscope_firewall::from_store::fleet_flows;
use connscope_firewall::net::Prefix;
use connscope_firewall::plan::IpFamily;
use connscope_firewall::{FlowDirection, ObservedFlow};
use connscope_protocol::policy::{FirewallReport, FirewallState};
use connscope_store::{RuleCount, RuleHits, Store, StoreError, TimeRange};

use crate::check::{target_hosts, CheckError};
use crate::document::{section, Policy, Rule};

/// A network this many times larger than the peers seen in it is over-broad.
pub const WIDE_FACTOR: u128 = 256;
/// An any-peer rule that carried traffic of at most this many peers is
/// over-broad: the peers could be listed.
pub const FEW_PEERS: usize = 16;

const DAY_NANOS: i64 = 86_400_000_000_000;

#[derive(Debug, thiserror::Error)]
pub enum HygieneError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hosts(#[from] CheckError),
    #[error("firewall report of {host}: time {at:?} is not RFC 3339")]
    ReportTime { host: String, at: String },
}

/// Keeps the rule counters of one firewall report (the collector's
/// `AGENT_FIREWALL_PATH` handler calls this for every report it accepts).
/// Only a loaded table has counters; returns how many were kept.
pub fn record_counters(store: &dyn Store, report: &FirewallReport) -> Result<usize, HygieneError> {
    let FirewallState::Loaded {
        name,
        version,
        revision,
        ..
    } = &report.state
    else {
        return Ok(0);
    };
    if report.counters.is_empty() {
        return Ok(0);
    }
    let at: Timestamp = report.at.parse().map_err(|_| HygieneError::ReportTime {
        host: report.host.clone(),
        at: report.at.clone(),
    })?;
    let counts: Vec<RuleCount> = report
        .counters
        .iter()
        .map(|c| RuleCount {
            rule: c.rule.clone(),
            packets: c.packets,
            bytes: c.bytes,
        })
        .collect();
    store.record_rule_counters(&report.host, name, *version, *revision, at, &counts)?;
    Ok(counts.len())
}

/// What hygiene judges by.
#[derive(Debug, Clone, Copy)]
pub struct HygieneOptions {
    /// A rule with no hit in this many days is unused.
    pub unused_days: u32,
    pub now: Timestamp,
}

/// The hygiene of one policy version.
#[derive(Debug, Clone, PartialEq)]
pub struct HygieneReport {
    pub policy: String,
    pub version: u32,
    pub unused_days: u32,
    /// The days looked at: `unused_days` back from now.
    pub window: TimeRange,
    /// Every rule of the policy, in document order.
    pub rules: Vec<RuleHygiene>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RuleHygiene {
    /// `inbound[0]`: the rule's place, as counters name it.
    pub place: String,
    pub summary: String,
    pub approved: bool,
    /// What the hosts' counters say; `None`: no host reported this rule.
    pub hits: Option<RuleHits>,
    pub findings: Vec<Finding>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// No counted packet in the window; `last_hit` is the last ever.
    Unused { last_hit: Option<Timestamp> },
    /// Reported for less than the window: too new to call unused.
    TooNew { since: Timestamp },
    /// No host reported a counter for the rule.
    NoCounters,
    /// Any peer allowed, these few seen.
    AnyPeer { seen: Vec<IpAddr> },
    /// A network much wider than the peers seen in it (maybe none).
    WideNetwork { network: Prefix, seen: Vec<IpAddr> },
    /// Ports no traffic used, beside those it did.
    UnusedPorts { used: Vec<u16>, unused: Vec<u16> },
}

impl RuleHygiene {
    /// What a person should do about the rule, if anything.
    pub fn suggestion(&self) -> Option<&'static str> {
        let unused = self
            .findings
            .iter()
            .any(|f| matches!(f, Finding::Unused { .. }));
        let broad = self.findings.iter().any(|f| {
            matches!(
                f,
                Finding::AnyPeer { .. } | Finding::WideNetwork { .. } | Finding::UnusedPorts { .. }
            )
        });
        match (unused, broad, self.approved) {
            (true, _, true) => Some("keep (approved)"),
            (true, _, false) => Some("remove"),
            (false, true, _) => Some("narrow"),
            (false, false, _) => None,
        }
    }
}

/// Reads the version's counters and its hosts' traffic of the last
/// `unused_days` days from `store`, and judges every rule.
pub fn hygiene(
    store: &dyn Store,
    policy: &Policy,
    version: u32,
    options: &HygieneOptions,
) -> Result<HygieneReport, HygieneError> {
    let window = window(options);
    let hits = store.rule_hits(&policy.name, Some(version))?;
    let hosts = target_hosts(store, policy, window)?;
    let flows: BTreeMap<String, Vec<ObservedFlow>> = fleet_flows(store, window)?
        .into_iter()
        .filter(|(host, _)| hosts.contains(host))
        .map(|(host, stored)| (host, stored.flows))
        .collect();
    Ok(analyse(policy, version, &hits, &flows, options))
}

fn window(options: &HygieneOptions) -> TimeRange {
    TimeRange {
        from: Timestamp::from_nanos(
            options
                .now
                .as_nanos()
                .saturating_sub(i64::from(options.unused_days) * DAY_NANOS),
        ),
        to: options.now,
    }
}

/// What each rule carried: the peers and ports of the traffic it matched first.
#[derive(Default)]
struct Carried {
    peers: BTreeSet<IpAddr>,
    ports: BTreeSet<u16>,
}

/// Judges every rule of `policy` from its counters (`hits`, of `version`)
/// and the traffic of its hosts in the window (`flows`, per host).
pub fn analyse(
    policy: &Policy,
    version: u32,
    hits: &[RuleHits],
    flows: &BTreeMap<String, Vec<ObservedFlow>>,
    options: &HygieneOptions,
) -> HygieneReport {
    let window = window(options);
    let mut carried: BTreeMap<String, Carried> = BTreeMap::new();
    for (host, host_flows) in flows {
        for flow in host_flows {
            let rules = match flow.direction {
                FlowDirection::Inbound => &policy.inbound,
                FlowDirection::Outbound => &policy.outbound,
            };
            if let Some(index) = rules.iter().position(|rule| matches(rule, host, flow)) {
                let entry = carried
                    .entry(format!("{}[{index}]", section(flow.direction)))
                    .or_default();
                entry.peers.insert(flow.remote);
                entry.ports.insert(flow.service_port);
            }
        }
    }
    let mut rules = Vec::new();
    for (direction, section_rules) in policy.sections() {
        for (index, rule) in section_rules.iter().enumerate() {
            let place = format!("{}[{index}]", section(direction));
            let hits = hits.iter().find(|h| h.rule == place).cloned();
            let mut findings = Vec::new();
            match &hits {
                None => findings.push(Finding::NoCounters),
                Some(h) if h.first_reported > window.from => findings.push(Finding::TooNew {
                    since: h.first_reported,
                }),
                Some(h) if h.last_hit.is_none_or(|t| t < window.from) => {
                    findings.push(Finding::Unused {
                        last_hit: h.last_hit,
                    })
                }
                Some(_) => {}
            }
            if let Some(traffic) = carried.get(&place) {
                findings.extend(over_broad(rule, traffic));
            }
            rules.push(RuleHygiene {
                summary: describe_rule(direction, rule),
                place,
                approved: rule.approved,
                hits,
                findings,
            });
        }
    }
    HygieneReport {
        policy: policy.name.clone(),
        version,
        unused_days: options.unused_days,
        window,
        rules,
    }
}

/// Whether `rule` allows `flow` of `host` (the direction is the caller's).
fn matches(rule: &Rule, host: &str, flow: &ObservedFlow) -> bool {
    rule.applies_to(host)
        && rule.protocol == flow.protocol
        && rule.ports.contains(&flow.service_port)
        && match &rule.peers {
            Some(peers) => peers.iter().any(|p| p.contains(flow.remote)),
            None => flow.remote.is_ipv4() == matches!(rule.resolved_family(), IpFamily::Ipv4),
        }
}

fn over_broad(rule: &Rule, traffic: &Carried) -> Vec<Finding> {
    let mut findings = Vec::new();
    match &rule.peers {
        None if traffic.peers.len() <= FEW_PEERS => findings.push(Finding::AnyPeer {
            seen: traffic.peers.iter().copied().collect(),
        }),
        None => {}
        Some(networks) => {
            for network in networks {
                let seen: Vec<IpAddr> = traffic
                    .peers
                    .iter()
                    .copied()
                    .filter(|ip| network.contains(*ip))
                    .collect();
                let (low, high) = network.bounds();
                let size = (high - low).saturating_add(1);
                if size >= WIDE_FACTOR.saturating_mul(seen.len().max(1) as u128) {
                    findings.push(Finding::WideNetwork {
                        network: *network,
                        seen,
                    });
                }
            }
        }
    }
    let unused: Vec<u16> = rule
        .ports
        .iter()
        .copied()
        .filter(|p| !traffic.ports.contains(p))
        .collect();
    if !unused.is_empty() {
        findings.push(Finding::UnusedPorts {
            used: traffic.ports.iter().copied().collect(),
            unused,
        });
    }
    findings
}

/// `tcp/22,2222 from 10.0.0.0/8`, `udp/53 to any ipv4`.
fn describe_rule(direction: FlowDirection, rule: &Rule) -> String {
    let ports: Vec<String> = rule.ports.iter().map(u16::to_string).collect();
    let way = match direction {
        FlowDirection::Inbound => "from",
        FlowDirection::Outbound => "to",
    };
    let peers = match &rule.peers {
        Some(peers) => peers
            .iter()
            .map(Prefix::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        None => match rule.resolved_family() {
            IpFamily::Ipv4 => "any ipv4".into(),
            IpFamily::Ipv6 => "any ipv6".into(),
        },
    };
    let hosts = if rule.hosts.is_empty() {
        String::new()
    } else {
        format!(" (on {})", rule.hosts.join(", "))
    };
    format!(
        "{}/{} {way} {peers}{hosts}",
        rule.protocol.as_str(),
        ports.join(",")
    )
}

fn list(ips: &[IpAddr]) -> String {
    if ips.is_empty() {
        "none".into()
    } else {
        ips.iter()
            .map(IpAddr::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Finding {
    /// A short name for scripts: `unused`, `too-new`, `no-counters`,
    /// `any-peer`, `wide-network`, `unused-ports`.
    pub fn kind(&self) -> &'static str {
        match self {
            Finding::Unused { .. } => "unused",
            Finding::TooNew { .. } => "too-new",
            Finding::NoCounters => "no-counters",
            Finding::AnyPeer { .. } => "any-peer",
            Finding::WideNetwork { .. } => "wide-network",
            Finding::UnusedPorts { .. } => "unused-ports",
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Unused { last_hit: None } => write!(f, "unused: never hit"),
            Finding::Unused { last_hit: Some(at) } => {
                write!(f, "unused: last hit {}", at.to_jiff())
            }
            Finding::TooNew { since } => {
                write!(f, "too new to judge: counted since {:.0}", since.to_jiff())
            }
            Finding::NoCounters => write!(f, "no counters: no host reported this rule"),
            Finding::AnyPeer { seen } => write!(
                f,
                "over-broad: any peer allowed, {} seen: {}",
                seen.len(),
                list(seen)
            ),
            Finding::WideNetwork { network, seen } => write!(
                f,
                "over-broad: {network} allowed, {} peer(s) seen in it: {}",
                seen.len(),
                list(seen)
            ),
            Finding::UnusedPorts { used, unused } => {
                let ports = |p: &[u16]| p.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
                write!(
                    f,
                    "over-broad: port(s) {} unused, only {} used",
                    ports(unused),
                    ports(used)
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connscope_event::Protocol;
    use connscope_protocol::policy::{RuleCounter, Staging};

    const DAY: i64 = DAY_NANOS;
    const NOW: i64 = 1_800_000_000_000_000_000;

    fn policy() -> Policy {
        Policy::parse(
            r#"
format = 1
name = "ws"
target = { group = "ws" }

[[inbound]]
protocol = "tcp"
ports = [22]
peers = ["10.0.0.0/8"]

[[inbound]]
protocol = "tcp"
ports = [8000, 8001, 8002]
peers = ["10.1.2.3"]

[[outbound]]
protocol = "tcp"
ports = [443]
family = "ipv4"

[[outbound]]
protocol = "udp"
ports = [514]
peers = ["10.9.9.9"]
approved = true

[[outbound]]
protocol = "tcp"
ports = [3306]
peers = ["10.5.0.0/24"]
"#,
        )
        .unwrap()
    }

    fn hits(rule: &str, first_days_ago: i64, last_hit_days_ago: Option<i64>) -> RuleHits {
        RuleHits {
            policy: "ws".into(),
            version: 3,
            rule: rule.into(),
            hosts: 2,
            packets: if last_hit_days_ago.is_some() { 10 } else { 0 },
            bytes: 0,
            first_reported: Timestamp::from_nanos(NOW - first_days_ago * DAY),
            last_reported: Timestamp::from_nanos(NOW),
            last_hit: last_hit_days_ago.map(|d| Timestamp::from_nanos(NOW - d * DAY)),
        }
    }

    fn flow(direction: FlowDirection, port: u16, remote: &str) -> ObservedFlow {
        let at = Timestamp::from_nanos(NOW - DAY);
        ObservedFlow {
            direction,
            protocol: Protocol::Tcp,
            local: "10.0.0.1".parse().unwrap(),
            remote: remote.parse().unwrap(),
            service_port: port,
            connections: 5,
            first_seen: at,
            last_seen: at,
            processes: vec![],
            users: vec![],
        }
    }

    fn report() -> HygieneReport {
        let hits = vec![
            hits("inbound[0]", 30, Some(1)),
            hits("inbound[1]", 30, Some(2)),
            hits("outbound[0]", 30, Some(0)),
            hits("outbound[1]", 30, Some(20)),
            hits("outbound[2]", 30, None),
        ];
        let flows = BTreeMap::from([
            (
                "ws1".to_owned(),
                vec![
                    flow(FlowDirection::Inbound, 22, "10.20.30.40"),
                    flow(FlowDirection::Inbound, 8000, "10.1.2.3"),
                    flow(FlowDirection::Outbound, 443, "93.184.216.34"),
                ],
            ),
            (
                "ws2".to_owned(),
                vec![flow(FlowDirection::Outbound, 443, "93.184.216.34")],
            ),
        ]);
        analyse(
            &policy(),
            3,
            &hits,
            &flows,
            &HygieneOptions {
                unused_days: 14,
                now: Timestamp::from_nanos(NOW),
            },
        )
    }

    fn rule<'a>(report: &'a HygieneReport, place: &str) -> &'a RuleHygiene {
        report.rules.iter().find(|r| r.place == place).unwrap()
    }

    #[test]
    fn a_slash_8_with_one_peer_and_unused_ports_are_over_broad() {
        let report = report();
        let ssh = rule(&report, "inbound[0]");
        assert_eq!(ssh.summary, "tcp/22 from 10.0.0.0/8");
        assert_eq!(
            ssh.findings,
            [Finding::WideNetwork {
                network: "10.0.0.0/8".parse().unwrap(),
                seen: vec!["10.20.30.40".parse().unwrap()],
            }]
        );
        assert_eq!(ssh.suggestion(), Some("narrow"));
        let range = rule(&report, "inbound[1]");
        assert_eq!(
            range.findings,
            [Finding::UnusedPorts {
                used: vec![8000],
                unused: vec![8001, 8002],
            }]
        );
        // One address for one peer: not wide.
        assert!(!range
            .findings
            .iter()
            .any(|f| matches!(f, Finding::WideNetwork { .. })));
    }

    #[test]
    fn any_peer_with_one_seen_is_over_broad() {
        let report = report();
        let web = rule(&report, "outbound[0]");
        assert_eq!(web.summary, "tcp/443 to any ipv4");
        assert_eq!(
            web.findings,
            [Finding::AnyPeer {
                seen: vec!["93.184.216.34".parse().unwrap()],
            }]
        );
        assert_eq!(
            web.findings[0].to_string(),
            "over-broad: any peer allowed, 1 seen: 93.184.216.34"
        );
    }

    #[test]
    fn unused_rules_are_for_removal_unless_approved() {
        let report = report();
        let syslog = rule(&report, "outbound[1]");
        assert!(syslog.approved);
        assert!(matches!(
            syslog.findings[0],
            Finding::Unused { last_hit: Some(_) }
        ));
        assert_eq!(syslog.suggestion(), Some("keep (approved)"));
        let db = rule(&report, "outbound[2]");
        assert_eq!(db.findings, [Finding::Unused { last_hit: None }]);
        assert_eq!(db.suggestion(), Some("remove"));
        assert_eq!(db.findings[0].to_string(), "unused: never hit");
    }

    #[test]
    fn a_rule_counted_for_less_than_the_window_is_too_new() {
        let report = analyse(
            &policy(),
            3,
            &[hits("outbound[2]", 3, None)],
            &BTreeMap::new(),
            &HygieneOptions {
                unused_days: 14,
                now: Timestamp::from_nanos(NOW),
            },
        );
        let db = rule(&report, "outbound[2]");
        assert!(matches!(db.findings[..], [Finding::TooNew { .. }]));
        assert_eq!(db.suggestion(), None);
        assert_eq!(rule(&report, "inbound[0]").findings, [Finding::NoCounters]);
    }

    #[test]
    fn traffic_counts_for_the_first_rule_that_allows_it() {
        let mut policy = policy();
        // A second, narrower rule after the /8 never sees the traffic.
        let mut narrow = policy.inbound[0].clone();
        narrow.peers = Some(vec!["10.20.30.40".parse().unwrap()]);
        policy.inbound.push(narrow);
        let flows = BTreeMap::from([(
            "ws1".to_owned(),
            vec![flow(FlowDirection::Inbound, 22, "10.20.30.40")],
        )]);
        let report = analyse(
            &policy,
            3,
            &[],
            &flows,
            &HygieneOptions {
                unused_days: 14,
                now: Timestamp::from_nanos(NOW),
            },
        );
        assert!(rule(&report, "inbound[0]")
            .findings
            .iter()
            .any(|f| matches!(f, Finding::WideNetwork { .. })));
        assert_eq!(rule(&report, "inbound[2]").findings, [Finding::NoCounters]);
    }

    #[test]
    fn a_loaded_report_is_recorded_and_a_bad_time_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = connscope_store::SqliteStore::open(dir.path().join("s.db")).unwrap();
        let mut report = FirewallReport {
            host: "ws1".into(),
            at: "2026-12-04T10:00:00Z".into(),
            state: FirewallState::Loaded {
                name: "ws".into(),
                version: 3,
                revision: 7,
                staging: Staging::default(),
            },
            notices: vec![],
            counters: vec![RuleCounter {
                rule: "inbound[0]".into(),
                packets: 4,
                bytes: 240,
            }],
        };
        assert_eq!(record_counters(&store, &report).unwrap(), 1);
        let kept = store.rule_hits("ws", Some(3)).unwrap();
        assert_eq!((kept[0].packets, kept[0].hosts), (4, 1));
        assert_eq!(
            kept[0].last_hit,
            Some("2026-12-04T10:00:00Z".parse().unwrap())
        );
        report.at = "yesterday".into();
        let err = record_counters(&store, &report).unwrap_err().to_string();
        assert!(
            err.contains("ws1") && err.contains("\"yesterday\""),
            "{err}"
        );
        report.state = FirewallState::BrokenGlass;
        assert_eq!(record_counters(&store, &report).unwrap(), 0);
    }
}
