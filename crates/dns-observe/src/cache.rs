//! What the host's processes were told, per network namespace: address ->
//! name from DNS answers, connection -> server name from ClientHellos.
//!
//! Both are bounded LRU maps: a flood of answers (a hostile resolver, a scan
//! of a zone) evicts the least recently answered addresses and never grows
//! memory past the caps. When several names answered one address (shared CDN
//! addresses), the latest answer names it: it is the one the process most
//! likely just asked for.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashlink::LruCache;

use crate::dns::Answer;

/// One address's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedName {
    /// The name the process asked for.
    pub asked: Arc<str>,
    /// The CNAME chain from it; the last element is the final name.
    pub chain: Arc<[String]>,
    /// The answer's TTL ran out then; the name is still used for the grace
    /// period after it (applications cache answers longer than they should).
    pub expires: Instant,
}

/// Address -> name per namespace, and connection -> SNI per namespace.
#[derive(Debug)]
pub struct NameCache {
    addresses_per_netns: usize,
    grace: Duration,
    dns: HashMap<u64, LruCache<IpAddr, CachedName>>,
    sni: HashMap<u64, LruCache<(SocketAddr, SocketAddr), SeenHello>>,
    /// Shared by every answer without a CNAME (most): no allocation each.
    no_chain: Arc<[String]>,
}

/// A ClientHello's server name and when it was seen.
type SeenHello = (Arc<str>, Instant);

/// How long a ClientHello's server name waits for its connection's event.
const SNI_KEPT: Duration = Duration::from_secs(30);
/// ClientHellos remembered per namespace (only connections still waiting
/// for their event need one).
const SNI_PER_NETNS: usize = 4096;

impl NameCache {
    pub fn new(addresses_per_netns: usize, grace: Duration) -> NameCache {
        NameCache {
            addresses_per_netns: addresses_per_netns.max(1),
            grace,
            dns: HashMap::new(),
            sni: HashMap::new(),
            no_chain: Arc::new([]),
        }
    }

    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Learns every address of `answer`.
    pub fn learn_answer(&mut self, netns: u64, answer: &Answer, now: Instant) {
        let cap = self.addresses_per_netns;
        let cache = self.dns.entry(netns).or_insert_with(|| LruCache::new(cap));
        let asked: Arc<str> = answer.asked.as_str().into();
        let chain: Arc<[String]> = if answer.chain.is_empty() {
            self.no_chain.clone()
        } else {
            answer.chain.clone().into()
        };
        for &(address, ttl) in &answer.addresses {
            cache.insert(
                address,
                CachedName {
                    asked: asked.clone(),
                    chain: chain.clone(),
                    expires: now + Duration::from_secs(ttl.into()),
                },
            );
        }
    }

    /// The name `address` was last answered for in `netns`, unless its TTL and
    /// the grace period are over.
    pub fn name_of(&mut self, netns: u64, address: IpAddr, now: Instant) -> Option<CachedName> {
        let cache = self.dns.get_mut(&netns)?;
        let name = cache.get(&address)?;
        if name.expires + self.grace < now {
            cache.remove(&address);
            return None;
        }
        Some(name.clone())
    }

    /// Learns the server name a ClientHello from `local` to `remote` asked for.
    pub fn learn_sni(
        &mut self,
        netns: u64,
        local: SocketAddr,
        remote: SocketAddr,
        name: String,
        now: Instant,
    ) {
        self.sni
            .entry(netns)
            .or_insert_with(|| LruCache::new(SNI_PER_NETNS))
            .insert((local, remote), (name.into(), now));
    }

    /// The server name of the connection's ClientHello, if one was seen lately.
    pub fn sni_of(
        &mut self,
        netns: u64,
        local: SocketAddr,
        remote: SocketAddr,
        now: Instant,
    ) -> Option<Arc<str>> {
        let cache = self.sni.get_mut(&netns)?;
        let (name, seen) = cache.get(&(local, remote))?;
        (now.duration_since(*seen) <= SNI_KEPT).then(|| name.clone())
    }

    /// Addresses held for `netns` (for tests and statistics).
    pub fn len(&self, netns: u64) -> usize {
        self.dns.get(&netns).map_or(0, LruCache::len)
    }

    pub fn is_empty(&self) -> bool {
        self.dns.values().all(|cache| cache.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(name: &str, address: [u8; 4], ttl: u32) -> Answer {
        Answer {
            asked: name.into(),
            chain: vec![format!("cdn.{name}")],
            addresses: vec![(IpAddr::from(address), ttl)],
        }
    }

    #[test]
    fn a_name_lasts_its_ttl_and_the_grace_period_then_is_gone() {
        let mut cache = NameCache::new(16, Duration::from_secs(5));
        let start = Instant::now();
        cache.learn_answer(1, &answer("a.example", [192, 0, 2, 1], 10), start);
        let address = IpAddr::from([192, 0, 2, 1]);
        let name = cache
            .name_of(1, address, start + Duration::from_secs(14))
            .unwrap();
        assert_eq!(
            (&*name.asked, &name.chain[..]),
            ("a.example", &["cdn.a.example".to_owned()][..])
        );
        assert_eq!(cache.name_of(2, address, start), None, "another namespace");
        assert_eq!(
            cache.name_of(1, address, start + Duration::from_secs(16)),
            None
        );
    }

    #[test]
    fn a_flood_of_answers_keeps_the_cap_and_the_latest_answers() {
        let mut cache = NameCache::new(1000, Duration::from_secs(5));
        let now = Instant::now();
        for i in 0..100_000u32 {
            let [_, a, b, c] = i.to_be_bytes();
            cache.learn_answer(1, &answer(&format!("n{i}.example"), [10, a, b, c], 60), now);
        }
        assert_eq!(cache.len(1), 1000);
        let last = IpAddr::from([10, 1, 0x86, 0x9f]); // 99,999
        assert_eq!(
            &*cache.name_of(1, last, now).unwrap().asked,
            "n99999.example"
        );
        assert_eq!(cache.name_of(1, IpAddr::from([10, 0, 0, 0]), now), None);
    }

    #[test]
    fn the_latest_answer_names_a_shared_address() {
        let mut cache = NameCache::new(16, Duration::from_secs(5));
        let now = Instant::now();
        cache.learn_answer(1, &answer("a.example", [192, 0, 2, 1], 60), now);
        cache.learn_answer(1, &answer("b.example", [192, 0, 2, 1], 60), now);
        let name = cache.name_of(1, IpAddr::from([192, 0, 2, 1]), now).unwrap();
        assert_eq!(&*name.asked, "b.example");
    }
}
