//! The typed rows the client writes and reads (RowBinary): one struct per
//! table or query, field names equal to column names.

use clickhouse::Row;
use serde::{Deserialize, Serialize};

/// A raw event (`events`) as read: the columns an event is made of.
#[derive(Debug, Clone, Row, Deserialize)]
pub(super) struct Event {
    pub host: String,
    pub ts: i64,
    pub agent: String,
    pub instance: String,
    pub boot: String,
    pub sequence: u64,
    pub kind: String,
    pub protocol: String,
    pub direction: String,
    pub netns: u64,
    pub local_ip: String,
    pub local_port: u16,
    pub remote_ip: String,
    pub remote_port: u16,
    pub pid: Option<u32>,
    pub executable: Option<String>,
    pub comm: Option<String>,
    pub command_line: Option<String>,
    pub cgroup: Option<String>,
    pub uid: Option<u32>,
    pub user_name: Option<String>,
    pub closed: u8,
    pub duration_ns: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub packets_sent: Option<u64>,
    pub packets_received: Option<u64>,
    pub failure: Option<String>,
    pub preexisting: u8,
    pub remote_name: Option<String>,
    pub remote_name_source: Option<String>,
}

/// A raw event as written (`events`), borrowed from the event (the client
/// reads only owned rows, so reading has [`Event`]). Built as it is sent,
/// a row at a time: a group's events are never copied into rows of their
/// own. Its identity, the sorting key after host and hour: (agent,
/// instance, boot, sequence, content_key).
#[derive(Row, Serialize)]
pub(super) struct EventRow<'a> {
    /// Days since the epoch of `hour`: the partition.
    pub day: u16,
    /// The hour the event is filed under (its key time's, see
    /// [`crate::KeyedEvent::key_time`]), nanoseconds.
    pub hour: i64,
    pub host: &'a str,
    pub ts: i64,
    pub agent: &'a str,
    pub instance: &'a str,
    pub boot: &'a str,
    pub sequence: u64,
    /// The content key of an unnumbered event; 0 for numbered ones.
    pub content_key: u64,
    pub kind: &'static str,
    pub protocol: &'static str,
    pub direction: &'static str,
    pub netns: u64,
    pub local_ip: IpText,
    pub local_port: u16,
    pub remote_ip: IpText,
    pub remote_port: u16,
    pub pid: Option<u32>,
    pub executable: Option<&'a str>,
    pub comm: Option<&'a str>,
    pub command_line: Option<&'a str>,
    pub cgroup: Option<&'a str>,
    pub uid: Option<u32>,
    pub user_name: Option<&'a str>,
    pub closed: u8,
    pub duration_ns: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub packets_sent: Option<u64>,
    pub packets_received: Option<u64>,
    pub failure: Option<&'static str>,
    pub preexisting: u8,
    pub remote_name: Option<&'a str>,
    pub remote_name_source: Option<&'static str>,
}

/// An address in the text its `String` column holds, formatted in place
/// (a heap string per address was a tenth of the writer's time).
pub(super) struct IpText {
    text: [u8; 45],
    len: u8,
}

impl IpText {
    pub fn new(ip: std::net::IpAddr) -> IpText {
        let mut out = IpText {
            text: [0; 45],
            len: 0,
        };
        // The longest address text (an IPv4-mapped IPv6) is 45 bytes.
        std::fmt::Write::write_fmt(&mut out, format_args!("{ip}"))
            .expect("an address fits in 45 bytes");
        out
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.text[..usize::from(self.len)])
            .expect("only whole UTF-8 strings are written")
    }
}

impl std::fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let at = usize::from(self.len);
        let end = at + s.len();
        self.text
            .get_mut(at..end)
            .ok_or(std::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end as u8;
        Ok(())
    }
}

impl Serialize for IpText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A connect event reduced to what [`crate::ConnectionRecord`] holds.
#[derive(Debug, Row, Deserialize)]
pub(super) struct Connection {
    pub host: String,
    pub ts: i64,
    pub direction: String,
    pub protocol: String,
    pub local_ip: String,
    pub local_port: u16,
    pub remote_ip: String,
    pub remote_port: u16,
}

/// The content key of an unnumbered event (`event_keys`), kept as long as
/// the rollups so a re-import after raw retention is still recognised.
#[derive(Debug, Row, Serialize, Deserialize)]
pub(super) struct Key {
    pub agent: String,
    pub hour: i64,
    pub content_key: u64,
}

/// Part of one hour's rollup of one edge, as one batch counted it
/// (`edge_rollups`, identity: the edge, the hour and `batch_key`).
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub(super) struct Rollup {
    pub day: u16,
    pub hour: i64,
    pub host: String,
    pub direction: String,
    pub local_ip: String,
    pub remote_ip: String,
    pub service_port: u16,
    pub protocol: String,
    pub executable: String,
    pub user_name: String,
    pub batch_key: u64,
    pub connections: u64,
    pub failures: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub first_seen: i64,
    pub last_seen: i64,
}

/// An edge-hour's rollup summed over its batches (a query's row).
#[derive(Debug, Row, Deserialize)]
pub(super) struct RollupSum {
    pub hour: i64,
    pub host: String,
    pub direction: String,
    pub local_ip: String,
    pub remote_ip: String,
    pub service_port: u16,
    pub protocol: String,
    pub executable: String,
    pub user_name: String,
    pub connections: u64,
    pub failures: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub first_seen: i64,
    pub last_seen: i64,
}

/// What one batch stored in one sequence space (`spaces`, identity:
/// agent, instance, boot, batch_key).
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub(super) struct Space {
    pub agent: String,
    pub instance: String,
    pub boot: String,
    pub batch_key: u64,
    pub first_sequence: u64,
    pub host: String,
    pub events: u64,
    pub first_ts: i64,
    pub last_ts: i64,
    /// When the collector stored it (its clock): orders a space's runs.
    pub stored_at: i64,
}

/// A range of sequence numbers, stored (`sequence_ranges`, per agent,
/// instance and boot) or reported dropped (`dropped_ranges`, per agent,
/// instance and reason: `boot` holds the reason there).
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub(super) struct Range {
    pub agent: String,
    pub instance: String,
    pub boot: String,
    pub first_seq: u64,
    pub last_seq: u64,
}

/// A window an agent's state was not running (`downtime`).
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub(super) struct Downtime {
    pub agent: String,
    pub instance: String,
    pub down_from: i64,
    pub down_to: i64,
}

/// One refused batch (`refusals`).
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub(super) struct Refusal {
    pub agent: String,
    pub reason: String,
    pub at: i64,
}

/// An address a host was seen with, over one batch (`host_addresses`).
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub(super) struct Address {
    pub host: String,
    pub ip: String,
    pub first_seen: i64,
    pub last_seen: i64,
}

/// A host group's definition (`host_groups`, latest `version` per name
/// wins; `removed` marks a deletion).
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub(super) struct Group {
    pub name: String,
    pub kind: String,
    pub patterns: Vec<String>,
    pub label_keys: Vec<String>,
    pub label_values: Vec<String>,
    /// When the name was first added: the groups' order.
    pub added: i64,
    pub removed: u8,
    pub version: u64,
}

/// A host label (`host_labels`, latest `version` per host and key wins).
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub(super) struct Label {
    pub host: String,
    pub key: String,
    pub value: String,
    pub removed: u8,
    pub version: u64,
}

/// An hour a batch has rollup rows in, written once the batch is wholly
/// stored (`batch_hours`): the fold job takes only such batches' rows.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub(super) struct BatchHour {
    pub hour: i64,
    pub batch_key: u64,
}

/// A batch whose rollup rows of `hour` a fold counted (`fold_marks`):
/// excluded from reads once the hour's folded rows are at `version` or
/// later; their rows are deleted a while after `folded_at`.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub(super) struct FoldMark {
    pub hour: i64,
    pub batch_key: u64,
    pub version: u64,
    pub folded_at: i64,
}

/// One edge's counts in one folded hour or day (`folded_hours`,
/// `folded_days`; `hour` is the day's start in the latter), at the fold's
/// `version` (the number of batches counted in it, per hour; the sum of
/// its hours' versions, per day).
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub(super) struct Folded {
    pub day: u16,
    pub hour: i64,
    pub host: String,
    pub direction: String,
    pub local_ip: String,
    pub remote_ip: String,
    pub service_port: u16,
    pub protocol: String,
    pub executable: String,
    pub user_name: String,
    pub connections: u64,
    pub failures: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub first_seen: i64,
    pub last_seen: i64,
    pub version: u64,
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::IpText;

    #[test]
    fn an_address_is_written_as_its_display_text() {
        for text in [
            "10.0.0.1",
            "255.255.255.255",
            "::1",
            "2001:db8::8a2e:370:7334",
            // The longest form: an IPv4-mapped address with every group.
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
            "::ffff:192.0.2.1",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(IpText::new(ip).as_str(), ip.to_string(), "{text}");
        }
    }
}
