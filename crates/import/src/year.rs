//! Which year a classic syslog timestamp (`Nov 24 19:26:22`, no year, no
//! zone) belongs to.
//!
//! A file's modification time is when its last line was written (logrotate,
//! gzip, `mv`, `cp -p` and rsync keep it). So the last line belongs to the
//! year that puts it on or before the mtime's date — with two days of slack:
//! the mtime's date is taken in the zone the importer was given, which may
//! not be the zone that wrote the log, and two zones from -12 to +14 are up to
//! 26 hours, so up to two calendar days, apart. Without the slack, a CET
//! host's `Jan  4 00:00:08` with an mtime of `2026-01-03T23:00:08Z` read in UTC
//! would go to the year before: a one-hour zone error must never become a
//! one-year error. (A file written on Jan 2 whose last line says Dec 31 still
//! goes to the year before.)
//!
//! Walking backwards from there, the year goes down by one each time the
//! month jumps *up* by more than six (Jan back to Dec); smaller backward steps
//! are clock corrections, not New Year. The first pass over a file counts
//! those wraps; the second assigns years forward.

use connscope_tcpspy_log::ClassicTime;
use jiff::civil::Date;
use jiff::ToSpan;

/// How many days after the mtime's date a last line may be and still belong
/// to the mtime's year (see the module docs).
const SLACK_DAYS: i32 = 2;

/// What the first pass learns about a file's classic timestamps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct YearScan {
    wraps: u32,
    last: Option<ClassicTime>,
}

fn is_new_year(previous_month: u8, month: u8) -> bool {
    previous_month > month + 6
}

impl YearScan {
    pub fn observe(&mut self, t: ClassicTime) {
        if let Some(last) = self.last {
            if is_new_year(last.month, t.month) {
                self.wraps += 1;
            }
        }
        self.last = Some(t);
    }

    /// The file's last classic timestamp, and its year given the mtime's
    /// date in the log's zone.
    pub fn last_line(&self, mtime: Date) -> Option<(i16, ClassicTime)> {
        let last = self.last?;
        let latest = mtime.checked_add(SLACK_DAYS.days()).unwrap_or(mtime);
        let after_latest = (last.month as i8, last.day as i8) > (latest.month(), latest.day());
        let year = latest.year() - i16::from(after_latest);
        Some((year, last))
    }

    /// The year of the file's first line, given the mtime's date in the
    /// log's zone.
    pub fn first_year(&self, mtime: Date) -> YearWalk {
        let last_year = self.last_line(mtime).map_or(mtime.year(), |(year, _)| year);
        YearWalk {
            year: last_year - self.wraps as i16,
            previous_month: None,
        }
    }
}

/// Assigns years to a file's classic timestamps in file order.
#[derive(Debug, Clone, Copy)]
pub struct YearWalk {
    year: i16,
    previous_month: Option<u8>,
}

impl YearWalk {
    pub fn year_of(&mut self, t: ClassicTime) -> i16 {
        if let Some(previous) = self.previous_month {
            if is_new_year(previous, t.month) {
                self.year += 1;
            }
        }
        self.previous_month = Some(t.month);
        self.year
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(month: u8, day: u8) -> ClassicTime {
        ClassicTime {
            month,
            day,
            hour: 0,
            minute: 0,
            second: 0,
        }
    }

    fn years(lines: &[ClassicTime], mtime: jiff::civil::Date) -> Vec<i16> {
        let mut scan = YearScan::default();
        lines.iter().for_each(|&l| scan.observe(l));
        let mut walk = scan.first_year(mtime);
        lines.iter().map(|&l| walk.year_of(l)).collect()
    }

    #[test]
    fn a_file_spanning_new_year() {
        let lines = [t(12, 30), t(12, 31), t(1, 1), t(1, 2)];
        assert_eq!(
            years(&lines, jiff::civil::date(2027, 1, 2)),
            [2026, 2026, 2027, 2027]
        );
    }

    #[test]
    fn a_last_line_after_the_mtime_date_is_last_year() {
        // Written on Dec 31, copied without keeping its mtime on Jan 3.
        assert_eq!(
            years(&[t(12, 30), t(12, 31)], jiff::civil::date(2027, 1, 3)),
            [2026, 2026]
        );
        assert_eq!(years(&[t(6, 1)], jiff::civil::date(2026, 6, 1)), [2026]);
    }

    #[test]
    fn small_backward_steps_are_not_new_year() {
        assert_eq!(
            years(&[t(3, 1), t(2, 28), t(3, 1)], jiff::civil::date(2026, 3, 2)),
            [2026, 2026, 2026]
        );
    }

    #[test]
    fn two_new_years_in_one_file() {
        let lines = [t(12, 31), t(1, 1), t(6, 1), t(12, 31), t(1, 1)];
        assert_eq!(
            years(&lines, jiff::civil::date(2028, 1, 1)),
            [2026, 2027, 2027, 2027, 2028]
        );
    }

    /// The year a line gets when its file's mtime is read in `mtime_zone`
    /// and the line was written at `written` in `line_zone`.
    fn year_across_zones(written: &str, line_zone: &str, mtime_zone: &str) -> (i16, i16) {
        let written: jiff::Timestamp = written.parse().unwrap();
        let local = written.to_zoned_datetime(jiff::tz::TimeZone::get(line_zone).unwrap());
        let line = ClassicTime {
            month: local.month() as u8,
            day: local.day() as u8,
            hour: local.hour() as u8,
            minute: local.minute() as u8,
            second: local.second() as u8,
        };
        let mtime = written.to_zoned_datetime(jiff::tz::TimeZone::get(mtime_zone).unwrap());
        (years(&[line], mtime.date())[0], local.year())
    }

    #[test]
    fn a_cet_file_read_in_utc_keeps_its_year() {
        // syslog.1 of a CET host, last line "Jan  4 00:00:08", mtime
        // 2026-01-03T23:00:08Z: the mtime's UTC date is a day before the line's.
        let mtime = jiff::civil::date(2026, 1, 3);
        assert_eq!(years(&[t(12, 28), t(1, 4)], mtime), [2025, 2026]);
    }

    #[test]
    fn every_zone_pair_from_minus_12_to_plus_14_keeps_the_year() {
        let zones = ["Etc/GMT+12", "UTC", "Europe/Berlin", "Pacific/Kiritimati"];
        for written in [
            "2026-12-31T10:00:00Z",
            "2026-12-31T23:59:59Z",
            "2027-01-01T00:00:00Z",
            "2027-01-01T11:59:59Z",
            "2027-01-01T12:00:00Z",
            "2027-06-30T12:00:00Z",
        ] {
            for line_zone in zones {
                for mtime_zone in zones {
                    let (got, want) = year_across_zones(written, line_zone, mtime_zone);
                    assert_eq!(
                        got, want,
                        "line written {written} in {line_zone}, mtime read in {mtime_zone}"
                    );
                }
            }
        }
    }

    #[test]
    fn more_than_two_days_after_the_mtime_is_last_year() {
        let mtime = jiff::civil::date(2027, 1, 3);
        assert_eq!(years(&[t(1, 5)], mtime), [2027]);
        assert_eq!(years(&[t(1, 6)], mtime), [2026]);
        // Across New Year: the mtime on Dec 31, the line on Jan 2 of the next year.
        assert_eq!(years(&[t(1, 2)], jiff::civil::date(2026, 12, 31)), [2027]);
        assert_eq!(years(&[t(1, 3)], jiff::civil::date(2026, 12, 31)), [2026]);
    }
}
