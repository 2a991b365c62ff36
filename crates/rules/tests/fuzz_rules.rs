//! Rule texts come from files and command lines an administrator writes, and
//! from rule files copied between hosts: no text may panic the reader, the
//! error printer (which draws a caret under the column) or the evaluator.
//! A text that reads must print back to rules that read the same, and its
//! rules must evaluate on events without panicking.
//!
//! The corpus is the example rule file, the documented commands and one rule
//! per keyword, damaged by mutation; random text as well. Both ways of giving
//! rules are read: `-e` (one expression stream) and `-f` (a file, with `#`
//! comments).
//!
//! `CONNSCOPE_FUZZ_CASES` sets the cases per test (the soak run: a million).

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Arc;

use connscope_event::{ConnectionEvent, Direction, EventKind, ProcessInfo, Protocol, Timestamp};
use connscope_fuzzkit::{config, lines, mutated, random_bytes};
use connscope_rules::{ExeComparisons, RuleSet};
use proptest::prelude::*;

const EXAMPLE_FILE: &str = include_str!("../../../examples/tcpspy.rules");
const RULES_DOC: &str = include_str!("../../../docs/RULES.md");

/// One rule per keyword and form of the language.
const KEYWORD_RULES: &str = r#"
user "root" and rport "ssh"
not raddr 10.0.0.0/255.0.0.0 and rport 25 and (user 1001 or user 1002)
exe "/usr/bin/irc"
laddr 127.0.0.1/8 or raddr ::1/128 or laddr fe80::/10
lport 1024-65535 and rport -1023 or lport 1024-
ip6or ip
dir in and proto udp or dir out and proto tcp
comm "ssh*" or pid 4294967295 or user 0
exe "[a-z]*/[!x]?\*" or exe ""
(((lport 22)))
"#;

const TOKENS: &[&[u8]] = &[
    b"not ",
    b" and ",
    b" or ",
    b"(",
    b")",
    b"\"",
    b"\\",
    b"#",
    b"\n",
    b"user ",
    b"exe ",
    b"comm ",
    b"lport ",
    b"rport ",
    b"laddr ",
    b"raddr ",
    b"pid ",
    b"dir ",
    b"proto ",
    b"ip ",
    b"ip6 ",
    b"-",
    b"/",
    b"::",
    b"*",
    b"?",
    b"[",
    b"]",
    b"[!",
    b"\xc3\xa9",
    b"\xe2\x82\xac",
    b"\xff",
    b"\t",
];

fn corpus() -> Vec<Vec<u8>> {
    let mut corpus = lines(EXAMPLE_FILE);
    corpus.push(EXAMPLE_FILE.as_bytes().to_vec());
    corpus.extend(lines(KEYWORD_RULES));
    corpus.push(KEYWORD_RULES.as_bytes().to_vec());
    // `connscope rules check -e '...'` in the docs.
    for line in RULES_DOC.lines() {
        let mut rest = line;
        while let Some(start) = rest.find("-e '") {
            let after = &rest[start + 4..];
            let Some(end) = after.find('\'') else { break };
            corpus.push(after.as_bytes()[..end].to_vec());
            rest = &after[end..];
        }
    }
    corpus
}

fn events() -> Vec<ConnectionEvent> {
    let at = Timestamp::from_nanos(1_764_000_000_000_000_000);
    let mut v4 = ConnectionEvent::new(
        EventKind::Connect,
        at,
        Protocol::Tcp,
        Direction::Outgoing,
        "192.168.1.2:40000".parse().unwrap(),
        "192.0.2.1:25".parse().unwrap(),
    );
    v4.uid = Some(1001);
    v4.process = Some(Arc::new(ProcessInfo {
        pid: 4242,
        executable: Some(format!(
            "/usr/lib/{}firefox/{}",
            "a/".repeat(40),
            "x".repeat(200)
        )),
        comm: Some("firefox-esr".into()),
        ..ProcessInfo::default()
    }));
    let v6 = ConnectionEvent::new(
        EventKind::Disconnect,
        at,
        Protocol::Udp,
        Direction::Unknown,
        "[::1]:22".parse().unwrap(),
        "[fe80::1]:65535".parse().unwrap(),
    );
    vec![v4, v6]
}

thread_local! {
    static RULE_FILE: RefCell<Option<(tempfile::TempDir, PathBuf)>> = const { RefCell::new(None) };
}

/// Writes `text` to this thread's rule file and returns its path.
fn rule_file(text: &[u8]) -> PathBuf {
    RULE_FILE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let (_, path) = cell.get_or_insert_with(|| {
            // In memory where there is a tmpfs: a million cases write a million files.
            let dir = tempfile::tempdir_in("/dev/shm")
                .or_else(|_| tempfile::tempdir())
                .unwrap();
            let path = dir.path().join("fuzz.rules");
            (dir, path)
        });
        std::fs::write(&*path, text).unwrap();
        path.clone()
    })
}

fn check(built: Result<RuleSet, connscope_rules::RulesError>, events: &[ConnectionEvent]) {
    match built {
        Ok(rules) => {
            for warning in rules.warnings() {
                let _ = warning.to_string();
            }
            let printed: Vec<String> = rules.rules().iter().map(|r| r.to_string()).collect();
            for (rule, text) in rules.rules().iter().zip(&printed) {
                if rule.is_empty() {
                    continue;
                }
                let again = RuleSet::builder()
                    .add_expr("printed", text)
                    .build()
                    .unwrap_or_else(|e| panic!("printed rule {text:?} does not read: {e}"));
                let reprinted: Vec<String> = again.rules().iter().map(|r| r.to_string()).collect();
                assert_eq!(
                    reprinted,
                    std::slice::from_ref(text),
                    "printing changed the rule"
                );
            }
            for event in events {
                let by_program = rules.matches(event);
                let by_tree = rules
                    .rules()
                    .iter()
                    .any(|r| r.matches_by_tree_walk(event, ExeComparisons::Evaluate))
                    || rules.is_empty();
                assert_eq!(
                    by_program, by_tree,
                    "compiled rules disagree with {printed:?}"
                );
            }
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(!shown.is_empty());
        }
    }
}

fn read_both_ways(text: &[u8], events: &[ConnectionEvent]) {
    let as_text = String::from_utf8_lossy(text);
    check(
        RuleSet::builder().add_expr("-e #1", &as_text).build(),
        events,
    );
    check(RuleSet::builder().add_file(rule_file(text)).build(), events);
}

#[test]
fn the_corpus_reads() {
    for file in [EXAMPLE_FILE, KEYWORD_RULES] {
        let built = RuleSet::builder()
            .add_file(rule_file(file.as_bytes()))
            .build();
        if let Err(e) = built {
            panic!("{e}");
        }
    }
    let events = events();
    for text in corpus() {
        read_both_ways(&text, &events);
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn mutated_rules_never_panic(text in mutated(corpus(), TOKENS)) {
        read_both_ways(&text, &events());
    }

    #[test]
    fn random_rules_never_panic(text in random_bytes(120)) {
        read_both_ways(&text, &events());
    }
}
