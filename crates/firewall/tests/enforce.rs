#![cfg(feature = "system-tests")] // root: nft loaded in network namespaces
//! The acceptance test that matters: a plan generated from real connections,
//! loaded with `nft -f` into a test network namespace (never the host's own
//! ruleset), lets those connections through and blocks one never seen.
//!
//! Two namespaces joined by a veth pair play the planned host and its peer,
//! over IPv4 and IPv6 (so neighbour discovery must survive the plan).

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::Netns;
use connscope_event::Timestamp;
use connscope_firewall::test_support::FlowBuilder;
use connscope_firewall::{
    check, nft, plan, render, FlowDirection, ObservedFlow, Outcome, PlanOptions,
};
use nix::sched::{setns, CloneFlags};

/// Runs `f` on a thread that has entered `ns`; sockets made there stay in it.
fn in_ns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        setns(&file, CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// Connects, exchanges a byte with the server thread, and reports success.
fn try_connect(ns: &Netns, to: SocketAddr) -> Result<SocketAddr, String> {
    in_ns(ns, move || {
        let mut s =
            TcpStream::connect_timeout(&to, Duration::from_secs(3)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"x").map_err(|e| e.to_string())?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).map_err(|e| e.to_string())?;
        Ok(s.local_addr().unwrap())
    })
}

/// Serves echo-one-byte on `listener` until it is dropped with the test.
fn serve(listener: TcpListener) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { break };
            let mut b = [0u8; 1];
            if s.read_exact(&mut b).is_ok() {
                let _ = s.write_all(&b);
            }
        }
    });
}

fn listen(ns: &Netns, addr: &str) -> SocketAddr {
    let addr: SocketAddr = addr.parse().unwrap();
    let listener = in_ns(ns, move || TcpListener::bind(addr).unwrap());
    let local = listener.local_addr().unwrap();
    serve(listener);
    local
}

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
