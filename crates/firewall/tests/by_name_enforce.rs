#![cfg(feature = "system-tests")] // root: nft loaded in network namespaces
//! Outbound rules by name on a real kernel: a plan made with `--outbound
//! by-name` from a real store (named connections, one with a hostile name,
//! and one unnamed) loads with `nft -f` in a test namespace; with its name
//! sets empty the named destinations are blocked and the literal one is
//! allowed; once the addresses are added the way the agent adds them (`nft
//! add element ... timeout`), the named ones pass and an address of no name
//! stays blocked. `firewall check` agrees with the kernel on every
//! connection in both states: from the kernel's own listing, and (filled)
//! from what the store's named connections say the sets held.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::{listen, try_connect, Netns};
use connscope_event::test_support::EventBuilder;
use connscope_event::{ConnectionEvent, Family, Timestamp};
use connscope_firewall::by_name::{check_with_name_sets, plan_fleet_by_name};
use connscope_firewall::from_store::{fleet_flows, name_set_members};
use connscope_firewall::test_support::FlowBuilder;
use connscope_firewall::{
    check, nft, render, ExactPlanner, FleetFlows, FlowDirection, ObservedFlow, Outcome, PlanOptions,
};
use connscope_query::naming::RemoteNames;
use connscope_store::{AgentId, SqliteStore, Store, TimeRange};

const HOSTILE: &str = "<img src=x onerror=alert(1)>\"; flush ruleset;\n.example";

fn connect(seq: u64, local: SocketAddr, remote: SocketAddr, name: Option<&str>) -> ConnectionEvent {
    let mut b = EventBuilder::connect(local, remote)
        .at_nanos(Timestamp::now().as_nanos())
        .sequence(seq)
        .host("client")
        .process(std::process::id(), "/usr/bin/curl");
    if let Some(name) = name {
        b = b.named(name);
    }
    b.build()
}

fn outbound(local: IpAddr, remote: SocketAddr) -> ObservedFlow {
    FlowBuilder::new(FlowDirection::Outbound, local, remote.ip(), remote.port())
        .seen(Timestamp::now(), Timestamp::now())
        .build()
}

#[test]
fn a_by_name_plan_blocks_until_the_agent_fills_its_sets_and_check_agrees() {
    let host = Netns::new("byname-host");
    let peer = Netns::new("byname-peer");
    host.exec(&[
        "ip", "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", &peer.name,
    ]);
    host.exec(&["ip", "addr", "add", "10.212.7.1/24", "dev", "va"]);
    host.exec(&["ip", "link", "set", "va", "up"]);
    for a in [
        "10.212.7.2/24",
        "10.212.7.3/24",
        "10.212.7.4/24",
        "10.212.7.5/24",
    ] {
        peer.exec(&["ip", "addr", "add", a, "dev", "vb"]);
    }
    peer.exec(&["ip", "link", "set", "vb", "up"]);

    let www = listen(&peer, "10.212.7.2:0");
    let hostile = listen(&peer, "10.212.7.3:0");
    let literal = listen(&peer, "10.212.7.4:0");
    let unnamed_never = listen(&peer, "10.212.7.5:0");

    // Real connections before any firewall, stored as the agent names them.
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("store.db")).unwrap();
    let c1 = try_connect(&host, www).expect("www before the plan");
    let c2 = try_connect(&host, hostile).expect("hostile before the plan");
    let c3 = try_connect(&host, literal).expect("literal before the plan");
    store
        .ingest(
            &AgentId("client".into()),
            &[
                connect(1, c1, www, Some("www.example.org")),
                connect(2, c2, hostile, Some(HOSTILE)),
                connect(3, c3, literal, None),
            ],
        )
        .unwrap();

    let fleet: FleetFlows = fleet_flows(&store, TimeRange::ALL)
        .unwrap()
        .into_iter()
        .map(|(h, s)| (h, s.flows))
        .collect();
    let names = RemoteNames::load(&store, TimeRange::ALL).unwrap();
    let options = PlanOptions::default();
    let plans = plan_fleet_by_name(&ExactPlanner { options }, &fleet, &[], &names, options);
    let plan = &plans["client"];
    assert_eq!(plan.named_rules.len(), 2, "{plan:#?}");
    let text = render::nft(plan);
    assert!(
        text.contains("comment \"name _img src=x onerror=alert(1)___ flush ruleset__.example, "),
        "the hostile name is cleaned in the comment:\n{text}"
    );
    let file = dir.path().join("plan.nft");
    std::fs::write(&file, &text).unwrap();
    host.exec(&["nft", "-f", file.to_str().unwrap()]);

    let local = c1.ip();
    let flows = [
        outbound(local, www),
        outbound(local, hostile),
        outbound(local, literal),
        outbound(local, unnamed_never),
    ];
    let kernel = |to: SocketAddr| try_connect(&host, to).is_ok();
    let listing = || nft::json::parse_json(&host.exec(&["nft", "-j", "list", "ruleset"])).unwrap();

    // Sets empty: the named destinations are blocked, the literal one is not.
    let want = [false, false, true, false];
    let got: Vec<bool> = [www, hostile, literal, unnamed_never].map(kernel).to_vec();
    assert_eq!(got, want, "kernel with empty name sets");
    let checked: Vec<bool> = check(&listing(), &flows)
        .iter()
        .map(|v| v.outcome == Outcome::Allowed)
        .collect();
    assert_eq!(checked, want, "check of the kernel's listing, sets empty");

    // Filled the way the agent fills them: the addresses, with a timeout.
    for (rule, addr) in [(&www, "10.212.7.2"), (&hostile, "10.212.7.3")] {
        let set = plan
            .named_rules
            .iter()
            .find(|r| r.addresses_seen.contains(&rule.ip()))
            .unwrap()
            .set(Family::Ipv4);
        host.exec(&[
            "nft",
            "add",
            "element",
            "inet",
            "connscope",
            &set,
            &format!("{{ {addr} timeout 60s }}"),
        ]);
    }
    let want = [true, true, true, false];
    let got: Vec<bool> = [www, hostile, literal, unnamed_never].map(kernel).to_vec();
    assert_eq!(got, want, "kernel with the name sets filled");
    let checked: Vec<bool> = check(&listing(), &flows)
        .iter()
        .map(|v| v.outcome == Outcome::Allowed)
        .collect();
    assert_eq!(checked, want, "check of the kernel's listing, sets filled");

    // `firewall check` of the plan as written (sets empty) fills the sets
    // from the store's named connections: the same answer as the kernel.
    let written = nft::read_ruleset("plan.nft", &text).unwrap();
    let members = name_set_members(&store, "client", TimeRange::ALL).unwrap();
    let checked: Vec<bool> = check_with_name_sets(&written, &flows, &members)
        .iter()
        .map(|v| v.outcome == Outcome::Allowed)
        .collect();
    assert_eq!(checked, want, "check with the store's name sets");
    let unfilled: Vec<bool> = check(&written, &flows)
        .iter()
        .map(|v| v.outcome == Outcome::Allowed)
        .collect();
    assert_eq!(
        unfilled,
        [false, false, true, false],
        "without the store's names"
    );
}
