//! The NFLOG subscription: a thread that enters the watched network
//! namespace (NFLOG groups, like firewalls, are per namespace), binds the
//! group in copy-packet mode, and turns each logged packet into a hit.
//!
//! The copy range is 128 bytes: an IPv6 header (40) and a TCP header with
//! options (60) fit, so the 4-tuple is always there while the kernel copies
//! no payload. The queue threshold is 1, so every record is sent at once and
//! its reading time is its time (the kernel stamps only packets that carry a
//! receive timestamp, never the outgoing ones).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use connscope_event::{normalize_endpoints, Timestamp};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{config_request, ConfigCmd, ConfigMode, Timeout};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::constants::NETLINK_NETFILTER;
use netlink_sys::Socket;
use tracing::{debug, warn};

use crate::attempts::{AttemptLimits, Attempts, Seen};
use crate::decode::{packets, LoggedPacket, Skipped};
use crate::hit::{Chain, FirewallHit, HitReport};
use crate::owner::Owners;

/// Bytes of each logged packet the kernel copies: IPv6 + TCP with options.
pub const COPY_RANGE: u32 = 128;

/// What to watch.
#[derive(Debug, Clone)]
pub struct NflogConfig {
    /// The NFLOG group the policy logs to (`log group N`).
    pub group: u16,
    /// A network namespace to watch (`/var/run/netns/NAME`,
    /// `/proc/PID/ns/net`); `None` for the agent's own.
    pub netns: Option<PathBuf>,
    pub limits: AttemptLimits,
    /// Hits waiting for the reader at most; beyond, they are dropped and
    /// counted rather than held in memory.
    pub queue: usize,
}

impl NflogConfig {
    pub fn new(group: u16) -> NflogConfig {
        NflogConfig {
            group,
            netns: None,
            limits: AttemptLimits::default(),
            queue: 4096,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NflogError {
    #[error("cannot enter network namespace {path}: {source}")]
    Netns { path: PathBuf, source: io::Error },
    #[error("cannot open a netfilter netlink socket: {0}")]
    Socket(io::Error),
    #[error("the kernel refused to bind NFLOG group {group} (is another program reading it? nfnetlink_log loaded?): {source}")]
    Bind { group: u16, source: io::Error },
    #[error("the kernel's reply to binding NFLOG group {group} is unreadable: {reason}")]
    Reply { group: u16, reason: String },
    #[error("reading NFLOG group {group} failed: {source}")]
    Read { group: u16, source: io::Error },
}

/// Counters of one capture, for the agent's health report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NflogStats {
    /// Packets with a connscope prefix read.
    pub packets: u64,
    /// Attempts reported.
    pub hits: u64,
    /// Hits whose socket was found, and those whose process was named.
    pub attributed_socket: u64,
    pub attributed_process: u64,
    /// Hits reported without a lookup: beyond `max_attributed_per_second`.
    pub over_attribution_budget: u64,
    /// New attempts dropped by the flood limits or a full queue.
    pub dropped: u64,
    /// Records another rule logged to the group (another prefix).
    pub foreign: u64,
    /// Records that were not TCP/UDP or could not be read.
    pub unreadable: u64,
    /// Times the kernel's socket buffer overflowed (records lost there).
    pub overruns: u64,
}

/// A running capture: hits arrive on [`NflogCapture::hits`] until it is
/// dropped (or [`NflogCapture::stop`]ped).
pub struct NflogCapture {
    pub hits: Receiver<HitReport>,
    stats: Arc<Mutex<NflogStats>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), NflogError>>>,
}

impl NflogCapture {
    /// Binds the group (in the namespace) and starts reading; an error to
    /// bind is returned here, not later.
    pub fn start(config: NflogConfig) -> Result<NflogCapture, NflogError> {
        let (hits_tx, hits) = mpsc::sync_channel(config.queue);
        let (ready_tx, ready) = mpsc::channel();
        let stats = Arc::new(Mutex::new(NflogStats::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stats, stop) = (stats.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("nflog-{}", config.group))
                .spawn(move || {
                    let reader = match Reader::open(&config, hits_tx, stats, stop) {
                        Ok(reader) => {
                            let _ = ready_tx.send(Ok(()));
                            reader
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return Ok(());
                        }
                    };
                    reader.run()
                })
                .map_err(NflogError::Socket)?
        };
        match ready.recv() {
            Ok(Ok(())) => Ok(NflogCapture {
                hits,
                stats,
                stop,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(NflogError::Socket(io::Error::other(
                "the capture thread died",
            ))),
        }
    }

    pub fn stats(&self) -> NflogStats {
        *self
            .stats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stops the thread (within its 200 ms read timeout) and returns how it
    /// ended.
    pub fn stop(mut self) -> Result<(), NflogError> {
        self.halt()
    }

    fn halt(&mut self) -> Result<(), NflogError> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

impl Drop for NflogCapture {
    fn drop(&mut self) {
        if let Err(e) = self.halt() {
            warn!("NFLOG capture ended with an error: {e}");
        }
    }
}

/// How long a read waits before checking for a stop and expiring attempts.
const READ_TIMEOUT: Duration = Duration::from_millis(200);

/// The thread's side: socket, attempts, owners, in the watched namespace.
struct Reader {
    group: u16,
    socket: Socket,
    netns: u64,
    processor: Processor,
    hits: SyncSender<HitReport>,
    stats: Arc<Mutex<NflogStats>>,
    stop: Arc<AtomicBool>,
}

impl Reader {
    fn open(
        config: &NflogConfig,
        hits: SyncSender<HitReport>,
        stats: Arc<Mutex<NflogStats>>,
        stop: Arc<AtomicBool>,
    ) -> Result<Reader, NflogError> {
        if let Some(path) = &config.netns {
            enter(path).map_err(|source| NflogError::Netns {
                path: path.clone(),
                source,
            })?;
        }
        // This thread's namespace (`/proc/self` would name the process's).
        let netns = std::fs::metadata("/proc/thread-self/ns/net")
            .map_err(NflogError::Socket)?
            .ino();
        let socket = subscribe(config.group)?;
        Ok(Reader {
            group: config.group,
            socket,
            netns,
            processor: Processor::new(config.limits, netns),
            hits,
            stats,
            stop,
        })
    }

    fn run(mut self) -> Result<(), NflogError> {
        let mut buffer = vec![0u8; 1 << 16];
        while !self.stop.load(Ordering::Relaxed) {
            let mut reports = Vec::new();
            match self.socket.recv(&mut &mut buffer[..], 0) {
                Ok(size) => self
                    .processor
                    .datagram(&buffer[..size], Instant::now(), &mut reports),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    warn!(
                        group = self.group,
                        netns = self.netns,
                        "NFLOG records lost: socket buffer overflowed"
                    );
                    self.processor.stats.overruns += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(NflogError::Read {
                        group: self.group,
                        source,
                    })
                }
            }
            reports.extend(self.processor.expire(Instant::now()));
            for report in reports {
                if self.hits.try_send(report).is_err() {
                    self.processor.queue_full += 1;
                }
            }
            *self.stats.lock().unwrap_or_else(|p| p.into_inner()) = self.processor.stats();
        }
        Ok(())
    }
}

/// Parsing, de-duplication and attribution, without the socket (the bench
/// and the unit tests feed it datagrams).
pub struct Processor {
    attempts: Attempts,
    owners: Owners,
    netns: u64,
    stats: NflogStats,
    /// Reports the reader could not hand on (its queue was full).
    queue_full: u64,
}

impl Processor {
    /// Attributes through the calling thread's network namespace `netns`.
    pub fn new(limits: AttemptLimits, netns: u64) -> Processor {
        Processor {
            attempts: Attempts::new(limits, Instant::now()),
            owners: Owners::new(),
            netns,
            stats: NflogStats::default(),
            queue_full: 0,
        }
    }

    pub fn stats(&self) -> NflogStats {
        NflogStats {
            dropped: self.queue_full + self.attempts.dropped(),
            ..self.stats
        }
    }

    /// The new attempts in one received datagram.
    pub fn datagram(&mut self, datagram: &[u8], now: Instant, reports: &mut Vec<HitReport>) {
        self.owners.begin_batch();
        for packet in packets(datagram) {
            match packet {
                Ok(packet) => {
                    self.stats.packets += 1;
                    if let Some(hit) = self.packet(packet, now) {
                        reports.push(HitReport::Hit(hit));
                    }
                }
                Err(Skipped::ForeignPrefix(prefix)) => {
                    debug!(prefix, "NFLOG record of another rule skipped");
                    self.stats.foreign += 1;
                }
                Err(e) => {
                    debug!("NFLOG record skipped: {e}");
                    self.stats.unreadable += 1;
                }
            }
        }
    }

    fn packet(&mut self, packet: LoggedPacket, now: Instant) -> Option<FirewallHit> {
        let (local, remote) = match packet.chain {
            Chain::Output => (packet.source, packet.destination),
            Chain::Input => (packet.destination, packet.source),
        };
        let (local, remote) = normalize_endpoints(local, remote);
        let seen = self.attempts.see(
            packet.kind,
            packet.chain,
            packet.protocol,
            local,
            remote,
            now,
        );
        if seen != Seen::New {
            return None;
        }
        let owner = if self.attempts.may_attribute(now) {
            self.owners.find(packet.protocol, local, remote)
        } else {
            self.stats.over_attribution_budget += 1;
            None
        };
        self.stats.hits += 1;
        self.stats.attributed_socket += u64::from(owner.is_some());
        let (uid, process) = owner.map_or((None, None), |o| (o.uid, o.process));
        self.stats.attributed_process += u64::from(process.is_some());
        let hit = FirewallHit {
            at: Timestamp::now(),
            kind: packet.kind,
            chain: packet.chain,
            protocol: packet.protocol,
            local,
            remote,
            netns: self.netns,
            process,
            uid,
            packets: 1,
        };
        self.attempts.open(hit.clone(), now);
        Some(hit)
    }

    /// The attempts that ended with more than one packet.
    pub fn expire(&mut self, now: Instant) -> impl Iterator<Item = HitReport> {
        self.attempts
            .expire(now)
            .into_iter()
            .map(HitReport::Repeated)
    }
}

/// Moves the calling thread into the network namespace at `path`.
fn enter(path: &PathBuf) -> io::Result<()> {
    let file = File::open(path)?;
    // SAFETY: a valid namespace fd; setns changes only this thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A netlink socket bound to NFLOG `group` in copy-packet mode.
fn subscribe(group: u16) -> Result<Socket, NflogError> {
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(NflogError::Socket)?;
    socket.bind_auto().map_err(NflogError::Socket)?;
    // Best effort: a larger buffer rides out bursts (ENOBUFS is counted).
    let _ = socket.set_rx_buf_sz(1 << 20);
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: READ_TIMEOUT.as_micros() as libc::suseconds_t,
    };
    // SAFETY: a valid socket and a timeval of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(NflogError::Socket(io::Error::last_os_error()));
    }
    let bind = config_request(
        NetfilterProtoFamily::Unspec,
        group,
        vec![
            ConfigCmd::Bind.into(),
            ConfigMode::new_packet(COPY_RANGE).into(),
            netlink_packet_netfilter::nflog::ConfigNla::QThresh(1),
            Timeout::new(1).into(),
        ],
    );
    let mut request = vec![0; bind.header.length as usize];
    bind.serialize(&mut request);
    socket
        .send(&request, 0)
        .map_err(|source| NflogError::Bind { group, source })?;
    let mut reply = vec![0u8; 8192];
    let size = socket
        .recv(&mut &mut reply[..], 0)
        .map_err(|source| NflogError::Bind { group, source })?;
    let message = NetlinkMessage::<NetfilterMessage>::deserialize(&reply[..size]).map_err(|e| {
        NflogError::Reply {
            group,
            reason: e.to_string(),
        }
    })?;
    match message.payload {
        NetlinkPayload::Error(e) => match e.code {
            None => Ok(socket),
            Some(code) => Err(NflogError::Bind {
                group,
                source: io::Error::from_raw_os_error(-code.get()),
            }),
        },
        other => Err(NflogError::Reply {
            group,
            reason: format!("expected an acknowledgement, got {other:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hit::HitKind;
    use crate::records::{datagram, tcp_syn};

    fn netns() -> u64 {
        std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
    }

    #[test]
    fn a_datagram_gives_attributed_hits_repeats_are_counted_floods_dropped() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let limits = AttemptLimits {
            quiet: Duration::from_secs(5),
            max_new_per_second: 3,
            max_open: 100,
            max_attributed_per_second: 2,
        };
        let mut processor = Processor::new(limits, netns());
        let inbound = |source: u16| {
            (
                "connscope would-block input: ",
                tcp_syn([127, 0, 0, 1], [127, 0, 0, 1], (source, port)),
            )
        };
        let t0 = Instant::now();
        let mut reports = Vec::new();
        processor.datagram(
            &datagram(&[
                inbound(50000),
                inbound(50000),
                (
                    "another tool: ",
                    tcp_syn([1, 1, 1, 1], [2, 2, 2, 2], (1, 2)),
                ),
                inbound(50001),
                inbound(50002),
                inbound(50003),
            ]),
            t0,
            &mut reports,
        );
        assert_eq!(reports.len(), 3, "{reports:?}");
        let HitReport::Hit(hit) = &reports[0] else {
            panic!("{reports:?}")
        };
        assert_eq!((hit.kind, hit.chain), (HitKind::WouldBlock, Chain::Input));
        assert_eq!(hit.local, listener.local_addr().unwrap());
        assert_eq!(hit.remote, "127.0.0.1:50000".parse().unwrap());
        assert_eq!(hit.process.as_ref().unwrap().pid, std::process::id());
        let stats = processor.stats();
        assert_eq!(
            (stats.packets, stats.hits, stats.foreign, stats.dropped),
            (5, 3, 1, 1),
            "{stats:?}"
        );
        assert_eq!(
            (stats.attributed_process, stats.over_attribution_budget),
            (2, 1),
            "the third new attempt is over the lookup budget"
        );
        let HitReport::Hit(third) = &reports[2] else {
            panic!("{reports:?}")
        };
        assert_eq!(third.process, None);

        let ended: Vec<_> = processor.expire(t0 + Duration::from_secs(6)).collect();
        assert_eq!(ended.len(), 1, "only the repeated attempt: {ended:?}");
        assert_eq!(ended[0].hit().packets, 2);
        assert_eq!(ended[0].hit().remote, "127.0.0.1:50000".parse().unwrap());
    }
}
