//! What an agent lost before the collector stored it, and why: the body of
//! `POST /api/v1/dropped`, which the agent also keeps on disk until the
//! collector has it (so it outlives restarts of either side).

use connscope_event::Timestamp;
use serde::{Deserialize, Serialize};

/// Events the agent lost before the collector stored them, not yet
/// reported to the collector: one report per agent state and reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedReport {
    /// The agent state that numbered them (empty: before instance ids).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance: String,
    /// Why (see [`crate::drop_reason`]); a report without one means `spool-full`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Number of events lost (for a crash: of numbers that may have been).
    pub events: u64,
    /// Inclusive sequence ranges of the lost events, merged, oldest first.
    pub ranges: Vec<(u64, u64)>,
    /// When the agent was not running (RFC 3339 pairs, from and to): it
    /// saw no connections then, numbered or not.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "windows_text")]
    pub down: Vec<(Timestamp, Timestamp)>,
}

/// Time windows as pairs of RFC 3339 texts, as the API shows times.
mod windows_text {
    use connscope_event::Timestamp;
    use serde::{de::Error, Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(
        windows: &[(Timestamp, Timestamp)],
        to: S,
    ) -> Result<S::Ok, S::Error> {
        let text: Vec<(String, String)> = windows
            .iter()
            .map(|(from, to)| (from.to_string(), to.to_string()))
            .collect();
        text.serialize(to)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        from: D,
    ) -> Result<Vec<(Timestamp, Timestamp)>, D::Error> {
        let text = Vec::<(String, String)>::deserialize(from)?;
        text.iter()
            .map(|(a, b)| {
                let parse = |t: &str| {
                    t.parse::<Timestamp>().map_err(|e| {
                        let shown: String = t.chars().take(40).collect();
                        D::Error::custom(format!("down: {shown:?}: {e}"))
                    })
                };
                Ok((parse(a)?, parse(b)?))
            })
            .collect()
    }
}

impl DroppedReport {
    pub fn is_empty(&self) -> bool {
        self.events == 0 && self.down.is_empty()
    }

    /// Adds the inclusive range `first..=last` of `events` lost events
    /// (ranges are added oldest first; touching ones merge).
    pub fn add_range(&mut self, first: u64, last: u64, events: u64) {
        self.events = self.events.saturating_add(events);
        match self.ranges.last_mut() {
            Some(prev) if prev.1.checked_add(1) == Some(first) => prev.1 = last,
            _ => self.ranges.push((first, last)),
        }
    }

    /// Removes what `reported` covered (a prefix of what was dropped, since
    /// reports only grow at the end while one is in flight).
    pub fn subtract(&mut self, reported: &DroppedReport) {
        self.down.retain(|window| !reported.down.contains(window));
        self.events = self.events.saturating_sub(reported.events);
        for range in &reported.ranges {
            if let Some(pos) = self.ranges.iter().position(|r| r.0 == range.0) {
                if self.ranges[pos].1 == range.1 {
                    self.ranges.remove(pos);
                } else {
                    self.ranges[pos].0 = range.1 + 1;
                }
            }
        }
    }
}
