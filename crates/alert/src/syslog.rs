//! The syslog channel: each alert is one RFC 5424 message (APP-NAME
//! `connscope`, MSGID `drift` or `more-drift`, facility daemon, severity
//! warning) whose text is [`Alert::to_line`]: one line whatever the host
//! sent. It goes to the local syslog daemon (`/dev/log`), a Unix socket, or
//! a UDP or TCP address (TCP frames end in CRLF, RFC 6587).
//!
//! Syslog is best effort: a message that cannot be sent is retried once on
//! a new connection (the daemon restarted) and then logged and dropped.

use std::net::SocketAddr;
use std::path::PathBuf;

use fasyslog::format::SyslogContext;
use fasyslog::sender::SyslogSender;
use fasyslog::{Facility, Severity};

use crate::queue::Queue;
use crate::{Alert, AlertError, Channel};

/// Where syslog messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogTarget {
    /// A Unix socket (datagram or stream), `/dev/log` for the local daemon.
    Unix(PathBuf),
    Udp(SocketAddr),
    Tcp(SocketAddr),
}

impl SyslogTarget {
    /// The local daemon's socket.
    pub fn local() -> SyslogTarget {
        SyslogTarget::Unix(PathBuf::from("/dev/log"))
    }

    /// `udp://HOST:PORT`, `tcp://HOST:PORT`, `unix:PATH`, a path (`/...`),
    /// or `HOST:PORT` (UDP, syslog's usual transport); an address, not a
    /// name, so a DNS failure cannot silence alerts later.
    pub fn parse(text: &str) -> Result<SyslogTarget, AlertError> {
        let bad = |reason: &str| AlertError::SyslogAddress {
            address: text.to_owned(),
            reason: reason.to_owned(),
        };
        let socket = |addr: &str| {
            addr.parse::<SocketAddr>()
                .map_err(|_| bad("expected IP:PORT, e.g. 192.0.2.7:514 or [2001:db8::7]:514"))
        };
        if let Some(addr) = text.strip_prefix("udp://") {
            Ok(SyslogTarget::Udp(socket(addr)?))
        } else if let Some(addr) = text.strip_prefix("tcp://") {
            Ok(SyslogTarget::Tcp(socket(addr)?))
        } else if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("unix: needs a socket path"));
            }
            Ok(SyslogTarget::Unix(PathBuf::from(path)))
        } else if text.starts_with('/') {
            Ok(SyslogTarget::Unix(PathBuf::from(text)))
        } else {
            Ok(SyslogTarget::Udp(socket(text)?))
        }
    }

    fn connect(&self) -> std::io::Result<SyslogSender> {
        match self {
            SyslogTarget::Unix(path) => fasyslog::sender::unix(path),
            SyslogTarget::Udp(remote) => {
                let local: SocketAddr = if remote.is_ipv4() {
                    "0.0.0.0:0".parse().expect("an address")
                } else {
                    "[::]:0".parse().expect("an address")
                };
                fasyslog::sender::udp(local, remote).map(SyslogSender::Udp)
            }
            SyslogTarget::Tcp(remote) => fasyslog::sender::tcp(remote).map(SyslogSender::Tcp),
        }
    }
}

impl std::fmt::Display for SyslogTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyslogTarget::Unix(path) => write!(f, "unix:{}", path.display()),
            SyslogTarget::Udp(addr) => write!(f, "udp://{addr}"),
            SyslogTarget::Tcp(addr) => write!(f, "tcp://{addr}"),
        }
    }
}

pub struct SyslogChannel {
    queue: Queue<Alert>,
}

impl SyslogChannel {
    /// Connects now, so a wrong address fails the collector's start rather
    /// than the first alert.
    pub fn new(target: SyslogTarget) -> Result<SyslogChannel, AlertError> {
        let sender = target.connect().map_err(|source| AlertError::Syslog {
            target: target.to_string(),
            source,
        })?;
        let mut context = SyslogContext::new();
        context.facility(Facility::DAEMON).appname("connscope");
        let mut connection = Some(sender);
        let queue = Queue::spawn(format!("syslog {target}"), move |alert: Alert| {
            let message = context
                .format_rfc5424(
                    Severity::WARNING,
                    Some(alert.kind()),
                    vec![],
                    Some(alert.to_line()),
                )
                .to_string();
            for attempt in 1..=2 {
                let sender = match connection.take() {
                    Some(sender) => sender,
                    None => match target.connect() {
                        Ok(sender) => sender,
                        Err(e) => {
                            tracing::warn!(%target, attempt, error = %e, "cannot reach syslog");
                            continue;
                        }
                    },
                };
                let mut sender = sender;
                match sender
                    .send_formatted(message.as_bytes())
                    .and_then(|()| sender.flush())
                {
                    Ok(()) => {
                        connection = Some(sender);
                        return;
                    }
                    Err(e) => tracing::warn!(%target, attempt, error = %e, "syslog send failed"),
                }
            }
            tracing::error!(%target, kind = alert.kind(), "alert not sent to syslog");
        })?;
        Ok(SyslogChannel { queue })
    }
}

impl Channel for SyslogChannel {
    fn deliver(&self, alert: Alert) {
        self.queue.push(alert);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_bad_ones_say_why() {
        assert_eq!(
            SyslogTarget::parse("udp://127.0.0.1:514").unwrap(),
            SyslogTarget::Udp("127.0.0.1:514".parse().unwrap())
        );
        assert_eq!(
            SyslogTarget::parse("[::1]:5514").unwrap(),
            SyslogTarget::Udp("[::1]:5514".parse().unwrap())
        );
        assert_eq!(
            SyslogTarget::parse("tcp://10.0.0.1:601").unwrap(),
            SyslogTarget::Tcp("10.0.0.1:601".parse().unwrap())
        );
        assert_eq!(
            SyslogTarget::parse("/run/log.sock").unwrap(),
            SyslogTarget::Unix("/run/log.sock".into())
        );
        assert_eq!(
            SyslogTarget::parse("unix:/dev/log").unwrap(),
            SyslogTarget::local()
        );
        let err = SyslogTarget::parse("tcp://loghost:601")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"tcp://loghost:601\"") && err.contains("IP:PORT"),
            "{err}"
        );
    }
}
