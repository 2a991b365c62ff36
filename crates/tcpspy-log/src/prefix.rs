//! The part of a log line in front of the tcpspy message: the syslog prefix
//! (`Nov 24 19:26:22 host tcpspy[812]: `, or rsyslog's high-precision
//! `2026-11-24T19:26:22.123456+01:00 host tcpspy[812]: `) and the prefix of
//! `tcpspy -d` on standard output (`Nov 24 19:26:22: `).
//!
//! Kept apart from the message parser because the collector's syslog listener
//! takes RFC 3164/5424 packets apart itself and hands over only tag and message.

use std::fmt;

use connscope_event::Timestamp;

use crate::error::{Failure, Field, Problem};

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// A classic syslog (and `tcpspy -d`) timestamp: local time without a year or a
/// zone. Which year and zone it means is the reader's decision (the importer
/// infers the year from the file), so it is kept exactly as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClassicTime {
    /// 1..=12
    pub month: u8,
    /// 1..=31
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    /// 0..=60 (a leap second is allowed through)
    pub second: u8,
}

impl ClassicTime {
    /// The English month abbreviation strftime's `%b` gives in the C locale.
    pub fn month_name(self) -> &'static str {
        std::str::from_utf8(MONTHS[usize::from(self.month - 1)]).expect("ASCII")
    }
}

/// Written the way syslog writes it: day padded with a space (`Nov  4 ...`).
/// (`tcpspy -d` pads with a zero; see [`crate::write_foreground_line`].)
impl fmt::Display for ClassicTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:>2} {:02}:{:02}:{:02}",
            self.month_name(),
            self.day,
            self.hour,
            self.minute,
            self.second
        )
    }
}

/// When a syslog line says it was logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTime {
    /// `Nov 24 19:26:22`: local time, no year.
    Classic(ClassicTime),
    /// `2026-11-24T19:26:22.123456+01:00`: a complete point in time.
    Rfc3339(Timestamp),
}

/// The syslog program tag, `name[pid]:` or `name:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag<'a> {
    pub name: &'a str,
    pub pid: Option<u32>,
}

/// A syslog file line taken apart: prefix fields and the message after the tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyslogLine<'a> {
    pub time: LogTime,
    pub host: &'a str,
    /// `None` when the word after the host is not a `name[pid]:` tag (some
    /// daemons log without one); `message` is then everything after the host.
    pub tag: Option<Tag<'a>>,
    pub message: &'a [u8],
    /// Byte offset of `message` in the line, for error columns.
    pub message_offset: usize,
}

/// Splits a syslog file line into its prefix and message. An error means the
/// line does not start like a syslog line at all.
///
/// `strict_tags` names the programs whose tags must be well formed (a garbled
/// `tcpspy[8x2]:` is then an error, not "some other program").
pub(crate) fn split_syslog_line<'a>(
    line: &'a [u8],
    strict_tags: &[&str],
) -> Result<SyslogLine<'a>, Failure> {
    let (time, mut at) = match line.first() {
        Some(b'0'..=b'9') => {
            let end = find_byte(line, 0, b' ').ok_or_else(|| {
                Failure::new(line.len(), Field::Host, Problem::Expected("a host"))
            })?;
            let ts = parse_rfc3339(&line[..end])?;
            (LogTime::Rfc3339(ts), end + 1)
        }
        _ => {
            let (t, len) = parse_classic(line)?;
            if line.get(len) != Some(&b' ') {
                return Err(Failure::new(
                    len,
                    Field::Timestamp,
                    Problem::Expected("a space"),
                ));
            }
            (LogTime::Classic(t), len + 1)
        }
    };
    let host_end = find_byte(line, at, b' ').unwrap_or(line.len());
    if host_end == at {
        return Err(Failure::new(
            at,
            Field::Host,
            Problem::Expected("a host name"),
        ));
    }
    let host = utf8(&line[at..host_end], at, Field::Host)?;
    at = (host_end + 1).min(line.len());

    let (tag, message_offset) = split_tag(line, at, strict_tags)?;
    Ok(SyslogLine {
        time,
        host,
        tag,
        message: &line[message_offset..],
        message_offset,
    })
}

/// Reads `name[pid]:` or `name:` at `at`; returns the tag and where the message
/// starts (after one space, which rsyslog puts there).
fn split_tag<'a>(
    line: &'a [u8],
    at: usize,
    strict_tags: &[&str],
) -> Result<(Option<Tag<'a>>, usize), Failure> {
    let rest = &line[at..];
    let name_len = rest
        .iter()
        .position(|&b| matches!(b, b'[' | b':' | b' '))
        .unwrap_or(rest.len());
    let Ok(name) = std::str::from_utf8(&rest[..name_len]) else {
        return Ok((None, at));
    };
    let strict = strict_tags.contains(&name);
    let malformed = |i: usize| {
        if strict {
            Err(Failure::new(
                at + i,
                Field::Tag,
                Problem::Expected("`[pid]:` or `:` after the program name"),
            ))
        } else {
            Ok((None, at))
        }
    };
    let mut i = name_len;
    let mut pid = None;
    if rest.get(i) == Some(&b'[') {
        let digits = rest[i + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let Some(n) = parse_decimal(&rest[i + 1..i + 1 + digits]) else {
            return malformed(i + 1);
        };
        if rest.get(i + 1 + digits) != Some(&b']') {
            return malformed(i + 1 + digits);
        }
        pid = Some(n);
        i += digits + 2;
    }
    if name_len == 0 || rest.get(i) != Some(&b':') {
        return malformed(i);
    }
    i += 1;
    if rest.get(i) == Some(&b' ') {
        i += 1;
    }
    Ok((Some(Tag { name, pid }), at + i))
}

/// Reads the `tcpspy -d` prefix `Nov 24 19:26:22: ` (zero-padded day); returns
/// the time and where the message starts.
pub(crate) fn split_foreground_prefix(line: &[u8]) -> Result<(ClassicTime, usize), Failure> {
    let (t, len) = parse_classic(line)?;
    if line.get(len..len + 2) != Some(b": ") {
        return Err(Failure::new(
            len,
            Field::Timestamp,
            Problem::Expected("`: ` after the time"),
        ));
    }
    Ok((t, len + 2))
}

/// `Mmm dd hh:mm:ss`, day padded with a space (syslog) or a zero (tcpspy -d).
fn parse_classic(line: &[u8]) -> Result<(ClassicTime, usize), Failure> {
    let bad = |at, what| Failure::new(at, Field::Timestamp, Problem::BadTimestamp(what));
    if line.len() < 15 {
        return Err(bad(0, "expected a time like `Nov 24 19:26:22`"));
    }
    let month = MONTHS
        .iter()
        .position(|m| &line[..3] == *m)
        .ok_or_else(|| bad(0, "expected a month name (Jan..Dec)"))?;
    if line[3] != b' ' {
        return Err(bad(3, "expected a space after the month"));
    }
    let day = match (line[4], line[5]) {
        (b' ' | b'0', d @ b'1'..=b'9') => d - b'0',
        (a @ b'1'..=b'3', b @ b'0'..=b'9') => (a - b'0') * 10 + (b - b'0'),
        _ => 0,
    };
    if !(1..=31).contains(&day) {
        return Err(bad(4, "day out of range"));
    }
    if line[6] != b' ' {
        return Err(bad(6, "expected a space after the day"));
    }
    let (hour, minute, second) = parse_hms(&line[7..15]).map_err(|(i, w)| bad(7 + i, w))?;
    Ok((
        ClassicTime {
            month: month as u8 + 1,
            day,
            hour,
            minute,
            second,
        },
        15,
    ))
}

fn parse_hms(s: &[u8]) -> Result<(u8, u8, u8), (usize, &'static str)> {
    if s.len() < 8 || s[2] != b':' || s[5] != b':' {
        return Err((0, "expected hh:mm:ss"));
    }
    let two = |i: usize| -> Result<u8, (usize, &'static str)> {
        match (s[i], s[i + 1]) {
            (a @ b'0'..=b'9', b @ b'0'..=b'9') => Ok((a - b'0') * 10 + (b - b'0')),
            _ => Err((i, "expected two digits")),
        }
    };
    let (h, m, sec) = (two(0)?, two(3)?, two(6)?);
    if h > 23 {
        return Err((0, "hour out of range"));
    }
    if m > 59 {
        return Err((3, "minute out of range"));
    }
    if sec > 60 {
        return Err((6, "second out of range"));
    }
    Ok((h, m, sec))
}

/// RFC 3339 with an offset, as rsyslog's `date-rfc3339` writes it. Hand-written
/// because it runs once per imported line.
fn parse_rfc3339(s: &[u8]) -> Result<Timestamp, Failure> {
    let bad = |at, what| Failure::new(at, Field::Timestamp, Problem::BadTimestamp(what));
    if s.len() < 20 || s[4] != b'-' || s[7] != b'-' || !matches!(s[10], b'T' | b't') {
        return Err(bad(0, "expected a time like 2026-11-24T19:26:22+01:00"));
    }
    let year = parse_decimal(&s[..4]).ok_or_else(|| bad(0, "expected a 4-digit year"))?;
    let month = parse_decimal(&s[5..7]).ok_or_else(|| bad(5, "expected a 2-digit month"))?;
    let day = parse_decimal(&s[8..10]).ok_or_else(|| bad(8, "expected a 2-digit day"))?;
    if !(1..=12).contains(&month) {
        return Err(bad(5, "month out of range"));
    }
    if day < 1 || day > days_in_month(year as i64, month) {
        return Err(bad(8, "day out of range"));
    }
    let (h, m, sec) = parse_hms(&s[11..]).map_err(|(i, w)| bad(11 + i, w))?;
    let mut at = 19;
    let mut nanos: i64 = 0;
    if s.get(at) == Some(&b'.') {
        let digits = s[at + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 || digits > 9 {
            return Err(bad(at + 1, "expected 1 to 9 fraction digits"));
        }
        let frac = parse_decimal(&s[at + 1..at + 1 + digits]).expect("digits checked");
        nanos = i64::from(frac) * 10i64.pow(9 - digits as u32);
        at += 1 + digits;
    }
    let offset_secs: i64 = match &s[at..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let oh = parse_decimal(&[*h1, *h2]).ok_or_else(|| bad(at + 1, "bad offset hours"))?;
            let om = parse_decimal(&[*m1, *m2]).ok_or_else(|| bad(at + 4, "bad offset minutes"))?;
            if oh > 23 || om > 59 {
                return Err(bad(at + 1, "offset out of range"));
            }
            let secs = i64::from(oh * 3600 + om * 60);
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return Err(bad(at, "expected Z or an offset like +01:00")),
    };
    let days = days_from_civil(i64::from(year), month, day);
    let secs =
        days * 86_400 + i64::from(h) * 3600 + i64::from(m) * 60 + i64::from(sec) - offset_secs;
    secs.checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(nanos))
        .map(Timestamp::from_nanos)
        .ok_or_else(|| bad(0, "time outside the years 1677 to 2262"))
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the well-known
/// era-based algorithm; exact for every date).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(month) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A non-empty run of ASCII digits that fits a u32.
pub(crate) fn parse_decimal(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 10 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    u32::try_from(n).ok()
}

fn find_byte(s: &[u8], from: usize, byte: u8) -> Option<usize> {
    s.get(from..)?
        .iter()
        .position(|&b| b == byte)
        .map(|i| from + i)
}

pub(crate) fn utf8(s: &[u8], at: usize, field: Field) -> Result<&str, Failure> {
    std::str::from_utf8(s).map_err(|e| Failure::new(at + e.valid_up_to(), field, Problem::NotUtf8))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &str) -> Result<SyslogLine<'_>, Failure> {
        split_syslog_line(line.as_bytes(), &["tcpspy"])
    }

    #[test]
    fn classic_prefix() {
        let l = split("Nov  4 09:26:22 ws1 tcpspy[812]: connect: x").unwrap();
        let LogTime::Classic(t) = l.time else {
            panic!()
        };
        assert_eq!(
            t,
            ClassicTime {
                month: 11,
                day: 4,
                hour: 9,
                minute: 26,
                second: 22
            }
        );
        assert_eq!(t.to_string(), "Nov  4 09:26:22");
        assert_eq!(l.host, "ws1");
        assert_eq!(
            l.tag,
            Some(Tag {
                name: "tcpspy",
                pid: Some(812)
            })
        );
        assert_eq!(l.message, b"connect: x");
        assert_eq!(l.message_offset, 33);
    }

    #[test]
    fn rfc3339_prefix_matches_jiff() {
        let l = split("2026-11-24T19:26:22.123456+01:00 ws1 tcpspy[812]: x").unwrap();
        let expected: Timestamp = "2026-11-24T19:26:22.123456+01:00".parse().unwrap();
        assert_eq!(l.time, LogTime::Rfc3339(expected));
        for text in [
            "1970-01-01T00:00:00Z",
            "2000-02-29T23:59:59.999999999-12:30",
            "2100-12-31T00:00:00.5+14:00",
            "1999-03-01T12:00:00+00:00",
        ] {
            let ours = parse_rfc3339(text.as_bytes()).unwrap();
            assert_eq!(ours, text.parse::<Timestamp>().unwrap(), "{text}");
        }
    }

    #[test]
    fn bad_timestamps_name_the_column() {
        for (line, col) in [
            ("Nox 24 19:26:22 h tcpspy: x", 0),
            ("Nov 32 19:26:22 h tcpspy: x", 4),
            ("Nov 24 24:26:22 h tcpspy: x", 7),
            ("Nov 24 19:26:2x h tcpspy: x", 13),
            ("2026-02-30T19:26:22Z h tcpspy: x", 8),
            ("2026-11-24T19:26:22+0100 h tcpspy: x", 19),
            ("2026-11-24T19:26:22. h tcpspy: x", 20),
        ] {
            let f = split(line).unwrap_err();
            assert_eq!((f.field, f.at), (Field::Timestamp, col), "{line}");
        }
    }

    #[test]
    fn tags_of_other_programs_are_lenient_ours_strict() {
        let l = split("Nov 24 19:26:22 h kernel: [1.0] eth0 up").unwrap();
        assert_eq!(
            l.tag,
            Some(Tag {
                name: "kernel",
                pid: None
            })
        );
        let l = split("Nov 24 19:26:22 h -- MARK --").unwrap();
        assert_eq!(l.tag, None);
        assert_eq!(l.message, b"-- MARK --");
        let l = split("Nov 24 19:26:22 h foo[12x]: y").unwrap();
        assert_eq!(l.tag, None);
        let f = split("Nov 24 19:26:22 h tcpspy[12x]: y").unwrap_err();
        assert_eq!((f.field, f.at), (Field::Tag, 27));
        let f = split("Nov 24 19:26:22 h tcpspy connect: y").unwrap_err();
        assert_eq!(f.field, Field::Tag);
    }

    #[test]
    fn foreground_prefix_is_zero_padded() {
        let (t, at) = split_foreground_prefix(b"Nov 04 19:22:17: connect: x").unwrap();
        assert_eq!((t.day, t.second, at), (4, 17, 17));
        let f = split_foreground_prefix(b"Nov 04 19:22:17 connect: x").unwrap_err();
        assert_eq!(f.at, 15);
    }
}
