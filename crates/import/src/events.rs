//! Pass 2's middle stage, on the calling thread: the parsed lines of each
//! file, in order, become keyed events. A classic timestamp gets its year
//! ([`year`](crate::year)) and its time in the zone
//! ([`clock`](crate::clock)), each line its key ([`Occurrences`]), each
//! disconnect its connect ([`join`](crate::join)); events go to the
//! [`Batcher`] and full batches to the storing thread. Every line is
//! counted, every unreadable one reported as it comes.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, SyncSender};

use connscope_store::{AgentId, EventKey, KeyedEvent};
use connscope_tcpspy_log::LogTime;
use jiff::tz::TimeZone;

use crate::clock::{warn_if_mtime_disagrees, ClassicClock};
use crate::first_pass::FileInfo;
use crate::hash::FastHash;
use crate::join::OpenConnections;
use crate::parse::{ParsedLine, Read};
use crate::report::{LineError, Tally};
use crate::write::Batcher;

/// Turns what the reader sends (`parsed`, files in the order of `files`)
/// into batches for `sender`, giving emptied chunks back to the reader
/// through `spare_chunks`; classic timestamps are read in `given_zone`, or
/// this machine's zone with a warning for each file that looks foreign.
/// Stops early when the storing thread is gone (its error ends the import).
pub(crate) fn build_events(
    files: &[FileInfo],
    given_zone: Option<&TimeZone>,
    parsed: Receiver<Read>,
    spare_chunks: SyncSender<Vec<ParsedLine>>,
    mut batcher: Batcher,
    sender: SyncSender<(AgentId, Vec<KeyedEvent>)>,
    tally: &mut Tally<'_>,
) {
    let time_zone = given_zone.cloned().unwrap_or_else(TimeZone::system);
    let mut clock = ClassicClock::new(time_zone.clone());
    let mut open = OpenConnections::default();
    let mut parsed = parsed.into_iter();
    'files: for file in files {
        let mtime = jiff::Timestamp::try_from(file.mtime).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let date = time_zone.to_datetime(mtime).date();
        if given_zone.is_none() {
            warn_if_mtime_disagrees(file, date, mtime, &time_zone);
        }
        let mut years = file.years.first_year(date);
        let mut occurrences = Occurrences::default();
        for read in parsed.by_ref() {
            let mut lines = match read {
                Read::Lines(lines) => lines,
                Read::End(Ok(())) => continue 'files,
                Read::End(Err((line, e))) => {
                    tally.error(LineError::unreadable(&file.path, line, &e));
                    continue 'files;
                }
            };
            for line in lines.drain(..) {
                tally.summary.lines += 1;
                let (number, time, first_key, mut event) = match line {
                    ParsedLine::Skipped => {
                        tally.summary.skipped += 1;
                        continue;
                    }
                    ParsedLine::Other(time) => {
                        if let LogTime::Classic(t) = time {
                            years.year_of(t);
                        }
                        tally.summary.skipped += 1;
                        continue;
                    }
                    ParsedLine::Garbled {
                        number,
                        column,
                        message,
                    } => {
                        tally.error(LineError {
                            path: file.path.clone(),
                            line: number,
                            column,
                            message,
                        });
                        continue;
                    }
                    ParsedLine::Connection {
                        number,
                        time,
                        first_key,
                        event,
                    } => (number, time, first_key, event),
                };
                // The key is filed under a time that does not depend
                // on --tz: a classic line's wall-clock time.
                let (timestamp, key_time) = match time {
                    LogTime::Rfc3339(ts) => (ts, ts),
                    LogTime::Classic(t) => {
                        let year = years.year_of(t);
                        match clock.classic_timestamp(year, t) {
                            Ok(times) => times,
                            Err(reason) => {
                                tally.error(LineError {
                                    path: file.path.clone(),
                                    line: number,
                                    column: 1,
                                    message: format!("timestamp: {t} in {year}: {reason}"),
                                });
                                continue;
                            }
                        }
                    }
                };
                tally.summary.events_read += 1;
                event.timestamp = timestamp;
                if open.join(&mut event) {
                    tally.summary.joined += 1;
                }
                let keyed = KeyedEvent {
                    key: occurrences.key_of(time, first_key),
                    key_time,
                    event,
                };
                // A failed send means the storer failed: its error
                // ends the import, and dropping `parsed` stops the reader.
                if let Some(full) = batcher.push(keyed) {
                    if sender.send(full).is_err() {
                        break 'files;
                    }
                }
            }
            let _ = spare_chunks.try_send(lines);
        }
    }
    for full in batcher.drain() {
        if sender.send(full).is_err() {
            break;
        }
    }
}

/// Counts identical lines within one second of one file, so a line logged
/// twice in the same second (the same connection made twice) gets two keys,
/// while the same line read again later gets the same key.
#[derive(Default)]
struct Occurrences {
    time: Option<LogTime>,
    seen: HashMap<EventKey, u32, FastHash>,
}

impl Occurrences {
    /// The key of a line whose hash is `line_key`: the hash itself for its
    /// first occurrence, a hash of it and the count for repeats.
    fn key_of(&mut self, time: LogTime, line_key: EventKey) -> EventKey {
        if self.time != Some(time) {
            self.time = Some(time);
            self.seen.clear();
        }
        let n = self.seen.entry(line_key).or_default();
        *n += 1;
        match *n - 1 {
            0 => line_key,
            repeat => EventKey::of_bytes(&[&line_key.0.to_le_bytes(), &repeat.to_le_bytes()]),
        }
    }
}

#[cfg(test)]
mod tests {
    use connscope_event::Timestamp;

    use super::*;

    #[test]
    fn identical_lines_in_one_second_get_distinct_keys_that_repeat() {
        let t = LogTime::Rfc3339(Timestamp::from_nanos(1));
        let line = EventKey::of_bytes(&[b"same"]);
        let mut first = Occurrences::default();
        let a = first.key_of(t, line);
        let b = first.key_of(t, line);
        assert_ne!(a, b);
        let mut again = Occurrences::default();
        assert_eq!(again.key_of(t, line), a);
        assert_eq!(again.key_of(t, line), b);
        // A new second starts the count again.
        let later = LogTime::Rfc3339(Timestamp::from_nanos(2));
        assert_eq!(again.key_of(later, line), a);
    }
}
