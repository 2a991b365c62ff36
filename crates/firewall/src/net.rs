//! Address prefixes (CIDR networks): the unit both the planner (generalising
//! sources and destinations) and the checker (matching `ip saddr 10.0.0.0/8`)
//! work in. Small enough to own rather than pull in a crate for.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A network: an address with its host bits cleared, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

/// A prefix string or length that does not make sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid network {0:?}")]
pub struct PrefixError(pub String);

fn width(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

fn bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_bits(v4: bool, value: u128) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(value as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(value))
    }
}

fn full(w: u8) -> u128 {
    if w == 32 {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    }
}

fn mask(w: u8, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        full(w) & !((1u128 << (w - len)) - 1)
    }
}

impl Prefix {
    /// The network of `len` bits containing `addr` (host bits are cleared).
    pub fn new(addr: IpAddr, len: u8) -> Result<Prefix, PrefixError> {
        let w = width(addr);
        if len > w {
            return Err(PrefixError(format!("{addr}/{len}")));
        }
        let masked = from_bits(addr.is_ipv4(), bits(addr) & mask(w, len));
        Ok(Prefix { addr: masked, len })
    }

    /// The one-address network of `addr`.
    pub fn host(addr: IpAddr) -> Prefix {
        Prefix {
            addr,
            len: width(addr),
        }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    pub fn is_host(&self) -> bool {
        self.len == width(self.addr)
    }

    /// The lowest and highest address of the network, as integers.
    pub fn bounds(&self) -> (u128, u128) {
        let w = width(self.addr);
        let low = bits(self.addr);
        let high = low | (!mask(w, self.len) & full(w));
        (low, high)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.is_ipv4() && bits(ip) & mask(width(ip), self.len) == bits(self.addr)
    }

    pub fn contains_prefix(&self, other: &Prefix) -> bool {
        other.len >= self.len && self.contains(other.addr)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.len)
        }
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Prefix, PrefixError> {
        let bad = || PrefixError(s.to_owned());
        match s.split_once('/') {
            None => s.parse::<IpAddr>().map(Prefix::host).map_err(|_| bad()),
            Some((addr, len)) => {
                let addr = addr.parse::<IpAddr>().map_err(|_| bad())?;
                let len = len.parse::<u8>().map_err(|_| bad())?;
                Prefix::new(addr, len).map_err(|_| bad())
            }
        }
    }
}

impl serde::Serialize for Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An address as an integer, for range comparisons.
pub(crate) fn addr_bits(addr: IpAddr) -> u128 {
    bits(addr)
}

/// Sorts networks and drops every one that another already contains, so the
/// list can go into an nftables interval set (which refuses overlaps) and says
/// each address once.
pub fn normalize(mut prefixes: Vec<Prefix>) -> Vec<Prefix> {
    // Wider networks of the same start sort first, so containment is a scan.
    prefixes.sort_by_key(|p| (p.is_ipv4(), bits(p.addr), p.len));
    prefixes.dedup();
    let mut kept: Vec<Prefix> = Vec::with_capacity(prefixes.len());
    for p in prefixes {
        if kept.last().is_some_and(|k| k.contains_prefix(&p)) {
            continue;
        }
        kept.push(p);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn masks_host_bits_and_prints_short_form() {
        assert_eq!(p("10.1.2.3/24").to_string(), "10.1.2.0/24");
        assert_eq!(p("10.1.2.3").to_string(), "10.1.2.3");
        assert_eq!(p("2001:db8::1/64").to_string(), "2001:db8::/64");
        assert_eq!(p("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(p("::/0").to_string(), "::/0");
        assert!("10.0.0.0/33".parse::<Prefix>().is_err());
        assert!("nonsense".parse::<Prefix>().is_err());
    }

    #[test]
    fn containment_respects_family() {
        assert!(p("10.0.0.0/8").contains("10.9.9.9".parse().unwrap()));
        assert!(!p("10.0.0.0/8").contains("11.0.0.0".parse().unwrap()));
        assert!(!p("0.0.0.0/0").contains("::1".parse().unwrap()));
        assert!(p("::/0").contains("::1".parse().unwrap()));
        assert!(p("fd00::/8").contains_prefix(&p("fd12::/16")));
        assert_eq!(p("10.0.0.0/30").bounds(), (0x0a00_0000, 0x0a00_0003));
        assert_eq!(p("::/0").bounds(), (0, u128::MAX));
    }

    #[test]
    fn normalize_drops_contained_networks() {
        let got = normalize(vec![
            p("10.0.0.5"),
            p("10.0.0.0/24"),
            p("10.0.1.1"),
            p("10.0.0.0/24"),
            p("::1"),
        ]);
        let got: Vec<String> = got.iter().map(ToString::to_string).collect();
        assert_eq!(got, ["::1", "10.0.0.0/24", "10.0.1.1"]);
    }
}
