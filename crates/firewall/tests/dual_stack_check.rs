//! `check` replays a dual-stack socket's flow as the IPv4 its packets are,
//! whatever form its addresses come in: the `ip6 saddr ::ffff:...` rule an
//! older plan wrote does not allow it, an `ip saddr` rule does.

mod common;

use common::flow;
use connscope_event::Protocol;
use connscope_firewall::{check, nft, FlowDirection, Outcome};

fn ruleset(peer_rule: &str) -> nft::Ruleset {
    let text = format!(
        "table inet t {{\n\tchain input {{\n\t\ttype filter hook input priority filter; policy drop;\n\t\t{peer_rule} tcp dport 8443 accept\n\t}}\n}}\n"
    );
    nft::parse_str("plan.nft", &text).unwrap()
}

#[test]
fn a_mapped_flow_is_checked_as_ipv4() {
    // As an older store's rollups give it: both ends IPv4-mapped.
    let mapped = flow(
        FlowDirection::Inbound,
        Protocol::Tcp,
        "::ffff:192.0.2.10",
        "::ffff:192.0.2.20",
        8443,
        3,
    );
    let normalised = flow(
        FlowDirection::Inbound,
        Protocol::Tcp,
        "192.0.2.10",
        "192.0.2.20",
        8443,
        3,
    );
    for f in [&mapped, &normalised] {
        let old_plan = ruleset("ip6 saddr ::ffff:192.0.2.20");
        assert_eq!(
            check(&old_plan, std::slice::from_ref(f))[0].outcome,
            Outcome::Blocked,
            "{f:?}"
        );
        let plan = ruleset("ip saddr 192.0.2.20");
        assert_eq!(
            check(&plan, std::slice::from_ref(f))[0].outcome,
            Outcome::Allowed,
            "{f:?}"
        );
    }
}
