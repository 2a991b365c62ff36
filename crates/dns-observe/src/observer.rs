//! The observer thread: reads the packet sockets of the watched namespaces,
//! learns names into the shared [`NameCache`], and hands every DNS answer to
//! whoever keeps nft sets from them. ClientHellos come from its sockets too,
//! or, when the sockets only tap received packets, from whoever copies them
//! elsewhere (the eBPF capture backend) through a [`HelloLearner`]. When that
//! copies the DNS answers too, there are no sockets (nor thread): the answers
//! are handed in through an [`AnswerLearner`], down the same path.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};

use crate::cache::NameCache;
use crate::dns::{parse_response, Answer};
use crate::reassembly::{DnsStreams, Segment};
use crate::sni::server_name;
use crate::socket::{PacketSocket, Way};

/// Which network namespaces to watch (the agent's `--netns`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespaces {
    /// The one the agent runs in.
    Own,
    /// One namespace by inode, found under /run/netns or /proc/*/ns/net.
    Inode(u64),
    /// Every namespace, looked for again every few seconds.
    All,
}

/// How the observer runs.
#[derive(Debug, Clone)]
pub struct ObserverConfig {
    pub namespaces: Namespaces,
    /// Addresses remembered per namespace (least recently answered go first).
    pub addresses_per_netns: usize,
    /// How long a name outlives its answer's TTL.
    pub grace: Duration,
    /// Packet sockets per namespace for answers and ClientHellos; without
    /// them both are handed in, through an [`AnswerLearner`] and a
    /// [`HelloLearner`] (the eBPF backend's hooks).
    pub packet_sockets: bool,
}

impl Default for ObserverConfig {
    fn default() -> Self {
        ObserverConfig {
            namespaces: Namespaces::Own,
            addresses_per_netns: 65_536,
            grace: Duration::from_secs(300),
            packet_sockets: true,
        }
    }
}

/// One DNS answer seen in one namespace, for the nft set keeper.
#[derive(Debug, Clone)]
pub struct ObservedAnswer {
    pub netns: u64,
    /// The namespace to run nft in; `None` for the agent's own.
    pub netns_file: Option<Arc<File>>,
    pub answer: Answer,
    pub at: Instant,
}

/// Why the observer could not start.
#[derive(Debug, thiserror::Error)]
pub enum ObserverError {
    #[error(
        "cannot open a packet socket in network namespace {netns}: {source} (needs CAP_NET_RAW)"
    )]
    Socket { netns: u64, source: io::Error },
    #[error("network namespace {0} not found under /run/netns or /proc/*/ns/net")]
    NamespaceNotFound(u64),
    #[error("cannot read network namespace {path}: {source}")]
    Namespace { path: PathBuf, source: io::Error },
    #[error("cannot start the observer thread: {0}")]
    Thread(io::Error),
}

/// Counters of the observer.
#[derive(Debug, Default)]
pub struct ObserverStats {
    /// Packets the filter let through.
    pub packets: AtomicU64,
    /// DNS responses with addresses learned.
    pub answers: AtomicU64,
    /// ClientHellos with a server name learned.
    pub hellos: AtomicU64,
    /// Packets from port 53 that were not a DNS response.
    pub malformed: AtomicU64,
    /// Packets from port 53 handed in cut short (not parsed).
    pub cut: AtomicU64,
    /// Packets the kernel dropped because the observer was behind.
    pub kernel_dropped: AtomicU64,
    /// ClientHellos the capture backend could not hand over.
    pub hellos_dropped: AtomicU64,
    /// Packets from port 53 the capture backend could not hand over.
    pub answers_dropped: AtomicU64,
    /// Answers not handed to the nft set keeper because it was behind.
    pub keeper_dropped: AtomicU64,
}

/// The running observer; stops its thread when dropped.
pub struct Observer {
    names: Arc<Mutex<NameCache>>,
    stats: Arc<ObserverStats>,
    /// The keeper's channel, for an [`AnswerLearner`] when there are no sockets.
    answers: Option<SyncSender<ObservedAnswer>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Observer {
    /// Opens the packet sockets (so that a missing privilege fails here) and
    /// starts the thread. Answers go to `answers` too when given.
    pub fn start(
        config: &ObserverConfig,
        answers: Option<SyncSender<ObservedAnswer>>,
    ) -> Result<Observer, ObserverError> {
        let names = Arc::new(Mutex::new(NameCache::new(
            config.addresses_per_netns,
            config.grace,
        )));
        let stats = Arc::new(ObserverStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        if !config.packet_sockets {
            return Ok(Observer {
                names,
                stats,
                answers,
                stop,
                thread: None,
            });
        }
        let mut reader = Reader {
            namespaces: config.namespaces,
            watched: Vec::new(),
            names: names.clone(),
            stats: stats.clone(),
            answers,
            next_scan: Instant::now(),
            streams: DnsStreams::default(),
        };
        reader.scan()?;
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("names".into())
                .spawn(move || reader.run(&stop))
                .map_err(ObserverError::Thread)?
        };
        Ok(Observer {
            names,
            stats,
            answers: None,
            stop,
            thread: Some(thread),
        })
    }

    /// What was learned so far; the agent looks names up here.
    pub fn names(&self) -> Arc<Mutex<NameCache>> {
        self.names.clone()
    }

    pub fn stats(&self) -> &ObserverStats {
        &self.stats
    }

    /// Where ClientHellos seen elsewhere are handed in.
    pub fn hello_learner(&self) -> HelloLearner {
        HelloLearner {
            names: self.names.clone(),
            stats: self.stats.clone(),
        }
    }

    /// Where DNS answers seen elsewhere are handed in; only one should be
    /// (it follows TCP streams), and only without sockets
    /// ([`ObserverConfig::packet_sockets`] off), which would see them again.
    pub fn answer_learner(&self) -> AnswerLearner {
        AnswerLearner {
            names: self.names.clone(),
            stats: self.stats.clone(),
            answers: self.answers.clone(),
            streams: DnsStreams::default(),
            own: own_netns().ok(),
            files: HashMap::new(),
            next_sweep: Instant::now() + NAMESPACE_FILE_IDLE,
        }
    }
}

/// Learns the DNS answers that arrive as packets from elsewhere (the eBPF
/// capture backend's ingress hook): the same classification, TCP reassembly,
/// parser, cache and nft set keeper as the packet sockets' answers.
pub struct AnswerLearner {
    names: Arc<Mutex<NameCache>>,
    stats: Arc<ObserverStats>,
    answers: Option<SyncSender<ObservedAnswer>>,
    streams: DnsStreams,
    /// The agent's own namespace: the keeper runs nft there without a file.
    own: Option<u64>,
    /// Other namespaces' files for the keeper, by inode, with when last
    /// used: a held file keeps its namespace alive, so idle ones are let go.
    files: HashMap<u64, (Arc<File>, Instant)>,
    next_sweep: Instant,
}

/// How long an [`AnswerLearner`] keeps a namespace file nobody answered in.
const NAMESPACE_FILE_IDLE: Duration = Duration::from_secs(60);

impl AnswerLearner {
    /// `packet` is a packet received in namespace `netns` from port 53, from
    /// its IP header on; `wire_len` its whole length (a cut packet is
    /// counted, not parsed: its last message would be cut too).
    pub fn learn(&mut self, netns: u64, packet: &[u8], wire_len: usize) {
        self.stats.packets.fetch_add(1, Ordering::Relaxed);
        if packet.len() < wire_len {
            self.stats.cut.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut answers = Vec::new();
        match classify(Way::In, packet) {
            Some(Seen::Dns(payload)) => parse_into(&self.stats, payload, &mut answers),
            Some(Seen::DnsSegment {
                server,
                client,
                segment,
            }) => {
                for message in
                    self.streams
                        .segment((netns, server, client), segment, Instant::now())
                {
                    parse_into(&self.stats, &message, &mut answers);
                }
            }
            Some(Seen::Hello { .. }) | None => {}
        }
        if answers.is_empty() {
            return;
        }
        let file = if self.answers.is_some() && self.own != Some(netns) {
            match self.namespace_file(netns) {
                Some(file) => Some(file),
                None => {
                    // The keeper would run nft in the wrong namespace.
                    tracing::debug!(netns, "names: namespace not found for the nft sets");
                    self.stats
                        .keeper_dropped
                        .fetch_add(answers.len() as u64, Ordering::Relaxed);
                    learn_answers(&self.names, &self.stats, None, netns, None, answers);
                    return;
                }
            }
        } else {
            None
        };
        learn_answers(
            &self.names,
            &self.stats,
            self.answers.as_ref(),
            netns,
            file,
            answers,
        );
    }

    /// Counts packets lost before they reached here.
    pub fn dropped(&self, count: u64) {
        self.stats
            .answers_dropped
            .fetch_add(count, Ordering::Relaxed);
    }

    fn namespace_file(&mut self, netns: u64) -> Option<Arc<File>> {
        let now = Instant::now();
        if now >= self.next_sweep {
            self.next_sweep = now + NAMESPACE_FILE_IDLE;
            self.files
                .retain(|_, (_, used)| now.duration_since(*used) < NAMESPACE_FILE_IDLE);
        }
        if let Some((file, used)) = self.files.get_mut(&netns) {
            *used = now;
            return Some(file.clone());
        }
        let file = Arc::new(find_namespaces(|candidate| candidate == netns).remove(&netns)?);
        self.files.insert(netns, (file.clone(), now));
        Some(file)
    }
}

/// Learns the server names of ClientHellos seen elsewhere (without packet
/// sockets): same parser, same cache, same counters.
#[derive(Clone)]
pub struct HelloLearner {
    names: Arc<Mutex<NameCache>>,
    stats: Arc<ObserverStats>,
}

impl HelloLearner {
    /// `record` is a connection's first payload, from the TLS record on;
    /// a cut or split record gives no name, as from a packet socket.
    pub fn learn(&self, netns: u64, local: SocketAddr, remote: SocketAddr, record: &[u8]) {
        let Some(name) = server_name(record) else {
            return;
        };
        self.names
            .lock()
            .expect("the name cache is not poisoned")
            .learn_sni(netns, local, remote, name, Instant::now());
        self.stats.hellos.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts ClientHellos lost before they reached here.
    pub fn dropped(&self, count: u64) {
        self.stats
            .hellos_dropped
            .fetch_add(count, Ordering::Relaxed);
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The inode of this process's network namespace.
pub fn own_netns() -> io::Result<u64> {
    Ok(std::fs::metadata("/proc/self/ns/net")?.ino())
}

struct Watched {
    netns: u64,
    file: Option<Arc<File>>,
    socket: PacketSocket,
}

struct Reader {
    namespaces: Namespaces,
    watched: Vec<Watched>,
    names: Arc<Mutex<NameCache>>,
    stats: Arc<ObserverStats>,
    answers: Option<SyncSender<ObservedAnswer>>,
    next_scan: Instant,
    streams: DnsStreams,
}

/// How often the sockets are read: an answer is learned at most this late,
/// far inside the ring buffer's 50 ms by which connect events arrive.
const READ_INTERVAL: Duration = Duration::from_millis(20);
/// How often `--netns all` looks for new namespaces.
const SCAN_INTERVAL: Duration = Duration::from_secs(5);

impl Reader {
    /// Reads every socket each [`READ_INTERVAL`] rather than sleeping in
    /// poll(): a reader waiting on a socket makes every matching packet wake
    /// it, and that wake-up is paid by the thread that sent or received the
    /// packet (the workload: the DNS client, the resolver), measured as the
    /// largest part of naming's cost to it (docs/BENCHMARKS.md, Names). With
    /// nobody waiting the kernel only queues the packet.
    fn run(&mut self, stop: &AtomicBool) {
        let mut buffer = vec![0u8; 65_536];
        while !stop.load(Ordering::Relaxed) {
            if self.namespaces == Namespaces::All && Instant::now() >= self.next_scan {
                if let Err(err) = self.scan() {
                    tracing::warn!("names: {err}");
                }
            }
            std::thread::sleep(READ_INTERVAL);
            for index in 0..self.watched.len() {
                self.drain(index, &mut buffer);
            }
        }
    }

    fn drain(&mut self, index: usize, buffer: &mut [u8]) {
        let watched = &self.watched[index];
        let mut answers = Vec::new();
        let mut hellos = Vec::new();
        let learn = |payload: &[u8], answers: &mut Vec<Answer>| {
            parse_into(&self.stats, payload, answers);
        };
        // Bounded, so one flooded namespace does not starve the others.
        for _ in 0..1024 {
            match watched.socket.receive(buffer) {
                Ok(Some((way, packet))) => {
                    self.stats.packets.fetch_add(1, Ordering::Relaxed);
                    match classify(way, packet) {
                        Some(Seen::Dns(payload)) => learn(payload, &mut answers),
                        Some(Seen::DnsSegment {
                            server,
                            client,
                            segment,
                        }) => {
                            let flow = (watched.netns, server, client);
                            for message in self.streams.segment(flow, segment, Instant::now()) {
                                learn(&message, &mut answers);
                            }
                        }
                        Some(Seen::Hello {
                            local,
                            remote,
                            name,
                        }) => hellos.push((local, remote, name)),
                        None => {}
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    tracing::warn!(netns = watched.netns, "names: reading packets: {err}");
                    break;
                }
            }
        }
        let dropped = watched.socket.take_drops();
        if dropped > 0 {
            self.stats
                .kernel_dropped
                .fetch_add(dropped, Ordering::Relaxed);
        }
        if !hellos.is_empty() {
            let now = Instant::now();
            let mut names = self.names.lock().expect("the name cache is not poisoned");
            for (local, remote, name) in hellos.drain(..) {
                names.learn_sni(watched.netns, local, remote, name, now);
                self.stats.hellos.fetch_add(1, Ordering::Relaxed);
            }
        }
        if !answers.is_empty() {
            learn_answers(
                &self.names,
                &self.stats,
                self.answers.as_ref(),
                watched.netns,
                watched.file.clone(),
                answers,
            );
        }
    }

    /// Opens a socket in each namespace asked for that has none yet, and
    /// closes those of namespaces that are gone (a socket would keep its
    /// namespace alive).
    fn scan(&mut self) -> Result<(), ObserverError> {
        self.next_scan = Instant::now() + SCAN_INTERVAL;
        let own = own_netns().map_err(|source| ObserverError::Namespace {
            path: "/proc/self/ns/net".into(),
            source,
        })?;
        let wanted: Vec<(u64, Option<File>)> = match self.namespaces {
            Namespaces::Own => vec![(own, None)],
            Namespaces::Inode(inode) if inode == own => vec![(own, None)],
            Namespaces::Inode(inode) => {
                let mut found = find_namespaces(|candidate| candidate == inode);
                let file = found
                    .remove(&inode)
                    .ok_or(ObserverError::NamespaceNotFound(inode))?;
                vec![(inode, Some(file))]
            }
            Namespaces::All => {
                let mut found = find_namespaces(|candidate| candidate != own);
                self.watched
                    .retain(|w| w.netns == own || found.contains_key(&w.netns));
                let mut wanted = vec![(own, None)];
                wanted.extend(found.drain().map(|(inode, file)| (inode, Some(file))));
                wanted
            }
        };
        for (netns, file) in wanted {
            if self.watched.iter().any(|w| w.netns == netns) {
                continue;
            }
            match PacketSocket::open(file.as_ref()) {
                Ok(socket) => self.watched.push(Watched {
                    netns,
                    file: file.map(Arc::new),
                    socket,
                }),
                // A namespace that vanished between the scan and the open.
                Err(source) if self.namespaces == Namespaces::All && netns != own => {
                    tracing::debug!(netns, "names: {source}");
                }
                Err(source) => return Err(ObserverError::Socket { netns, source }),
            }
        }
        Ok(())
    }
}

/// Parses one DNS message into `answers` (a response with addresses), or
/// counts it malformed.
fn parse_into(stats: &ObserverStats, payload: &[u8], answers: &mut Vec<Answer>) {
    match parse_response(payload) {
        Ok(Some(answer)) => answers.push(answer),
        Ok(None) => {}
        Err(err) => {
            stats.malformed.fetch_add(1, Ordering::Relaxed);
            tracing::trace!("names: {err}");
        }
    }
}

/// Learns the answers seen in namespace `netns` into the cache, and hands
/// them to the nft set keeper when there is one (`file`: where it runs nft,
/// `None` for the agent's own namespace).
fn learn_answers(
    names: &Mutex<NameCache>,
    stats: &ObserverStats,
    keeper: Option<&SyncSender<ObservedAnswer>>,
    netns: u64,
    file: Option<Arc<File>>,
    answers: Vec<Answer>,
) {
    let now = Instant::now();
    {
        let mut names = names.lock().expect("the name cache is not poisoned");
        for answer in &answers {
            names.learn_answer(netns, answer, now);
        }
    }
    stats
        .answers
        .fetch_add(answers.len() as u64, Ordering::Relaxed);
    if let Some(sender) = keeper {
        for answer in answers {
            let observed = ObservedAnswer {
                netns,
                netns_file: file.clone(),
                answer,
                at: now,
            };
            match sender.try_send(observed) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    stats.keeper_dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Disconnected(_)) => break,
            }
        }
    }
}

/// Namespaces named under /run/netns or held by a process, by inode, for
/// those `wanted` says yes to.
fn find_namespaces(wanted: impl Fn(u64) -> bool) -> HashMap<u64, File> {
    let mut found = HashMap::new();
    let mut consider = |path: &Path| {
        if let Ok(meta) = std::fs::metadata(path) {
            let inode = meta.ino();
            if wanted(inode) && !found.contains_key(&inode) {
                if let Ok(file) = File::open(path) {
                    found.insert(inode, file);
                }
            }
        }
    };
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for entry in entries.flatten() {
            consider(&entry.path());
        }
    }
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            {
                consider(&entry.path().join("ns/net"));
            }
        }
    }
    found
}

/// What one captured packet holds.
#[derive(Debug)]
enum Seen<'p> {
    /// A DNS message in a UDP datagram from port 53.
    Dns(&'p [u8]),
    /// A TCP segment from port 53: a piece of a stream of DNS messages.
    DnsSegment {
        server: SocketAddr,
        client: SocketAddr,
        segment: Segment<'p>,
    },
    /// A ClientHello sent from `local` to `remote`.
    Hello {
        local: SocketAddr,
        remote: SocketAddr,
        name: String,
    },
}

fn classify(way: Way, packet: &[u8]) -> Option<Seen<'_>> {
    let sliced = SlicedPacket::from_ip(packet).ok()?;
    let (source, destination): (IpAddr, IpAddr) = match sliced.net? {
        NetSlice::Ipv4(ip) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        NetSlice::Ipv6(ip) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        NetSlice::Arp(_) => return None,
    };
    match (way, sliced.transport?) {
        (Way::In, TransportSlice::Udp(udp)) if udp.source_port() == 53 => {
            Some(Seen::Dns(udp.payload()))
        }
        (Way::In, TransportSlice::Tcp(tcp)) if tcp.source_port() == 53 => Some(Seen::DnsSegment {
            server: SocketAddr::new(source, tcp.source_port()),
            client: SocketAddr::new(destination, tcp.destination_port()),
            segment: Segment {
                sequence: tcp.sequence_number(),
                syn: tcp.syn(),
                ends: tcp.fin() || tcp.rst(),
                payload: tcp.payload(),
            },
        }),
        (Way::Out, TransportSlice::Tcp(tcp)) => Some(Seen::Hello {
            local: SocketAddr::new(source, tcp.source_port()),
            remote: SocketAddr::new(destination, tcp.destination_port()),
            name: server_name(tcp.payload())?,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use etherparse::PacketBuilder;
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData};

    use super::*;
    use crate::dns::tests::{record, response};
    use crate::sni::tests::client_hello;

    /// A response for `name` with one address, wire form.
    fn answer(name: &str, address: [u8; 4]) -> Vec<u8> {
        let name = Name::from_ascii(name).unwrap();
        let address = RData::A(A(Ipv4Addr::from(address)));
        response(&name, vec![record(&name, 60, address)])
    }

    #[test]
    fn answers_handed_in_are_learned_over_udp_and_across_tcp_segments() {
        let config = ObserverConfig {
            packet_sockets: false,
            ..ObserverConfig::default()
        };
        let observer = Observer::start(&config, None).unwrap();
        let mut learner = observer.answer_learner();
        let udp = |message: &[u8]| {
            let mut packet = Vec::new();
            PacketBuilder::ipv4([192, 0, 2, 53], [10, 0, 0, 1], 64)
                .udp(53, 40000)
                .write(&mut packet, message)
                .unwrap();
            packet
        };
        let whole = udp(&answer("udp.example.", [192, 0, 2, 1]));
        learner.learn(7, &whole, whole.len());
        // Cut short by the kernel: counted, not parsed.
        let cut = udp(&answer("cut.example.", [192, 0, 2, 3]));
        learner.learn(7, &cut[..cut.len() - 4], cut.len());

        let message = answer("tcp.example.", [192, 0, 2, 2]);
        let mut stream = (message.len() as u16).to_be_bytes().to_vec();
        stream.extend_from_slice(&message);
        let tcp = |sequence: u32, syn: bool, payload: &[u8]| {
            let builder = PacketBuilder::ipv4([192, 0, 2, 53], [10, 0, 0, 1], 64)
                .tcp(53, 40001, sequence, 1000);
            let builder = if syn { builder.syn() } else { builder };
            let mut packet = Vec::new();
            builder.write(&mut packet, payload).unwrap();
            packet
        };
        // SYN-ACK, then the second piece before the first.
        for packet in [
            tcp(1000, true, &[]),
            tcp(1011, false, &stream[10..]),
            tcp(1001, false, &stream[..10]),
        ] {
            learner.learn(7, &packet, packet.len());
        }

        let names = observer.names();
        let mut names = names.lock().unwrap();
        let now = Instant::now();
        let name_of = |names: &mut NameCache, netns, address: [u8; 4]| {
            names
                .name_of(netns, Ipv4Addr::from(address).into(), now)
                .map(|n| n.asked.to_string())
        };
        assert_eq!(
            name_of(&mut names, 7, [192, 0, 2, 1]).as_deref(),
            Some("udp.example")
        );
        assert_eq!(
            name_of(&mut names, 7, [192, 0, 2, 2]).as_deref(),
            Some("tcp.example")
        );
        assert_eq!(name_of(&mut names, 7, [192, 0, 2, 3]), None);
        assert_eq!(name_of(&mut names, 8, [192, 0, 2, 1]), None);
        let stats = observer.stats();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        assert_eq!(
            (get(&stats.packets), get(&stats.answers), get(&stats.cut)),
            (5, 2, 1)
        );
    }

    #[test]
    fn answers_over_udp_and_tcp_and_hellos_are_told_apart() {
        let dns = b"\x00\x07dnsmsg";
        let mut udp = Vec::new();
        PacketBuilder::ipv4([192, 0, 2, 53], [192, 0, 2, 1], 64)
            .udp(53, 40000)
            .write(&mut udp, dns)
            .unwrap();
        assert!(matches!(classify(Way::In, &udp), Some(Seen::Dns(d)) if d == dns));
        assert!(classify(Way::Out, &udp).is_none());

        let mut tcp = Vec::new();
        PacketBuilder::ipv6([1; 16], [2; 16], 64)
            .tcp(53, 40000, 77, 1000)
            .fin()
            .write(&mut tcp, b"\x00\x10cut")
            .unwrap();
        let Some(Seen::DnsSegment {
            server,
            client,
            segment,
        }) = classify(Way::In, &tcp)
        else {
            panic!("a TCP segment from port 53")
        };
        assert_eq!(
            server,
            "[101:101:101:101:101:101:101:101]:53".parse().unwrap()
        );
        assert_eq!(
            client,
            "[202:202:202:202:202:202:202:202]:40000".parse().unwrap()
        );
        assert_eq!(
            (segment.sequence, segment.syn, segment.ends, segment.payload),
            (77, false, true, &b"\x00\x10cut"[..])
        );

        let mut hello = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 443, 1, 1000)
            .write(&mut hello, &client_hello(b"tls.example"))
            .unwrap();
        let Some(Seen::Hello {
            local,
            remote,
            name,
        }) = classify(Way::Out, &hello)
        else {
            panic!("a ClientHello")
        };
        assert_eq!(local, "10.0.0.1:40000".parse().unwrap());
        assert_eq!(remote, "10.0.0.2:443".parse().unwrap());
        assert_eq!(name, "tls.example");
    }
}
