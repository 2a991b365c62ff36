//! Syslog output: tcpspy's message bodies, as RFC 3164 datagrams to the local
//! syslog socket (`/dev/log`).
//!
//! The datagram is exactly what glibc's syslog(3) sends for tcpspy —
//! `<141>Nov 24 20:27:15 tcpspy[27307]: connect: ...` (priority, local time,
//! `ident[pid]: `, body) — so rsyslog and journald file it the same way, and
//! log watchers written for tcpspy only need the tag changed (`--ident tcpspy`
//! keeps even that). The severity is `notice`, as tcpspy's; the facility is
//! `-F`'s, `local1` by default like tcpspy's build.

use std::fmt::Write as _;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::str::FromStr;

use connscope_event::ConnectionEvent;
use connscope_tcpspy_log::{write_body, LineStyle};
use jiff::tz::TimeZone;

use connscope_sink::{OutputError, Sink};

const SEVERITY_NOTICE: u8 = 5;

/// A syslog facility, by the names syslog.conf(5) and tcpspy's `-F` use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facility(u8);

/// `-F` named no facility.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown syslog facility {0:?}; expected one of: {FACILITY_NAMES}")]
pub struct UnknownFacility(String);

const FACILITIES: &[(&str, u8)] = &[
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("security", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];
const FACILITY_NAMES: &str = "kern user mail daemon auth security syslog lpr news uucp cron \
                              authpriv ftp local0 local1 local2 local3 local4 local5 local6 local7";

impl Default for Facility {
    /// `local1`, tcpspy's compiled-in default.
    fn default() -> Self {
        Facility(17)
    }
}

impl FromStr for Facility {
    type Err = UnknownFacility;

    fn from_str(s: &str) -> Result<Self, UnknownFacility> {
        FACILITIES
            .iter()
            .find(|(name, _)| *name == s)
            .map(|&(_, code)| Facility(code))
            .ok_or_else(|| UnknownFacility(s.to_owned()))
    }
}

/// Sends each event as one syslog datagram.
pub struct SyslogOutput {
    socket_path: PathBuf,
    socket: UnixDatagram,
    name: String,
    prefix_priority: u8,
    ident: String,
    pid: u32,
    style: LineStyle,
    tz: TimeZone,
    message: String,
}

impl SyslogOutput {
    /// Connects to the syslog socket (normally `/dev/log`).
    pub fn open(
        socket_path: PathBuf,
        facility: Facility,
        ident: &str,
        style: LineStyle,
    ) -> Result<SyslogOutput, OutputError> {
        let socket = connect(&socket_path)?;
        Ok(SyslogOutput {
            name: format!("syslog ({})", socket_path.display()),
            socket_path,
            socket,
            prefix_priority: facility.0 * 8 + SEVERITY_NOTICE,
            ident: ident.to_owned(),
            pid: std::process::id(),
            style,
            tz: TimeZone::system(),
            message: String::with_capacity(512),
        })
    }

    fn send(&mut self) -> Result<(), OutputError> {
        match self.socket.send(self.message.as_bytes()) {
            Ok(_) => Ok(()),
            // The syslog daemon restarted: its socket is a new one.
            Err(err) if reconnectable(&err) => {
                self.socket = connect(&self.socket_path)?;
                self.socket
                    .send(self.message.as_bytes())
                    .map(drop)
                    .map_err(|source| OutputError::Io {
                        what: format!("cannot send to {}", self.socket_path.display()),
                        source,
                    })
            }
            Err(source) => Err(OutputError::Io {
                what: format!("cannot send to {}", self.socket_path.display()),
                source,
            }),
        }
    }
}

fn reconnectable(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ECONNREFUSED | libc::ENOTCONN | libc::ENOENT)
    )
}

fn connect(path: &PathBuf) -> Result<UnixDatagram, OutputError> {
    let socket = UnixDatagram::unbound().and_then(|s| s.connect(path).map(|()| s));
    socket.map_err(|source| OutputError::Io {
        what: format!("cannot connect to the syslog socket {}", path.display()),
        source,
    })
}

impl Sink for SyslogOutput {
    fn name(&self) -> &str {
        &self.name
    }

    fn write_batch(&mut self, events: &[ConnectionEvent]) -> Result<u64, OutputError> {
        let mut skipped = 0;
        for event in events {
            self.message.clear();
            let time = self.tz.to_datetime(event.timestamp.to_jiff());
            // `%h %e %T`, as glibc's syslog(3) stamps messages.
            write!(
                self.message,
                "<{}>{} {:2} {:02}:{:02}:{:02} {}[{}]: ",
                self.prefix_priority,
                time.strftime("%b"),
                time.day(),
                time.hour(),
                time.minute(),
                time.second(),
                self.ident,
                self.pid
            )
            .expect("writing to a String");
            if write_body(event, &self.style, &mut self.message).is_err() {
                skipped += 1;
                continue;
            }
            self.send()?;
        }
        Ok(skipped)
    }

    fn flush(&mut self) -> Result<(), OutputError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connscope_event::{Direction, EventKind, ProcessInfo, Protocol, Timestamp};
    use std::sync::Arc;

    #[test]
    fn facilities_parse_and_unknown_is_named() {
        assert_eq!("daemon".parse::<Facility>().unwrap(), Facility(3));
        assert_eq!("local7".parse::<Facility>().unwrap(), Facility(23));
        assert_eq!(Facility::default(), "local1".parse().unwrap());
        let err = "locall".parse::<Facility>().unwrap_err().to_string();
        assert!(err.starts_with("unknown syslog facility \"locall\"; expected one of: kern"));
    }

    #[test]
    fn sends_tcpspy_datagrams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        let style = LineStyle {
            show_exe: true,
            numeric_ports: true,
        };
        let mut out = SyslogOutput::open(path, "daemon".parse().unwrap(), "tcpspy", style).unwrap();
        let mut event = ConnectionEvent::new(
            EventKind::Connect,
            Timestamp::now(),
            Protocol::Tcp,
            Direction::Outgoing,
            "127.0.0.1:40000".parse().unwrap(),
            "127.0.0.1:22".parse().unwrap(),
        );
        event.user_name = Some("root".into());
        event.process = Some(Arc::new(ProcessInfo {
            pid: 1,
            executable: Some("/usr/bin/ssh".into()),
            ..ProcessInfo::default()
        }));
        let mut udp = event.clone();
        udp.protocol = Protocol::Udp;
        assert_eq!(out.write_batch(&[event, udp]).unwrap(), 1);
        let mut buf = [0u8; 512];
        let len = server.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..len]).unwrap();
        assert!(text.starts_with("<29>"), "{text}");
        let pid = std::process::id();
        let body = format!(
            " tcpspy[{pid}]: connect: proc /usr/bin/ssh, user root, local 127.0.0.1:40000, remote 127.0.0.1:22"
        );
        assert!(text.ends_with(&body), "{text}");
        // `<29>Nov  4 09:05:01`: month, space-padded day, time.
        assert_eq!(text.as_bytes()[7], b' ');
        assert_eq!(&text[13..14], ":");
    }
}
