//! The eBPF capture backend: every TCP connection and UDP flow as it happens,
//! attributed to the process that made or accepted it.
//!
//! # Hooks, and why these
//!
//! On the kernels we target fentry/fexit and kprobes may be missing (not built
//! in, or refused), so everything hangs on tracepoints and cgroup hooks:
//!
//! | hook | sees | context |
//! |---|---|---|
//! | `tp_btf/inet_sock_set_state` (two programs: the second takes the runs the kernel skips while the first is running) | every TCP state change | mixed |
//! | `tracepoint/syscalls/sys_exit_accept{,4}` | accept() returning a socket fd | the accepting process |
//! | `tp_btf/sched_process_exec` | exec: the new executable's full path | the exec'ing process |
//! | `iter/tcp` (at start, every 5 s, twice at exit) | connections open before we started; which followed ones are still open (`sweep`) | the agent |
//! | `cgroup/sock_create` on the root cgroup | UDP socket creation | the creating process |
//! | `cgroup_skb/{egress,ingress}` on the root cgroup | every UDP datagram with its socket | sender / softirq |
//! | `tp_btf/tcp_sendmsg_locked` | an outgoing TCP connection's first send, if a TLS ClientHello | sender |
//! | `cgroup_skb/ingress` (the same program) | a packet from port 53 (DNS answer) | softirq / receiver |
//!
//! The cgroup hooks go to [`CaptureConfig::packet_cgroup`] instead of the
//! root when it is set: they then see only the sockets made inside it.
//!
//! * **Outgoing TCP**: CLOSE→SYN_SENT runs inside connect(), so the current
//!   task is the owner; it is stored by socket address and the connect event is
//!   sent at SYN_SENT→ESTABLISHED (softirq). SYN_SENT→CLOSE without
//!   ESTABLISHED is a failed connect, `sk_err` tells refused from timed out.
//! * **Incoming TCP**: SYN_RECV→ESTABLISHED runs in softirq, where the current
//!   task is whoever happened to run. The socket is remembered, and the connect
//!   event is sent when accept() returns it (fd → file → socket → sock, joined
//!   by sock address), owned by the accepting process; its timestamp is still
//!   the moment the handshake completed. A connection reset or closed while it
//!   waits in the accept queue is reported at close (connect then disconnect),
//!   owned by the process that called listen() on that port, when known.
//! * **Disconnect** (any state → CLOSE): duration since ESTABLISHED, bytes from
//!   the socket's own counters (`bytes_acked` sent, `bytes_received`).
//! * **UDP**: a BPF hash of flows keyed by namespace + 5-tuple, counted per
//!   datagram by the cgroup packet hooks; the first datagram sends the connect
//!   event (owner: the sender for outgoing; the socket's creator for flows whose
//!   first datagram arrives). Userspace expires idle flows (delete returns the
//!   final counters) and reports them as disconnects with packets and bytes.
//! * **ClientHellos** (for naming, [`CaptureConfig::name_packets`]): the
//!   send tracepoint copies the first send of an outgoing TCP connection,
//!   when it starts like a ClientHello, up to 4 KiB, from the sender's
//!   buffer into a ring of its own (records vary in length; none wakes the
//!   reader). It runs once per send call, not per packet, and leaves after a
//!   few loads for every send but a connection's first. Not followed: the
//!   second and later segments of an iovec (the copy stops at the first),
//!   sendfile and splice (page vectors), data sent with the SYN (TCP Fast
//!   Open); a hello missed leaves its address unnamed (by SNI), nothing
//!   else.
//! * **DNS answers** (for naming, the same setting): the ingress program
//!   copies every packet a socket receives from port 53 (UDP, and TCP
//!   segments with payload, SYN, FIN or RST), from its IP header, up to
//!   4,164 bytes (headers and a 4,096-byte EDNS answer), with the socket's
//!   namespace, into a third ring. Other packets leave after a typed load and
//!   one read of the source port. Hooked where the socket takes the packet,
//!   it sees answers relayed over loopback by a local stub like others.
//!   Without it the agent's packet sockets tap the receive path of every
//!   namespace, which costs every packet received a filter run.
//! * **Namespaces**: every socket carries its network namespace inode; the
//!   filter is a read-only global set before load, so other namespaces cost one
//!   comparison and no event.
//!
//! # Ring buffer, wake-ups and losses
//!
//! Waking the reader for each event costs a context switch per event and
//! halves a busy server's connection rate, so records are submitted without a
//! wake-up unless one takes the unread data past a multiple of a quarter of
//! the buffer (one wake-up per crossing, not per record above the mark: each
//! forced wake-up is an interrupt to self); the reader polls on a 50 ms timer (each tick wakes two agent threads; at 10 ms the
//! ticks were a sixth of the agent's CPU time at 2,000 connections a second,
//! and 50 ms is still twenty times fresher than tcpspy's default interval).
//! A record the kernel cannot reserve, or a socket or flow the tables cannot
//! hold, is counted in a per-CPU map; a
//! program run the kernel skipped because the program was already running on
//! that CPU (a softirq interrupting it) is counted by the kernel in the
//! program's `recursion_misses`. Both are reported as
//! [`CaptureStats::kernel_lost`]: a loss is never silent.
//!
//! # Processes that are gone
//!
//! Each record carries pid, tgid, comm and the process's start time, so a pid
//! reused by another process is never named. If the process has exited before
//! /proc is read, the executable path recorded by the exec hook (walked up the
//! dentry tree in the kernel, complete or not at all) and the kernel's comm are
//! used.

mod addrs;
mod decode;
mod kernel;
mod skel;
mod sweep;

use std::cell::Cell;
use std::time::{Duration, Instant};

use connscope_capture::sockets::socket_owners;
use connscope_capture::{
    netns, CaptureBackend, CaptureConfig, CaptureError, CaptureStats, ClientHello, DnsPacket,
    NetnsFilter,
};
use connscope_event::ConnectionEvent;

pub use kernel::ProgramStats;

use decode::Decoder;
use kernel::{Kernel, Losses, RawEvent, Settings};
use sweep::Sweeper;

const NAME: &str = "ebpf";
/// Longest a record waits in the ring buffer when the kernel does not wake us.
const TICK: Duration = Duration::from_millis(50);
/// Between the two walks at exit: far longer than a record takes from its
/// reservation to the ring's reader.
const FINAL_WALKS_APART: Duration = Duration::from_millis(50);

/// The eBPF backend. Each instance loads its own BPF objects, so several can
/// run side by side (with the cost of each).
pub struct EbpfBackend {
    kernel: Kernel,
    decoder: Decoder,
    /// Records taken from the ring buffer, not yet decoded (reused buffer).
    raw: Vec<RawEvent>,
    sweeper: Sweeper,
    udp_idle_timeout: Option<Duration>,
    next_udp_scan: Instant,
    events: u64,
    closes_inferred: u64,
    losses_logged: Cell<Losses>,
}

impl EbpfBackend {
    /// Loads and attaches the BPF programs and reports the connections already
    /// open. [`CaptureError::Unavailable`] says why when this kernel or these
    /// privileges do not allow it, so the agent can fall back to polling.
    pub fn open(config: &CaptureConfig) -> Result<EbpfBackend, CaptureError> {
        let unavailable = |reason: String| CaptureError::Unavailable {
            backend: NAME,
            reason,
        };
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(unavailable(
                "needs root (CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN)".into(),
            ));
        }
        if std::fs::metadata("/sys/kernel/btf/vmlinux").is_err() {
            return Err(unavailable(
                "the kernel has no BTF (/sys/kernel/btf/vmlinux is missing)".into(),
            ));
        }
        let netns_filter = match config.netns {
            NetnsFilter::All => 0,
            NetnsFilter::Inode(inode) => inode,
            NetnsFilter::Own => netns::current_inode().map_err(|source| CaptureError::Io {
                backend: NAME,
                source,
            })?,
        };
        let started = Instant::now();
        let kernel = Kernel::load(&Settings {
            netns_filter,
            udp: config.udp,
            names: config.name_packets,
            max_tcp_connections: config.max_tcp_connections,
            packet_cgroup: config.packet_cgroup.clone(),
        })
        .map_err(unavailable)?;
        tracing::debug!(elapsed = ?started.elapsed(), "BPF programs attached");
        kernel.walk_tcp().map_err(unavailable)?;
        tracing::debug!(elapsed = ?started.elapsed(), "preexisting connections reported");

        let mut backend = EbpfBackend {
            kernel,
            decoder: Decoder::new(config.command_lines),
            raw: Vec::with_capacity(4096),
            sweeper: Sweeper::new(Instant::now()),
            udp_idle_timeout: config.udp.then_some(config.udp_idle_timeout),
            next_udp_scan: Instant::now(),
            events: 0,
            closes_inferred: 0,
            losses_logged: Cell::default(),
        };
        // The iterator's reports are in the ring buffer now; their owners are
        // found by socket inode (the oldest holder, as every backend names
        // them), which costs a /proc walk: only if needed.
        // The walk reads a link per open file on the machine (45,000 took
        // 3.9 s here); left undrained, the ring buffer (26,000 records)
        // overflowed in a start-up burst of 4,000 connections a second, so
        // it is drained all along the walk.
        backend.take_raw()?;
        if backend.raw.iter().any(|raw| raw.sock_inode != 0) {
            let owners = socket_owners(|| backend.take_raw())?;
            backend.decoder.set_socket_owners(owners);
        }
        tracing::debug!(elapsed = ?started.elapsed(), "socket owners read");
        Ok(backend)
    }

    /// Run time and run count of each BPF program (counted only while
    /// `kernel.bpf_stats_enabled` is 1), for measuring the kernel-side cost.
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        self.kernel.program_stats()
    }

    /// Adds the ring buffer's records behind those already waiting.
    fn take_raw(&mut self) -> Result<(), CaptureError> {
        self.kernel.take_events(&mut self.raw).map_err(io_error)
    }

    fn decode_raw(&mut self, out: &mut Vec<ConnectionEvent>, boot_to_utc: i64) {
        for raw in &self.raw {
            if let Some(earlier) = self.sweeper.note(raw) {
                self.closes_inferred += 1;
                out.push(self.decoder.event(&earlier, boot_to_utc, &self.kernel));
            }
            out.push(self.decoder.event(raw, boot_to_utc, &self.kernel));
        }
        self.raw.clear();
    }

    /// Walks the TCP sockets and closes the connections gone without a
    /// reported close (the `sweep` module says why).
    fn sweep(
        &mut self,
        out: &mut Vec<ConnectionEvent>,
        boot_to_utc: i64,
    ) -> Result<(), CaptureError> {
        let started = boot_ns();
        let alive = match self.kernel.walk_tcp() {
            Ok(alive) => alive,
            Err(reason) => {
                // Only the safety net is late; capture goes on.
                tracing::warn!("walking the TCP sockets: {reason}");
                self.sweeper.postpone(Instant::now());
                return Ok(());
            }
        };
        let ended = boot_ns();
        self.take_raw()?;
        self.decode_raw(out, boot_to_utc);
        let gone = self
            .sweeper
            .after_walk(&alive, started, ended, Instant::now());
        if !gone.is_empty() {
            tracing::warn!(
                connections = gone.len(),
                "the kernel did not report these closes; their disconnects are inferred"
            );
        }
        for disconnect in &gone {
            self.kernel.forget_connection(disconnect.sock);
            out.push(self.decoder.event(disconnect, boot_to_utc, &self.kernel));
        }
        self.closes_inferred += gone.len() as u64;
        Ok(())
    }

    fn expire_udp(&mut self, out: &mut Vec<ConnectionEvent>, boot_to_utc: i64) {
        let Some(idle) = self.udp_idle_timeout else {
            return;
        };
        let now = Instant::now();
        if now < self.next_udp_scan {
            return;
        }
        // A flow is reported at most a quarter of the timeout late.
        self.next_udp_scan = now + (idle / 4).clamp(TICK, Duration::from_secs(1));
        let idle_ns = idle.as_nanos() as u64;
        let idle_since = boot_ns().saturating_sub(idle_ns);
        let (decoder, kernel) = (&mut self.decoder, &self.kernel);
        kernel.expire_udp_flows(idle_since, |key, flow| {
            out.push(decoder.udp_expired(&key, &flow, idle_ns, boot_to_utc, kernel));
        });
    }
}

impl CaptureBackend for EbpfBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn poll(
        &mut self,
        out: &mut Vec<ConnectionEvent>,
        timeout: Duration,
    ) -> Result<(), CaptureError> {
        let before = out.len();
        let deadline = Instant::now() + timeout;
        loop {
            self.take_raw()?;
            let boot_to_utc = boot_to_utc();
            self.decode_raw(out, boot_to_utc);
            self.expire_udp(out, boot_to_utc);
            if self.sweeper.due(Instant::now()) {
                self.sweep(out, boot_to_utc)?;
            }
            let now = Instant::now();
            if out.len() > before || now >= deadline {
                break;
            }
            self.kernel
                .wait(TICK.min(deadline - now))
                .map_err(io_error)?;
        }
        self.events += (out.len() - before) as u64;
        Ok(())
    }

    fn stats(&self) -> CaptureStats {
        let losses = self.kernel.losses();
        if losses != self.losses_logged.get() {
            // The agent warns of the total; the causes tell what to resize.
            tracing::info!(
                ring_buffer_full = losses.ring_full,
                table_full = losses.table_full,
                skipped_program_runs = losses.skipped_runs,
                "kernel-side losses so far, by cause"
            );
            self.losses_logged.set(losses);
        }
        CaptureStats {
            events: self.events,
            kernel_lost: losses.total(),
            closes_inferred: self.closes_inferred,
        }
    }

    /// Closes the kernel never reported in the last interval would wait for
    /// a next run: two walks a moment apart, the ring drained after each,
    /// settle them now.
    fn finish(&mut self, out: &mut Vec<ConnectionEvent>) -> Result<(), CaptureError> {
        let before = out.len();
        for pause in [Duration::ZERO, FINAL_WALKS_APART] {
            std::thread::sleep(pause);
            self.sweep(out, boot_to_utc())?;
        }
        self.events += (out.len() - before) as u64;
        Ok(())
    }

    fn sees_name_packets(&self) -> bool {
        self.kernel.copies_names()
    }

    fn take_client_hellos(&mut self, out: &mut Vec<ClientHello>) -> u64 {
        self.kernel.take_hellos(out)
    }

    fn take_dns_answers(&mut self, out: &mut Vec<DnsPacket>) -> u64 {
        self.kernel.take_answers(out)
    }
}

fn io_error(error: libbpf_rs::Error) -> CaptureError {
    CaptureError::Io {
        backend: NAME,
        source: std::io::Error::other(error),
    }
}

fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// The kernel stamps records with CLOCK_BOOTTIME (it keeps counting through
/// suspend); this is what to add to get UTC.
fn boot_to_utc() -> i64 {
    clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_BOOTTIME)
}

fn boot_ns() -> u64 {
    clock_ns(libc::CLOCK_BOOTTIME) as u64
}
