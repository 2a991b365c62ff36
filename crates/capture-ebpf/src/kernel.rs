//! The loaded BPF object: its programs' attachments, the ring buffer reader and
//! the maps userspace reads (loss counters, exec paths, UDP flows).

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use connscope_capture::{ClientHello, DnsPacket};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Iter, MapCore, MapFlags, OpenObject, PrintLevel, RingBuffer, RingBufferBuilder};

use crate::skel::{types, ConnscopeSkel, ConnscopeSkelBuilder};

pub(crate) type RawEvent = types::event;
pub(crate) type UdpKey = types::udp_key;
pub(crate) type UdpFlow = types::udp_flow;
type RawHello = types::hello;
type RawAnswer = types::answer;

/// Size of the ring buffer (the BPF side declares the same).
const RING_BYTES: u64 = 4 << 20;
/// Past this much unread data the kernel wakes the reader at once instead of
/// waiting for its next timer tick.
const WAKEUP_BYTES: u64 = RING_BYTES / 4;
const TRACEFS: &str = "/sys/kernel/tracing";

/// Events the kernel side lost, by cause (a lost ClientHello or answer is no
/// lost event).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Losses {
    pub ring_full: u64,
    pub table_full: u64,
    /// Skipped program runs, counted as the events they could have made.
    pub skipped_runs: u64,
}

impl Losses {
    pub fn total(&self) -> u64 {
        self.ring_full + self.table_full + self.skipped_runs
    }
}

/// One BPF program's own cost, from its fdinfo. The kernel only counts while
/// `kernel.bpf_stats_enabled` is 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramStats {
    pub name: String,
    /// Total time spent running the program, in nanoseconds.
    pub run_time_ns: u64,
    /// How many times it ran.
    pub run_count: u64,
}

/// What to load.
#[derive(Clone)]
pub(crate) struct Settings {
    /// 0: every namespace.
    pub netns_filter: u64,
    pub udp: bool,
    /// Copy outgoing ClientHellos and received DNS answers into their rings.
    pub names: bool,
    pub max_tcp_connections: u32,
    /// Where the packet hooks attach, inside the cgroup v2 hierarchy; None:
    /// its root.
    pub packet_cgroup: Option<PathBuf>,
}

pub(crate) struct Kernel {
    // Dropped by hand in this order: the reader, the skeleton (which holds the
    // links and the object), then the storage the skeleton borrows.
    ring: ManuallyDrop<RingBuffer<'static>>,
    skel: ManuallyDrop<ConnscopeSkel<'static>>,
    storage: *mut MaybeUninit<OpenObject>,
    received: Arc<Mutex<Vec<RawEvent>>>,
    hellos: Arc<Mutex<Vec<ClientHello>>>,
    hellos_lost: u64,
    answers: Arc<Mutex<Vec<DnsPacket>>>,
    answers_lost: u64,
    copies_names: bool,
}

// SAFETY: the raw pointers inside the skeleton and `storage` point into this
// value's own BPF object, which libbpf does not tie to a thread; nothing else
// holds them, so moving the whole to another thread is sound.
unsafe impl Send for Kernel {}

impl Kernel {
    /// Loads and attaches everything. The error is a reason for
    /// `CaptureError::Unavailable`.
    pub fn load(settings: &Settings) -> Result<Kernel, String> {
        route_libbpf_logs();
        // Copying hellos and answers is an optimisation of naming, not worth
        // losing the backend over: without cgroup2 the packet sockets take
        // them instead.
        let mut settings = settings.clone();
        if settings.names && !settings.udp {
            if let Err(reason) = cgroup2_root() {
                tracing::warn!(
                    "ClientHellos and DNS answers are not copied by the packet hooks: {reason}"
                );
                settings.names = false;
            }
        }
        let settings = &settings;
        let storage = Box::into_raw(Box::new(MaybeUninit::<OpenObject>::uninit()));
        // SAFETY: `storage` stays allocated until `Kernel::drop` (or just
        // below on failure), after everything borrowing it is gone.
        match load_skeleton(unsafe { &mut *storage }, settings) {
            Ok(loaded) => Ok(Kernel {
                ring: ManuallyDrop::new(loaded.ring),
                skel: ManuallyDrop::new(loaded.skel),
                storage,
                received: loaded.received,
                hellos: loaded.hellos,
                hellos_lost: 0,
                answers: loaded.answers,
                answers_lost: 0,
                copies_names: settings.names,
            }),
            Err(reason) => {
                // SAFETY: the failed load dropped every borrow of it.
                drop(unsafe { Box::from_raw(storage) });
                Err(reason)
            }
        }
    }

    /// Walks every TCP socket once: each open connection not followed yet is
    /// reported through the ring buffer (found open) and followed from then
    /// on. Returns the keys of all the open connections followed.
    pub fn walk_tcp(&self) -> Result<HashSet<u64>, String> {
        let link = self
            .skel
            .progs
            .preexisting_tcp
            .attach()
            .map_err(|e| format!("attaching the TCP socket iterator: {e}"))?;
        let mut iter = Iter::new(&link).map_err(|e| format!("creating the iterator: {e}"))?;
        let mut keys = Vec::new();
        iter.read_to_end(&mut keys)
            .map_err(|e| format!("running the TCP socket iterator: {e}"))?;
        Ok(keys
            .chunks_exact(8)
            .map(|key| u64::from_ne_bytes(key.try_into().expect("chunks of 8")))
            .collect())
    }

    /// Stops following the connection keyed `sock` (its close was never
    /// reported: the socket is gone).
    pub fn forget_connection(&self, sock: u64) {
        // Already gone if its close came after all: nothing to undo.
        let _ = self.skel.maps.conns.delete(&sock.to_ne_bytes());
    }

    /// Waits at most `timeout` (rounded up to a millisecond) for the kernel's
    /// early wake-up.
    pub fn wait(&self, timeout: Duration) -> Result<(), libbpf_rs::Error> {
        // epoll counts whole milliseconds and libbpf-rs truncates: a wait
        // under 1 ms would return at once, and the caller waiting for its
        // deadline would spin until then (most of an idle agent's CPU time).
        self.ring.poll(whole_millis(timeout))
    }

    /// Moves every record in the ring buffer to the end of `into`. An empty
    /// `into` is swapped with the receiving buffer, so neither side
    /// reallocates in steady state; records already in `into` stay ahead.
    pub fn take_events(&self, into: &mut Vec<RawEvent>) -> Result<(), libbpf_rs::Error> {
        self.ring.consume()?;
        let mut received = self.received.lock().unwrap_or_else(|e| e.into_inner());
        if into.is_empty() {
            std::mem::swap(&mut *received, into);
        } else {
            // A swap would leave `into`'s records in the receiving buffer, to
            // come back behind later ones: a connection's connect after its
            // disconnect.
            into.append(&mut received);
        }
        Ok(())
    }

    /// Whether the packet hooks copy ClientHellos and DNS answers.
    pub fn copies_names(&self) -> bool {
        self.copies_names
    }

    /// Moves the ClientHellos taken from the hello ring by the last
    /// [`Kernel::take_events`] into `into`; returns how many the kernel could
    /// not write (ring full) since the last call.
    pub fn take_hellos(&mut self, into: &mut Vec<ClientHello>) -> u64 {
        into.append(&mut self.hellos.lock().unwrap_or_else(|e| e.into_inner()));
        let lost = self.loss_counter(types::loss_counter::LOST_HELLO.0);
        let new = lost.saturating_sub(self.hellos_lost);
        self.hellos_lost = lost;
        new
    }

    /// Moves the DNS answers taken from the answer ring by the last
    /// [`Kernel::take_events`] into `into`; returns how many the kernel could
    /// not write (ring full) since the last call.
    pub fn take_answers(&mut self, into: &mut Vec<DnsPacket>) -> u64 {
        into.append(&mut self.answers.lock().unwrap_or_else(|e| e.into_inner()));
        let lost = self.loss_counter(types::loss_counter::LOST_ANSWER.0);
        let new = lost.saturating_sub(self.answers_lost);
        self.answers_lost = lost;
        new
    }

    /// Events the kernel side had to drop, summed over CPUs and causes, plus
    /// the runs of our event-making programs that the kernel skipped.
    ///
    /// A tracepoint that fires while its BPF program is already running on
    /// that CPU (a softirq taking a packet in the middle of a connect() or
    /// close() run) does not run the program again: the kernel counts the
    /// skip only in the program's `recursion_misses`. On loopback bursts that
    /// is a few state changes in 100,000, each of which may have carried
    /// events, so they are counted as lost rather than left silent: as many
    /// as a skip can cost, so the count is an upper bound. A skipped state
    /// change can cost a connection both its events (a SYN_SENT or incoming
    /// ESTABLISHED run makes the table entry its close needs); a skipped
    /// accept() at most one.
    pub fn losses(&self) -> Losses {
        use types::loss_counter as counter;
        let progs = &self.skel.progs;
        let skipped =
            |prog: &libbpf_rs::Program<'_>| fdinfo_field(&prog_fdinfo(prog), "recursion_misses");
        Losses {
            ring_full: self.loss_counter(counter::LOST_RINGBUF.0),
            table_full: self.loss_counter(counter::LOST_CONN_TABLE.0)
                + self.loss_counter(counter::LOST_UDP_TABLE.0),
            // The state-change runs skipped while the first program was busy
            // were taken by the second; the rest are lost.
            skipped_runs: 2 * skipped(&progs.tcp_state_change).saturating_sub(self.runs_taken())
                + skipped(&progs.accept4_exit)
                + skipped(&progs.accept_exit),
        }
    }

    /// State changes the nested-run program took (see `tcp_state_change` in
    /// the BPF source), summed over CPUs.
    fn runs_taken(&self) -> u64 {
        self.skel
            .maps
            .state_runs
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
            .ok()
            .flatten()
            .into_iter()
            .flatten()
            .filter_map(|per_cpu| read_record::<types::state_runs>(&per_cpu))
            .map(|runs| runs.taken)
            .sum()
    }

    fn loss_counter(&self, index: u32) -> u64 {
        self.skel
            .maps
            .losses
            .lookup_percpu(&index.to_ne_bytes(), MapFlags::ANY)
            .ok()
            .flatten()
            .into_iter()
            .flatten()
            .map(|per_cpu| u64::from_ne_bytes(per_cpu[..8].try_into().unwrap_or_default()))
            .sum()
    }

    /// The executable path recorded when process `tgid`, started at
    /// `start_ns`, last exec'd; `None` if not recorded or too deep to walk.
    pub fn exe_path(&self, tgid: u32, start_ns: u64) -> Option<String> {
        let raw = self
            .skel
            .maps
            .exe_paths
            .lookup(&tgid.to_ne_bytes(), MapFlags::ANY)
            .ok()??;
        let record: types::exe_path = read_record(&raw)?;
        if record.start_ns != start_ns || record.complete == 0 {
            return None;
        }
        let start = record.start as usize;
        let bytes: Vec<u8> = record.path[start..EXE_PATH_MAX]
            .iter()
            .map(|&c| c as u8)
            .collect();
        Some(if bytes.is_empty() {
            "/".to_owned()
        } else {
            String::from_utf8_lossy(&bytes).into_owned()
        })
    }

    /// Removes the UDP flows idle since before `idle_since_ns` (boot clock)
    /// and hands them to `expired`.
    pub fn expire_udp_flows(&self, idle_since_ns: u64, mut expired: impl FnMut(UdpKey, UdpFlow)) {
        let flows = &self.skel.maps.udp_flows;
        let keys: Vec<Vec<u8>> = flows.keys().collect();
        for key in keys {
            let Some(flow) = flows
                .lookup(&key, MapFlags::ANY)
                .ok()
                .flatten()
                .and_then(|raw| read_record::<UdpFlow>(&raw))
            else {
                continue;
            };
            if flow.last_ns >= idle_since_ns {
                continue;
            }
            // Deleting returns the final counters: a datagram counted between
            // the look-up and here is not lost.
            let Some(flow) = flows
                .lookup_and_delete(&key)
                .ok()
                .flatten()
                .and_then(|raw| read_record::<UdpFlow>(&raw))
            else {
                continue;
            };
            if let Some(key) = read_record::<UdpKey>(&key) {
                expired(key, flow);
            }
        }
    }

    pub fn program_stats(&self) -> Vec<ProgramStats> {
        let progs = &self.skel.progs;
        [
            &progs.tcp_state_change,
            &progs.tcp_state_change_nested,
            &progs.accept4_exit,
            &progs.accept_exit,
            &progs.process_exec,
            &progs.udp_socket_created,
            &progs.packet_egress,
            &progs.packet_ingress,
            &progs.hello_send,
        ]
        .into_iter()
        .filter(|prog| prog.autoload())
        .map(|prog| {
            let fdinfo = prog_fdinfo(prog);
            ProgramStats {
                name: prog.name().to_string_lossy().into_owned(),
                run_time_ns: fdinfo_field(&fdinfo, "run_time_ns"),
                run_count: fdinfo_field(&fdinfo, "run_cnt"),
            }
        })
        .collect()
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        // SAFETY: dropped once, in dependency order; see the field comment.
        unsafe {
            ManuallyDrop::drop(&mut self.ring);
            ManuallyDrop::drop(&mut self.skel);
            drop(Box::from_raw(self.storage));
        }
    }
}

const EXE_PATH_MAX: usize = 4096;

fn whole_millis(timeout: Duration) -> Duration {
    Duration::from_millis(timeout.as_micros().div_ceil(1000) as u64)
}

struct Loaded {
    skel: ConnscopeSkel<'static>,
    ring: RingBuffer<'static>,
    received: Arc<Mutex<Vec<RawEvent>>>,
    hellos: Arc<Mutex<Vec<ClientHello>>>,
    answers: Arc<Mutex<Vec<DnsPacket>>>,
}

/// The smallest ring buffer the kernel takes (a page): the hello and answer
/// rings' size when naming is off.
const UNUSED_RING_BYTES: u32 = 4096;

fn load_skeleton(
    storage: &'static mut MaybeUninit<OpenObject>,
    settings: &Settings,
) -> Result<Loaded, String> {
    // The packet hooks' cgroup, relative to the hierarchy's root so the
    // same path names the same cgroup wherever it is mounted (`ip netns
    // exec` mounts it again).
    let cgroup_dir = if settings.udp || settings.names {
        let root = PathBuf::from(cgroup2_root()?);
        Some(match &settings.packet_cgroup {
            Some(path) => root.join(path.strip_prefix("/").unwrap_or(path)),
            None => root,
        })
    } else {
        None
    };
    let mut open = ConnscopeSkelBuilder::default()
        .open(storage)
        .map_err(|e| format!("opening the BPF object: {e}"))?;
    let rodata = open
        .maps
        .rodata_data
        .as_deref_mut()
        .ok_or("the BPF object has no read-only data section")?;
    rodata.netns_filter = settings.netns_filter;
    rodata.wakeup_bytes = WAKEUP_BYTES;
    rodata.capture_udp = settings.udp;
    rodata.capture_names = settings.names;
    if let (Some(path), Some(dir)) = (&settings.packet_cgroup, &cgroup_dir) {
        // A cgroup's id is its directory's inode number; its level, the
        // number of directories from the root.
        let metadata =
            fs::metadata(dir).map_err(|e| format!("the cgroup {}: {e}", dir.display()))?;
        rodata.hello_cgroup_id = std::os::unix::fs::MetadataExt::ino(&metadata);
        rodata.hello_cgroup_level = path
            .components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .count() as u32;
    }
    if !settings.names {
        for ring in [&mut open.maps.hellos, &mut open.maps.answers] {
            ring.set_max_entries(UNUSED_RING_BYTES)
                .map_err(|e| format!("sizing the naming rings: {e}"))?;
        }
    }
    open.maps
        .conns
        .set_max_entries(settings.max_tcp_connections)
        .map_err(|e| format!("sizing the connection table: {e}"))?;
    open.progs.udp_socket_created.set_autoload(settings.udp);
    open.progs.packet_egress.set_autoload(settings.udp);
    // The ingress hook serves both: UDP flows, and DNS answers for naming.
    open.progs
        .packet_ingress
        .set_autoload(settings.udp || settings.names);
    open.progs.hello_send.set_autoload(settings.names);
    let mut skel = open.load().map_err(|e| {
        format!(
            "loading the BPF programs (needs root, a kernel with BTF and BPF ring buffers): {e}"
        )
    })?;

    let progs = &skel.progs;
    let links = &mut skel.links;
    let attach = |prog: &libbpf_rs::ProgramMut<'_>| {
        prog.attach()
            .map_err(|e| format!("attaching {}: {e}", prog.name().to_string_lossy()))
    };
    links.tcp_state_change = Some(attach(&progs.tcp_state_change)?);
    links.tcp_state_change_nested = Some(attach(&progs.tcp_state_change_nested)?);
    links.process_exec = Some(attach(&progs.process_exec)?);
    ensure_tracefs()?;
    links.accept4_exit = Some(attach(&progs.accept4_exit)?);
    links.accept_exit = Some(attach(&progs.accept_exit)?);
    if settings.names {
        links.hello_send = Some(attach(&progs.hello_send)?);
    }
    if let Some(dir) = cgroup_dir {
        let dir = dir.display();
        let cgroup = fs::File::open(dir.to_string())
            .map_err(|e| format!("opening the cgroup {dir}: {e}"))?;
        let attach_cgroup = |prog: &libbpf_rs::ProgramMut<'_>| {
            prog.attach_cgroup(cgroup.as_raw_fd())
                .map_err(|e| format!("attaching {} to {dir}: {e}", prog.name().to_string_lossy()))
        };
        links.packet_ingress = Some(attach_cgroup(&progs.packet_ingress)?);
        if settings.udp {
            links.packet_egress = Some(attach_cgroup(&progs.packet_egress)?);
            links.udp_socket_created = Some(attach_cgroup(&progs.udp_socket_created)?);
        }
    }

    let received = Arc::new(Mutex::new(Vec::with_capacity(4096)));
    let sink = Arc::clone(&received);
    let mut builder = RingBufferBuilder::new();
    builder
        .add(&skel.maps.events, move |data: &[u8]| {
            if let Some(event) = read_record::<RawEvent>(data) {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(event);
            }
            0
        })
        .map_err(|e| format!("opening the ring buffer: {e}"))?;
    let hellos = Arc::new(Mutex::new(Vec::new()));
    let answers = Arc::new(Mutex::new(Vec::new()));
    if settings.names {
        let sink = Arc::clone(&hellos);
        builder
            .add(&skel.maps.hellos, move |data: &[u8]| {
                if let Some(hello) = read_hello(data) {
                    sink.lock().unwrap_or_else(|e| e.into_inner()).push(hello);
                }
                0
            })
            .map_err(|e| format!("opening the hello ring: {e}"))?;
        let sink = Arc::clone(&answers);
        builder
            .add(&skel.maps.answers, move |data: &[u8]| {
                if let Some(answer) = read_answer(data) {
                    sink.lock().unwrap_or_else(|e| e.into_inner()).push(answer);
                }
                0
            })
            .map_err(|e| format!("opening the answer ring: {e}"))?;
    }
    let ring = builder
        .build()
        .map_err(|e| format!("opening the ring buffer: {e}"))?;
    Ok(Loaded {
        skel,
        ring,
        received,
        hellos,
        answers,
    })
}

/// The header of a record the kernel cut to its length (so shorter than its
/// struct), and the record's bytes from `data_offset` on.
fn read_cut_record<T: Copy + Default>(data: &[u8], data_offset: usize) -> Option<(T, &[u8])> {
    if data.len() < data_offset {
        return None;
    }
    let mut header = T::default();
    let copied = data.len().min(size_of::<T>());
    // SAFETY: T is one of the skeleton's plain C structs (integers and byte
    // arrays), valid for any bit pattern; `copied` bytes fit in both.
    unsafe {
        std::ptr::copy_nonoverlapping(data.as_ptr(), (&mut header as *mut T).cast::<u8>(), copied);
    }
    Some((header, &data[data_offset..]))
}

/// A hello record: its header, then `len` bytes of the hello.
fn read_hello(data: &[u8]) -> Option<ClientHello> {
    let (header, rest) = read_cut_record::<RawHello>(data, std::mem::offset_of!(RawHello, data))?;
    let record = rest.get(..usize::from(header.len))?;
    let (local, remote) = crate::addrs::socket_addrs(
        header.family,
        &header.laddr,
        header.lport,
        &header.raddr,
        header.rport,
    );
    Some(ClientHello {
        netns: header.netns,
        local,
        remote,
        record: record.to_vec(),
    })
}

/// An answer record: its header, then `len` bytes of the packet.
fn read_answer(data: &[u8]) -> Option<DnsPacket> {
    let (header, rest) = read_cut_record::<RawAnswer>(data, std::mem::offset_of!(RawAnswer, data))?;
    Some(DnsPacket {
        netns: header.netns,
        packet: rest.get(..usize::from(header.len))?.to_vec(),
        wire_len: header.wire_len as usize,
    })
}

/// Where the cgroup v2 hierarchy is mounted: `/sys/fs/cgroup` on unified
/// systems, `/sys/fs/cgroup/unified` on hybrid ones. Hooks on its root see
/// every socket.
///
/// `ip netns exec` runs the agent in a mount namespace of its own with a
/// fresh sysfs, where `/sys/fs/cgroup` is an empty directory: the hierarchy
/// is then mounted there, in that namespace only (as tracefs is), rather
/// than UDP capture failing in exactly the labs it is used in.
fn cgroup2_root() -> Result<String, String> {
    static MOUNT: Mutex<()> = Mutex::new(());
    let _one_at_a_time = MOUNT.lock().unwrap_or_else(|e| e.into_inner());
    let mounts = || {
        fs::read_to_string("/proc/self/mounts")
            .map_err(|e| format!("reading /proc/self/mounts: {e}"))
    };
    if let Some(root) = cgroup2_mount_point(&mounts()?) {
        return Ok(root);
    }
    let unmounted_and_empty = fs::read_dir(CGROUP2)
        .map(|mut entries| entries.next().is_none())
        .unwrap_or(false);
    if !unmounted_and_empty {
        return Err(
            "no cgroup v2 hierarchy is mounted (UDP capture and ClientHello copies hook \
             the root cgroup; mount cgroup2 or turn UDP capture off)"
                .to_owned(),
        );
    }
    tracing::info!("mounting cgroup2 on {CGROUP2} for the packet hooks");
    // SAFETY: plain C strings, no data argument.
    let rc = unsafe {
        libc::mount(
            c"cgroup2".as_ptr(),
            c"/sys/fs/cgroup".as_ptr(),
            c"cgroup2".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "no cgroup v2 hierarchy is mounted and mounting it on {CGROUP2} failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(CGROUP2.to_owned())
}

/// Where a unified system mounts the cgroup v2 hierarchy.
const CGROUP2: &str = "/sys/fs/cgroup";

fn cgroup2_mount_point(mounts: &str) -> Option<String> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_ascii_whitespace();
        let (_, dir, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then(|| dir.to_owned())
    })
}

/// A record the kernel wrote, copied out of its bytes.
fn read_record<T: Copy + Default>(bytes: &[u8]) -> Option<T> {
    (bytes.len() >= size_of::<T>()).then(|| {
        // SAFETY: the skeleton's types are plain C structs (integers and
        // byte arrays), valid for any bit pattern; the length is checked.
        unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
    })
}

fn prog_fdinfo(prog: &libbpf_rs::Program<'_>) -> String {
    fs::read_to_string(format!("/proc/self/fdinfo/{}", prog.as_fd().as_raw_fd()))
        .unwrap_or_default()
}

fn fdinfo_field(fdinfo: &str, name: &str) -> u64 {
    fdinfo
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

/// Syscall tracepoints are attached through tracefs, which is not mounted
/// everywhere (systemd mounts it; minimal systems do not).
fn ensure_tracefs() -> Result<(), String> {
    static MOUNT: Mutex<()> = Mutex::new(());
    let _one_at_a_time = MOUNT.lock().unwrap_or_else(|e| e.into_inner());
    if fs::metadata(format!("{TRACEFS}/events")).is_ok()
        || fs::metadata("/sys/kernel/debug/tracing/events").is_ok()
    {
        return Ok(());
    }
    tracing::info!("mounting tracefs on {TRACEFS} for the accept() tracepoints");
    // SAFETY: plain C strings, no data argument.
    let rc = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            c"/sys/kernel/tracing".as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "tracefs is not mounted and mounting it on {TRACEFS} failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn route_libbpf_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        fn log(level: PrintLevel, message: String) {
            let message = message.trim_end();
            match level {
                PrintLevel::Warn => tracing::warn!(target: "libbpf", "{message}"),
                PrintLevel::Info => tracing::debug!(target: "libbpf", "{message}"),
                PrintLevel::Debug => tracing::trace!(target: "libbpf", "{message}"),
            }
        }
        libbpf_rs::set_print(Some((PrintLevel::Info, log)));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_rounded_up_to_whole_milliseconds() {
        for (wait_us, expected_ms) in [(1, 1), (999, 1), (1001, 2), (50_000, 50), (0, 0)] {
            assert_eq!(
                whole_millis(Duration::from_micros(wait_us)),
                Duration::from_millis(expected_ms),
                "{wait_us} µs"
            );
        }
    }

    #[test]
    fn reads_fdinfo_counters() {
        let fdinfo = "pos:\t0\nprog_type:\t26\nrun_time_ns:\t12345\nrun_cnt:\t7\n";
        assert_eq!(fdinfo_field(fdinfo, "run_time_ns"), 12345);
        assert_eq!(fdinfo_field(fdinfo, "run_cnt"), 7);
        assert_eq!(fdinfo_field(fdinfo, "verified_insns"), 0);
    }

    #[test]
    fn finds_cgroup2_in_hybrid_layouts() {
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(
            cgroup2_mount_point(hybrid).as_deref(),
            Some("/sys/fs/cgroup/unified")
        );
        assert_eq!(cgroup2_mount_point("proc /proc proc rw 0 0\n"), None);
    }

    #[test]
    fn short_records_are_refused() {
        assert!(read_record::<UdpKey>(&[0u8; 4]).is_none());
        let key = read_record::<UdpKey>(&[1u8; size_of::<UdpKey>()]).unwrap();
        assert_eq!(key.lport, 0x0101);
    }
}
