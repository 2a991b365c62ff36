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

use connscope_event::{Direction, Protocol, Timestamp};
use connscope_query::groups::MembersError;
use connscope_query::join::HostDirectory;
use connscope_query::naming::RemoteNames;
use connscope_query::{logged_edge, EdgeId};
use connscope_store::{Store, StoreError, TimeRange};
use serde::Serialize;

use crate::by_name::{check_with_name_sets, plan_fleet_by_name, NameSetMembers};
use crate::check::{check, Outcome};
use crate::fleet::{FleetFlows, FleetPlanner, GroupMembers};
use crate::flow::{as_display, FlowDirection, ObservedFlow};
use crate::from_store::{fleet_flows, fleet_groups, name_set_members};
use crate::nft::{read_ruleset, RulesetError};
use crate::plan::{plan, Plan, PlanOptions};
use crate::render;

/// Why a backtest could not run.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store's host groups could not be resolved.
    #[error(transparent)]
    Groups(#[from] MembersError),
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
    /// The graph edge it falls on (`connscope_query::EdgeId`, as in
    /// `/api/v1/graph`), so the map colours it without rebuilding ids;
    /// named by [`BacktestRequest::run`], absent before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edge: Option<EdgeId>,
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
    /// The hosts' surfaces summed (a port open on two hosts counts twice).
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
    backtest_named(planners, learn, test, groups, &BacktestNames::default())
}

/// [`backtest`], by-name planners planning with `names.learned` and every
/// plan judged with the name sets of `names.tested`.
pub fn backtest_named(
    planners: &[&dyn FleetPlanner],
    learn: &FleetFlows,
    test: &FleetFlows,
    groups: &[GroupMembers],
    names: &BacktestNames,
) -> Result<Backtest, BacktestError> {
    let learned_services: BTreeSet<Service> = learn.values().flatten().map(service_of).collect();
    let planners = planners
        .iter()
        .map(|planner| {
            let plans = if planner.by_name() {
                plan_fleet_by_name(
                    *planner,
                    learn,
                    groups,
                    &names.learned,
                    PlanOptions::default(),
                )
            } else {
                planner.plan_fleet(learn, groups)
            };
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
                    let members = names.tested.get(host);
                    judge_host(
                        host,
                        host_plan,
                        learned.is_none(),
                        flows,
                        &learned_services,
                        members,
                    )
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
    name_sets: Option<&NameSetMembers>,
) -> Result<HostResult, BacktestError> {
    let text = render::nft(plan);
    let ruleset =
        read_ruleset(&format!("{host}.nft"), &text).map_err(|source| BacktestError::Render {
            host: host.to_owned(),
            source,
        })?;
    let verdicts = match name_sets {
        Some(members) => check_with_name_sets(&ruleset, flows, members),
        None => check(&ruleset, flows),
    };
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
            edge: None,
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

/// What by-name planners ([`crate::by_name::ByName`]) need: the names the
/// hosts learned in the learning window, and per host, the name sets the
/// test window's named connections filled (as `firewall check` fills them).
#[derive(Debug, Clone, Default)]
pub struct BacktestNames {
    pub learned: RemoteNames,
    pub tested: BTreeMap<String, NameSetMembers>,
}

/// [`backtest`] on the store: learn on `learn`, replay `test`; with the
/// store's names when a planner plans by name.
pub fn backtest_store(
    store: &dyn Store,
    planners: &[&dyn FleetPlanner],
    learn: TimeRange,
    test: TimeRange,
    groups: &[GroupMembers],
) -> Result<Backtest, BacktestError> {
    let learn_flows = flows_only(fleet_flows(store, learn)?);
    let test_flows = flows_only(fleet_flows(store, test)?);
    let mut names = BacktestNames::default();
    if planners.iter().any(|p| p.by_name()) {
        names.learned = RemoteNames::load(store, learn)?;
        for host in test_flows.keys() {
            names
                .tested
                .insert(host.clone(), name_set_members(store, host, test)?);
        }
    }
    backtest_named(planners, &learn_flows, &test_flows, groups, &names)
}

/// Names every blocked edge with the graph edge it falls on, as the map's
/// firewall check does (`connscope_query::logged_edge`): a flow logged by
/// the client and one logged by the server fall on the same edge.
fn name_graph_edges(store: &dyn Store, backtest: &mut Backtest) -> Result<(), StoreError> {
    let hosts = HostDirectory::new(&store.host_addresses()?);
    for planner in &mut backtest.planners {
        for host in &mut planner.hosts {
            for blocked in &mut host.blocked {
                let direction = match blocked.direction {
                    FlowDirection::Inbound => Direction::Incoming,
                    FlowDirection::Outbound => Direction::Outgoing,
                };
                blocked.edge = logged_edge(
                    &host.host,
                    direction,
                    blocked.remote,
                    blocked.service_port,
                    blocked.protocol,
                    &hosts,
                )
                .map(|ends| ends.id);
            }
        }
    }
    Ok(())
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

/// A backtest as a reader asks for it, in the text the CLI's flags and the
/// API's parameters carry, so both accept the same forms. Times as
/// `connscope_query::TimeRangeArgs` reads them; spans as `7d`, `24h`, `30m`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BacktestArgs {
    /// Learning starts here (default: the epoch).
    pub learn_from: Option<String>,
    /// Learning ends and testing starts here.
    pub learn_to: String,
    /// Testing ends here (default: now).
    pub until: Option<String>,
    /// Comma-separated planner names (default: every known one).
    pub planner: Option<String>,
    /// Rolling windows of this length (none without it).
    pub window: Option<String>,
    /// How far each rolling window slides (default: 1d).
    pub step: Option<String>,
}

/// A parameter of [`BacktestArgs`] that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {reason}")]
pub struct BacktestArgError {
    pub name: &'static str,
    pub reason: String,
}

/// The planners a backtest can compare, by name.
pub const PLANNERS: &[&str] = &["exact", "subnet", "group"];

fn planner_named(name: &str) -> Option<Box<dyn FleetPlanner + Send + Sync>> {
    if let Some(inner) = name.strip_suffix("+by-name") {
        return planner_named(inner).map(|inner| {
            Box::new(crate::by_name::ByName { inner }) as Box<dyn FleetPlanner + Send + Sync>
        });
    }
    match name {
        "exact" => Some(Box::new(crate::fleet::ExactPlanner::default())),
        "subnet" => Some(Box::new(crate::generalise::SubnetPlanner::default())),
        "group" => Some(Box::new(crate::generalise::GroupPlanner::default())),
        _ => None,
    }
}

/// A resolved request.
pub struct BacktestRequest {
    pub learn: TimeRange,
    pub test: TimeRange,
    /// Send and Sync so a server can run it on a worker thread.
    pub planners: Vec<Box<dyn FleetPlanner + Send + Sync>>,
    /// (window, step) in nanoseconds.
    pub rolling: Option<(i64, i64)>,
}

/// A span of time: digits and a unit (`s`, `m`, `h`, `d`, `w`).
pub fn parse_span(text: &str) -> Option<i64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(split);
    let n: i64 = digits.parse().ok()?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    n.checked_mul(secs)?
        .checked_mul(1_000_000_000)
        .filter(|n| *n > 0)
}

impl BacktestArgs {
    /// The request asked for, relative to `now`.
    pub fn resolve(&self, now: Timestamp) -> Result<BacktestRequest, BacktestArgError> {
        use connscope_query::TimeRangeArgs;
        let everything = TimeRange {
            from: Timestamp::from_nanos(0),
            to: now,
        };
        let arg_error = |name| {
            move |e: connscope_query::ArgError| BacktestArgError {
                name,
                reason: e.reason,
            }
        };
        let learn = TimeRangeArgs {
            from: self.learn_from.clone(),
            to: Some(self.learn_to.clone()),
        }
        .resolve(now, everything)
        .map_err(|e| {
            let name = if e.name == "from" {
                "learn-from"
            } else {
                "learn-to"
            };
            arg_error(name)(e)
        })?;
        let test = TimeRangeArgs {
            from: Some(self.learn_to.clone()),
            to: self.until.clone(),
        }
        .resolve(now, everything)
        .map_err(arg_error("until"))?;
        let names = self
            .planner
            .as_deref()
            .filter(|p| !p.is_empty())
            .map(|p| p.split(',').map(str::trim).collect::<Vec<_>>())
            .unwrap_or_else(|| PLANNERS.to_vec());
        let planners = names
            .iter()
            .map(|name| {
                planner_named(name).ok_or_else(|| BacktestArgError {
                    name: "planner",
                    reason: format!(
                        "{name:?}: expected one of {} (each also as NAME+by-name)",
                        PLANNERS.join(", ")
                    ),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let span = |name, value: &str| {
            parse_span(value).ok_or_else(|| BacktestArgError {
                name,
                reason: format!("{value:?}: expected a span like 7d, 24h, 30m"),
            })
        };
        let rolling = match self.window.as_deref().filter(|w| !w.is_empty()) {
            None => None,
            Some(window) => Some((
                span("window", window)?,
                span("step", self.step.as_deref().unwrap_or("1d"))?,
            )),
        };
        Ok(BacktestRequest {
            learn,
            test,
            planners,
            rolling,
        })
    }
}

/// What a backtest request answers: the single backtest, and the rolling
/// windows over learn-from..until when asked for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BacktestReport {
    #[serde(serialize_with = "as_display")]
    pub learn_from: Timestamp,
    #[serde(serialize_with = "as_display")]
    pub learn_to: Timestamp,
    #[serde(serialize_with = "as_display")]
    pub until: Timestamp,
    #[serde(flatten)]
    pub backtest: Backtest,
    pub rolling: Vec<Rolling>,
}

impl BacktestRequest {
    /// Runs with the store's host groups, their members as seen over the
    /// whole learning and testing span.
    pub fn run(&self, store: &dyn Store) -> Result<BacktestReport, BacktestError> {
        let span = TimeRange {
            from: self.learn.from,
            to: self.test.to,
        };
        let groups = &fleet_groups(store, span)?;
        let planners: Vec<&dyn FleetPlanner> = self
            .planners
            .iter()
            .map(|p| p.as_ref() as &dyn FleetPlanner)
            .collect();
        let mut backtest = backtest_store(store, &planners, self.learn, self.test, groups)?;
        name_graph_edges(store, &mut backtest)?;
        let rolling = match self.rolling {
            None => Vec::new(),
            Some((window, step)) => rolling(
                store,
                &planners,
                groups,
                TimeRange {
                    from: self.learn.from,
                    to: self.test.to,
                },
                window,
                step,
            )?,
        };
        Ok(BacktestReport {
            learn_from: self.learn.from,
            learn_to: self.learn.to,
            until: self.test.to,
            backtest,
            rolling,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::ExactPlanner;
    use crate::test_support::FlowBuilder;

    fn out(local: &str, remote: &str, port: u16, n: u64) -> ObservedFlow {
        FlowBuilder::new(FlowDirection::Outbound, local, remote, port)
            .connections(n)
            .build()
    }

    #[test]
    fn what_was_not_learned_is_blocked_and_a_new_service_is_marked_not_seen() {
        let learn: FleetFlows = [
            ("a".to_owned(), vec![out("10.0.0.1", "10.0.0.9", 445, 3)]),
            ("b".to_owned(), vec![out("10.0.0.2", "10.0.0.9", 443, 1)]),
        ]
        .into();
        let test: FleetFlows = [(
            "a".to_owned(),
            vec![
                out("10.0.0.1", "10.0.0.9", 445, 5),
                // b used it while learning: an edge of a, not a new service.
                out("10.0.0.1", "10.0.0.9", 443, 2),
                // Nobody used it.
                out("10.0.0.1", "10.0.0.8", 22, 7),
            ],
        )]
        .into();
        let exact = ExactPlanner::default();
        let result = backtest(&[&exact], &learn, &test, &[]).unwrap();
        let r = &result.planners[0];
        assert_eq!((r.planner.as_str(), r.tested_connections), ("exact", 14));
        assert_eq!((r.blocked_connections, r.blocked_edges), (9, 2));
        assert_eq!((r.not_seen_connections, r.not_seen_edges), (7, 1));
        let a = &r.hosts[0];
        assert!(!a.no_history);
        let ports: Vec<(u16, bool)> = a
            .blocked
            .iter()
            .map(|b| (b.service_port, b.not_seen_in_learning))
            .collect();
        assert_eq!(ports, [(443, false), (22, true)]);
        assert_eq!(
            a.surface,
            Surface {
                rules: 1,
                ports: 1,
                peers: 1,
                address_space: 1
            }
        );
    }

    #[test]
    fn a_host_without_history_is_judged_against_an_empty_plan() {
        let test: FleetFlows = [("c".to_owned(), vec![out("10.0.0.3", "10.0.0.9", 445, 4)])].into();
        let exact = ExactPlanner::default();
        let result = backtest(&[&exact], &FleetFlows::new(), &test, &[]).unwrap();
        let c = &result.planners[0].hosts[0];
        assert!(c.no_history);
        assert_eq!((c.blocked_connections, c.surface), (4, Surface::default()));
    }

    #[test]
    fn surfaces_count_addresses_per_port() {
        let flows = [
            out("10.0.0.1", "10.0.0.9", 445, 1),
            out("10.0.0.1", "10.0.0.9", 139, 1),
            out("10.0.0.1", "10.0.1.7", 80, 1),
        ];
        let options = crate::PlanOptions {
            generalize_v4: crate::Generalize::Prefix(24),
            ..Default::default()
        };
        let surface = Surface::of(&plan("a", &flows, options));
        // 10.0.0.0/24 on two ports, 10.0.1.0/24 on one.
        assert_eq!(surface.ports, 3);
        assert_eq!(surface.peers, 2);
        assert_eq!(surface.address_space, 3 * 256);
        let any = crate::PlanOptions {
            generalize_v4: crate::Generalize::Any,
            ..Default::default()
        };
        assert_eq!(Surface::of(&plan("a", &flows, any)).address_space, 3 << 32);
    }

    #[test]
    fn spans_and_requests_resolve_and_bad_ones_name_the_parameter() {
        assert_eq!(parse_span("7d"), Some(7 * 86_400_000_000_000));
        assert_eq!(parse_span("90m"), Some(90 * 60_000_000_000));
        for bad in ["", "7", "d", "0d", "7y", "-1d"] {
            assert_eq!(parse_span(bad), None, "{bad}");
        }
        let now = Timestamp::from_nanos(30 * 86_400_000_000_000);
        let args = BacktestArgs {
            learn_to: "-4d".into(),
            window: Some("7d".into()),
            ..Default::default()
        };
        let request = args.resolve(now).unwrap();
        assert_eq!(request.learn.from.as_nanos(), 0);
        assert_eq!(request.learn.to.as_nanos(), 26 * 86_400_000_000_000);
        assert_eq!(request.test.from, request.learn.to);
        assert_eq!(request.test.to, now);
        assert_eq!(
            request.rolling,
            Some((7 * 86_400_000_000_000, 86_400_000_000_000))
        );
        let names: Vec<String> = request.planners.iter().map(|p| p.name()).collect();
        assert_eq!(names, PLANNERS);
        for (args, name) in [
            (
                BacktestArgs {
                    learn_to: "yesterday".into(),
                    ..Default::default()
                },
                "learn-to",
            ),
            (
                BacktestArgs {
                    learn_to: "-1d".into(),
                    until: Some("-2d".into()),
                    ..Default::default()
                },
                "until",
            ),
            (
                BacktestArgs {
                    learn_to: "-1d".into(),
                    planner: Some("exact,magic".into()),
                    ..Default::default()
                },
                "planner",
            ),
            (
                BacktestArgs {
                    learn_to: "-1d".into(),
                    window: Some("7d".into()),
                    step: Some("often".into()),
                    ..Default::default()
                },
                "step",
            ),
        ] {
            assert_eq!(args.resolve(now).err().map(|e| e.name), Some(name));
        }
    }
}
