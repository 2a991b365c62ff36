//! The versioned JSON Lines form of [`ConnectionEvent`] (schema in `docs/EVENTS.md`).
//!
//! The wire layout is nested the way Elastic Common Schema nests it
//! (`process.executable`, `user.name`, `network.direction`, ...), so the lines can
//! be shipped into an ECS-aware pipeline unchanged. It lives in its own structs,
//! separate from the in-memory model, so the model can change without breaking
//! the published schema.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::{
    CloseStats, ConnectFailure, ConnectionEvent, Direction, EventKind, Family, InvalidEvent,
    ProcessInfo, Protocol, Timestamp, SCHEMA_VERSION,
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
    serde_json::to_string(&Wire::from(event)).expect("the wire form always serialises")
}

/// Appends one event and a newline to `out`; the allocation-free path for writers.
pub fn write_json_line(out: &mut Vec<u8>, event: &ConnectionEvent) {
    serde_json::to_writer(&mut *out, &Wire::from(event)).expect("writing to a Vec cannot fail");
    out.push(b'\n');
}

/// Parses and validates one JSON line.
pub fn from_json_line(line: &str) -> Result<ConnectionEvent, JsonError> {
    let wire: Wire = serde_json::from_str(line)?;
    wire.into_event()
}

#[derive(Serialize, Deserialize)]
struct Wire {
    #[serde(rename = "@timestamp")]
    timestamp: String,
    event: WireEvent,
    host: WireHost,
    network: WireNetwork,
    local: WireEndpoint,
    remote: WireEndpoint,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    process: Option<WireProcess>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<WireUser>,
    connscope: WireMeta,
}

#[derive(Serialize, Deserialize)]
struct WireEvent {
    action: String,
    #[serde(default)]
    sequence: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct WireHost {
    name: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    netns: u64,
}

#[derive(Serialize, Deserialize)]
struct WireNetwork {
    transport: String,
    #[serde(rename = "type")]
    family: String,
    direction: String,
}

#[derive(Serialize, Deserialize)]
struct WireEndpoint {
    ip: IpAddr,
    port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    packets: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct WireProcess {
    pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    executable: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    command_line: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cgroup: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct WireUser {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct WireMeta {
    version: u32,
    #[serde(default, skip_serializing_if = "is_false")]
    preexisting: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl From<&ConnectionEvent> for Wire {
    fn from(ev: &ConnectionEvent) -> Self {
        let close = ev.close.as_ref();
        Wire {
            timestamp: ev.timestamp.to_string(),
            event: WireEvent {
                action: ev.kind.as_str().to_owned(),
                sequence: ev.sequence,
                duration: close.map(|c| c.duration_ns),
                reason: ev.failure.map(|f| f.as_str().to_owned()),
            },
            host: WireHost {
                name: ev.host.clone(),
                netns: ev.netns,
            },
            network: WireNetwork {
                transport: ev.protocol.as_str().to_owned(),
                family: ev.family().as_str().to_owned(),
                direction: ev.direction.as_str().to_owned(),
            },
            local: WireEndpoint {
                ip: ev.local.ip(),
                port: ev.local.port(),
                bytes: close.map(|c| c.bytes_sent),
                packets: close.and_then(|c| c.packets_sent),
            },
            remote: WireEndpoint {
                ip: ev.remote.ip(),
                port: ev.remote.port(),
                bytes: close.map(|c| c.bytes_received),
                packets: close.and_then(|c| c.packets_received),
            },
            process: ev.process.as_ref().map(|p| WireProcess {
                pid: p.pid,
                executable: p.executable.clone(),
                name: p.comm.clone(),
                command_line: p.command_line.clone(),
                cgroup: p.cgroup.clone(),
            }),
            user: (ev.uid.is_some() || ev.user_name.is_some()).then(|| WireUser {
                id: ev.uid,
                name: ev.user_name.clone(),
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

impl Wire {
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
        let event = ConnectionEvent {
            kind,
            timestamp: field::<Timestamp>("@timestamp", &self.timestamp)?,
            sequence: self.event.sequence,
            host: self.host.name,
            netns: self.host.netns,
            protocol: field::<Protocol>("network.transport", &self.network.transport)?,
            direction: field::<Direction>("network.direction", &self.network.direction)?,
            local: SocketAddr::new(self.local.ip, self.local.port),
            remote: SocketAddr::new(self.remote.ip, self.remote.port),
            process: self.process.map(|p| ProcessInfo {
                pid: p.pid,
                executable: p.executable,
                comm: p.name,
                command_line: p.command_line,
                cgroup: p.cgroup,
            }),
            uid: self.user.as_ref().and_then(|u| u.id),
            user_name: self.user.and_then(|u| u.name),
            close,
            failure,
            preexisting: self.connscope.preexisting,
        };
        event.validate()?;
        if event.family() != family {
            return Err(JsonError::Field {
                field: "network.type",
                reason: format!("says {family} but the addresses are {}", event.family()),
            });
        }
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
            process: Some(ProcessInfo {
                pid: 1234,
                executable: Some("/usr/bin/curl".into()),
                comm: Some("curl".into()),
                command_line: Some("curl https://example.org".into()),
                cgroup: Some("/user.slice".into()),
            }),
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

    fn arb_addr() -> impl Strategy<Value = (IpAddr, IpAddr)> {
        prop_oneof![
            (any::<u32>(), any::<u32>())
                .prop_map(|(a, b)| (IpAddr::V4(Ipv4Addr::from(a)), IpAddr::V4(Ipv4Addr::from(b)))),
            (any::<u128>(), any::<u128>())
                .prop_map(|(a, b)| (IpAddr::V6(Ipv6Addr::from(a)), IpAddr::V6(Ipv6Addr::from(b)))),
        ]
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
            ev.process = exe.map(|e| ProcessInfo { pid: 7, executable: Some(e), ..Default::default() });
            if let Some(c) = ev.close.as_mut() {
                *c = CloseStats { duration_ns: counters.0, bytes_sent: counters.1,
                    bytes_received: counters.2, packets_sent: counters.3, packets_received: counters.4 };
            }
            if ev.failure.is_some() {
                ev.failure = Some(ConnectFailure::Refused);
            }
            let line = to_json_line(&ev);
            prop_assert!(!line.contains('\n'));
            prop_assert_eq!(from_json_line(&line).unwrap(), ev);
        }
    }
}
