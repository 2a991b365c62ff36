#![cfg(feature = "system-tests")] // root: nft -c and iptables-restore in a network namespace
//! Every generated ruleset must load: `nft -c -f` (inside a throw-away network
//! namespace) for nftables output, `iptables-restore --test` /
//! `ip6tables-restore --test` for iptables output. And our own parser must
//! read what we generate, and agree that a plan blocks none of its own flows.

mod common;

use std::process::Command;

use common::{flow, ok, run, Netns};
use connscope_event::Protocol::{Tcp, Udp};
use connscope_firewall::plan::IpFamily;
use connscope_firewall::{
    check, nft, plan, render, FlowDirection::*, Generalize, ObservedFlow, Outcome, PlanOptions,
};

fn sample_flows() -> Vec<ObservedFlow> {
    let mut flows = vec![
        flow(Inbound, Tcp, "192.0.2.1", "198.51.100.7", 22, 12),
        flow(Inbound, Tcp, "192.0.2.1", "198.51.100.9", 22, 1),
        flow(Inbound, Tcp, "192.0.2.1", "203.0.113.5", 443, 40),
        flow(Inbound, Udp, "192.0.2.1", "198.51.100.7", 53, 3),
        flow(Outbound, Udp, "192.0.2.1", "192.0.2.53", 53, 100),
        flow(Outbound, Tcp, "192.0.2.1", "203.0.113.80", 80, 2),
        flow(Outbound, Tcp, "192.0.2.1", "203.0.113.80", 443, 2),
        flow(Inbound, Tcp, "2001:db8::1", "2001:db8:1::5", 22, 4),
        flow(Inbound, Tcp, "2001:db8::1", "2001:db8:2::5", 22, 4),
        flow(Outbound, Tcp, "2001:db8::1", "2001:db8:ffff::1", 443, 9),
        flow(Inbound, Tcp, "127.0.0.1", "127.0.0.1", 5432, 9),
    ];
    // Enough peers for a named set.
    for i in 1..=6 {
        flows.push(flow(
            Outbound,
            Tcp,
            "192.0.2.1",
            &format!("198.18.{i}.10"),
            5432,
            i,
        ));
    }
    // Hostile process and user names, straight from a monitored host.
    flows[0].processes = vec![
        "/tmp/x\"; flush ruleset; add rule inet connscope input accept #".into(),
        "/usr/bin/na\u{ef}ve\nnewline".into(),
        "$(reboot)".into(),
        "a".repeat(300),
    ];
    flows[0].users = vec!["\\\"'`{}".into()];
    flows
}

fn option_sets() -> Vec<PlanOptions> {
    let mut sets = Vec::new();
    for (v4, v6) in [
        (Generalize::Exact, Generalize::Exact),
        (Generalize::Prefix(24), Generalize::Prefix(64)),
        (Generalize::Prefix(16), Generalize::Prefix(48)),
        (Generalize::Any, Generalize::Any),
    ] {
        for reject in [false, true] {
            sets.push(PlanOptions {
                generalize_v4: v4,
                generalize_v6: v6,
                min_count: 1,
                reject,
            });
        }
    }
    sets.push(PlanOptions {
        min_count: 3,
        ..PlanOptions::default()
    });
    sets
}

#[test]
fn generated_nftables_pass_nft_check_and_allow_their_own_flows() {
    let ns = Netns::new("nftc");
    let dir = tempfile::tempdir().unwrap();
    let flows = sample_flows();
    for (i, options) in option_sets().into_iter().enumerate() {
        let plan = plan("web-1;\"evil", &flows, options);
        let text = render::nft(&plan);
        let path = dir.path().join(format!("plan{i}.nft"));
        std::fs::write(&path, &text).unwrap();
        let out = run(&mut ns.cmd(&["nft", "-c", "-f", path.to_str().unwrap()]));
        assert!(
            out.status.success(),
            "nft -c rejected plan {i} ({options:?}):\n{}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ruleset = nft::parse_file(&path).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(ruleset.unsupported.is_empty(), "{:?}", ruleset.unsupported);
        for (flow, verdict) in flows.iter().zip(check(&ruleset, &flows)) {
            let expected = if flow.connections < options.min_count && !flow.is_loopback() {
                Outcome::Blocked
            } else {
                Outcome::Allowed
            };
            assert_eq!(
                verdict.outcome, expected,
                "plan {i}: {flow:?}\n{verdict:?}\n{text}"
            );
        }
        // A connection never observed is blocked, unless `any` opened its port.
        let stranger = flow(Inbound, Tcp, "192.0.2.1", "198.51.100.7", 2222, 1);
        assert_eq!(check(&ruleset, &[stranger])[0].outcome, Outcome::Blocked);
    }
}

#[test]
fn hostile_names_end_up_as_harmless_comments() {
    let plan = plan("h", &sample_flows(), PlanOptions::default());
    let text = render::nft(&plan);
    assert!(!text.contains("$(reboot)"));
    assert!(!text.contains("flush ruleset;"));
    for line in text.lines().filter(|l| l.contains("comment \"")) {
        let comment = line.split("comment \"").nth(1).unwrap();
        let body = comment.strip_suffix('"').expect("comment ends the line");
        assert!(body.len() <= 128, "{body}");
        assert!(!body.contains('"'));
    }
}

#[test]
fn generated_iptables_pass_restore_test() {
    let ns = Netns::new("ipt");
    let flows = sample_flows();
    for options in option_sets() {
        let plan = plan("h", &flows, options);
        for (family, tool) in [
            (IpFamily::Ipv4, "iptables-restore"),
            (IpFamily::Ipv6, "ip6tables-restore"),
        ] {
            let text = render::iptables(&plan, family);
            let mut cmd = ns.cmd(&[tool, "--test"]);
            cmd.stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let mut child = cmd.spawn().unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{tool} --test failed: {}\n{text}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Hand-written rulesets in the subset: nft and our parser must agree on
/// which are valid.
#[test]
fn parser_agrees_with_nft_on_valid_and_invalid_rulesets() {
    let valid = [
        "flush ruleset\ntable inet f {\n\tchain input {\n\t\ttype filter hook input priority 0; policy drop;\n\t\tct state established,related accept\n\t\tiifname \"lo\" accept\n\t\ttcp dport { 22, 80, 443 } accept\n\t}\n}\n",
        "define LAN = 10.0.0.0/8\ndefine WEB = { 80, 443 }\ntable ip t {\n chain i {\n  type filter hook input priority filter - 10; policy accept;\n  ip saddr $LAN tcp dport $WEB counter accept\n  ip saddr != 10.1.0.0/16 udp dport 1024-65535 log prefix \"hi \" drop\n  meta l4proto { tcp, udp } th dport 9 reject with icmp type admin-prohibited\n }\n}\n",
        "table inet t {\n set blocked {\n  type ipv4_addr\n  flags interval\n  elements = { 192.0.2.0/24, 198.51.100.1-198.51.100.9 }\n }\n chain o {\n  type filter hook output priority 0;\n  ip daddr @blocked drop comment \"no\"\n  jump sub\n }\n chain sub {\n  oifname \"eth*\" tcp dport ssh return\n  ip6 daddr ::1 accept\n  meta nfproto ipv6 goto sub2\n }\n chain sub2 {\n  udp sport 53 accept\n }\n}\n",
        "table ip6 x\nadd chain ip6 x c { type filter hook input priority 0; policy drop; }\nadd rule ip6 x c ip6 saddr fe80::/10 icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept\ninsert rule ip6 x c meta iif lo accept\n",
        "table inet t {\n chain c {\n  type filter hook input priority 0\n  limit rate 10/second accept\n  tcp flags syn tcp dport 22 meta mark set 1\n  ip saddr . tcp dport { 10.0.0.1 . 22 } accept\n }\n}\n",
    ];
    let invalid = [
        "table inet t {\n chain c {\n  type filter hook input priority 0; policy drop;\n  tcp dport { 22, 80 accept\n }\n}\n",
        "table inet t {\n chain c {\n  type filter hook sideways priority 0;\n }\n}\n",
        "table inet t {\n chain c {\n  ip saddr 10.0.0.300 accept\n }\n}\n",
        "table inet t {\n chain c {\n  tcp dport $UNDEFINED accept\n }\n}\n",
        "tabel inet t {}\n",
        "table inet t {\n chain c {\n  comment \"unterminated\n }\n}\n",
        "table inet t {\n chain c {\n  type filter hook input priority 0; policy maybe;\n }\n}\n",
    ];
    let ns = Netns::new("agree");
    let dir = tempfile::tempdir().unwrap();
    for (i, text) in valid.iter().chain(invalid.iter()).enumerate() {
        let should_pass = i < valid.len();
        let path = dir.path().join(format!("r{i}.nft"));
        std::fs::write(&path, text).unwrap();
        let nft_ok = run(&mut ns.cmd(&["nft", "-c", "-f", path.to_str().unwrap()]))
            .status
            .success();
        let ours = nft::parse_file(&path);
        assert_eq!(nft_ok, should_pass, "nft on ruleset {i}:\n{text}");
        assert_eq!(
            ours.is_ok(),
            should_pass,
            "our parser on ruleset {i}: {ours:?}\n{text}"
        );
        if let Err(e) = ours {
            let shown = e.to_string();
            assert!(
                shown.starts_with(&format!("{}:", path.display())),
                "{shown}"
            );
            assert!(shown.contains('^'), "{shown}");
        }
    }
    let _ = ok(&mut Command::new("true"));
}
