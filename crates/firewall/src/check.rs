//! What-if: would this ruleset let the observed connections through?
//!
//! Each flow is replayed as the first packet of a new connection (`ct state
//! new`) through every base chain of the hooks it crosses, in priority order:
//! inbound `prerouting` then `input`, outbound `output` then `postrouting`.
//! An accept ends one base chain and the packet goes on to the next; a drop or
//! reject in any of them is final.
//!
//! Some facts are not in the data (the client's ephemeral port, the interface
//! of a non-loopback flow) and some expressions are not modelled. Such a match
//! is *unknown*, and evaluation follows both branches. A flow is `Allowed` or
//! `Blocked` only when every branch agrees; otherwise it is `MaybeBlocked`,
//! with the reasons. That is the conservative reading: the checker never calls
//! a flow safe on a guess.

use std::net::IpAddr;

use connscope_event::Protocol;

use crate::flow::{FlowDirection, ObservedFlow};
use crate::net::addr_bits;
use crate::nft::{
    Field, Hook, Match, Op, Policy, Rule, Ruleset, Table, TableFamily, Value, Values, Verdict, L4,
};

/// How many evaluation branches one flow may take before the checker gives up
/// on certainty (rulesets with many unknown matches in a row).
const MAX_BRANCHES: usize = 4096;
/// Deeper jump nesting than this is reported as unknown (nft itself refuses loops).
const MAX_JUMP_DEPTH: usize = 32;

/// A rule, by position in [`Ruleset::tables`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId {
    pub table: usize,
    pub chain: usize,
    pub rule: usize,
}

/// What ended a flow's way through one base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Decider {
    Rule(RuleId),
    /// The base chain's policy (`table`, `chain` index).
    Policy {
        table: usize,
        chain: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Allowed,
    Blocked,
    /// Some branch blocks and some does not, or a branch ends somewhere the
    /// checker cannot follow (queue, a missing chain).
    MaybeBlocked,
}

/// The verdict for one flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowVerdict {
    pub outcome: Outcome,
    /// The rules or policies that drop (certainly or on some branch).
    pub dropped_by: Vec<Decider>,
    /// The accept rules that let it through on branches that accept.
    pub accepted_by: Vec<RuleId>,
    /// The unknown matches that made branches, as written.
    pub unknowns: Vec<String>,
}

/// One verdict per flow, in the order given. Pure: the map colours edges with it.
pub fn check(ruleset: &Ruleset, flows: &[ObservedFlow]) -> Vec<FlowVerdict> {
    flows.iter().map(|f| check_flow(ruleset, f)).collect()
}

/// The first packet of a flow, as the hooks see it.
struct Packet {
    v4: bool,
    protocol: Protocol,
    saddr: IpAddr,
    daddr: IpAddr,
    dport: u16,
    /// Whether the packet crosses the loopback interface.
    loopback: bool,
}

enum End {
    Accept(Decider),
    Drop(Decider),
    Unknown(String),
}

pub fn check_flow(ruleset: &Ruleset, flow: &ObservedFlow) -> FlowVerdict {
    // The packets' addresses: an IPv4-mapped flow is checked as the IPv4 it is.
    let flow = &flow.normalized();
    let (saddr, daddr, hooks) = match flow.direction {
        FlowDirection::Inbound => (flow.remote, flow.local, [Hook::Prerouting, Hook::Input]),
        FlowDirection::Outbound => (flow.local, flow.remote, [Hook::Output, Hook::Postrouting]),
    };
    let packet = Packet {
        v4: flow.is_ipv4(),
        protocol: flow.protocol,
        saddr,
        daddr,
        dport: flow.service_port,
        loopback: flow.is_loopback(),
    };
    let mut verdict = FlowVerdict {
        outcome: Outcome::Allowed,
        dropped_by: Vec::new(),
        accepted_by: Vec::new(),
        unknowns: Vec::new(),
    };
    for hook in hooks {
        for (table, chain) in base_chains(ruleset, hook, packet.v4) {
            let mut unknowns = Vec::new();
            let ends = explore(ruleset, table, chain, &packet, hook, &mut unknowns);
            let accepts = ends.iter().filter(|e| matches!(e, End::Accept(_))).count();
            let drops = ends.iter().filter(|e| matches!(e, End::Drop(_))).count();
            for end in &ends {
                match end {
                    End::Accept(Decider::Rule(id)) => push_unique(&mut verdict.accepted_by, *id),
                    End::Accept(Decider::Policy { .. }) => {}
                    End::Drop(d) => push_unique(&mut verdict.dropped_by, *d),
                    End::Unknown(why) => push_unique(&mut unknowns, why.clone()),
                }
            }
            for u in unknowns {
                push_unique(&mut verdict.unknowns, u);
            }
            if drops == ends.len() {
                // Every branch drops here: nothing later can undo that.
                verdict.outcome = Outcome::Blocked;
                return verdict;
            }
            if accepts != ends.len() {
                verdict.outcome = Outcome::MaybeBlocked;
            }
        }
    }
    if verdict.outcome == Outcome::Allowed {
        verdict.unknowns.clear();
    }
    verdict
}

fn push_unique<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// Base chains of a hook that see packets of this family, by priority (ties in
/// the order they were defined).
fn base_chains(ruleset: &Ruleset, hook: Hook, v4: bool) -> Vec<(usize, usize)> {
    let mut chains = Vec::new();
    for (ti, table) in ruleset.tables.iter().enumerate() {
        let applies = match table.family {
            TableFamily::Inet => true,
            TableFamily::Ip => v4,
            TableFamily::Ip6 => !v4,
            TableFamily::Arp | TableFamily::Bridge | TableFamily::Netdev => false,
        };
        if !applies {
            continue;
        }
        for (ci, chain) in table.chains.iter().enumerate() {
            if let Some(base) = &chain.base {
                if base.hook == hook {
                    chains.push((base.priority, ti, ci));
                }
            }
        }
    }
    chains.sort_by_key(|(prio, ti, ci)| (*prio, *ti, *ci));
    chains.into_iter().map(|(_, t, c)| (t, c)).collect()
}

struct State {
    chain: usize,
    rule: usize,
    /// Where to continue after a `return` (chain, rule index).
    calls: Vec<(usize, usize)>,
}

fn explore(
    ruleset: &Ruleset,
    ti: usize,
    base: usize,
    packet: &Packet,
    hook: Hook,
    unknowns: &mut Vec<String>,
) -> Vec<End> {
    let table = &ruleset.tables[ti];
    let policy_end = || {
        let policy = table.chains[base]
            .base
            .as_ref()
            .map_or(Policy::Accept, |b| b.policy);
        let decider = Decider::Policy {
            table: ti,
            chain: base,
        };
        match policy {
            Policy::Accept => End::Accept(decider),
            Policy::Drop => End::Drop(decider),
        }
    };
    let mut ends = Vec::new();
    let mut work = vec![State {
        chain: base,
        rule: 0,
        calls: Vec::new(),
    }];
    let mut branches = 1usize;
    while let Some(mut state) = work.pop() {
        loop {
            let chain = &table.chains[state.chain];
            let Some(rule) = chain.rules.get(state.rule) else {
                // End of a chain: back to the caller, or the base policy.
                match state.calls.pop() {
                    Some((c, r)) => {
                        state.chain = c;
                        state.rule = r;
                        continue;
                    }
                    None => {
                        ends.push(policy_end());
                        break;
                    }
                }
            };
            let id = RuleId {
                table: ti,
                chain: state.chain,
                rule: state.rule,
            };
            state.rule += 1;
            match eval_rule(table, rule, packet, hook) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(why) => {
                    push_unique(unknowns, why);
                    branches += 1;
                    if branches > MAX_BRANCHES {
                        ends.push(End::Unknown("too many unknown matches to follow".into()));
                        return ends;
                    }
                    // The branch where it does not match goes on later.
                    work.push(State {
                        chain: state.chain,
                        rule: state.rule,
                        calls: state.calls.clone(),
                    });
                }
            }
            match &rule.verdict {
                None | Some(Verdict::Continue) => {}
                Some(Verdict::Accept) => {
                    ends.push(End::Accept(Decider::Rule(id)));
                    break;
                }
                Some(Verdict::Drop | Verdict::Reject) => {
                    ends.push(End::Drop(Decider::Rule(id)));
                    break;
                }
                Some(Verdict::Queue) => {
                    ends.push(End::Unknown(format!("queue to user space: {}", rule.text)));
                    break;
                }
                Some(Verdict::Return) => match state.calls.pop() {
                    Some((c, r)) => {
                        state.chain = c;
                        state.rule = r;
                    }
                    None => {
                        ends.push(policy_end());
                        break;
                    }
                },
                Some(Verdict::Jump(target) | Verdict::Goto(target)) => {
                    let Some(next) = table.chains.iter().position(|c| &c.name == target) else {
                        ends.push(End::Unknown(format!("jump to missing chain {target}")));
                        break;
                    };
                    if state.calls.len() >= MAX_JUMP_DEPTH {
                        ends.push(End::Unknown(format!(
                            "jumps nested deeper than {MAX_JUMP_DEPTH}"
                        )));
                        break;
                    }
                    if matches!(rule.verdict, Some(Verdict::Jump(_))) {
                        state.calls.push((state.chain, state.rule));
                    }
                    state.chain = next;
                    state.rule = 0;
                }
            }
        }
    }
    ends
}

/// All matches of a rule: false as soon as one is false, unknown if none is
/// false and one is unknown.
fn eval_rule(table: &Table, rule: &Rule, packet: &Packet, hook: Hook) -> Result<bool, String> {
    let mut unknown = None;
    for m in &rule.matches {
        match eval_match(table, m, packet, hook) {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(why) => unknown = unknown.or(Some(why)),
        }
    }
    match unknown {
        Some(why) => Err(format!("{} ({why})", rule.location)),
        None => Ok(true),
    }
}

/// What a field holds for this packet.
enum Actual {
    Ip(IpAddr),
    Num(u64),
    Name(&'static str),
}

fn eval_match(table: &Table, m: &Match, packet: &Packet, hook: Hook) -> Result<bool, String> {
    let (field, op, values) = match m {
        Match::Unknown(text) => return Err(format!("not evaluated: {text}")),
        Match::Cmp { field, op, values } => (field, *op, values),
    };
    let tcp = packet.protocol == Protocol::Tcp;
    let l4_ok = |l4: &L4| match l4 {
        L4::Tcp => tcp,
        L4::Udp => !tcp,
        L4::Any => true,
    };
    let proto_num = if tcp { 6 } else { 17 };
    let incoming_side = matches!(hook, Hook::Prerouting | Hook::Input);
    // Facts the packet does not carry (dependency fails) make the match false
    // whatever the operator, as in nft, where `ip saddr` implies IPv4.
    let actual = match field {
        Field::Saddr4 | Field::Daddr4 if !packet.v4 => return Ok(false),
        Field::Saddr6 | Field::Daddr6 if packet.v4 => return Ok(false),
        Field::Saddr4 | Field::Saddr6 => Actual::Ip(packet.saddr),
        Field::Daddr4 | Field::Daddr6 => Actual::Ip(packet.daddr),
        Field::Dport(l4) if !l4_ok(l4) => return Ok(false),
        Field::Dport(_) => Actual::Num(u64::from(packet.dport)),
        Field::Sport(l4) if !l4_ok(l4) => return Ok(false),
        Field::Sport(_) => return Err("the client's source port is not recorded".into()),
        Field::IpProtocol if !packet.v4 => return Ok(false),
        Field::Ip6Nexthdr if packet.v4 => return Ok(false),
        Field::L4Proto | Field::IpProtocol | Field::Ip6Nexthdr => Actual::Num(proto_num),
        Field::NfProto => Actual::Name(if packet.v4 { "ipv4" } else { "ipv6" }),
        Field::CtState => Actual::Name("new"),
        Field::OtherProtocol(_) => return Ok(false),
        Field::Iif | Field::Iifname | Field::Oif | Field::Oifname => {
            let input_side_field = matches!(field, Field::Iif | Field::Iifname);
            if input_side_field != incoming_side {
                // No input interface on locally sent packets; no output
                // interface chosen yet on received ones.
                Actual::Name("")
            } else if packet.loopback {
                Actual::Name("lo")
            } else {
                // Some interface other than lo, but which one is not recorded.
                let only_lo = match values {
                    Values::List(list) => list
                        .iter()
                        .all(|v| matches!(v, Value::Name(n) if n == "lo")),
                    Values::Set(_) => false,
                };
                if only_lo && matches!(op, Op::Eq | Op::Ne) {
                    return Ok(op == Op::Ne);
                }
                return Err("the interface of a non-loopback flow is not recorded".into());
            }
        }
    };
    let list: &[Value] = match values {
        Values::List(list) => list,
        Values::Set(name) => match table.sets.iter().find(|s| &s.name == name) {
            None => return Err(format!("no set @{name} in table {}", table.name)),
            Some(set) => match &set.elements {
                Some(list) => list,
                None => {
                    return Err(format!(
                        "set @{name} has a type the checker does not evaluate"
                    ))
                }
            },
        },
    };
    match op {
        Op::Eq => Ok(list.iter().any(|v| contains(v, &actual, field))),
        Op::Ne => Ok(!list.iter().any(|v| contains(v, &actual, field))),
        Op::Lt | Op::Gt | Op::Le | Op::Ge => match (list, &actual) {
            ([Value::Num(n)], Actual::Num(a)) => Ok(match op {
                Op::Lt => a < n,
                Op::Gt => a > n,
                Op::Le => a <= n,
                _ => a >= n,
            }),
            _ => Err("an ordering comparison on a non-number".into()),
        },
    }
}

fn contains(value: &Value, actual: &Actual, field: &Field) -> bool {
    match (value, actual) {
        (Value::Addr(p), Actual::Ip(ip)) => p.contains(*ip),
        (Value::AddrRange(a, b), Actual::Ip(ip)) => {
            a.is_ipv4() == ip.is_ipv4() && (addr_bits(*a)..=addr_bits(*b)).contains(&addr_bits(*ip))
        }
        (Value::Num(n), Actual::Num(a)) => n == a,
        (Value::NumRange(lo, hi), Actual::Num(a)) => (lo..=hi).contains(&a),
        (Value::Name(n), Actual::Name(a)) => name_matches(n, a, field),
        _ => false,
    }
}

fn name_matches(pattern: &str, actual: &str, field: &Field) -> bool {
    match field {
        Field::NfProto => match pattern {
            "ipv4" | "ip" => actual == "ipv4",
            "ipv6" | "ip6" => actual == "ipv6",
            _ => false,
        },
        Field::CtState => pattern.eq_ignore_ascii_case(actual),
        _ => match pattern.strip_suffix('*') {
            Some(prefix) => actual.starts_with(prefix) && !actual.is_empty(),
            None => pattern == actual,
        },
    }
}

/// Accept rules no observed flow reached, leaving out the plumbing every host
/// firewall has (established/related, loopback, ICMP), which a replay of new
/// TCP/UDP connections cannot exercise by design.
pub fn unused_accept_rules(ruleset: &Ruleset, verdicts: &[FlowVerdict]) -> Vec<RuleId> {
    let mut unused = Vec::new();
    for (ti, table) in ruleset.tables.iter().enumerate() {
        for (ci, chain) in table.chains.iter().enumerate() {
            for (ri, rule) in chain.rules.iter().enumerate() {
                if rule.verdict != Some(Verdict::Accept) || is_plumbing(rule) {
                    continue;
                }
                let id = RuleId {
                    table: ti,
                    chain: ci,
                    rule: ri,
                };
                if !verdicts.iter().any(|v| v.accepted_by.contains(&id)) {
                    unused.push(id);
                }
            }
        }
    }
    unused
}

fn is_plumbing(rule: &Rule) -> bool {
    rule.matches.iter().any(|m| match m {
        Match::Cmp {
            field: Field::CtState,
            values: Values::List(list),
            ..
        } => !list
            .iter()
            .any(|v| matches!(v, Value::Name(n) if n.eq_ignore_ascii_case("new"))),
        Match::Cmp {
            field: Field::Iif | Field::Oif | Field::Iifname | Field::Oifname,
            values: Values::List(list),
            ..
        } => list
            .iter()
            .all(|v| matches!(v, Value::Name(n) if n == "lo")),
        Match::Cmp {
            field: Field::OtherProtocol(_),
            ..
        } => true,
        Match::Cmp {
            field: Field::L4Proto,
            values: Values::List(list),
            ..
        } => !list.iter().any(|v| matches!(v, Value::Num(6 | 17))),
        _ => false,
    })
}

/// A rule's position and text, for reports.
pub fn describe(ruleset: &Ruleset, decider: Decider) -> String {
    match decider {
        Decider::Rule(id) => {
            let table = &ruleset.tables[id.table];
            let chain = &table.chains[id.chain];
            let rule = &chain.rules[id.rule];
            format!(
                "{}: table {} {} chain {}: {}",
                rule.location,
                table.family.as_str(),
                table.name,
                chain.name,
                rule.text
            )
        }
        Decider::Policy { table, chain } => {
            let t = &ruleset.tables[table];
            let c = &t.chains[chain];
            let policy = match c.base.as_ref().map(|b| b.policy) {
                Some(Policy::Drop) => "drop",
                _ => "accept",
            };
            format!(
                "table {} {} chain {}: policy {policy}",
                t.family.as_str(),
                t.name,
                c.name
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::parse_str;
    use crate::plan::tests::flow;
    use FlowDirection::{Inbound, Outbound};

    fn verdict(ruleset: &str, f: &ObservedFlow) -> FlowVerdict {
        check_flow(&parse_str("t.nft", ruleset).unwrap(), f)
    }

    /// The outcome for one connection with `peer` on service `port`.
    fn outcome(
        ruleset: &str,
        direction: FlowDirection,
        protocol: Protocol,
        peer: &str,
        port: u16,
    ) -> Outcome {
        verdict(ruleset, &flow(direction, protocol, peer, port, 1)).outcome
    }

    /// A ruleset whose one base chain (input hook, policy drop) holds `rule`.
    fn input_chain_with(rule: &str) -> String {
        const INPUT: &str =
            "table inet t {\n chain i {\n  type filter hook input priority 0; policy drop;\n";
        format!("{INPUT}  {rule}\n }}\n}}\n")
    }

    #[test]
    fn unknown_matches_follow_both_branches() {
        let f = flow(Inbound, Protocol::Tcp, "198.51.100.7", 22, 1);
        // Either branch drops in the end: certain.
        let v = verdict(
            &input_chain_with("iifname \"eth0\" tcp dport 23 accept"),
            &f,
        );
        assert_eq!(v.outcome, Outcome::Blocked);
        // The interface decides, and it is not recorded: uncertain.
        let v = verdict(
            &input_chain_with("iifname \"eth0\" tcp dport 22 accept"),
            &f,
        );
        assert_eq!(v.outcome, Outcome::MaybeBlocked);
        assert!(v.unknowns.iter().any(|u| u.contains("interface")), "{v:?}");
        // A loopback-only rule is decided for a non-loopback flow.
        let v = verdict(&input_chain_with("iif lo accept"), &f);
        assert_eq!(v.outcome, Outcome::Blocked);
        // Unmodelled statements are unknown, never silently true or false.
        let v = verdict(&input_chain_with("limit rate 5/second accept"), &f);
        assert_eq!(v.outcome, Outcome::MaybeBlocked);
    }

    #[test]
    fn jumps_returns_and_sets() {
        let rules = "define web = { 80, 443 }\ntable inet t {\n set peers { type ipv4_addr; flags interval; elements = { 198.51.100.0/24 } }\n chain i {\n  type filter hook input priority 0; policy drop;\n  jump sub\n  tcp dport $web accept\n }\n chain sub {\n  ip saddr != @peers return\n  tcp dport ssh accept\n }\n}\n";
        for (protocol, peer, port, expected) in [
            (Protocol::Tcp, "198.51.100.7", 22, Outcome::Allowed),
            (Protocol::Tcp, "203.0.113.1", 22, Outcome::Blocked),
            (Protocol::Tcp, "203.0.113.1", 443, Outcome::Allowed),
            (Protocol::Udp, "198.51.100.7", 443, Outcome::Blocked),
            // IPv6 peers never match `ip saddr`, whatever the operator: no return.
            (Protocol::Tcp, "2001:db8::7", 22, Outcome::Allowed),
        ] {
            assert_eq!(
                outcome(rules, Inbound, protocol, peer, port),
                expected,
                "{protocol:?} from {peer} to port {port}"
            );
        }
    }

    #[test]
    fn a_drop_in_any_base_chain_wins_and_hooks_follow_direction() {
        let rules = "table ip a {\n chain i {\n  type filter hook input priority 10; policy accept;\n  tcp dport 22 drop\n }\n}\ntable inet b {\n chain i {\n  type filter hook input priority -10; policy accept;\n  tcp dport 22 accept\n }\n}\n";
        let v = verdict(rules, &flow(Inbound, Protocol::Tcp, "198.51.100.7", 22, 1));
        assert_eq!(v.outcome, Outcome::Blocked);
        assert_eq!(
            v.dropped_by,
            [Decider::Rule(RuleId {
                table: 0,
                chain: 0,
                rule: 0
            })]
        );
        // Outbound traffic does not cross the input hook; v6 does not see `ip` tables.
        assert_eq!(
            outcome(rules, Outbound, Protocol::Tcp, "198.51.100.7", 22),
            Outcome::Allowed
        );
        assert_eq!(
            outcome(rules, Inbound, Protocol::Tcp, "2001:db8::7", 22),
            Outcome::Allowed
        );
    }
}
