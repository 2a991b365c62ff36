//! The syslog envelope, taken apart without I/O: RFC 5424
//! (`<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG`) and RFC 3164
//! (`<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: MSG`, also with an RFC 3339 time as
//! rsyslog's high-precision templates write it). The RFC 3164 header is read
//! by `connscope_tcpspy_log`, the same reader as the importer's, so a line
//! means the same streamed or imported.
//!
//! An RFC 3164 time has no year and no zone: [`resolve_classic`] reads it in
//! the collector's time zone, in the year that puts it closest before now.

use connscope_event::Timestamp;
use connscope_tcpspy_log::{ClassicTime, LogTime};

/// The syslog envelope taken apart.
#[derive(Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub host: Option<&'a str>,
    /// The program: RFC 3164 tag name or RFC 5424 APP-NAME.
    pub program: Option<&'a str>,
    pub time: EnvelopeTime,
    pub message: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeTime {
    Exact(Timestamp),
    Classic(ClassicTime),
    /// RFC 5424's nil time `-`: the time of receipt is used.
    Missing,
}

/// Takes the syslog envelope apart. `Err` names what is wrong.
pub fn parse_envelope(packet: &[u8]) -> Result<Envelope<'_>, String> {
    let mut packet = packet;
    while let Some(rest) = packet
        .strip_suffix(b"\n")
        .or(packet.strip_suffix(b"\0"))
        .or(packet.strip_suffix(b"\r"))
    {
        packet = rest;
    }
    let rest = packet.strip_prefix(b"<").ok_or("no <PRI> at the start")?;
    let close = rest
        .iter()
        .take(4)
        .position(|b| *b == b'>')
        .ok_or("no > closing the <PRI>")?;
    // Facility and severity are not used, but a bad PRI means this is not syslog.
    std::str::from_utf8(&rest[..close])
        .ok()
        .and_then(|p| p.parse::<u8>().ok())
        .filter(|p| *p <= 191)
        .ok_or("PRI is not a number from 0 to 191")?;
    let body = &rest[close + 1..];
    match body.strip_prefix(b"1 ") {
        Some(after_version) => parse_rfc5424(after_version),
        None => parse_rfc3164(body),
    }
}

fn parse_rfc3164(body: &[u8]) -> Result<Envelope<'_>, String> {
    let line = connscope_tcpspy_log::parse_syslog_prefix(body).map_err(|e| e.to_string())?;
    Ok(Envelope {
        host: Some(line.host),
        program: line.tag.map(|t| t.name),
        time: match line.time {
            LogTime::Classic(t) => EnvelopeTime::Classic(t),
            LogTime::Rfc3339(t) => EnvelopeTime::Exact(t),
        },
        message: line.message,
    })
}

fn parse_rfc5424(body: &[u8]) -> Result<Envelope<'_>, String> {
    let mut at = 0;
    let mut field = |name: &str| -> Result<Option<&[u8]>, String> {
        let end = body[at..]
            .iter()
            .position(|b| *b == b' ')
            .map(|p| at + p)
            .ok_or_else(|| format!("RFC 5424 header ends before {name}"))?;
        let value = &body[at..end];
        at = end + 1;
        Ok((value != b"-").then_some(value))
    };
    let time = field("TIMESTAMP")?;
    let host = field("HOSTNAME")?;
    let app = field("APP-NAME")?;
    let _procid = field("PROCID")?;
    let _msgid = field("MSGID")?;
    fn text<'b>(v: Option<&'b [u8]>, name: &str) -> Result<Option<&'b str>, String> {
        v.map(|v| std::str::from_utf8(v).map_err(|_| format!("{name} is not UTF-8")))
            .transpose()
    }
    let time = match text(time, "TIMESTAMP")? {
        None => EnvelopeTime::Missing,
        Some(t) => EnvelopeTime::Exact(t.parse::<Timestamp>().map_err(|e| e.to_string())?),
    };
    let host = text(host, "HOSTNAME")?;
    let program = text(app, "APP-NAME")?;
    let after_sd = skip_structured_data(body, at)?;
    let mut message = body.get(after_sd..).unwrap_or_default();
    message = message.strip_prefix(b" ").unwrap_or(message);
    message = message.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(message);
    Ok(Envelope {
        host,
        program,
        time,
        message,
    })
}

/// Returns where STRUCTURED-DATA (`-` or `[id k="v"]...`) ends.
fn skip_structured_data(body: &[u8], start: usize) -> Result<usize, String> {
    match body.get(start) {
        Some(b'-') => return Ok(start + 1),
        Some(b'[') => {}
        None => return Ok(start),
        Some(_) => return Err("STRUCTURED-DATA is neither - nor [...]".into()),
    }
    let mut at = start;
    while body.get(at) == Some(&b'[') {
        let mut in_quotes = false;
        at += 1;
        loop {
            match body.get(at) {
                None => return Err("STRUCTURED-DATA has no closing ]".into()),
                Some(b'\\') if in_quotes => at += 2,
                Some(b'"') => {
                    in_quotes = !in_quotes;
                    at += 1;
                }
                Some(b']') if !in_quotes => {
                    at += 1;
                    break;
                }
                Some(_) => at += 1,
            }
        }
    }
    Ok(at)
}

/// A yearless local time, in the collector's zone and the year that puts it
/// at most a day after `now` (a log line from December read in January
/// belongs to last year).
pub fn resolve_classic(time: ClassicTime, now: Timestamp) -> Option<Timestamp> {
    let zone = jiff::tz::TimeZone::system();
    let now_zoned = now.to_jiff().to_zoned_datetime(zone.clone());
    // Fallible: the header allows any day 1 to 31 in any month (`Feb 30`).
    let at_year = |year: i16| {
        jiff::civil::DateTime::new(
            year,
            time.month as i8,
            time.day as i8,
            time.hour as i8,
            time.minute as i8,
            time.second.min(59) as i8,
            0,
        )
        .ok()?
        .to_zoned_datetime(zone.clone())
        .ok()
        .map(|z| Timestamp::from(z.timestamp()))
    };
    let year = now_zoned.year();
    let one_day = 86_400_000_000_000;
    match at_year(year) {
        Some(this_year) if this_year.as_nanos() <= now.as_nanos().saturating_add(one_day) => {
            Some(this_year)
        }
        // Later than now, or no such day this year (Feb 29).
        _ => at_year(year - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3164_as_logger_and_rsyslog_send_it() {
        let e = parse_envelope(b"<13>Nov 24 19:22:17 web1 tcpspy[812]: connect: user root, local 10.0.0.1:40000, remote 10.0.0.2:ssh\n").unwrap();
        assert_eq!(e.host, Some("web1"));
        assert_eq!(e.program, Some("tcpspy"));
        assert!(matches!(e.time, EnvelopeTime::Classic(c) if c.day == 24 && c.hour == 19));
        assert!(e.message.starts_with(b"connect: user root"));

        let e =
            parse_envelope(b"<86>2026-11-24T19:22:17.123456+01:00 db1 connscope: disconnect: x")
                .unwrap();
        assert_eq!((e.host, e.program), (Some("db1"), Some("connscope")));
        assert!(matches!(e.time, EnvelopeTime::Exact(_)));
    }

    #[test]
    fn rfc5424_with_and_without_structured_data() {
        let e = parse_envelope(
            b"<13>1 2026-11-24T19:22:17.000001Z web1 tcpspy 812 - [timeQuality tzKnown=\"1\" isSynced=\"0\"][x a=\"q\\]\"] \xEF\xBB\xBFconnect: hi",
        )
        .unwrap();
        assert_eq!((e.host, e.program), (Some("web1"), Some("tcpspy")));
        assert_eq!(e.message, b"connect: hi");
        assert_eq!(
            e.time,
            EnvelopeTime::Exact("2026-11-24T19:22:17.000001Z".parse().unwrap())
        );
        let e = parse_envelope(b"<13>1 - - sshd - - - hello").unwrap();
        assert_eq!(
            (e.host, e.program, e.time),
            (None, Some("sshd"), EnvelopeTime::Missing)
        );
        assert_eq!(e.message, b"hello");
        assert!(parse_envelope(b"<13>1 2026-11-24T19:22:17Z h a p m [open").is_err());
        assert!(parse_envelope(b"no pri").is_err());
        assert!(parse_envelope(b"<999>x").is_err());
    }

    #[test]
    fn classic_times_get_the_year_before_now() {
        let t = |month, day| ClassicTime {
            month,
            day,
            hour: 12,
            minute: 0,
            second: 0,
        };
        let now: Timestamp = "2027-01-15T00:00:00Z".parse().unwrap();
        let dec = resolve_classic(t(12, 20), now).unwrap();
        assert!(dec.to_string().starts_with("2026-12-2"), "{dec}");
        let jan = resolve_classic(t(1, 10), now).unwrap();
        assert!(jan.to_string().starts_with("2027-01-1"), "{jan}");
    }
}
