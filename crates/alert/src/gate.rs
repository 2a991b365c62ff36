//! What is told: each edge once per dedup window, and at most N alerts per
//! rate period, the rest counted into one [`MoreDrift`] summary told when
//! the period ends. Pure logic on a clock passed in, so it is tested
//! without sleeping.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use connscope_event::{Direction, Protocol};

use crate::message::MoreDrift;
use crate::DriftAlert;

type EdgeKey = (String, Direction, Protocol, u16, IpAddr);

/// Hosts named in a summary at most (the count is always exact).
const SUMMARY_HOSTS: usize = 20;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Tell it now.
    Tell,
    /// The edge was told within the dedup window.
    Duplicate,
    /// Over the rate: counted into the next summary.
    Suppressed,
}

pub(crate) struct Gate {
    dedup_window: Duration,
    rate: u32,
    period: Duration,
    /// When each edge was last admitted (told or suppressed).
    seen: HashMap<EdgeKey, Instant>,
    last_prune: Instant,
    /// The current rate period: its start and how many were told in it.
    period_start: Option<Instant>,
    told_in_period: u32,
    pending: Option<MoreDrift>,
}

impl Gate {
    pub(crate) fn new(dedup_window: Duration, rate: u32, period: Duration, now: Instant) -> Gate {
        Gate {
            dedup_window,
            rate,
            period,
            seen: HashMap::new(),
            last_prune: now,
            period_start: None,
            told_in_period: 0,
            pending: None,
        }
    }

    /// Decides about one alert; also returns the previous period's summary
    /// when this alert is the first to see that period ended.
    pub(crate) fn admit(
        &mut self,
        alert: &DriftAlert,
        now: Instant,
    ) -> (Verdict, Option<MoreDrift>) {
        let summary = self.due(now);
        self.prune(now);
        let key = alert.edge_key();
        if let Some(&at) = self.seen.get(&key) {
            if now.duration_since(at) < self.dedup_window {
                return (Verdict::Duplicate, summary);
            }
        }
        // An edge counted into a summary was told too (as a number): it
        // does not come back one by one when the storm is over.
        self.seen.insert(key, now);
        self.period_start.get_or_insert(now);
        if self.told_in_period < self.rate {
            self.told_in_period += 1;
            return (Verdict::Tell, summary);
        }
        let pending = self.pending.get_or_insert_with(|| MoreDrift {
            count: 0,
            hosts: Vec::new(),
            first_at: alert.at,
            last_at: alert.at,
            rate: self.rate,
            period: self.period,
        });
        pending.count += 1;
        pending.first_at = pending.first_at.min(alert.at);
        pending.last_at = pending.last_at.max(alert.at);
        if pending.hosts.len() < SUMMARY_HOSTS && !pending.hosts.contains(&alert.host) {
            let mut hosts: BTreeSet<String> = pending.hosts.drain(..).collect();
            hosts.insert(alert.host.clone());
            pending.hosts = hosts.into_iter().collect();
        }
        (Verdict::Suppressed, summary)
    }

    /// Ends the rate period if it is over, handing back its summary if any
    /// alert was suppressed in it.
    pub(crate) fn due(&mut self, now: Instant) -> Option<MoreDrift> {
        let start = self.period_start?;
        if now.duration_since(start) < self.period {
            return None;
        }
        self.period_start = None;
        self.told_in_period = 0;
        self.pending.take()
    }

    /// When the summary waiting now must be told, if one waits.
    pub(crate) fn summary_deadline(&self) -> Option<Instant> {
        self.pending.as_ref()?;
        self.period_start.map(|start| start + self.period)
    }

    /// The waiting summary now, whatever the time (at shutdown).
    pub(crate) fn take_pending(&mut self) -> Option<MoreDrift> {
        self.pending.take()
    }

    /// Forgets edges told longer ago than the window, at most once a minute,
    /// so memory follows the edges of one window, not of the collector's life.
    fn prune(&mut self, now: Instant) {
        if now.duration_since(self.last_prune) < Duration::from_secs(60) {
            return;
        }
        self.last_prune = now;
        let window = self.dedup_window;
        self.seen.retain(|_, at| now.duration_since(*at) < window);
    }

    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connscope_event::Timestamp;

    fn alert(host: &str, port: u16) -> DriftAlert {
        DriftAlert {
            host: host.into(),
            direction: Direction::Incoming,
            protocol: Protocol::Tcp,
            port,
            local: "10.0.0.1".parse().unwrap(),
            remote: "10.0.0.9".parse().unwrap(),
            remote_name: None,
            executable: Some("/usr/sbin/sshd".into()),
            pid: Some(10),
            user: Some("root".into()),
            uid: Some(0),
            policy: "servers".into(),
            version: 1,
            mode: "audit".into(),
            at: Timestamp::from_nanos(1_000 + i64::from(port)),
        }
    }

    const MINUTE: Duration = Duration::from_secs(60);
    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn an_edge_is_told_once_per_window_and_again_after_it() {
        let t0 = Instant::now();
        let mut gate = Gate::new(DAY, 100, MINUTE, t0);
        assert_eq!(gate.admit(&alert("a", 22), t0).0, Verdict::Tell);
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(gate.admit(&alert("a", 22), later).0, Verdict::Duplicate);
        // Another port, another host: other edges.
        assert_eq!(gate.admit(&alert("a", 23), later).0, Verdict::Tell);
        assert_eq!(gate.admit(&alert("b", 22), later).0, Verdict::Tell);
        let next_day = t0 + DAY + Duration::from_secs(1);
        assert_eq!(gate.admit(&alert("a", 22), next_day).0, Verdict::Tell);
    }

    #[test]
    fn over_the_rate_is_one_summary_when_the_period_ends() {
        let t0 = Instant::now();
        let mut gate = Gate::new(DAY, 3, MINUTE, t0);
        let verdicts: Vec<Verdict> = (0..10)
            .map(|i| gate.admit(&alert(&format!("h{}", i % 2), 1000 + i), t0).0)
            .collect();
        assert_eq!(verdicts.iter().filter(|v| **v == Verdict::Tell).count(), 3);
        assert_eq!(gate.summary_deadline(), Some(t0 + MINUTE));
        assert_eq!(gate.due(t0 + Duration::from_secs(59)), None);
        let summary = gate.due(t0 + MINUTE).expect("a summary");
        assert_eq!(summary.count, 7);
        assert_eq!(summary.hosts, vec!["h0".to_owned(), "h1".to_owned()]);
        assert_eq!(summary.first_at, Timestamp::from_nanos(1_000 + 1003));
        assert_eq!(summary.last_at, Timestamp::from_nanos(1_000 + 1009));
        assert_eq!(gate.summary_deadline(), None);
        // A new period: three more are told, and the suppressed edges stay told.
        let t1 = t0 + MINUTE;
        assert_eq!(gate.admit(&alert("h1", 1009), t1).0, Verdict::Duplicate);
        assert_eq!(gate.admit(&alert("h1", 2000), t1).0, Verdict::Tell);
    }

    #[test]
    fn the_summary_comes_with_the_next_alert_if_no_timer_took_it() {
        let t0 = Instant::now();
        let mut gate = Gate::new(DAY, 1, MINUTE, t0);
        gate.admit(&alert("a", 1), t0);
        assert_eq!(gate.admit(&alert("a", 2), t0).0, Verdict::Suppressed);
        let (verdict, summary) = gate.admit(&alert("a", 3), t0 + MINUTE * 2);
        assert_eq!(verdict, Verdict::Tell);
        assert_eq!(summary.map(|s| s.count), Some(1));
    }

    #[test]
    fn old_edges_are_forgotten() {
        let t0 = Instant::now();
        let mut gate = Gate::new(MINUTE, 1000, MINUTE, t0);
        for port in 0..50 {
            gate.admit(&alert("a", port), t0);
        }
        assert_eq!(gate.remembered(), 50);
        gate.admit(&alert("a", 999), t0 + MINUTE * 3);
        assert_eq!(gate.remembered(), 1);
    }
}
