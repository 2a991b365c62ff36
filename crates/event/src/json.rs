//! The versioned JSON Lines form of [`ConnectionEvent`] (schema in `docs/EVENTS.md`).
//!
//! The wire layout is nested the way Elastic Common Schema nests it
//! (`process.executable`, `user.name`, `network.direction`, ...), so the lines can
//! be shipped into an ECS-aware pipeline unchanged. It lives in its own structs,
//! separate from the in-memory model, so the model can change without breaking
//! the published schema.

use std::borrow::Cow;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::Deserialize;

use crate::{
    CloseStats, ConnectFailure, ConnectionEvent, Direction, EventKind, Family, InvalidEvent,
    NameSource, ProcessInfo, Protocol, RemoteName, Timestamp, SCHEMA_VERSION,
};

/// A JSON line that is not a valid connscope event.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("not a connscope event: {0}")]
    Syntax(#[from] serde_json::Error),
    #[error("field {field}: {reason}")]
    Field { field: &'static str, reason: String },
    #[error("schema version {0} is newer than this build understands ({SCHEMA_VERSION})")]
    FutureVersion(u32),
    #[error(transparent)]
    Invalid(#[from] InvalidEvent),
}

/// Serialises one event as a single JSON line (without the trailing newline).
pub fn to_json_line(event: &ConnectionEvent) -> String {
    let mut line = Vec::with_capacity(512);
    write_json_object(&mut line, event);
    String::from_utf8(line).expect("the writer only writes UTF-8")
}

/// Appends one event and a newline to `out`; the allocation-free path for writers.
pub fn write_json_line(out: &mut Vec<u8>, event: &ConnectionEvent) {
    write_json_object(out, event);
    out.push(b'\n');
}

/// The wire form written by hand: an agent writes every event it sees, and
/// going through serde and `fmt` (owned wire structs, every key escaped byte
/// by byte, numbers through formatters) was a fifth of its CPU time. It
/// writes exactly what serde writes for [`Wire`], field for field, which the
/// tests check against serde itself.
fn write_json_object(out: &mut Vec<u8>, ev: &ConnectionEvent) {
    let close = ev.close.as_ref();
    out.extend_from_slice(b"{\"@timestamp\":\"");
    json_timestamp(out, ev.timestamp);
    out.extend_from_slice(b"\",\"event\":{\"action\":");
    json_name(out, ev.kind.as_str());
    out.extend_from_slice(b",\"sequence\":");
    json_u64(out, ev.sequence);
    if let Some(c) = close {
        out.extend_from_slice(b",\"duration\":");
        json_u64(out, c.duration_ns);
    }
    if let Some(failure) = ev.failure {
        out.extend_from_slice(b",\"reason\":");
        json_name(out, failure.as_str());
    }
    out.extend_from_slice(b"},\"host\":{\"name\":");
    json_str(out, &ev.host);
    if ev.netns != 0 {
        out.extend_from_slice(b",\"netns\":");
        json_u64(out, ev.netns);
    }
    out.extend_from_slice(b"},\"network\":{\"transport\":");
    json_name(out, ev.protocol.as_str());
    out.extend_from_slice(b",\"type\":");
    json_name(out, ev.family().as_str());
    out.extend_from_slice(b",\"direction\":");
    json_name(out, ev.direction.as_str());
    out.extend_from_slice(b"},\"local\":");
    json_endpoint(
        out,
        ev.local,
        close.map(|c| c.bytes_sent),
        close.and_then(|c| c.packets_sent),
    );
    out.extend_from_slice(b",\"remote\":");
    json_endpoint(
        out,
        ev.remote,
        close.map(|c| c.bytes_received),
        close.and_then(|c| c.packets_received),
    );
    if let Some(named) = &ev.remote_name {
        // Inside the `remote` object: step back over its closing brace.
        out.pop();
        out.extend_from_slice(b",\"domain\":");
        json_str(out, &named.name);
        out.extend_from_slice(b",\"domain_source\":");
        json_name(out, named.source.as_str());
        out.push(b'}');
    }
    if let Some(p) = &ev.process {
        out.extend_from_slice(b",\"process\":{\"pid\":");
        json_u64(out, p.pid.into());
        for (key, value) in [
            (&b",\"executable\":"[..], &p.executable),
            (b",\"name\":", &p.comm),
            (b",\"command_line\":", &p.command_line),
            (b",\"cgroup\":", &p.cgroup),
        ] {
            if let Some(value) = value {
                out.extend_from_slice(key);
                json_str(out, value);
            }
        }
        out.push(b'}');
    }
    if ev.uid.is_some() || ev.user_name.is_some() {
        out.extend_from_slice(b",\"user\":{");
        if let Some(uid) = ev.uid {
            out.extend_from_slice(b"\"id\":");
            json_u64(out, uid.into());
        }
        if let Some(name) = &ev.user_name {
            if ev.uid.is_some() {
                out.push(b',');
            }
            out.extend_from_slice(b"\"name\":");
            json_str(out, name);
        }
        out.push(b'}');
    }
    out.extend_from_slice(b",\"connscope\":{\"version\":");
    json_u64(out, SCHEMA_VERSION.into());
    if ev.preexisting {
        out.extend_from_slice(b",\"preexisting\":true");
    }
    out.extend_from_slice(b"}}");
}

fn json_endpoint(out: &mut Vec<u8>, addr: SocketAddr, bytes: Option<u64>, packets: Option<u64>) {
    out.extend_from_slice(b"{\"ip\":\"");
    match addr.ip() {
        IpAddr::V4(ip) => {
            let [a, b, c, d] = ip.octets();
            for (i, octet) in [a, b, c, d].into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                json_u64(out, octet.into());
            }
        }
        // Compressed form, `::ffff:a.b.c.d` and all: std knows the rules.
        IpAddr::V6(ip) => {
            let _ = write!(out, "{ip}"); // writing to a Vec cannot fail
        }
    }
    out.extend_from_slice(b"\",\"port\":");
    json_u64(out, addr.port().into());
    if let Some(bytes) = bytes {
        out.extend_from_slice(b",\"bytes\":");
        json_u64(out, bytes);
    }
    if let Some(packets) = packets {
        out.extend_from_slice(b",\"packets\":");
        json_u64(out, packets);
    }
    out.push(b'}');
}

fn json_u64(out: &mut Vec<u8>, mut n: u64) {
    // Written straight into the vector's spare room: most numbers are a few
    // digits, and a copy call for each was a tenth of the writer's time.
    let digits = n.checked_ilog10().map_or(1, |log| log as usize + 1);
    out.reserve(digits);
    let spare = &mut out.spare_capacity_mut()[..digits];
    for slot in spare.iter_mut().rev() {
        slot.write(b'0' + (n % 10) as u8);
        n /= 10;
    }
    let len = out.len() + digits;
    // SAFETY: the `digits` bytes past the length were just written, and
    // `reserve` made room for them.
    unsafe { out.set_len(len) };
}

/// RFC 3339 in UTC with nanoseconds, as `Timestamp`'s `Display` writes it
/// (jiff's `{:.9}`). Every i64 of nanoseconds falls in years 1677 to 2262:
/// always four digits.
fn json_timestamp(out: &mut Vec<u8>, timestamp: Timestamp) {
    const NANOS_PER_DAY: i64 = 86_400 * 1_000_000_000;
    let nanos = timestamp.as_nanos();
    let (days, of_day) = (
        nanos.div_euclid(NANOS_PER_DAY),
        nanos.rem_euclid(NANOS_PER_DAY),
    );
    let (year, month, day) = civil_from_days(days);
    let seconds = of_day / 1_000_000_000;
    // Built whole on the stack and copied once: seven small copies of
    // varying length were as costly as the arithmetic.
    let mut text = *b"0000-00-00T00:00:00.000000000Z";
    for (value, end, width) in [
        (year, 4, 4),
        (month, 7, 2),
        (day, 10, 2),
        (seconds / 3600, 13, 2),
        (seconds / 60 % 60, 16, 2),
        (seconds % 60, 19, 2),
        (of_day % 1_000_000_000, 29, 9),
    ] {
        let mut value = value;
        for digit in text[end - width..end].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    out.extend_from_slice(&text);
}

/// Year, month, day of a day count since 1970-01-01 (proleptic Gregorian;
/// Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// One of the schema's own names (`connect`, `tcp`, ...): plain ASCII,
/// nothing to escape or check.
fn json_name(out: &mut Vec<u8>, name: &'static str) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.push(b'"');
}

/// A JSON string. Names and paths rarely need escaping: those are copied as
/// they are, the rest escaped by serde_json.
fn json_str(out: &mut Vec<u8>, text: &str) {
    // Every byte looked at, without stopping early: the compiler can then
    // check many at once.
    let plain = text.bytes().fold(true, |plain, b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if plain {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, text).expect("writing to a Vec cannot fail");
    }
}

/// Parses and validates one JSON line.
pub fn from_json_line(line: &str) -> Result<ConnectionEvent, JsonError> {
    let wire: Wire = serde_json::from_str(line)?;
    wire.into_event()
}

/// The wire form as serde reads it. Serialising it is the reference the hand
/// writer ([`write_json_object`]) is tested against; it borrows the event's
/// strings. Reading, it borrows the line's strings (`borrow`: serde's `Cow`
/// is otherwise always owned), so only what the event keeps is copied; a
/// string with escapes is owned.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct Wire<'a> {
    #[serde(rename = "@timestamp", borrow)]
    timestamp: Cow<'a, str>,
    #[serde(borrow)]
    event: WireEvent<'a>,
    #[serde(borrow)]
    host: WireHost<'a>,
    #[serde(borrow)]
    network: WireNetwork<'a>,
    #[serde(borrow)]
    local: WireEndpoint<'a>,
    #[serde(borrow)]
    remote: WireEndpoint<'a>,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    process: Option<WireProcess<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    user: Option<WireUser<'a>>,
    connscope: WireMeta,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct WireEvent<'a> {
    #[serde(borrow)]
    action: Cow<'a, str>,
    #[serde(default)]
    sequence: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct WireHost<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "is_zero")]
    netns: u64,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct WireNetwork<'a> {
    #[serde(borrow)]
    transport: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    family: Cow<'a, str>,
    #[serde(borrow)]
    direction: Cow<'a, str>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct WireEndpoint<'a> {
    ip: IpAddr,
    port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    packets: Option<u64>,
    /// Schema 1.1: the name the host learned for this end (remote only).
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    domain: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    domain_source: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct WireProcess<'a> {
    pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    executable: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    command_line: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    cgroup: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct WireUser<'a> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct WireMeta {
    version: u32,
    #[serde(default, skip_serializing_if = "is_false")]
    preexisting: bool,
}

#[cfg(test)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
fn is_false(b: &bool) -> bool {
    !*b
}

#[cfg(test)]
fn borrowed(text: &Option<String>) -> Option<Cow<'_, str>> {
    text.as_deref().map(Cow::Borrowed)
}

fn owned(text: Option<Cow<'_, str>>) -> Option<String> {
    text.map(Cow::into_owned)
}

#[cfg(test)]
impl<'a> From<&'a ConnectionEvent> for Wire<'a> {
    fn from(ev: &'a ConnectionEvent) -> Self {
        let close = ev.close.as_ref();
        Wire {
            timestamp: Cow::Owned(ev.timestamp.to_string()),
            event: WireEvent {
                action: Cow::Borrowed(ev.kind.as_str()),
                sequence: ev.sequence,
                duration: close.map(|c| c.duration_ns),
                reason: ev.failure.map(|f| Cow::Borrowed(f.as_str())),
            },
            host: WireHost {
                name: Cow::Borrowed(&ev.host),
                netns: ev.netns,
            },
            network: WireNetwork {
                transport: Cow::Borrowed(ev.protocol.as_str()),
                family: Cow::Borrowed(ev.family().as_str()),
                direction: Cow::Borrowed(ev.direction.as_str()),
            },
            local: WireEndpoint {
                ip: ev.local.ip(),
                port: ev.local.port(),
                bytes: close.map(|c| c.bytes_sent),
                packets: close.and_then(|c| c.packets_sent),
                domain: None,
                domain_source: None,
            },
            remote: WireEndpoint {
                ip: ev.remote.ip(),
                port: ev.remote.port(),
                bytes: close.map(|c| c.bytes_received),
                packets: close.and_then(|c| c.packets_received),
                domain: ev
                    .remote_name
                    .as_ref()
                    .map(|n| Cow::Borrowed(n.name.as_str())),
                domain_source: ev
                    .remote_name
                    .as_ref()
                    .map(|n| Cow::Borrowed(n.source.as_str())),
            },
            process: ev.process.as_ref().map(|p| WireProcess {
                pid: p.pid,
                executable: borrowed(&p.executable),
                name: borrowed(&p.comm),
                command_line: borrowed(&p.command_line),
                cgroup: borrowed(&p.cgroup),
            }),
            user: (ev.uid.is_some() || ev.user_name.is_some()).then(|| WireUser {
                id: ev.uid,
                name: borrowed(&ev.user_name),
            }),
            connscope: WireMeta {
                version: SCHEMA_VERSION,
                preexisting: ev.preexisting,
            },
        }
    }
}

fn field<T: std::str::FromStr>(field: &'static str, value: &str) -> Result<T, JsonError>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e: T::Err| JsonError::Field {
        field,
        reason: e.to_string(),
    })
}

impl Wire<'_> {
    fn into_event(self) -> Result<ConnectionEvent, JsonError> {
        if self.connscope.version > SCHEMA_VERSION {
            return Err(JsonError::FutureVersion(self.connscope.version));
        }
        let kind: EventKind = field("event.action", &self.event.action)?;
        let family: Family = field("network.type", &self.network.family)?;
        let close = match (kind, self.event.duration) {
            (EventKind::Disconnect, duration) => Some(CloseStats {
                duration_ns: duration.unwrap_or(0),
                bytes_sent: self.local.bytes.unwrap_or(0),
                bytes_received: self.remote.bytes.unwrap_or(0),
                packets_sent: self.local.packets,
                packets_received: self.remote.packets,
            }),
            (_, Some(_)) => {
                return Err(JsonError::Field {
                    field: "event.duration",
                    reason: format!("only a disconnect has a duration, not a {kind}"),
                })
            }
            (_, None) => None,
        };
        let failure = match (kind, self.event.reason.as_deref()) {
            (EventKind::ConnectFailed, Some(r)) => {
                Some(field::<ConnectFailure>("event.reason", r)?)
            }
            (EventKind::ConnectFailed, None) => Some(ConnectFailure::Other),
            (_, Some(_)) => {
                return Err(JsonError::Field {
                    field: "event.reason",
                    reason: format!("only a connect-failed event has a reason, not a {kind}"),
                })
            }
            (_, None) => None,
        };
        if self.local.domain.is_some() || self.local.domain_source.is_some() {
            return Err(JsonError::Field {
                field: "local.domain",
                reason: "only the remote end is named".into(),
            });
        }
        let remote_name = match (self.remote.domain, self.remote.domain_source) {
            (Some(name), Some(source)) => Some(RemoteName {
                name: name.into_owned(),
                source: field::<NameSource>("remote.domain_source", &source)?,
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(JsonError::Field {
                    field: "remote.domain_source",
                    reason: "missing: a name says how it was learned (dns or sni)".into(),
                })
            }
            (None, Some(_)) => {
                return Err(JsonError::Field {
                    field: "remote.domain_source",
                    reason: "a source without a remote.domain".into(),
                })
            }
        };
        let mut event = ConnectionEvent {
            kind,
            timestamp: field::<Timestamp>("@timestamp", &self.timestamp)?,
            sequence: self.event.sequence,
            host: self.host.name.into_owned(),
            netns: self.host.netns,
            protocol: field::<Protocol>("network.transport", &self.network.transport)?,
            direction: field::<Direction>("network.direction", &self.network.direction)?,
            local: SocketAddr::new(self.local.ip, self.local.port),
            remote: SocketAddr::new(self.remote.ip, self.remote.port),
            process: self.process.map(|p| {
                Arc::new(ProcessInfo {
                    pid: p.pid,
                    executable: owned(p.executable),
                    comm: owned(p.name),
                    command_line: owned(p.command_line),
                    cgroup: owned(p.cgroup),
                })
            }),
            uid: self.user.as_ref().and_then(|u| u.id),
            user_name: owned(self.user.and_then(|u| u.name)),
            close,
            failure,
            preexisting: self.connscope.preexisting,
            remote_name,
        };
        // The declared family is that of the addresses as written, before an
        // older agent's IPv4-mapped pair is read as the IPv4 it is.
        if event.local.is_ipv4() == event.remote.is_ipv4() && event.family() != family {
            return Err(JsonError::Field {
                field: "network.type",
                reason: format!("says {family} but the addresses are {}", event.family()),
            });
        }
        event.normalize_addresses();
        event.validate()?;
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn full_disconnect() -> ConnectionEvent {
        ConnectionEvent {
            kind: EventKind::Disconnect,
            timestamp: Timestamp::from_nanos(1_795_548_137_000_123_456),
            sequence: 42,
            host: "ws1".into(),
            netns: 4026531840,
            protocol: Protocol::Tcp,
            direction: Direction::Outgoing,
            local: "[2001:db8::1]:40000".parse().unwrap(),
            remote: "[2001:db8::2]:443".parse().unwrap(),
            process: Some(Arc::new(ProcessInfo {
                pid: 1234,
                executable: Some("/usr/bin/curl".into()),
                comm: Some("curl".into()),
                command_line: Some("curl https://example.org".into()),
                cgroup: Some("/user.slice".into()),
            })),
            uid: Some(1000),
            user_name: Some("joe".into()),
            close: Some(CloseStats {
                duration_ns: 1_500_000,
                bytes_sent: 120,
                bytes_received: 4096,
                packets_sent: None,
                packets_received: None,
            }),
            failure: None,
            preexisting: false,
            remote_name: None,
        }
    }

    #[test]
    fn documented_layout() {
        let line = to_json_line(&full_disconnect());
        assert_eq!(
            line,
            r#"{"@timestamp":"2026-11-24T19:22:17.000123456Z","event":{"action":"disconnect","sequence":42,"duration":1500000},"host":{"name":"ws1","netns":4026531840},"network":{"transport":"tcp","type":"ipv6","direction":"outgoing"},"local":{"ip":"2001:db8::1","port":40000,"bytes":120},"remote":{"ip":"2001:db8::2","port":443,"bytes":4096},"process":{"pid":1234,"executable":"/usr/bin/curl","name":"curl","command_line":"curl https://example.org","cgroup":"/user.slice"},"user":{"id":1000,"name":"joe"},"connscope":{"version":1}}"#
        );
        assert_eq!(from_json_line(&line).unwrap(), full_disconnect());
    }

    #[test]
    fn a_named_remote_end_is_written_in_remote_and_read_back() {
        let mut ev = full_disconnect();
        ev.remote_name = Some(RemoteName {
            name: "www.example.org".into(),
            source: NameSource::Dns,
        });
        let line = to_json_line(&ev);
        assert!(
            line.contains(r#""remote":{"ip":"2001:db8::2","port":443,"bytes":4096,"domain":"www.example.org","domain_source":"dns"}"#),
            "{line}"
        );
        assert_eq!(from_json_line(&line).unwrap(), ev);
        // A version 1.0 line (no name) still reads, as unnamed.
        let old = to_json_line(&full_disconnect());
        assert!(!old.contains("domain"));
        assert_eq!(from_json_line(&old).unwrap().remote_name, None);
    }

    #[test]
    fn hostile_names_survive_byte_for_byte_and_long_ones_are_refused() {
        for hostile in [
            "<img src=x onerror=alert(1)>.example",
            "a\"; flush ruleset; \".example",
            "bücher.example",
            "\u{7}\n\u{0}.example",
            &"x".repeat(253),
        ] {
            let mut ev = full_disconnect();
            ev.remote_name = Some(RemoteName {
                name: hostile.into(),
                source: NameSource::Sni,
            });
            let line = to_json_line(&ev);
            assert!(!line.contains('\n'));
            assert_eq!(from_json_line(&line).unwrap(), ev, "{hostile:?}");
        }
        let mut ev = full_disconnect();
        ev.remote_name = Some(RemoteName {
            name: "y".repeat(254),
            source: NameSource::Sni,
        });
        let err = from_json_line(&to_json_line(&ev)).unwrap_err().to_string();
        assert_eq!(
            err,
            "the remote name is 254 bytes long; at most 253 are kept"
        );
    }

    #[test]
    fn a_name_without_its_source_or_on_the_local_end_is_refused() {
        let line = to_json_line(&full_disconnect());
        let unsourced = line.replace(r#""bytes":4096}"#, r#""bytes":4096,"domain":"a.example"}"#);
        assert!(from_json_line(&unsourced)
            .unwrap_err()
            .to_string()
            .starts_with("field remote.domain_source: missing"));
        let odd = line.replace(
            r#""bytes":4096}"#,
            r#""bytes":4096,"domain":"a.example","domain_source":"guess"}"#,
        );
        assert!(from_json_line(&odd)
            .unwrap_err()
            .to_string()
            .starts_with("field remote.domain_source: unknown name source"));
        let local = line.replace(
            r#""bytes":120}"#,
            r#""bytes":120,"domain":"me.example","domain_source":"dns"}"#,
        );
        assert_eq!(
            from_json_line(&local).unwrap_err().to_string(),
            "field local.domain: only the remote end is named"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let line = to_json_line(&full_disconnect()).replace("\"outgoing\"", "\"sideways\"");
        let err = from_json_line(&line).unwrap_err().to_string();
        assert!(
            err.starts_with("field network.direction: unknown direction"),
            "{err}"
        );

        let line = to_json_line(&full_disconnect()).replace("\"ipv6\"", "\"ipv4\"");
        let err = from_json_line(&line).unwrap_err().to_string();
        assert_eq!(
            err,
            "field network.type: says ipv4 but the addresses are ipv6"
        );

        let line = to_json_line(&full_disconnect()).replace("\"version\":1", "\"version\":9");
        assert!(matches!(
            from_json_line(&line),
            Err(JsonError::FutureVersion(9))
        ));
        assert!(matches!(
            from_json_line("{\"@timestamp\":"),
            Err(JsonError::Syntax(_))
        ));
    }

    #[test]
    fn an_older_agents_mapped_addresses_are_read_as_ipv4() {
        let line = to_json_line(&full_disconnect())
            .replace("2001:db8::1", "::ffff:192.0.2.10")
            .replace("2001:db8::2", "::ffff:198.51.100.7");
        let event = from_json_line(&line).unwrap();
        assert_eq!(event.local, "192.0.2.10:40000".parse().unwrap());
        assert_eq!(event.remote, "198.51.100.7:443".parse().unwrap());
        assert_eq!(event.family(), Family::Ipv4);

        let line = to_json_line(&full_disconnect()).replace("2001:db8::1", "::ffff:192.0.2.10");
        let err = from_json_line(&line).unwrap_err().to_string();
        assert!(
            err.contains("[::ffff:192.0.2.10]:40000 is an IPv4-mapped address"),
            "{err}"
        );
    }

    #[test]
    fn extreme_timestamps_are_written_as_displayed() {
        for nanos in [i64::MIN, i64::MAX, 0, -1, 951_782_400_000_000_000] {
            let mut written = Vec::new();
            json_timestamp(&mut written, Timestamp::from_nanos(nanos));
            let shown = Timestamp::from_nanos(nanos).to_string();
            assert_eq!(String::from_utf8(written).unwrap(), shown);
        }
    }

    fn arb_addr() -> impl Strategy<Value = (IpAddr, IpAddr)> {
        prop_oneof![
            (any::<u32>(), any::<u32>())
                .prop_map(|(a, b)| (IpAddr::V4(Ipv4Addr::from(a)), IpAddr::V4(Ipv4Addr::from(b)))),
            (any::<u128>(), any::<u128>())
                .prop_map(|(a, b)| (IpAddr::V6(Ipv6Addr::from(a)), IpAddr::V6(Ipv6Addr::from(b)))),
        ]
    }

    #[test]
    fn numbers_are_written_in_full_at_every_length() {
        let mut at_boundaries = vec![0, u64::MAX];
        for power in 1..20 {
            let p = 10u64.pow(power);
            at_boundaries.extend([p - 1, p, p + 1]);
        }
        for n in at_boundaries {
            let mut written = b"x".to_vec();
            json_u64(&mut written, n);
            assert_eq!(written, format!("x{n}").into_bytes());
        }
    }

    proptest! {
        #[test]
        fn any_valid_event_round_trips(
            (l, r) in arb_addr(),
            lport: u16, rport: u16, seq: u64, nanos: i64, netns: u64,
            kind in prop::sample::select(EventKind::ALL),
            dir in prop::sample::select(Direction::ALL),
            proto in prop::sample::select(Protocol::ALL),
            uid in prop::option::of(any::<u32>()),
            name in prop::option::of("[a-z<>\"\\\\ ]{0,12}"),
            exe in prop::option::of("/[ -~]{0,40}"),
            counters: (u64, u64, u64, Option<u64>, Option<u64>),
            preexisting: bool,
        ) {
            let mut ev = ConnectionEvent::new(kind, Timestamp::from_nanos(nanos), proto, dir,
                SocketAddr::new(l, lport), SocketAddr::new(r, rport));
            ev.sequence = seq;
            ev.netns = netns;
            ev.uid = uid;
            ev.user_name = name;
            ev.preexisting = preexisting;
            ev.process = exe.map(|e| Arc::new(ProcessInfo { pid: 7, executable: Some(e), ..Default::default() }));
            if let Some(c) = ev.close.as_mut() {
                *c = CloseStats { duration_ns: counters.0, bytes_sent: counters.1,
                    bytes_received: counters.2, packets_sent: counters.3, packets_received: counters.4 };
            }
            if ev.failure.is_some() {
                ev.failure = Some(ConnectFailure::Refused);
            }
            let line = to_json_line(&ev);
            prop_assert!(!line.contains('\n'));
            prop_assert_eq!(&line, &serde_json::to_string(&Wire::from(&ev)).unwrap());
            prop_assert_eq!(from_json_line(&line).unwrap(), ev);
        }

        #[test]
        fn timestamps_are_written_as_displayed(nanos: i64) {
            let mut written = Vec::new();
            json_timestamp(&mut written, Timestamp::from_nanos(nanos));
            prop_assert_eq!(String::from_utf8(written).unwrap(), Timestamp::from_nanos(nanos).to_string());
        }

        #[test]
        fn the_hand_writer_writes_what_serde_writes(
            host in "\\PC{0,12}",
            text in prop::collection::vec(prop::option::of("(\\PC|[\u{0}-\u{1f}\u{7f}\"\\\\]){0,16}"), 5),
            uid in prop::option::of(any::<u32>()),
            netns: u64,
            kind in prop::sample::select(EventKind::ALL),
            packets: (Option<u64>, Option<u64>),
            remote_name in prop::option::of(("(\\PC|[\u{0}-\u{1f}\u{7f}\"\\\\]){1,16}", prop::sample::select(NameSource::ALL))),
        ) {
            let mut ev = full_disconnect();
            ev.remote_name = remote_name.map(|(name, source)| RemoteName { name, source });
            ev.kind = kind;
            ev.host = host;
            ev.netns = netns;
            ev.uid = uid;
            ev.user_name = text[0].clone();
            ev.process = Some(Arc::new(ProcessInfo {
                pid: 1,
                executable: text[1].clone(),
                comm: text[2].clone(),
                command_line: text[3].clone(),
                cgroup: text[4].clone(),
            }));
            ev.failure = (kind == EventKind::ConnectFailed).then_some(ConnectFailure::Timeout);
            ev.close = ev.close.filter(|_| kind == EventKind::Disconnect).map(|c| CloseStats {
                packets_sent: packets.0,
                packets_received: packets.1,
                ..c
            });
            let mut written = Vec::new();
            write_json_line(&mut written, &ev);
            let mut expected = serde_json::to_vec(&Wire::from(&ev)).unwrap();
            expected.push(b'\n');
            prop_assert_eq!(String::from_utf8(written).unwrap(), String::from_utf8(expected).unwrap());
        }
    }
}
