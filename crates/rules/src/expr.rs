//! The parse tree of one rule, exactly as written (after names are resolved).
//!
//! The tree is what a rule *means*: [`Expr::eval`] is the definition, and its
//! `Display` is the normalised, fully parenthesised form that `connscope rules
//! check` prints and that parses back to the same tree. The agent's hot path
//! does not walk it; it runs the compiled branch program (`program.rs`), which
//! property tests hold to the same answers.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use connscope_event::{ConnectionEvent, Direction, Family, Protocol};

use crate::glob::Glob;

/// What `exe` comparisons do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExeComparisons {
    /// Match the pattern against the executable path (tcpspy with `-p`).
    #[default]
    Evaluate,
    /// Always true, as tcpspy without `-p`, which knows no executables.
    AlwaysTrue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expr {
    Test(Test),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

/// Which end of the connection a port or address comparison looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Local,
    Remote,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Test {
    /// `user 1000` or `user "name"` (the name is kept for printing).
    User { uid: u32, name: Option<String> },
    /// `ip` / `ip6`.
    Family(Family),
    /// `lport` / `rport`: an inclusive range; a single port has low == high.
    Port {
        end: End,
        low: u16,
        high: u16,
        service: Option<String>,
    },
    /// `laddr` / `raddr` on IPv4: `(address & mask) == net`, `net` pre-masked.
    Addr4 { end: End, net: u32, mask: u32 },
    /// `laddr` / `raddr` on IPv6 with a prefix length.
    Addr6 { end: End, net: u128, prefix: u8 },
    /// `exe "glob"`, matched with FNM_PATHNAME; an unknown executable is "".
    Exe(Glob),
    /// Extension `comm "glob"`, matched without FNM_PATHNAME.
    Comm(Glob),
    /// Extension `dir in` / `dir out`.
    Direction(Direction),
    /// Extension `proto tcp` / `proto udp`.
    Protocol(Protocol),
    /// Extension `pid N`.
    Pid(u32),
}

pub(crate) fn mask6(prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p => u128::MAX << (128 - u32::from(p)),
    }
}

impl Test {
    pub(crate) fn eval(&self, ev: &ConnectionEvent) -> bool {
        let addr = |end: End| match end {
            End::Local => ev.local,
            End::Remote => ev.remote,
        };
        match self {
            Test::User { uid, .. } => ev.uid == Some(*uid),
            Test::Family(family) => ev.family() == *family,
            Test::Port { end, low, high, .. } => (*low..=*high).contains(&addr(*end).port()),
            Test::Addr4 { end, net, mask } => match addr(*end).ip() {
                IpAddr::V4(ip) => u32::from(ip) & mask == *net,
                IpAddr::V6(_) => false,
            },
            Test::Addr6 { end, net, prefix } => match addr(*end).ip() {
                IpAddr::V6(ip) => u128::from(ip) & mask6(*prefix) == *net,
                IpAddr::V4(_) => false,
            },
            Test::Exe(glob) => glob.matches(ev.executable().unwrap_or("")),
            Test::Comm(glob) => glob.matches(
                ev.process
                    .as_ref()
                    .and_then(|p| p.comm.as_deref())
                    .unwrap_or(""),
            ),
            Test::Direction(dir) => ev.direction == *dir,
            Test::Protocol(proto) => ev.protocol == *proto,
            Test::Pid(pid) => ev.pid() == Some(*pid),
        }
    }
}

impl Expr {
    /// The meaning of the rule, by walking the tree.
    pub(crate) fn eval(&self, ev: &ConnectionEvent, exe: ExeComparisons) -> bool {
        match self {
            Expr::Test(Test::Exe(_)) if exe == ExeComparisons::AlwaysTrue => true,
            Expr::Test(test) => test.eval(ev),
            Expr::Not(e) => !e.eval(ev, exe),
            Expr::And(a, b) => a.eval(ev, exe) && b.eval(ev, exe),
            Expr::Or(a, b) => a.eval(ev, exe) || b.eval(ev, exe),
        }
    }

    pub(crate) fn uses_exe(&self) -> bool {
        match self {
            Expr::Test(test) => matches!(test, Test::Exe(_)),
            Expr::Not(e) => e.uses_exe(),
            Expr::And(a, b) | Expr::Or(a, b) => a.uses_exe() || b.uses_exe(),
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Test(test) => test.fmt(f),
            Expr::Not(e) => write!(f, "not {e}"),
            Expr::And(a, b) => write!(f, "({a} and {b})"),
            Expr::Or(a, b) => write!(f, "({a} or {b})"),
        }
    }
}

impl fmt::Display for Test {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = |end: &End, local: &'static str, remote: &'static str| match end {
            End::Local => local,
            End::Remote => remote,
        };
        match self {
            Test::User {
                name: Some(name), ..
            } => write!(f, "user \"{name}\""),
            Test::User { uid, name: None } => write!(f, "user {uid}"),
            Test::Family(Family::Ipv4) => f.write_str("ip"),
            Test::Family(Family::Ipv6) => f.write_str("ip6"),
            Test::Port {
                end: e,
                low,
                high,
                service,
            } => {
                f.write_str(end(e, "lport ", "rport "))?;
                match service {
                    Some(name) => write!(f, "\"{name}\""),
                    None if low == high => write!(f, "{low}"),
                    None => write!(f, "{low}-{high}"),
                }
            }
            Test::Addr4 { end: e, net, mask } => {
                write!(f, "{}{}", end(e, "laddr ", "raddr "), Ipv4Addr::from(*net))?;
                // A contiguous mask prints as a prefix length, except /0, which
                // tcpspy rejects; a full mask is the default and is left out.
                let len = mask.leading_ones();
                if *mask == u32::MAX {
                    Ok(())
                } else if len > 0 && mask.count_ones() == len {
                    write!(f, "/{len}")
                } else {
                    write!(f, "/{}", Ipv4Addr::from(*mask))
                }
            }
            Test::Addr6 {
                end: e,
                net,
                prefix,
            } => {
                write!(f, "{}{}", end(e, "laddr ", "raddr "), Ipv6Addr::from(*net))?;
                if *prefix == 128 {
                    Ok(())
                } else {
                    write!(f, "/{prefix}")
                }
            }
            Test::Exe(glob) => write!(f, "exe \"{}\"", glob.pattern()),
            Test::Comm(glob) => write!(f, "comm \"{}\"", glob.pattern()),
            Test::Direction(Direction::Incoming) => f.write_str("dir in"),
            Test::Direction(_) => f.write_str("dir out"),
            Test::Protocol(Protocol::Tcp) => f.write_str("proto tcp"),
            Test::Protocol(Protocol::Udp) => f.write_str("proto udp"),
            Test::Pid(pid) => write!(f, "pid {pid}"),
        }
    }
}
