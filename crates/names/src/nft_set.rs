//! The nftables set that holds the addresses of one DNS name.
//!
//! A plan allows a destination by name (`ip daddr @SET`) and the agent on the
//! host fills that set from the DNS answers it sees: both must derive the same
//! set name from the same DNS name without talking to each other, so the
//! mapping lives here, below both. Names come from the network and may hold any
//! byte; a set name must be a short nft identifier, so it keeps a readable,
//! cleaned prefix of the name and a hash of all of it (two names that clean
//! alike still get two sets).

use connscope_event::Family;
use ring::digest::{digest, SHA256};

/// At most this many characters of the cleaned name are kept in a set name.
const READABLE_PREFIX: usize = 40;

/// The DNS name as a set key: ASCII case folded, without the root's trailing
/// dot (`Example.ORG.` and `example.org` are one name to DNS).
pub fn canonical_dns_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// The name of the set of `family` addresses answered for `dns_name`, e.g.
/// `name4_www_example_org_1a2b3c4d`: `[a-z0-9_]` only, under 64 bytes.
pub fn name_set(dns_name: &str, family: Family) -> String {
    let canonical = canonical_dns_name(dns_name);
    let readable: String = canonical
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(READABLE_PREFIX)
        .collect();
    let hash = digest(&SHA256, canonical.as_bytes());
    let hash = hash.as_ref();
    let prefix = match family {
        Family::Ipv4 => "name4",
        Family::Ipv6 => "name6",
    };
    format!(
        "{prefix}_{readable}_{:02x}{:02x}{:02x}{:02x}",
        hash[0], hash[1], hash[2], hash[3]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_name_one_set_whatever_its_case_or_root_dot() {
        assert_eq!(
            name_set("WWW.Example.org.", Family::Ipv4),
            name_set("www.example.org", Family::Ipv4)
        );
        assert_ne!(
            name_set("www.example.org", Family::Ipv4),
            name_set("www.example.org", Family::Ipv6)
        );
        assert!(name_set("www.example.org", Family::Ipv6).starts_with("name6_www_example_org_"));
    }

    #[test]
    fn hostile_names_give_short_plain_identifiers_that_differ() {
        let hostile = [
            "<img src=x onerror=alert(1)>.example",
            "a\"; flush ruleset; \".example",
            &"x".repeat(255),
            "bücher.example",
            "\u{7}\n.example",
        ];
        let mut seen = std::collections::BTreeSet::new();
        for name in hostile {
            let set = name_set(name, Family::Ipv4);
            assert!(set.len() < 64, "{set}");
            assert!(
                set.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{set}"
            );
            assert!(seen.insert(set));
        }
        // Cleaned alike, hashed apart.
        assert_ne!(
            name_set("a-b.example", Family::Ipv4),
            name_set("a_b.example", Family::Ipv4)
        );
    }
}
