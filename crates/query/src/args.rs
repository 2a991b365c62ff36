//! Time arguments for `--from`/`--to` (and query parameters): an RFC 3339
//! timestamp with an offset (`2026-11-24T19:00:00+01:00`, `...Z`), `now`, or a
//! span back from now: `-90s`, `-30m`, `-24h`, `-7d`, `-2w`.
//!
//! A range bound beyond what the store can hold (years 1677 to 2262) is taken
//! as that end: `from=1600-01-01T00:00:00Z` asks for everything since the
//! start, and means no more than that.

use connscope_event::Timestamp;

/// A time argument that is none of the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid time {input:?}: expected RFC 3339 with an offset (2026-11-24T19:00:00Z), `now`, or a span back from now like -24h, -30m, -7d, -2w")]
pub struct TimeArgError {
    pub input: String,
}

/// Parses a time argument relative to `now`.
pub fn parse_time_arg(input: &str, now: Timestamp) -> Result<Timestamp, TimeArgError> {
    let err = || TimeArgError {
        input: input.to_owned(),
    };
    let text = input.trim();
    if text == "now" {
        return Ok(now);
    }
    if let Some(span) = text.strip_prefix('-') {
        let split = span.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        let (digits, unit) = span.split_at(split);
        let n: i64 = digits.parse().map_err(|_| err())?;
        let unit_secs = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            _ => return Err(err()),
        };
        let nanos = n.saturating_mul(unit_secs).saturating_mul(1_000_000_000);
        return Ok(Timestamp::from_nanos(now.as_nanos().saturating_sub(nanos)));
    }
    text.parse::<jiff::Timestamp>()
        .map(Timestamp::from)
        .map_err(|_| err())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_beyond_the_stored_range_are_its_ends() {
        let now = Timestamp::from_nanos(0);
        for (input, nanos) in [
            ("1600-01-01T00:00:00Z", i64::MIN),
            ("9000-01-01T00:00:00Z", i64::MAX),
            ("-1000000d", -i64::MAX),
            ("-99999999999999999w", -i64::MAX),
        ] {
            assert_eq!(
                parse_time_arg(input, now).unwrap().as_nanos(),
                nanos,
                "{input}"
            );
        }
    }

    #[test]
    fn forms() {
        let now = Timestamp::from_nanos(100 * 86_400 * 1_000_000_000);
        assert_eq!(parse_time_arg("now", now), Ok(now));
        assert_eq!(
            parse_time_arg("-24h", now).unwrap().as_nanos(),
            99 * 86_400 * 1_000_000_000
        );
        assert_eq!(
            parse_time_arg("-1w", now).unwrap().as_nanos(),
            93 * 86_400 * 1_000_000_000
        );
        assert_eq!(
            parse_time_arg("1970-01-01T01:00:00+01:00", now)
                .unwrap()
                .as_nanos(),
            0
        );
        for bad in ["-24", "-h", "24h", "yesterday", "-5y", "2026-11-24"] {
            assert!(parse_time_arg(bad, now).is_err(), "{bad}");
        }
    }
}
