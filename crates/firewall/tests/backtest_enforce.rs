#![cfg(feature = "system-tests")] // root: nft loaded in network namespaces
//! The backtest's verdicts proven in the kernel: an office host's exact plan
//! learned on days 1-12 is loaded with `nft -f` into a namespace that carries
//! the host's address, and every TCP edge of days 13-16 is connected for real
//! from (or to) a peer namespace carrying the other ends' addresses. What the
//! backtest called allowed connects; what it called blocked does not. The
//! plan learned on all 16 days lets every TCP edge of the host through.
//!
//! UDP edges (DNS) are left out: a datagram has no handshake to prove
//! delivery with, and `enforce.rs` covers the plan's UDP rules.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::{in_ns, listen, Netns};
use connscope_event::Protocol;
use connscope_firewall::backtest::backtest;
use connscope_firewall::from_store::fleet_flows;
use connscope_firewall::office::Office;
use connscope_firewall::{
    render, ExactPlanner, FleetFlows, FleetPlanner, FlowDirection, GroupPlanner, SubnetPlanner,
};
use connscope_store::SqliteStore;

/// Connects from `from` (bound) to `to` and exchanges a byte.
fn connect_from(ns: &Netns, from: IpAddr, to: SocketAddr) -> Result<(), String> {
    in_ns(ns, move || {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .map_err(|e| e.to_string())?;
        socket
            .bind(&SocketAddr::new(from, 0).into())
            .map_err(|e| e.to_string())?;
        socket
            .connect_timeout(&to.into(), Duration::from_secs(2))
            .map_err(|e| e.to_string())?;
        let mut s: std::net::TcpStream = socket.into();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(b"x").map_err(|e| e.to_string())?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).map_err(|e| e.to_string())
    })
}

fn fleet(store: &SqliteStore, first: u32, last: u32) -> FleetFlows {
    fleet_flows(store, Office::days(first, last))
        .unwrap()
        .into_iter()
        .map(|(h, s)| (h, s.flows))
        .collect()
}

/// Loads `host`'s plan learned on `learn` by `planner` into a namespace and
/// connects every TCP edge of `test`: each must pass exactly when the backtest
/// says so.
fn prove(
    office: &Office,
    planner: &dyn FleetPlanner,
    learn: &FleetFlows,
    test: &FleetFlows,
    name: &str,
) -> (usize, usize) {
    let result = backtest(&[planner], learn, test, &office.groups()).unwrap();
    let judged = result.planners[0]
        .hosts
        .iter()
        .find(|h| h.host == name)
        .unwrap();
    let blocked: BTreeSet<(FlowDirection, IpAddr, u16)> = judged
        .blocked
        .iter()
        .map(|b| (b.direction, b.remote, b.service_port))
        .collect();
    let me = office.hosts.iter().find(|h| h.name == name).unwrap().ip;
    let flows: Vec<_> = test[name]
        .iter()
        .filter(|f| f.protocol == Protocol::Tcp)
        .cloned()
        .collect();

    let host = Netns::new("bt-host");
    let peer = Netns::new("bt-peer");
    host.exec(&[
        "ip", "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", &peer.name,
    ]);
    host.exec(&["ip", "addr", "add", &format!("{me}/32"), "dev", "va"]);
    host.exec(&["ip", "link", "set", "va", "up"]);
    host.exec(&["ip", "route", "add", "default", "dev", "va"]);
    let remotes: BTreeSet<IpAddr> = flows.iter().map(|f| f.remote).collect();
    for r in &remotes {
        peer.exec(&["ip", "addr", "add", &format!("{r}/32"), "dev", "vb"]);
    }
    peer.exec(&["ip", "link", "set", "vb", "up"]);
    peer.exec(&["ip", "route", "add", "default", "dev", "vb"]);
    let mut listening = BTreeSet::new();
    for f in &flows {
        let (ns, addr) = match f.direction {
            FlowDirection::Inbound => (&host, SocketAddr::new(me, f.service_port)),
            FlowDirection::Outbound => (&peer, SocketAddr::new(f.remote, f.service_port)),
        };
        if listening.insert((ns.name.clone(), addr)) {
            listen(ns, &addr.to_string());
        }
    }

    let learned = planner.plan_fleet(learn, &office.groups());
    let plan = learned
        .get(name)
        .cloned()
        .unwrap_or_else(|| connscope_firewall::plan(name, &[], Default::default()));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plan.nft");
    std::fs::write(&file, render::nft(&plan)).unwrap();
    host.exec(&["nft", "-f", file.to_str().unwrap()]);

    let (mut passed, mut refused) = (0, 0);
    for f in &flows {
        let outcome = match f.direction {
            FlowDirection::Inbound => {
                connect_from(&peer, f.remote, SocketAddr::new(me, f.service_port))
            }
            FlowDirection::Outbound => {
                connect_from(&host, me, SocketAddr::new(f.remote, f.service_port))
            }
        };
        let expect_blocked = blocked.contains(&(f.direction, f.remote, f.service_port));
        assert_eq!(
            outcome.is_err(),
            expect_blocked,
            "{name}: {} {}:{} -> {outcome:?}",
            f.direction.as_str(),
            f.remote,
            f.service_port
        );
        if expect_blocked {
            refused += 1;
        } else {
            passed += 1;
        }
    }
    (passed, refused)
}

#[test]
fn backtested_verdicts_hold_in_the_kernel_and_full_history_plans_pass_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (office, store) = Office::in_store(&dir.path().join("office.db")).unwrap();
    let learn = fleet(&store, 1, 12);
    let test = fleet(&store, 13, 16);
    // The file server refuses the workstations it never saw; ws-05 loses
    // the services it did not use on days 1-2.
    for name in ["fs", "ws-05"] {
        let (passed, refused) = prove(&office, &ExactPlanner::default(), &learn, &test, name);
        assert!(
            passed > 0 && refused > 0,
            "{name}: {passed} passed, {refused} refused"
        );
    }
    // Learned on everything, the plan passes everything it was learned on.
    let all = fleet(&store, 1, 16);
    for name in ["fs", "backup"] {
        let (passed, refused) = prove(&office, &ExactPlanner::default(), &all, &all, name);
        assert!(
            passed > 0 && refused == 0,
            "{name}: {passed} passed, {refused} refused"
        );
    }
}

/// The office's monthly job: the backup server's inventory run to every
/// workstation (WinRM over TLS), first seen on day 15.
const MONTHLY_PORT: u16 = 5986;

/// The default plans (the group planner) learned on days 1-12, loaded in the
/// kernel: the file server, a workstation and one switched off while learning
/// keep every connection of days 13-16 but the monthly job's, never seen.
#[test]
fn default_group_plans_keep_tomorrows_work_in_the_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let (office, store) = Office::in_store(&dir.path().join("office.db")).unwrap();
    let learn = fleet(&store, 1, 12);
    let test = fleet(&store, 13, 16);
    for name in ["fs", "ws-05", "ws-16"] {
        let monthly = test[name]
            .iter()
            .filter(|f| f.protocol == Protocol::Tcp && f.service_port == MONTHLY_PORT)
            .count();
        let (passed, refused) = prove(&office, &GroupPlanner::default(), &learn, &test, name);
        assert!(passed > 0, "{name}: nothing passed");
        assert_eq!(
            refused, monthly,
            "{name}: {passed} passed, {refused} refused"
        );
    }
}

/// Every plan a backtest of the office judges (each host, learned on days
/// 1-12 and on all 16) is one `nft -f` loads; add planners here as they land.
#[test]
fn every_backtested_office_plan_loads_with_nft() {
    let dir = tempfile::tempdir().unwrap();
    let (office, store) = Office::in_store(&dir.path().join("office.db")).unwrap();
    let (exact, subnet, group) = (
        ExactPlanner::default(),
        SubnetPlanner::default(),
        GroupPlanner::default(),
    );
    let planners: [&dyn FleetPlanner; 3] = [&exact, &subnet, &group];
    let ns = Netns::new("bt-load");
    let mut loaded = BTreeMap::new();
    for last in [12, 16] {
        let learn = fleet(&store, 1, last);
        for planner in planners {
            for (host, plan) in planner.plan_fleet(&learn, &office.groups()) {
                let file = dir.path().join(format!("{host}.nft"));
                std::fs::write(&file, render::nft(&plan)).unwrap();
                ns.exec(&["nft", "-f", file.to_str().unwrap()]);
                let listed = ns.exec(&["nft", "list", "ruleset"]);
                assert!(listed.contains("table inet connscope"), "{host}: {listed}");
                ns.exec(&["nft", "flush", "ruleset"]);
                *loaded.entry(planner.name()).or_insert(0) += 1;
            }
        }
    }
    // 23 hosts logged on days 1-12 (ws-16..18 were off), 26 on days 1-16;
    // the group planner also plans the members it never saw.
    assert_eq!(loaded["exact"], 23 + 26);
    assert_eq!(loaded["subnet"], 23 + 26);
    assert!(loaded["group"] > loaded["exact"], "{loaded:?}");
}
