#![cfg(feature = "system-tests")] // root: nft loaded in network namespaces
//! Generalised plans hold up in the kernel: learned by the group planner from
//! real connections and loaded with `nft -f` into test namespaces, they keep
//! the observed flows working, let a group member reach a service only its
//! peers were seen using, and still refuse a host outside the group.
//!
//! A server namespace has one veth link to each of three workstation
//! namespaces and one service address (10.212.100.1, on its loopback, routed
//! to by every workstation, as a server on a LAN has one address); ws1 and
//! ws2 form the group, ws3 is in none.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use common::{listen, try_connect, Netns};
use connscope_event::Timestamp;
use connscope_firewall::test_support::FlowBuilder;
use connscope_firewall::{
    render, FleetFlows, FleetPlanner, FlowDirection, GroupMembers, GroupPlanner, ObservedFlow,
};

fn observed(direction: FlowDirection, local: IpAddr, remote: IpAddr, port: u16) -> ObservedFlow {
    FlowBuilder::new(direction, local, remote, port)
        .seen(Timestamp::now(), Timestamp::now())
        .build()
}

/// Records a real connection from `ws` to `to` on both ends, as agents would.
fn connect_and_record(fleet: &mut FleetFlows, ws: &str, ns: &Netns, to: SocketAddr) {
    let from = try_connect(ns, to).unwrap_or_else(|e| panic!("{ws} -> {to} before the plans: {e}"));
    fleet.entry(ws.to_owned()).or_default().push(observed(
        FlowDirection::Outbound,
        from.ip(),
        to.ip(),
        to.port(),
    ));
    fleet.entry("srv".to_owned()).or_default().push(observed(
        FlowDirection::Inbound,
        to.ip(),
        from.ip(),
        to.port(),
    ));
}

#[test]
fn a_group_plan_lets_a_member_reach_what_its_peers_used_and_no_stranger() {
    let srv = Netns::new("gsrv");
    let mut ws: BTreeMap<&str, (Netns, IpAddr)> = BTreeMap::new();
    for (i, name) in ["ws1", "ws2", "ws3"].into_iter().enumerate() {
        let ns = Netns::new(name);
        let (a, b) = (format!("ga{i}"), format!("gb{i}"));
        srv.exec(&[
            "ip", "link", "add", &a, "type", "veth", "peer", "name", &b, "netns", &ns.name,
        ]);
        srv.exec(&["ip", "addr", "add", &format!("10.212.{i}.1/24"), "dev", &a]);
        srv.exec(&["ip", "link", "set", &a, "up"]);
        ns.exec(&["ip", "addr", "add", &format!("10.212.{i}.2/24"), "dev", &b]);
        ns.exec(&["ip", "link", "set", &b, "up"]);
        ns.exec(&["ip", "route", "add", "10.212.100.1/32", "dev", &b]);
        ws.insert(name, (ns, format!("10.212.{i}.2").parse().unwrap()));
    }
    srv.exec(&["ip", "addr", "add", "10.212.100.1/32", "dev", "lo"]);
    // The service ws1 uses, and the one everybody uses; one never used.
    let svc = listen(&srv, "0.0.0.0:0");
    let common_svc = listen(&srv, "0.0.0.0:0");
    let unused = listen(&srv, "0.0.0.0:0");
    let at = |port: u16| SocketAddr::new("10.212.100.1".parse().unwrap(), port);

    let mut fleet = FleetFlows::new();
    connect_and_record(&mut fleet, "ws1", &ws["ws1"].0, at(svc.port()));
    for name in ["ws1", "ws2", "ws3"] {
        connect_and_record(&mut fleet, name, &ws[name].0, at(common_svc.port()));
    }
    let groups = [GroupMembers {
        name: "office".to_owned(),
        hosts: ["ws1", "ws2"].map(str::to_owned).into(),
        ..Default::default()
    }];
    let plans = GroupPlanner::default().plan_fleet(&fleet, &groups);
    let dir = tempfile::tempdir().unwrap();
    for (host, plan) in &plans {
        let ns = if host == "srv" {
            &srv
        } else {
            &ws[host.as_str()].0
        };
        let file = dir.path().join(format!("{host}.nft"));
        std::fs::write(&file, render::nft(plan)).unwrap();
        ns.exec(&["nft", "-f", file.to_str().unwrap()]);
    }
    let srv_text = render::nft(&plans["srv"]);
    assert!(
        srv_text.contains("used by 1 of 2 members of office"),
        "{srv_text}"
    );

    // Observed flows still work.
    try_connect(&ws["ws1"].0, at(svc.port())).expect("observed ws1 -> svc");
    for name in ["ws1", "ws2", "ws3"] {
        try_connect(&ws[name].0, at(common_svc.port()))
            .unwrap_or_else(|e| panic!("observed {name} -> common service: {e}"));
    }
    // ws2 was never seen at svc, but its group was: both plans let it through.
    try_connect(&ws["ws2"].0, at(svc.port())).expect("group peer ws2 -> svc");
    // ws3 is in no group; the server keeps refusing it (ws3's own plan,
    // which would refuse it too, is taken away to see the server's).
    ws["ws3"]
        .0
        .exec(&["nft", "delete", "table", "inet", "connscope"]);
    assert!(
        try_connect(&ws["ws3"].0, at(svc.port())).is_err(),
        "ws3, in no group, must not reach svc"
    );
    assert!(
        try_connect(&ws["ws2"].0, at(unused.port())).is_err(),
        "a port nobody used stays closed"
    );
    assert_eq!(ws["ws2"].1.to_string(), "10.212.1.2");
}
