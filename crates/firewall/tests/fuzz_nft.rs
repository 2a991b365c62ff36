//! Rulesets come from files and from `nft -j list ruleset` on hosts an
//! administrator points the checker at: no ruleset may panic (or hang) the
//! parsers, and the what-if check must give a verdict for every flow on any
//! ruleset they accept (deep jumps, loops, empty chains, odd sets).
//!
//! The corpus is every ruleset the other firewall tests use (text and JSON,
//! read out of their sources) and the planner's own rendered output, damaged
//! by mutation; random text as well.
//!
//! `CONNSCOPE_FUZZ_CASES` sets the cases per test (the soak run: a million).

use connscope_event::{Protocol, Timestamp};
use connscope_firewall::nft::{json::parse_json, parse_str, Ruleset};
use connscope_firewall::test_support::FlowBuilder;
use connscope_firewall::{check, plan, render, FlowDirection, ObservedFlow, PlanOptions};
use connscope_fuzzkit::{config, mutated, random_bytes};
use proptest::prelude::*;

const PARSER_TEST: &str = include_str!("parser_fuzz.rs");
const VALIDATE_TEST: &str = include_str!("nft_validate.rs");

const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b";",
    b"\n",
    b"\"",
    b"$LAN",
    b"@s",
    b"define x = ",
    b"table inet t ",
    b"chain c ",
    b"set s ",
    b"type filter hook input priority 0; policy drop;",
    b"type ipv4_addr",
    b"flags interval",
    b"elements = { ",
    b"jump c",
    b"goto c",
    b"return",
    b"accept",
    b"drop",
    b"reject with tcp reset",
    b"ct state established,related",
    b"ip saddr ",
    b"ip6 daddr ",
    b"tcp dport ",
    b"udp sport != ",
    b"iifname \"lo\" ",
    b"meta l4proto ",
    b" . ",
    b"-",
    b"/",
    b"::",
    b",",
    b"=",
    b"!=",
    b"\\\n",
    b"#",
    b"\"prio\": ",
    b"\"jump\": {\"target\": \"c\"}",
    b"\"goto\": {\"target\": \"c\"}",
    b"[",
    b"]",
    b"null",
    b"\xff",
];

/// The string literals of a Rust source that look like nft rulesets.
fn rulesets_in(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    // Raw strings: the JSON rulesets.
    let mut rest = source;
    while let Some(start) = rest.find("r#\"") {
        let after = &rest[start + 3..];
        let Some(end) = after.find("\"#") else { break };
        if after.starts_with("{\"nftables\"") {
            found.push(after[..end].to_owned());
        }
        rest = &after[end + 2..];
    }
    // Plain strings with escapes: the text rulesets.
    let mut rest = source;
    while let Some(start) = rest.find('"') {
        let after = &rest[start + 1..];
        let mut text = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((at, c)) = chars.next() {
            match c {
                '"' => {
                    end = at + 1;
                    break;
                }
                '\\' => match chars.next().map(|(_, e)| e) {
                    Some('n') => text.push('\n'),
                    Some('t') => text.push('\t'),
                    Some('\n') => {
                        // A continued line: skip the next line's indentation.
                        while let Some((_, ' ')) = chars.clone().next() {
                            chars.next();
                        }
                    }
                    Some(other) => text.push(other),
                    None => break,
                },
                c => text.push(c),
            }
        }
        if ["table", "flush", "define", "#!/usr/sbin/nft"]
            .iter()
            .any(|p| text.starts_with(p))
            && text.contains('\n')
        {
            found.push(text);
        }
        rest = &after[end.min(after.len())..];
    }
    found
}

fn flows() -> Vec<ObservedFlow> {
    let flow = |direction, protocol, local: &str, remote: &str, port| {
        FlowBuilder::new(direction, local, remote, port)
            .protocol(protocol)
            .connections(3)
            .seen(
                Timestamp::from_nanos(1_764_000_000_000_000_000),
                Timestamp::from_nanos(1_764_000_100_000_000_000),
            )
            .processes(["/usr/sbin/sshd"])
            .users(["root"])
            .build()
    };
    use FlowDirection::{Inbound, Outbound};
    vec![
        flow(Inbound, Protocol::Tcp, "10.0.0.5", "10.1.2.3", 22),
        flow(Inbound, Protocol::Udp, "2001:db8::5", "fe80::1", 53),
        flow(Outbound, Protocol::Tcp, "192.168.1.2", "198.18.1.7", 5432),
        flow(Outbound, Protocol::Udp, "2001:db8::5", "2001:db8::9", 123),
        flow(Inbound, Protocol::Tcp, "127.0.0.1", "127.0.0.1", 8080),
    ]
}

fn corpus() -> Vec<Vec<u8>> {
    let mut corpus: Vec<String> = rulesets_in(PARSER_TEST);
    corpus.extend(rulesets_in(VALIDATE_TEST));
    let planned = plan(
        "web1",
        &flows(),
        PlanOptions {
            reject: true,
            ..PlanOptions::default()
        },
    );
    corpus.push(render::nft(&planned));
    corpus.into_iter().map(String::into_bytes).collect()
}

fn verdicts(ruleset: &Ruleset, flows: &[ObservedFlow]) {
    let verdicts = check(ruleset, flows);
    assert_eq!(verdicts.len(), flows.len());
}

fn read(bytes: &[u8], flows: &[ObservedFlow]) {
    let text = String::from_utf8_lossy(bytes);
    match parse_str("fuzz.nft", &text) {
        Ok(ruleset) => verdicts(&ruleset, flows),
        Err(e) => {
            let shown = e.to_string();
            assert!(shown.starts_with("fuzz.nft:"), "{shown}");
        }
    }
    if let Ok(ruleset) = parse_json(&text) {
        verdicts(&ruleset, flows);
    }
}

#[test]
fn the_corpus_reads() {
    let corpus = corpus();
    assert!(corpus.len() >= 8, "only {} rulesets found", corpus.len());
    let json = corpus
        .iter()
        .filter(|r| r.starts_with(b"{\"nftables\""))
        .count();
    assert!(json >= 1, "no JSON ruleset in the corpus");
    for ruleset in &corpus {
        read(ruleset, &flows());
    }
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn mutated_rulesets_never_panic(text in mutated(corpus(), TOKENS)) {
        read(&text, &flows());
    }

    #[test]
    fn random_rulesets_never_panic(text in random_bytes(400)) {
        read(&text, &flows());
    }
}
