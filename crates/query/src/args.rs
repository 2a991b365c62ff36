//! Time ranges and graph filters as readers ask for them: text from the
//! commands' flags (`--from -24h --port 22`) or the API's query parameters
//! (`from=-24h&port=22`). One type per question and one parser each, so every
//! command and the API accept the same forms and name the bad parameter the
//! same way. With the `cli` feature the types are also `clap` argument groups.
//!
//! Times are an RFC 3339 timestamp with an offset (`2026-11-24T19:00:00+01:00`,
//! `...Z`), `now`, or a span back from now: `-90s`, `-30m`, `-24h`, `-7d`,
//! `-2w`. A range bound beyond what the store can hold (years 1677 to 2262) is
//! taken as that end: `from=1600-01-01T00:00:00Z` asks for everything since
//! the start, and means no more than that. An empty value is an absent one (a
//! form field left blank).

use connscope_event::{Direction, Protocol, Timestamp};
use connscope_store::TimeRange;
use serde::Deserialize;

use crate::graph::{GraphFilter, Scope};

/// A parameter that cannot be used: its name (`from`, `port`, ...) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {reason}")]
pub struct ArgError {
    pub name: &'static str,
    pub reason: String,
}

/// `from` and `to`, as given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct TimeRangeArgs {
    /// Start of the time range: RFC 3339 with an offset (2026-11-24T19:00:00Z),
    /// `now`, or back from now (-90s, -30m, -24h, -7d, -2w).
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            value_name = "TIME",
            allow_hyphen_values = true,
            visible_alias = "since"
        )
    )]
    pub from: Option<String>,
    /// End of the time range (exclusive), same forms as --from.
    #[cfg_attr(
        feature = "cli",
        arg(long, value_name = "TIME", allow_hyphen_values = true)
    )]
    pub to: Option<String>,
}

impl TimeRangeArgs {
    /// The range asked for, relative to `now`; an absent bound is `default`'s.
    pub fn resolve(&self, now: Timestamp, default: TimeRange) -> Result<TimeRange, ArgError> {
        let bound = |name, value: &Option<String>, default| match given(value) {
            None => Ok(default),
            Some(text) => parse_time(text, now).map_err(|reason| ArgError { name, reason }),
        };
        let range = TimeRange {
            from: bound("from", &self.from, default.from)?,
            to: bound("to", &self.to, default.to)?,
        };
        if range.from >= range.to {
            return Err(ArgError {
                name: "from",
                reason: "must be before the end of the range".into(),
            });
        }
        Ok(range)
    }
}

/// The day before `now`: the API's range when a request asks for none.
pub fn last_day(now: Timestamp) -> TimeRange {
    TimeRange {
        from: Timestamp::from_nanos(now.as_nanos().saturating_sub(86_400 * 1_000_000_000)),
        to: now,
    }
}

/// Which edges, as given; see [`GraphFilter`] for what each one keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct GraphFilterArgs {
    /// Only edges with this monitored host at either end.
    #[cfg_attr(feature = "cli", arg(long, value_name = "HOST"))]
    pub host: Option<String>,
    /// Only edges to this service port.
    #[cfg_attr(feature = "cli", arg(long, value_name = "PORT"))]
    pub port: Option<String>,
    /// Only edges of this protocol: tcp or udp.
    #[cfg_attr(feature = "cli", arg(long, value_name = "PROTO"))]
    pub protocol: Option<String>,
    /// Only edges where a process has this executable (full path or file name).
    #[cfg_attr(feature = "cli", arg(long, value_name = "PATH"))]
    pub exe: Option<String>,
    /// Only edges where a process ran as this user.
    #[cfg_attr(feature = "cli", arg(long, value_name = "USER"))]
    pub user: Option<String>,
    /// Only edges out of (outgoing, out) or into (incoming, in) monitored
    /// hosts (the --host, if given).
    #[cfg_attr(feature = "cli", arg(long, value_name = "DIRECTION"))]
    pub direction: Option<String>,
    /// Only internal edges (internal), or only edges with an external end (external).
    #[cfg_attr(feature = "cli", arg(long, value_name = "SCOPE"))]
    pub scope: Option<String>,
}

impl GraphFilterArgs {
    /// The filter asked for.
    pub fn resolve(&self) -> Result<GraphFilter, ArgError> {
        let bad = |name, value: &str, expected: &str| ArgError {
            name,
            reason: format!("{value:?}: expected {expected}"),
        };
        let port = given(&self.port)
            .map(|p| {
                p.parse::<u16>()
                    .map_err(|_| bad("port", p, "a port number, 0 to 65535"))
            })
            .transpose()?;
        let protocol = given(&self.protocol)
            .map(|p| {
                p.parse::<Protocol>()
                    .map_err(|_| bad("protocol", p, "tcp or udp"))
            })
            .transpose()?;
        let direction = given(&self.direction)
            .map(|d| match d {
                "outgoing" | "out" => Ok(Direction::Outgoing),
                "incoming" | "in" => Ok(Direction::Incoming),
                other => Err(bad("direction", other, "outgoing (out) or incoming (in)")),
            })
            .transpose()?;
        let scope = given(&self.scope)
            .map(|s| match s {
                "internal" => Ok(Scope::Internal),
                "external" => Ok(Scope::External),
                other => Err(bad("scope", other, "internal or external")),
            })
            .transpose()?;
        let text = |value: &Option<String>| given(value).map(str::to_owned);
        Ok(GraphFilter {
            host: text(&self.host),
            port,
            protocol,
            executable: text(&self.exe),
            user: text(&self.user),
            direction,
            scope,
        })
    }
}

/// A value that was given and is not empty.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// One time, relative to `now`; the error says which forms are accepted.
fn parse_time(input: &str, now: Timestamp) -> Result<Timestamp, String> {
    let err = || {
        format!(
            "invalid time {input:?}: expected RFC 3339 with an offset (2026-11-24T19:00:00Z), \
             `now`, or a span back from now like -24h, -30m, -7d, -2w"
        )
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
            assert_eq!(parse_time(input, now).unwrap().as_nanos(), nanos, "{input}");
        }
    }

    #[test]
    fn forms() {
        let now = Timestamp::from_nanos(100 * 86_400 * 1_000_000_000);
        assert_eq!(parse_time("now", now), Ok(now));
        assert_eq!(
            parse_time("-24h", now).unwrap().as_nanos(),
            99 * 86_400 * 1_000_000_000
        );
        assert_eq!(
            parse_time("-1w", now).unwrap().as_nanos(),
            93 * 86_400 * 1_000_000_000
        );
        assert_eq!(
            parse_time("1970-01-01T01:00:00+01:00", now)
                .unwrap()
                .as_nanos(),
            0
        );
        for bad in ["-24", "-h", "24h", "yesterday", "-5y", "2026-11-24"] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
    }

    fn range(from: Option<&str>, to: Option<&str>) -> TimeRangeArgs {
        TimeRangeArgs {
            from: from.map(str::to_owned),
            to: to.map(str::to_owned),
        }
    }

    #[test]
    fn absent_or_empty_bounds_are_the_default() {
        let now = Timestamp::from_nanos(10 * 86_400 * 1_000_000_000);
        let default = last_day(now);
        assert_eq!(
            default.from.as_nanos(),
            9 * 86_400 * 1_000_000_000,
            "a day back"
        );
        assert_eq!(range(None, None).resolve(now, default), Ok(default));
        assert_eq!(range(Some(""), Some("")).resolve(now, default), Ok(default));
        let asked = range(Some("-2d"), None).resolve(now, default).unwrap();
        assert_eq!(asked.from.as_nanos(), 8 * 86_400 * 1_000_000_000);
        assert_eq!(asked.to, now);
    }

    #[test]
    fn range_errors_name_the_bound() {
        let now = Timestamp::from_nanos(0);
        let err = range(Some("-1h"), Some("yesterday"))
            .resolve(now, TimeRange::ALL)
            .unwrap_err();
        assert_eq!(err.name, "to");
        assert!(
            err.to_string()
                .starts_with("to: invalid time \"yesterday\""),
            "{err}"
        );
        let err = range(Some("now"), Some("-1h"))
            .resolve(now, TimeRange::ALL)
            .unwrap_err();
        assert_eq!(err.name, "from", "{err}");
        let err = range(Some("now"), None)
            .resolve(now, last_day(now))
            .unwrap_err();
        assert_eq!(err.name, "from", "an empty range: {err}");
    }

    #[test]
    fn filter_fields() {
        let args = GraphFilterArgs {
            host: Some("web1".into()),
            port: Some("443".into()),
            protocol: Some("udp".into()),
            exe: Some("sshd".into()),
            user: Some("".into()),
            direction: Some("in".into()),
            scope: Some("external".into()),
        };
        assert_eq!(
            args.resolve(),
            Ok(GraphFilter {
                host: Some("web1".into()),
                port: Some(443),
                protocol: Some(Protocol::Udp),
                executable: Some("sshd".into()),
                user: None,
                direction: Some(Direction::Incoming),
                scope: Some(Scope::External),
            })
        );
        assert_eq!(
            GraphFilterArgs::default().resolve(),
            Ok(GraphFilter::default())
        );
        for (spelling, direction) in [
            ("out", Direction::Outgoing),
            ("outgoing", Direction::Outgoing),
            ("incoming", Direction::Incoming),
        ] {
            let args = GraphFilterArgs {
                direction: Some(spelling.into()),
                ..GraphFilterArgs::default()
            };
            assert_eq!(args.resolve().unwrap().direction, Some(direction));
        }
    }

    #[test]
    fn filter_errors_name_the_parameter() {
        let one = |set: fn(&mut GraphFilterArgs)| {
            let mut args = GraphFilterArgs::default();
            set(&mut args);
            args.resolve().unwrap_err()
        };
        assert_eq!(one(|a| a.port = Some("65536".into())).name, "port");
        assert_eq!(one(|a| a.port = Some("ssh".into())).name, "port");
        assert_eq!(one(|a| a.protocol = Some("icmp".into())).name, "protocol");
        assert_eq!(
            one(|a| a.direction = Some("unknown".into())).name,
            "direction"
        );
        let err = one(|a| a.scope = Some("dmz".into()));
        assert_eq!(
            err.to_string(),
            "scope: \"dmz\": expected internal or external"
        );
    }

    #[test]
    fn parameters_by_their_names() {
        let range: TimeRangeArgs =
            serde_json::from_value(serde_json::json!({"from": "-1h"})).unwrap();
        assert_eq!(range, self::range(Some("-1h"), None));
        let filter: GraphFilterArgs =
            serde_json::from_value(serde_json::json!({"exe": "sshd", "port": "22"})).unwrap();
        assert_eq!(filter.exe.as_deref(), Some("sshd"));
        assert_eq!(filter.resolve().unwrap().port, Some(22));
    }
}
