//! The policy document, format 1: TOML a person reads and edits (the format
//! is in docs/POLICY.md and stays readable by later versions).
//!
//! Every value that has a syntax (an address range, a time, a protocol) is
//! parsed while the TOML is read, so a mistake is reported with its line and
//! column; what only the whole rule can tell (a family that contradicts the
//! peers, a member exception for a host policy) is checked afterwards and
//! named by its place, `outbound[3]`.

use std::fmt;
use std::str::FromStr;

use connscope_event::{Protocol, Timestamp};
use connscope_firewall::net::Prefix;
use connscope_firewall::plan::IpFamily;
use connscope_firewall::{Basis, FlowDirection};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The format this build writes and reads.
pub const FORMAT: u32 = 1;

/// A policy: the services a group or host may offer and the destinations it
/// may reach, each rule with the evidence it was drafted from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub format: u32,
    /// A short name for people (`workstations`).
    pub name: String,
    pub target: Target,
    /// How the draft was made; absent on a policy written by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drafted: Option<Drafted>,
    /// Services this host (or every member) may offer.
    #[serde(default)]
    pub inbound: Vec<Rule>,
    /// Destinations this host (or every member) may reach.
    #[serde(default)]
    pub outbound: Vec<Rule>,
    /// Flows a person should look at: held back, or allowed on thin evidence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub review: Vec<ReviewEntry>,
}

/// What a policy is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Target {
    /// Every member of the store's host group of that name.
    Group(String),
    /// One host, as it names itself in its events.
    Host(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Group(name) => write!(f, "group {name}"),
            Target::Host(name) => write!(f, "host {name}"),
        }
    }
}

/// The history and settings a draft was made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drafted {
    #[serde(with = "as_text")]
    pub from: Timestamp,
    #[serde(with = "as_text")]
    pub to: Timestamp,
    /// `exact`, `subnet` or `group`.
    pub generalize: String,
    pub min_share: f64,
    pub min_count: u64,
    /// The group's members seen in the range.
    #[serde(default)]
    pub members: Vec<String>,
}

/// One allow rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(with = "as_text")]
    pub protocol: Protocol,
    pub ports: Vec<u16>,
    /// Required when `peers` is absent (any peer of this family); otherwise
    /// the peers' family, which it must agree with when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<IpFamily>,
    /// Peer networks or addresses; absent means any peer of `family`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "optional_prefixes"
    )]
    pub peers: Option<Vec<Prefix>>,
    /// The members this rule is for (a member's exception); empty means every
    /// member (or the host).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// A person approved it: re-drafting keeps it whatever the new history says.
    #[serde(default)]
    pub approved: bool,
    /// Why it reaches beyond one host's own flows, when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basis: Option<Basis>,
    #[serde(default)]
    pub evidence: RuleEvidence,
}

/// What was seen that a rule allows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleEvidence {
    pub connections: u64,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "optional_text"
    )]
    pub first_seen: Option<Timestamp>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "optional_text"
    )]
    pub last_seen: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
}

/// A flow for a person to decide on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewEntry {
    pub host: String,
    pub direction: FlowDirection,
    #[serde(with = "as_text")]
    pub protocol: Protocol,
    pub port: u16,
    #[serde(with = "as_text")]
    pub peer: Prefix,
    pub connections: u64,
    /// Whether the policy allows it (thin evidence) or not (held back).
    pub allowed: bool,
    pub reason: String,
}

/// A policy file that cannot be used, with where it is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("format {0} is newer than this build reads ({FORMAT})")]
    FutureFormat(u32),
    #[error("{place}: {message}")]
    Rule { place: String, message: String },
}

impl Policy {
    /// Reads and checks a policy file's text.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let policy: Policy = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|span| line_and_column(text, span.start))
                .unwrap_or((1, 1));
            PolicyError::Syntax {
                line,
                column,
                message: e.message().to_owned(),
            }
        })?;
        policy.validate()?;
        Ok(policy)
    }

    /// The policy as the file a person edits.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a policy is plain TOML data")
    }

    /// Checks what the TOML types cannot: format, ports, families, exceptions.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.format > FORMAT {
            return Err(PolicyError::FutureFormat(self.format));
        }
        for (direction, rules) in self.sections() {
            for (index, rule) in rules.iter().enumerate() {
                let place = || format!("{}[{index}]", section(direction));
                rule.check(matches!(self.target, Target::Group(_)))
                    .map_err(|message| PolicyError::Rule {
                        place: place(),
                        message,
                    })?;
            }
        }
        Ok(())
    }

    /// The inbound and the outbound rules, each with its direction.
    pub fn sections(&self) -> [(FlowDirection, &[Rule]); 2] {
        [
            (FlowDirection::Inbound, &self.inbound),
            (FlowDirection::Outbound, &self.outbound),
        ]
    }
}

/// The section a direction's rules are kept in.
pub(crate) fn section(direction: FlowDirection) -> &'static str {
    match direction {
        FlowDirection::Inbound => "inbound",
        FlowDirection::Outbound => "outbound",
    }
}

impl Rule {
    /// The family the rule is for: its peers', else the one it names.
    pub fn resolved_family(&self) -> IpFamily {
        match (&self.peers, self.family) {
            (Some(peers), _) if !peers.is_empty() => family_of(&peers[0]),
            (_, Some(family)) => family,
            _ => IpFamily::Ipv4,
        }
    }

    /// Applies to `host` (a member of the policy's target).
    pub fn applies_to(&self, host: &str) -> bool {
        self.hosts.is_empty() || self.hosts.iter().any(|h| h == host)
    }

    fn check(&self, for_group: bool) -> Result<(), String> {
        if self.ports.is_empty() {
            return Err("no ports: name at least one (1-65535)".into());
        }
        if let Some(port) = self.ports.iter().find(|p| **p == 0) {
            return Err(format!("port {port} is not a service port (1-65535)"));
        }
        match &self.peers {
            None if self.family.is_none() => {
                return Err(
                    "no peers and no family: say `family = \"ipv4\"` (or ipv6) to allow any peer"
                        .into(),
                )
            }
            Some(peers) if peers.is_empty() => {
                return Err(
                    "`peers = []` allows nothing: remove the rule, or the line for any peer".into(),
                )
            }
            Some(peers) => {
                let family = family_of(&peers[0]);
                if let Some(other) = peers.iter().find(|p| family_of(p) != family) {
                    return Err(format!(
                        "peers mix IPv4 and IPv6 ({} and {other}): one family per rule",
                        peers[0]
                    ));
                }
                if self.family.is_some_and(|f| f != family) {
                    return Err(format!(
                        "family {:?} contradicts the peers ({})",
                        self.family.expect("checked"),
                        peers[0]
                    ));
                }
            }
            None => {}
        }
        if !for_group && !self.hosts.is_empty() {
            return Err("`hosts` names members, but this policy is for one host".into());
        }
        Ok(())
    }
}

fn family_of(prefix: &Prefix) -> IpFamily {
    if prefix.is_ipv4() {
        IpFamily::Ipv4
    } else {
        IpFamily::Ipv6
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// Values written as their `Display` text and read with `FromStr`, so an
/// error points at the value.
mod as_text {
    use super::*;

    pub fn serialize<T: fmt::Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: fmt::Display,
        D: Deserializer<'de>,
    {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

mod optional_text {
    use super::*;

    pub fn serialize<T: fmt::Display, S: Serializer>(
        value: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
    where
        T: FromStr,
        T::Err: fmt::Display,
        D: Deserializer<'de>,
    {
        as_text::deserialize(d).map(Some)
    }
}

mod optional_prefixes {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Option<Vec<Prefix>>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(peers) => s.collect_seq(peers.iter().map(ToString::to_string)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Prefix>>, D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        texts
            .iter()
            .map(|t| {
                t.parse::<Prefix>()
                    .map_err(|e| serde::de::Error::custom(format!("peer {t:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
format = 1
name = "workstations"
target = { group = "workstations" }

[[inbound]]
protocol = "tcp"
ports = [22]
peers = ["10.16.2.0/24"]
evidence = { connections = 12, processes = ["/usr/sbin/sshd"], users = ["root"] }

[[outbound]]
protocol = "udp"
ports = [53]
family = "ipv6"
hosts = ["ws-04"]
approved = true
"#;

    #[test]
    fn a_policy_reads_and_writes_back_the_same() {
        let policy = Policy::parse(GOOD).unwrap();
        assert_eq!(policy.target, Target::Group("workstations".into()));
        assert_eq!(
            policy.inbound[0].peers.as_ref().unwrap()[0].to_string(),
            "10.16.2.0/24"
        );
        assert_eq!(policy.outbound[0].resolved_family(), IpFamily::Ipv6);
        assert!(policy.outbound[0].applies_to("ws-04") && !policy.outbound[0].applies_to("ws-05"));
        assert_eq!(Policy::parse(&policy.to_toml()).unwrap(), policy);
    }

    #[test]
    fn mistakes_are_named_by_line_or_rule() {
        let cases = [
            (
                GOOD.replace("10.16.2.0/24", "10.16.2.0/33"),
                "line 9, column 9",
            ),
            (GOOD.replace("\"tcp\"", "\"tpc\""), "line 7"),
            (
                GOOD.replace("ports = [22]", "ports = [22, 0]"),
                "inbound[0]: port 0",
            ),
            (
                GOOD.replace("family = \"ipv6\"\n", ""),
                "outbound[0]: no peers and no family",
            ),
            (
                GOOD.replace(
                    "peers = [\"10.16.2.0/24\"]",
                    "peers = [\"10.16.2.0/24\", \"2001:db8::/64\"]",
                ),
                "inbound[0]: peers mix IPv4 and IPv6",
            ),
            (
                GOOD.replace("approved = true", "aproved = true"),
                "line 17, column 1: unknown field `aproved`",
            ),
            (
                GOOD.replace("format = 1", "format = 2"),
                "format 2 is newer",
            ),
            (
                GOOD.replace("{ group = \"workstations\" }", "{ host = \"ws-01\" }"),
                "outbound[0]: `hosts` names members",
            ),
        ];
        for (text, want) in cases {
            let err = Policy::parse(&text).unwrap_err().to_string();
            assert!(err.contains(want), "want {want:?} in {err:?}");
        }
    }
}
