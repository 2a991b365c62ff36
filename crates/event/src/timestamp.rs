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

#[cfg(test)]
mod tests {
    use super::*;

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
