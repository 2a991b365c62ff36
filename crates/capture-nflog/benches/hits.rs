//! Hits per second through the NFLOG reader's own work, without the kernel:
//! datagrams laid out as `nfnetlink_log` sends them (one record each, as at
//! queue threshold 1) go through
//! - decode only (netlink attributes, IP and TCP headers): the floor;
//! - repeats: decode and the attempt table, for retransmissions of one
//!   attempt that is already reported (the common case under a block);
//! - new attempts, attributed: decode, the table, and the owner lookup in
//!   this namespace's `/proc/net/tcp{,6}` and `/proc/*/fd` for each, against
//!   `LISTENERS` real listening sockets of this process.
//!
//! Run: `cargo bench -p connscope-capture-nflog --bench hits` (as root, to
//! see every process's files). Prints a table.

use std::ffi::CString;
use std::hint::black_box;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use connscope_capture_nflog::capture::Processor;
use connscope_capture_nflog::decode::packets;
use connscope_capture_nflog::AttemptLimits;
use etherparse::PacketBuilder;
use netlink_packet_core::NetlinkMessage;
use netlink_packet_netfilter::nflog::{PacketNla, ULogMessage};
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};

const LISTENERS: usize = 64;
const ATTEMPTS: usize = 20_000;

/// One NFLOG record of an inbound SYN from `127.0.0.1:source` to `port`.
fn record(source: u16, port: u16) -> Vec<u8> {
    let builder = PacketBuilder::ipv4([127, 0, 0, 1], [127, 0, 0, 1], 64)
        .tcp(source, port, 1, 64240)
        .syn();
    let mut payload = Vec::with_capacity(builder.size(0));
    builder.write(&mut payload, &[]).unwrap();
    let mut message = NetlinkMessage::from(NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 7),
        ULogMessage::Packet(vec![
            PacketNla::Prefix(CString::new("connscope would-block input: ").unwrap()),
            PacketNla::Payload(payload),
        ]),
    ));
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

fn unlimited() -> AttemptLimits {
    AttemptLimits {
        quiet: Duration::from_secs(3600),
        max_new_per_second: u32::MAX,
        max_open: usize::MAX,
        max_attributed_per_second: u32::MAX,
    }
}

fn rate(records: usize, elapsed: Duration) -> f64 {
    records as f64 / elapsed.as_secs_f64()
}

fn main() {
    let listeners: Vec<TcpListener> = (0..LISTENERS)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let datagrams: Vec<Vec<u8>> = (0..ATTEMPTS)
        .map(|i| record(10_000 + (i / LISTENERS) as u16, ports[i % LISTENERS]))
        .collect();
    let netns = std::fs::metadata("/proc/thread-self/ns/net")
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();

    let start = Instant::now();
    let mut decoded = 0;
    for datagram in &datagrams {
        decoded += black_box(packets(datagram)).len();
    }
    let decode = start.elapsed();
    assert_eq!(decoded, ATTEMPTS);

    let mut processor = Processor::new(unlimited(), netns);
    let mut reports = Vec::new();
    processor.datagram(&datagrams[0], Instant::now(), &mut reports);
    let start = Instant::now();
    for _ in 0..ATTEMPTS {
        processor.datagram(&datagrams[0], Instant::now(), &mut reports);
    }
    let repeats = start.elapsed();
    assert_eq!(reports.len(), 1, "repeats are counted, not reported");

    let mut processor = Processor::new(unlimited(), netns);
    let mut reports = Vec::new();
    let start = Instant::now();
    for datagram in &datagrams {
        processor.datagram(datagram, Instant::now(), &mut reports);
    }
    let attributed = start.elapsed();
    let stats = processor.stats();
    assert_eq!(reports.len(), ATTEMPTS);
    assert_eq!(stats.attributed_process as usize, ATTEMPTS, "{stats:?}");

    println!("| path ({ATTEMPTS} records, {LISTENERS} listeners) | records/s | µs/record |");
    println!("|---|---:|---:|");
    for (name, elapsed) in [
        ("decode only", decode),
        ("repeat of a reported attempt", repeats),
        ("new attempt, attributed", attributed),
    ] {
        println!(
            "| {name} | {:.0} | {:.2} |",
            rate(ATTEMPTS, elapsed),
            elapsed.as_secs_f64() * 1e6 / ATTEMPTS as f64
        );
    }
    drop(listeners);
}
