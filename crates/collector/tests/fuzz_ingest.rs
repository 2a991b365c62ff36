//! Ingest bodies come from the network: no body may panic the decoder, a
//! decoded batch never exceeds the decompression limit, and a refusal names a
//! line of the body. The corpus is real agent batches (written by the
//! agent's own encoder) whose JSON lines are damaged before compression, and
//! whose compressed bytes are damaged after; random bodies as well, with
//! every encoding the header may name. Dropped reports (plain JSON) too.
//!
//! `CONNSCOPE_FUZZ_CASES` sets the cases per test (the soak run: a million).

use std::io::Write;
use std::sync::Arc;

use connscope_collector::ingest::{decode_batch, BatchError};
use connscope_event::json::to_json_line;
use connscope_event::{ConnectionEvent, Direction, EventKind, ProcessInfo, Protocol, Timestamp};
use connscope_fuzzkit::{config, joined, lines, mutated, random_bytes};
use connscope_protocol::batch::encode_body;
use connscope_protocol::DroppedReport;
use proptest::prelude::*;

const EVENTS_DOC: &str = include_str!("../../../docs/EVENTS.md");
const LIMIT: u64 = 64 * 1024;

const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"\"",
    b",",
    b"\n",
    b"\r\n",
    b"\n\n\n",
    b"null",
    b"\"sequence\":",
    b"\"@timestamp\":\"",
    b"\\u0000",
    b"\xff",
    b"\xef\xbb\xbf",
];

fn events() -> Vec<ConnectionEvent> {
    (1..=4u64)
        .map(|seq| {
            let mut ev = ConnectionEvent::new(
                if seq % 2 == 0 {
                    EventKind::Disconnect
                } else {
                    EventKind::Connect
                },
                Timestamp::from_nanos(1_764_000_000_000_000_000 + seq as i64),
                Protocol::Tcp,
                Direction::Outgoing,
                "10.0.0.1:40000".parse().unwrap(),
                "10.0.0.2:22".parse().unwrap(),
            );
            ev.sequence = seq;
            ev.host = "agent1".into();
            ev.process = Some(Arc::new(ProcessInfo {
                pid: 99,
                executable: Some("/usr/bin/ssh".into()),
                ..ProcessInfo::default()
            }));
            ev
        })
        .collect()
}

fn line_corpus() -> Vec<Vec<u8>> {
    let mut corpus: Vec<Vec<u8>> = lines(EVENTS_DOC)
        .into_iter()
        .filter(|l| l.starts_with(b"{\"@timestamp\""))
        .collect();
    corpus.extend(events().iter().map(|e| to_json_line(e).into_bytes()));
    corpus
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

fn decode(body: &[u8], encoding: Option<&str>) {
    match decode_batch(body, encoding, LIMIT) {
        Ok((events, size)) => {
            assert!(size <= LIMIT);
            assert!(!events.is_empty());
            for event in &events {
                event.validate().unwrap();
            }
        }
        Err(BatchError::Line { line, reason }) => {
            assert!(line >= 1, "line 0: {reason}");
            assert!(!reason.is_empty());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

#[test]
fn real_batches_decode() {
    let body = encode_body(&events());
    assert_eq!(
        decode_batch(&body, Some("gzip"), LIMIT).unwrap().0,
        events()
    );
    for line in line_corpus() {
        decode(&gzip(&line), Some("gzip"));
        assert!(decode_batch(&line, None, LIMIT).is_ok());
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn batches_of_mutated_lines_never_panic(text in joined(mutated(line_corpus(), TOKENS), 6, b"\n")) {
        decode(&gzip(&text), Some("gzip"));
        decode(&text, None);
    }

    #[test]
    fn mutated_gzip_bodies_never_panic(
        body in mutated(vec![encode_body(&events()), encode_body(&events()[..1])], &[b"\x1f\x8b\x08\x00", b"\x00\x00\x00\x00", b"\xff\xff"]),
    ) {
        decode(&body, Some("gzip"));
    }

    #[test]
    fn random_bodies_and_encodings_never_panic(
        body in random_bytes(600),
        encoding in proptest::option::of("(gzip|GZIP| gzip |identity|br|deflate|x-gzip|)"),
    ) {
        decode(&body, encoding.as_deref());
    }

    #[test]
    fn dropped_reports_never_panic(body in prop_oneof![
        mutated(vec![br#"{"events":3,"ranges":[[1,2],[5,5]]}"#.to_vec()], TOKENS),
        random_bytes(100),
    ]) {
        let _ = serde_json::from_slice::<DroppedReport>(&body);
    }
}
