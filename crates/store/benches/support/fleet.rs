//! A fleet's day of connection events, generated: the input of the store's
//! ingest bench and of connscope-query's graph bench (which includes this
//! file), so both measure the same workload.

use std::sync::Arc;

use connscope_event::{
    CloseStats, ConnectionEvent, Direction, EventKind, ProcessInfo, Protocol, Timestamp,
};

/// Events per ingest call.
pub const BATCH: usize = 5_000;
pub const DAY_NS: i64 = 86_400 * 1_000_000_000;
/// The day's start.
pub const START_NS: i64 = 1_800_000_000 * 1_000_000_000;

/// A fleet's day: 100 hosts, each talking to a few dozen services with a
/// handful of programs; every third event a disconnect with bytes.
pub fn events_for(
    host: usize,
    from_seq: u64,
    count: usize,
    total_per_host: u64,
) -> Vec<ConnectionEvent> {
    (0..count as u64)
        .map(|i| {
            let seq = from_seq + i;
            let t = START_NS + (seq as i64 * (DAY_NS / total_per_host as i64));
            let service = (seq.wrapping_mul(2654435761) % 40) as u8;
            let incoming = service % 7 == 0;
            let port = [22u16, 80, 443, 5432, 6379, 8080, 53, 25][usize::from(service % 8)];
            let me = format!(
                "10.{}.{}.1:{}",
                host / 250,
                host % 250,
                if incoming {
                    port
                } else {
                    32768 + (seq % 28000) as u16
                }
            );
            let peer = format!(
                "10.200.{}.{}:{}",
                service,
                service % 3,
                if incoming {
                    32768 + (seq % 28000) as u16
                } else {
                    port
                }
            );
            let kind = if seq % 3 == 0 {
                EventKind::Disconnect
            } else {
                EventKind::Connect
            };
            let mut ev = ConnectionEvent::new(
                kind,
                Timestamp::from_nanos(t),
                Protocol::Tcp,
                if incoming {
                    Direction::Incoming
                } else {
                    Direction::Outgoing
                },
                me.parse().unwrap(),
                peer.parse().unwrap(),
            );
            ev.sequence = seq;
            ev.host = format!("host{host:03}");
            ev.uid = Some(1000 + u32::from(service % 3));
            ev.user_name = Some(format!("user{}", service % 3));
            ev.process = Some(Arc::new(ProcessInfo {
                pid: 1000 + (seq % 50) as u32,
                executable: Some(format!("/usr/bin/prog{}", service % 5)),
                comm: Some(format!("prog{}", service % 5)),
                ..ProcessInfo::default()
            }));
            if kind == EventKind::Disconnect {
                ev.close = Some(CloseStats {
                    duration_ns: 1_000_000,
                    bytes_sent: 1000 + seq % 999,
                    bytes_received: 5000,
                    ..CloseStats::default()
                });
            }
            ev
        })
        .collect()
}
