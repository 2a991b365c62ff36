//! Writing events as tcpspy lines, so existing log watchers, grep habits and
//! `logcheck` rules keep working when connscope replaces tcpspy.
//!
//! The bodies are tcpspy's, byte for byte, with two corrections: the executable
//! path is never cut at 30 bytes, and IPv6 addresses are the real ones (still
//! printed without brackets, as tcpspy does: `local ::1:58957`).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use connscope_event::{ConnectionEvent, EventKind, Protocol};
use connscope_names::Services;
use jiff::tz::TimeZone;

/// How lines look; the agent's `-p` and `-n` options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LineStyle {
    /// Write `proc EXE, ` (tcpspy's `-p`).
    pub show_exe: bool,
    /// Write ports as numbers instead of service names from `/etc/services`
    /// (connscope's `-n`; tcpspy always uses names where it has one).
    pub numeric_ports: bool,
}

/// An event tcpspy has no line for. Nothing is written; the caller decides
/// whether to drop the event or log it another way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unwritable {
    #[error("tcpspy logs only TCP; this is a UDP flow")]
    Udp,
    #[error("tcpspy logs only established connections; this connect failed")]
    ConnectFailed,
    #[error("tcpspy logs only established connections; this is a firewall policy hit")]
    FirewallHit,
}

/// Appends the tcpspy message for `event` (no newline), e.g.
/// `connect: proc /usr/bin/curl, user root, local 10.0.0.5:40022, remote 10.0.0.1:https`.
///
/// The user is the event's name, else `(uid N)` as tcpspy writes a uid without
/// a name, else `(unknown)`. An unknown executable is `(unknown)`, like tcpspy.
/// ASCII control characters in the path or user name are written as `?`, so
/// one event stays one line.
pub fn write_body(
    event: &ConnectionEvent,
    style: &LineStyle,
    out: &mut String,
) -> Result<(), Unwritable> {
    if event.protocol == Protocol::Udp {
        return Err(Unwritable::Udp);
    }
    out.push_str(match event.kind {
        EventKind::Connect => "connect: ",
        EventKind::Disconnect => "disconnect: ",
        EventKind::ConnectFailed => return Err(Unwritable::ConnectFailed),
        EventKind::WouldBlock | EventKind::Blocked => return Err(Unwritable::FirewallHit),
    });
    if style.show_exe {
        out.push_str("proc ");
        push_printable(out, event.executable().unwrap_or("(unknown)"));
        out.push_str(", ");
    }
    out.push_str("user ");
    match (&event.user_name, event.uid) {
        (Some(name), _) => push_printable(out, name),
        (None, Some(uid)) => write!(out, "(uid {uid})").expect("writing to a String"),
        (None, None) => out.push_str("(unknown)"),
    }
    out.push_str(", local ");
    push_endpoint(out, event.local, style);
    out.push_str(", remote ");
    push_endpoint(out, event.remote, style);
    Ok(())
}

/// Appends the line `tcpspy -d` prints on standard output, newline included:
/// `Nov 24 19:22:17: connect: ...`. The time is the event's, in `tz` (pass
/// `TimeZone::system()` for local time, as tcpspy uses), formatted like
/// tcpspy's `%b %d %H:%M:%S` in the C locale (day padded with a zero).
pub fn write_foreground_line(
    event: &ConnectionEvent,
    style: &LineStyle,
    tz: &TimeZone,
    out: &mut String,
) -> Result<(), Unwritable> {
    let start = out.len();
    let local = tz.to_datetime(event.timestamp.to_jiff());
    let month = crate::ClassicTime {
        month: local.month() as u8,
        day: 1,
        hour: 0,
        minute: 0,
        second: 0,
    }
    .month_name();
    write!(
        out,
        "{month} {:02} {:02}:{:02}:{:02}: ",
        local.day(),
        local.hour(),
        local.minute(),
        local.second()
    )
    .expect("writing to a String");
    if let Err(e) = write_body(event, style, out) {
        out.truncate(start);
        return Err(e);
    }
    out.push('\n');
    Ok(())
}

fn push_endpoint(out: &mut String, addr: SocketAddr, style: &LineStyle) {
    match addr.ip() {
        IpAddr::V4(ip) => write!(out, "{ip}:"),
        IpAddr::V6(ip) => write!(out, "{ip}:"),
    }
    .expect("writing to a String");
    let name = (!style.numeric_ports)
        .then(|| Services::system().name(addr.port(), Protocol::Tcp))
        .flatten();
    match name {
        Some(name) => out.push_str(name),
        None => write!(out, "{}", addr.port()).expect("writing to a String"),
    }
}

fn push_printable(out: &mut String, text: &str) {
    if text.bytes().any(|b| b.is_ascii_control()) {
        out.extend(
            text.chars()
                .map(|c| if c.is_ascii_control() { '?' } else { c }),
        );
    } else {
        out.push_str(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connscope_event::test_support::EventBuilder;
    use connscope_event::Timestamp;
    use std::sync::Arc;

    fn event(kind: EventKind, local: &str, remote: &str) -> ConnectionEvent {
        EventBuilder::connect(local, remote)
            .kind(kind)
            .at("2026-11-04T19:22:17.5Z".parse::<Timestamp>().unwrap())
            .uid(0)
            .user("root")
            .process(7, "/usr/lib/some/very/long/path/to/the/program")
            .build()
    }

    fn body(ev: &ConnectionEvent, show_exe: bool, numeric_ports: bool) -> String {
        let mut out = String::new();
        write_body(
            ev,
            &LineStyle {
                show_exe,
                numeric_ports,
            },
            &mut out,
        )
        .unwrap();
        out
    }

    #[test]
    fn tcpspy_bodies_with_full_paths_and_real_v6() {
        let ev = event(EventKind::Connect, "10.0.0.5:40022", "10.0.0.1:22");
        assert_eq!(
            body(&ev, true, false),
            "connect: proc /usr/lib/some/very/long/path/to/the/program, user root, local 10.0.0.5:40022, remote 10.0.0.1:ssh"
        );
        assert_eq!(
            body(&ev, false, true),
            "connect: user root, local 10.0.0.5:40022, remote 10.0.0.1:22"
        );
        let mut ev = event(
            EventKind::Disconnect,
            "[::1]:58957",
            "[2001:db8::1:2:3:4]:443",
        );
        ev.user_name = None;
        ev.uid = Some(4242);
        ev.process = None;
        assert_eq!(
            body(&ev, true, false),
            "disconnect: proc (unknown), user (uid 4242), local ::1:58957, remote 2001:db8::1:2:3:4:https"
        );
        ev.uid = None;
        assert_eq!(
            body(&ev, false, true),
            "disconnect: user (unknown), local ::1:58957, remote 2001:db8::1:2:3:4:443"
        );
    }

    #[test]
    fn control_characters_cannot_break_the_line() {
        let mut ev = event(EventKind::Connect, "10.0.0.5:1", "10.0.0.1:2");
        Arc::make_mut(ev.process.as_mut().unwrap()).executable = Some("/tmp/a\nb\u{7}".into());
        assert!(body(&ev, true, true).starts_with("connect: proc /tmp/a?b?, user root"));
    }

    #[test]
    fn udp_and_failed_connects_are_refused_without_output() {
        let mut out = String::from("kept");
        let mut ev = event(EventKind::Connect, "10.0.0.5:1", "10.0.0.1:2");
        ev.protocol = Protocol::Udp;
        let style = LineStyle::default();
        assert_eq!(write_body(&ev, &style, &mut out), Err(Unwritable::Udp));
        let ev = event(EventKind::ConnectFailed, "10.0.0.5:1", "10.0.0.1:2");
        assert_eq!(
            write_body(&ev, &style, &mut out),
            Err(Unwritable::ConnectFailed)
        );
        assert_eq!(
            write_foreground_line(&ev, &style, &TimeZone::UTC, &mut out),
            Err(Unwritable::ConnectFailed)
        );
        assert_eq!(out, "kept");
    }

    #[test]
    fn foreground_line_has_tcpspys_local_time_prefix() {
        let ev = event(EventKind::Connect, "10.0.0.5:40022", "10.0.0.1:22");
        let mut out = String::new();
        let style = LineStyle {
            show_exe: false,
            numeric_ports: false,
        };
        write_foreground_line(&ev, &style, &TimeZone::UTC, &mut out).unwrap();
        assert_eq!(
            out,
            "Nov 04 19:22:17: connect: user root, local 10.0.0.5:40022, remote 10.0.0.1:ssh\n"
        );
        out.clear();
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        write_foreground_line(&ev, &style, &berlin, &mut out).unwrap();
        assert!(out.starts_with("Nov 04 20:22:17: connect: "), "{out}");
    }
}
