//! Raw events packed into blocks: one stored row per batch of one host's
//! events instead of one row per event.
//!
//! Why: a row of 26 columns plus a time-index entry per event cost SQLite
//! about 4 µs, which held ingest (and the tcpspy import) near 250,000 events/s
//! however fast everything else was. A block costs one row per batch; inside
//! it the events are encoded here, in Rust, in ~20–30 bytes each instead of
//! ~200: varints, timestamps and sequence numbers as differences from the
//! previous event, and every string (executable, user, cgroup, ...) and address
//! stored once per block and referred to by index.
//!
//! Raw events are read rarely (the map and the reports read rollups), and by
//! time: a block row carries its first and last timestamp, so a read decodes
//! only the blocks that overlap its range.
//!
//! Layout (all integers LEB128 varints unless said otherwise):
//! `version (byte, 1)`, `string count`, strings (`length`, UTF-8 bytes),
//! `address count`, addresses (`4` or `6` byte, then 4 or 16 bytes),
//! `event count`, events. An event: two flag bytes (see [`Flags`]),
//! timestamp, sequence and netns as zigzag differences from the previous
//! event's, local and remote (address index, port), then, as the flags say,
//! the process (pid and four optional string references: executable, comm,
//! command line, cgroup; a reference is 0 for none or index + 1), the uid,
//! the user name reference, and the close statistics.
//!
//! Decoding trusts nothing: a damaged block is an error naming what is
//! wrong, never a panic or a wrong event.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use connscope_event::{
    normalize_endpoints, CloseStats, ConnectFailure, ConnectionEvent, Direction, EventKind,
    NameSource, ProcessInfo, Protocol, RemoteName, Timestamp,
};

use crate::{ConnectionRecord, TimeRange};

const VERSION: u8 = 1;

/// A block that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("damaged event block at byte {offset}: {problem}")]
pub struct BlockError {
    pub offset: usize,
    pub problem: &'static str,
}

/// Collects the events of one block. Strings are borrowed from the events
/// until [`BlockEncoder::finish`], so encoding allocates only the output.
#[derive(Default)]
pub struct BlockEncoder<'a> {
    strings: HashMap<&'a str, u64>,
    string_order: Vec<&'a str>,
    addresses: HashMap<IpAddr, u64>,
    address_order: Vec<IpAddr>,
    body: Vec<u8>,
    count: u64,
    previous_ts: i64,
    previous_sequence: u64,
    previous_netns: u64,
    first_ts: i64,
    last_ts: i64,
    firewall_hits: u64,
}

impl<'a> BlockEncoder<'a> {
    pub fn len(&self) -> u64 {
        self.count
    }

    /// How many of the events added are firewall hits.
    pub fn firewall_hits(&self) -> u64 {
        self.firewall_hits
    }

    /// The earliest and latest timestamps added, in nanoseconds.
    pub fn span(&self) -> (i64, i64) {
        (self.first_ts, self.last_ts)
    }

    /// Adds `event`; its host is not stored (a block belongs to one host).
    pub fn push(&mut self, event: &'a ConnectionEvent) {
        let ts = event.timestamp.as_nanos();
        if self.count == 0 {
            (self.first_ts, self.last_ts) = (ts, ts);
        } else {
            self.first_ts = self.first_ts.min(ts);
            self.last_ts = self.last_ts.max(ts);
        }
        self.count += 1;
        self.firewall_hits += u64::from(crate::is_firewall_hit(event.kind));
        let flags = Flags::of(event);
        self.body.extend_from_slice(&flags.0);
        put_signed(&mut self.body, ts.wrapping_sub(self.previous_ts));
        self.previous_ts = ts;
        put_signed(
            &mut self.body,
            event.sequence.wrapping_sub(self.previous_sequence) as i64,
        );
        self.previous_sequence = event.sequence;
        put_signed(
            &mut self.body,
            event.netns.wrapping_sub(self.previous_netns) as i64,
        );
        self.previous_netns = event.netns;
        for end in [event.local, event.remote] {
            let index = self.address(end.ip());
            put(&mut self.body, index);
            put(&mut self.body, u64::from(end.port()));
        }
        if let Some(p) = &event.process {
            put(&mut self.body, u64::from(p.pid));
            for s in [&p.executable, &p.comm, &p.command_line, &p.cgroup] {
                let reference = self.reference(s.as_deref());
                put(&mut self.body, reference);
            }
        }
        if let Some(uid) = event.uid {
            put(&mut self.body, u64::from(uid));
        }
        let user = self.reference(event.user_name.as_deref());
        put(&mut self.body, user);
        if let Some(c) = &event.close {
            for n in [c.duration_ns, c.bytes_sent, c.bytes_received] {
                put(&mut self.body, n);
            }
            for n in [c.packets_sent, c.packets_received].into_iter().flatten() {
                put(&mut self.body, n);
            }
        }
        if let Some(named) = &event.remote_name {
            let name = self.reference(Some(&named.name));
            put(&mut self.body, name);
        }
    }

    fn reference(&mut self, s: Option<&'a str>) -> u64 {
        let Some(s) = s else { return 0 };
        let next = self.string_order.len() as u64;
        let index = *self.strings.entry(s).or_insert(next);
        if index == next {
            self.string_order.push(s);
        }
        index + 1
    }

    fn address(&mut self, ip: IpAddr) -> u64 {
        let next = self.address_order.len() as u64;
        let index = *self.addresses.entry(ip).or_insert(next);
        if index == next {
            self.address_order.push(ip);
        }
        index
    }

    /// The encoded block.
    pub fn finish(self) -> Vec<u8> {
        let strings: usize = self.string_order.iter().map(|s| s.len() + 2).sum();
        let mut out =
            Vec::with_capacity(16 + strings + 17 * self.address_order.len() + self.body.len());
        out.push(VERSION);
        put(&mut out, self.string_order.len() as u64);
        for s in &self.string_order {
            put(&mut out, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        put(&mut out, self.address_order.len() as u64);
        for ip in &self.address_order {
            match ip {
                IpAddr::V4(v4) => {
                    out.push(4);
                    out.extend_from_slice(&v4.octets());
                }
                IpAddr::V6(v6) => {
                    out.push(6);
                    out.extend_from_slice(&v6.octets());
                }
            }
        }
        put(&mut out, self.count);
        out.extend_from_slice(&self.body);
        out
    }
}

/// Decodes a block written by [`BlockEncoder`], giving every event `host`.
pub fn decode(data: &[u8], host: &str) -> Result<Vec<ConnectionEvent>, BlockError> {
    let mut r = Reader { data, at: 0 };
    let (strings, addresses) = header(&mut r)?;
    let count = r.count()?;
    let mut events = Vec::with_capacity(count);
    let (mut ts, mut sequence, mut netns) = (0i64, 0u64, 0u64);
    for _ in 0..count {
        let at = r.at;
        let flags = Flags([r.byte()?, r.byte()?]);
        let (kind, protocol, direction, failure) = flags.decode().map_err(|p| r.error(at, p))?;
        ts = ts.wrapping_add(r.signed()?);
        sequence = sequence.wrapping_add(r.signed()? as u64);
        netns = netns.wrapping_add(r.signed()? as u64);
        let ends = r.ends(&addresses)?;
        let string = |r: &mut Reader<'_>| -> Result<Option<String>, BlockError> {
            Ok(r.string(&strings)?.map(str::to_owned))
        };
        let process = if flags.has(Flags::PROCESS) {
            let at = r.at;
            let pid =
                u32::try_from(r.varint()?).map_err(|_| r.error(at, "a pid is beyond 2^32"))?;
            Some(Arc::new(ProcessInfo {
                pid,
                executable: string(&mut r)?,
                comm: string(&mut r)?,
                command_line: string(&mut r)?,
                cgroup: string(&mut r)?,
            }))
        } else {
            None
        };
        let uid = if flags.has(Flags::UID) {
            let at = r.at;
            Some(u32::try_from(r.varint()?).map_err(|_| r.error(at, "a uid is beyond 2^32"))?)
        } else {
            None
        };
        let user_name = string(&mut r)?;
        let close = if flags.has(Flags::CLOSE) {
            let (duration_ns, bytes_sent, bytes_received) = (r.varint()?, r.varint()?, r.varint()?);
            let packets_sent = flags
                .has(Flags::PACKETS_SENT)
                .then(|| r.varint())
                .transpose()?;
            let packets_received = flags
                .has(Flags::PACKETS_RECEIVED)
                .then(|| r.varint())
                .transpose()?;
            Some(CloseStats {
                duration_ns,
                bytes_sent,
                bytes_received,
                packets_sent,
                packets_received,
            })
        } else {
            None
        };
        let remote_name = if flags.has(Flags::NAMED) {
            let at = r.at;
            let name = r
                .string(&strings)?
                .ok_or_else(|| r.error(at, "a named event without its name"))?;
            Some(RemoteName {
                name: name.to_owned(),
                source: if flags.has(Flags::NAMED_BY_SNI) {
                    NameSource::Sni
                } else {
                    NameSource::Dns
                },
            })
        } else {
            None
        };
        events.push(ConnectionEvent {
            kind,
            timestamp: Timestamp::from_nanos(ts),
            sequence,
            host: host.to_owned(),
            netns,
            protocol,
            direction,
            local: ends[0],
            remote: ends[1],
            process,
            uid,
            user_name,
            close,
            failure,
            preexisting: flags.has(Flags::PREEXISTING),
            remote_name,
        });
    }
    if r.at != data.len() {
        return Err(r.error(r.at, "bytes after the last event"));
    }
    Ok(events)
}

/// The `connect` events of a block written by [`BlockEncoder`] whose time
/// `range` contains, each given to `each`: the fields a join needs, read
/// without building whole events (no strings are copied). A damaged block
/// may have given some before the error.
pub fn connects(
    data: &[u8],
    range: TimeRange,
    each: &mut dyn FnMut(&ConnectionRecord),
) -> Result<(), BlockError> {
    let mut r = Reader { data, at: 0 };
    let (strings, addresses) = header(&mut r)?;
    let count = r.count()?;
    let mut ts = 0i64;
    for _ in 0..count {
        let at = r.at;
        let flags = Flags([r.byte()?, r.byte()?]);
        let (kind, protocol, direction, _) = flags.decode().map_err(|p| r.error(at, p))?;
        ts = ts.wrapping_add(r.signed()?);
        r.signed()?; // sequence
        r.signed()?; // netns
        let [local, remote] = r.ends(&addresses)?;
        if flags.has(Flags::PROCESS) {
            r.varint()?; // pid
            for _ in 0..4 {
                r.string(&strings)?;
            }
        }
        if flags.has(Flags::UID) {
            r.varint()?;
        }
        r.string(&strings)?;
        if flags.has(Flags::CLOSE) {
            let packets = [Flags::PACKETS_SENT, Flags::PACKETS_RECEIVED]
                .into_iter()
                .filter(|&bit| flags.has(bit))
                .count();
            for _ in 0..3 + packets {
                r.varint()?;
            }
        }
        if flags.has(Flags::NAMED) {
            r.string(&strings)?;
        }
        let timestamp = Timestamp::from_nanos(ts);
        if kind == EventKind::Connect && range.contains(timestamp) {
            each(&ConnectionRecord {
                timestamp,
                direction,
                protocol,
                local,
                remote,
            });
        }
    }
    if r.at != data.len() {
        return Err(r.error(r.at, "bytes after the last event"));
    }
    Ok(())
}

/// A block's version, strings and addresses.
fn header<'a>(r: &mut Reader<'a>) -> Result<(Vec<&'a str>, Vec<IpAddr>), BlockError> {
    if r.byte()? != VERSION {
        return Err(r.error(0, "unknown block version"));
    }
    let n_strings = r.count()?;
    let mut strings = Vec::with_capacity(n_strings);
    for _ in 0..n_strings {
        let len = r.count()?;
        let start = r.at;
        let bytes = r.take(len)?;
        let s = std::str::from_utf8(bytes).map_err(|_| BlockError {
            offset: start,
            problem: "a string is not UTF-8",
        })?;
        strings.push(s);
    }
    let n_addresses = r.count()?;
    let mut addresses = Vec::with_capacity(n_addresses);
    for _ in 0..n_addresses {
        let at = r.at;
        addresses.push(match r.byte()? {
            4 => IpAddr::V4(Ipv4Addr::from(
                <[u8; 4]>::try_from(r.take(4)?).expect("4 bytes"),
            )),
            6 => IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(r.take(16)?).expect("16 bytes"),
            )),
            _ => return Err(r.error(at, "an address is neither IPv4 nor IPv6")),
        });
    }
    Ok((strings, addresses))
}

/// An event's enums, from its flags.
type Decoded = (EventKind, Protocol, Direction, Option<ConnectFailure>);

/// The two flag bytes of an event: its enums and which optional parts follow.
/// First byte: kind (bits 0–1, and 7 for a blocked hit), protocol (2), direction (3–4),
/// failure (5–6).
/// Second byte: the presence bits below.
#[derive(Clone, Copy)]
struct Flags([u8; 2]);

impl Flags {
    const PROCESS: u8 = 1;
    const UID: u8 = 1 << 1;
    const CLOSE: u8 = 1 << 2;
    const PACKETS_SENT: u8 = 1 << 3;
    const PACKETS_RECEIVED: u8 = 1 << 4;
    const PREEXISTING: u8 = 1 << 5;
    const NAMED: u8 = 1 << 6;
    const NAMED_BY_SNI: u8 = 1 << 7;
    /// First byte: a firewall hit (kind 3) that was dropped, not only logged.
    /// Failures use bits 5–6 only, so the bit was never set before.
    const BLOCKED: u8 = 1 << 7;

    fn of(e: &ConnectionEvent) -> Flags {
        let kind = match e.kind {
            EventKind::Connect => 0,
            EventKind::Disconnect => 1,
            EventKind::ConnectFailed => 2,
            EventKind::WouldBlock => 3,
            EventKind::Blocked => 3 | Self::BLOCKED,
        };
        let protocol = match e.protocol {
            Protocol::Tcp => 0,
            Protocol::Udp => 1,
        };
        let direction = match e.direction {
            Direction::Outgoing => 0,
            Direction::Incoming => 1,
            Direction::Unknown => 2,
        };
        let failure = match e.failure {
            None => 0,
            Some(ConnectFailure::Refused) => 1,
            Some(ConnectFailure::Timeout) => 2,
            Some(ConnectFailure::Other) => 3,
        };
        let close = e.close.as_ref();
        let present = [
            (e.process.is_some(), Self::PROCESS),
            (e.uid.is_some(), Self::UID),
            (close.is_some(), Self::CLOSE),
            (
                close.is_some_and(|c| c.packets_sent.is_some()),
                Self::PACKETS_SENT,
            ),
            (
                close.is_some_and(|c| c.packets_received.is_some()),
                Self::PACKETS_RECEIVED,
            ),
            (e.preexisting, Self::PREEXISTING),
            (e.remote_name.is_some(), Self::NAMED),
            (
                e.remote_name
                    .as_ref()
                    .is_some_and(|n| n.source == NameSource::Sni),
                Self::NAMED_BY_SNI,
            ),
        ]
        .iter()
        .filter(|(set, _)| *set)
        .fold(0, |bits, (_, bit)| bits | bit);
        Flags([
            kind | protocol << 2 | direction << 3 | failure << 5,
            present,
        ])
    }

    fn has(self, bit: u8) -> bool {
        self.0[1] & bit != 0
    }

    fn decode(self) -> Result<Decoded, &'static str> {
        let b = self.0[0];
        let kind = match (b & 3, b & Self::BLOCKED != 0) {
            (0, false) => EventKind::Connect,
            (1, false) => EventKind::Disconnect,
            (2, false) => EventKind::ConnectFailed,
            (3, false) => EventKind::WouldBlock,
            (3, true) => EventKind::Blocked,
            _ => return Err("unknown event kind"),
        };
        let protocol = if b & 4 == 0 {
            Protocol::Tcp
        } else {
            Protocol::Udp
        };
        let direction = match (b >> 3) & 3 {
            0 => Direction::Outgoing,
            1 => Direction::Incoming,
            2 => Direction::Unknown,
            _ => return Err("unknown direction"),
        };
        let failure = match (b >> 5) & 3 {
            0 => None,
            1 => Some(ConnectFailure::Refused),
            2 => Some(ConnectFailure::Timeout),
            3 => Some(ConnectFailure::Other),
            _ => return Err("unknown failure"),
        };
        if self.0[1] & (Self::NAMED | Self::NAMED_BY_SNI) == Self::NAMED_BY_SNI {
            return Err("a name source without a name");
        }
        Ok((kind, protocol, direction, failure))
    }
}

fn put(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_signed(out: &mut Vec<u8>, n: i64) {
    put(out, ((n << 1) ^ (n >> 63)) as u64);
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn error(&self, offset: usize, problem: &'static str) -> BlockError {
        BlockError { offset, problem }
    }

    fn byte(&mut self) -> Result<u8, BlockError> {
        let b = *self
            .data
            .get(self.at)
            .ok_or_else(|| self.error(self.at, "the block ends early"))?;
        self.at += 1;
        Ok(b)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], BlockError> {
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.data.len())
            .ok_or_else(|| self.error(self.at, "the block ends early"))?;
        let bytes = &self.data[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn varint(&mut self) -> Result<u64, BlockError> {
        let start = self.at;
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                break;
            }
            n |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(self.error(start, "a number is longer than 64 bits"))
    }

    /// An event's local and remote end.
    fn ends(&mut self, addresses: &[IpAddr]) -> Result<[SocketAddr; 2], BlockError> {
        let mut ends = [SocketAddr::from(([0, 0, 0, 0], 0)); 2];
        for end in &mut ends {
            let at = self.at;
            let ip = *usize::try_from(self.varint()?)
                .ok()
                .and_then(|i| addresses.get(i))
                .ok_or_else(|| self.error(at, "an address index is out of range"))?;
            let at = self.at;
            let port = u16::try_from(self.varint()?)
                .map_err(|_| self.error(at, "a port is beyond 65535"))?;
            *end = SocketAddr::new(ip, port);
        }
        // Normalised on the way out: blocks written before the normalisation
        // at the edge may hold IPv4-mapped or `::` pairs.
        let (local, remote) = normalize_endpoints(ends[0], ends[1]);
        Ok([local, remote])
    }

    /// A string reference: 0 for none, else index + 1.
    fn string<'s>(&mut self, strings: &[&'s str]) -> Result<Option<&'s str>, BlockError> {
        let at = self.at;
        match self.varint()? {
            0 => Ok(None),
            n => usize::try_from(n - 1)
                .ok()
                .and_then(|i| strings.get(i))
                .map(|s| Some(*s))
                .ok_or_else(|| self.error(at, "a string index is out of range")),
        }
    }

    fn signed(&mut self) -> Result<i64, BlockError> {
        let n = self.varint()?;
        Ok((n >> 1) as i64 ^ -((n & 1) as i64))
    }

    /// A length or count: it cannot exceed the bytes left, which keeps a
    /// damaged count from reserving huge amounts of memory.
    fn count(&mut self) -> Result<usize, BlockError> {
        let at = self.at;
        usize::try_from(self.varint()?)
            .ok()
            .filter(|&n| n <= self.data.len() - self.at)
            .ok_or_else(|| self.error(at, "a count is larger than the block"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<ConnectionEvent> {
        let mut connect = ConnectionEvent::new(
            EventKind::Connect,
            Timestamp::from_nanos(1_800_000_000_000_000_000),
            Protocol::Tcp,
            Direction::Outgoing,
            "10.0.0.1:40000".parse().unwrap(),
            "10.0.0.2:22".parse().unwrap(),
        );
        connect.host = "ws1".into();
        connect.sequence = 7;
        connect.netns = 4_026_531_840;
        connect.process = Some(Arc::new(ProcessInfo {
            pid: 4242,
            executable: Some("/usr/bin/ssh".into()),
            comm: Some("ssh".into()),
            command_line: Some("ssh srv".into()),
            cgroup: None,
        }));
        connect.uid = Some(1000);
        connect.user_name = Some("joe".into());
        let mut close = connect.clone();
        close.kind = EventKind::Disconnect;
        close.sequence = 9;
        close.timestamp = Timestamp::from_nanos(connect.timestamp.as_nanos() - 5);
        close.close = Some(CloseStats {
            duration_ns: 5,
            bytes_sent: u64::MAX,
            bytes_received: 0,
            packets_sent: Some(3),
            packets_received: None,
        });
        let mut failed = ConnectionEvent::new(
            EventKind::ConnectFailed,
            Timestamp::from_nanos(i64::MIN),
            Protocol::Udp,
            Direction::Unknown,
            "[2001:db8::1]:53".parse().unwrap(),
            "[::1]:0".parse().unwrap(),
        );
        failed.host = "ws1".into();
        failed.failure = Some(ConnectFailure::Timeout);
        failed.preexisting = true;
        vec![connect, close, failed]
    }

    fn encode(events: &[ConnectionEvent]) -> Vec<u8> {
        let mut block = BlockEncoder::default();
        for e in events {
            block.push(e);
        }
        block.finish()
    }

    #[test]
    fn events_come_back_as_they_went_in() {
        let events = sample();
        let data = encode(&events);
        assert_eq!(decode(&data, "ws1").unwrap(), events);
        let mut block = BlockEncoder::default();
        events.iter().for_each(|e| block.push(e));
        assert_eq!(
            block.span(),
            (i64::MIN, 1_800_000_000_000_000_000),
            "first and last by time, not by order"
        );
    }

    #[test]
    fn hostile_names_come_back_byte_for_byte() {
        let mut events = sample();
        let hostile = [
            ("<img src=x onerror=alert(1)>.example", NameSource::Dns),
            ("a\"; flush ruleset; \"\u{7}\n.example", NameSource::Sni),
            ("bücher.example", NameSource::Dns),
        ];
        for (event, (name, source)) in events.iter_mut().zip(hostile) {
            event.remote_name = Some(RemoteName {
                name: name.into(),
                source,
            });
        }
        assert_eq!(decode(&encode(&events), "ws1").unwrap(), events);
        // A name shared by events is stored once, like every string.
        events[1].remote_name = events[0].remote_name.clone();
        let shared = encode(&events);
        events[1].remote_name = Some(RemoteName {
            name: "<img src=x onerror=alert(2)>.example".into(),
            source: NameSource::Dns,
        });
        assert!(shared.len() + 30 < encode(&events).len());
    }

    #[test]
    fn a_block_written_before_names_reads_as_unnamed() {
        // One connect (ssh, uid 1000, joe) as the build before names wrote it.
        let old: &[u8] = &[
            1, 3, 12, 47, 117, 115, 114, 47, 98, 105, 110, 47, 115, 115, 104, 3, 115, 115, 104, 3,
            106, 111, 101, 2, 4, 10, 0, 0, 1, 4, 10, 0, 0, 2, 1, 0, 3, 128, 128, 160, 187, 210,
            157, 241, 250, 49, 14, 0, 0, 192, 184, 2, 1, 22, 146, 33, 1, 2, 0, 0, 232, 7, 3,
        ];
        let mut want = sample()[0].clone();
        Arc::make_mut(want.process.as_mut().unwrap()).command_line = None;
        want.netns = 0;
        let events = decode(old, "ws1").unwrap();
        assert_eq!(events, vec![want.clone()]);
        assert_eq!(events[0].remote_name, None);
        assert_eq!(encode(&events), old, "unnamed events are written as before");
    }

    #[test]
    fn strings_and_addresses_are_stored_once() {
        let one = encode(&sample()[..1]);
        let mut many = sample()[..1].to_vec();
        many.extend(std::iter::repeat_n(sample()[0].clone(), 99));
        let hundred = encode(&many);
        // Each repeat costs its flags, numbers and references (~20 bytes),
        // not its 30 bytes of strings and addresses again.
        assert!(
            hundred.len() < one.len() + 99 * 21,
            "{} bytes",
            hundred.len()
        );
    }

    #[test]
    fn damage_anywhere_is_an_error_never_a_panic() {
        let data = encode(&sample());
        for cut in 0..data.len() {
            let err = decode(&data[..cut], "ws1").unwrap_err();
            assert!(err.offset <= cut, "{err} at cut {cut}");
        }
        let mut longer = data.clone();
        longer.push(0);
        assert_eq!(
            decode(&longer, "ws1").unwrap_err().problem,
            "bytes after the last event"
        );
        for i in 0..data.len() {
            for bits in [0x01, 0x80, 0xff] {
                let mut bad = data.clone();
                bad[i] ^= bits;
                let _ = decode(&bad, "ws1");
            }
        }
        let mut version = data;
        version[0] = 2;
        assert_eq!(
            decode(&version, "ws1").unwrap_err().to_string(),
            "damaged event block at byte 0: unknown block version"
        );
    }

    fn arb_event() -> impl Strategy<Value = ConnectionEvent> {
        let text = proptest::option::of("[a-z/ ]{0,12}");
        (
            (
                0u8..5,
                any::<bool>(),
                0u8..3,
                any::<i64>(),
                any::<u64>(),
                any::<u64>(),
            ),
            (any::<bool>(), any::<[u8; 16]>(), any::<u16>(), any::<u16>()),
            proptest::option::of((
                any::<u32>(),
                text.clone(),
                text.clone(),
                text.clone(),
                text.clone(),
            )),
            (proptest::option::of(any::<u32>()), text),
            (
                any::<[u64; 3]>(),
                proptest::option::of(any::<u64>()),
                proptest::option::of(any::<u64>()),
            ),
            (
                0u8..3,
                any::<bool>(),
                proptest::option::of(("\\PC{1,20}", any::<bool>())),
            ),
        )
            .prop_map(|(basics, ends, process, user, close, rest)| {
                let (kind, udp, direction, ts, sequence, netns) = basics;
                let kind = [
                    EventKind::Connect,
                    EventKind::Disconnect,
                    EventKind::ConnectFailed,
                    EventKind::WouldBlock,
                    EventKind::Blocked,
                ][kind as usize];
                let (v6, bytes, lport, rport) = ends;
                let ip = |salt: u8| -> IpAddr {
                    let mut b = bytes;
                    b[0] ^= salt;
                    if v6 {
                        IpAddr::from(b)
                    } else {
                        IpAddr::from([b[0], b[1], b[2], b[3]])
                    }
                };
                let mut e = ConnectionEvent::new(
                    kind,
                    Timestamp::from_nanos(ts),
                    if udp { Protocol::Udp } else { Protocol::Tcp },
                    [Direction::Outgoing, Direction::Incoming, Direction::Unknown]
                        [direction as usize],
                    SocketAddr::new(ip(0), lport),
                    SocketAddr::new(ip(1), rport),
                );
                e.host = "h".into();
                e.sequence = sequence;
                e.netns = netns;
                e.process = process.map(|(pid, executable, comm, command_line, cgroup)| {
                    Arc::new(ProcessInfo {
                        pid,
                        executable,
                        comm,
                        command_line,
                        cgroup,
                    })
                });
                (e.uid, e.user_name) = user;
                let ([duration_ns, bytes_sent, bytes_received], packets_sent, packets_received) =
                    close;
                if kind == EventKind::Disconnect {
                    e.close = Some(CloseStats {
                        duration_ns,
                        bytes_sent,
                        bytes_received,
                        packets_sent,
                        packets_received,
                    });
                }
                let (failure, preexisting, named) = rest;
                e.remote_name = named.map(|(name, sni)| RemoteName {
                    name,
                    source: if sni {
                        NameSource::Sni
                    } else {
                        NameSource::Dns
                    },
                });
                if kind == EventKind::ConnectFailed {
                    e.failure = Some(
                        [
                            ConnectFailure::Refused,
                            ConnectFailure::Timeout,
                            ConnectFailure::Other,
                        ][failure as usize],
                    );
                }
                e.preexisting = preexisting;
                e
            })
    }

    proptest! {
        #[test]
        fn any_events_round_trip(events in proptest::collection::vec(arb_event(), 0..20)) {
            prop_assert_eq!(decode(&encode(&events), "h").unwrap(), events);
        }

        #[test]
        fn connects_are_the_decoded_connect_events_in_range(
            events in proptest::collection::vec(arb_event(), 0..20),
            from in any::<i64>(),
            to in any::<i64>(),
        ) {
            let range = TimeRange { from: Timestamp::from_nanos(from), to: Timestamp::from_nanos(to) };
            let want: Vec<ConnectionRecord> = events
                .iter()
                .filter(|e| e.kind == EventKind::Connect && range.contains(e.timestamp))
                .map(|e| ConnectionRecord {
                    timestamp: e.timestamp,
                    direction: e.direction,
                    protocol: e.protocol,
                    local: e.local,
                    remote: e.remote,
                })
                .collect();
            let mut got = Vec::new();
            connects(&encode(&events), range, &mut |c| got.push(*c)).unwrap();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn damaged_connects_are_an_error_never_a_panic() {
        let data = encode(&sample());
        for cut in 0..data.len() {
            assert!(connects(&data[..cut], TimeRange::ALL, &mut |_| {}).is_err());
        }
        for i in 0..data.len() {
            for bits in [0x01, 0x80, 0xff] {
                let mut bad = data.clone();
                bad[i] ^= bits;
                let _ = connects(&bad, TimeRange::ALL, &mut |_| {});
            }
        }
    }
}
