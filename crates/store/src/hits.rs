//! Firewall hits: the `would-block` and `blocked` events a policy's NFLOG
//! records became, summed per what an administrator decides on (host,
//! kind, direction, protocol, service port, remote address, program,
//! user). Not rolled up (rollups skip hits, see [`crate::rollup`]): hits
//! are few next to connections, and the loop wants each one's program and
//! user as the host logged them, so both backends read them from the raw
//! events. The summing here is SQLite's; ClickHouse groups in SQL and must
//! give the same rows.

use std::collections::HashMap;
use std::net::IpAddr;

use connscope_event::{ConnectionEvent, Direction, EventKind, Protocol, Timestamp};

use crate::{rollup, TimeRange};

/// Which firewall hits to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallHitQuery {
    pub range: TimeRange,
    /// Only hits logged by this host.
    pub host: Option<String>,
}

/// The hits of one (host, kind, direction, protocol, service port, remote
/// address, executable, user) in a [`FirewallHitQuery`]'s range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallHitTotal {
    pub host: String,
    /// [`EventKind::WouldBlock`] or [`EventKind::Blocked`].
    pub kind: EventKind,
    pub direction: Direction,
    pub protocol: Protocol,
    /// The server side's port, as rollups count it.
    pub service_port: u16,
    /// The host's own address of the latest hit (a host with several
    /// addresses is one row per remote end, not one per local address).
    pub local_ip: IpAddr,
    pub remote_ip: IpAddr,
    /// The latest name the host had for the remote address on these hits.
    pub remote_name: Option<String>,
    pub executable: Option<String>,
    /// The user name, else the uid in decimal.
    pub user: Option<String>,
    pub count: u64,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}

/// Whether `kind` is a firewall hit.
pub fn is_firewall_hit(kind: EventKind) -> bool {
    matches!(kind, EventKind::WouldBlock | EventKind::Blocked)
}

/// The user of a hit: the name, else the uid in decimal.
fn hit_user(event: &ConnectionEvent) -> Option<String> {
    match (&event.user_name, event.uid) {
        (Some(name), _) => Some(name.clone()),
        (None, Some(uid)) => Some(uid.to_string()),
        (None, None) => None,
    }
}

type HitKey = (
    String,
    &'static str,
    &'static str,
    &'static str,
    u16,
    IpAddr,
    Option<String>,
    Option<String>,
);

/// Sums hit events per key.
#[derive(Default)]
pub(crate) struct HitSums {
    /// Each key's total, with the time of its latest named hit.
    sums: HashMap<HitKey, (FirewallHitTotal, Option<Timestamp>)>,
}

impl HitSums {
    /// Counts `event` when it is a hit of `query`.
    pub(crate) fn add(&mut self, query: &FirewallHitQuery, event: &ConnectionEvent) {
        if !is_firewall_hit(event.kind)
            || !query.range.contains(event.timestamp)
            || query.host.as_ref().is_some_and(|h| *h != event.host)
        {
            return;
        }
        let port =
            rollup::service_port_of(event.direction, event.local.port(), event.remote.port());
        let key = (
            event.host.clone(),
            event.kind.as_str(),
            event.direction.as_str(),
            event.protocol.as_str(),
            port,
            event.remote.ip(),
            event.executable().map(str::to_owned),
            hit_user(event),
        );
        let t = event.timestamp;
        let (total, named_at) = self.sums.entry(key).or_insert_with_key(|k| {
            let total = FirewallHitTotal {
                host: k.0.clone(),
                kind: event.kind,
                direction: event.direction,
                protocol: event.protocol,
                service_port: port,
                local_ip: event.local.ip(),
                remote_ip: event.remote.ip(),
                remote_name: None,
                executable: k.6.clone(),
                user: k.7.clone(),
                count: 0,
                first_seen: t,
                last_seen: t,
            };
            (total, None)
        });
        total.count += 1;
        total.first_seen = total.first_seen.min(t);
        if t >= total.last_seen {
            total.last_seen = t;
            total.local_ip = event.local.ip();
        }
        if let Some(name) = &event.remote_name {
            if named_at.is_none_or(|at| t >= at) {
                *named_at = Some(t);
                total.remote_name = Some(name.name.clone());
            }
        }
    }

    pub(crate) fn finish(self) -> Vec<FirewallHitTotal> {
        let mut totals: Vec<_> = self.sums.into_values().map(|(total, _)| total).collect();
        sort_hits(&mut totals);
        totals
    }
}

/// The order [`crate::Store::firewall_hits`] promises: by host, kind,
/// direction, protocol, port, then the remote address, executable and user
/// as text (none first).
pub(crate) fn sort_hits(hits: &mut [FirewallHitTotal]) {
    hits.sort_by_cached_key(|h| {
        (
            h.host.clone(),
            h.kind.as_str(),
            h.direction.as_str(),
            h.protocol.as_str(),
            h.service_port,
            h.remote_ip.to_string(),
            h.executable.clone(),
            h.user.clone(),
        )
    });
}
