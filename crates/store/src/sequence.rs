//! Sequence ranges: which numbered events of an agent the store holds.
//!
//! Agents number their events 1, 2, 3, ... without gaps, so what a store holds
//! from one agent is almost always a single range, and a handful of ranges when
//! something was lost. Keeping the ranges (not the numbers) makes the duplicate
//! check and the gap report cheap, and they survive raw-event retention.

/// A set of sequence numbers as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SequenceRanges {
    ranges: Vec<(u64, u64)>,
}

impl SequenceRanges {
    pub fn new() -> Self {
        SequenceRanges::default()
    }

    /// Builds the set from ranges in any order, merging overlaps.
    pub fn from_ranges(ranges: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut set = SequenceRanges::new();
        for (first, last) in ranges {
            set.insert_range(first, last);
        }
        set
    }

    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn contains(&self, seq: u64) -> bool {
        let i = self.ranges.partition_point(|&(_, last)| last < seq);
        self.ranges.get(i).is_some_and(|&(first, _)| first <= seq)
    }

    /// Adds `seq`; returns false when it was already there.
    pub fn insert(&mut self, seq: u64) -> bool {
        // Fast path: the next number of the newest range, the common case.
        if let Some(last) = self.ranges.last_mut() {
            if last.1.checked_add(1) == Some(seq) {
                last.1 = seq;
                return true;
            }
        }
        if self.contains(seq) {
            return false;
        }
        self.insert_range(seq, seq);
        true
    }

    /// Adds every number from `first` to `last`.
    pub fn insert_range(&mut self, first: u64, last: u64) {
        let (first, last) = (first.min(last), first.max(last));
        // Ranges that overlap or touch [first, last] merge with it.
        let start = self
            .ranges
            .partition_point(|&(_, l)| l.saturating_add(1) < first);
        let end = self
            .ranges
            .partition_point(|&(f, _)| f <= last.saturating_add(1));
        let mut merged = (first, last);
        for &(f, l) in &self.ranges[start..end] {
            merged = (merged.0.min(f), merged.1.max(l));
        }
        self.ranges.splice(start..end, [merged]);
    }

    /// How many numbers the set holds.
    pub fn count(&self) -> u64 {
        self.ranges.iter().map(|&(f, l)| l - f + 1).sum()
    }

    /// The numbers missing between 1 and the highest one held: what was lost
    /// (or is still in flight).
    pub fn gaps(&self) -> Vec<(u64, u64)> {
        self.last()
            .map_or_else(Vec::new, |last| self.gaps_within(1, last))
    }

    /// The numbers missing from `first` to `last` (inclusive).
    pub fn gaps_within(&self, first: u64, last: u64) -> Vec<(u64, u64)> {
        let mut gaps = Vec::new();
        let mut next = first;
        for &(f, l) in &self.ranges {
            if f > last {
                break;
            }
            if f > next {
                gaps.push((next, f - 1));
            }
            next = next.max(l.saturating_add(1));
        }
        if next <= last {
            gaps.push((next, last));
        }
        gaps
    }

    /// The highest number held.
    pub fn last(&self) -> Option<u64> {
        self.ranges.last().map(|&(_, l)| l)
    }

    /// How many numbers of `ranges` (sorted and disjoint, as
    /// [`SequenceRanges::gaps`] gives them) the set holds.
    pub fn count_within(&self, ranges: &[(u64, u64)]) -> u64 {
        let mut n = 0;
        for &(first, last) in ranges {
            let start = self.ranges.partition_point(|&(_, l)| l < first);
            for &(f, l) in self.ranges[start..].iter().take_while(|&&(f, _)| f <= last) {
                n += l.min(last) - f.max(first) + 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn consecutive_numbers_stay_one_range() {
        let mut s = SequenceRanges::new();
        for n in 1..=100 {
            assert!(s.insert(n));
        }
        assert!(!s.insert(50));
        assert_eq!(s.ranges(), &[(1, 100)]);
        assert!(s.gaps().is_empty());
    }

    #[test]
    fn gaps_show_and_close() {
        let mut s = SequenceRanges::from_ranges([(5, 7), (10, 12)]);
        assert_eq!(s.gaps(), vec![(1, 4), (8, 9)]);
        assert_eq!(SequenceRanges::from_ranges(s.gaps()).count(), 6);
        for n in [8, 9] {
            assert!(s.insert(n));
        }
        assert_eq!(s.ranges(), &[(5, 12)]);
        s.insert_range(1, 4);
        assert_eq!(s.ranges(), &[(1, 12)]);
        assert_eq!(s.count(), 12);
    }

    #[test]
    fn counts_what_falls_within_ranges() {
        let s = SequenceRanges::from_ranges([(3, 5), (8, 8), (20, 30)]);
        assert_eq!(s.count_within(&[(1, 4), (6, 7), (8, 25)]), 2 + 1 + 6);
        assert_eq!(s.count_within(&[]), 0);
        assert_eq!(s.count_within(&[(31, 40)]), 0);
    }

    proptest! {
        #[test]
        fn behaves_like_a_set(nums in proptest::collection::vec(1u64..200, 0..300)) {
            let mut s = SequenceRanges::new();
            let mut reference = std::collections::BTreeSet::new();
            for n in nums {
                prop_assert_eq!(s.insert(n), reference.insert(n));
            }
            for n in 0..210 {
                prop_assert_eq!(s.contains(n), reference.contains(&n));
            }
            prop_assert_eq!(s.count(), reference.len() as u64);
            for w in s.ranges().windows(2) {
                prop_assert!(w[0].1 + 1 < w[1].0);
            }
        }
    }
}
