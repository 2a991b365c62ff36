//! Hostile or broken rulesets must give an error, never a panic or a hang:
//! random bytes, and real rulesets with random damage.

use connscope_firewall::nft::{json::parse_json, parse_str};
use proptest::prelude::*;

const REAL: &str = "#!/usr/sbin/nft -f
define LAN = { 10.0.0.0/8, 192.168.0.0/16 }
table inet connscope
delete table inet connscope
table inet connscope {
\tset out_tcp_v4_1 {
\t\ttype ipv4_addr
\t\tflags interval
\t\telements = { 198.18.1.0/24, 198.18.2.10, 198.18.3.1-198.18.3.9 }
\t}
\tchain input {
\t\ttype filter hook input priority filter - 5; policy drop;
\t\tct state established,related accept
\t\tiif \"lo\" accept
\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
\t\tip saddr $LAN tcp dport { 22, 80-90 } counter accept comment \"12 conn sshd\"
\t\tip6 saddr fe80::/10 udp dport != 53 log prefix \"x\" drop
\t\tmeta l4proto tcp reject with tcp reset
\t\tjump sub
\t}
\tchain sub {
\t\toifname \"eth*\" return
\t\tip daddr @out_tcp_v4_1 tcp dport 5432 goto sub
\t}
}
";

const JSON: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}, {"table": {"family": "inet", "name": "t", "handle": 1}}, {"set": {"family": "inet", "name": "s", "table": "t", "type": "ipv4_addr", "handle": 2, "flags": ["interval"], "elem": [{"prefix": {"addr": "10.0.0.0", "len": 8}}, "192.0.2.1", {"range": ["192.0.2.5", "192.0.2.9"]}]}}, {"chain": {"family": "inet", "table": "t", "name": "c", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}}, {"rule": {"family": "inet", "table": "t", "chain": "c", "handle": 3, "comment": "hi", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": {"set": [22, {"range": [80, 90]}]}}}, {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "new"]}}, {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@s"}}, {"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}}]}"#;

const PIECES: &[&str] = &[
    "{",
    "}",
    ";",
    "\n",
    "\"",
    "$LAN",
    "$undefined",
    "@s",
    "@",
    "$",
    "define x = ",
    "include \"x\"",
    "flush ruleset",
    "table",
    "chain",
    "set",
    "type",
    "hook",
    "priority",
    "-",
    "/",
    "::",
    "999999999999999999999",
    "jump sub",
    "goto input",
    "return",
    ",",
    "=",
    "!=",
    "\\\n",
    "#",
    "\u{0}",
    "\u{ff}",
    "é",
    "elements = {",
];

fn mutate(base: &str, ops: &[(usize, usize, usize)]) -> String {
    let mut text: Vec<char> = base.chars().collect();
    for &(kind, at, arg) in ops {
        let at = at % (text.len() + 1);
        match kind % 4 {
            0 => {
                let end = (at + arg % 16).min(text.len());
                text.drain(at..end);
            }
            1 => {
                let piece: Vec<char> = PIECES[arg % PIECES.len()].chars().collect();
                text.splice(at..at, piece);
            }
            2 => {
                let end = (at + arg % 64).min(text.len());
                let copy: Vec<char> = text[at..end].to_vec();
                text.splice(at..at, copy);
            }
            _ => {
                if at < text.len() {
                    text[at] = char::from((arg % 128) as u8);
                }
            }
        }
    }
    text.into_iter().collect()
}

#[test]
fn the_real_rulesets_parse() {
    let ruleset = parse_str("real.nft", REAL).unwrap();
    assert_eq!(ruleset.tables.len(), 1);
    assert_eq!(ruleset.tables[0].chains.len(), 2);
    assert!(ruleset.unsupported.is_empty(), "{:?}", ruleset.unsupported);
    let live = parse_json(JSON).unwrap();
    assert_eq!(live.tables[0].chains[0].rules.len(), 1);
    assert!(live.unsupported.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_str("random.nft", &text);
        let _ = parse_json(&text);
    }

    #[test]
    fn damaged_rulesets_never_panic(ops in prop::collection::vec((0usize..4, 0usize..2000, 0usize..10_000), 1..8)) {
        let text = mutate(REAL, &ops);
        if let Err(e) = parse_str("mutated.nft", &text) {
            let shown = e.to_string();
            prop_assert!(shown.starts_with("mutated.nft:"), "{}", shown);
        }
        let _ = parse_json(&mutate(JSON, &ops));
    }
}

#[test]
fn variable_doubling_is_bounded() {
    let mut text = String::from("define a0 = { 1, 2 }\n");
    for i in 1..40 {
        text.push_str(&format!("define a{i} = {{ $a{}, $a{} }}\n", i - 1, i - 1));
    }
    text.push_str("table ip t {\n chain c {\n  tcp dport $a39 accept\n }\n}\n");
    let err = parse_str("bomb.nft", &text).unwrap_err();
    assert!(err.message.contains("too large"), "{err}");
}
