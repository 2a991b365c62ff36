//! Who was the server: tcpspy lines do not say, so whoever reads them infers
//! it — the importer from files, the collector's syslog listener from live
//! streams. Both use this one rule, so a line gets the same direction
//! whichever way it came, given the same evidence.
//!
//! Rule, in order:
//! 1. **Seen as a service.** Count, for every endpoint (address, port), the
//!    connect lines it appears in, at either end and in the logs of every
//!    host: the importer counts every file of an import in a first pass, the
//!    listener counts the store's recent connects when it starts and every
//!    line it receives. A server endpoint appears in every connection to it;
//!    a client's ephemeral endpoint in one (or a few, when the port is
//!    reused). The side whose count is at least twice the other's (and at
//!    least 2) is the server.
//! 2. **Port numbers.** Otherwise the lower port is the server's: services
//!    live on well-known and registered ports, clients on ephemeral ones
//!    (32768-60999 on Linux).
//! 3. Equal ports: unknown.
//!
//! Limits: a service used once in all the evidence, on a port above the
//! client's ephemeral port, is taken the wrong way round; so is a client with
//! a low source port (rsh, some NFS clients) talking to a rarely used high
//! service port. More evidence makes rule 1 decide more.

use std::collections::HashMap;
use std::net::SocketAddr;

use connscope_event::Direction;

/// Connect-line counts per endpoint.
#[derive(Debug, Default)]
pub struct EndpointStats {
    counts: HashMap<SocketAddr, u32, foldhash::fast::RandomState>,
}

impl EndpointStats {
    pub fn observe_connect(&mut self, local: SocketAddr, remote: SocketAddr) {
        for endpoint in [local, remote] {
            let n = self.counts.entry(endpoint).or_default();
            *n = n.saturating_add(1);
        }
    }

    /// Adds what `other` counted (the importer's first pass counts each file
    /// apart).
    pub fn merge(&mut self, other: EndpointStats) {
        for (endpoint, n) in other.counts {
            let sum = self.counts.entry(endpoint).or_default();
            *sum = sum.saturating_add(n);
        }
    }

    /// How many endpoints are counted.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Forgets the endpoints seen once — nearly all of them are clients'
    /// ephemeral ports — to bound the memory of a counter that runs for
    /// months. Endpoints seen more often, the services among them, stay.
    pub fn forget_single_uses(&mut self) {
        self.counts.retain(|_, n| *n > 1);
    }

    /// The connect lines `endpoint` was counted in.
    pub fn count(&self, endpoint: SocketAddr) -> u32 {
        self.counts.get(&endpoint).copied().unwrap_or(0)
    }

    /// The direction of a line, seen from its local end.
    pub fn direction(&self, local: SocketAddr, remote: SocketAddr) -> Direction {
        let (l, r) = (self.count(local), self.count(remote));
        if l >= 2 && l >= 2 * r {
            return Direction::Incoming;
        }
        if r >= 2 && r >= 2 * l {
            return Direction::Outgoing;
        }
        match local.port().cmp(&remote.port()) {
            std::cmp::Ordering::Less => Direction::Incoming,
            std::cmp::Ordering::Greater => Direction::Outgoing,
            std::cmp::Ordering::Equal => Direction::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// `server` is taken as the server of the pair, seen from either end.
    #[track_caller]
    fn assert_serves(stats: &EndpointStats, server: &str, client: &str) {
        assert_eq!(stats.direction(a(client), a(server)), Direction::Outgoing);
        assert_eq!(stats.direction(a(server), a(client)), Direction::Incoming);
    }

    #[test]
    fn a_busy_endpoint_is_the_server_even_on_a_high_port() {
        let mut stats = EndpointStats::default();
        for client_port in [1000, 1001, 1002] {
            stats.observe_connect(a(&format!("10.0.0.1:{client_port}")), a("10.0.0.2:50000"));
        }
        assert_serves(&stats, "10.0.0.2:50000", "10.0.0.1:1000");
    }

    #[test]
    fn forgetting_single_uses_keeps_the_services() {
        let mut stats = EndpointStats::default();
        for client_port in [1000, 1001, 1002] {
            stats.observe_connect(a(&format!("10.0.0.1:{client_port}")), a("10.0.0.2:50000"));
        }
        assert_eq!(stats.len(), 4);
        stats.forget_single_uses();
        assert_eq!(stats.len(), 1);
        assert_serves(&stats, "10.0.0.2:50000", "10.0.0.1:1003");
    }

    #[test]
    fn otherwise_the_lower_port_serves() {
        let stats = EndpointStats::default();
        assert_serves(&stats, "10.0.0.2:22", "10.0.0.1:40000");
        assert_eq!(
            stats.direction(a("10.0.0.2:22"), a("10.0.0.1:22")),
            Direction::Unknown
        );
    }
}
