//! Tests of the whole language through the public API, plus property tests
//! that tie the printer, the parser and the compiled program to the tree.

use std::net::SocketAddr;
use std::sync::Arc;

use connscope_event::{
    ConnectionEvent, Direction, EventKind, Family, ProcessInfo, Protocol, Timestamp,
};
use proptest::prelude::*;

use super::*;
use crate::expr::{End, Test};
use crate::glob::Glob;
use connscope_event::test_support::EventBuilder;

fn event(local: &str, remote: &str) -> ConnectionEvent {
    EventBuilder::connect(local, remote)
        .at_nanos(1)
        .uid(1000)
        .process(4242, "/usr/bin/ssh")
        .comm("ssh")
        .build()
}

fn set(text: &str) -> RuleSet {
    RuleSet::builder()
        .add_expr("-e #1", text)
        .build()
        .unwrap_or_else(|e| panic!("{text:?} should parse:\n{e}"))
}

fn normalised(text: &str) -> Vec<String> {
    set(text).rules().iter().map(ToString::to_string).collect()
}

fn error(text: &str) -> String {
    RuleSet::builder()
        .add_expr("-e #1", text)
        .build()
        .expect_err("should not parse")
        .to_string()
}

fn file_set(text: &str) -> Result<RuleSet, RulesError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules");
    std::fs::write(&path, text).unwrap();
    RuleSet::builder().add_file(&path).build()
}

/// Both ways of evaluating must agree on every test event.
fn matches(rules: &RuleSet, ev: &ConnectionEvent) -> bool {
    let compiled = rules.matches(ev);
    let walked = rules.is_empty()
        || rules
            .rules()
            .iter()
            .any(|r| r.matches_by_tree_walk(ev, ExeComparisons::Evaluate));
    assert_eq!(compiled, walked, "compiled and tree walk disagree");
    compiled
}

#[test]
fn man_page_examples() {
    // tcpspy(8) EXAMPLES (users bob and joe may not exist here: numeric stand-ins
    // for the names; the named form is tested in the binary's tests).
    assert_eq!(
        normalised(r#"user "root" and rport "ssh""#),
        [r#"(user "root" and rport "ssh")"#]
    );
    assert_eq!(
        normalised(r#"not raddr 10.0.0.0/255.0.0.0 and rport 25 and (user 1001 or user 1002)"#),
        ["((not raddr 10.0.0.0/8 and rport 25) and (user 1001 or user 1002))"]
    );
    assert_eq!(
        normalised(r#"exe "/usr/bin/irc""#),
        [r#"exe "/usr/bin/irc""#]
    );

    let mut ev = event("192.168.1.2:40000", "192.0.2.1:25");
    ev.uid = Some(1001);
    let rule = set("not raddr 10.0.0.0/255.0.0.0 and rport 25 and (user 1001 or user 1002)");
    assert!(matches(&rule, &ev));
    ev.remote = "10.1.2.3:25".parse().unwrap();
    assert!(!matches(&rule, &ev));
    ev.remote = "192.0.2.1:26".parse().unwrap();
    assert!(!matches(&rule, &ev));
    ev.remote = "192.0.2.1:25".parse().unwrap();
    ev.uid = Some(1003);
    assert!(!matches(&rule, &ev));
}

#[test]
fn rules_file_example_from_tcpspy_rules_5() {
    // The example with "joedoe" replaced by root, which exists everywhere.
    let rules = file_set(
        "# /etc/tcpspt.rules example\n\
         user \"root\" and rport 22 and raddr 192.168.1.10\n\
         user 1003\n\
         lport 22 or lport 21\n\
         (lport 23 and user \"root\") or raddr 192.168.1.20\n",
    )
    .unwrap();
    let lines: Vec<_> = rules
        .rules()
        .iter()
        .map(|r| (r.line(), r.to_string()))
        .collect();
    assert_eq!(
        lines,
        [
            (
                2,
                "((user \"root\" and rport 22) and raddr 192.168.1.10)".to_owned()
            ),
            (3, "user 1003".to_owned()),
            (4, "(lport 22 or lport 21)".to_owned()),
            (
                5,
                "((lport 23 and user \"root\") or raddr 192.168.1.20)".to_owned()
            ),
        ]
    );
    let mut ev = event("192.168.1.2:40000", "192.168.1.10:22");
    ev.uid = Some(0);
    assert!(matches(&rules, &ev)); // line 2
    ev.uid = Some(1003);
    ev.remote = "192.0.2.9:80".parse().unwrap();
    assert!(matches(&rules, &ev)); // line 3
    ev.uid = Some(5);
    assert!(!matches(&rules, &ev));
    ev.local = "192.168.1.2:21".parse().unwrap();
    assert!(matches(&rules, &ev)); // line 4
    ev.local = "192.168.1.2:23".parse().unwrap();
    assert!(!matches(&rules, &ev));
    ev.uid = Some(0);
    assert!(matches(&rules, &ev)); // line 5, left
    ev.uid = Some(5);
    ev.remote = "192.168.1.20:9".parse().unwrap();
    assert!(matches(&rules, &ev)); // line 5, right
}

#[test]
fn precedence_and_associativity_as_tcpspy() {
    // Verified against tcpspy 1.7d; see tests/tcpspy_oracle.rs.
    assert_eq!(normalised("not ip or ip"), ["(not ip or ip)"]);
    assert_eq!(normalised("not ip6 and ip6"), ["(not ip6 and ip6)"]);
    assert_eq!(normalised("ip or ip6 and ip6"), ["((ip or ip6) and ip6)"]);
    assert_eq!(normalised("ip6 and ip6 or ip"), ["((ip6 and ip6) or ip)"]);
    assert_eq!(normalised("ip or ip and ip6"), ["((ip or ip) and ip6)"]);
    assert_eq!(normalised("not not ip"), ["not not ip"]);
    assert_eq!(normalised("not (ip or ip6)"), ["not (ip or ip6)"]);
    assert_eq!(normalised("ip and (ip6 or ip)"), ["(ip and (ip6 or ip))"]);
    let v4 = event("127.0.0.1:1", "127.0.0.1:2");
    assert!(matches(&set("not ip or ip"), &v4));
    assert!(!matches(&set("ip or ip6 and ip6"), &v4));
    assert!(matches(&set("ip6 and ip6 or ip"), &v4));
    assert!(!matches(&set("ip or ip and ip6"), &v4));
}

#[test]
fn lexing_like_tcpspy() {
    assert_eq!(normalised("IP6 OR Ip"), ["(ip6 or ip)"]);
    assert_eq!(normalised("ip6or ip"), ["(ip6 or ip)"]);
    assert_eq!(
        normalised("user\"root\"and(ip)"),
        ["(user \"root\" and ip)"]
    );
    assert_eq!(normalised("lport 00022"), ["lport 22"]);
    // Juxtaposed expressions are separate rules, with a warning.
    let rules = set("ip6 ip and ip6");
    assert_eq!(rules.rules().len(), 2);
    assert_eq!(rules.rules()[1].to_string(), "(ip and ip6)");
    assert_eq!(rules.warnings().len(), 1);
    assert_eq!(
        (rules.warnings()[0].line(), rules.warnings()[0].column()),
        (1, 5)
    );
    assert!(set("ip and ip6").warnings().is_empty());
}

#[test]
fn rule_files_are_streams_with_comments() {
    // tcpspy reads `ip6 and\nip` as one rule.
    let rules = file_set("ip6 and\nip # comment \"x\"\n\n").unwrap();
    assert_eq!(rules.rules().len(), 1);
    assert_eq!(rules.rules()[0].to_string(), "(ip6 and ip)");
    assert!(!matches(&rules, &event("127.0.0.1:1", "127.0.0.1:2")));
    // A file with no rules adds none: everything matches.
    let empty = file_set("# nothing\n\n").unwrap();
    assert!(empty.is_empty());
    assert!(matches(&empty, &event("127.0.0.1:1", "127.0.0.1:2")));
}

#[test]
fn empty_and_whitespace_rules() {
    let none = RuleSet::builder().build().unwrap();
    assert!(none.is_empty() && matches(&none, &event("[::1]:1", "[::1]:2")));
    let blank = set(" \t ");
    assert!(!blank.is_empty() && blank.rules()[0].is_empty());
    assert_eq!(blank.rules()[0].to_string(), "");
    assert!(!matches(&blank, &event("[::1]:1", "[::1]:2")));
    // OR with a real rule.
    let both = RuleSet::builder()
        .add_expr("-e #1", "")
        .add_expr("-e #2", "ip6")
        .build()
        .unwrap();
    assert!(matches(&both, &event("[::1]:1", "[::1]:2")));
    assert!(!matches(&both, &event("127.0.0.1:1", "127.0.0.1:2")));
}

#[test]
fn ports_ranges_and_services() {
    let ev =
        |lport: u16, rport: u16| event(&format!("10.0.0.1:{lport}"), &format!("10.0.0.2:{rport}"));
    let r = set("lport 1024-2048");
    assert!(matches(&r, &ev(1024, 0)) && matches(&r, &ev(2048, 0)));
    assert!(!matches(&r, &ev(1023, 0)) && !matches(&r, &ev(2049, 0)));
    let r = set("rport 1024-");
    assert!(matches(&r, &ev(0, 65535)) && !matches(&r, &ev(0, 1023)));
    let r = set("rport -1023");
    assert!(matches(&r, &ev(0, 0)) && !matches(&r, &ev(0, 1024)));
    assert_eq!(
        normalised("rport 1024- or rport -1023 or lport 7-7"),
        ["((rport 1024-65535 or rport 0-1023) or lport 7)"]
    );
    let r = set("rport \"ssh\"");
    assert!(matches(&r, &ev(5, 22)) && !matches(&r, &ev(22, 23)));
}

#[test]
fn addresses_masks_and_families() {
    let v4 = event("127.0.0.5:1", "192.168.7.9:2");
    let v6 = event("[::1]:1", "[2001:db8::42]:2");
    for (rule, on_v4, on_v6) in [
        ("laddr 127.0.0.1/8", true, false),
        ("laddr 127.0.0.0/255.0.0.0", true, false),
        ("laddr 127.0.0.5", true, false),
        ("laddr 127.0.0.6", false, false),
        ("raddr 192.168.0.0/16", true, false),
        ("raddr 0.168.0.0/0.255.0.0", true, false),
        ("raddr 1.2.3.4/0.0.0.0", true, false),
        ("laddr ::1", false, true),
        ("raddr 2001:db8::/32", false, true),
        ("raddr 2001:db8::43/127", false, true),
        ("raddr 2001:db8::44/127", false, false),
        ("not laddr 10.0.0.0/8", true, true),
        ("ip", true, false),
        ("ip6", false, true),
    ] {
        let r = set(rule);
        assert_eq!(matches(&r, &v4), on_v4, "{rule} on v4");
        assert_eq!(matches(&r, &v6), on_v6, "{rule} on v6");
    }
    assert_eq!(
        normalised("laddr 127.0.0.1/8 or raddr 10.1.0.0/255.255.0.0 or laddr 1.2.3.4/0.255.0.255 or laddr 1.2.3.4/32"),
        ["(((laddr 127.0.0.0/8 or raddr 10.1.0.0/16) or laddr 0.2.0.4/0.255.0.255) or laddr 1.2.3.4)"]
    );
    assert_eq!(
        normalised("laddr 1.2.3.4/0.0.0.0"),
        ["laddr 0.0.0.0/0.0.0.0"]
    );
    assert_eq!(
        normalised("laddr 2001:DB8::1/32 or laddr ::1/128"),
        ["(laddr 2001:db8::/32 or laddr ::1)"]
    );
}

#[test]
fn exe_globs_and_unknown_executables() {
    let mut ev = event("127.0.0.1:1", "127.0.0.1:2");
    assert!(matches(&set(r#"exe "/usr/bin/ssh""#), &ev));
    assert!(matches(&set(r#"exe "/usr/*/ss[hx]""#), &ev));
    assert!(!matches(&set(r#"exe "/usr/*""#), &ev));
    assert!(!matches(&set(r#"exe "*ssh""#), &ev));
    assert!(!matches(&set(r#"exe """#), &ev));
    ev.process = None;
    assert!(matches(&set(r#"exe """#), &ev));
    assert!(!matches(&set(r#"exe "/usr/bin/ssh""#), &ev));
    assert!(!matches(&set("pid 4242"), &ev));
    // Unlike tcpspy 1.7d, something may follow an exe comparison.
    assert!(matches(&set(r#"exe "/x" or ip"#), &ev));
}

#[test]
fn exe_comparisons_always_true_without_executables() {
    let rules = RuleSet::builder()
        .add_expr("-e #1", r#"exe "/nowhere" and rport 2"#)
        .add_expr("-e #2", r#"not exe "*""#)
        .exe_comparisons(ExeComparisons::AlwaysTrue)
        .build()
        .unwrap();
    assert!(rules.uses_exe());
    let ev = event("127.0.0.1:1", "127.0.0.1:2");
    assert!(rules.matches(&ev));
    assert!(rules.rules()[0].matches_by_tree_walk(&ev, ExeComparisons::AlwaysTrue));
    assert!(!rules.rules()[1].matches_by_tree_walk(&ev, ExeComparisons::AlwaysTrue));
    let other = event("127.0.0.1:1", "127.0.0.1:3");
    assert!(!rules.matches(&other));
    assert!(!set("ip").uses_exe());
}

#[test]
fn extensions() {
    let mut ev = event("127.0.0.1:1", "127.0.0.1:2");
    assert!(matches(&set("dir out and proto tcp"), &ev));
    assert!(!matches(&set("dir in or proto udp"), &ev));
    assert!(matches(&set(r#"comm "ss?" and pid 4242"#), &ev));
    ev.direction = Direction::Unknown;
    assert!(!matches(&set("dir in or dir out"), &ev));
    ev.protocol = Protocol::Udp;
    assert!(matches(&set("proto udp"), &ev));
    assert_eq!(
        normalised(r#"DIR IN and proto UDP or comm "kworker/*" or pid 7"#),
        [r#"(((dir in and proto udp) or comm "kworker/*") or pid 7)"#]
    );
}

#[test]
fn error_messages_point_at_the_problem() {
    let cases: &[(&str, &str)] = &[
        (
            "user \"root\" and rport",
            "-e #1:1:22: expected a port or service name after 'rport', found end of rule\n    user \"root\" and rport\n                         ^",
        ),
        ("rport and ip", "-e #1:1:7: expected a port or service name after 'rport', found 'and'"),
        ("user \"no-such-user-here\"", "-e #1:1:6: unknown user \"no-such-user-here\""),
        ("user \"0\"", "-e #1:1:6: unknown user \"0\""),
        ("user 4294967296", "-e #1:1:6: user id 4294967296 is out of range (0-4294967295)"),
        ("lport \"no-such-service\"", "-e #1:1:7: unknown service \"no-such-service\" (not in /etc/services)"),
        ("lport 65536", "-e #1:1:7: port 65536 is out of range (0-65535)"),
        ("lport 1-70000", "-e #1:1:9: port 70000 is out of range (0-65535)"),
        ("lport -", "-e #1:1:7: a port range needs at least one end: low-high, low- or -high"),
        ("lport 9-1", "-e #1:1:7: port range 9-1 is backwards (low end above high end)"),
        ("lport 1 - 9", "-e #1:1:9: expected a condition, found '-' (port ranges are written without spaces, as in 1024-65535)"),
        ("lport ssh", "-e #1:1:7: expected a port or service name after 'lport', found 'ssh' (service names are quoted, as in \"ssh\")"),
        ("laddr 127.1", "-e #1:1:7: invalid IPv4 address '127.1' (expected n.n.n.n)"),
        ("laddr 10.0.0.0/33", "-e #1:1:16: invalid prefix length '33' (1-32)"),
        ("laddr 10.0.0.0/0", "-e #1:1:16: invalid prefix length '0' (1-32)"),
        ("laddr 10.0.0.0/255.0.0", "-e #1:1:16: invalid netmask '255.0.0' (expected m.m.m.m)"),
        ("laddr ::1/255.0.0.0", "-e #1:1:11: invalid netmask '255.0.0.0': an IPv6 address takes a prefix length (1-128)"),
        ("laddr ::1/129", "-e #1:1:11: invalid prefix length '129' (1-128)"),
        ("laddr 1:::2", "-e #1:1:7: invalid IPv6 address '1:::2'"),
        ("laddr ip", "-e #1:1:7: expected an address (n.n.n.n[/mask] or ipv6[/len]) after 'laddr', found 'ip'"),
        ("exe /bin/sh", "-e #1:1:5: expected a quoted pattern after 'exe', found '/bin/sh'"),
        ("exe \"/bin/sh", "-e #1:1:5: expected a quoted pattern after 'exe', found a string with no closing '\"'"),
        ("ip and", "-e #1:1:7: expected a condition after 'and', found end of rule"),
        ("ip and or ip6", "-e #1:1:8: expected a condition after 'and', found 'or'"),
        ("and ip", "-e #1:1:1: expected a condition"),
        ("(ip or ip6", "-e #1:1:11: expected ')' to close the '(' at column 1, found end of rule"),
        ("ip)", "-e #1:1:3: ')' without a matching '('"),
        ("ip foo", "-e #1:1:4: unknown word 'foo'"),
        ("ip # comment", "-e #1:1:4: '#' starts a comment only in a rule file (-f)"),
        ("dir sideways", "-e #1:1:5: expected 'in' or 'out' after 'dir', found 'sideways'"),
        ("proto icmp", "-e #1:1:7: expected 'tcp' or 'udp' after 'proto', found 'icmp'"),
        ("pid x", "-e #1:1:5: expected a process id after 'pid', found 'x'"),
        ("in", "-e #1:1:1: expected a condition"),
        ("ip ünï ip", "-e #1:1:4: unknown word 'ünï'"),
        ("exe \"ö\" and lport x", "-e #1:1:19: expected a port or service name after 'lport', found 'x'"),
    ];
    for (rule, expected) in cases {
        let message = error(rule);
        assert!(
            message.starts_with(expected),
            "{rule:?}:\n{message}\ndoes not start with\n{expected}"
        );
    }
}

#[test]
fn every_error_is_reported() {
    let err = RuleSet::builder()
        .add_expr("-e #1", "user \"nobody-a\" or user \"nobody-b\"")
        .add_expr("-e #2", "ip and")
        .add_file("/nonexistent/rules")
        .build()
        .unwrap_err();
    let places: Vec<_> = err
        .diagnostics()
        .iter()
        .map(|d| (d.source().to_owned(), d.line(), d.column()))
        .collect();
    assert_eq!(
        places,
        [
            ("-e #1".to_owned(), 1, 6),
            ("-e #1".to_owned(), 1, 25),
            ("-e #2".to_owned(), 1, 7),
            ("/nonexistent/rules".to_owned(), 0, 0),
        ]
    );
    assert!(err
        .to_string()
        .contains("/nonexistent/rules: cannot read rule file: "));

    // In a file each line recovers on its own; an incomplete line is reported
    // at its end, not at the next line's first word.
    let err =
        file_set("ip\nuser \"joe-nobody\" and rport\n\nlport 70000 or (ip\nip6 and\n").unwrap_err();
    let text = err.to_string();
    let places: Vec<_> = err
        .diagnostics()
        .iter()
        .map(|d| (d.line(), d.column()))
        .collect();
    assert_eq!(places, [(2, 6), (2, 28), (4, 7), (4, 19), (5, 8)], "{text}");
    assert!(
        text.contains(":2:28: expected a port or service name after 'rport', found end of line\n"),
        "{text}"
    );
    assert!(
        text.contains(":5:8: expected a condition after 'and', found end of file"),
        "{text}"
    );
}

// ---- property tests ----

fn arb_test() -> impl Strategy<Value = Test> {
    let end = prop_oneof![Just(End::Local), Just(End::Remote)];
    let glob = "[a-z/*?]{0,8}";
    prop_oneof![
        any::<u32>().prop_map(|uid| Test::User { uid, name: None }),
        Just(Test::User {
            uid: 0,
            name: Some("root".into())
        }),
        prop_oneof![Just(Family::Ipv4), Just(Family::Ipv6)].prop_map(Test::Family),
        (end.clone(), any::<u16>(), any::<u16>()).prop_map(|(end, a, b)| Test::Port {
            end,
            low: a.min(b),
            high: a.max(b),
            service: None,
        }),
        end.clone().prop_map(|end| Test::Port {
            end,
            low: 22,
            high: 22,
            service: Some("ssh".into())
        }),
        (end.clone(), any::<u32>(), any::<u32>()).prop_map(|(end, net, mask)| Test::Addr4 {
            end,
            net: net & mask,
            mask
        }),
        (end, any::<u128>(), 1u8..=128).prop_map(|(end, net, prefix)| Test::Addr6 {
            end,
            net: net & crate::expr::mask6(prefix),
            prefix,
        }),
        glob.prop_map(|g| Test::Exe(Glob::new(&g, true))),
        glob.prop_map(|g| Test::Comm(Glob::new(&g, false))),
        prop_oneof![Just(Direction::Incoming), Just(Direction::Outgoing)].prop_map(Test::Direction),
        prop_oneof![Just(Protocol::Tcp), Just(Protocol::Udp)].prop_map(Test::Protocol),
        any::<u32>().prop_map(Test::Pid),
    ]
}

fn arb_expr() -> impl Strategy<Value = Expr> {
    arb_test()
        .prop_map(Expr::Test)
        .prop_recursive(6, 48, 2, |inner| {
            prop_oneof![
                inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Expr::And(Box::new(a), Box::new(b))),
                (inner.clone(), inner).prop_map(|(a, b)| Expr::Or(Box::new(a), Box::new(b))),
            ]
        })
}

fn arb_event() -> impl Strategy<Value = ConnectionEvent> {
    let v4 = (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port)));
    let v6 = (any::<[u16; 8]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port)));
    let pair = prop_oneof![(v4.clone(), v4), (v6.clone(), v6)];
    let process = proptest::option::of(("[a-z/]{0,6}", "[a-z/]{0,6}", 0u32..3).prop_map(
        |(exe, comm, pid)| {
            Arc::new(ProcessInfo {
                pid,
                executable: (!exe.is_empty()).then_some(exe),
                comm: Some(comm),
                ..ProcessInfo::default()
            })
        },
    ));
    (
        pair,
        proptest::option::of(0u32..3),
        process,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|((local, remote), uid, process, incoming, udp)| {
            let mut ev = ConnectionEvent::new(
                EventKind::Connect,
                Timestamp::from_nanos(0),
                if udp { Protocol::Udp } else { Protocol::Tcp },
                if incoming {
                    Direction::Incoming
                } else {
                    Direction::Outgoing
                },
                local,
                remote,
            );
            ev.uid = uid;
            ev.process = process;
            ev
        })
}

proptest! {
    #[test]
    fn printed_rules_parse_back_to_the_same_tree(expr in arb_expr()) {
        let printed = expr.to_string();
        let parsed = parse::parse("-e #1", &printed, false);
        prop_assert!(parsed.errors.is_empty(), "{printed}: {:?}", parsed.errors);
        prop_assert_eq!(parsed.rules.len(), 1);
        prop_assert_eq!(&parsed.rules[0].0, &expr, "{}", printed);
    }

    #[test]
    fn compiled_program_agrees_with_the_tree(
        exprs in proptest::collection::vec(arb_expr(), 0..4),
        events in proptest::collection::vec(arb_event(), 16),
        always in any::<bool>(),
    ) {
        let mode = if always { ExeComparisons::AlwaysTrue } else { ExeComparisons::Evaluate };
        let program = Program::compile(exprs.iter(), !exprs.is_empty(), mode);
        for ev in &events {
            let walked = exprs.is_empty() || exprs.iter().any(|e| e.eval(ev, mode));
            prop_assert_eq!(program.matches(ev), walked);
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "[ -~\n]{0,40}") {
        let _ = RuleSet::builder().add_expr("-e #1", &text).build();
    }
}
