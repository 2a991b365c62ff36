//! From a policy to what a host loads: the host's plan (the rules for every
//! member plus its own exceptions) and its nftables text in a mode.
//!
//! The text comes from the planner's renderer (`connscope_firewall::render`),
//! so a policy loads into the same `inet connscope` table as a plan, with the
//! same base rules and the same escaping of untrusted text: the what-if check
//! and the kernel see one kind of ruleset whichever way it was made.

use std::collections::BTreeSet;

use connscope_event::Timestamp;
use connscope_firewall::plan::{Evidence, PlanRule};
use connscope_firewall::render::{nft_ending, ChainEnd};
use connscope_firewall::{plan, Plan, PlanOptions};

use crate::document::{Policy, Rule};

/// How the loaded policy treats what it does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Let it through and log it to NFLOG group `log_group` (a would-block):
    /// staging, where nothing can break.
    Audit { log_group: u16 },
    /// Drop it and log it to NFLOG group `log_group` (a block).
    Enforce { log_group: u16 },
}

impl Policy {
    /// The rules `host` gets: every rule for all members, and the ones that
    /// name it. A host outside the target gets them too; the caller decides
    /// who the policy is for.
    pub fn plan_for(&self, host: &str) -> Plan {
        let mut plan = plan(host, &[], PlanOptions::default());
        for (direction, rules) in self.sections() {
            plan.rules.extend(
                rules
                    .iter()
                    .filter(|rule| rule.applies_to(host))
                    .map(|rule| plan_rule(direction, rule)),
            );
        }
        plan
    }
}

fn plan_rule(direction: connscope_firewall::FlowDirection, rule: &Rule) -> PlanRule {
    let first = rule.evidence.first_seen.unwrap_or(Timestamp::from_nanos(0));
    PlanRule {
        direction,
        protocol: rule.protocol,
        family: rule.resolved_family(),
        peers: rule.peers.clone(),
        ports: rule.ports.clone(),
        evidence: Evidence {
            flows: 1,
            connections: rule.evidence.connections,
            first_seen: first,
            last_seen: rule.evidence.last_seen.unwrap_or(first),
            processes: rule
                .evidence
                .processes
                .iter()
                .cloned()
                .collect::<BTreeSet<_>>(),
            users: rule.evidence.users.iter().cloned().collect(),
        },
        basis: rule.basis.clone(),
    }
}

/// `host`'s ruleset of `policy` in `mode`, for `nft -f`.
pub fn render(policy: &Policy, host: &str, mode: Mode) -> String {
    let end = match mode {
        Mode::Audit { log_group } => ChainEnd::Audit { log_group },
        Mode::Enforce { log_group } => ChainEnd::Enforce {
            log_group,
            reject: false,
        },
    };
    nft_ending(&policy.plan_for(host), end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use connscope_firewall::check::{check, Outcome};
    use connscope_firewall::test_support::FlowBuilder;
    use connscope_firewall::FlowDirection::Outbound;

    fn policy() -> Policy {
        Policy::parse(
            r#"
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
hosts = ["ws-04"]
"#,
        )
        .unwrap()
    }

    fn outcomes(text: &str, port: u16, peer: &str) -> Outcome {
        let ruleset = connscope_firewall::nft::parse_str("policy.nft", text).unwrap();
        let flow = FlowBuilder::new(Outbound, "10.0.1.4", peer, port).build();
        check(&ruleset, &[flow])[0].outcome
    }

    #[test]
    fn exceptions_reach_only_their_member_and_audit_blocks_nothing() {
        let policy = policy();
        let enforce = Mode::Enforce { log_group: 7 };
        let ws4 = render(&policy, "ws-04", enforce);
        let ws5 = render(&policy, "ws-05", enforce);
        assert_eq!(outcomes(&ws4, 5432, "10.0.0.20"), Outcome::Allowed);
        assert_eq!(outcomes(&ws5, 5432, "10.0.0.20"), Outcome::Blocked);
        assert_eq!(outcomes(&ws5, 445, "10.0.0.9"), Outcome::Allowed);
        assert!(
            ws5.contains("counter log prefix \"connscope blocked output: \" group 7"),
            "{ws5}"
        );

        let audit = render(&policy, "ws-05", Mode::Audit { log_group: 7 });
        assert!(audit.contains("policy accept;"), "{audit}");
        assert!(
            audit.contains("log prefix \"connscope would-block output: \" group 7"),
            "{audit}"
        );
        assert_eq!(outcomes(&audit, 5432, "10.0.0.20"), Outcome::Allowed);
    }
}
