//! Rule hit counters: what the store keeps of the counters agents read from
//! their loaded firewall table (docs/POLICY.md "Rule hygiene").
//!
//! An agent reports each rule's counter *since its table was loaded*; the
//! counter restarts at every load (a new revision, a tamper restore). The
//! store turns those readings into what hygiene needs and a reading alone
//! cannot tell: the packets a rule matched over all loads, and when its
//! counter last went up. This module is that arithmetic, so both backends
//! compute it alike; they only keep one [`HostRuleCounter`] per host,
//! policy, version and rule.

use std::collections::BTreeMap;

use connscope_event::Timestamp;

/// One rule's counter as an agent read it from its loaded table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCount {
    /// The rule's place in the policy document (`inbound[2]`), or
    /// `end:input`, `golden:...` for the rules the agent adds.
    pub rule: String,
    pub packets: u64,
    pub bytes: u64,
}

/// What the store keeps per host, policy, version and rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostRuleCounter {
    /// The assignment revision of the last reading.
    pub revision: u64,
    /// The last reading as reported (since the table's load).
    pub read_packets: u64,
    pub read_bytes: u64,
    /// Added up over every load.
    pub packets: u64,
    pub bytes: u64,
    pub first_reported: Timestamp,
    pub last_reported: Timestamp,
    /// When a reading first showed the counter higher than the one before.
    pub last_hit: Option<Timestamp>,
}

impl HostRuleCounter {
    /// The state after a reading at `at` of assignment `revision`, from the
    /// state before it (`None`: the first reading). A reading older than
    /// the last one kept changes nothing (`None` back): reports may arrive
    /// out of order through several collectors.
    pub fn after(
        before: Option<&HostRuleCounter>,
        revision: u64,
        at: Timestamp,
        count: &RuleCount,
    ) -> Option<HostRuleCounter> {
        let Some(before) = before else {
            return Some(HostRuleCounter {
                revision,
                read_packets: count.packets,
                read_bytes: count.bytes,
                packets: count.packets,
                bytes: count.bytes,
                first_reported: at,
                last_reported: at,
                last_hit: (count.packets > 0).then_some(at),
            });
        };
        if at <= before.last_reported {
            return None;
        }
        // A new revision was loaded afresh, and a counter that went down was
        // reloaded (tamper restore): either way it counts from zero again.
        let restarted = revision != before.revision || count.packets < before.read_packets;
        let (new_packets, new_bytes) = if restarted {
            (count.packets, count.bytes)
        } else {
            (
                count.packets - before.read_packets,
                count.bytes.saturating_sub(before.read_bytes),
            )
        };
        Some(HostRuleCounter {
            revision,
            read_packets: count.packets,
            read_bytes: count.bytes,
            packets: before.packets.saturating_add(new_packets),
            bytes: before.bytes.saturating_add(new_bytes),
            first_reported: before.first_reported,
            last_reported: at,
            last_hit: if new_packets > 0 {
                Some(at)
            } else {
                before.last_hit
            },
        })
    }
}

/// One rule of one policy version, over every host that reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleHits {
    pub policy: String,
    pub version: u32,
    pub rule: String,
    /// Hosts that reported the rule's counter.
    pub hosts: u32,
    pub packets: u64,
    pub bytes: u64,
    /// The first and the last reading of any host.
    pub first_reported: Timestamp,
    pub last_reported: Timestamp,
    /// When any host's counter last went up; `None`: never.
    pub last_hit: Option<Timestamp>,
}

/// Folds per-host rows into one [`RuleHits`] per policy, version and rule,
/// ordered by policy, version and rule.
pub fn rule_hits_of(
    rows: impl IntoIterator<Item = (String, u32, String, HostRuleCounter)>,
) -> Vec<RuleHits> {
    let mut by_rule: BTreeMap<(String, u32, String), RuleHits> = BTreeMap::new();
    for (policy, version, rule, counter) in rows {
        let entry = by_rule
            .entry((policy.clone(), version, rule.clone()))
            .or_insert_with(|| RuleHits {
                policy,
                version,
                rule,
                hosts: 0,
                packets: 0,
                bytes: 0,
                first_reported: counter.first_reported,
                last_reported: counter.last_reported,
                last_hit: None,
            });
        entry.hosts += 1;
        entry.packets = entry.packets.saturating_add(counter.packets);
        entry.bytes = entry.bytes.saturating_add(counter.bytes);
        entry.first_reported = entry.first_reported.min(counter.first_reported);
        entry.last_reported = entry.last_reported.max(counter.last_reported);
        entry.last_hit = entry.last_hit.max(counter.last_hit);
    }
    by_rule.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_nanos(secs * 1_000_000_000)
    }

    fn count(packets: u64) -> RuleCount {
        RuleCount {
            rule: "inbound[0]".into(),
            packets,
            bytes: packets * 100,
        }
    }

    #[test]
    fn increases_are_hits_and_reloads_count_from_zero() {
        let first = HostRuleCounter::after(None, 1, at(10), &count(0)).unwrap();
        assert_eq!(first.last_hit, None);
        let same = HostRuleCounter::after(Some(&first), 1, at(20), &count(0)).unwrap();
        assert_eq!((same.packets, same.last_hit), (0, None));
        let hit = HostRuleCounter::after(Some(&same), 1, at(30), &count(5)).unwrap();
        assert_eq!((hit.packets, hit.last_hit), (5, Some(at(30))));
        let quiet = HostRuleCounter::after(Some(&hit), 1, at(40), &count(5)).unwrap();
        assert_eq!((quiet.packets, quiet.last_hit), (5, Some(at(30))));
        // Reloaded by a tamper restore: 3 is three new packets.
        let restored = HostRuleCounter::after(Some(&quiet), 1, at(50), &count(3)).unwrap();
        assert_eq!((restored.packets, restored.last_hit), (8, Some(at(50))));
        // A new revision: loaded afresh, 4 is four new packets.
        let revised = HostRuleCounter::after(Some(&restored), 2, at(60), &count(4)).unwrap();
        assert_eq!((revised.packets, revised.bytes), (12, 1200));
        assert_eq!(revised.first_reported, at(10));
        // An older report arriving late changes nothing.
        assert_eq!(
            HostRuleCounter::after(Some(&revised), 1, at(55), &count(9)),
            None
        );
    }

    #[test]
    fn hosts_fold_into_one_row_per_rule() {
        let a = HostRuleCounter::after(None, 1, at(10), &count(2)).unwrap();
        let b = HostRuleCounter::after(None, 1, at(20), &count(0)).unwrap();
        let rows = rule_hits_of([
            ("ws".to_owned(), 1, "inbound[0]".to_owned(), a),
            ("ws".to_owned(), 1, "inbound[0]".to_owned(), b),
            ("ws".to_owned(), 1, "end:input".to_owned(), b),
        ]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].rule, "end:input");
        let inbound = &rows[1];
        assert_eq!((inbound.hosts, inbound.packets), (2, 2));
        assert_eq!(inbound.first_reported, at(10));
        assert_eq!(inbound.last_reported, at(20));
        assert_eq!(inbound.last_hit, Some(at(10)));
    }
}
