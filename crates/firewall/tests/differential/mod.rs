//! The what-if check against the kernel: random rulesets over the subset the
//! checker models, loaded with `nft -f` into a throw-away namespace, real TCP
//! connections through them, and `check`'s verdict beside the kernel's for
//! every one.
//!
//! Shared by the short run (`scripts/test`) and the long `#[ignore]`d run in
//! `tests/kernel_differential.rs`. Everything is drawn from one seeded RNG per
//! ruleset (seed and index), so a failing ruleset is rebuilt exactly from the
//! seed the run prints. Addresses and ports are fixed for the same reason: each
//! lab is a private pair of namespaces, where no one else can hold them.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use connscope_event::Timestamp;
use connscope_firewall::test_support::FlowBuilder;
use connscope_firewall::{check, nft, FlowDirection, ObservedFlow, Outcome};
use nix::sched::{setns, CloneFlags};
use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};
use socket2::{Domain, Protocol as SockProtocol, Socket, Type};

use crate::common::Netns;

/// The host whose firewall is loaded and checked, and its peer.
const HOST4: &str = "10.77.0.1";
const PEER4: &str = "10.77.0.2";
const HOST6: &str = "fd77::1";
const PEER6: &str = "fd77::2";
/// The veth ends (names are per namespace, so every lab uses the same).
const HOST_IF: &str = "vh";
const PEER_IF: &str = "vp";
/// Services: IPv4 only, IPv6 only (single-stack), and a dual-stack `[::]`
/// socket, on the host and on the peer.
const HOST_PORTS: [u16; 3] = [8004, 8006, 8046];
const PEER_PORTS: [u16; 3] = [9004, 9006, 9046];

/// How long a SYN or the echoed byte may take before the flow counts as
/// timed out. A connection on a veth takes well under a millisecond; a flow
/// the checker allows that times out is probed again with [`PATIENT_WAIT`]
/// before it counts, so a busy machine does not make a false disagreement.
const QUICK_WAIT: Duration = Duration::from_millis(300);
const PATIENT_WAIT: Duration = Duration::from_secs(3);

/// What the kernel did with a connection attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kernel {
    /// Handshake done and one byte echoed both ways.
    Connected,
    /// Refused at once (TCP reset, ICMP unreachable), with the error.
    Refused(String),
    /// No answer (a drop somewhere on the way or on the way back).
    TimedOut,
}

/// One connection the tests can make, and how the firewall host records it.
#[derive(Debug, Clone)]
struct Probe {
    /// What kind of flow it is, for the per-kind figures.
    kind: &'static str,
    /// Whether the client runs on the firewall host (outbound and loopback)
    /// or on the peer (inbound).
    client_on_host: bool,
    target: SocketAddr,
    direction: FlowDirection,
    /// The host's end and the other end, as the host's socket reports them
    /// (a dual-stack socket reports IPv4 peers as `::ffff:a.b.c.d`).
    local: &'static str,
    remote: &'static str,
}

fn probes() -> Vec<Probe> {
    use FlowDirection::{Inbound, Outbound};
    let p = |kind, client_on_host, target: &str, direction, local, remote| Probe {
        kind,
        client_on_host,
        target: target.parse().unwrap(),
        direction,
        local,
        remote,
    };
    let (mapped_host, mapped_peer, mapped_lo) =
        ("::ffff:10.77.0.1", "::ffff:10.77.0.2", "::ffff:127.0.0.1");
    vec![
        // The peer connects in.
        p("in v4", false, "10.77.0.1:8004", Inbound, HOST4, PEER4),
        p("in v6", false, "[fd77::1]:8006", Inbound, HOST6, PEER6),
        p(
            "in v4 to [::]",
            false,
            "10.77.0.1:8046",
            Inbound,
            mapped_host,
            mapped_peer,
        ),
        p(
            "in v6 to [::]",
            false,
            "[fd77::1]:8046",
            Inbound,
            HOST6,
            PEER6,
        ),
        // The host connects out.
        p("out v4", true, "10.77.0.2:9004", Outbound, HOST4, PEER4),
        p("out v6", true, "[fd77::2]:9006", Outbound, HOST6, PEER6),
        p(
            "out v4 to [::]",
            true,
            "10.77.0.2:9046",
            Outbound,
            HOST4,
            PEER4,
        ),
        p(
            "out v6 to [::]",
            true,
            "[fd77::2]:9046",
            Outbound,
            HOST6,
            PEER6,
        ),
        // The host connects to itself (over `lo`).
        p(
            "lo 127.0.0.1 to [::]",
            true,
            "127.0.0.1:8046",
            Inbound,
            mapped_lo,
            mapped_lo,
        ),
        p("lo ::1 to [::]", true, "[::1]:8046", Inbound, "::1", "::1"),
        p("lo own v4", true, "10.77.0.1:8004", Inbound, HOST4, HOST4),
        p("lo own v6", true, "[fd77::1]:8006", Outbound, HOST6, HOST6),
        p(
            "lo own v4 to [::]",
            true,
            "10.77.0.1:8046",
            Outbound,
            HOST4,
            HOST4,
        ),
    ]
}

impl Probe {
    fn flow(&self) -> ObservedFlow {
        let seen = Timestamp::from_nanos(1_795_548_137_000_000_000);
        FlowBuilder::new(self.direction, self.local, self.remote, self.target.port())
            .seen(seen, seen)
            .processes(["differential"])
            .users(["root"])
            .build()
    }
}

// ---------------------------------------------------------------- generator

/// The seed of ruleset `index` in a run seeded `seed`.
fn ruleset_rng(seed: u64, index: usize) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    Ip,
    Ip6,
    Inet,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum HookSide {
    Input,
    Output,
    Prerouting,
    Postrouting,
}

impl HookSide {
    fn name(self) -> &'static str {
        match self {
            HookSide::Input => "input",
            HookSide::Output => "output",
            HookSide::Prerouting => "prerouting",
            HookSide::Postrouting => "postrouting",
        }
    }

    /// Whether packets here have an input interface (else an output one).
    fn incoming(self) -> bool {
        matches!(self, HookSide::Input | HookSide::Prerouting)
    }

    /// `reject` is valid in input, forward and output only.
    fn may_reject(self) -> bool {
        matches!(self, HookSide::Input | HookSide::Output)
    }
}

struct Gen<'r> {
    rng: &'r mut Xoshiro256PlusPlus,
    family: Family,
    /// Named sets of this table: (name, what they hold).
    sets: Vec<(String, SetKind)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Net {
    V4,
    V6,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Tcp,
    Udp,
    /// `meta l4proto { tcp, udp }`: no single transport.
    Either,
    Icmpv6,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SetKind {
    Addr4,
    Addr6,
    Port,
}

const ADDRS4: &[&str] = &[
    "10.77.0.1",
    "10.77.0.2",
    "127.0.0.1",
    "10.77.0.9",
    "10.77.0.0/24",
    "10.77.0.0/31",
    "10.77.0.2/31",
    "10.0.0.0/8",
    "127.0.0.0/8",
    "192.0.2.0/24",
    "10.77.0.1-10.77.0.2",
    "10.77.0.2-10.77.0.200",
    "0.0.0.0/0",
];
const ADDRS6: &[&str] = &[
    "fd77::1",
    "fd77::2",
    "::1",
    "::ffff:10.77.0.2",
    "::ffff:10.77.0.1",
    "::ffff:127.0.0.1",
    "::ffff:0.0.0.0/96",
    "fd77::/64",
    "fd77::/127",
    "fd77::2/127",
    "fd77::1-fd77::2",
    "2001:db8::/32",
    "::/0",
];
/// Set elements must not overlap (nft refuses conflicting intervals).
const SET_ADDRS4: &[&str] = &["10.77.0.1", "10.77.0.2", "127.0.0.1", "192.0.2.0/24"];
const SET_ADDRS6: &[&str] = &[
    "fd77::1",
    "fd77::2",
    "::1",
    "::ffff:10.77.0.2",
    "2001:db8::/32",
];
const PORTS: &[&str] = &[
    "8004",
    "8006",
    "8046",
    "9004",
    "9006",
    "9046",
    "22",
    "8000-8010",
    "8040-8050",
    "9000-9010",
    "8000-9999",
    "1-1023",
    "9046-9999",
];
const SET_PORTS: &[&str] = &[
    "8004", "8006", "8046", "9004", "9006", "9046", "22", "100-200",
];

impl Gen<'_> {
    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn pick<'a>(&mut self, from: &'a [&'a str]) -> &'a str {
        from.choose(self.rng).expect("non-empty")
    }

    /// Some distinct elements of `from` (at least one), in its order.
    fn subset(&mut self, from: &[&str]) -> String {
        let mut chosen: Vec<&str> = from.iter().copied().filter(|_| self.chance(0.4)).collect();
        if chosen.is_empty() {
            chosen.push(self.pick(from));
        }
        chosen.join(", ")
    }

    fn neg(&mut self) -> &'static str {
        if self.chance(0.2) {
            "!= "
        } else {
            ""
        }
    }

    fn set_ref(&mut self, kind: SetKind) -> Option<String> {
        let names: Vec<&String> = self
            .sets
            .iter()
            .filter(|(_, k)| *k == kind)
            .map(|(n, _)| n)
            .collect();
        let name = names.choose(self.rng)?;
        Some(format!("@{name}"))
    }

    /// An address operand: one value, an anonymous set or a named set.
    fn addrs(&mut self, kind: SetKind) -> String {
        let (values, set_values) = match kind {
            SetKind::Addr4 => (ADDRS4, SET_ADDRS4),
            _ => (ADDRS6, SET_ADDRS6),
        };
        match self.rng.random_range(0..10) {
            0..=5 => self.pick(values).to_owned(),
            6..=7 => format!("{{ {} }}", self.subset(set_values)),
            _ => self
                .set_ref(kind)
                .unwrap_or_else(|| self.pick(values).to_owned()),
        }
    }

    fn ports(&mut self) -> String {
        match self.rng.random_range(0..10) {
            0..=5 => self.pick(PORTS).to_owned(),
            6..=7 => format!("{{ {} }}", self.subset(SET_PORTS)),
            _ => self
                .set_ref(SetKind::Port)
                .unwrap_or_else(|| self.pick(PORTS).to_owned()),
        }
    }

    fn set_decl(&mut self, name: &str, kind: SetKind) -> String {
        let (ty, elements) = match kind {
            SetKind::Addr4 => ("ipv4_addr", self.subset(SET_ADDRS4)),
            SetKind::Addr6 => ("ipv6_addr", self.subset(SET_ADDRS6)),
            SetKind::Port => ("inet_service", self.subset(SET_PORTS)),
        };
        format!("  set {name} {{ type {ty}; flags interval; elements = {{ {elements} }}; }}\n")
    }

    /// One match, with the protocols it ties its rule to (nft refuses a
    /// rule that mixes `ip` with `ip6`, or `tcp` with `udp`).
    fn matcher(&mut self, side: HookSide) -> (String, Option<Net>, Option<Transport>) {
        use Transport::{Either, Icmpv6, Tcp, Udp};
        loop {
            let m = match self.rng.random_range(0..20) {
                0..=3 if self.family != Family::Ip6 => {
                    let dir = if self.chance(0.5) { "saddr" } else { "daddr" };
                    let neg = self.neg();
                    let addrs = self.addrs(SetKind::Addr4);
                    (format!("ip {dir} {neg}{addrs}"), Some(Net::V4), None)
                }
                4..=7 if self.family != Family::Ip => {
                    let dir = if self.chance(0.5) { "saddr" } else { "daddr" };
                    let neg = self.neg();
                    let addrs = self.addrs(SetKind::Addr6);
                    (format!("ip6 {dir} {neg}{addrs}"), Some(Net::V6), None)
                }
                8..=10 => {
                    let neg = self.neg();
                    let (proto, l4) = *[
                        ("tcp", Some(Tcp)),
                        ("tcp", Some(Tcp)),
                        ("th", None),
                        ("udp", Some(Udp)),
                    ]
                    .choose(self.rng)
                    .unwrap();
                    (format!("{proto} dport {neg}{}", self.ports()), None, l4)
                }
                11 => (format!("tcp sport {}", self.ports()), None, Some(Tcp)),
                12 => {
                    let mut options = vec![
                        ("meta l4proto tcp", None, Tcp),
                        ("meta l4proto udp", None, Udp),
                        ("meta l4proto { tcp, udp }", None, Either),
                    ];
                    if self.family != Family::Ip6 {
                        options.push(("ip protocol tcp", Some(Net::V4), Tcp));
                    }
                    if self.family != Family::Ip {
                        options.push(("ip6 nexthdr tcp", Some(Net::V6), Tcp));
                        // Neighbour discovery, which IPv6 flows need.
                        options.push(("meta l4proto ipv6-icmp", None, Icmpv6));
                        options.push(("ip6 nexthdr icmpv6", Some(Net::V6), Icmpv6));
                        options.push((
                            "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert }",
                            Some(Net::V6),
                            Icmpv6,
                        ));
                        options.push(("icmpv6 type nd-neighbor-advert", Some(Net::V6), Icmpv6));
                        options.push(("icmpv6 type != nd-neighbor-solicit", Some(Net::V6), Icmpv6));
                        options.push(("icmpv6 type echo-request", Some(Net::V6), Icmpv6));
                    }
                    let (text, net, l4) = *options.choose(self.rng).unwrap();
                    (text.to_owned(), net, Some(l4))
                }
                13 if self.family == Family::Inet => {
                    if self.chance(0.5) {
                        ("meta nfproto ipv4".to_owned(), Some(Net::V4), None)
                    } else {
                        ("meta nfproto ipv6".to_owned(), Some(Net::V6), None)
                    }
                }
                14..=16 => {
                    let state = self.pick(&[
                        "ct state new",
                        "ct state established,related",
                        "ct state invalid",
                        "ct state { new, established }",
                        "ct state != established",
                        "ct state established",
                    ]);
                    (state.to_owned(), None, None)
                }
                17..=18 => {
                    let (kw, name_kw) = if side.incoming() {
                        ("iif", "iifname")
                    } else {
                        ("oif", "oifname")
                    };
                    let text = match self.rng.random_range(0..5) {
                        0 => format!("{kw} \"lo\""),
                        1 => format!("{name_kw} \"lo\""),
                        2 => format!("{name_kw} != \"lo\""),
                        3 => format!("{name_kw} \"{HOST_IF}\""),
                        _ => format!("{name_kw} {{ \"lo\", \"{HOST_IF}\" }}"),
                    };
                    (text, None, None)
                }
                19 => ("counter".to_owned(), None, None),
                _ => continue,
            };
            return m;
        }
    }

    /// One rule for a chain of hook `side`; `subs` are chains it may jump to.
    fn rule(&mut self, side: HookSide, subs: &[String], regular: bool) -> String {
        let mut parts = Vec::new();
        let (mut net, mut l4) = (None, None);
        for _ in 0..self.rng.random_range(0..=3) {
            let (text, m_net, m_l4) = self.matcher(side);
            if m_net.is_some() && net.is_some() && m_net != net
                || m_l4.is_some() && l4.is_some() && m_l4 != l4
            {
                continue;
            }
            net = net.or(m_net);
            l4 = l4.or(m_l4);
            parts.push(text);
        }
        let verdict = loop {
            let v = match self.rng.random_range(0..20) {
                0..=5 => "accept".to_owned(),
                6..=9 => "drop".to_owned(),
                10..=11 if side.may_reject() => "reject".to_owned(),
                // nft adds the `meta l4proto tcp` a reset needs.
                12 if side.may_reject() && matches!(l4, None | Some(Transport::Tcp)) => {
                    "reject with tcp reset".to_owned()
                }
                13 if side.may_reject() && self.family == Family::Inet => {
                    "reject with icmpx type port-unreachable".to_owned()
                }
                14 => String::new(),
                15..=17 if !subs.is_empty() => {
                    let kw = if self.chance(0.7) { "jump" } else { "goto" };
                    format!("{kw} {}", subs.choose(self.rng).unwrap())
                }
                18..=19 if regular => "return".to_owned(),
                _ => continue,
            };
            break v;
        };
        if !verdict.is_empty() {
            parts.push(verdict);
        }
        if parts.is_empty() {
            parts.push("counter".to_owned());
        }
        format!("    {}\n", parts.join(" "))
    }

    fn table(&mut self, name: &str) -> String {
        let family = match self.family {
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
            Family::Inet => "inet",
        };
        let mut out = format!("table {family} {name} {{\n");
        self.sets.clear();
        for i in 0..self.rng.random_range(0..=2) {
            let mut kinds = vec![SetKind::Port];
            if self.family != Family::Ip6 {
                kinds.push(SetKind::Addr4);
            }
            if self.family != Family::Ip {
                kinds.push(SetKind::Addr6);
            }
            let kind = *kinds.choose(self.rng).unwrap();
            let set = format!("s{i}");
            out += &self.set_decl(&set, kind);
            self.sets.push((set, kind));
        }
        for b in 0..self.rng.random_range(1..=3) {
            let side = *[
                HookSide::Input,
                HookSide::Input,
                HookSide::Output,
                HookSide::Output,
                HookSide::Prerouting,
                HookSide::Postrouting,
            ]
            .choose(self.rng)
            .unwrap();
            let priority = self.pick(&[
                "filter",
                "filter",
                "0",
                "-10",
                "10",
                "filter - 5",
                "filter + 5",
                "mangle",
                "raw",
                "security",
                "-250",
                "100",
            ]);
            let policy = if self.chance(0.35) { "drop" } else { "accept" };
            let base = format!("b{b}");
            // Regular chains owned by this base chain: each jumps only to later ones.
            let subs: Vec<String> = (0..self.rng.random_range(0..=2))
                .map(|s| format!("{base}_s{s}"))
                .collect();
            let _ = writeln!(
                out,
                "  chain {base} {{\n    type filter hook {} priority {priority}; policy {policy};",
                side.name()
            );
            if self.chance(0.5) {
                out += "    ct state established,related accept\n";
            }
            for _ in 0..self.rng.random_range(0..=5) {
                out += &self.rule(side, &subs, false);
            }
            out += "  }\n";
            for (i, sub) in subs.iter().enumerate() {
                let _ = writeln!(out, "  chain {sub} {{");
                for _ in 0..self.rng.random_range(1..=3) {
                    out += &self.rule(side, &subs[i + 1..], true);
                }
                out += "  }\n";
            }
        }
        out += "}\n";
        out
    }
}

/// Ruleset `index` of a run seeded `seed`, and which probes it is tried with.
pub fn generate(seed: u64, index: usize, flows_per_ruleset: usize) -> (String, Vec<usize>) {
    let mut rng = ruleset_rng(seed, index);
    let mut text = String::from("flush ruleset\n");
    for t in 0..rng.random_range(1..=3) {
        let family = *[Family::Ip, Family::Ip6, Family::Inet, Family::Inet]
            .choose(&mut rng)
            .unwrap();
        let mut gen = Gen {
            rng: &mut rng,
            family,
            sets: Vec::new(),
        };
        text += &gen.table(&format!("t{t}"));
    }
    let all: Vec<usize> = (0..probes().len()).collect();
    let chosen = all
        .sample(&mut rng, flows_per_ruleset.min(all.len()))
        .copied()
        .collect();
    (text, chosen)
}

// ---------------------------------------------------------------------- lab

/// Starts `f` on a thread that has entered `ns`; sockets made there stay in it.
fn spawn_in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        setns(&file, CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
}

/// Echoes one byte per connection, each on its own thread so a connection
/// whose data a ruleset drops holds up no other.
fn serve(listener: TcpListener) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(PATIENT_WAIT * 2));
                let mut b = [0u8; 1];
                if s.read_exact(&mut b).is_ok() {
                    let _ = s.write_all(&b);
                }
            });
        }
    });
}

/// The firewall host and its peer joined by a veth pair, both serving.
pub struct Lab {
    host: Netns,
    peer: Netns,
    dir: tempfile::TempDir,
    /// The client port of the next connection. Ports are never reused in a
    /// lab: a connection a ruleset broke can leave an `established` conntrack
    /// entry behind, and a new connection on its ports would be let through
    /// as established rather than judged as new.
    next_port: Cell<u16>,
}

/// Client ports the labs use, inside every stack's ephemeral range.
const CLIENT_PORTS: std::ops::RangeInclusive<u16> = 20000..=60999;

impl Lab {
    pub fn new() -> Lab {
        let host = Netns::new("dh");
        let peer = Netns::new("dp");
        host.exec(&[
            "ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", PEER_IF, "netns",
            &peer.name,
        ]);
        for (ns, ifname, a4, a6) in [
            (&host, HOST_IF, HOST4, HOST6),
            (&peer, PEER_IF, PEER4, PEER6),
        ] {
            ns.exec(&["ip", "addr", "add", &format!("{a4}/24"), "dev", ifname]);
            ns.exec(&[
                "ip",
                "addr",
                "add",
                &format!("{a6}/64"),
                "dev",
                ifname,
                "nodad",
            ]);
            ns.exec(&["ip", "link", "set", ifname, "up"]);
        }
        for (ns, a4, a6, ports) in [
            (&host, HOST4, HOST6, HOST_PORTS),
            (&peer, PEER4, PEER6, PEER_PORTS),
        ] {
            let addrs = [
                format!("{a4}:{}", ports[0]),
                format!("[{a6}]:{}", ports[1]),
                format!("[::]:{}", ports[2]),
            ];
            for addr in addrs {
                let addr: SocketAddr = addr.parse().unwrap();
                let listener = spawn_in_ns(&ns.name, move || TcpListener::bind(addr).unwrap());
                serve(listener.join().unwrap());
            }
        }
        Lab {
            host,
            peer,
            dir: tempfile::tempdir().unwrap(),
            next_port: Cell::new(*CLIENT_PORTS.start()),
        }
    }

    /// Loads `text` on the firewall host; nft's complaint if it refuses it.
    fn load(&self, text: &str) -> Result<(), String> {
        let file = self.dir.path().join("ruleset.nft");
        std::fs::write(&file, text).unwrap();
        let out = crate::common::run(&mut self.host.cmd(&["nft", "-f", file.to_str().unwrap()]));
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Forgets the neighbours on both sides, so every IPv6 flow needs
    /// neighbour discovery through the ruleset, as the checker assumes.
    fn forget_neighbours(&self) {
        self.host
            .exec(&["ip", "-6", "neigh", "flush", "dev", HOST_IF]);
        self.peer
            .exec(&["ip", "-6", "neigh", "flush", "dev", PEER_IF]);
    }

    fn live_json(&self) -> String {
        self.host.exec(&["nft", "-j", "list", "ruleset"])
    }

    fn attempt(&self, probe: &Probe, wait: Duration) -> std::thread::JoinHandle<Kernel> {
        let client = if probe.client_on_host {
            &self.host
        } else {
            &self.peer
        };
        let target = probe.target;
        let port = self.next_port.get();
        assert!(
            CLIENT_PORTS.contains(&port),
            "a lab ran out of client ports"
        );
        self.next_port.set(port + 1);
        spawn_in_ns(&client.name, move || connect(target, port, wait))
    }
}

/// One connection attempt from client port `port` and one byte echoed,
/// each given `wait`.
fn connect(target: SocketAddr, port: u16, wait: Duration) -> Kernel {
    let classify = |e: std::io::Error| match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => Kernel::TimedOut,
        _ => Kernel::Refused(e.to_string()),
    };
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(SockProtocol::TCP),
    )
    .expect("a TCP socket");
    let source = match target {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
    };
    socket
        .bind(&source.into())
        .unwrap_or_else(|e| panic!("client port {port}: {e}"));
    if let Err(e) = socket.connect_timeout(&target.into(), wait) {
        return classify(e);
    }
    let mut s = TcpStream::from(socket);
    s.set_read_timeout(Some(wait)).unwrap();
    let mut b = [0u8; 1];
    match s.write_all(b"x").and_then(|()| s.read_exact(&mut b)) {
        Ok(()) => Kernel::Connected,
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => Kernel::Refused(e.to_string()),
        Err(e) => classify(e),
    }
}

// ------------------------------------------------------------------- verdicts

/// One flow where the checker and the kernel disagree.
#[derive(Debug)]
pub struct Disagreement {
    pub index: usize,
    pub ruleset: String,
    pub flow: String,
    pub checker: String,
    pub kernel: Kernel,
}

#[derive(Debug, Default)]
pub struct Report {
    pub rulesets: usize,
    pub flows: usize,
    /// Flows where the checker said allowed or blocked and the kernel agreed.
    pub agreed: usize,
    /// Flows the checker called `MaybeBlocked` (explicitly undecided).
    pub maybe: usize,
    pub connected: usize,
    pub refused: usize,
    pub timed_out: usize,
    pub disagreements: Vec<Disagreement>,
    /// Flows the checker decided one way from the text and the other from
    /// `nft -j`.
    pub json_mismatches: Vec<String>,
    /// Flows decided from one reading and "maybe" from the other.
    pub json_less_certain: usize,
    /// Rulesets nft refused (a generator bug; none expected).
    pub refused_by_nft: Vec<String>,
    /// Rulesets the checker could not read (as text or as `nft -j`).
    pub unreadable: Vec<String>,
    /// Per kind of flow: (flows, decided, agreed).
    pub kinds: BTreeMap<&'static str, (usize, usize, usize)>,
    /// Why the checker said maybe, and how often (rule locations left out).
    pub maybe_reasons: BTreeMap<String, usize>,
}

impl Report {
    fn merge(&mut self, other: Report) {
        self.rulesets += other.rulesets;
        self.flows += other.flows;
        self.agreed += other.agreed;
        self.maybe += other.maybe;
        self.connected += other.connected;
        self.refused += other.refused;
        self.timed_out += other.timed_out;
        self.disagreements.extend(other.disagreements);
        self.json_mismatches.extend(other.json_mismatches);
        self.json_less_certain += other.json_less_certain;
        self.refused_by_nft.extend(other.refused_by_nft);
        self.unreadable.extend(other.unreadable);
        for (kind, (n, decided, agreed)) in other.kinds {
            let mine = self.kinds.entry(kind).or_default();
            *mine = (mine.0 + n, mine.1 + decided, mine.2 + agreed);
        }
        for (reason, n) in other.maybe_reasons {
            *self.maybe_reasons.entry(reason).or_default() += n;
        }
    }

    /// Agreement on the flows the checker decided.
    pub fn agreement(&self) -> f64 {
        let decided = self.flows - self.maybe;
        if decided == 0 {
            return 1.0;
        }
        self.agreed as f64 / decided as f64
    }

    /// The figures per kind of flow and the reasons for "maybe", one a line.
    pub fn details(&self) -> String {
        let mut out = String::new();
        for (kind, (n, decided, agreed)) in &self.kinds {
            let _ = writeln!(
                out,
                "  {kind}: {n} flows, {decided} decided, {agreed} agreed"
            );
        }
        for (why, n) in &self.maybe_reasons {
            let _ = writeln!(out, "  maybe ({n}x): {why}");
        }
        out
    }

    pub fn summary(&self) -> String {
        format!(
            "{} rulesets, {} flows (kernel: {} connected, {} refused, {} timed out); checker decided {} \
             and agreed on {} ({:.2}%), said maybe for {}; {} disagreements, {} text/JSON mismatches \
             ({} flows decided from one and maybe from the other), \
             {} rulesets refused by nft, {} unreadable by the checker",
            self.rulesets,
            self.flows,
            self.connected,
            self.refused,
            self.timed_out,
            self.flows - self.maybe,
            self.agreed,
            100.0 * self.agreement(),
            self.maybe,
            self.disagreements.len(),
            self.json_mismatches.len(),
            self.json_less_certain,
            self.refused_by_nft.len(),
            self.unreadable.len(),
        )
    }
}

fn agrees(outcome: Outcome, kernel: &Kernel) -> Option<bool> {
    match (outcome, kernel) {
        (Outcome::MaybeBlocked, _) => None,
        (Outcome::Allowed, Kernel::Connected) => Some(true),
        (Outcome::Blocked, Kernel::Refused(_) | Kernel::TimedOut) => Some(true),
        _ => Some(false),
    }
}

fn run_one(lab: &Lab, seed: u64, index: usize, flows_per_ruleset: usize, report: &mut Report) {
    let (text, chosen) = generate(seed, index, flows_per_ruleset);
    report.rulesets += 1;
    if let Err(e) = lab.load(&text) {
        report
            .refused_by_nft
            .push(format!("ruleset {index}: {e}\n{text}"));
        return;
    }
    let ruleset = match nft::parse_str("generated.nft", &text) {
        Ok(r) => r,
        Err(e) => {
            report
                .unreadable
                .push(format!("ruleset {index}: {e}\n{text}"));
            return;
        }
    };
    let json = lab.live_json();
    let live = match nft::json::parse_json(&json) {
        Ok(r) => r,
        Err(e) => {
            report
                .unreadable
                .push(format!("ruleset {index}, nft -j: {e}\n{json}"));
            return;
        }
    };
    let all = probes();
    let probes: Vec<&Probe> = chosen.iter().map(|&i| &all[i]).collect();
    let flows: Vec<ObservedFlow> = probes.iter().map(|p| p.flow()).collect();
    let verdicts = check(&ruleset, &flows);
    let live_verdicts = check(&live, &flows);
    lab.forget_neighbours();
    let attempts: Vec<_> = probes.iter().map(|p| lab.attempt(p, QUICK_WAIT)).collect();
    for (i, attempt) in attempts.into_iter().enumerate() {
        let mut kernel = attempt.join().unwrap();
        let outcome = verdicts[i].outcome;
        if outcome == Outcome::Allowed && kernel == Kernel::TimedOut {
            kernel = lab.attempt(probes[i], PATIENT_WAIT).join().unwrap();
        }
        report.flows += 1;
        match &kernel {
            Kernel::Connected => report.connected += 1,
            Kernel::Refused(_) => report.refused += 1,
            Kernel::TimedOut => report.timed_out += 1,
        }
        let live_outcome = live_verdicts[i].outcome;
        if live_outcome != outcome && Outcome::MaybeBlocked == live_outcome.max(outcome) {
            // One reading is less certain (nft's listing hides some matches).
            report.json_less_certain += 1;
        } else if live_outcome != outcome {
            report.json_mismatches.push(format!(
                "ruleset {index}, {}: text {:?}, nft -j {:?}\n{text}",
                describe(&flows[i]),
                verdicts[i],
                live_verdicts[i]
            ));
        }
        let tally = report.kinds.entry(probes[i].kind).or_default();
        tally.0 += 1;
        if agrees(outcome, &kernel).is_some() {
            tally.1 += 1;
        }
        if agrees(outcome, &kernel) == Some(true) {
            tally.2 += 1;
        }
        if outcome == Outcome::MaybeBlocked {
            for u in &verdicts[i].unknowns {
                // "FILE:LINE:COL (why)": the why.
                let why = u.split_once(" (").map_or(u.as_str(), |(_, w)| w);
                let why = why.strip_suffix(')').unwrap_or(why).to_owned();
                *report.maybe_reasons.entry(why).or_default() += 1;
            }
        }
        match agrees(outcome, &kernel) {
            None => report.maybe += 1,
            Some(true) => report.agreed += 1,
            Some(false) => report.disagreements.push(Disagreement {
                index,
                ruleset: text.clone(),
                flow: describe(&flows[i]),
                checker: format!("{:?}", verdicts[i]),
                kernel,
            }),
        }
    }
}

fn describe(f: &ObservedFlow) -> String {
    format!(
        "{} tcp local {} remote {} port {}",
        f.direction.as_str(),
        f.local,
        f.remote,
        f.service_port
    )
}

/// What a run does: which rulesets, how many flows each, on how many labs.
pub struct Config {
    pub seed: u64,
    pub rulesets: usize,
    pub flows_per_ruleset: usize,
    pub labs: usize,
    /// Only this ruleset index (to reproduce one failure).
    pub only: Option<usize>,
}

impl Config {
    /// Defaults overridden by `CONNSCOPE_DIFF_SEED`, `CONNSCOPE_DIFF_RULESETS`
    /// and `CONNSCOPE_DIFF_ONLY`; a fresh seed when none is given.
    pub fn from_env(rulesets: usize, flows_per_ruleset: usize, labs: usize) -> Config {
        let var = |name: &str| {
            std::env::var(name).ok().map(|v| {
                v.parse::<u64>()
                    .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
            })
        };
        let seed = var("CONNSCOPE_DIFF_SEED").unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
        Config {
            seed,
            rulesets: var("CONNSCOPE_DIFF_RULESETS").map_or(rulesets, |n| n as usize),
            flows_per_ruleset,
            labs,
            only: var("CONNSCOPE_DIFF_ONLY").map(|n| n as usize),
        }
    }
}

/// Runs every ruleset of `config`, spread over its labs.
pub fn run(config: &Config) -> Report {
    let indices: Vec<usize> = match config.only {
        Some(i) => vec![i],
        None => (0..config.rulesets).collect(),
    };
    let indices = Arc::new(indices);
    let labs = config.labs.min(indices.len()).max(1);
    let started = Instant::now();
    let workers: Vec<_> = (0..labs)
        .map(|w| {
            let indices = Arc::clone(&indices);
            let (seed, per) = (config.seed, config.flows_per_ruleset);
            std::thread::spawn(move || {
                let lab = Lab::new();
                let mut report = Report::default();
                for &index in indices.iter().skip(w).step_by(labs) {
                    run_one(&lab, seed, index, per, &mut report);
                }
                report
            })
        })
        .collect();
    let mut report = Report::default();
    for w in workers {
        report.merge(w.join().unwrap());
    }
    eprintln!(
        "differential run, seed {} ({} labs): {:.1} s",
        config.seed,
        labs,
        started.elapsed().as_secs_f64()
    );
    report
}

/// Panics with every disagreement (ruleset, flow, both verdicts) and how to
/// rebuild the failing ruleset.
pub fn assert_agreement(config: &Config, report: &Report) {
    eprintln!("{}\n{}", report.summary(), report.details());
    let mut problems = String::new();
    for d in report.disagreements.iter().take(10) {
        let _ = writeln!(
            problems,
            "--- ruleset {} (CONNSCOPE_DIFF_SEED={} CONNSCOPE_DIFF_ONLY={}): {}\nchecker: {}\nkernel: {:?}\n{}",
            d.index, config.seed, d.index, d.flow, d.checker, d.kernel, d.ruleset
        );
    }
    for m in report.json_mismatches.iter().take(5) {
        let _ = writeln!(problems, "--- text/JSON mismatch: {m}");
    }
    for u in report.unreadable.iter().take(5) {
        let _ = writeln!(problems, "--- the checker cannot read {u}");
    }
    for r in report.refused_by_nft.iter().take(5) {
        let _ = writeln!(problems, "--- nft refused {r}");
    }
    assert!(
        problems.is_empty(),
        "seed {}: {}\n{problems}",
        config.seed,
        report.summary()
    );
}
