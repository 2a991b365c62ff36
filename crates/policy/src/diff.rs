//! Comparing two versions of a policy rule by rule, as a reviewer reads a
//! change: what it newly allows, what it no longer allows, and which rules
//! only changed their approval or evidence.

use std::fmt;

use connscope_firewall::FlowDirection;

use crate::document::{section, Policy, Rule};

/// One difference between two versions.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The newer version allows this and the older did not.
    Added {
        direction: FlowDirection,
        rule: Rule,
    },
    /// The older version allowed this and the newer does not.
    Removed {
        direction: FlowDirection,
        rule: Rule,
    },
    /// The same match, approved in one version and not in the other.
    Approval {
        direction: FlowDirection,
        rule: Rule,
        approved: bool,
    },
}

/// Every difference, allowed packets first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PolicyDiff {
    pub changes: Vec<Change>,
}

impl PolicyDiff {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Two rules allow the same packets to the same hosts.
fn same_match(a: &Rule, b: &Rule) -> bool {
    (
        a.protocol,
        &a.ports,
        &a.peers,
        a.resolved_family(),
        &a.hosts,
    ) == (
        b.protocol,
        &b.ports,
        &b.peers,
        b.resolved_family(),
        &b.hosts,
    )
}

/// What changed from `old` to `new`.
pub fn diff(old: &Policy, new: &Policy) -> PolicyDiff {
    let mut changes = Vec::new();
    for ((direction, old_rules), (_, new_rules)) in old.sections().into_iter().zip(new.sections()) {
        for rule in new_rules {
            match old_rules.iter().find(|o| same_match(o, rule)) {
                None => changes.push(Change::Added {
                    direction,
                    rule: rule.clone(),
                }),
                Some(o) if o.approved != rule.approved => changes.push(Change::Approval {
                    direction,
                    rule: rule.clone(),
                    approved: rule.approved,
                }),
                Some(_) => {}
            }
        }
        for rule in old_rules {
            if !new_rules.iter().any(|n| same_match(n, rule)) {
                changes.push(Change::Removed {
                    direction,
                    rule: rule.clone(),
                });
            }
        }
    }
    PolicyDiff { changes }
}

/// A rule in one line: `outbound tcp 445 to 10.0.0.9 (ws3, ws4)`.
pub fn describe(direction: FlowDirection, rule: &Rule) -> String {
    let ports: Vec<String> = rule.ports.iter().map(u16::to_string).collect();
    let peers = match &rule.peers {
        Some(peers) => peers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        None => format!("any {:?} peer", rule.resolved_family()).to_lowercase(),
    };
    let to = match direction {
        FlowDirection::Inbound => "from",
        FlowDirection::Outbound => "to",
    };
    let whom = if rule.hosts.is_empty() {
        String::new()
    } else {
        format!(" (only {})", rule.hosts.join(", "))
    };
    format!(
        "{} {} {} {to} {peers}{whom}",
        section(direction),
        rule.protocol,
        ports.join(","),
    )
}

impl fmt::Display for PolicyDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for change in &self.changes {
            match change {
                Change::Added { direction, rule } => {
                    writeln!(f, "+ {}", describe(*direction, rule))?
                }
                Change::Removed { direction, rule } => {
                    writeln!(f, "- {}", describe(*direction, rule))?
                }
                Change::Approval {
                    direction,
                    rule,
                    approved,
                } => writeln!(
                    f,
                    "~ {} {}",
                    describe(*direction, rule),
                    if *approved {
                        "approved"
                    } else {
                        "no longer approved"
                    }
                )?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = r#"
format = 1
name = "ws"
target = { group = "ws" }

[[outbound]]
protocol = "tcp"
ports = [445]
peers = ["10.0.0.9"]

[[outbound]]
protocol = "tcp"
ports = [5432]
peers = ["10.0.0.20"]
hosts = ["ws3"]
"#;

    #[test]
    fn additions_removals_and_approvals_are_listed_and_evidence_is_not_a_change() {
        let old = Policy::parse(OLD).unwrap();
        let mut new = old.clone();
        new.outbound[0].evidence.connections = 999;
        assert!(diff(&old, &new).is_empty());
        new.outbound[0].approved = true;
        new.outbound.remove(1);
        new.inbound.push(Rule {
            hosts: Vec::new(),
            family: Some(connscope_firewall::plan::IpFamily::Ipv6),
            peers: None,
            ports: vec![22],
            ..old.outbound[0].clone()
        });
        let text = diff(&old, &new).to_string();
        assert_eq!(
            text,
            "+ inbound tcp 22 from any ipv6 peer\n\
             ~ outbound tcp 445 to 10.0.0.9 approved\n\
             - outbound tcp 5432 to 10.0.0.20 (only ws3)\n"
        );
    }
}
