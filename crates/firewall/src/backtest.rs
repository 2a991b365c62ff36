//! Backtesting: would plans learned on the past have let the next days
//! through?
//!
//! A plan is only useful if tomorrow's legitimate traffic passes it, and no
//! amount of reading the plan tells an administrator that. So the planners
//! learn on history before a time T, the history from T to U is replayed
//! against each host's plan with the same what-if checker (`check`) that
//! judges hand-written rulesets, and what would have been blocked is counted
//! per host and per edge, beside the size of what each plan allows (ports,
//! peers, addresses): a plan that blocks nothing because it allows everything
//! is not a good plan either. Several planners run side by side on the same
//! days, so the comparison is of generalisations, not of data.
//!
//! The plan is rendered to nftables and read back before it is checked:
//! what is replayed is the ruleset an administrator would load, not the
//! planner's intent.
//!
//! A blocked flow whose service (server address, port, protocol) no host used
//! in the learning window is reported as "not seen in the learning window":
//! no planner that learns from history could have allowed it, so it is a
//! question for the administrator, not a flaw of the generalisation.
//!
//! Rolling windows (learn N days, test the next step, slide by step) show how
//! a plan settles: the new edges a week brings once it has.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use connscope_event::{Protocol, Timestamp};
use connscope_store::{Store, StoreError, TimeRange};
use serde::Serialize;

use crate::check::{check, Outcome};
use crate::fleet::{FleetFlows, FleetPlanner, GroupMembers};
use crate::flow::{as_display, FlowDirection, ObservedFlow};
use crate::from_store::fleet_flows;
use crate::nft::{read_ruleset, RulesetError};
use crate::plan::{plan, Plan};
use crate::render;

/// Why a backtest could not run.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The renderer wrote a ruleset the reader refuses: a bug, never input.
    #[error("the plan of host {host} did not read back: {source}")]
    Render {
        host: String,
        #[source]
        source: RulesetError,
    },
    #[error("the window must be longer than 0 and the step at least 1 ns")]
    EmptyWindow,
}

/// How big what a plan allows is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Surface {
    pub rules: usize,
    /// Distinct (direction, protocol, port) the rules open.
    pub ports: usize,
    /// Distinct peer networks named by rules (a rule open to any peer counts
    /// one).
    pub peers: usize,
    /// Peer addresses summed over (direction, protocol, port, address)
    /// combinations, saturating: an "any" IPv6 rule makes it `u128::MAX`.
    #[serde(serialize_with = "as_display")]
    pub address_space: u128,
}

impl Surface {
    pub fn of(plan: &Plan) -> Surface {
        let mut ports = BTreeSet::new();
        let mut peers = BTreeSet::new();
        let mut address_space: u128 = 0;
        for rule in &plan.rules {
            for port in &rule.ports {
                ports.insert((rule.direction, rule.protocol, *port));
            }
            let addresses = match &rule.peers {
                None => {
                    peers.insert(None);
                    match rule.family {
                        crate::plan::IpFamily::Ipv4 => 1u128 << 32,
                        crate::plan::IpFamily::Ipv6 => u128::MAX,
                    }
                }
                Some(list) => list.iter().fold(0u128, |sum, p| {
                    peers.insert(Some(*p));
                    let (low, high) = p.bounds();
                    sum.saturating_add((high - low).saturating_add(1))
                }),
            };
            address_space =
                address_space.saturating_add(addresses.saturating_mul(rule.ports.len() as u128));
        }
        Surface {
            rules: plan.rules.len(),
            ports: ports.len(),
            peers: peers.len(),
            address_space,
        }
    }

    fn add(&mut self, other: Surface) {
        self.rules += other.rules;
        self.ports += other.ports;
        self.peers += other.peers;
        self.address_space = self.address_space.saturating_add(other.address_space);
    }
}

/// One edge of a host that the plan would have blocked in the tested days.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockedEdge {
    pub direction: FlowDirection,
    #[serde(serialize_with = "as_display")]
    pub protocol: Protocol,
    pub local: IpAddr,
    pub remote: IpAddr,
    pub service_port: u16,
    pub connections: u64,
    /// `Blocked` or `MaybeBlocked` (some branch of the ruleset blocks it).
    #[serde(serialize_with = "outcome_name")]
    pub outcome: Outcome,
    /// No host used this service in the learning window.
    pub not_seen_in_learning: bool,
}

fn outcome_name<S: serde::Serializer>(o: &Outcome, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match o {
        Outcome::Allowed => "allowed",
        Outcome::Blocked => "blocked",
        Outcome::MaybeBlocked => "maybe-blocked",
    })
}

/// One host under one planner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostResult {
    pub host: String,
    /// The host logged nothing in the learning window: its plan is empty and
    /// allows nothing but loopback.
    pub no_history: bool,
    pub surface: Surface,
    pub tested_connections: u64,
    pub blocked_connections: u64,
    pub blocked: Vec<BlockedEdge>,
}

/// One planner over the whole fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannerResult {
    pub planner: String,
    pub hosts: Vec<HostResult>,
    pub surface: Surface,
    pub tested_connections: u64,
    pub blocked_connections: u64,
    pub blocked_edges: usize,
    /// Of the blocked connections, those of services no host used while
    /// learning.
    pub not_seen_connections: u64,
    pub not_seen_edges: usize,
}

/// Every planner's result on the same learning and tested history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backtest {
    pub planners: Vec<PlannerResult>,
}

/// A service as the "not seen" test knows it: server address, port, protocol.
type Service = (IpAddr, u16, Protocol);

fn service_of(flow: &ObservedFlow) -> Service {
    let (local, remote) = flow.packet_addresses();
    let server = match flow.direction {
        FlowDirection::Inbound => local,
        FlowDirection::Outbound => remote,
    };
    (server, flow.service_port, flow.protocol)
}

/// Learns with each planner on `learn` and replays `test` against the plans.
/// Every host that logged in `test` is judged, including hosts with no
/// history (their plan is learned from nothing).
pub fn backtest(
    planners: &[&dyn FleetPlanner],
    learn: &FleetFlows,
    test: &FleetFlows,
    groups: &[GroupMembers],
) -> Result<Backtest, BacktestError> {
    let learned_services: BTreeSet<Service> = learn.values().flatten().map(service_of).collect();
    let planners = planners
        .iter()
        .map(|planner| {
            let plans = planner.plan_fleet(learn, groups);
            let hosts = test
                .iter()
                .map(|(host, flows)| {
                    let learned = plans.get(host);
                    let fallback;
                    let host_plan = match learned {
                        Some(p) => p,
                        None => {
                            fallback = plan(host, &[], Default::default());
                            &fallback
                        }
                    };
                    judge_host(host, host_plan, learned.is_none(), flows, &learned_services)
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(summarise(planner.name(), hosts))
        })
        .collect::<Result<Vec<_>, BacktestError>>()?;
    Ok(Backtest { planners })
}

fn judge_host(
    host: &str,
    plan: &Plan,
    no_history: bool,
    flows: &[ObservedFlow],
    learned_services: &BTreeSet<Service>,
) -> Result<HostResult, BacktestError> {
    let text = render::nft(plan);
    let ruleset =
        read_ruleset(&format!("{host}.nft"), &text).map_err(|source| BacktestError::Render {
            host: host.to_owned(),
            source,
        })?;
    let verdicts = check(&ruleset, flows);
    let mut blocked = Vec::new();
    for (flow, verdict) in flows.iter().zip(verdicts) {
        if verdict.outcome == Outcome::Allowed {
            continue;
        }
        let normal = flow.normalized();
        blocked.push(BlockedEdge {
            direction: normal.direction,
            protocol: normal.protocol,
            local: normal.local,
            remote: normal.remote,
            service_port: normal.service_port,
            connections: normal.connections,
            outcome: verdict.outcome,
            not_seen_in_learning: !learned_services.contains(&service_of(&normal)),
        });
    }
    Ok(HostResult {
        host: host.to_owned(),
        no_history,
        surface: Surface::of(plan),
        tested_connections: flows.iter().map(|f| f.connections).sum(),
        blocked_connections: blocked.iter().map(|b| b.connections).sum(),
        blocked,
    })
}

fn summarise(planner: String, hosts: Vec<HostResult>) -> PlannerResult {
    let mut surface = Surface::default();
    for host in &hosts {
        surface.add(host.surface);
    }
    let all = || hosts.iter().flat_map(|h| &h.blocked);
    PlannerResult {
        planner,
        surface,
        tested_connections: hosts.iter().map(|h| h.tested_connections).sum(),
        blocked_connections: hosts.iter().map(|h| h.blocked_connections).sum(),
        blocked_edges: all().count(),
        not_seen_connections: all()
            .filter(|b| b.not_seen_in_learning)
            .map(|b| b.connections)
            .sum(),
        not_seen_edges: all().filter(|b| b.not_seen_in_learning).count(),
        hosts,
    }
}

fn flows_only(stored: BTreeMap<String, crate::from_store::StoredFlows>) -> FleetFlows {
    stored.into_iter().map(|(h, s)| (h, s.flows)).collect()
}

/// [`backtest`] on the store: learn on `learn`, replay `test`.
pub fn backtest_store(
    store: &dyn Store,
    planners: &[&dyn FleetPlanner],
    learn: TimeRange,
    test: TimeRange,
    groups: &[GroupMembers],
) -> Result<Backtest, BacktestError> {
    let learn = flows_only(fleet_flows(store, learn)?);
    let test = flows_only(fleet_flows(store, test)?);
    backtest(planners, &learn, &test, groups)
}

/// One window of a rolling backtest, one planner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WindowResult {
    #[serde(serialize_with = "as_display")]
    pub learn_from: Timestamp,
    #[serde(serialize_with = "as_display")]
    pub learn_to: Timestamp,
    #[serde(serialize_with = "as_display")]
    pub test_to: Timestamp,
    pub blocked_connections: u64,
    pub blocked_edges: usize,
}

/// A planner's windows and its stability figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rolling {
    pub planner: String,
    pub windows: Vec<WindowResult>,
    /// New (blocked) edges per week once the plan has settled: the mean over
    /// the second half of the windows (the first ones learn on short or odd
    /// history), scaled from the step to 7 days. `None` with no window.
    pub new_edges_per_week: Option<f64>,
}

const WEEK_NS: f64 = 7.0 * 86_400e9;

/// Learns on `[t - window, t)` and tests `[t, t + step)` for t from
/// `from + window` while `t + step <= to`, sliding by `step`.
pub fn rolling(
    store: &dyn Store,
    planners: &[&dyn FleetPlanner],
    groups: &[GroupMembers],
    range: TimeRange,
    window_ns: i64,
    step_ns: i64,
) -> Result<Vec<Rolling>, BacktestError> {
    if window_ns <= 0 || step_ns <= 0 {
        return Err(BacktestError::EmptyWindow);
    }
    let mut out: Vec<Rolling> = planners
        .iter()
        .map(|p| Rolling {
            planner: p.name(),
            windows: Vec::new(),
            new_edges_per_week: None,
        })
        .collect();
    let mut t = range.from.as_nanos().saturating_add(window_ns);
    while t.saturating_add(step_ns) <= range.to.as_nanos() {
        let learn = TimeRange {
            from: Timestamp::from_nanos(t - window_ns),
            to: Timestamp::from_nanos(t),
        };
        let test = TimeRange {
            from: Timestamp::from_nanos(t),
            to: Timestamp::from_nanos(t + step_ns),
        };
        let result = backtest_store(store, planners, learn, test, groups)?;
        for (rolling, r) in out.iter_mut().zip(result.planners) {
            rolling.windows.push(WindowResult {
                learn_from: learn.from,
                learn_to: learn.to,
                test_to: test.to,
                blocked_connections: r.blocked_connections,
                blocked_edges: r.blocked_edges,
            });
        }
        t += step_ns;
    }
    for rolling in &mut out {
        let settled = &rolling.windows[rolling.windows.len() / 2..];
        if !settled.is_empty() {
            let mean =
                settled.iter().map(|w| w.blocked_edges as f64).sum::<f64>() / settled.len() as f64;
            rolling.new_edges_per_week = Some(mean * WEEK_NS / step_ns as f64);
        }
    }
    Ok(out)
}
