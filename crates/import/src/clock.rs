//! When a line happened. A classic timestamp (no year, no zone), given its
//! year by [`year`](crate::year), is read in the importer's zone for the
//! event's time, and as if it were UTC for its key's time (its wall-clock
//! time, the same whatever `--tz` says). And a file whose last line and
//! modification time disagree in this machine's zone is warned about: it may
//! come from another zone.

use connscope_event::Timestamp;
use connscope_tcpspy_log::ClassicTime;
use jiff::tz::TimeZone;

use crate::first_pass::FileInfo;

/// Classic timestamps to times, in one zone.
pub(crate) struct ClassicClock {
    time_zone: TimeZone,
    /// The last hour converted: lines come in time order, so most lines
    /// reuse it.
    hour_cache: Option<HourStarts>,
}

/// An hour of classic timestamps: (year, month, day, hour) and when it
/// starts in UTC and on the wall clock (read as if UTC), in nanoseconds.
#[derive(Clone, Copy)]
struct HourStarts {
    hour: (i16, u8, u8, u8),
    utc: i64,
    wall: i64,
}

impl ClassicClock {
    pub(crate) fn new(time_zone: TimeZone) -> Self {
        ClassicClock {
            time_zone,
            hour_cache: None,
        }
    }

    /// The line's time in UTC, and its wall-clock time read as if it were UTC.
    pub(crate) fn classic_timestamp(
        &mut self,
        year: i16,
        t: ClassicTime,
    ) -> Result<(Timestamp, Timestamp), String> {
        let hour = (year, t.month, t.day, t.hour);
        let starts = match self.hour_cache {
            Some(starts) if starts.hour == hour => starts,
            _ => {
                let civil = jiff::civil::DateTime::new(
                    year,
                    t.month as i8,
                    t.day as i8,
                    t.hour as i8,
                    0,
                    0,
                    0,
                )
                .map_err(|e| e.to_string())?;
                let start_in = |zone: TimeZone| {
                    civil
                        .to_zoned_datetime(zone)
                        .map(|z| z.timestamp().as_nanosecond() as i64)
                        .map_err(|e| e.to_string())
                };
                let starts = HourStarts {
                    hour,
                    utc: start_in(self.time_zone.clone())?,
                    wall: start_in(TimeZone::UTC)?,
                };
                self.hour_cache = Some(starts);
                starts
            }
        };
        // A leap second (:60) is read as :59.
        let offset = (i64::from(t.minute) * 60 + i64::from(t.second.min(59))) * 1_000_000_000;
        Ok((
            Timestamp::from_nanos(starts.utc + offset),
            Timestamp::from_nanos(starts.wall + offset),
        ))
    }
}

/// How far a file's last line may be from its mtime before the zone is
/// suspect: syslog writes lag a little, while zones differ by at least 15
/// minutes.
const MTIME_TOLERANCE: jiff::SignedDuration = jiff::SignedDuration::from_mins(10);

/// Warns when the last classic line, read in this machine's zone, is not
/// when the file was last written: the file likely comes from a machine in
/// another zone (and needs `--tz`), or was copied without its mtime.
pub(crate) fn warn_if_mtime_disagrees(
    file: &FileInfo,
    mtime_date: jiff::civil::Date,
    mtime: jiff::Timestamp,
    zone: &TimeZone,
) {
    let Some((year, t)) = file.years.last_line(mtime_date) else {
        return;
    };
    let Ok(last) = jiff::civil::DateTime::new(
        year,
        t.month as i8,
        t.day as i8,
        t.hour as i8,
        t.minute as i8,
        t.second.min(59) as i8,
        0,
    )
    .and_then(|civil| civil.to_zoned_datetime(zone.clone())) else {
        return;
    };
    let apart = last.timestamp().duration_since(mtime);
    if apart.abs() > MTIME_TOLERANCE {
        let side = if apart.is_negative() {
            "before"
        } else {
            "after"
        };
        tracing::warn!(
            file = %file.path.display(),
            "the last line ({t}) is {:#} {side} the file's modification time, read in this machine's zone: if the log comes from a machine in another time zone, give --tz; if it was copied without keeping its mtime, its years may be wrong",
            apart.abs()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_times_use_the_zone() {
        let mut b = ClassicClock::new(TimeZone::get("Europe/Berlin").unwrap());
        let t = ClassicTime {
            month: 11,
            day: 24,
            hour: 20,
            minute: 10,
            second: 19,
        };
        let (utc, wall) = b.classic_timestamp(2026, t).unwrap();
        assert_eq!(utc.to_string(), "2026-11-24T19:10:19.000000000Z");
        assert_eq!(
            wall.to_string(),
            "2026-11-24T20:10:19.000000000Z",
            "the wall-clock time, the same in every zone"
        );
        let feb29 = ClassicTime {
            month: 2,
            day: 29,
            hour: 0,
            minute: 0,
            second: 0,
        };
        assert!(b.classic_timestamp(2026, feb29).is_err());
        assert!(b.classic_timestamp(2028, feb29).is_ok());
    }
}
