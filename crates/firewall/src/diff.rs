//! The difference between what was observed and a ruleset (usually the one
//! loaded now): flows it blocks, accept rules nothing used, and listening
//! ports nobody connected to.

use connscope_event::Protocol;

use crate::check::{check, unused_accept_rules, FlowVerdict, Outcome, RuleId};
use crate::flow::{FlowDirection, ObservedFlow};
use crate::listening::Listener;
use crate::nft::Ruleset;

#[derive(Debug, Clone)]
pub struct Diff {
    /// Observed flows the ruleset blocks or may block, with their verdicts.
    pub blocked: Vec<(ObservedFlow, FlowVerdict)>,
    /// Accept rules (other than established/loopback/ICMP plumbing) that no
    /// observed flow reached.
    pub unused_rules: Vec<RuleId>,
    /// Listeners on non-loopback addresses with no observed inbound flow;
    /// `None` when no listener list was given.
    pub idle_listeners: Option<Vec<Listener>>,
}

pub fn diff(ruleset: &Ruleset, flows: &[ObservedFlow], listeners: Option<&[Listener]>) -> Diff {
    let verdicts = check(ruleset, flows);
    let unused_rules = unused_accept_rules(ruleset, &verdicts);
    let blocked = flows
        .iter()
        .cloned()
        .zip(verdicts)
        .filter(|(_, v)| v.outcome != Outcome::Allowed)
        .collect();
    let idle_listeners = listeners.map(|ls| idle(ls, flows));
    Diff {
        blocked,
        unused_rules,
        idle_listeners,
    }
}

fn idle(listeners: &[Listener], flows: &[ObservedFlow]) -> Vec<Listener> {
    let used = |protocol: Protocol, port: u16| {
        flows.iter().any(|f| {
            f.direction == FlowDirection::Inbound
                && f.protocol == protocol
                && f.service_port == port
                && !f.is_loopback()
        })
    };
    let mut out: Vec<Listener> = listeners
        .iter()
        .filter(|l| !l.addr.is_loopback() && !used(l.protocol, l.port))
        .copied()
        .collect();
    out.sort();
    out.dedup_by_key(|l| (l.protocol, l.port, l.addr));
    out
}
