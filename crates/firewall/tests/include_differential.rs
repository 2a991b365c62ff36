#![cfg(feature = "system-tests")] // root: network namespaces and `nft -f` into them
//! A ruleset in several files, as hosts keep one (a top file, a `define` file,
//! a `rules.d/*.nft` glob whose order matters, a nested include by absolute
//! path, an empty glob), loaded with the real `nft -I DIR -f` into a
//! namespace and read by `firewall check`: the kernel and the checker must
//! agree connection by connection.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use common::{listen, try_connect, Netns};
use connscope_event::Timestamp;
use connscope_firewall::test_support::FlowBuilder;
use connscope_firewall::{check, nft, FlowDirection, Outcome};

const HOST: &str = "10.213.9.1";
const PEER: &str = "10.213.9.2";

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn checker_and_kernel_agree_on_a_ruleset_split_over_included_files() {
    let host = Netns::new("inc-host");
    let peer = Netns::new("inc-peer");
    host.exec(&[
        "ip", "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", &peer.name,
    ]);
    host.exec(&["ip", "addr", "add", &format!("{HOST}/24"), "dev", "va"]);
    host.exec(&["ip", "link", "set", "va", "up"]);
    peer.exec(&["ip", "addr", "add", &format!("{PEER}/24"), "dev", "vb"]);
    peer.exec(&["ip", "link", "set", "vb", "up"]);

    // Five services on the host; the files decide which the peer may reach.
    let ports: Vec<u16> = (0..5)
        .map(|_| listen(&host, &format!("{HOST}:0")).port())
        .collect();
    let [ssh, web, shadowed, late, unlisted] = ports[..] else {
        unreachable!()
    };

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "defs.nft", &format!("define ssh_port = {ssh}\n"));
    write(
        root,
        "main.nft",
        "include \"defs.nft\"\n\
         table inet inc {\n  chain input {\n    type filter hook input priority 0; policy drop;\n  }\n}\n\
         include \"rules.d/*.nft\"\n\
         include \"empty.d/*.nft\"\n",
    );
    std::fs::create_dir(root.join("empty.d")).unwrap();
    // Sorted, 10- comes before 20-: `shadowed` is dropped before 20- accepts it.
    write(
        root,
        "rules.d/10-base.nft",
        &format!(
            "add rule inet inc input tcp dport $ssh_port accept\n\
             add rule inet inc input tcp dport {web} accept\n\
             include \"{}\"\n",
            root.join("nested/deny.nft").display()
        ),
    );
    write(
        root,
        "nested/deny.nft",
        &format!("add rule inet inc input tcp dport {{ {web}, {shadowed} }} drop\n"),
    );
    write(
        root,
        "rules.d/20-late.nft",
        &format!(
            "add rule inet inc input tcp dport {shadowed} accept\n\
             add rule inet inc input tcp dport {late} accept\n"
        ),
    );

    let main = root.join("main.nft");
    host.exec(&[
        "nft",
        "-I",
        root.to_str().unwrap(),
        "-f",
        main.to_str().unwrap(),
    ]);
    let ruleset = nft::read_ruleset_file(&main).unwrap_or_else(|e| panic!("{e}"));

    let (host_ip, peer_ip): (IpAddr, IpAddr) = (HOST.parse().unwrap(), PEER.parse().unwrap());
    let mut kernel_allowed = Vec::new();
    for &port in &ports {
        let flow = FlowBuilder::new(FlowDirection::Inbound, host_ip, peer_ip, port)
            .seen(Timestamp::now(), Timestamp::now())
            .build();
        let verdict = check(&ruleset, std::slice::from_ref(&flow)).remove(0);
        let allowed = try_connect(&peer, SocketAddr::new(host_ip, port)).is_ok();
        let expected = if allowed {
            Outcome::Allowed
        } else {
            Outcome::Blocked
        };
        assert_eq!(verdict.outcome, expected, "port {port}: {verdict:?}");
        kernel_allowed.push(allowed);
    }
    // The files did what they say, so the agreement is about something.
    assert_eq!(
        kernel_allowed,
        [true, true, false, true, false],
        "ssh {ssh}, web {web}, shadowed {shadowed}, late {late}, unlisted {unlisted}"
    );
}
