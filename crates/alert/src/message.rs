//! What an alert says, in the two shapes the channels send: a JSON document
//! (the webhook's body, docs/POLICY.md "Alerts") and one plain line
//! (syslog). Every string in them comes from a host and may be hostile: the
//! JSON is written by serde_json, and the line escapes every control
//! character, so a process path with a newline cannot start a second line.

use std::fmt::Write as _;
use std::time::Duration;

use connscope_event::{Direction, Timestamp};
use serde::Serialize;

use crate::DriftAlert;

/// What [`crate::Alerts`] hands its channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alert {
    Drift(DriftAlert),
    /// The alerts the rate limit held back in one period, as one.
    MoreDrift(MoreDrift),
}

/// Drift alerts held back by the rate limit in one period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoreDrift {
    pub count: u64,
    /// The hosts they came from, sorted (the first 20).
    pub hosts: Vec<String>,
    /// The earliest and latest connection among them.
    pub first_at: Timestamp,
    pub last_at: Timestamp,
    /// The limit that held them back: `rate` alerts per `period`.
    pub rate: u32,
    pub period: Duration,
}

#[derive(Serialize)]
struct DriftBody<'a> {
    kind: &'static str,
    id: String,
    host: &'a str,
    direction: &'static str,
    protocol: &'static str,
    port: u16,
    local: String,
    remote: String,
    remote_name: Option<&'a str>,
    executable: Option<&'a str>,
    pid: Option<u32>,
    user: Option<&'a str>,
    uid: Option<u32>,
    policy: &'a str,
    version: u32,
    mode: &'a str,
    at: String,
    summary: String,
}

#[derive(Serialize)]
struct MoreDriftBody<'a> {
    kind: &'static str,
    count: u64,
    hosts: &'a [String],
    first_at: String,
    last_at: String,
    rate: u32,
    period_seconds: u64,
    summary: String,
}

impl Alert {
    /// The webhook's body.
    pub fn to_json(&self) -> String {
        let body = match self {
            Alert::Drift(d) => serde_json::to_string(&DriftBody {
                kind: "drift",
                id: d.edge_id(),
                host: &d.host,
                direction: d.direction.as_str(),
                protocol: d.protocol.as_str(),
                port: d.port,
                local: d.local.to_string(),
                remote: d.remote.to_string(),
                remote_name: d.remote_name.as_deref(),
                executable: d.executable.as_deref(),
                pid: d.pid,
                user: d.user.as_deref(),
                uid: d.uid,
                policy: &d.policy,
                version: d.version,
                mode: &d.mode,
                at: rfc3339(d.at),
                summary: self.summary(),
            }),
            Alert::MoreDrift(m) => serde_json::to_string(&MoreDriftBody {
                kind: "more-drift",
                count: m.count,
                hosts: &m.hosts,
                first_at: rfc3339(m.first_at),
                last_at: rfc3339(m.last_at),
                rate: m.rate,
                period_seconds: m.period.as_secs(),
                summary: self.summary(),
            }),
        };
        body.expect("an alert always serialises")
    }

    /// One sentence for a person (may hold hostile text: escape it where
    /// it goes; the JSON and [`Self::to_line`] do).
    pub fn summary(&self) -> String {
        match self {
            Alert::Drift(d) => {
                let (way, peer) = match d.direction {
                    Direction::Outgoing => ("outgoing", "to"),
                    Direction::Incoming => ("incoming", "from"),
                    Direction::Unknown => ("unknown-direction", "with"),
                };
                let remote = match &d.remote_name {
                    Some(name) => format!("{} ({name})", d.remote),
                    None => d.remote.to_string(),
                };
                format!(
                    "drift on {}: {way} {}/{} {peer} {remote} by {} (user {}), not allowed by policy {} v{} ({})",
                    d.host,
                    d.protocol.as_str(),
                    d.port,
                    d.executable.as_deref().unwrap_or("an unknown process"),
                    d.user.as_deref().unwrap_or("unknown"),
                    d.policy,
                    d.version,
                    d.mode
                )
            }
            Alert::MoreDrift(m) => format!(
                "{} more drift edges (over the limit of {} alerts per {} s) on {}; see `connscope report drift`",
                m.count,
                m.rate,
                m.period.as_secs(),
                m.hosts.join(", ")
            ),
        }
    }

    /// The syslog message: `key="value"` pairs (logfmt), values quoted with
    /// `\"` and `\\` escaped and every control or line-breaking character
    /// written as `\u{..}`, so the message is always one line.
    pub fn to_line(&self) -> String {
        let mut fields: Vec<(&str, String)> = Vec::new();
        match self {
            Alert::Drift(d) => {
                fields.push(("id", d.edge_id()));
                fields.push(("host", d.host.clone()));
                fields.push(("direction", d.direction.as_str().into()));
                fields.push(("protocol", d.protocol.as_str().into()));
                fields.push(("port", d.port.to_string()));
                fields.push(("local", d.local.to_string()));
                fields.push(("remote", d.remote.to_string()));
                if let Some(name) = &d.remote_name {
                    fields.push(("remote_name", name.clone()));
                }
                if let Some(exe) = &d.executable {
                    fields.push(("executable", exe.clone()));
                }
                if let Some(pid) = d.pid {
                    fields.push(("pid", pid.to_string()));
                }
                if let Some(user) = &d.user {
                    fields.push(("user", user.clone()));
                }
                if let Some(uid) = d.uid {
                    fields.push(("uid", uid.to_string()));
                }
                fields.push(("policy", d.policy.clone()));
                fields.push(("version", d.version.to_string()));
                fields.push(("mode", d.mode.clone()));
                fields.push(("at", rfc3339(d.at)));
            }
            Alert::MoreDrift(m) => {
                fields.push(("count", m.count.to_string()));
                fields.push(("hosts", m.hosts.join(",")));
                fields.push(("first_at", rfc3339(m.first_at)));
                fields.push(("last_at", rfc3339(m.last_at)));
            }
        }
        let mut line = one_line(&self.summary());
        for (key, value) in fields {
            let _ = write!(line, " {key}=\"{}\"", quoted(&value));
        }
        line
    }

    /// The syslog MSGID.
    pub fn kind(&self) -> &'static str {
        match self {
            Alert::Drift(_) => "drift",
            Alert::MoreDrift(_) => "more-drift",
        }
    }
}

fn rfc3339(at: Timestamp) -> String {
    at.to_jiff().to_string()
}

/// `text` with every character that could end or disturb a line escaped.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        push_plain(&mut out, c);
    }
    out
}

fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => push_plain(&mut out, c),
        }
    }
    out
}

fn push_plain(out: &mut String, c: char) {
    if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{85}') {
        let _ = write!(out, "\\u{{{:x}}}", c as u32);
    } else {
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connscope_event::Protocol;

    const HOSTILE: &str =
        "/tmp/<img src=x onerror=alert(1)>\n<13>1 - forged - - - -\"} ]\u{2028}x\\";

    fn hostile() -> DriftAlert {
        DriftAlert {
            host: "web-01".into(),
            direction: Direction::Incoming,
            protocol: Protocol::Tcp,
            port: 8080,
            local: "10.0.0.1".parse().unwrap(),
            remote: "2001:db8::7".parse().unwrap(),
            remote_name: Some("evil\r\n.example".into()),
            executable: Some(HOSTILE.into()),
            pid: Some(4242),
            user: Some("www-data\"".into()),
            uid: Some(33),
            policy: "servers".into(),
            version: 4,
            mode: "enforce".into(),
            at: "2026-12-04T10:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn the_json_body_carries_hostile_strings_exactly() {
        let alert = Alert::Drift(hostile());
        let json: serde_json::Value = serde_json::from_str(&alert.to_json()).unwrap();
        assert_eq!(json["kind"], "drift");
        assert_eq!(json["executable"], HOSTILE);
        assert_eq!(json["remote_name"], "evil\r\n.example");
        assert_eq!(json["user"], "www-data\"");
        assert_eq!(json["remote"], "2001:db8::7");
        assert_eq!(json["direction"], "incoming");
        assert_eq!(json["port"], 8080);
        assert_eq!(json["mode"], "enforce");
        assert_eq!(json["at"], "2026-12-04T10:00:00Z");
        assert_eq!(json["id"].as_str().unwrap().len(), 16);
        assert!(!alert.to_json().contains('\n'));
    }

    #[test]
    fn the_line_is_one_line_whatever_the_strings() {
        let line = Alert::Drift(hostile()).to_line();
        assert!(!line.contains('\n') && !line.contains('\r') && !line.contains('\u{2028}'));
        assert!(line.contains(r#"user="www-data\"""#), "{line}");
        assert!(
            line.contains(r#"executable="/tmp/<img src=x onerror=alert(1)>\u{a}<13>1 - forged - - - -\"} ]\u{2028}x\\""#),
            "{line}"
        );
        assert!(line.starts_with("drift on web-01: incoming tcp/8080 from 2001:db8::7 (evil\\u{d}\\u{a}.example) by /tmp/"));
    }

    #[test]
    fn an_edge_keeps_its_id_and_another_edge_has_another() {
        let a = hostile();
        let mut later = a.clone();
        later.at = "2026-12-05T10:00:00Z".parse().unwrap();
        later.executable = None;
        assert_eq!(a.edge_id(), later.edge_id());
        // Pinned: the id must not change between versions of connscope.
        assert_eq!(a.edge_id(), "71975c43af456b07");
        let mut other = a.clone();
        other.port = 8081;
        assert_ne!(a.edge_id(), other.edge_id());
    }
}
