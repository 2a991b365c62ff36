//! A generated office's history, for the backtest's tests and bench: 30 hosts
//! in 4 groups over 16 days, written into a real store through the `Store`
//! trait with both ends' events where both ends log. Only compiled with the
//! `test-support` feature.
//!
//! The history is the one that hurts exact plans (issue 16): days 3-12 are a
//! holiday with only a few workstations at work, three workstations are
//! switched off for the first week (so they have no history at all when
//! learning ends on day 12), a backup job runs weekly (days 7 and 14) and an
//! inventory job monthly (day 15 only). Workstations use DNS, the file
//! server, mail and the intranet, print, and fetch updates from a few
//! external addresses; admins also log in to the servers.
//!
//! Seeded and deterministic: the same seed writes the same events, and
//! [`Office::connections`] keeps every generated connection as ground truth,
//! so a test can count what a plan should block without asking the planner.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use connscope_event::{ConnectionEvent, Direction, EventKind, ProcessInfo, Protocol, Timestamp};
use connscope_store::{AgentId, SqliteStore, Store, StoreError, TimeRange};

use crate::fleet::GroupMembers;

pub const DAY_NS: i64 = 86_400 * 1_000_000_000;
const HOUR_NS: i64 = 3_600 * 1_000_000_000;
/// Day 1 starts here: 2025-12-22 00:00 UTC, so the holiday is year-end's.
pub const START_NS: i64 = 1_766_361_600 * 1_000_000_000;
pub const DAYS: u32 = 16;
/// Events per `Store::ingest` call.
const BATCH: usize = 5_000;

/// One host of the office.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfficeHost {
    pub name: String,
    pub ip: IpAddr,
    pub group: &'static str,
    /// Runs an agent (printers and devices do not).
    pub logs: bool,
}

/// One generated connection: the ground truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// 1-based day.
    pub day: u32,
    /// Indexes into [`Office::hosts`]; `None` for an address outside the office.
    pub client: Option<usize>,
    pub server: Option<usize>,
    pub client_ip: IpAddr,
    pub server_ip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    /// How many connections of this edge this day.
    pub count: u64,
    /// Which job made it (`monthly-inventory`, `weekly-backup`, `daily`).
    pub job: &'static str,
}

/// The office and everything it did.
#[derive(Debug, Clone)]
pub struct Office {
    pub hosts: Vec<OfficeHost>,
    pub connections: Vec<Connection>,
}

const DNS_UPSTREAM: [u8; 4] = [198, 51, 100, 53];
const MAIL_RELAY: [u8; 4] = [198, 51, 100, 25];
const UPDATES: [[u8; 4]; 3] = [[203, 0, 113, 10], [203, 0, 113, 11], [203, 0, 113, 12]];

/// splitmix64: tiny, seeded, good enough to vary counts.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn ip(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

impl Office {
    /// The office's history; `scale` multiplies every count (1 for the
    /// tests, larger for the bench).
    pub fn generate(seed: u64, scale: u64) -> Office {
        let mut hosts = Vec::new();
        let mut add = |name: String, a: [u8; 4], group: &'static str, logs: bool| {
            hosts.push(OfficeHost {
                name,
                ip: ip(a),
                group,
                logs,
            });
            hosts.len() - 1
        };
        let ws: Vec<usize> = (1..=18u8)
            .map(|i| {
                add(
                    format!("ws-{i:02}"),
                    [10, 16, 1, 10 + i],
                    "workstations",
                    true,
                )
            })
            .collect();
        let fs = add("fs".into(), [10, 16, 2, 10], "servers", true);
        let mail = add("mail".into(), [10, 16, 2, 11], "servers", true);
        let intranet = add("intranet".into(), [10, 16, 2, 12], "servers", true);
        let dns = add("dns".into(), [10, 16, 2, 13], "servers", true);
        let backup = add("backup".into(), [10, 16, 2, 14], "servers", true);
        let servers = [fs, mail, intranet, dns, backup];
        let printers: Vec<usize> = (1..=3u8)
            .map(|i| {
                add(
                    format!("printer-{i}"),
                    [10, 16, 3, 10 + i],
                    "devices",
                    false,
                )
            })
            .collect();
        let _badge = add("badge-reader".into(), [10, 16, 3, 20], "devices", false);
        let admins: Vec<usize> = (1..=3u8)
            .map(|i| add(format!("adm-{i}"), [10, 16, 4, 10 + i], "admins", true))
            .collect();
        assert_eq!(hosts.len(), 30);

        let mut rng = Rng(seed);
        let mut connections = Vec::new();
        let ip_of = |h: usize| hosts[h].ip;
        let mut conn = |day,
                        client: Option<usize>,
                        client_ip,
                        server: Option<usize>,
                        server_ip,
                        port,
                        protocol,
                        count: u64,
                        job| {
            connections.push(Connection {
                day,
                client,
                server,
                client_ip,
                server_ip,
                port,
                protocol,
                count: count * scale,
                job,
            })
        };
        for day in 1..=DAYS {
            let holiday = (3..=12).contains(&day);
            let at_work = |i: usize, h: usize| -> bool {
                // ws-16..18 are switched off for the first week.
                if i >= 15 && day <= 7 {
                    return false;
                }
                // Over the holiday only ws-01..04 and the admins work.
                !holiday || i < 4 || admins.contains(&h)
            };
            let users: Vec<usize> = ws
                .iter()
                .enumerate()
                .filter(|(i, h)| at_work(*i, **h))
                .map(|(_, h)| *h)
                .chain(admins.iter().copied())
                .collect();
            for &u in &users {
                let c = Some(u);
                let uip = ip_of(u);
                conn(
                    day,
                    c,
                    uip,
                    Some(dns),
                    ip_of(dns),
                    53,
                    Protocol::Udp,
                    15 + rng.below(10),
                    "daily",
                );
                conn(
                    day,
                    c,
                    uip,
                    Some(fs),
                    ip_of(fs),
                    445,
                    Protocol::Tcp,
                    5 + rng.below(10),
                    "daily",
                );
                conn(
                    day,
                    c,
                    uip,
                    Some(mail),
                    ip_of(mail),
                    993,
                    Protocol::Tcp,
                    6 + rng.below(4),
                    "daily",
                );
                if rng.below(3) == 0 {
                    conn(
                        day,
                        c,
                        uip,
                        Some(mail),
                        ip_of(mail),
                        587,
                        Protocol::Tcp,
                        1 + rng.below(3),
                        "daily",
                    );
                }
                conn(
                    day,
                    c,
                    uip,
                    Some(intranet),
                    ip_of(intranet),
                    443,
                    Protocol::Tcp,
                    3 + rng.below(6),
                    "daily",
                );
                if rng.below(2) == 0 {
                    let p = printers[rng.below(printers.len() as u64) as usize];
                    conn(
                        day,
                        c,
                        uip,
                        Some(p),
                        ip_of(p),
                        9100,
                        Protocol::Tcp,
                        1 + rng.below(2),
                        "daily",
                    );
                }
                let update = UPDATES[rng.below(UPDATES.len() as u64) as usize];
                conn(
                    day,
                    c,
                    uip,
                    None,
                    ip(update),
                    443,
                    Protocol::Tcp,
                    1,
                    "daily",
                );
            }
            for &a in &admins {
                for &s in &servers {
                    if rng.below(2) == 0 {
                        conn(
                            day,
                            Some(a),
                            ip_of(a),
                            Some(s),
                            ip_of(s),
                            22,
                            Protocol::Tcp,
                            1 + rng.below(3),
                            "daily",
                        );
                    }
                }
            }
            // The servers' own traffic, every day.
            conn(
                day,
                Some(dns),
                ip_of(dns),
                None,
                ip(DNS_UPSTREAM),
                53,
                Protocol::Udp,
                40 + rng.below(20),
                "daily",
            );
            conn(
                day,
                Some(mail),
                ip_of(mail),
                None,
                ip(MAIL_RELAY),
                25,
                Protocol::Tcp,
                5 + rng.below(5),
                "daily",
            );
            conn(
                day,
                Some(intranet),
                ip_of(intranet),
                Some(fs),
                ip_of(fs),
                445,
                Protocol::Tcp,
                2,
                "daily",
            );
            for &s in &servers {
                conn(
                    day,
                    Some(s),
                    ip_of(s),
                    Some(dns),
                    ip_of(dns),
                    53,
                    Protocol::Udp,
                    5 + rng.below(5),
                    "daily",
                );
            }
            if day % 7 == 0 {
                for &s in &servers[..4] {
                    conn(
                        day,
                        Some(backup),
                        ip_of(backup),
                        Some(s),
                        ip_of(s),
                        22,
                        Protocol::Tcp,
                        1,
                        "weekly-backup",
                    );
                }
            }
            if day == 15 {
                for &w in &ws {
                    conn(
                        day,
                        Some(backup),
                        ip_of(backup),
                        Some(w),
                        ip_of(w),
                        5986,
                        Protocol::Tcp,
                        1,
                        "monthly-inventory",
                    );
                }
            }
        }
        Office { hosts, connections }
    }

    /// The groups as planners see them.
    pub fn groups(&self) -> Vec<GroupMembers> {
        let mut groups: Vec<GroupMembers> = Vec::new();
        for host in &self.hosts {
            match groups.iter_mut().find(|g| g.name == host.group) {
                Some(g) => {
                    g.hosts.insert(host.name.clone());
                }
                None => groups.push(GroupMembers {
                    name: host.group.to_owned(),
                    hosts: [host.name.clone()].into(),
                    ..Default::default()
                }),
            }
        }
        groups
    }

    /// Days `first..=last` as a store time range.
    pub fn days(first: u32, last: u32) -> TimeRange {
        TimeRange {
            from: Timestamp::from_nanos(START_NS + i64::from(first - 1) * DAY_NS),
            to: Timestamp::from_nanos(START_NS + i64::from(last) * DAY_NS),
        }
    }

    /// Events written: one connect per connection on each end that logs.
    pub fn event_count(&self) -> u64 {
        self.connections
            .iter()
            .map(|c| {
                let ends = [c.client, c.server]
                    .iter()
                    .filter(|h| h.is_some_and(|h| self.hosts[h].logs))
                    .count();
                c.count * ends as u64
            })
            .sum()
    }

    /// The tests' office (seed 16, scale 1) written into a new SQLite store
    /// at `path`.
    pub fn in_store(path: &Path) -> Result<(Office, SqliteStore), StoreError> {
        let office = Office::generate(16, 1);
        let store = SqliteStore::open(path)?;
        office.write(&store)?;
        Ok((office, store))
    }

    /// Writes every logging host's events into `store`, numbered per host in
    /// the order they are generated (day by day; within a day, by service).
    pub fn write(&self, store: &dyn Store) -> Result<(), StoreError> {
        let mut per_host: Vec<Vec<ConnectionEvent>> = vec![Vec::new(); self.hosts.len()];
        let mut sequence = vec![0u64; self.hosts.len()];
        let flush = |h: usize, per_host: &mut Vec<Vec<ConnectionEvent>>| {
            let batch = std::mem::take(&mut per_host[h]);
            store
                .ingest(&AgentId(self.hosts[h].name.clone()), &batch)
                .map(|_| ())
        };
        for (n, c) in self.connections.iter().enumerate() {
            // Spread the day's connections over working hours 8-18.
            let base = START_NS + i64::from(c.day - 1) * DAY_NS + 8 * HOUR_NS;
            let spacing = 10 * HOUR_NS / (c.count as i64 + 1);
            for i in 0..c.count {
                let t = base + spacing * (i as i64 + 1) + n as i64 % 1000;
                let client_port = 32768 + ((n as u64 * 7 + i) % 28000) as u16;
                let client = SocketAddr::new(c.client_ip, client_port);
                let server = SocketAddr::new(c.server_ip, c.port);
                for (end, direction, local, remote) in [
                    (c.client, Direction::Outgoing, client, server),
                    (c.server, Direction::Incoming, server, client),
                ] {
                    let Some(h) = end.filter(|h| self.hosts[*h].logs) else {
                        continue;
                    };
                    sequence[h] += 1;
                    let mut ev = ConnectionEvent::new(
                        EventKind::Connect,
                        Timestamp::from_nanos(t),
                        c.protocol,
                        direction,
                        local,
                        remote,
                    );
                    ev.sequence = sequence[h];
                    ev.host = self.hosts[h].name.clone();
                    ev.process = Some(Arc::new(ProcessInfo {
                        pid: 1000 + c.port as u32,
                        executable: Some(format!("/usr/bin/{}", c.job)),
                        ..ProcessInfo::default()
                    }));
                    per_host[h].push(ev);
                    if per_host[h].len() >= BATCH {
                        flush(h, &mut per_host)?;
                    }
                }
            }
        }
        for h in 0..self.hosts.len() {
            if !per_host[h].is_empty() {
                flush(h, &mut per_host)?;
            }
        }
        Ok(())
    }
}
