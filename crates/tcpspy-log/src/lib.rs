//! The tcpspy log format, both ways.
//!
//! connscope replaces the old `tcpspy` daemon, so it speaks tcpspy's log lines:
//! the agent writes them ([`write_body`] for syslog, [`write_foreground_line`]
//! for `-d` on standard output), and the importer reads years of existing
//! tcpspy syslog files back into connection events ([`Parser`]).
//!
//! Reading is split in two layers because the collector's syslog listener
//! takes RFC 3164/5424 packets apart itself: [`Parser::parse_syslog_line`]
//! reads a syslog *file* line (prefix, then message), [`Parser::parse_message`]
//! reads just the message for a tag someone else extracted.
//!
//! Real tcpspy output has two defects that cannot be fully undone, and the
//! parser says so instead of guessing: executable paths are cut at 30 bytes
//! ([`Exe::Path::possibly_cut`]), and on 64-bit machines IPv6 addresses lose
//! their low 64 bits ([`Precision::Upper64Bits`]). The format, the defects and
//! what connscope does differently are described in `docs/TCPSPY-LOG.md`.
//!
//! The parser is built for bulk import: no regular expressions, no allocation
//! per line (results borrow from the line), errors formatted only when one
//! happens.

mod direction;
mod error;
mod message;
mod prefix;
mod write;

use connscope_names::Services;

pub use direction::EndpointStats;
pub use error::{Field, ParseError, Problem, Quote, QUOTE_MAX};
pub use message::{
    Connection, Endpoint, Exe, Message, Notice, NoticeKind, Origin, Precision, User, TCPSPY_EXE_CUT,
};
pub use prefix::{ClassicTime, LogTime, SyslogLine, Tag};
pub use write::{write_body, write_foreground_line, LineStyle, Unwritable};

use message::PortNames;

/// A tcpspy or connscope line from a syslog file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogRecord<'a> {
    pub time: LogTime,
    pub host: &'a str,
    pub origin: Origin,
    /// The logging daemon's pid from the tag (not the connection's process).
    pub pid: Option<u32>,
    pub message: Message<'a>,
}

/// A line `tcpspy -d` printed on standard output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForegroundRecord<'a> {
    /// Local time of the machine tcpspy ran on, no year. `None` only for the
    /// `tcpspy 1.7d started (debug)` banner, which tcpspy prints on standard
    /// error without a time (it shows up when both streams go to one file).
    pub time: Option<ClassicTime>,
    pub message: Message<'a>,
}

/// Reads tcpspy lines. Holds the services table for port names and a cache of
/// names already resolved, so keep one per import rather than one per line.
#[derive(Debug)]
pub struct Parser<'s> {
    ports: PortNames<'s>,
}

impl Default for Parser<'static> {
    /// A parser resolving service names with the system's `/etc/services`.
    fn default() -> Self {
        Parser::new(Services::system())
    }
}

impl<'s> Parser<'s> {
    pub fn new(services: &'s Services) -> Self {
        Parser {
            ports: PortNames::new(services),
        }
    }

    /// Reads one syslog file line (without its newline). `Ok(None)` means a
    /// line of another program, which an importer skips; a line tagged
    /// `tcpspy` or `connscope` either parses or is an error.
    pub fn parse_syslog_line<'l>(
        &mut self,
        line: &'l [u8],
    ) -> Result<Option<SyslogRecord<'l>>, ParseError> {
        let parsed = prefix::split_syslog_line(line, &["tcpspy", "connscope"])
            .map_err(|f| f.into_error(line))?;
        let Some(tag) = parsed.tag else {
            return Ok(None);
        };
        let Some(origin) = Origin::from_tag(tag.name) else {
            return Ok(None);
        };
        let message = message::parse_message(parsed.message, origin, &mut self.ports)
            .map_err(|f| f.shifted(parsed.message_offset).into_error(line))?;
        Ok(Some(SyslogRecord {
            time: parsed.time,
            host: parsed.host,
            origin,
            pid: tag.pid,
            message,
        }))
    }

    /// Reads one message whose syslog envelope was taken apart elsewhere (the
    /// collector's listener). Error columns count from the message start.
    pub fn parse_message<'l>(
        &mut self,
        origin: Origin,
        message: &'l [u8],
    ) -> Result<Message<'l>, ParseError> {
        message::parse_message(message, origin, &mut self.ports).map_err(|f| f.into_error(message))
    }

    /// Reads one line of `tcpspy -d` standard output (without its newline).
    pub fn parse_foreground_line<'l>(
        &mut self,
        line: &'l [u8],
    ) -> Result<ForegroundRecord<'l>, ParseError> {
        if is_debug_banner(line) {
            let text = std::str::from_utf8(line).expect("checked ASCII");
            return Ok(ForegroundRecord {
                time: None,
                message: Message::Notice(Notice {
                    kind: NoticeKind::Started,
                    text,
                }),
            });
        }
        let (time, at) = prefix::split_foreground_prefix(line).map_err(|f| f.into_error(line))?;
        let message = message::parse_message(&line[at..], Origin::Tcpspy, &mut self.ports)
            .map_err(|f| f.shifted(at).into_error(line))?;
        Ok(ForegroundRecord {
            time: Some(time),
            message,
        })
    }
}

/// Takes a syslog file line apart without reading the message: time, host,
/// tag and where the message starts. An error means the line does not start
/// like a syslog line.
pub fn parse_syslog_prefix(line: &[u8]) -> Result<SyslogLine<'_>, ParseError> {
    prefix::split_syslog_line(line, &[]).map_err(|f| f.into_error(line))
}

/// `tcpspy 1.7d started (debug)`: the only line tcpspy -d prints without a time.
fn is_debug_banner(line: &[u8]) -> bool {
    line.starts_with(b"tcpspy ") && line.ends_with(b" started (debug)") && line.is_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_programs_are_none_ours_are_read() {
        let mut p = Parser::default();
        for line in [
            "Nov 24 19:26:22 ws1 sshd[99]: Accepted publickey for joe",
            "Nov 24 19:26:22 ws1 -- MARK --",
            "2026-11-24T19:26:22.123456+01:00 ws1 kernel: connect: nonsense",
        ] {
            assert_eq!(p.parse_syslog_line(line.as_bytes()), Ok(None), "{line}");
        }
        let line =
            "Nov 24 19:26:22 ws1 connscope[7]: connect: user root, local ::1:ssh, remote ::1:40000";
        let rec = p.parse_syslog_line(line.as_bytes()).unwrap().unwrap();
        assert_eq!(
            (rec.origin, rec.pid, rec.host),
            (Origin::Connscope, Some(7), "ws1")
        );
        let Message::Connection(c) = rec.message else {
            panic!()
        };
        assert_eq!(c.local.addr, "[::1]:22".parse().unwrap());
    }

    #[test]
    fn errors_carry_the_whole_line_and_its_column() {
        let mut p = Parser::default();
        let line = "Nov 24 19:26:22 ws1 tcpspy[812]: connect: user root, local 127.0.0.1:1, remote 127.0.0.1:nosuchsvc";
        let err = p.parse_syslog_line(line.as_bytes()).unwrap_err();
        assert_eq!(err.column, line.find("nosuchsvc").unwrap() + 1);
        assert_eq!(err.field, Field::RemotePort);
        assert_eq!(
            err.to_string(),
            format!("column 90: remote port: unknown service name \"nosuchsvc\" (not in the services table for tcp): {line:?}")
        );
        let err = p.parse_syslog_line(b"garbage").unwrap_err();
        assert_eq!((err.field, err.column), (Field::Timestamp, 1));
        let err = p
            .parse_message(Origin::Tcpspy, b"connect: user root")
            .unwrap_err();
        assert_eq!((err.field, err.column), (Field::RemoteAddress, 19));
        let err = p
            .parse_foreground_line(
                b"Nov 24 19:26:22: connect: user root, local 1.2.3.4:1, remote ::1:2",
            )
            .unwrap_err();
        assert_eq!(
            (err.field, err.column, err.problem),
            (Field::RemoteAddress, 62, Problem::MixedFamilies)
        );
    }

    #[test]
    fn generic_prefix_parser_reports_any_tag() {
        let l = parse_syslog_prefix(b"Nov 24 19:26:22 ws1 CRON[4]: (root) CMD (true)").unwrap();
        assert_eq!(
            l.tag,
            Some(Tag {
                name: "CRON",
                pid: Some(4)
            })
        );
        assert_eq!(l.message, b"(root) CMD (true)");
    }

    #[test]
    fn debug_banner_is_a_notice() {
        let rec = Parser::default()
            .parse_foreground_line(b"tcpspy 1.7d started (debug)")
            .unwrap();
        assert_eq!(rec.time, None);
        assert!(matches!(
            rec.message,
            Message::Notice(Notice {
                kind: NoticeKind::Started,
                ..
            })
        ));
    }
}
