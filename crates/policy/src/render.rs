//! From a policy to what a host loads: the host's plan (the rules for every
//! member plus its own exceptions) and its nftables text, staged.
//!
//! The text is written here rather than by the planner's renderer because a
//! loaded policy is more than a plan: every rule carries a counter and a
//! comment naming its place in the document (`connscope rule outbound[3]`), so
//! the agent can read hit counts back and name them; golden rules the agent
//! supplies (its collectors, its administrators' SSH) come before anything
//! the policy says, so no policy can lock a host out of its collector; and
//! each direction and each excepted port ends in its own stage (audit: log
//! and accept, enforce: log and drop), so enforcement moves port by port.
//! Untrusted text goes through the planner's comment cleaning
//! (`connscope_firewall::sanitize`), the same as a plan's.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use connscope_event::Timestamp;
use connscope_firewall::net::Prefix;
use connscope_firewall::plan::{Evidence, IpFamily, PlanRule};
use connscope_firewall::render::{rule_text, BLOCKED_PREFIX, NFT_TABLE, WOULD_BLOCK_PREFIX};
use connscope_firewall::sanitize::clean;
use connscope_firewall::{plan, FlowDirection, Plan, PlanOptions};
use connscope_protocol::policy::{DirectionStage, StageMode, Staging};

use crate::document::{section, Policy, Rule};

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

/// The rules the agent adds to every policy it loads, before the policy's
/// own: they keep the host reachable by the people and the collector that can
/// repair it, whatever the policy says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GoldenRules {
    /// The agent's collectors (address and TCP port): outbound always open.
    pub collectors: Vec<SocketAddr>,
    /// Networks administrators log in from: SSH from them always open.
    pub admin_networks: Vec<Prefix>,
    /// The SSH ports (22 when empty).
    pub ssh_ports: Vec<u16>,
}

impl GoldenRules {
    /// The SSH ports the golden rule opens.
    pub fn ssh_ports(&self) -> Vec<u16> {
        if self.ssh_ports.is_empty() {
            vec![22]
        } else {
            self.ssh_ports.clone()
        }
    }
}

/// The comment marking every rule connscope renders; counters are read back
/// by it ([`rule_name`]).
pub const RULE_COMMENT_PREFIX: &str = "connscope ";

/// The name a rule's counter reports (`outbound[3]`, `golden:ssh`,
/// `end:output`, `end:output:tcp/5432`) from its comment, or `None` for a
/// comment connscope did not write.
pub fn rule_name(comment: &str) -> Option<&str> {
    let rest = comment.strip_prefix(RULE_COMMENT_PREFIX)?;
    Some(rest.strip_prefix("rule ").unwrap_or(rest))
}

/// `host`'s ruleset of `policy` in `mode`, for `nft -f`: both directions in
/// the same mode and no golden rules (what `connscope policy render` shows).
pub fn render(policy: &Policy, host: &str, mode: Mode) -> String {
    let (stage, log_group) = match mode {
        Mode::Audit { log_group } => (StageMode::Audit, log_group),
        Mode::Enforce { log_group } => (StageMode::Enforce, log_group),
    };
    let direction = DirectionStage {
        mode: stage,
        except_ports: Vec::new(),
    };
    let staging = Staging {
        inbound: direction.clone(),
        outbound: direction,
    };
    render_staged(policy, host, &staging, &GoldenRules::default(), log_group)
}

/// `host`'s ruleset of `policy` staged as `staging`, with `golden` first and
/// every would-block or blocked packet logged to NFLOG group `log_group`, for
/// `nft -f`. It replaces only connscope's own table.
pub fn render_staged(
    policy: &Policy,
    host: &str,
    staging: &Staging,
    golden: &GoldenRules,
    log_group: u16,
) -> String {
    let mut out = String::new();
    out.push_str("#!/usr/sbin/nft -f\n");
    let _ = writeln!(
        out,
        "# connscope policy {} for host {}; inbound {}, outbound {}",
        clean(&policy.name),
        clean(host),
        stage_text(&staging.inbound),
        stage_text(&staging.outbound),
    );
    // Declaring, deleting and re-declaring the table makes the script one
    // transaction that replaces connscope's table whether or not one is loaded.
    let _ = writeln!(
        out,
        "table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n"
    );
    let _ = writeln!(out, "table inet {NFT_TABLE} {{");
    for (direction, rules) in policy.sections() {
        let stage = match direction {
            FlowDirection::Inbound => &staging.inbound,
            FlowDirection::Outbound => &staging.outbound,
        };
        write_chain(&mut out, direction, rules, host, stage, golden, log_group);
        if direction == FlowDirection::Inbound {
            out.push('\n');
        }
    }
    out.push_str("}\n");
    out
}

fn stage_text(stage: &DirectionStage) -> String {
    let mut text = mode_name(stage.mode).to_owned();
    if !stage.except_ports.is_empty() {
        let ports: Vec<String> = stage
            .except_ports
            .iter()
            .map(|p| format!("{}/{}", p.protocol.as_str(), p.port))
            .collect();
        let other = match stage.mode {
            StageMode::Audit => StageMode::Enforce,
            StageMode::Enforce => StageMode::Audit,
        };
        let _ = write!(text, " ({} {})", mode_name(other), ports.join(","));
    }
    text
}

fn mode_name(mode: StageMode) -> &'static str {
    match mode {
        StageMode::Audit => "audit",
        StageMode::Enforce => "enforce",
    }
}

/// A rule's marking comment. Names are made here from section names, numbers
/// and protocol names only (no host data), so they need no cleaning, and keep
/// their brackets.
fn named(name: &str) -> String {
    debug_assert!(name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "[]:/._- ".contains(c)));
    format!("{RULE_COMMENT_PREFIX}{name}")
}

fn write_chain(
    out: &mut String,
    direction: FlowDirection,
    rules: &[Rule],
    host: &str,
    stage: &DirectionStage,
    golden: &GoldenRules,
    log_group: u16,
) {
    let (chain, iface, icmp, icmpv6, peer_dir) = match direction {
        FlowDirection::Inbound => ("input", "iif", ICMP_IN, ICMPV6_IN, "saddr"),
        FlowDirection::Outbound => ("output", "oif", ICMP_OUT, ICMPV6_OUT, "daddr"),
    };
    let policy = match stage.mode {
        StageMode::Audit => "accept",
        StageMode::Enforce => "drop",
    };
    let _ = writeln!(
        out,
        "\tchain {chain} {{\n\t\ttype filter hook {chain} priority filter; policy {policy};\n"
    );
    let _ = writeln!(
        out,
        "\t\tct state established,related counter accept comment \"{}\"",
        named("golden:established")
    );
    let _ = writeln!(out, "\t\t{iface} \"lo\" accept");
    match direction {
        FlowDirection::Inbound => write_golden_ssh(out, golden),
        FlowDirection::Outbound => write_golden_collectors(out, golden),
    }
    let _ = writeln!(out, "\t\ticmp type {{ {icmp} }} accept");
    let _ = writeln!(out, "\t\ticmpv6 type {{ {icmpv6} }} accept");
    out.push_str("\t\tct state invalid drop\n\n");

    let place = section(direction);
    for (index, rule) in rules.iter().enumerate() {
        if !rule.applies_to(host) {
            continue;
        }
        let peers = match &rule.peers {
            Some(peers) if !peers.is_empty() => {
                let ipkw = match rule.resolved_family() {
                    IpFamily::Ipv4 => "ip",
                    IpFamily::Ipv6 => "ip6",
                };
                format!("{ipkw} {peer_dir} {} ", braced(peers))
            }
            _ => match rule.resolved_family() {
                IpFamily::Ipv4 => "meta nfproto ipv4 ".to_owned(),
                IpFamily::Ipv6 => "meta nfproto ipv6 ".to_owned(),
            },
        };
        // The evidence stays readable in the file; the kernel keeps the name.
        let evidence = rule_text(&plan_rule(direction, rule));
        let _ = writeln!(out, "\t\t# {}", clean(&evidence));
        let _ = writeln!(
            out,
            "\t\t{peers}{} dport {} counter accept comment \"{}\"",
            rule.protocol.as_str(),
            braced(&rule.ports),
            named(&format!("rule {place}[{index}]"))
        );
    }

    // The excepted ports end in the other mode, before the direction's end.
    out.push('\n');
    for port in &stage.except_ports {
        let mode = stage.mode_for(port.protocol, port.port);
        let _ = writeln!(
            out,
            "\t\t{} dport {} {} comment \"{}\"",
            port.protocol.as_str(),
            port.port,
            chain_end(mode, chain, log_group),
            named(&format!(
                "end:{chain}:{}/{}",
                port.protocol.as_str(),
                port.port
            ))
        );
    }
    let _ = writeln!(
        out,
        "\t\t{} comment \"{}\"",
        chain_end(stage.mode, chain, log_group),
        named(&format!("end:{chain}"))
    );
    out.push_str("\t}\n");
}

/// `counter log ... group N accept|drop` with the prefix capture-nflog reads.
fn chain_end(mode: StageMode, chain: &str, log_group: u16) -> String {
    let (prefix, verdict) = match mode {
        StageMode::Audit => (WOULD_BLOCK_PREFIX, "accept"),
        StageMode::Enforce => (BLOCKED_PREFIX, "drop"),
    };
    format!("counter log prefix \"{prefix} {chain}: \" group {log_group} {verdict}")
}

fn write_golden_ssh(out: &mut String, golden: &GoldenRules) {
    let ports = braced(&golden.ssh_ports());
    for (ipkw, v4) in [("ip", true), ("ip6", false)] {
        let nets: Vec<&Prefix> = golden
            .admin_networks
            .iter()
            .filter(|n| n.is_ipv4() == v4)
            .collect();
        if nets.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "\t\t{ipkw} saddr {} tcp dport {ports} counter accept comment \"{}\"",
            braced(&nets),
            named("golden:ssh")
        );
    }
}

fn write_golden_collectors(out: &mut String, golden: &GoldenRules) {
    let mut seen = BTreeSet::new();
    for collector in &golden.collectors {
        if !seen.insert(*collector) {
            continue;
        }
        let ipkw = match collector.ip() {
            IpAddr::V4(_) => "ip",
            IpAddr::V6(_) => "ip6",
        };
        let _ = writeln!(
            out,
            "\t\t{ipkw} daddr {} tcp dport {} counter accept comment \"{}\"",
            collector.ip(),
            collector.port(),
            named("golden:collector")
        );
    }
}

fn braced<T: ToString>(items: &[T]) -> String {
    if items.len() == 1 {
        items[0].to_string()
    } else {
        let joined: Vec<String> = items.iter().map(ToString::to_string).collect();
        format!("{{ {} }}", joined.join(", "))
    }
}

/// ICMP that IP needs to work (errors, path MTU) plus ping, accepted inbound;
/// the planner's set, so a policy and a plan treat ICMP alike.
const ICMP_IN: &str = "destination-unreachable, time-exceeded, parameter-problem, echo-request";
/// ICMPv6 inbound: errors, packet-too-big and neighbour discovery.
const ICMPV6_IN: &str = "destination-unreachable, packet-too-big, time-exceeded, parameter-problem, echo-request, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-query";
const ICMP_OUT: &str = "destination-unreachable, time-exceeded, parameter-problem";
const ICMPV6_OUT: &str = "destination-unreachable, packet-too-big, time-exceeded, parameter-problem, nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld2-listener-report";

#[cfg(test)]
mod tests {
    use super::*;
    use connscope_event::Protocol;
    use connscope_firewall::check::{check, Outcome};
    use connscope_firewall::test_support::FlowBuilder;
    use connscope_firewall::FlowDirection::Outbound;
    use connscope_protocol::policy::StagedPort;

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

    #[test]
    fn every_rule_is_counted_and_named_and_golden_rules_come_first() {
        let golden = GoldenRules {
            collectors: vec![
                "10.0.0.5:7443".parse().unwrap(),
                "[fd00::5]:7443".parse().unwrap(),
            ],
            admin_networks: vec!["10.9.0.0/16".parse().unwrap(), "fd09::/48".parse().unwrap()],
            ssh_ports: vec![],
        };
        let staging = Staging {
            inbound: DirectionStage::default(),
            outbound: DirectionStage {
                mode: StageMode::Audit,
                except_ports: vec![StagedPort {
                    protocol: Protocol::Tcp,
                    port: 5432,
                }],
            },
        };
        let text = render_staged(&policy(), "ws-04", &staging, &golden, 9);
        for line in [
            "tcp dport 445 counter accept comment \"connscope rule outbound[0]\"",
            "tcp dport 5432 counter accept comment \"connscope rule outbound[1]\"",
            "ip daddr 10.0.0.5 tcp dport 7443 counter accept comment \"connscope golden:collector\"",
            "ip6 daddr fd00::5 tcp dport 7443 counter accept comment \"connscope golden:collector\"",
            "ip saddr 10.9.0.0/16 tcp dport 22 counter accept comment \"connscope golden:ssh\"",
            "ip6 saddr fd09::/48 tcp dport 22 counter accept comment \"connscope golden:ssh\"",
            "tcp dport 5432 counter log prefix \"connscope blocked output: \" group 9 drop comment \"connscope end:output:tcp/5432\"",
            "counter log prefix \"connscope would-block output: \" group 9 accept comment \"connscope end:output\"",
            "counter log prefix \"connscope would-block input: \" group 9 accept comment \"connscope end:input\"",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
        let golden_at = text.find("golden:collector").unwrap();
        assert!(golden_at < text.find("rule outbound[0]").unwrap());
        let ws5 = render_staged(&policy(), "ws-05", &staging, &golden, 9);
        assert!(!ws5.contains("outbound[1]"), "ws-04's exception only");

        // The golden collector rule lets it through an enforced chain.
        let enforce = Staging {
            inbound: DirectionStage::default(),
            outbound: DirectionStage {
                mode: StageMode::Enforce,
                except_ports: vec![],
            },
        };
        let text = render_staged(&policy(), "ws-05", &enforce, &golden, 9);
        assert_eq!(outcomes(&text, 7443, "10.0.0.5"), Outcome::Allowed);
        assert_eq!(outcomes(&text, 7443, "10.0.0.6"), Outcome::Blocked);
    }

    #[test]
    fn counters_map_back_by_comment_and_hostile_names_stay_comments() {
        assert_eq!(rule_name("connscope rule inbound[2]"), Some("inbound[2]"));
        assert_eq!(rule_name("connscope golden:ssh"), Some("golden:ssh"));
        assert_eq!(rule_name("connscope end:output"), Some("end:output"));
        assert_eq!(rule_name("site rule"), None);
        let mut hostile = policy();
        hostile.name = "ws\"; flush ruleset;\n".into();
        let text = render(&hostile, "x\ny", Mode::Audit { log_group: 1 });
        assert!(
            text.starts_with(
                "#!/usr/sbin/nft -f\n# connscope policy ws__ flush ruleset__ for host x_y;"
            ),
            "{text}"
        );
    }
}
