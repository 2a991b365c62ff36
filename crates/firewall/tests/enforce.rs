#![cfg(feature = "system-tests")] // root: nft loaded in network namespaces
//! The acceptance test that matters: a plan generated from real connections,
//! loaded with `nft -f` into a test network namespace (never the host's own
//! ruleset), lets those connections through and blocks one never seen.
//!
//! Two namespaces joined by a veth pair play the planned host and its peer,
//! over IPv4 and IPv6 (so neighbour discovery must survive the plan).

mod common;

use std::net::{IpAddr, SocketAddr};

use common::{listen, try_connect, Netns};
use connscope_event::Timestamp;
use connscope_firewall::test_support::FlowBuilder;
use connscope_firewall::{
    check, nft, plan, render, FlowDirection, ObservedFlow, Outcome, PlanOptions,
};

fn observed(direction: FlowDirection, local: IpAddr, remote: IpAddr, port: u16) -> ObservedFlow {
    FlowBuilder::new(direction, local, remote, port)
        .seen(Timestamp::now(), Timestamp::now())
        .processes([std::env::current_exe().unwrap().display().to_string()])
        .users(["root"])
        .build()
}

#[test]
fn generated_plan_allows_observed_and_blocks_the_unseen_in_a_namespace() {
    let host = Netns::new("host");
    let peer = Netns::new("peer");
    host.exec(&[
        "ip", "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", &peer.name,
    ]);
    host.exec(&["ip", "addr", "add", "10.211.7.1/24", "dev", "va"]);
    host.exec(&[
        "ip",
        "addr",
        "add",
        "fd00:211:7::1/64",
        "dev",
        "va",
        "nodad",
    ]);
    host.exec(&["ip", "link", "set", "va", "up"]);
    peer.exec(&["ip", "addr", "add", "10.211.7.2/24", "dev", "vb"]);
    peer.exec(&[
        "ip",
        "addr",
        "add",
        "fd00:211:7::2/64",
        "dev",
        "vb",
        "nodad",
    ]);
    peer.exec(&["ip", "link", "set", "vb", "up"]);

    let (h4, h6): (IpAddr, IpAddr) = (
        "10.211.7.1".parse().unwrap(),
        "fd00:211:7::1".parse().unwrap(),
    );
    let (p4, p6): (IpAddr, IpAddr) = (
        "10.211.7.2".parse().unwrap(),
        "fd00:211:7::2".parse().unwrap(),
    );
    // Services on the host (one used, one never) and on the peer (likewise).
    let svc4 = listen(&host, "10.211.7.1:0");
    let svc6 = listen(&host, "[fd00:211:7::1]:0");
    let unused_host = listen(&host, "[::]:0");
    let remote_svc = listen(&peer, "10.211.7.2:0");
    let unused_peer = listen(&peer, "10.211.7.2:0");

    // Real traffic, before any firewall: what the agent would have recorded.
    let c1 = try_connect(&peer, svc4).expect("v4 inbound before the plan");
    let c2 = try_connect(&peer, svc6).expect("v6 inbound before the plan");
    let c3 = try_connect(&host, remote_svc).expect("outbound before the plan");
    let flows = vec![
        observed(FlowDirection::Inbound, svc4.ip(), c1.ip(), svc4.port()),
        observed(FlowDirection::Inbound, svc6.ip(), c2.ip(), svc6.port()),
        observed(
            FlowDirection::Outbound,
            c3.ip(),
            remote_svc.ip(),
            remote_svc.port(),
        ),
    ];

    let plan = plan("host", &flows, PlanOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plan.nft");
    std::fs::write(&file, render::nft(&plan)).unwrap();
    host.exec(&["nft", "-f", file.to_str().unwrap()]);
    // Forget neighbours so IPv6 must resolve them again through the firewall.
    host.exec(&["ip", "-6", "neigh", "flush", "dev", "va"]);
    host.exec(&["ip", "-4", "neigh", "flush", "dev", "va"]);

    try_connect(&peer, svc4).expect("observed v4 inbound must still work");
    try_connect(&peer, svc6).expect("observed v6 inbound must still work");
    try_connect(&host, remote_svc).expect("observed outbound must still work");
    let never = SocketAddr::new(h4, unused_host.port());
    assert!(
        try_connect(&peer, never).is_err(),
        "an unseen inbound port must be blocked"
    );
    let never6 = SocketAddr::new(h6, unused_host.port());
    assert!(
        try_connect(&peer, never6).is_err(),
        "an unseen inbound v6 port must be blocked"
    );
    assert!(
        try_connect(&host, unused_peer).is_err(),
        "an unseen outbound port must be blocked"
    );

    // The checker, reading the ruleset back from the kernel, agrees.
    let live = nft::json::parse_json(&host.exec(&["nft", "-j", "list", "ruleset"])).unwrap();
    for verdict in check(&live, &flows) {
        assert_eq!(verdict.outcome, Outcome::Allowed, "{verdict:?}");
    }
    let unseen = [
        observed(FlowDirection::Inbound, h4, p4, unused_host.port()),
        observed(FlowDirection::Inbound, h6, p6, unused_host.port()),
        observed(FlowDirection::Outbound, h4, p4, unused_peer.port()),
    ];
    for verdict in check(&live, &unseen) {
        assert_eq!(verdict.outcome, Outcome::Blocked, "{verdict:?}");
    }
}
