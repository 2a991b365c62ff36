//! The checks before a ruleset is loaded, so a bad one is refused while the
//! host still runs the previous one: nft is there and new enough, the kernel
//! accepts the text (`nft -c`), the agent's collectors stay reachable through
//! the new rules (the what-if checker of the planner, run on the text), and
//! other tables on the same hooks that can drop what connscope accepts are
//! named.
//!
//! nftables runs every base chain of a hook in turn, and an accept in one
//! does not spare a packet the next: a host table that drops on `input` or
//! `output` can make connscope's golden rules moot whatever its priority.
//! Such a table is the host's administrator's own business, so it is
//! reported, not refused.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use connscope_event::{Protocol, Timestamp};
use connscope_firewall::check::{check_flow, Outcome};
use connscope_firewall::{FlowDirection, ObservedFlow};
use connscope_policy::GoldenRules;

use crate::error::EnforceError;
use crate::nft::{Nft, Tables, TABLE};

/// What the pre-flight found, when it let the ruleset through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preflight {
    pub nft_version: String,
    pub conflicts: Vec<Conflict>,
}

/// A base chain of another table, on a hook connscope uses, that can drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub family: String,
    pub table: String,
    pub chain: String,
    pub hook: String,
    pub priority: String,
    pub policy: String,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "table {} {} chain {} (hook {}, priority {}, policy {}) can drop what connscope's rules accept",
            self.family, self.table, self.chain, self.hook, self.priority, self.policy
        )
    }
}

/// Runs every check on `text` (the rendered table) for a host whose agent
/// keeps `golden` open.
pub fn preflight(nft: &Nft, text: &str, golden: &GoldenRules) -> Result<Preflight, EnforceError> {
    let nft_version = nft.version()?;
    nft.check(text)?;
    collectors_pass(text, golden)?;
    let conflicts = conflicts(&nft.ruleset_json()?);
    Ok(Preflight {
        nft_version,
        conflicts,
    })
}

/// Every collector's address and port is allowed out by `text`.
pub fn collectors_pass(text: &str, golden: &GoldenRules) -> Result<(), EnforceError> {
    let ruleset = connscope_firewall::nft::parse_str("connscope.nft", text)
        .map_err(|e| EnforceError::Unchecked(e.to_string()))?;
    for collector in &golden.collectors {
        let local = match collector.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let flow = ObservedFlow {
            direction: FlowDirection::Outbound,
            protocol: Protocol::Tcp,
            local,
            remote: collector.ip(),
            service_port: collector.port(),
            connections: 1,
            first_seen: Timestamp::from_nanos(0),
            last_seen: Timestamp::from_nanos(0),
            processes: Vec::new(),
            users: Vec::new(),
        };
        if check_flow(&ruleset, &flow).outcome != Outcome::Allowed {
            return Err(EnforceError::CollectorUnreachable(*collector));
        }
    }
    Ok(())
}

/// Other tables' base chains on `input` or `output` that drop by policy or
/// hold a rule that drops or rejects.
pub fn conflicts(tables: &Tables) -> Vec<Conflict> {
    let ours = |family: &str, table: &str| (family, table) == TABLE;
    tables
        .chains
        .iter()
        .filter(|c| !ours(&c.family, &c.table))
        .filter(|c| matches!(c.family.as_str(), "inet" | "ip" | "ip6"))
        .filter(|c| matches!(c.hook.as_deref(), Some("input" | "output")))
        .filter(|c| {
            c.policy.as_deref() == Some("drop")
                || tables
                    .rules
                    .iter()
                    .any(|r| r.family == c.family && r.table == c.table && r.drops())
        })
        .map(|c| Conflict {
            family: c.family.clone(),
            table: c.table.clone(),
            chain: c.name.clone(),
            hook: c.hook.clone().unwrap_or_default(),
            priority: c
                .prio
                .as_ref()
                .map(|p| match p {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .unwrap_or_default(),
            policy: c.policy.clone().unwrap_or_else(|| "accept".to_owned()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::parse_listing;
    use connscope_policy::{render_staged, Policy};
    use connscope_protocol::policy::{DirectionStage, StageMode, Staging};

    #[test]
    fn a_ruleset_without_the_golden_collector_rule_is_refused() {
        let policy =
            Policy::parse("format = 1\nname = \"none\"\ntarget = { host = \"h\" }\n").unwrap();
        let enforce = DirectionStage {
            mode: StageMode::Enforce,
            except_ports: vec![],
        };
        let staging = Staging {
            inbound: enforce.clone(),
            outbound: enforce,
        };
        let golden = GoldenRules {
            collectors: vec!["10.1.0.1:7443".parse().unwrap()],
            ..GoldenRules::default()
        };
        let with = render_staged(&policy, "h", &staging, &golden, 5);
        collectors_pass(&with, &golden).unwrap();
        let without = render_staged(&policy, "h", &staging, &GoldenRules::default(), 5);
        assert!(matches!(
            collectors_pass(&without, &golden),
            Err(EnforceError::CollectorUnreachable(addr)) if addr.port() == 7443
        ));
    }

    #[test]
    fn only_other_tables_that_can_drop_on_our_hooks_conflict() {
        let json = r#"{"nftables":[
            {"chain":{"family":"inet","table":"connscope","name":"input","hook":"input","prio":0,"policy":"drop"}},
            {"chain":{"family":"ip","table":"strict","name":"in","hook":"input","prio":-10,"policy":"drop"}},
            {"chain":{"family":"inet","table":"quiet","name":"in","hook":"input","prio":-10,"policy":"accept"}},
            {"chain":{"family":"inet","table":"nat","name":"pre","hook":"prerouting","prio":-100,"policy":"drop"}},
            {"chain":{"family":"inet","table":"rules","name":"out","hook":"output","prio":10,"policy":"accept"}},
            {"rule":{"family":"inet","table":"rules","chain":"out","expr":[{"reject":null}]}}]}"#;
        let found = conflicts(&parse_listing(json).unwrap());
        let names: Vec<&str> = found.iter().map(|c| c.table.as_str()).collect();
        assert_eq!(names, ["strict", "rules"]);
        assert_eq!(
            found[0].to_string(),
            "table ip strict chain in (hook input, priority -10, policy drop) can drop what connscope's rules accept"
        );
    }
}
