use std::fmt;
use std::str::FromStr;

/// A point in time, UTC, in nanoseconds since the Unix epoch.
///
/// Kept as a plain integer so events stay `Copy`-cheap and sort by value; it is
/// written as RFC 3339 with nanoseconds (`2026-11-24T19:22:17.000123456Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

/// A timestamp string that is not RFC 3339 with an offset, or out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp {input:?}: {reason}")]
pub struct TimestampError {
    pub input: String,
    pub reason: String,
}

impl Timestamp {
    pub const fn from_nanos(nanos: i64) -> Self {
        Timestamp(nanos)
    }

    pub const fn as_nanos(self) -> i64 {
        self.0
    }

    pub fn now() -> Self {
        Timestamp::from(jiff::Timestamp::now())
    }

    pub fn to_jiff(self) -> jiff::Timestamp {
        jiff::Timestamp::from_nanosecond(i128::from(self.0))
            .expect("every i64 nanosecond count is within jiff's range")
    }

    /// Nanoseconds from `earlier` to `self`, saturating at zero.
    pub fn nanos_since(self, earlier: Timestamp) -> u64 {
        u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0)
    }
}

/// The times an agent's event may carry: from 1990 (older is a clock that
/// was never set, or garbage) to a day after the receiver's clock (slack for
/// clocks that run ahead). Everything the store and queries compute stays far
/// from the ends of i64 nanoseconds with times in this window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlausibleWindow {
    pub earliest: Timestamp,
    pub latest: Timestamp,
}

impl PlausibleWindow {
    /// 1990-01-01T00:00:00Z.
    pub const EARLIEST: Timestamp = Timestamp(631_152_000_000_000_000);
    /// How far after `now` a time may be.
    pub const FUTURE_SLACK_NANOS: i64 = 86_400_000_000_000;

    /// The window for events received at `now`.
    pub fn at(now: Timestamp) -> PlausibleWindow {
        PlausibleWindow {
            earliest: Self::EARLIEST,
            latest: Timestamp(now.0.saturating_add(Self::FUTURE_SLACK_NANOS)),
        }
    }

    /// `Err` says which end `t` is beyond.
    pub fn check(&self, t: Timestamp) -> Result<(), String> {
        if t < self.earliest {
            Err(format!("{t} is before {}", self.earliest))
        } else if t > self.latest {
            Err(format!("{t} is more than a day after the receiver's clock"))
        } else {
            Ok(())
        }
    }
}

impl From<jiff::Timestamp> for Timestamp {
    fn from(ts: jiff::Timestamp) -> Self {
        // i64 nanoseconds cover 1677..2262, far beyond any connection we log.
        let nanos = ts
            .as_nanosecond()
            .clamp(i128::from(i64::MIN), i128::from(i64::MAX));
        Timestamp(nanos as i64)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.9}", self.to_jiff())
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;

    /// A time outside what i64 nanoseconds hold (years 1677 to 2262) is an
    /// error, never clamped to the nearest end.
    fn from_str(s: &str) -> Result<Self, TimestampError> {
        if let Some(timestamp) = parse_canonical(s.as_bytes()) {
            return Ok(timestamp);
        }
        let error = |reason: String| TimestampError {
            input: s.to_owned(),
            reason,
        };
        let parsed = s
            .parse::<jiff::Timestamp>()
            .map_err(|e| error(e.to_string()))?;
        i64::try_from(parsed.as_nanosecond())
            .map(Timestamp)
            .map_err(|_| error("outside the years 1677 to 2262 that connscope can hold".into()))
    }
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`, the form every agent writes (and
/// [`Timestamp`]'s `Display`), read without jiff's general parser: 5 % of
/// the collector's batch decode (store's `decode` bench). `None` for anything else, jiff
/// then reads it or says what is wrong: other forms, offsets, leap seconds,
/// and years near the ends of i64 nanoseconds. The tests hold it to jiff.
fn parse_canonical(s: &[u8]) -> Option<Timestamp> {
    let s: &[u8; 30] = s.try_into().ok()?;
    let separators = [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
    ];
    if s[29] != b'Z' || separators.iter().any(|&(at, b)| s[at] != b) {
        return None;
    }
    let number = |from: usize, to: usize| {
        s[from..to].iter().try_fold(0i64, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + i64::from(b - b'0'))
        })
    };
    let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    let (hour, minute, second) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);
    let nanos = number(20, 29)?;
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    let plain = (1678..=2261).contains(&year)
        && (1..=12).contains(&month)
        && (1..=month_days).contains(&day)
        && hour < 24
        && minute < 60
        && second < 60;
    if !plain {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some(Timestamp(seconds * 1_000_000_000 + nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let shifted_month = (month + 9) % 12;
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn by_jiff(s: &str) -> Option<i64> {
        let parsed = s.parse::<jiff::Timestamp>().ok()?;
        i64::try_from(parsed.as_nanosecond()).ok()
    }

    proptest! {
        /// Every time written reads back through the fast path, as jiff reads it.
        #[test]
        fn the_canonical_form_reads_as_jiff_reads_it(
            nanos in -9_000_000_000_000_000_000i64..=9_000_000_000_000_000_000i64,
        ) {
            let text = Timestamp::from_nanos(nanos).to_string();
            prop_assert_eq!(parse_canonical(text.as_bytes()), Some(Timestamp(nanos)), "{}", text);
            prop_assert_eq!(by_jiff(&text), Some(nanos));
        }

        /// Any digits in the canonical shape (impossible dates, hours,
        /// leap seconds): the fast path reads what jiff reads or leaves it
        /// to jiff, and leaves to jiff only what it is not meant to read.
        #[test]
        fn digits_in_the_canonical_shape_read_as_jiff_reads_them(
            year in 1600u32..2300, month in 0u32..14, day in 0u32..33,
            hour in 0u32..26, minute in 0u32..62, second in 0u32..62, nanos in 0u32..1_000_000_000,
        ) {
            let text = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{nanos:09}Z");
            match parse_canonical(text.as_bytes()) {
                Some(fast) => prop_assert_eq!(Some(fast.0), by_jiff(&text), "{}", text),
                None => prop_assert!(
                    by_jiff(&text).is_none() || second == 60 || !(1678..=2261).contains(&year),
                    "{} is left to jiff", text
                ),
            }
            prop_assert_eq!(text.parse::<Timestamp>().ok().map(|t| t.0), by_jiff(&text));
        }
    }

    #[test]
    fn other_forms_are_left_to_jiff() {
        for other in [
            "2026-11-24T19:22:17Z",
            "2026-11-24T19:22:17.000123456+00:00",
            "2026-11-24t19:22:17.000123456z",
            "2026-11-24T19:22:17.00012345Z",
            "2026-11-24 19:22:17.000123456Z",
            "2026-11-24T19:22:17.00012345xZ",
            "+2026-11-24T19:22:17.000123456Z",
        ] {
            assert_eq!(parse_canonical(other.as_bytes()), None, "{other}");
        }
    }

    #[test]
    fn rfc3339_round_trip_keeps_nanoseconds() {
        let ts = Timestamp::from_nanos(1_795_548_137_000_123_456);
        let text = ts.to_string();
        assert_eq!(text, "2026-11-24T19:22:17.000123456Z");
        assert_eq!(text.parse::<Timestamp>().unwrap(), ts);
    }

    #[test]
    fn offsets_are_converted_to_utc() {
        let ts: Timestamp = "2026-11-24T20:22:17+01:00".parse().unwrap();
        assert_eq!(ts.to_string(), "2026-11-24T19:22:17.000000000Z");
    }

    #[test]
    fn the_plausible_window_runs_from_1990_to_a_day_ahead() {
        let now: Timestamp = "2026-11-24T19:22:17Z".parse().unwrap();
        let window = PlausibleWindow::at(now);
        for ok in ["1990-01-01T00:00:00Z", "2026-11-25T19:22:17Z"] {
            assert_eq!(window.check(ok.parse().unwrap()), Ok(()), "{ok}");
        }
        for bad in [
            "1677-09-21T00:12:43.145224192Z",
            "1989-12-31T23:59:59.999999999Z",
            "2026-11-25T19:22:17.000000001Z",
            "2262-04-11T23:47:16.854775807Z",
        ] {
            assert!(window.check(bad.parse().unwrap()).is_err(), "{bad}");
        }
        let at_end = PlausibleWindow::at(Timestamp::from_nanos(i64::MAX));
        assert_eq!(at_end.latest, Timestamp::from_nanos(i64::MAX));
    }

    #[test]
    fn times_beyond_i64_nanoseconds_are_errors_not_clamped() {
        for beyond in ["0001-01-01T00:00:00Z", "9000-01-01T00:00:00Z"] {
            let err = beyond.parse::<Timestamp>().unwrap_err();
            assert!(err.reason.contains("1677 to 2262"), "{err}");
        }
        let last: Timestamp = "2262-04-11T23:47:16.854775807Z".parse().unwrap();
        assert_eq!(last, Timestamp::from_nanos(i64::MAX));
    }

    #[test]
    fn garbage_is_an_error_naming_the_input() {
        let err = "yesterday".parse::<Timestamp>().unwrap_err();
        assert!(err
            .to_string()
            .starts_with("invalid timestamp \"yesterday\""));
    }
}
