//! The tcpspy message: `connect: proc EXE, user USER, local ADDR:PORT, remote ADDR:PORT`
//! (`proc EXE, ` only when tcpspy runs with `-p`), `disconnect: ...` likewise,
//! and tcpspy's few status messages.
//!
//! Fields are found from the right (`, remote `, then `, local `, then
//! `, user `), because the executable path is the one field that may contain
//! anything, including `, user `.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use connscope_event::{ConnectionEvent, Direction, EventKind, ProcessInfo, Protocol, Timestamp};
use connscope_names::Services;

use crate::error::{Failure, Field, Problem};
use crate::prefix::parse_decimal;

/// tcpspy prints at most this many bytes of the executable path (`%.30s`).
pub const TCPSPY_EXE_CUT: usize = 30;

/// Which program wrote the message; decides how addresses and paths are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// tcpspy 1.7: executable cut at 30 bytes, IPv6 addresses mangled on
    /// 64-bit builds (see [`Precision`]).
    Tcpspy,
    /// connscope's syslog output: same bodies, but exact.
    Connscope,
}

impl Origin {
    /// The origin for a syslog program tag (`tcpspy` or `connscope`); `None`
    /// for every other program.
    pub fn from_tag(tag: &str) -> Option<Origin> {
        match tag {
            "tcpspy" => Some(Origin::Tcpspy),
            "connscope" => Some(Origin::Connscope),
            _ => None,
        }
    }
}

/// One message of tcpspy (or connscope) read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    Connection(Connection<'a>),
    /// A status message that is not about a connection.
    Notice(Notice<'a>),
}

/// A tcpspy status message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notice<'a> {
    pub kind: NoticeKind,
    pub text: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// `tcpspy started, monitoring connections`
    Started,
    /// `caught signal 15, shutting down`
    ShuttingDown,
    /// `warning: running slowly, suggest increasing interval with -I option`;
    /// short connections may be missing from the log around here.
    RunningSlowly,
    /// A line of `/proc/net/tcp*` could not be read, or an `exe` rule was
    /// ignored.
    Warning,
    /// tcpspy stopped on an error (`ct_read failed`, `/proc: ...`, ...);
    /// nothing after it until the next start is logged.
    Fatal,
    /// Any other message logged under the `connscope` tag (its own status
    /// lines); never used for tcpspy, whose messages are all known.
    Other,
}

/// A `connect:` or `disconnect:` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection<'a> {
    /// [`EventKind::Connect`] or [`EventKind::Disconnect`].
    pub kind: EventKind,
    /// `None` for lines without `proc` (tcpspy without `-p`).
    pub exe: Option<Exe<'a>>,
    pub user: User<'a>,
    pub local: Endpoint,
    pub remote: Endpoint,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exe<'a> {
    /// `proc (unknown)`: the process was gone (typical for disconnects) or not
    /// readable.
    Unknown,
    Path {
        /// The path as logged. Invalid UTF-8 (a multi-byte character cut by
        /// tcpspy's 30-byte limit) is replaced by U+FFFD.
        path: Cow<'a, str>,
        /// tcpspy printed exactly 30 bytes, so the real path may be longer.
        /// A path of exactly 30 bytes looks the same: this only says "maybe".
        possibly_cut: bool,
    },
}

/// `user root`, or `user (uid 4242)` for a uid without a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum User<'a> {
    Name(&'a str),
    Uid(u32),
    /// `(unknown)`: written by connscope when the event carries no user.
    Unknown,
}

/// How much of a logged address is the real one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Exact,
    /// tcpspy on a 64-bit machine reads each 32-bit word of the IPv6 address
    /// into a 64-bit `unsigned long` and prints the first 16 bytes of that
    /// array: words 0 and 1 of the real address land in words 0 and 2 of the
    /// printed one, words 1 and 3 print as zero, and the low 64 bits (words 2
    /// and 3, the interface identifier) are lost. The address returned holds
    /// the real upper 64 bits and zeros below: `::1` reads back as `::`,
    /// `2001:db8:1:2:3:4:5:6` (printed `2001:db8::1:2:0:0`) as `2001:db8:1:2::`.
    Upper64Bits,
}

/// One end of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub precision: Precision,
}

impl Connection<'_> {
    /// The event this line records: TCP, direction unknown (tcpspy does not
    /// say who connected), sequence 0 (not numbered), no pid (tcpspy does not
    /// log it: `process.pid` is 0), close counters zero (not logged).
    /// A user name stays a name (it need not exist on this machine); only
    /// `(uid N)` gives a uid. The addresses are normalised
    /// ([`connscope_event::normalize_endpoints`]): a dual-stack socket's
    /// `::ffff:a.b.c.d` pair is IPv4, 64-bit tcpspy's `::`/`::` pair is `::1`.
    pub fn to_event(&self, timestamp: Timestamp, host: &str) -> ConnectionEvent {
        let mut event = ConnectionEvent::new(
            self.kind,
            timestamp,
            Protocol::Tcp,
            Direction::Unknown,
            self.local.addr,
            self.remote.addr,
        );
        event.normalize_addresses();
        event.host = host.to_owned();
        if let Some(Exe::Path { path, .. }) = &self.exe {
            event.process = Some(Arc::new(ProcessInfo {
                pid: 0,
                executable: Some(path.clone().into_owned()),
                ..ProcessInfo::default()
            }));
        }
        match self.user {
            User::Name(name) => event.user_name = Some(name.to_owned()),
            User::Uid(uid) => event.uid = Some(uid),
            User::Unknown => {}
        }
        event
    }
}

/// Turns service names back into ports. `Services::port` builds a key per
/// lookup; logs repeat a handful of names millions of times, so names seen
/// once are kept here and later lookups cost a hash and no allocation.
#[derive(Debug)]
pub(crate) struct PortNames<'s> {
    services: &'s Services,
    /// foldhash: this runs for every line of an import, and the names come
    /// from the logs being read, not from a network peer.
    seen: HashMap<Box<str>, u16, foldhash::fast::RandomState>,
}

impl<'s> PortNames<'s> {
    pub fn new(services: &'s Services) -> Self {
        PortNames {
            services,
            seen: HashMap::default(),
        }
    }

    fn port(&mut self, name: &str) -> Option<u16> {
        if let Some(&port) = self.seen.get(name) {
            return Some(port);
        }
        let port = self.services.port(name, Protocol::Tcp)?;
        self.seen.insert(name.into(), port);
        Some(port)
    }
}

/// Parses one message; `Failure` offsets are relative to `msg`.
pub(crate) fn parse_message<'a>(
    msg: &'a [u8],
    origin: Origin,
    ports: &mut PortNames<'_>,
) -> Result<Message<'a>, Failure> {
    let (kind, at) = if msg.starts_with(b"connect: ") {
        (EventKind::Connect, 9)
    } else if msg.starts_with(b"disconnect: ") {
        (EventKind::Disconnect, 12)
    } else {
        return parse_notice(msg, origin).map(Message::Notice);
    };
    parse_connection(msg, at, kind, origin, ports).map(Message::Connection)
}

fn parse_connection<'a>(
    msg: &'a [u8],
    start: usize,
    kind: EventKind,
    origin: Origin,
    ports: &mut PortNames<'_>,
) -> Result<Connection<'a>, Failure> {
    let remote_sep = rfind(msg, start, b", remote ").ok_or_else(|| {
        Failure::new(
            msg.len(),
            Field::RemoteAddress,
            Problem::Expected("`, remote ADDR:PORT`"),
        )
    })?;
    let local_sep = rfind(&msg[..remote_sep], start, b", local ").ok_or_else(|| {
        Failure::new(
            remote_sep,
            Field::LocalAddress,
            Problem::Expected("`, local ADDR:PORT`"),
        )
    })?;

    let (exe, user_at) = if msg[start..].starts_with(b"user ") {
        (None, start + 5)
    } else if msg[start..].starts_with(b"proc ") {
        let exe_at = start + 5;
        let user_sep = rfind(&msg[..local_sep], exe_at, b", user ").ok_or_else(|| {
            Failure::new(local_sep, Field::User, Problem::Expected("`, user NAME`"))
        })?;
        (
            Some(parse_exe(&msg[exe_at..user_sep], exe_at, origin)?),
            user_sep + 7,
        )
    } else {
        return Err(Failure::new(
            start,
            Field::Proc,
            Problem::Expected("`proc ` or `user `"),
        ));
    };

    let user = parse_user(&msg[user_at..local_sep], user_at)?;
    let local_at = local_sep + 8;
    let remote_at = remote_sep + 9;
    let local = parse_endpoint(
        &msg[local_at..remote_sep],
        local_at,
        origin,
        ports,
        (Field::LocalAddress, Field::LocalPort),
    )?;
    let remote = parse_endpoint(
        &msg[remote_at..],
        remote_at,
        origin,
        ports,
        (Field::RemoteAddress, Field::RemotePort),
    )?;
    if local.addr.is_ipv4() != remote.addr.is_ipv4() {
        return Err(Failure::new(
            remote_at,
            Field::RemoteAddress,
            Problem::MixedFamilies,
        ));
    }
    Ok(Connection {
        kind,
        exe,
        user,
        local,
        remote,
    })
}

fn parse_exe(s: &[u8], at: usize, origin: Origin) -> Result<Exe<'_>, Failure> {
    if s == b"(unknown)" {
        return Ok(Exe::Unknown);
    }
    if s.first() != Some(&b'/') {
        return Err(Failure::new(
            at,
            Field::Proc,
            Problem::Expected("an absolute path or `(unknown)`"),
        ));
    }
    Ok(Exe::Path {
        path: String::from_utf8_lossy(s),
        possibly_cut: origin == Origin::Tcpspy && s.len() == TCPSPY_EXE_CUT,
    })
}

fn parse_user(s: &[u8], at: usize) -> Result<User<'_>, Failure> {
    if s == b"(unknown)" {
        return Ok(User::Unknown);
    }
    if let Some(digits) = s.strip_prefix(b"(uid ").and_then(|r| r.strip_suffix(b")")) {
        return parse_decimal(digits)
            .map(User::Uid)
            .ok_or_else(|| Failure::new(at + 5, Field::User, Problem::Expected("`(uid N)`")));
    }
    if s.is_empty() || s.contains(&b' ') {
        return Err(Failure::new(
            at,
            Field::User,
            Problem::Expected("a user name or `(uid N)`"),
        ));
    }
    crate::prefix::utf8(s, at, Field::User).map(User::Name)
}

fn parse_endpoint(
    s: &[u8],
    at: usize,
    origin: Origin,
    ports: &mut PortNames<'_>,
    (addr_field, port_field): (Field, Field),
) -> Result<Endpoint, Failure> {
    // The port is after the last colon: IPv6 addresses are printed without
    // brackets (`:::58957` is address `::`, port 58957).
    let colon = s
        .iter()
        .rposition(|&b| b == b':')
        .ok_or_else(|| Failure::new(at + s.len(), port_field, Problem::Expected("`:PORT`")))?;
    let (addr_text, port_text) = (&s[..colon], &s[colon + 1..]);
    let port_at = at + colon + 1;
    let port = match port_text.first() {
        None => {
            return Err(Failure::new(
                port_at,
                port_field,
                Problem::Expected("a port"),
            ))
        }
        Some(b'0'..=b'9') => parse_decimal(port_text)
            .ok_or_else(|| {
                Failure::new(
                    port_at,
                    port_field,
                    Problem::Expected("a port number or service name"),
                )
            })?
            .try_into()
            .map_err(|_| Failure::new(port_at, port_field, Problem::PortOutOfRange))?,
        Some(_) => {
            let name = crate::prefix::utf8(port_text, port_at, port_field)?;
            ports.port(name).ok_or_else(|| {
                Failure::new(
                    port_at,
                    port_field,
                    Problem::UnknownService(name.to_owned()),
                )
            })?
        }
    };
    let ip: IpAddr = std::str::from_utf8(addr_text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| Failure::new(at, addr_field, Problem::BadAddress))?;
    let (ip, precision) = match ip {
        IpAddr::V6(v6) if origin == Origin::Tcpspy => undo_tcpspy_v6(v6),
        ip => (ip, Precision::Exact),
    };
    Ok(Endpoint {
        addr: SocketAddr::new(ip, port),
        precision,
    })
}

/// Reverses what can be reversed of tcpspy's 64-bit IPv6 bug (see
/// [`Precision::Upper64Bits`]). The bug always prints words 1 and 3 as zero;
/// an address with either non-zero cannot come from it and is taken as exact
/// (a 32-bit build, where `unsigned long` is 32 bits, prints correctly).
fn undo_tcpspy_v6(printed: Ipv6Addr) -> (IpAddr, Precision) {
    let bits = u128::from(printed);
    let word = |i: u32| (bits >> (96 - 32 * i)) as u32;
    if word(1) != 0 || word(3) != 0 {
        return (IpAddr::V6(printed), Precision::Exact);
    }
    let real = (u128::from(word(0)) << 96) | (u128::from(word(2)) << 64);
    (IpAddr::V6(Ipv6Addr::from(real)), Precision::Upper64Bits)
}

/// tcpspy's non-connection messages: fixed texts in its source, so anything
/// else under the tcpspy tag is a line we cannot read.
fn parse_notice(msg: &[u8], origin: Origin) -> Result<Notice<'_>, Failure> {
    let text = crate::prefix::utf8(msg, 0, Field::Message)?;
    let kind = if text == "tcpspy started, monitoring connections" {
        Some(NoticeKind::Started)
    } else if text
        .strip_prefix("caught signal ")
        .and_then(|r| r.strip_suffix(", shutting down"))
        .is_some_and(|n| parse_decimal(n.as_bytes()).is_some())
    {
        Some(NoticeKind::ShuttingDown)
    } else if text == "warning: running slowly, suggest increasing interval with -I option" {
        Some(NoticeKind::RunningSlowly)
    } else if text.ends_with(": warning: incomplete line")
        || text.starts_with("warning: \"exe\" comparison used")
    {
        Some(NoticeKind::Warning)
    } else if matches!(
        text,
        "ct_init failed" | "ct_read failed" | "ct_free failed" | "memory exhausted"
    ) || text.starts_with("/proc: ")
        || text.starts_with("/proc/net/tcp")
    {
        Some(NoticeKind::Fatal)
    } else if origin == Origin::Connscope {
        Some(NoticeKind::Other)
    } else {
        None
    };
    match kind {
        Some(kind) => Ok(Notice { kind, text }),
        None => Err(Failure::new(0, Field::Action, Problem::UnknownMessage)),
    }
}

/// Last occurrence of `needle` in `hay[from..]`, as an index into `hay`.
fn rfind(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let hay_from = hay.get(from..)?;
    let last = *needle.last()?;
    let n = needle.len();
    let mut end = hay_from.len();
    while end >= n {
        // Scan back for the needle's last byte, then compare the rest.
        let i = hay_from[..end].iter().rposition(|&b| b == last)?;
        if i + 1 >= n && &hay_from[i + 1 - n..=i] == needle {
            return Some(from + i + 1 - n);
        }
        end = i;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(msg: &str, origin: Origin) -> Result<Message<'_>, Failure> {
        parse_message(
            msg.as_bytes(),
            origin,
            &mut PortNames::new(Services::system()),
        )
    }

    fn conn(msg: &str) -> Connection<'_> {
        match parse(msg, Origin::Tcpspy).unwrap() {
            Message::Connection(c) => c,
            other => panic!("{other:?}"),
        }
    }

    fn fail(msg: &str) -> (Field, usize, Problem) {
        let f = parse(msg, Origin::Tcpspy).unwrap_err();
        (f.field, f.at, f.problem)
    }

    #[test]
    fn full_line_with_proc_and_service_names() {
        let c =
            conn("connect: proc /usr/bin/ssh, user joe, local 10.0.0.5:40022, remote 10.0.0.1:ssh");
        assert_eq!(c.kind, EventKind::Connect);
        assert_eq!(
            c.exe,
            Some(Exe::Path {
                path: "/usr/bin/ssh".into(),
                possibly_cut: false
            })
        );
        assert_eq!(c.user, User::Name("joe"));
        assert_eq!(c.local.addr, "10.0.0.5:40022".parse().unwrap());
        assert_eq!(c.remote.addr, "10.0.0.1:22".parse().unwrap());
        assert_eq!(c.remote.precision, Precision::Exact);
    }

    #[test]
    fn line_without_proc_and_service_aliases() {
        // `www` is an alias of http in services(5).
        let c = conn("disconnect: user root, local 127.0.0.1:www, remote 127.0.0.1:33000");
        assert_eq!(c.kind, EventKind::Disconnect);
        assert_eq!(c.exe, None);
        assert_eq!(c.local.addr.port(), 80);
    }

    #[test]
    fn unknown_exe_and_numeric_users() {
        let c = conn(
            "disconnect: proc (unknown), user (uid 4242), local 127.0.0.1:1, remote 127.0.0.1:2",
        );
        assert_eq!(c.exe, Some(Exe::Unknown));
        assert_eq!(c.user, User::Uid(4242));
        let ev = c.to_event(Timestamp::from_nanos(5), "h");
        assert_eq!((ev.uid, ev.user_name), (Some(4242), None));
        assert_eq!(ev.process, None);
        // A name stays a name, even one this machine does not know.
        let c = conn("connect: user nobody-here, local 127.0.0.1:1, remote 127.0.0.1:2");
        let ev = c.to_event(Timestamp::from_nanos(5), "h");
        assert_eq!(
            (ev.uid, ev.user_name.as_deref()),
            (None, Some("nobody-here"))
        );
    }

    #[test]
    fn the_30_byte_cut_is_flagged() {
        let c = conn("connect: proc /root/.pyenv/versions/3.11.7/b, user root, local 127.0.0.1:1, remote 127.0.0.1:2");
        assert_eq!(
            c.exe,
            Some(Exe::Path {
                path: "/root/.pyenv/versions/3.11.7/b".into(),
                possibly_cut: true
            })
        );
        // connscope never cuts.
        let Message::Connection(c) = parse(
            "connect: proc /root/.pyenv/versions/3.11.7/b, user root, local 127.0.0.1:1, remote 127.0.0.1:2",
            Origin::Connscope,
        )
        .unwrap() else { panic!() };
        assert!(matches!(
            c.exe,
            Some(Exe::Path {
                possibly_cut: false,
                ..
            })
        ));
        // A cut through a multi-byte character is replaced, not an error.
        let mut msg = b"connect: proc /opt/".to_vec();
        msg.extend("é".repeat(12).as_bytes());
        msg.extend(b"\xc3, user root, local 127.0.0.1:1, remote 127.0.0.1:2");
        let Message::Connection(c) = parse_message(
            &msg,
            Origin::Tcpspy,
            &mut PortNames::new(Services::system()),
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            c.exe,
            Some(Exe::Path {
                path: format!("/opt/{}\u{fffd}", "é".repeat(12)).into(),
                possibly_cut: true
            })
        );
    }

    #[test]
    fn exe_may_contain_the_separators() {
        let c = conn("connect: proc /tmp/a, user b, local c, user root, local 127.0.0.1:1, remote 127.0.0.1:2");
        assert_eq!(
            c.exe,
            Some(Exe::Path {
                path: "/tmp/a, user b, local c".into(),
                possibly_cut: false
            })
        );
        assert_eq!(c.user, User::Name("root"));
    }

    #[test]
    fn tcpspy_v6_bug_is_undone_as_far_as_possible() {
        // Real lines: ::1 prints as ::, 2001:db8:1:2:3:4:5:6 as 2001:db8::1:2:0:0,
        // 2001:db8::ff00:1 as 2001:db8::.
        let c = conn("connect: user root, local :::58957, remote :::ssh");
        assert_eq!(c.local.addr, "[::]:58957".parse().unwrap());
        assert_eq!(c.remote.addr, "[::]:22".parse().unwrap());
        assert_eq!(c.local.precision, Precision::Upper64Bits);
        let c = conn("connect: user root, local 2001:db8::1:2:0:0:http, remote 2001:db8:::51212");
        assert_eq!(c.local.addr, "[2001:db8:1:2::]:80".parse().unwrap());
        assert_eq!(c.remote.addr, "[2001:db8::]:51212".parse().unwrap());
        // Words 1 or 3 non-zero: not the bug, so exact (a 32-bit build).
        let c = conn("connect: user root, local 2001:db8::1:2:3:4:1, remote ::ffff:10.0.0.1:2");
        assert_eq!(c.local.precision, Precision::Exact);
        assert_eq!(c.local.addr, "[2001:db8::1:2:3:4]:1".parse().unwrap());
        assert_eq!(c.remote.precision, Precision::Exact);
        // connscope's addresses are always exact.
        let Message::Connection(c) = parse(
            "connect: user root, local ::1:58957, remote ::1:ssh",
            Origin::Connscope,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            c.local,
            Endpoint {
                addr: "[::1]:58957".parse().unwrap(),
                precision: Precision::Exact
            }
        );
    }

    #[test]
    fn events_carry_the_addresses_the_packets_carry() {
        // A dual-stack Java server (32-bit tcpspy prints mapped addresses whole).
        let c = conn("connect: proc /usr/bin/java, user app, local ::ffff:192.0.2.10:8443, remote ::ffff:198.51.100.7:51000");
        assert_eq!(c.local.addr, "[::ffff:192.0.2.10]:8443".parse().unwrap());
        let ev = c.to_event(Timestamp::from_nanos(1), "app1");
        assert_eq!(ev.local, "192.0.2.10:8443".parse().unwrap());
        assert_eq!(ev.remote, "198.51.100.7:51000".parse().unwrap());
        // 64-bit tcpspy's `::1` (or `::ffff:127.x`) on both ends: loopback.
        let ev = conn("disconnect: user root, local :::8443, remote :::51000")
            .to_event(Timestamp::from_nanos(1), "app1");
        assert_eq!(ev.local, "[::1]:8443".parse().unwrap());
        assert_eq!(ev.remote, "[::1]:51000".parse().unwrap());
        assert!(ev.remote.ip().is_loopback());
    }

    #[test]
    fn notices() {
        for (text, kind) in [
            (
                "tcpspy started, monitoring connections",
                NoticeKind::Started,
            ),
            ("caught signal 15, shutting down", NoticeKind::ShuttingDown),
            (
                "warning: running slowly, suggest increasing interval with -I option",
                NoticeKind::RunningSlowly,
            ),
            (
                "/proc/net/tcp6: warning: incomplete line",
                NoticeKind::Warning,
            ),
            ("ct_read failed", NoticeKind::Fatal),
            ("/proc: Permission denied", NoticeKind::Fatal),
        ] {
            assert_eq!(
                parse(text, Origin::Tcpspy).unwrap(),
                Message::Notice(Notice { kind, text })
            );
        }
        assert_eq!(fail("conect: user root").2, Problem::UnknownMessage);
        assert!(matches!(
            parse("agent started", Origin::Connscope).unwrap(),
            Message::Notice(Notice {
                kind: NoticeKind::Other,
                ..
            })
        ));
    }

    #[test]
    fn garbled_lines_name_field_and_column() {
        for (msg, field, at, problem) in [
            (
                "connect: proc /bin/x, user root, local 127.0.0.1:1",
                Field::RemoteAddress,
                50,
                Problem::Expected("`, remote ADDR:PORT`"),
            ),
            (
                "connect: proc /bin/x, user root, remote 127.0.0.1:2",
                Field::LocalAddress,
                31,
                Problem::Expected("`, local ADDR:PORT`"),
            ),
            (
                "connect: proc /bin/x, local 127.0.0.1:1, remote 127.0.0.1:2",
                Field::User,
                20,
                Problem::Expected("`, user NAME`"),
            ),
            (
                "connect: pid 7, user root, local 127.0.0.1:1, remote 127.0.0.1:2",
                Field::Proc,
                9,
                Problem::Expected("`proc ` or `user `"),
            ),
            (
                "connect: proc bin/x, user root, local 127.0.0.1:1, remote 127.0.0.1:2",
                Field::Proc,
                14,
                Problem::Expected("an absolute path or `(unknown)`"),
            ),
            (
                "connect: proc /bin/x, user , local 127.0.0.1:1, remote 127.0.0.1:2",
                Field::User,
                27,
                Problem::Expected("a user name or `(uid N)`"),
            ),
            (
                "connect: proc /bin/x, user (uid x), local 127.0.0.1:1, remote 127.0.0.1:2",
                Field::User,
                32,
                Problem::Expected("`(uid N)`"),
            ),
            (
                "connect: proc /bin/x, user root, local 127.0.0.300:1, remote 127.0.0.1:2",
                Field::LocalAddress,
                39,
                Problem::BadAddress,
            ),
            (
                "connect: proc /bin/x, user root, local 127.0.0.1, remote 127.0.0.1:2",
                Field::LocalPort,
                48,
                Problem::Expected("`:PORT`"),
            ),
            (
                "connect: proc /bin/x, user root, local 127.0.0.1:70000, remote 127.0.0.1:2",
                Field::LocalPort,
                49,
                Problem::PortOutOfRange,
            ),
            (
                "connect: proc /bin/x, user root, local 127.0.0.1:, remote 127.0.0.1:2",
                Field::LocalPort,
                49,
                Problem::Expected("a port"),
            ),
            (
                "connect: proc /bin/x, user root, local 127.0.0.1:1, remote 127.0.0.1:no-such-svc",
                Field::RemotePort,
                69,
                Problem::UnknownService("no-such-svc".into()),
            ),
            (
                "connect: proc /bin/x, user root, local 127.0.0.1:1, remote 127.0.0.1:2x",
                Field::RemotePort,
                69,
                Problem::Expected("a port number or service name"),
            ),
            (
                "connect: proc /bin/x, user root, local 127.0.0.1:1, remote ::1:2",
                Field::RemoteAddress,
                59,
                Problem::MixedFamilies,
            ),
            (
                "connect: proc /bin/x, user root, local 127.0.0.1:1, remote 127.0.0.12",
                Field::RemotePort,
                69,
                Problem::Expected("`:PORT`"),
            ),
        ] {
            assert_eq!(fail(msg), (field, at, problem), "{msg}");
        }
    }

    #[test]
    fn rfind_finds_the_last_match() {
        assert_eq!(rfind(b"a, b, c", 0, b", "), Some(4));
        assert_eq!(rfind(b"a, b, c", 5, b", "), None);
        assert_eq!(rfind(b", ", 0, b", "), Some(0));
        assert_eq!(rfind(b"xx", 0, b"xxx"), None);
        assert_eq!(rfind(b"aab", 0, b"ab"), Some(1));
    }
}
