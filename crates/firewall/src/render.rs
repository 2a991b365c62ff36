//! A [`Plan`] as text a firewall loads: nftables (primary: one `inet` table,
//! both families, named sets for long peer lists) and iptables-restore (one
//! document per family, for hosts still on iptables).
//!
//! Every piece of text that came from a monitored host goes through
//! [`crate::sanitize`], so a hostile executable name cannot break or extend the
//! ruleset.

use std::fmt::Write as _;

use connscope_event::{Family, Protocol, Timestamp};

use crate::flow::FlowDirection;
use crate::net::Prefix;
use crate::plan::{Evidence, IpFamily, NameRule, Plan, PlanRule};
use crate::sanitize::{basename, clean, comment, NFT_COMMENT_MAX};

/// Peer lists at least this long go into a named set, so the rule stays
/// readable and the set can be edited on its own.
const NAMED_SET_MIN: usize = 4;

/// The table every generated nftables ruleset lives in.
pub const NFT_TABLE: &str = "connscope";

/// ICMP that IP needs to work (errors, path MTU) plus ping, accepted inbound.
const ICMP_IN: &str = "destination-unreachable, time-exceeded, parameter-problem, echo-request";
/// ICMPv6 inbound: errors, packet-too-big (path MTU) and neighbour discovery,
/// without which IPv6 stops resolving neighbours and routers.
const ICMPV6_IN: &str = "destination-unreachable, packet-too-big, time-exceeded, parameter-problem, echo-request, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-query";
const ICMP_OUT: &str = "destination-unreachable, time-exceeded, parameter-problem";
const ICMPV6_OUT: &str = "destination-unreachable, packet-too-big, time-exceeded, parameter-problem, nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld2-listener-report";

fn minute(ts: Timestamp) -> String {
    ts.to_jiff().strftime("%Y-%m-%dT%H:%MZ").to_string()
}

/// The evidence as one short line (before cleaning): counts, time span, the
/// processes' base names and users, in that order of importance so a cut
/// loses the least useful part.
pub fn evidence_text(evidence: &Evidence) -> String {
    let mut processes: Vec<&str> = evidence.processes.iter().map(|p| basename(p)).collect();
    processes.dedup();
    let users: Vec<&str> = evidence.users.iter().map(String::as_str).collect();
    let mut text = format!(
        "{} conn {}..{}",
        evidence.connections,
        minute(evidence.first_seen),
        minute(evidence.last_seen)
    );
    if !processes.is_empty() {
        let _ = write!(text, " proc {}", processes.join(","));
    }
    if !users.is_empty() {
        let _ = write!(text, " user {}", users.join(","));
    }
    text
}

/// A rule's comment: its basis first when it generalises ("used by 17 of 24
/// members of workstations"), so a cut at the comment limit keeps the why.
pub fn rule_text(rule: &PlanRule) -> String {
    match &rule.basis {
        Some(basis) => format!("{basis}, {}", evidence_text(&rule.evidence)),
        None => evidence_text(&rule.evidence),
    }
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
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

fn set_name(rule: &PlanRule, index: usize) -> String {
    let dir = match rule.direction {
        FlowDirection::Inbound => "in",
        FlowDirection::Outbound => "out",
    };
    let fam = match rule.family {
        IpFamily::Ipv4 => "v4",
        IpFamily::Ipv6 => "v6",
    };
    format!("{dir}_{}_{fam}_{index}", proto(rule.protocol))
}

/// What a chain does with a packet no rule allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainEnd {
    /// Dropped silently by the chain's policy, or rejected (TCP reset,
    /// ICMP admin-prohibited) when `reject`.
    Drop { reject: bool },
    /// Logged to NFLOG group `log_group` and let through: audit mode, in which
    /// a host reports what the rules would block without blocking it.
    Audit { log_group: u16 },
    /// Logged to NFLOG group `log_group`, then dropped (or rejected), so the
    /// host can report what it blocked.
    Enforce { log_group: u16, reject: bool },
}

/// The NFLOG prefix of a packet an audit-mode chain would have dropped.
pub const WOULD_BLOCK_PREFIX: &str = "connscope would-block";
/// The NFLOG prefix of a packet an enforcing chain dropped.
pub const BLOCKED_PREFIX: &str = "connscope blocked";

/// The plan as an nftables script for `nft -f`. It replaces only its own table
/// (`inet connscope`), leaving other tables of the host alone.
pub fn nft(plan: &Plan) -> String {
    nft_ending(
        plan,
        ChainEnd::Drop {
            reject: plan.options.reject,
        },
    )
}

/// [`nft`] with the chains ending as `end` says instead of as the plan's
/// options do.
pub fn nft_ending(plan: &Plan, end: ChainEnd) -> String {
    let mut out = String::new();
    out.push_str("#!/usr/sbin/nft -f\n");
    let _ = writeln!(
        out,
        "# connscope firewall plan for host {}: {} rules; generalise v4 {}, v6 {}; min count {}",
        clean(&plan.host),
        plan.rules.len(),
        plan.options.generalize_v4,
        plan.options.generalize_v6,
        plan.options.min_count
    );
    write_review_comments(&mut out, plan);
    // Declaring, deleting and re-declaring the table makes the script
    // idempotent whether or not an older plan is loaded.
    let _ = writeln!(
        out,
        "table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n"
    );
    let _ = writeln!(out, "table inet {NFT_TABLE} {{");

    // Named sets first: nft resolves @names when it reads the rule.
    let mut set_names = vec![None; plan.rules.len()];
    for (index, rule) in plan.rules.iter().enumerate() {
        let Some(peers) = &rule.peers else { continue };
        if peers.len() < NAMED_SET_MIN {
            continue;
        }
        let name = set_name(rule, index);
        let ty = match rule.family {
            IpFamily::Ipv4 => "ipv4_addr",
            IpFamily::Ipv6 => "ipv6_addr",
        };
        let _ = writeln!(out, "\tset {name} {{\n\t\ttype {ty}");
        if peers.iter().any(|p| !p.is_host()) {
            out.push_str("\t\tflags interval\n");
        }
        out.push_str("\t\telements = {\n");
        for chunk in peers.chunks(4) {
            let line: Vec<String> = chunk.iter().map(ToString::to_string).collect();
            let _ = writeln!(out, "\t\t\t{},", line.join(", "));
        }
        out.push_str("\t\t}\n\t}\n\n");
        set_names[index] = Some(name);
    }
    write_name_sets(&mut out, plan);

    for direction in [FlowDirection::Inbound, FlowDirection::Outbound] {
        let (chain, hook, iface, icmp, icmpv6, peer_dir) = match direction {
            FlowDirection::Inbound => ("input", "input", "iif", ICMP_IN, ICMPV6_IN, "saddr"),
            FlowDirection::Outbound => ("output", "output", "oif", ICMP_OUT, ICMPV6_OUT, "daddr"),
        };
        let policy = match end {
            ChainEnd::Audit { .. } => "accept",
            ChainEnd::Drop { .. } | ChainEnd::Enforce { .. } => "drop",
        };
        let _ = writeln!(
            out,
            "\tchain {chain} {{\n\t\ttype filter hook {hook} priority filter; policy {policy};\n"
        );
        out.push_str("\t\tct state established,related accept\n");
        let _ = writeln!(out, "\t\t{iface} \"lo\" accept");
        let _ = writeln!(out, "\t\ticmp type {{ {icmp} }} accept");
        let _ = writeln!(out, "\t\ticmpv6 type {{ {icmpv6} }} accept");
        out.push_str("\t\tct state invalid drop\n\n");
        for (index, rule) in plan.rules.iter().enumerate() {
            if rule.direction != direction {
                continue;
            }
            let ipkw = match rule.family {
                IpFamily::Ipv4 => "ip",
                IpFamily::Ipv6 => "ip6",
            };
            let peers = match (&rule.peers, &set_names[index]) {
                (_, Some(name)) => format!("{ipkw} {peer_dir} @{name} "),
                (Some(peers), None) => format!("{ipkw} {peer_dir} {} ", braced(peers)),
                (None, None) => match rule.family {
                    IpFamily::Ipv4 => "meta nfproto ipv4 ".to_owned(),
                    IpFamily::Ipv6 => "meta nfproto ipv6 ".to_owned(),
                },
            };
            let _ = writeln!(
                out,
                "\t\t{peers}{} dport {} accept comment \"{}\"",
                proto(rule.protocol),
                braced(&rule.ports),
                comment(&rule_text(rule), NFT_COMMENT_MAX)
            );
        }
        if direction == FlowDirection::Outbound {
            write_name_rules(&mut out, plan);
        }
        let (log, reject) = match end {
            ChainEnd::Drop { reject } => (None, reject),
            ChainEnd::Audit { log_group } => (Some((WOULD_BLOCK_PREFIX, log_group)), false),
            ChainEnd::Enforce { log_group, reject } => (Some((BLOCKED_PREFIX, log_group)), reject),
        };
        if let Some((prefix, group)) = log {
            let _ = writeln!(
                out,
                "\n\t\tcounter log prefix \"{prefix} {chain}: \" group {group}"
            );
        }
        if reject {
            out.push_str("\n\t\tmeta l4proto tcp reject with tcp reset\n");
            out.push_str("\t\treject with icmpx type admin-prohibited\n");
        }
        out.push_str("\t}\n");
        if direction == FlowDirection::Inbound {
            out.push('\n');
        }
    }
    out.push_str("}\n");
    out
}

/// The sets of the names the plan allows, one per name and family, empty:
/// the agent on the host fills them from the DNS answers it sees
/// (`connscope agent --nft-name-sets`), each address with its answer's TTL.
fn write_name_sets(out: &mut String, plan: &Plan) {
    let mut declared = std::collections::BTreeSet::new();
    for rule in &plan.named_rules {
        for (family, ty) in [(Family::Ipv4, "ipv4_addr"), (Family::Ipv6, "ipv6_addr")] {
            let set = rule.set(family);
            if declared.insert(set.clone()) {
                let _ = writeln!(
                    out,
                    "\tset {set} {{\n\t\ttype {ty}\n\t\tflags timeout\n\t\tcomment \"{}\"\n\t}}\n",
                    comment(&format!("name {}", rule.name), NFT_COMMENT_MAX)
                );
            }
        }
    }
}

/// The comment of a rule by name: the name first (cleaned: a hostile name
/// cannot break the comment), then the evidence.
pub fn name_rule_text(rule: &NameRule) -> String {
    format!("name {}, {}", rule.name, evidence_text(&rule.evidence))
}

/// `ip daddr @name4_... tcp dport 443 accept` and its IPv6 twin per rule.
fn write_name_rules(out: &mut String, plan: &Plan) {
    if plan.named_rules.is_empty() {
        return;
    }
    out.push_str("\n\t\t# by name: the sets hold the addresses the host resolved\n");
    for rule in &plan.named_rules {
        for (family, ipkw) in [(Family::Ipv4, "ip"), (Family::Ipv6, "ip6")] {
            let _ = writeln!(
                out,
                "\t\t{ipkw} daddr @{} {} dport {} accept comment \"{}\"",
                rule.set(family),
                proto(rule.protocol),
                braced(&rule.ports),
                comment(&name_rule_text(rule), NFT_COMMENT_MAX)
            );
        }
    }
}

fn write_review_comments(out: &mut String, plan: &Plan) {
    if plan.lost_peer_flows > 0 {
        let _ = writeln!(
            out,
            "# {} flow(s) with a peer address the log lost (64-bit tcpspy prints a dual-stack socket's IPv4 peers as ::): their ports are open to any IPv4 peer",
            plan.lost_peer_flows
        );
    }
    if !plan.exceptions.is_empty() {
        let _ = writeln!(
            out,
            "# {} rule(s) only some members need (allowed below for the whole group):",
            plan.exceptions.len()
        );
        for e in &plan.exceptions {
            let r = &e.rule;
            let peers = match &r.peers {
                Some(peers) => peers
                    .iter()
                    .map(Prefix::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                None => "any".to_owned(),
            };
            let ports: Vec<String> = r.ports.iter().map(u16::to_string).collect();
            let _ = writeln!(
                out,
                "#   {}: {} {} peers {} port(s) {}",
                clean(&e.host),
                r.direction.as_str(),
                proto(r.protocol),
                peers,
                ports.join(",")
            );
        }
    }
    if plan.review.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "# {} flow(s) held for review, NOT allowed:",
        plan.review.len()
    );
    for item in &plan.review {
        let f = &item.flow;
        let _ = writeln!(
            out,
            "#   {} {} {} port {}: {}",
            f.direction.as_str(),
            proto(f.protocol),
            f.remote,
            f.service_port,
            clean(&item.reason)
        );
    }
}

/// The plan's rules of one family as an `iptables-restore` (IPv4) or
/// `ip6tables-restore` (IPv6) document. Note that restoring it replaces the
/// host's whole `filter` table of that family, as iptables-restore always does.
pub fn iptables(plan: &Plan, family: IpFamily) -> String {
    let v4 = family == IpFamily::Ipv4;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# connscope firewall plan for host {} ({}-restore)",
        clean(&plan.host),
        if v4 { "iptables" } else { "ip6tables" }
    );
    write_review_comments(&mut out, plan);
    out.push_str("*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT DROP [0:0]\n");
    for (chain, iface, icmp) in [
        ("INPUT", "-i", if v4 { ICMP_IN } else { ICMPV6_IN }),
        ("OUTPUT", "-o", if v4 { ICMP_OUT } else { ICMPV6_OUT }),
    ] {
        let _ = writeln!(
            out,
            "-A {chain} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
        );
        let _ = writeln!(out, "-A {chain} {iface} lo -j ACCEPT");
        let (p, opt) = if v4 {
            ("icmp", "--icmp-type")
        } else {
            ("ipv6-icmp", "--icmpv6-type")
        };
        for ty in icmp.split(", ") {
            let ty = iptables_icmp_name(ty);
            let _ = writeln!(out, "-A {chain} -p {p} -m {p} {opt} {ty} -j ACCEPT");
        }
        let _ = writeln!(out, "-A {chain} -m conntrack --ctstate INVALID -j DROP");
        let direction = if chain == "INPUT" {
            FlowDirection::Inbound
        } else {
            FlowDirection::Outbound
        };
        for rule in plan
            .rules
            .iter()
            .filter(|r| r.direction == direction && r.family == family)
        {
            let peers = match &rule.peers {
                None => String::new(),
                Some(peers) => {
                    let flag = if chain == "INPUT" { "-s" } else { "-d" };
                    let list: Vec<String> = peers
                        .iter()
                        .map(|p| format!("{}/{}", p.addr(), p.prefix_len()))
                        .collect();
                    format!("{flag} {} ", list.join(","))
                }
            };
            let p = proto(rule.protocol);
            let note = comment(&rule_text(rule), NFT_COMMENT_MAX);
            // multiport takes at most 15 ports per rule.
            for ports in rule.ports.chunks(15) {
                let ports_match = if ports.len() == 1 {
                    format!("-m {p} --dport {}", ports[0])
                } else {
                    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
                    format!("-m multiport --dports {}", list.join(","))
                };
                let _ = writeln!(
                    out,
                    "-A {chain} {peers}-p {p} {ports_match} -m comment --comment \"{note}\" -j ACCEPT"
                );
            }
        }
        if plan.options.reject {
            let _ = writeln!(out, "-A {chain} -p tcp -j REJECT --reject-with tcp-reset");
            let with = if v4 {
                "icmp-admin-prohibited"
            } else {
                "icmp6-adm-prohibited"
            };
            let _ = writeln!(out, "-A {chain} -j REJECT --reject-with {with}");
        }
    }
    out.push_str("COMMIT\n");
    out
}

/// iptables spells a few ICMP types differently from nftables.
fn iptables_icmp_name(nft_name: &str) -> &str {
    match nft_name {
        "nd-router-advert" => "router-advertisement",
        "nd-router-solicit" => "router-solicitation",
        "nd-neighbor-solicit" => "neighbour-solicitation",
        "nd-neighbor-advert" => "neighbour-advertisement",
        "mld-listener-query" => "130",
        "mld2-listener-report" => "143",
        other => other,
    }
}
