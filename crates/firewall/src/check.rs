//! What-if: would this ruleset let the observed connections through?
//!
//! Each flow is replayed as the packets a TCP connection needs to work: the
//! first one (`ct state new`) and a later one of the client (`established`)
//! through the hooks on the way in, and the server's answer (`established`,
//! from the service port to the client's unknown port) through the hooks on
//! the way back. The ways are inbound `prerouting` then `input` and outbound
//! `output` then `postrouting`; a loopback flow crosses all four on the one
//! host. In each hook every base chain runs in priority order: an accept ends
//! one base chain and the packet goes on to the next; a drop or reject in any
//! of them is final. Replying matters as much as the first packet: the kernel
//! drops a connection whose answer a policy drops just as surely.
//!
//! The two ends of an IPv6 flow off the host must also find each other by
//! neighbour discovery (ICMPv6, untracked by conntrack): a ruleset that drops
//! it breaks IPv6 as surely as one that drops the SYN. Either end may solicit
//! first, so both exchanges are replayed (`neighbour_discovery`).
//!
//! Addresses are read as the packet carries them: a dual-stack socket records
//! an IPv4 peer as `::ffff:a.b.c.d`, but the packet is IPv4, so only `ip`
//! rules can match it (never `ip6 saddr ::ffff:a.b.c.d`).
//!
//! Some facts are not in the data (the client's ephemeral port, the interface
//! of a non-loopback flow) and some expressions are not modelled. Such a match
//! is *unknown*, and evaluation follows both branches. A flow is `Allowed` or
//! `Blocked` only when every branch agrees; otherwise it is `MaybeBlocked`,
//! with the reasons. That is the conservative reading: the checker never calls
//! a flow safe on a guess.

use std::net::{IpAddr, Ipv6Addr};

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
/// The client's port is not in the records, only that it is ephemeral: every
/// common stack picks it above the privileged ports (Linux 32768-60999,
/// Windows and the BSDs 49152-65535). A comparison it may fall on either side
/// of stays unknown.
const EPHEMERAL_PORTS: (u64, u64) = (1024, 65535);
/// Where conntrack runs in `prerouting` and `output` (NF_IP_PRI_CONNTRACK):
/// chains before it see no connection, so `ct state` reads `invalid` there.
const CONNTRACK_PRIORITY: i32 = -200;

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

/// One packet of a flow, as the hooks see it.
#[derive(Clone)]
struct Packet {
    v4: bool,
    protocol: Protocol,
    /// `None` for the far side of a neighbour-discovery packet.
    saddr: Option<IpAddr>,
    daddr: Option<IpAddr>,
    /// `None` for the client's ephemeral port, which no record keeps.
    sport: Option<u16>,
    dport: Option<u16>,
    /// Whether the packet crosses the loopback interface.
    loopback: bool,
    /// What conntrack has made of it: `new`, `established` or `untracked`.
    state: &'static str,
    /// The ICMPv6 type of a neighbour-discovery packet (then `protocol` is
    /// not its transport).
    icmpv6_type: Option<u8>,
}

const ND_NEIGHBOR_SOLICIT: u8 = 135;
const ND_NEIGHBOR_ADVERT: u8 = 136;

/// The solicited-node multicast address a neighbour solicitation for `addr`
/// goes to (RFC 4291 2.7.1): ff02::1:ff00:0/104 and its low 24 bits.
fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    Ipv6Addr::from(0xff02_0000_0000_0000_0000_0001_ff00_0000 | (u128::from(addr) & 0xff_ffff))
}

/// Where a rule runs: the hook and the priority of the base chain that led there.
#[derive(Clone, Copy)]
struct Site {
    hook: Hook,
    priority: i32,
}

enum End {
    Accept(Decider),
    Drop(Decider),
    Unknown(String),
}

pub fn check_flow(ruleset: &Ruleset, flow: &ObservedFlow) -> FlowVerdict {
    // The packets' addresses: an IPv4-mapped flow is checked as the IPv4 it is.
    let flow = &flow.normalized();
    let (local, remote) = (flow.local.to_canonical(), flow.remote.to_canonical());
    let loopback = remote.is_loopback() || remote == local;
    let (client, server) = match flow.direction {
        FlowDirection::Inbound => (remote, local),
        FlowDirection::Outbound => (local, remote),
    };
    const INBOUND: &[Hook] = &[Hook::Prerouting, Hook::Input];
    const OUTBOUND: &[Hook] = &[Hook::Output, Hook::Postrouting];
    const LOOPBACK: &[Hook] = &[
        Hook::Output,
        Hook::Postrouting,
        Hook::Prerouting,
        Hook::Input,
    ];
    let (there, back) = match (loopback, flow.direction) {
        (true, _) => (LOOPBACK, LOOPBACK),
        (false, FlowDirection::Inbound) => (INBOUND, OUTBOUND),
        (false, FlowDirection::Outbound) => (OUTBOUND, INBOUND),
    };
    let first = Packet {
        v4: remote.is_ipv4(),
        protocol: flow.protocol,
        saddr: Some(client),
        daddr: Some(server),
        sport: None,
        dport: Some(flow.service_port),
        loopback,
        state: "new",
        icmpv6_type: None,
    };
    let answer = Packet {
        saddr: Some(server),
        daddr: Some(client),
        sport: Some(flow.service_port),
        dport: None,
        state: "established",
        ..first.clone()
    };
    let later = Packet {
        state: "established",
        ..first.clone()
    };
    let mut verdict = FlowVerdict {
        outcome: Outcome::Allowed,
        dropped_by: Vec::new(),
        accepted_by: Vec::new(),
        unknowns: Vec::new(),
    };
    // Whether a packet's loss is certain to break the flow: a UDP flow may be
    // one-way (syslog), so its answer and what follows it only may be needed.
    let needed = flow.protocol == Protocol::Tcp;
    for (packet, hooks, needed) in [
        (&first, there, true),
        (&answer, back, needed),
        (&later, there, needed),
    ] {
        match replay(ruleset, packet, hooks, &mut verdict) {
            Outcome::Blocked if needed => {
                verdict.outcome = Outcome::Blocked;
                return verdict;
            }
            Outcome::Blocked => {
                push_unique(
                    &mut verdict.unknowns,
                    "the answer to a UDP flow is dropped (it matters if the protocol answers)"
                        .to_owned(),
                );
                verdict.outcome = Outcome::MaybeBlocked;
            }
            Outcome::MaybeBlocked => verdict.outcome = Outcome::MaybeBlocked,
            Outcome::Allowed => {}
        }
    }
    if let (IpAddr::V6(local6), false) = (local, loopback) {
        let hooks = (there, back);
        match neighbour_discovery(ruleset, flow.direction, local6, &first, hooks, &mut verdict) {
            Outcome::Blocked => {
                verdict.outcome = Outcome::Blocked;
                return verdict;
            }
            Outcome::MaybeBlocked => verdict.outcome = Outcome::MaybeBlocked,
            Outcome::Allowed => {}
        }
    }
    if verdict.outcome == Outcome::Allowed {
        verdict.unknowns.clear();
    }
    verdict
}

/// Runs one packet through every base chain of `hooks`, noting in `verdict`
/// the rules it met: `Blocked` if every branch drops somewhere, `Allowed` if
/// every branch gets through.
fn replay(
    ruleset: &Ruleset,
    packet: &Packet,
    hooks: &[Hook],
    verdict: &mut FlowVerdict,
) -> Outcome {
    let mut outcome = Outcome::Allowed;
    for &hook in hooks {
        for (table, chain, priority) in base_chains(ruleset, hook, packet.v4) {
            let site = Site { hook, priority };
            let mut unknowns = Vec::new();
            let ends = explore(ruleset, table, chain, packet, site, &mut unknowns);
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
                return Outcome::Blocked;
            }
            if accepts != ends.len() {
                outcome = Outcome::MaybeBlocked;
            }
        }
    }
    outcome
}

/// Blocked if either is, allowed if both are.
fn both(a: Outcome, b: Outcome) -> Outcome {
    match (a, b) {
        (Outcome::Blocked, _) | (_, Outcome::Blocked) => Outcome::Blocked,
        (Outcome::Allowed, Outcome::Allowed) => Outcome::Allowed,
        _ => Outcome::MaybeBlocked,
    }
}

/// Whether the two ends of an IPv6 flow off the host can find each other.
/// Either may ask first (a solicitation teaches the asked its asker too), so
/// it is certain only when both ways round agree. This host's side of each
/// exchange is its own address; the far side is the peer on its link, or a
/// router (often link-local) off it, so an address match on it is unknown.
fn neighbour_discovery(
    ruleset: &Ruleset,
    direction: FlowDirection,
    local: Ipv6Addr,
    first: &Packet,
    (there, back): (&[Hook], &[Hook]),
    verdict: &mut FlowVerdict,
) -> Outcome {
    let here = Some(IpAddr::V6(local));
    let here_group = Some(IpAddr::V6(solicited_node(local)));
    let packet = |saddr, daddr, icmpv6_type| Packet {
        saddr,
        daddr,
        sport: None,
        dport: None,
        state: "untracked",
        icmpv6_type: Some(icmpv6_type),
        ..first.clone()
    };
    // Each exchange: (solicitation, its hooks), (advertisement, its hooks).
    let (by_client, by_server) = match direction {
        FlowDirection::Inbound => (
            [
                (packet(None, here_group, ND_NEIGHBOR_SOLICIT), there),
                (packet(here, None, ND_NEIGHBOR_ADVERT), back),
            ],
            [
                (packet(here, None, ND_NEIGHBOR_SOLICIT), back),
                (packet(None, here, ND_NEIGHBOR_ADVERT), there),
            ],
        ),
        FlowDirection::Outbound => (
            [
                (packet(here, None, ND_NEIGHBOR_SOLICIT), there),
                (packet(None, here, ND_NEIGHBOR_ADVERT), back),
            ],
            [
                (packet(None, here_group, ND_NEIGHBOR_SOLICIT), back),
                (packet(here, None, ND_NEIGHBOR_ADVERT), there),
            ],
        ),
    };
    let mut exchange = |[(ask, ask_hooks), (answer, answer_hooks)]: [(Packet, &[Hook]); 2]| {
        let asked = replay(ruleset, &ask, ask_hooks, verdict);
        both(asked, replay(ruleset, &answer, answer_hooks, verdict))
    };
    let client_asks = exchange(by_client);
    let server_asks = exchange(by_server);
    match (client_asks, server_asks) {
        (Outcome::Allowed, Outcome::Allowed) => Outcome::Allowed,
        (Outcome::Blocked, Outcome::Blocked) => Outcome::Blocked,
        (Outcome::Blocked, _) | (_, Outcome::Blocked) => {
            push_unique(
                &mut verdict.unknowns,
                "neighbour discovery gets through one way round only: it works if the side it lets ask asks first".to_owned(),
            );
            Outcome::MaybeBlocked
        }
        _ => Outcome::MaybeBlocked,
    }
}

fn push_unique<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// Base chains of a hook that see packets of this family, by priority (ties in
/// the order they were defined), as (table, chain, priority).
fn base_chains(ruleset: &Ruleset, hook: Hook, v4: bool) -> Vec<(usize, usize, i32)> {
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
    chains.into_iter().map(|(p, t, c)| (t, c, p)).collect()
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
    site: Site,
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
            match eval_rule(table, rule, packet, site) {
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
fn eval_rule(table: &Table, rule: &Rule, packet: &Packet, site: Site) -> Result<bool, String> {
    let mut unknown = None;
    for m in &rule.matches {
        match eval_match(table, m, packet, site) {
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
    /// A number known to lie in this range (one value when known exactly).
    Num(u64, u64),
    Name(&'static str),
}

const NEIGHBOUR_ADDRESS: &str = "the far address of neighbour discovery (the peer's on its link, a router's off it) is not recorded";
const UNKNOWN_PORT: &str =
    "the client's port is not recorded (only that it is ephemeral, 1024-65535)";

/// What `ct state` reads for `packet` in a chain at `site`.
fn ct_state(packet: &Packet, site: Site) -> Result<&'static str, String> {
    // A loopback packet keeps the connection conntrack gave it on the way out.
    let tracked_already = packet.loopback && site.hook == Hook::Prerouting;
    if !matches!(site.hook, Hook::Prerouting | Hook::Output) || tracked_already {
        return Ok(packet.state);
    }
    match site.priority.cmp(&CONNTRACK_PRIORITY) {
        std::cmp::Ordering::Less => Ok("invalid"),
        std::cmp::Ordering::Equal => {
            Err("a chain at conntrack's own priority (-200) may run before or after it".into())
        }
        std::cmp::Ordering::Greater => Ok(packet.state),
    }
}

fn eval_match(table: &Table, m: &Match, packet: &Packet, site: Site) -> Result<bool, String> {
    let (field, op, values) = match m {
        Match::Unknown(text) => return Err(format!("not evaluated: {text}")),
        Match::Cmp { field, op, values } => (field, *op, values),
    };
    let tcp = packet.protocol == Protocol::Tcp;
    let l4_ok = |l4: &L4| match (l4, packet.icmpv6_type) {
        (L4::Tcp, None) => tcp,
        (L4::Udp, None) => !tcp,
        (L4::Any, None) => true,
        (_, Some(_)) => false,
    };
    let proto_num = match packet.icmpv6_type {
        Some(_) => 58,
        None if tcp => 6,
        None => 17,
    };
    let incoming_side = matches!(site.hook, Hook::Prerouting | Hook::Input);
    // Facts the packet does not carry (dependency fails) make the match false
    // whatever the operator, as in nft, where `ip saddr` implies IPv4.
    let actual = match field {
        Field::Saddr4 | Field::Daddr4 if !packet.v4 => return Ok(false),
        Field::Saddr6 | Field::Daddr6 if packet.v4 => return Ok(false),
        Field::Saddr4 | Field::Saddr6 | Field::Daddr4 | Field::Daddr6 => {
            let addr = if matches!(field, Field::Saddr4 | Field::Saddr6) {
                packet.saddr
            } else {
                packet.daddr
            };
            match addr {
                Some(addr) => Actual::Ip(addr),
                None => return Err(NEIGHBOUR_ADDRESS.into()),
            }
        }
        Field::Dport(L4::Any) | Field::Sport(L4::Any) if packet.icmpv6_type.is_some() => {
            return Err("`th` reads an ICMPv6 header's checksum there".into())
        }
        Field::Dport(l4) | Field::Sport(l4) if !l4_ok(l4) => return Ok(false),
        Field::Dport(_) | Field::Sport(_) => {
            let port = if matches!(field, Field::Dport(_)) {
                packet.dport
            } else {
                packet.sport
            };
            match port {
                Some(port) => Actual::Num(u64::from(port), u64::from(port)),
                None => Actual::Num(EPHEMERAL_PORTS.0, EPHEMERAL_PORTS.1),
            }
        }
        Field::IpProtocol if !packet.v4 => return Ok(false),
        Field::Ip6Nexthdr if packet.v4 => return Ok(false),
        Field::L4Proto | Field::IpProtocol | Field::Ip6Nexthdr => Actual::Num(proto_num, proto_num),
        Field::NfProto => Actual::Name(if packet.v4 { "ipv4" } else { "ipv6" }),
        Field::CtState => Actual::Name(ct_state(packet, site)?),
        Field::Icmpv6Type => match packet.icmpv6_type {
            Some(t) => Actual::Num(u64::from(t), u64::from(t)),
            None => return Ok(false),
        },
        Field::OtherProtocol(p) if p == "icmpv6" && packet.icmpv6_type.is_some() => {
            return Err(format!("an ICMPv6 header field other than the type ({p})"))
        }
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
            Some(set) if matches!(actual, Actual::Ip(ip) if set.partly.contains(&ip)) => {
                return Err(format!(
                    "@{name} held the address during only part of the flow's connections"
                ))
            }
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
        Op::Eq | Op::Ne => {
            let mut undecided = false;
            for v in list {
                match contains(v, &actual, field) {
                    Some(true) => return Ok(op == Op::Eq),
                    Some(false) => {}
                    None => undecided = true,
                }
            }
            if undecided {
                return Err(UNKNOWN_PORT.into());
            }
            Ok(op == Op::Ne)
        }
        Op::Lt | Op::Gt | Op::Le | Op::Ge => match (list, &actual) {
            ([Value::Num(n)], Actual::Num(low, high)) => {
                let holds = |a: u64| match op {
                    Op::Lt => a < *n,
                    Op::Gt => a > *n,
                    Op::Le => a <= *n,
                    _ => a >= *n,
                };
                // Each comparison is monotonic: the ends decide for the range.
                if holds(*low) == holds(*high) {
                    Ok(holds(*low))
                } else {
                    Err(UNKNOWN_PORT.into())
                }
            }
            _ => Err("an ordering comparison on a non-number".into()),
        },
    }
}

/// Whether `value` holds what the packet carries; `None` when the packet's
/// number is known only as a range that `value` covers in part.
fn contains(value: &Value, actual: &Actual, field: &Field) -> Option<bool> {
    Some(match (value, actual) {
        (Value::Addr(p), Actual::Ip(ip)) => p.contains(*ip),
        (Value::AddrRange(a, b), Actual::Ip(ip)) => {
            a.is_ipv4() == ip.is_ipv4() && (addr_bits(*a)..=addr_bits(*b)).contains(&addr_bits(*ip))
        }
        (Value::Num(n), Actual::Num(low, high)) => return overlap((*n, *n), (*low, *high)),
        (Value::NumRange(a, b), Actual::Num(low, high)) => return overlap((*a, *b), (*low, *high)),
        (Value::Name(n), Actual::Name(a)) => name_matches(n, a, field),
        _ => false,
    })
}

/// Whether every number of `actual` lies in `values` (true), none does
/// (false), or some do (`None`).
fn overlap(values: (u64, u64), actual: (u64, u64)) -> Option<bool> {
    if values.0 <= actual.0 && actual.1 <= values.1 {
        Some(true)
    } else if values.1 < actual.0 || actual.1 < values.0 {
        Some(false)
    } else {
        None
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
            field: Field::OtherProtocol(_) | Field::Icmpv6Type,
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
        let rules = "define web = { 80, 443 }\ntable inet t {\n set peers { type ipv4_addr; flags interval; elements = { 198.51.100.0/24 } }\n chain i {\n  type filter hook input priority 0; policy drop;\n  icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept\n  jump sub\n  tcp dport $web accept\n }\n chain sub {\n  ip saddr != @peers return\n  tcp dport ssh accept\n }\n}\n";
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
    /// A flow between two given addresses (as a socket recorded them).
    fn between(direction: FlowDirection, local: &str, remote: &str, port: u16) -> ObservedFlow {
        ObservedFlow {
            local: local.parse().unwrap(),
            ..flow(direction, Protocol::Tcp, remote, port, 1)
        }
    }

    fn chain(hook: &str, priority: &str, policy: &str, rules: &str) -> String {
        format!("table inet t {{\n chain c {{\n  type filter hook {hook} priority {priority}; policy {policy};\n  {rules}\n }}\n}}\n")
    }

    #[test]
    fn mapped_addresses_are_the_ipv4_packets_they_stand_for() {
        // A dual-stack server records its IPv4 client as ::ffff:a.b.c.d.
        let f = between(Inbound, "::ffff:192.0.2.1", "::ffff:198.51.100.7", 8443);
        let only_ip6 = chain(
            "input",
            "0",
            "drop",
            "ip6 saddr ::ffff:198.51.100.7 tcp dport 8443 accept",
        );
        assert_eq!(verdict(&only_ip6, &f).outcome, Outcome::Blocked);
        let ip = chain(
            "input",
            "0",
            "drop",
            "ip saddr 198.51.100.7 tcp dport 8443 accept",
        );
        assert_eq!(verdict(&ip, &f).outcome, Outcome::Allowed);
        // Its loopback clients are loopback, on `lo`.
        let lo = between(Inbound, "::ffff:127.0.0.1", "::ffff:127.0.0.1", 8443);
        assert_eq!(
            verdict(&chain("input", "0", "drop", "iif lo accept"), &lo).outcome,
            Outcome::Allowed
        );
    }

    #[test]
    fn the_answer_must_get_back() {
        let inbound = flow(Inbound, Protocol::Tcp, "198.51.100.7", 22, 1);
        let outbound = flow(Outbound, Protocol::Tcp, "198.51.100.7", 443, 1);
        // The server's SYN-ACK goes out through output, the reply to an
        // outbound connection comes in through input.
        let out_drop = chain("output", "0", "drop", "tcp dport 443 accept");
        assert_eq!(verdict(&out_drop, &inbound).outcome, Outcome::Blocked);
        assert_eq!(verdict(&out_drop, &outbound).outcome, Outcome::Allowed);
        let in_drop = chain("input", "0", "drop", "tcp dport 22 accept");
        assert_eq!(verdict(&in_drop, &outbound).outcome, Outcome::Blocked);
        for rules in [
            "ct state established,related accept\n  tcp dport 443 accept",
            "tcp sport 22 accept\n  tcp dport 443 accept",
        ] {
            let v = verdict(&chain("output", "0", "drop", rules), &inbound);
            assert_eq!(v.outcome, Outcome::Allowed, "{rules}: {v:?}");
        }
        // The client's port is only known to be ephemeral.
        let v = verdict(
            &chain("input", "0", "drop", "tcp dport 1024-65535 accept"),
            &outbound,
        );
        assert_eq!(v.outcome, Outcome::Allowed);
        let v = verdict(
            &chain("input", "0", "drop", "tcp dport 30000-40000 accept"),
            &outbound,
        );
        assert_eq!(v.outcome, Outcome::MaybeBlocked);
        assert!(
            v.unknowns.iter().any(|u| u.contains("client's port")),
            "{v:?}"
        );
        // A later packet of the client is `established`, not `new`.
        let v = verdict(
            &chain("input", "0", "drop", "ct state new tcp dport 22 accept"),
            &inbound,
        );
        assert_eq!(v.outcome, Outcome::Blocked);
    }

    #[test]
    fn loopback_crosses_every_hook() {
        let lo = between(Inbound, "127.0.0.1", "127.0.0.1", 8080);
        let out = chain("output", "0", "accept", "oif lo tcp dport 8080 drop");
        assert_eq!(verdict(&out, &lo).outcome, Outcome::Blocked);
        let own = between(Outbound, "192.0.2.1", "192.0.2.1", 8080);
        let input = chain("input", "0", "accept", "iifname lo tcp dport 8080 reject");
        assert_eq!(verdict(&input, &own).outcome, Outcome::Blocked);
    }

    #[test]
    fn ct_state_reads_invalid_before_conntrack() {
        let remote = flow(Inbound, Protocol::Tcp, "198.51.100.7", 22, 1);
        let lo = between(Inbound, "::1", "::1", 22);
        let raw = chain("prerouting", "raw", "accept", "ct state new drop");
        assert_eq!(verdict(&raw, &remote).outcome, Outcome::Allowed);
        // A loopback packet keeps the connection it got on the way out.
        assert_eq!(verdict(&raw, &lo).outcome, Outcome::Blocked);
        let raw_out = chain("output", "-300", "accept", "ct state invalid drop");
        assert_eq!(verdict(&raw_out, &lo).outcome, Outcome::Blocked);
        let v = verdict(
            &chain("prerouting", "-200", "accept", "ct state new drop"),
            &remote,
        );
        assert_eq!(v.outcome, Outcome::MaybeBlocked);
        let filter = chain("prerouting", "filter", "accept", "ct state new drop");
        assert_eq!(verdict(&filter, &remote).outcome, Outcome::Blocked);
    }
    #[test]
    fn ipv6_needs_neighbour_discovery_through_both_hooks() {
        let inbound = flow(Inbound, Protocol::Tcp, "2001:db8::7", 22, 1);
        let outbound = flow(Outbound, Protocol::Tcp, "2001:db8::7", 443, 1);
        let ports_only = chain(
            "input",
            "0",
            "drop",
            "ct state established,related accept\n  tcp dport 22 accept",
        );
        assert_eq!(verdict(&ports_only, &inbound).outcome, Outcome::Blocked);
        // The advertisement answering this host's solicitation comes in, untracked.
        assert_eq!(verdict(&ports_only, &outbound).outcome, Outcome::Blocked);
        let with_nd = chain(
            "input",
            "0",
            "drop",
            "ct state established,related accept\n  icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept\n  tcp dport 22 accept",
        );
        assert_eq!(verdict(&with_nd, &inbound).outcome, Outcome::Allowed);
        assert_eq!(verdict(&with_nd, &outbound).outcome, Outcome::Allowed);
        let out_no_nd = chain(
            "output",
            "0",
            "drop",
            "ct state established,related accept\n  tcp dport 443 accept",
        );
        assert_eq!(verdict(&out_no_nd, &inbound).outcome, Outcome::Blocked);
        // Whose address the far side of the exchange has is not recorded.
        let by_peer = chain(
            "input",
            "0",
            "drop",
            "ct state established,related accept\n  ip6 saddr 2001:db8::7 accept",
        );
        let v = verdict(&by_peer, &inbound);
        assert_eq!(v.outcome, Outcome::MaybeBlocked);
        assert!(
            v.unknowns.iter().any(|u| u.contains("neighbour discovery")),
            "{v:?}"
        );
        // Either side may ask first: one way round is not enough to be sure.
        let no_solicit_in = chain(
            "input",
            "0",
            "accept",
            "icmpv6 type nd-neighbor-solicit drop",
        );
        let v = verdict(&no_solicit_in, &inbound);
        assert_eq!(v.outcome, Outcome::MaybeBlocked);
        assert!(
            v.unknowns.iter().any(|u| u.contains("one way round")),
            "{v:?}"
        );
        // Loopback and IPv4 need none.
        let lo = between(Inbound, "::1", "::1", 22);
        assert_eq!(verdict(&ports_only, &lo).outcome, Outcome::Allowed);
        let v4 = flow(Inbound, Protocol::Tcp, "198.51.100.7", 22, 1);
        assert_eq!(verdict(&ports_only, &v4).outcome, Outcome::Allowed);
    }
    #[test]
    fn a_reject_with_a_reset_or_icmp_type_only_takes_its_protocol() {
        // nft adds `meta l4proto tcp` to the first, `meta nfproto ipv4` to the second.
        let udp = flow(Inbound, Protocol::Udp, "198.51.100.7", 53, 1);
        let reset = chain("input", "0", "accept", "reject with tcp reset");
        assert_eq!(verdict(&reset, &udp).outcome, Outcome::Allowed);
        let tcp = flow(Inbound, Protocol::Tcp, "198.51.100.7", 53, 1);
        assert_eq!(verdict(&reset, &tcp).outcome, Outcome::Blocked);
        let v6 = flow(Inbound, Protocol::Udp, "2001:db8::7", 53, 1);
        let icmp = chain(
            "input",
            "0",
            "accept",
            "reject with icmp type host-unreachable",
        );
        assert_eq!(verdict(&icmp, &v6).outcome, Outcome::Allowed);
        assert_eq!(verdict(&icmp, &udp).outcome, Outcome::Blocked);
        let icmpv6 = chain(
            "input",
            "0",
            "accept",
            "reject with icmpv6 type admin-prohibited",
        );
        assert_eq!(verdict(&icmpv6, &udp).outcome, Outcome::Allowed);
    }
    #[test]
    fn a_udp_flow_may_go_unanswered() {
        let syslog = flow(Outbound, Protocol::Udp, "198.51.100.7", 514, 1);
        let no_answers = chain("input", "0", "drop", "tcp dport 22 accept");
        let v = verdict(&no_answers, &syslog);
        assert_eq!(v.outcome, Outcome::MaybeBlocked);
        assert!(v.unknowns.iter().any(|u| u.contains("UDP")), "{v:?}");
        let answers = chain("input", "0", "drop", "ct state established accept");
        assert_eq!(verdict(&answers, &syslog).outcome, Outcome::Allowed);
    }
    #[test]
    fn the_json_listing_s_hidden_reject_dependencies_are_restored_or_unknown() {
        // `nft -j list ruleset` leaves out the `meta nfproto` an ICMP reject
        // implies, and (nft 1.0.6) even one written before a TCP reset.
        let json = |reject: &str| {
            format!(
                r#"{{"nftables": [{{"table": {{"family": "inet", "name": "t", "handle": 1}}}},
                {{"chain": {{"family": "inet", "table": "t", "name": "c", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}}}},
                {{"rule": {{"family": "inet", "table": "t", "chain": "c", "handle": 2, "expr": [{reject}]}}}}]}}"#
            )
        };
        let read = |reject: &str| crate::nft::json::parse_json(&json(reject)).unwrap();
        let v4 = flow(Inbound, Protocol::Tcp, "198.51.100.7", 22, 1);
        let v6 = flow(Inbound, Protocol::Tcp, "2001:db8::7", 22, 1);
        let icmpv6 = read(r#"{"reject": {"type": "icmpv6", "expr": "port-unreachable"}}"#);
        assert_eq!(check_flow(&icmpv6, &v4).outcome, Outcome::Allowed);
        assert_eq!(check_flow(&icmpv6, &v6).outcome, Outcome::Blocked);
        let icmp = read(r#"{"reject": {"type": "icmp", "expr": "port-unreachable"}}"#);
        assert_eq!(check_flow(&icmp, &v6).outcome, Outcome::Allowed);
        let reset = read(
            r#"{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}, {"reject": {"type": "tcp reset"}}"#,
        );
        assert_eq!(check_flow(&reset, &v4).outcome, Outcome::MaybeBlocked);
        let udp = flow(Inbound, Protocol::Udp, "198.51.100.7", 53, 1);
        assert_eq!(check_flow(&reset, &udp).outcome, Outcome::Allowed);
        let reset_v4 = read(
            r#"{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "198.51.100.7"}}, {"reject": {"type": "tcp reset"}}"#,
        );
        assert_eq!(check_flow(&reset_v4, &v4).outcome, Outcome::Blocked);
        // In an ip6 table even the reset's `meta l4proto tcp` is left out.
        let ip6_reset = json(r#"{"reject": {"type": "tcp reset"}}"#)
            .replace(r#""family": "inet""#, r#""family": "ip6""#);
        let ip6_reset = crate::nft::json::parse_json(&ip6_reset).unwrap();
        let udp6 = flow(Inbound, Protocol::Udp, "2001:db8::7", 53, 1);
        assert_eq!(check_flow(&ip6_reset, &udp6).outcome, Outcome::Allowed);
        assert_eq!(check_flow(&ip6_reset, &v6).outcome, Outcome::Blocked);
    }
}
