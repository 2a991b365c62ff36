//! Names for the remote ends of edges, from what the hosts themselves learned
//! (DNS answers, TLS server names: [`connscope_store::NameSighting`]).
//!
//! Rollups carry no names, so ends are named here, at read time: an end
//! `host` connected to at `ip` is named by the names `host` learned for `ip`
//! around that time. The same reading names what was logged without names
//! (imported tcpspy logs, agents without naming): a connection of host H to
//! address A is named N when H made a named (N) connection to A within
//! [`NAME_LIFETIME`] of it. Events carry no TTL, so this one documented
//! window stands for the answer's lifetime; it errs on the long side, as
//! most answers live minutes, and naming at read time means an import gains
//! names as soon as the same host's agent learns them, with nothing rewritten.

use std::collections::HashMap;
use std::net::IpAddr;

use connscope_event::{NameSource, Timestamp};
use connscope_names::registered_domain;
use connscope_store::{NameSighting, RollupQuery, Store, StoreError, TimeRange};

/// How long around a named connection the name is taken to hold for other
/// connections of the same host to the same address (the answer's lifetime,
/// which events do not carry).
pub const NAME_LIFETIME_NANOS: i64 = 3_600 * 1_000_000_000;

/// [`NAME_LIFETIME_NANOS`], for the docs: one hour.
pub const NAME_LIFETIME: &str = "1 hour";

/// One name a host learned for an address, over the hours loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Known {
    name: String,
    source: NameSource,
    connections: u64,
    first_seen: Timestamp,
    last_seen: Timestamp,
}

/// The names hosts learned for remote addresses, by (host, address).
#[derive(Debug, Clone, Default)]
pub struct RemoteNames {
    /// Per (host, address): one entry per name, source and hour.
    by_end: HashMap<(String, IpAddr), Vec<Known>>,
}

impl RemoteNames {
    /// The names learned in `range`, widened by [`NAME_LIFETIME_NANOS`] on
    /// both sides (a connection just inside the range is named by an answer
    /// just outside it).
    pub fn load(store: &dyn Store, range: TimeRange) -> Result<RemoteNames, StoreError> {
        let widened = TimeRange {
            from: Timestamp::from_nanos(range.from.as_nanos().saturating_sub(NAME_LIFETIME_NANOS)),
            to: Timestamp::from_nanos(range.to.as_nanos().saturating_add(NAME_LIFETIME_NANOS)),
        };
        Ok(RemoteNames::from_sightings(&store.remote_names(
            &RollupQuery {
                range: widened,
                host: None,
            },
        )?))
    }

    pub fn from_sightings(sightings: &[NameSighting]) -> RemoteNames {
        let mut by_end: HashMap<(String, IpAddr), Vec<Known>> = HashMap::new();
        for s in sightings {
            by_end
                .entry((s.host.clone(), s.remote_ip))
                .or_default()
                .push(Known {
                    name: s.name.clone(),
                    source: s.source,
                    connections: s.connections,
                    first_seen: s.first_seen,
                    last_seen: s.last_seen,
                });
        }
        RemoteNames { by_end }
    }

    pub fn is_empty(&self) -> bool {
        self.by_end.is_empty()
    }

    /// The name `host` knew `ip` by: of those it learned, the one it used
    /// for most connections (DNS before SNI, then the earliest in byte order
    /// on a tie, so the answer is stable).
    pub fn name_of(&self, host: &str, ip: IpAddr) -> Option<&str> {
        let known = self.by_end.get(&(host.to_owned(), ip))?;
        best_name(known.iter())
    }

    /// [`RemoteNames::name_of`] from the names learned within
    /// [`NAME_LIFETIME_NANOS`] of the hours of `hours` (an edge's
    /// connections per rollup hour): what names an unnamed (imported) edge
    /// only where the same host's named connections were near it in time.
    pub fn name_during(&self, host: &str, ip: IpAddr, hours: &[(Timestamp, u64)]) -> Option<&str> {
        const HOUR: i64 = 3_600 * 1_000_000_000;
        let known = self.by_end.get(&(host.to_owned(), ip))?;
        best_name(known.iter().filter(|k| {
            hours.iter().any(|(hour, _)| {
                let (start, end) = (hour.as_nanos(), hour.as_nanos().saturating_add(HOUR));
                k.first_seen.as_nanos().saturating_sub(NAME_LIFETIME_NANOS) < end
                    && start <= k.last_seen.as_nanos().saturating_add(NAME_LIFETIME_NANOS)
            })
        }))
    }

    /// The name any host knew `ip` by, chosen as [`RemoteNames::name_of`]
    /// chooses over all of them: an external node of the map is one address
    /// for every host.
    pub fn name_of_address(&self, ip: IpAddr) -> Option<&str> {
        best_name(
            self.by_end
                .iter()
                .filter(|((_, end), _)| *end == ip)
                .flat_map(|(_, known)| known),
        )
    }

    /// Every name `host` knew `ip` by at `at`: learned by a named connection
    /// within [`NAME_LIFETIME_NANOS`] of it. Sorted, without repeats.
    pub fn names_at(&self, host: &str, ip: IpAddr, at: Timestamp) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .by_end
            .get(&(host.to_owned(), ip))
            .into_iter()
            .flatten()
            .filter(|k| {
                k.first_seen.as_nanos().saturating_sub(NAME_LIFETIME_NANOS) <= at.as_nanos()
                    && at.as_nanos() <= k.last_seen.as_nanos().saturating_add(NAME_LIFETIME_NANOS)
            })
            .map(|k| k.name.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

fn best_name<'a>(known: impl Iterator<Item = &'a Known>) -> Option<&'a str> {
    let mut totals: HashMap<&str, (u64, bool)> = HashMap::new();
    for k in known {
        let total = totals.entry(&k.name).or_insert((0, false));
        total.0 += k.connections;
        total.1 |= k.source == NameSource::Dns;
    }
    totals
        .into_iter()
        .max_by(|a, b| {
            (a.1 .0, a.1 .1)
                .cmp(&(b.1 .0, b.1 .1))
                .then_with(|| b.0.cmp(a.0))
        })
        .map(|(name, _)| name)
}

/// The registered domain of `name` when it has one, else the name itself:
/// what the map folds by and `report edges --by name` shows.
pub fn domain_of(name: &str) -> String {
    registered_domain(name).unwrap_or_else(|| name.to_owned())
}

/// A name as a table cell: control characters and other invisible ones
/// escaped (`\n`, `\u{7}`), the rest as it is. JSON output carries the name
/// itself; HTML escapes it where it is shown.
pub fn shown(name: &str) -> String {
    name.chars()
        .flat_map(|c| {
            let visible = !c.is_control() && !matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            let escaped: Vec<char> = if visible {
                vec![c]
            } else {
                c.escape_default().collect()
            };
            escaped
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sighting(host: &str, ip: &str, name: &str, connections: u64, at_s: i64) -> NameSighting {
        let at = Timestamp::from_nanos(at_s * 1_000_000_000);
        NameSighting {
            hour: connscope_store::hour_start(at),
            host: host.into(),
            remote_ip: ip.parse().unwrap(),
            name: name.into(),
            source: NameSource::Dns,
            connections,
            first_seen: at,
            last_seen: at,
        }
    }

    #[test]
    fn the_name_used_most_wins_and_names_hold_for_their_lifetime() {
        let names = RemoteNames::from_sightings(&[
            sighting("ws1", "203.0.113.7", "cdn.example.net", 1, 100_000),
            sighting("ws1", "203.0.113.7", "www.example.org", 3, 100_000),
            sighting("ws2", "203.0.113.7", "cdn.example.net", 5, 100_000),
        ]);
        let ip = "203.0.113.7".parse().unwrap();
        assert_eq!(names.name_of("ws1", ip), Some("www.example.org"));
        assert_eq!(names.name_of("ws2", ip), Some("cdn.example.net"));
        assert_eq!(names.name_of("ws3", ip), None);
        assert_eq!(names.name_of_address(ip), Some("cdn.example.net"));
        let hour = |h: i64| (Timestamp::from_nanos(h * 3_600 * 1_000_000_000), 1);
        // 100_000 s is in hour 27: hours 26 to 28 are within the lifetime.
        assert_eq!(
            names.name_during("ws1", ip, &[hour(28)]),
            Some("www.example.org")
        );
        assert_eq!(
            names.name_during("ws1", ip, &[hour(26)]),
            Some("www.example.org")
        );
        assert_eq!(names.name_during("ws1", ip, &[hour(29), hour(24)]), None);
        let at = |s: i64| Timestamp::from_nanos(s * 1_000_000_000);
        assert_eq!(
            names.names_at("ws1", ip, at(100_000 + 3_600)),
            ["cdn.example.net", "www.example.org"]
        );
        assert!(names.names_at("ws1", ip, at(100_000 + 3_601)).is_empty());
        assert!(names.names_at("ws1", ip, at(100_000 - 3_601)).is_empty());
    }

    #[test]
    fn names_are_shown_with_invisible_characters_escaped() {
        assert_eq!(shown("www.example.org"), "www.example.org");
        assert_eq!(shown("a\nb\u{7}.example"), "a\\nb\\u{7}.example");
        assert_eq!(shown("bücher.example"), "bücher.example");
        assert_eq!(shown("evil\u{202e}gro.example"), "evil\\u{202e}gro.example");
        assert_eq!(domain_of("www.example.co.uk"), "example.co.uk");
        assert_eq!(domain_of("co.uk"), "co.uk");
    }
}
