//! The compiled form the agent evaluates for every connection.
//!
//! The rules are turned into a branch program: a flat array of checks, each
//! with where to go next when it holds and when it does not. `not` costs
//! nothing (the two exits swap), `and`/`or` short-circuit by wiring exits, the
//! OR of all rules is one program, and exe comparisons that tcpspy would
//! ignore (no `-p`) are folded away. Evaluation is a loop over the array: no
//! recursion, no allocation, no stack, each check visited at most once.

use std::net::{IpAddr, SocketAddr};

use connscope_event::{ConnectionEvent, Direction, Family, Protocol};

use crate::expr::{mask6, End, ExeComparisons, Expr, Test};
use crate::glob::Glob;

/// Exits past the end of the array: the answer.
const ACCEPT: u32 = u32::MAX;
const REJECT: u32 = u32::MAX - 1;

#[derive(Debug, Clone)]
pub(crate) struct Program {
    entry: u32,
    steps: Box<[Step]>,
}

#[derive(Debug, Clone)]
struct Step {
    check: Check,
    /// `next[check result as usize]`.
    next: [u32; 2],
}

/// A [`Test`] without the names kept for printing, ends resolved to fields.
#[derive(Debug, Clone)]
enum Check {
    Uid(u32),
    Family(Family),
    LocalPort(u16, u16),
    RemotePort(u16, u16),
    Addr4 { remote: bool, net: u32, mask: u32 },
    Addr6 { remote: bool, net: u128, mask: u128 },
    Exe(Box<Glob>),
    Comm(Box<Glob>),
    Direction(Direction),
    Protocol(Protocol),
    Pid(u32),
}

impl Program {
    /// The OR of `rules`; with no rules at all, everything matches.
    pub(crate) fn compile<'a>(
        rules: impl DoubleEndedIterator<Item = &'a Expr>,
        any_rules: bool,
        exe: ExeComparisons,
    ) -> Program {
        let mut compiler = Compiler {
            steps: Vec::new(),
            exe,
        };
        let mut entry = if any_rules { REJECT } else { ACCEPT };
        for rule in rules.rev() {
            entry = compiler.compile(rule, ACCEPT, entry);
        }
        Program {
            entry,
            steps: compiler.steps.into_boxed_slice(),
        }
    }

    #[inline]
    pub(crate) fn matches(&self, ev: &ConnectionEvent) -> bool {
        let mut at = self.entry;
        while let Some(step) = self.steps.get(at as usize) {
            at = step.next[usize::from(step.check.holds(ev))];
        }
        at == ACCEPT
    }
}

struct Compiler {
    steps: Vec<Step>,
    exe: ExeComparisons,
}

impl Compiler {
    /// Emits `expr` so that it continues at `yes` when true and `no` when
    /// false; returns its entry. Operands are emitted right to left so each
    /// knows its exits when it is emitted.
    fn compile(&mut self, expr: &Expr, yes: u32, no: u32) -> u32 {
        match expr {
            Expr::Test(Test::Exe(_)) if self.exe == ExeComparisons::AlwaysTrue => yes,
            Expr::Test(test) => {
                self.steps.push(Step {
                    check: Check::from(test),
                    next: [no, yes],
                });
                (self.steps.len() - 1) as u32
            }
            Expr::Not(inner) => self.compile(inner, no, yes),
            Expr::And(a, b) => {
                let b = self.compile(b, yes, no);
                self.compile(a, b, no)
            }
            Expr::Or(a, b) => {
                let b = self.compile(b, yes, no);
                self.compile(a, yes, b)
            }
        }
    }
}

impl From<&Test> for Check {
    fn from(test: &Test) -> Check {
        match test {
            Test::User { uid, .. } => Check::Uid(*uid),
            Test::Family(f) => Check::Family(*f),
            Test::Port {
                end: End::Local,
                low,
                high,
                ..
            } => Check::LocalPort(*low, *high),
            Test::Port {
                end: End::Remote,
                low,
                high,
                ..
            } => Check::RemotePort(*low, *high),
            Test::Addr4 { end, net, mask } => Check::Addr4 {
                remote: *end == End::Remote,
                net: *net,
                mask: *mask,
            },
            Test::Addr6 { end, net, prefix } => Check::Addr6 {
                remote: *end == End::Remote,
                net: *net,
                mask: mask6(*prefix),
            },
            Test::Exe(glob) => Check::Exe(Box::new(glob.clone())),
            Test::Comm(glob) => Check::Comm(Box::new(glob.clone())),
            Test::Direction(d) => Check::Direction(*d),
            Test::Protocol(p) => Check::Protocol(*p),
            Test::Pid(pid) => Check::Pid(*pid),
        }
    }
}

impl Check {
    #[inline]
    fn holds(&self, ev: &ConnectionEvent) -> bool {
        let pick = |remote: bool| -> &SocketAddr {
            if remote {
                &ev.remote
            } else {
                &ev.local
            }
        };
        match self {
            Check::Uid(uid) => ev.uid == Some(*uid),
            Check::Family(f) => ev.family() == *f,
            Check::LocalPort(low, high) => (*low..=*high).contains(&ev.local.port()),
            Check::RemotePort(low, high) => (*low..=*high).contains(&ev.remote.port()),
            Check::Addr4 { remote, net, mask } => match pick(*remote).ip() {
                IpAddr::V4(ip) => u32::from(ip) & mask == *net,
                IpAddr::V6(_) => false,
            },
            Check::Addr6 { remote, net, mask } => match pick(*remote).ip() {
                IpAddr::V6(ip) => u128::from(ip) & mask == *net,
                IpAddr::V4(_) => false,
            },
            Check::Exe(glob) => glob.matches(ev.executable().unwrap_or("")),
            Check::Comm(glob) => glob.matches(
                ev.process
                    .as_ref()
                    .and_then(|p| p.comm.as_deref())
                    .unwrap_or(""),
            ),
            Check::Direction(d) => ev.direction == *d,
            Check::Protocol(p) => ev.protocol == *p,
            Check::Pid(pid) => ev.pid() == Some(*pid),
        }
    }
}
