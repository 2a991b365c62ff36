//! The registered domain of a DNS name (`www.example.co.uk` -> `example.co.uk`),
//! from the Public Suffix List compiled into the `psl` crate: the map folds
//! the external ends of one organisation into one by it, and `report edges
//! --by name` shows it. No network access, no list file to keep current on
//! the host.

use crate::nft_set::canonical_dns_name;

/// The registered domain of `name` (case folded, without the root's dot),
/// or `None` when the name is itself a public suffix (`co.uk`), empty, or
/// not made of DNS labels (a hostile name with spaces still has labels: it
/// gets whatever the list says of its last ones).
pub fn registered_domain(name: &str) -> Option<String> {
    let canonical = canonical_dns_name(name);
    if canonical.is_empty() || canonical.split('.').any(str::is_empty) {
        return None;
    }
    let domain = psl::domain(canonical.as_bytes())?;
    String::from_utf8(domain.as_bytes().to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_domains_follow_the_public_suffix_list() {
        for (name, want) in [
            ("www.example.org", Some("example.org")),
            ("WWW.Example.ORG.", Some("example.org")),
            ("a.b.example.co.uk", Some("example.co.uk")),
            ("foo.s3.amazonaws.com", Some("foo.s3.amazonaws.com")),
            ("example.org", Some("example.org")),
            ("co.uk", None),
            ("", None),
            ("a..example.org", None),
        ] {
            assert_eq!(registered_domain(name).as_deref(), want, "{name}");
        }
        // Hostile names get an answer, never a panic.
        let _ = registered_domain("<img src=x onerror=alert(1)>.example");
        let _ = registered_domain("bücher.example");
        let _ = registered_domain(&"x.".repeat(126));
    }
}
