//! The ruleset model both readers produce: tables, chains, sets and rules
//! reduced to the matches and verdicts that decide a new connection's fate.

use std::fmt;
use std::net::IpAddr;

use crate::net::Prefix;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableFamily {
    Ip,
    Ip6,
    Inet,
    Arp,
    Bridge,
    Netdev,
}

impl TableFamily {
    pub fn from_name(name: &str) -> Option<TableFamily> {
        Some(match name {
            "ip" => TableFamily::Ip,
            "ip6" => TableFamily::Ip6,
            "inet" => TableFamily::Inet,
            "arp" => TableFamily::Arp,
            "bridge" => TableFamily::Bridge,
            "netdev" => TableFamily::Netdev,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TableFamily::Ip => "ip",
            TableFamily::Ip6 => "ip6",
            TableFamily::Inet => "inet",
            TableFamily::Arp => "arp",
            TableFamily::Bridge => "bridge",
            TableFamily::Netdev => "netdev",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
    Ingress,
    Egress,
}

impl Hook {
    pub fn from_name(name: &str) -> Option<Hook> {
        Some(match name {
            "prerouting" => Hook::Prerouting,
            "input" => Hook::Input,
            "forward" => Hook::Forward,
            "output" => Hook::Output,
            "postrouting" => Hook::Postrouting,
            "ingress" => Hook::Ingress,
            "egress" => Hook::Egress,
            _ => return None,
        })
    }
}

/// Where a statement came from: a file position, or a handle in `nft -j` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Text { file: String, line: u32, col: u32 },
    Handle(u64),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Text { file, line, col } => write!(f, "{file}:{line}:{col}"),
            Location::Handle(h) => write!(f, "handle {h}"),
        }
    }
}

/// Something in the ruleset the checker cannot evaluate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    pub location: Location,
    pub text: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub tables: Vec<Table>,
    pub unsupported: Vec<Unsupported>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub family: TableFamily,
    pub name: String,
    pub chains: Vec<Chain>,
    pub sets: Vec<NamedSet>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Accept,
    Drop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    pub kind: String,
    pub hook: Hook,
    pub priority: i32,
    pub policy: Policy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub base: Option<BaseChain>,
    pub rules: Vec<Rule>,
}

/// A named set; `elements` is `None` when its type is one the checker does not
/// evaluate (concatenations, marks, ...), which makes every lookup unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedSet {
    pub name: String,
    pub elements: Option<Vec<Value>>,
    /// Addresses the set held during only part of what is checked (a name
    /// set filled from DNS answers, see [`crate::by_name`]): a lookup of one
    /// is unknown. Empty for a ruleset as read.
    pub partly: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub location: Location,
    /// The rule as written (tokens joined by spaces), for reports.
    pub text: String,
    pub matches: Vec<Match>,
    pub verdict: Option<Verdict>,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Reject,
    Jump(String),
    Goto(String),
    Return,
    Continue,
    /// Handed to user space (`queue`): its fate is not knowable from the ruleset.
    Queue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    Tcp,
    Udp,
    /// `th`: the transport header of whatever protocol.
    Any,
}

/// What a match looks at in the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Saddr4,
    Daddr4,
    Saddr6,
    Daddr6,
    Dport(L4),
    Sport(L4),
    /// `meta l4proto`, `ip protocol`, `ip6 nexthdr` (as protocol numbers).
    L4Proto,
    /// Same as L4Proto but only for IPv4 packets (`ip protocol`).
    IpProtocol,
    /// Same as L4Proto but only for IPv6 packets (`ip6 nexthdr`).
    Ip6Nexthdr,
    /// `meta nfproto` / `meta protocol`: `ipv4` or `ipv6`.
    NfProto,
    Iif,
    Oif,
    Iifname,
    Oifname,
    CtState,
    /// `icmpv6 type`, as a type number: IPv6 needs neighbour discovery
    /// (solicit, advert) through the same hooks as the connection.
    Icmpv6Type,
    /// Any field of a protocol header that is neither TCP nor UDP nor IP
    /// (`icmp type`, `icmpv6 type`, `sctp dport`, ...): never true for the
    /// TCP/UDP connections the checker replays.
    OtherProtocol(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Values {
    List(Vec<Value>),
    /// `@name`, looked up in the rule's table.
    Set(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Addr(Prefix),
    AddrRange(IpAddr, IpAddr),
    Num(u64),
    NumRange(u64, u64),
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    Cmp {
        field: Field,
        op: Op,
        values: Values,
    },
    /// An expression or statement the checker does not evaluate, as written.
    Unknown(String),
}
