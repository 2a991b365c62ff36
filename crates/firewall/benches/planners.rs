//! Fleet planner benchmarks, printed as a table (run: `cargo bench -p
//! connscope-firewall --bench planners`): how long `plan_fleet` takes for the
//! exact, subnet and group planners on generated offices of growing size.
//!
//! Each office: workstations in four groups, ten servers (in no group) with
//! ten services each; every workstation uses up to 20 of those services (three
//! that four in five use, the rest at random) and 10 addresses outside, each
//! server logs the inbound side. Best of three runs.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use connscope_firewall::test_support::FlowBuilder;
use connscope_firewall::{
    ExactPlanner, FleetFlows, FleetPlanner, FlowDirection, GroupMembers, GroupPlanner,
    SubnetPlanner,
};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

const SERVERS: usize = 10;
const GROUPS: usize = 4;

fn ws_addr(i: usize) -> IpAddr {
    format!("10.{}.{}.{}", 1 + i % GROUPS, i / 250, 1 + i % 250)
        .parse()
        .unwrap()
}

fn office(workstations: usize) -> (FleetFlows, Vec<GroupMembers>) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(16);
    let mut fleet = FleetFlows::new();
    for i in 0..workstations {
        let local = ws_addr(i);
        let mut flows = Vec::new();
        // Three services most of the office uses (file server, mail,
        // intranet), each skipped by a fifth of the workstations, and 17
        // picked at random among the rest.
        let mut services: Vec<(usize, u16)> = (0..3)
            .filter(|_| rng.random_range(0..5) != 0)
            .map(|s| (s, 1000))
            .collect();
        for _ in 0..17 {
            services.push((
                rng.random_range(0..SERVERS),
                1001 + rng.random_range(0..9u16),
            ));
        }
        for (s, port) in services {
            let server: IpAddr = format!("10.0.0.{}", s + 1).parse().unwrap();
            flows.push(FlowBuilder::new(FlowDirection::Outbound, local, server, port).build());
            fleet
                .entry(format!("srv{s}"))
                .or_default()
                .push(FlowBuilder::new(FlowDirection::Inbound, server, local, port).build());
        }
        for _ in 0..10 {
            let remote: IpAddr = format!(
                "198.51.{}.{}",
                rng.random_range(0..4),
                rng.random_range(1..255)
            )
            .parse()
            .unwrap();
            flows.push(FlowBuilder::new(FlowDirection::Outbound, local, remote, 443).build());
        }
        fleet.insert(format!("ws{i}"), flows);
    }
    let groups = (0..GROUPS)
        .map(|g| GroupMembers {
            name: format!("group{g}"),
            hosts: (0..workstations)
                .filter(|i| i % GROUPS == g)
                .map(|i| format!("ws{i}"))
                .collect::<BTreeSet<_>>(),
            ..Default::default()
        })
        .collect();
    (fleet, groups)
}

fn best_of_three(
    planner: &dyn FleetPlanner,
    fleet: &FleetFlows,
    groups: &[GroupMembers],
) -> (Duration, usize) {
    let mut best = Duration::MAX;
    let mut rules = 0;
    for _ in 0..3 {
        let start = Instant::now();
        let plans = black_box(planner.plan_fleet(fleet, groups));
        best = best.min(start.elapsed());
        rules = plans.values().map(|p| p.rules.len()).sum();
    }
    (best, rules)
}

fn main() {
    println!("| workstations | flows | planner | plan_fleet | rules in all plans |");
    println!("|---:|---:|---|---:|---:|");
    for workstations in [30, 300, 3000] {
        let (fleet, groups) = office(workstations);
        let flows: usize = fleet.values().map(Vec::len).sum();
        let planners: [Box<dyn FleetPlanner>; 3] = [
            Box::new(ExactPlanner::default()),
            Box::new(SubnetPlanner::default()),
            Box::new(GroupPlanner::default()),
        ];
        for planner in &planners {
            let (time, rules) = best_of_three(planner.as_ref(), &fleet, &groups);
            println!(
                "| {workstations} | {flows} | {} | {:.1} ms | {rules} |",
                planner.name(),
                time.as_secs_f64() * 1000.0
            );
        }
    }
}
