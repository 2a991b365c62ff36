//! The numbers nft gives names to (IP protocols, ICMPv6 types), for both
//! readers: the text language and `nft -j` output name them the same way.

/// IP protocol numbers of the names nft accepts for them.
pub(crate) fn proto_number(name: &str) -> Option<u8> {
    Some(match name {
        "icmp" => 1,
        "igmp" => 2,
        "tcp" => 6,
        "udp" => 17,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "icmpv6" | "ipv6-icmp" => 58,
        "sctp" => 132,
        "udplite" => 136,
        "dccp" => 33,
        "comp" => 108,
        _ => return None,
    })
}

/// The ICMPv6 type numbers of the names nft accepts for them.
pub(crate) fn icmpv6_type_number(name: &str) -> Option<u8> {
    Some(match name {
        "destination-unreachable" => 1,
        "packet-too-big" => 2,
        "time-exceeded" => 3,
        "parameter-problem" => 4,
        "echo-request" => 128,
        "echo-reply" => 129,
        "mld-listener-query" => 130,
        "mld-listener-report" => 131,
        "mld-listener-done" | "mld-listener-reduction" => 132,
        "nd-router-solicit" => 133,
        "nd-router-advert" => 134,
        "nd-neighbor-solicit" => 135,
        "nd-neighbor-advert" => 136,
        "nd-redirect" => 137,
        "router-renumbering" => 138,
        "ind-neighbor-solicit" => 141,
        "ind-neighbor-advert" => 142,
        "mld2-listener-report" => 143,
        _ => name.parse().ok()?,
    })
}
