//! Which year a classic syslog timestamp (`Nov 24 19:26:22`, no year, no
//! zone) belongs to.
//!
//! A file's modification time is when its last line was written (logrotate,
//! gzip, `mv`, `cp -p` and rsync keep it). So the last line belongs to the
//! year of the mtime — or the year before, if its month-day lies after the
//! mtime's (a file last written on Jan 2 whose last line says Dec 31).
//! Walking backwards from there, the year goes down by one each time the
//! month jumps *up* by more than six (Jan back to Dec); smaller backward steps
//! are clock corrections, not New Year. The first pass over a file counts
//! those wraps; the second assigns years forward.

use connscope_tcpspy_log::ClassicTime;

/// What the first pass learns about a file's classic timestamps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct YearScan {
    wraps: u32,
    last: Option<(u8, u8)>,
}

fn is_new_year(previous_month: u8, month: u8) -> bool {
    previous_month > month + 6
}

impl YearScan {
    pub fn observe(&mut self, t: ClassicTime) {
        if let Some((month, _)) = self.last {
            if is_new_year(month, t.month) {
                self.wraps += 1;
            }
        }
        self.last = Some((t.month, t.day));
    }

    /// The year of the file's first line, given the mtime's (year, month, day)
    /// in the log's zone.
    pub fn first_year(&self, mtime: (i16, i8, i8)) -> YearWalk {
        let (year, month, day) = mtime;
        let last_year = match self.last {
            Some((m, d)) if (m as i8, d as i8) > (month, day) => year - 1,
            _ => year,
        };
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

    fn years(lines: &[ClassicTime], mtime: (i16, i8, i8)) -> Vec<i16> {
        let mut scan = YearScan::default();
        lines.iter().for_each(|&l| scan.observe(l));
        let mut walk = scan.first_year(mtime);
        lines.iter().map(|&l| walk.year_of(l)).collect()
    }

    #[test]
    fn a_file_spanning_new_year() {
        let lines = [t(12, 30), t(12, 31), t(1, 1), t(1, 2)];
        assert_eq!(years(&lines, (2027, 1, 2)), [2026, 2026, 2027, 2027]);
    }

    #[test]
    fn a_last_line_after_the_mtime_date_is_last_year() {
        // Written on Dec 31, copied without keeping its mtime on Jan 3.
        assert_eq!(years(&[t(12, 30), t(12, 31)], (2027, 1, 3)), [2026, 2026]);
        assert_eq!(years(&[t(6, 1)], (2026, 6, 1)), [2026]);
    }

    #[test]
    fn small_backward_steps_are_not_new_year() {
        assert_eq!(
            years(&[t(3, 1), t(2, 28), t(3, 1)], (2026, 3, 2)),
            [2026, 2026, 2026]
        );
    }

    #[test]
    fn two_new_years_in_one_file() {
        let lines = [t(12, 31), t(1, 1), t(6, 1), t(12, 31), t(1, 1)];
        assert_eq!(years(&lines, (2028, 1, 1)), [2026, 2027, 2027, 2027, 2028]);
    }
}
