//! The connscope agent: a drop-in replacement for the tcpspy daemon.
//!
//! One agent runs per host (or per network namespace). It takes events from a
//! capture backend, and for each one: names the user, drops what the tcpspy
//! rules do not select, gives it the next sequence number, and hands it to
//! every output (syslog, tcpspy lines, JSON Lines, the shipping output).
//!
//! # Threads, and why nothing waits on the kernel reader
//!
//! The capture thread only reads the backend and pushes each batch into a
//! bounded queue with a non-blocking send. The output thread does everything
//! that can be slow — filtering, numbering (an fsync whenever the numbers
//! reserved ahead run out, about once a second when busy), writing. If
//! the outputs fall behind, the queue fills and further batches are dropped
//! *and counted* (`queue_dropped`) instead of letting the kernel's ring buffer
//! overflow. The main thread waits for signals: SIGHUP reopens output files
//! (log rotation), SIGUSR1 logs statistics, SIGTERM and SIGINT stop the agent
//! after everything already captured is written and flushed.
//!
//! # Losses before numbering get numbers too
//!
//! Events lost before the output thread numbers them (the kernel's losses,
//! a full queue, a state file that cannot be written) would leave no gap in
//! the sequence: the collector could not see them. So the output thread gives
//! each such loss numbers of its own, as soon as it sees the counter move, and
//! tells every output ([`Sink::lost`]); the shipping output reports them to
//! the collector as dropped, with the cause.
//!
//! # Foreground only
//!
//! tcpspy forks into the background unless `-d` is given. The agent never
//! does: under systemd (or any supervisor) a daemon that forks only hides its
//! pid. `-d` keeps its tcpspy meaning for the output — lines on standard
//! output instead of syslog — and the agent runs in the foreground either way.

mod backend;
mod hit_owners;
mod naming;
pub mod output;
mod privileges;
mod sequence;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use connscope_capture::{CaptureBackend, CaptureConfig, CaptureError, NetnsFilter};
use connscope_dns_observe::{
    AnswerLearner, HelloLearner, NameSetKeeper, Namespaces, Observer, ObserverConfig, ObserverError,
};
use connscope_event::{ConnectionEvent, EventKind};
use connscope_names::UserNames;
use connscope_rules::RuleSet;

pub use backend::BackendChoice;
pub use connscope_sink::{LossCause, OutputError, RunStart, Sink};
pub use naming::NamingConfig;
pub use privileges::{PrivilegeError, RunAs};
pub use sequence::{SequenceError, SequenceFile};

/// Everything the agent needs besides its outputs.
#[derive(Debug)]
pub struct AgentConfig {
    pub capture: CaptureConfig,
    pub backend: BackendChoice,
    /// Which events to log; an empty set logs everything.
    pub rules: RuleSet,
    /// `host.name` of every event.
    pub host_name: String,
    /// Where the sequence number is kept (`/var/lib/connscope`).
    pub state_dir: PathBuf,
    /// Whom to run as once capture is set up (`-U`, `-G`).
    pub run_as: Option<RunAs>,
    /// How many batches may wait for the outputs before capture drops them.
    pub queue_batches: usize,
    /// Name remote ends from DNS answers and ClientHellos (`None`: `--no-names`).
    pub naming: Option<NamingConfig>,
    /// Events from another source of the host (the firewall's would-block
    /// and blocked hits) that take the captured events' path: named,
    /// filtered by the rules, numbered and written to every output.
    pub injected: Option<Receiver<ConnectionEvent>>,
}

impl AgentConfig {
    /// Defaults for everything but the rules.
    pub fn new(rules: RuleSet) -> AgentConfig {
        AgentConfig {
            capture: CaptureConfig::default(),
            backend: BackendChoice::Auto,
            rules,
            host_name: connscope_names::host_name_or_localhost(),
            state_dir: PathBuf::from("/var/lib/connscope"),
            run_as: None,
            queue_batches: 4096,
            naming: Some(NamingConfig::default()),
            injected: None,
        }
    }
}

/// Why the agent could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("state directory: {0}")]
    Sequence(#[from] SequenceError),
    #[error(transparent)]
    Privileges(#[from] PrivilegeError),
    #[error("cannot set up signal handling: {0}")]
    Signals(std::io::Error),
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    #[error("{0}")]
    Observer(std::io::Error),
    #[error("names: {0}")]
    Names(#[from] ObserverError),
}

/// Counters the agent keeps; logged on SIGUSR1 and at exit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Statistics {
    /// Events the backend delivered.
    pub captured: u64,
    /// Events the kernel side lost (reported by the backend).
    pub kernel_lost: u64,
    /// Disconnects the backend inferred: closes the kernel never reported.
    pub closes_inferred: u64,
    /// Events dropped because the outputs were too slow.
    pub queue_dropped: u64,
    /// Events dropped because their sequence numbers could not be recorded.
    pub unrecorded: u64,
    /// Events the rules did not select.
    pub rule_dropped: u64,
    /// Events numbered and handed to the outputs.
    pub emitted: u64,
    /// `emitted` by kind.
    pub emitted_by_kind: KindCounts,
    pub outputs: Vec<OutputStatistics>,
}

/// A count per [`EventKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KindCounts {
    pub connect: u64,
    pub disconnect: u64,
    pub connect_failed: u64,
    pub would_block: u64,
    pub blocked: u64,
}

/// Reads the running agent's [`Statistics`] from any thread.
pub type StatisticsReader = Arc<dyn Fn() -> Statistics + Send + Sync>;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutputStatistics {
    pub name: String,
    /// Events the output took.
    pub written: u64,
    /// Events the output has no form for (UDP or failed connects in tcpspy lines).
    pub skipped: u64,
    /// Batches or flushes that failed.
    pub errors: u64,
}

impl std::fmt::Display for Statistics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "captured {}, kernel-lost {}, closes-inferred {}, queue-dropped {}, unrecorded {}, \
             rule-dropped {}, emitted {}",
            self.captured,
            self.kernel_lost,
            self.closes_inferred,
            self.queue_dropped,
            self.unrecorded,
            self.rule_dropped,
            self.emitted
        )?;
        for out in &self.outputs {
            write!(
                f,
                "; output {}: written {}, skipped {}, errors {}",
                out.name, out.written, out.skipped, out.errors
            )?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Counters {
    captured: AtomicU64,
    kernel_lost: AtomicU64,
    closes_inferred: AtomicU64,
    queue_dropped: AtomicU64,
    unrecorded: AtomicU64,
    rule_dropped: AtomicU64,
    emitted: AtomicU64,
    /// Connect, disconnect, connect-failed, would-block, blocked.
    emitted_by_kind: [AtomicU64; 5],
    outputs: Vec<OutputCounters>,
}

fn kind_index(kind: EventKind) -> usize {
    match kind {
        EventKind::Connect => 0,
        EventKind::Disconnect => 1,
        EventKind::ConnectFailed => 2,
        EventKind::WouldBlock => 3,
        EventKind::Blocked => 4,
    }
}

#[derive(Default)]
struct OutputCounters {
    name: String,
    written: AtomicU64,
    skipped: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> Statistics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Statistics {
            captured: get(&self.captured),
            kernel_lost: get(&self.kernel_lost),
            closes_inferred: get(&self.closes_inferred),
            queue_dropped: get(&self.queue_dropped),
            unrecorded: get(&self.unrecorded),
            rule_dropped: get(&self.rule_dropped),
            emitted: get(&self.emitted),
            emitted_by_kind: KindCounts {
                connect: get(&self.emitted_by_kind[0]),
                disconnect: get(&self.emitted_by_kind[1]),
                connect_failed: get(&self.emitted_by_kind[2]),
                would_block: get(&self.emitted_by_kind[3]),
                blocked: get(&self.emitted_by_kind[4]),
            },
            outputs: self
                .outputs
                .iter()
                .map(|o| OutputStatistics {
                    name: o.name.clone(),
                    written: get(&o.written),
                    skipped: get(&o.skipped),
                    errors: get(&o.errors),
                })
                .collect(),
        }
    }
}

/// What the agent did, for the caller's exit status.
#[derive(Debug)]
pub struct Summary {
    pub statistics: Statistics,
    /// The capture backend stopped on this error (the agent then exits).
    pub capture_error: Option<CaptureError>,
}

/// The signals the agent handles; blocked in every thread and taken with
/// sigtimedwait(2) by the main thread, so no handler runs at a random point.
const SIGNALS: [libc::c_int; 4] = [libc::SIGHUP, libc::SIGUSR1, libc::SIGTERM, libc::SIGINT];

/// Runs the agent until SIGTERM or SIGINT (or a capture failure).
///
/// Must be called before the process starts any thread, so that every thread
/// inherits the blocked signals.
pub fn run(config: AgentConfig, outputs: Vec<Box<dyn Sink>>) -> Result<Summary, AgentError> {
    run_observed(config, outputs, |_| Ok(()))
}

/// [`run`], handing `observe` a reader of the agent's statistics once they
/// exist and the signals are blocked, so a thread it starts (a metrics
/// listener) inherits the blocked signals like the agent's own. An error
/// of `observe` stops the agent before capture starts.
pub fn run_observed(
    mut config: AgentConfig,
    mut outputs: Vec<Box<dyn Sink>>,
    observe: impl FnOnce(StatisticsReader) -> std::io::Result<()>,
) -> Result<Summary, AgentError> {
    let signals = block_signals().map_err(AgentError::Signals)?;
    config.capture.name_packets = config.naming.is_some();
    let backend = backend::open_backend(config.backend, &config.capture)?;
    let sequence = SequenceFile::open(&config.state_dir)?;
    // A backend that hands over ClientHellos and DNS answers spares naming
    // its packet sockets, which cost every packet of every watched namespace
    // (see connscope_dns_observe::socket).
    let packet_sockets = !backend.sees_name_packets();
    let names = start_naming(config.naming.as_ref(), config.capture.netns, packet_sockets)?;
    let learners = names
        .as_ref()
        .filter(|_| !packet_sockets)
        .map(|names| Learners {
            hellos: names.observer.hello_learner(),
            answers: names.observer.answer_learner(),
        });
    if let Some(run_as) = config.run_as {
        hand_state_to(&sequence, run_as)?;
        run_as.switch()?;
        tracing::info!(
            uid = run_as.uid,
            gid = run_as.gid,
            "switched user; kept CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH to read /proc"
        );
    }

    let counters = Arc::new(Counters {
        outputs: outputs
            .iter()
            .map(|o| OutputCounters {
                name: o.name().to_owned(),
                ..OutputCounters::default()
            })
            .collect(),
        ..Counters::default()
    });
    let reader = counters.clone();
    observe(Arc::new(move || reader.snapshot())).map_err(AgentError::Observer)?;
    let stop = Arc::new(AtomicBool::new(false));
    let reopen = Arc::new(AtomicBool::new(false));
    let (sender, receiver) = mpsc::sync_channel(config.queue_batches.max(1));

    let injector = match config.injected.take() {
        Some(events) => {
            let (queue, stop) = (sender.clone(), stop.clone());
            Some(
                thread::Builder::new()
                    .name("injected".into())
                    .spawn(move || inject_loop(&events, &queue, &stop))
                    .map_err(AgentError::Thread)?,
            )
        }
        None => None,
    };
    let capture = {
        let (counters, stop) = (counters.clone(), stop.clone());
        thread::Builder::new()
            .name("capture".into())
            .spawn(move || capture_loop(backend, sender, learners, &counters, &stop))
            .map_err(AgentError::Thread)?
    };
    let output = {
        let counters = counters.clone();
        let reopen = reopen.clone();
        for (out, count) in outputs.iter_mut().zip(&counters.outputs) {
            if let Err(err) = out.begin(sequence.run_start()) {
                count.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!("output {}: {err}", count.name);
            }
        }
        let mut stage = OutputStage {
            rules: config.rules,
            host_name: config.host_name,
            user_names: UserNames::default(),
            sequence,
            outputs,
            losses_numbered: NumberedLosses::default(),
            naming: names.as_ref().map(|names| names.naming()),
            hit_owners: injector.is_some().then(hit_owners::HitOwners::new),
        };
        thread::Builder::new()
            .name("output".into())
            .spawn(move || stage.run(receiver, &counters, &reopen))
            .map_err(AgentError::Thread)?
    };

    tracing::info!("connscope agent started, monitoring connections");
    while !capture.is_finished() {
        match wait_signal(&signals, Duration::from_millis(200)) {
            Some(libc::SIGHUP) => reopen.store(true, Ordering::Relaxed),
            Some(libc::SIGUSR1) => tracing::info!("statistics: {}", counters.snapshot()),
            Some(signal) => {
                tracing::info!("caught signal {signal}, shutting down");
                break;
            }
            None => {}
        }
    }
    stop.store(true, Ordering::Relaxed);
    let capture_error = capture.join().expect("the capture thread does not panic");
    if let Some(injector) = injector {
        injector
            .join()
            .expect("the injecting thread does not panic");
    }
    output.join().expect("the output thread does not panic");
    if let Some(names) = names {
        names.stop();
    }
    let statistics = counters.snapshot();
    tracing::info!("statistics at exit: {statistics}");
    if let Some(err) = &capture_error {
        tracing::error!("capture stopped: {err}");
    }
    Ok(Summary {
        statistics,
        capture_error,
    })
}

/// The observer and, with `--nft-name-sets`, the set keeper.
struct Names {
    observer: Observer,
    keeper: Option<(NameSetKeeper, Arc<AtomicBool>)>,
    own_netns: u64,
    sni_wait: Duration,
}

impl Names {
    fn naming(&self) -> naming::Naming {
        naming::Naming::new(self.observer.names(), self.own_netns, self.sni_wait)
    }

    fn stop(self) {
        let stats = self.observer.stats();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        tracing::info!(
            "names: {} packets, {} answers, {} hellos, {} malformed, {} cut, \
             {} dropped by the kernel, {} hellos and {} answers dropped by the kernel",
            get(&stats.packets),
            get(&stats.answers),
            get(&stats.hellos),
            get(&stats.malformed),
            get(&stats.cut),
            get(&stats.kernel_dropped),
            get(&stats.hellos_dropped),
            get(&stats.answers_dropped)
        );
        drop(self.observer);
        if let Some((keeper, stop)) = self.keeper {
            stop.store(true, Ordering::Relaxed);
            let stats = keeper.stats();
            tracing::info!(
                "nft name sets: {} elements in {} batches, {} failed",
                get(&stats.elements),
                get(&stats.batches),
                get(&stats.failures)
            );
        }
    }
}

/// Starts naming. Without the privilege for packet sockets the agent runs
/// on unnamed (and says so), unless it was asked to keep nft sets.
fn start_naming(
    config: Option<&NamingConfig>,
    netns: NetnsFilter,
    packet_sockets: bool,
) -> Result<Option<Names>, AgentError> {
    let Some(config) = config else {
        return Ok(None);
    };
    let observer_config = ObserverConfig {
        namespaces: match netns {
            NetnsFilter::Own => Namespaces::Own,
            NetnsFilter::All => Namespaces::All,
            NetnsFilter::Inode(inode) => Namespaces::Inode(inode),
        },
        addresses_per_netns: config.addresses_per_netns,
        grace: config.grace,
        packet_sockets,
    };
    let (sender, receiver) = if config.nft_name_sets {
        let (sender, receiver) = mpsc::sync_channel(16_384);
        (Some(sender), Some(receiver))
    } else {
        (None, None)
    };
    let observer = match Observer::start(&observer_config, sender) {
        Ok(observer) => observer,
        Err(err) if !config.nft_name_sets => {
            tracing::warn!("names: {err}; connections are not named");
            return Ok(None);
        }
        Err(err) => return Err(err.into()),
    };
    let keeper = match receiver {
        Some(receiver) => {
            let stop = Arc::new(AtomicBool::new(false));
            let keeper = NameSetKeeper::start(receiver, config.grace, stop.clone())
                .map_err(AgentError::Thread)?;
            Some((keeper, stop))
        }
        None => None,
    };
    tracing::info!(
        nft_name_sets = config.nft_name_sets,
        name_packets_from = if packet_sockets {
            "the packet sockets"
        } else {
            "the capture backend"
        },
        "names: from DNS answers and TLS ClientHellos"
    );
    Ok(Some(Names {
        observer,
        keeper,
        own_netns: connscope_dns_observe::observer::own_netns().unwrap_or(0),
        sni_wait: config.sni_wait,
    }))
}

fn hand_state_to(sequence: &SequenceFile, run_as: RunAs) -> Result<(), AgentError> {
    let chown = |path: &std::path::Path| {
        std::os::unix::fs::chown(path, run_as.uid, Some(run_as.gid)).map_err(|source| {
            AgentError::Sequence(SequenceError::Io {
                path: path.to_owned(),
                source,
            })
        })
    };
    chown(sequence.path())?;
    if let Some(dir) = sequence.path().parent() {
        chown(dir)?;
    }
    Ok(())
}

fn block_signals() -> std::io::Result<libc::sigset_t> {
    // SAFETY: sigset operations on a local, zero-initialised set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in SIGNALS {
            libc::sigaddset(&mut set, signal);
        }
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        Ok(set)
    }
}

fn wait_signal(set: &libc::sigset_t, timeout: Duration) -> Option<libc::c_int> {
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: valid set and timespec; no siginfo wanted.
    let signal = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &timeout) };
    (signal > 0).then_some(signal)
}

/// Hands injected events to the output stage one by one until told to stop
/// or their source is gone. It waits for room rather than dropping: the
/// source (the NFLOG capture) has its own bounded queue and counts its drops.
fn inject_loop(
    events: &Receiver<ConnectionEvent>,
    queue: &SyncSender<Vec<ConnectionEvent>>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        match events.recv_timeout(Duration::from_millis(100)) {
            Ok(event) => {
                if queue.send(vec![event]).is_err() {
                    return;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// How often the capture thread reads the backend's statistics.
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// Where the capture thread hands what the backend copied for naming.
struct Learners {
    hellos: HelloLearner,
    answers: AnswerLearner,
}

/// Reads the backend until told to stop; never blocks on the outputs.
/// DNS answers and ClientHellos the backend copied are learned before the
/// events of the same read go to the output thread, where connects wait for
/// them.
fn capture_loop(
    mut backend: Box<dyn CaptureBackend>,
    queue: SyncSender<Vec<ConnectionEvent>>,
    mut learners: Option<Learners>,
    counters: &Counters,
    stop: &AtomicBool,
) -> Option<CaptureError> {
    let mut batch = Vec::with_capacity(1024);
    let mut hello_batch = Vec::new();
    let mut answer_batch = Vec::new();
    let mut last_drop_warning: Option<Instant> = None;
    let mut kernel_lost = 0;
    let mut next_stats = Instant::now();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        // On the way out, one last look without waiting: whatever the kernel
        // already handed over is still delivered.
        let timeout = if stopping {
            Duration::ZERO
        } else {
            Duration::from_millis(100)
        };
        if let Err(err) = backend.poll(&mut batch, timeout) {
            return Some(err);
        }
        if stopping {
            if let Err(err) = backend.finish(&mut batch) {
                return Some(err);
            }
        }
        if let Some(learners) = &mut learners {
            let lost = backend.take_dns_answers(&mut answer_batch);
            for answer in answer_batch.drain(..) {
                learners
                    .answers
                    .learn(answer.netns, &answer.packet, answer.wire_len);
            }
            if lost > 0 {
                learners.answers.dropped(lost);
            }
            let lost = backend.take_client_hellos(&mut hello_batch);
            for hello in hello_batch.drain(..) {
                learners
                    .hellos
                    .learn(hello.netns, hello.local, hello.remote, &hello.record);
            }
            if lost > 0 {
                learners.hellos.dropped(lost);
            }
        }
        // Statistics cost the eBPF backend a few syscalls (loss counters,
        // program fdinfo): once a second is enough, plus once at the end.
        if stopping || Instant::now() >= next_stats {
            next_stats = Instant::now() + STATS_INTERVAL;
            let stats = backend.stats();
            counters.captured.store(stats.events, Ordering::Relaxed);
            counters
                .closes_inferred
                .store(stats.closes_inferred, Ordering::Relaxed);
            if stats.kernel_lost > kernel_lost {
                tracing::warn!(
                    lost = stats.kernel_lost - kernel_lost,
                    "the kernel could not deliver some events"
                );
                kernel_lost = stats.kernel_lost;
                counters.kernel_lost.store(kernel_lost, Ordering::Relaxed);
            }
        }
        if !batch.is_empty() {
            let events = std::mem::replace(&mut batch, Vec::with_capacity(1024));
            let sent = if stopping {
                queue.send(events).map_err(|_| ())
            } else {
                match queue.try_send(events) {
                    Ok(()) => Ok(()),
                    Err(TrySendError::Full(events)) => {
                        counters
                            .queue_dropped
                            .fetch_add(events.len() as u64, Ordering::Relaxed);
                        if last_drop_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                            tracing::warn!("outputs are too slow: dropping events (counted)");
                            last_drop_warning = Some(Instant::now());
                        }
                        Ok(())
                    }
                    Err(TrySendError::Disconnected(_)) => Err(()),
                }
            };
            if sent.is_err() {
                return None; // the output thread is gone: nothing left to do
            }
        }
        if stopping {
            return None;
        }
    }
}

/// Names, filters, numbers and writes; runs on the output thread.
struct OutputStage {
    rules: RuleSet,
    host_name: String,
    user_names: UserNames,
    sequence: SequenceFile,
    outputs: Vec<Box<dyn Sink>>,
    losses_numbered: NumberedLosses,
    naming: Option<naming::Naming>,
    /// Only while firewall hits are injected: it remembers every
    /// connection's process, a cost the agent does not pay otherwise.
    hit_owners: Option<hit_owners::HitOwners>,
}

/// How many of the losses counted so far already have numbers, per cause.
#[derive(Debug, Default)]
struct NumberedLosses {
    kernel: u64,
    queue: u64,
    unrecorded: u64,
}

/// At most this many events are numbered and written as one batch.
const MAX_BATCH: usize = 1 << 16;

impl OutputStage {
    fn run(
        &mut self,
        queue: Receiver<Vec<ConnectionEvent>>,
        counters: &Counters,
        reopen: &AtomicBool,
    ) {
        loop {
            if reopen.swap(false, Ordering::Relaxed) {
                self.each_output(counters, |out| out.reopen());
            }
            self.number_losses(counters);
            let mut wait = Duration::from_millis(200);
            let next_due = [
                self.naming.as_ref().and_then(|n| n.next_due()),
                self.hit_owners.as_ref().and_then(|h| h.next_due()),
            ];
            if let Some(due) = next_due.into_iter().flatten().min() {
                wait = wait.min(due.saturating_duration_since(Instant::now()));
            }
            let mut events = match queue.recv_timeout(wait) {
                Ok(events) => events,
                Err(RecvTimeoutError::Timeout) => {
                    self.deliver_due(counters, false);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut drained = false;
            while !drained && events.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(more) => events.extend(more),
                    Err(_) => drained = true,
                }
            }
            if let Some(hit_owners) = &mut self.hit_owners {
                events = hit_owners.take(events, Instant::now());
            }
            if let Some(naming) = &mut self.naming {
                events = naming.take(events, Instant::now());
            }
            self.deliver(events, counters);
            self.deliver_due(counters, false);
            if drained {
                self.each_output(counters, |out| out.flush());
            }
        }
        // The capture thread is gone: its last counts are final.
        self.deliver_due(counters, true);
        self.number_losses(counters);
        self.each_output(counters, |out| out.close());
        if let Err(err) = self.sequence.close() {
            // Only a gap at the next start: the numbers stay reserved.
            tracing::error!("cannot give back the unused sequence numbers: {err}");
        }
    }

    /// Delivers the firewall hits whose wait for their process is over and
    /// the connects whose wait for a name is over.
    fn deliver_due(&mut self, counters: &Counters, everything: bool) {
        let hits = match &mut self.hit_owners {
            Some(hit_owners) => hit_owners.due(Instant::now(), everything),
            None => Vec::new(),
        };
        if !hits.is_empty() {
            self.deliver(hits, counters);
            self.each_output(counters, |out| out.flush());
        }
        let Some(naming) = &mut self.naming else {
            return;
        };
        let due = naming.due(Instant::now(), everything);
        if !due.is_empty() {
            self.deliver(due, counters);
            self.each_output(counters, |out| out.flush());
        }
    }

    fn deliver(&mut self, mut events: Vec<ConnectionEvent>, counters: &Counters) {
        for event in &mut events {
            event.host.clone_from(&self.host_name);
            event.user_name = event
                .uid
                .and_then(|uid| self.user_names.get(uid).map(str::to_owned));
        }
        let before = events.len();
        events.retain(|event| self.rules.matches(event));
        counters
            .rule_dropped
            .fetch_add((before - events.len()) as u64, Ordering::Relaxed);
        if events.is_empty() {
            return;
        }
        let first = match self.sequence.reserve(events.len() as u64) {
            Ok(first) => first,
            Err(err) => {
                // Numbers that are not on disk could be handed out twice
                // after a restart: better not to emit these events at all.
                tracing::error!("cannot record sequence numbers, events dropped: {err}");
                counters
                    .unrecorded
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                return;
            }
        };
        for (event, sequence) in events.iter_mut().zip(first..) {
            event.sequence = sequence;
        }
        counters
            .emitted
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        for event in &events {
            counters.emitted_by_kind[kind_index(event.kind)].fetch_add(1, Ordering::Relaxed);
        }
        for (out, count) in self.outputs.iter_mut().zip(&counters.outputs) {
            match out.write_batch(&events) {
                Ok(skipped) => {
                    count
                        .written
                        .fetch_add(events.len() as u64 - skipped, Ordering::Relaxed);
                    count.skipped.fetch_add(skipped, Ordering::Relaxed);
                }
                Err(err) => {
                    count.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!("output {}: {err}", count.name);
                }
            }
        }
    }

    /// Gives the losses counted since the last call numbers of their own and
    /// tells the outputs. If the numbers cannot be recorded, the losses wait
    /// for the next call.
    fn number_losses(&mut self, counters: &Counters) {
        let causes = [
            (LossCause::Kernel, &counters.kernel_lost),
            (LossCause::Queue, &counters.queue_dropped),
            (LossCause::StateWrite, &counters.unrecorded),
        ];
        for (cause, counter) in causes {
            let counted = counter.load(Ordering::Relaxed);
            let numbered = match cause {
                LossCause::Kernel => &mut self.losses_numbered.kernel,
                LossCause::Queue => &mut self.losses_numbered.queue,
                LossCause::StateWrite => &mut self.losses_numbered.unrecorded,
            };
            let lost = counted.saturating_sub(*numbered);
            if lost == 0 {
                continue;
            }
            let first = match self.sequence.reserve(lost) {
                Ok(first) => first,
                Err(err) => {
                    tracing::error!("cannot record sequence numbers for {lost} lost events: {err}");
                    continue;
                }
            };
            *numbered = counted;
            let last = first + lost - 1;
            tracing::debug!(first, last, ?cause, "numbered events lost before numbering");
            for (out, count) in self.outputs.iter_mut().zip(&counters.outputs) {
                if let Err(err) = out.lost(first, last, cause) {
                    count.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!("output {}: {err}", count.name);
                }
            }
        }
    }

    fn each_output(
        &mut self,
        counters: &Counters,
        mut action: impl FnMut(&mut dyn Sink) -> Result<(), OutputError>,
    ) {
        for (out, count) in self.outputs.iter_mut().zip(&counters.outputs) {
            if let Err(err) = action(out.as_mut()) {
                count.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!("output {}: {err}", count.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Mutex;

    use connscope_capture::CaptureStats;
    use connscope_event::{Direction, EventKind, Protocol, Timestamp};

    use super::*;

    /// What a sink was handed: numbered events and numbered losses.
    #[derive(Debug, Default)]
    struct Seen {
        events: Vec<u64>,
        lost: Vec<(u64, u64, LossCause)>,
    }

    struct Recording(Arc<Mutex<Seen>>);

    impl Sink for Recording {
        fn name(&self) -> &str {
            "recording"
        }

        fn write_batch(&mut self, events: &[ConnectionEvent]) -> Result<u64, OutputError> {
            let mut seen = self.0.lock().unwrap();
            seen.events.extend(events.iter().map(|e| e.sequence));
            Ok(0)
        }

        fn flush(&mut self) -> Result<(), OutputError> {
            Ok(())
        }

        fn lost(&mut self, first: u64, last: u64, cause: LossCause) -> Result<(), OutputError> {
            self.0.lock().unwrap().lost.push((first, last, cause));
            Ok(())
        }
    }

    /// Hands out `total` events, one per poll, and claims `kernel_lost` losses.
    struct Scripted {
        total: u64,
        given: Arc<AtomicU64>,
        kernel_lost: u64,
    }

    impl CaptureBackend for Scripted {
        fn name(&self) -> &'static str {
            "scripted"
        }

        fn poll(
            &mut self,
            out: &mut Vec<ConnectionEvent>,
            timeout: Duration,
        ) -> Result<(), CaptureError> {
            if self.given.load(Ordering::Relaxed) < self.total {
                out.push(event());
                self.given.fetch_add(1, Ordering::Relaxed);
            } else {
                thread::sleep(timeout.min(Duration::from_millis(5)));
            }
            Ok(())
        }

        fn stats(&self) -> CaptureStats {
            CaptureStats {
                events: self.given.load(Ordering::Relaxed),
                kernel_lost: self.kernel_lost,
                closes_inferred: 0,
            }
        }
    }

    fn event() -> ConnectionEvent {
        let addr = |port| SocketAddr::from(([10, 0, 0, 1], port));
        ConnectionEvent::new(
            EventKind::Connect,
            Timestamp::from_nanos(1),
            Protocol::Tcp,
            Direction::Outgoing,
            addr(40000),
            addr(7070),
        )
    }

    fn stage(state: &tempfile::TempDir, seen: &Arc<Mutex<Seen>>) -> (OutputStage, Counters) {
        let counters = Counters {
            outputs: vec![OutputCounters::default()],
            ..Counters::default()
        };
        let stage = OutputStage {
            rules: RuleSet::builder().build().unwrap(),
            host_name: "test".into(),
            user_names: UserNames::default(),
            sequence: SequenceFile::open(state.path()).unwrap(),
            outputs: vec![Box::new(Recording(seen.clone()))],
            losses_numbered: NumberedLosses::default(),
            naming: None,
            hit_owners: None,
        };
        (stage, counters)
    }

    /// Every number from 1 to the last is handed out exactly once, as an
    /// event or as a loss; returns the losses' numbers per cause.
    fn numbers_by_cause(seen: &Seen) -> Vec<(LossCause, u64)> {
        let mut numbers: Vec<u64> = seen.events.clone();
        let mut by_cause: Vec<(LossCause, u64)> = Vec::new();
        for &(first, last, cause) in &seen.lost {
            numbers.extend(first..=last);
            match by_cause.iter_mut().find(|(c, _)| *c == cause) {
                Some((_, n)) => *n += last - first + 1,
                None => by_cause.push((cause, last - first + 1)),
            }
        }
        numbers.sort_unstable();
        let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
        assert_eq!(numbers, expected, "{seen:?}");
        by_cause
    }

    #[test]
    fn an_overflowing_queue_and_kernel_losses_are_numbered_and_told_to_the_outputs() {
        let state = tempfile::tempdir().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (mut stage, counters) = stage(&state, &seen);
        let counters = Arc::new(counters);
        let given = Arc::new(AtomicU64::new(0));
        let backend = Box::new(Scripted {
            total: 20,
            given: given.clone(),
            kernel_lost: 3,
        });
        // Room for one batch and nobody reading: the rest overflows.
        let (sender, receiver) = mpsc::sync_channel(1);
        let stop = Arc::new(AtomicBool::new(false));
        let capture = {
            let (counters, stop) = (counters.clone(), stop.clone());
            thread::spawn(move || capture_loop(backend, sender, None, &counters, &stop))
        };
        while given.load(Ordering::Relaxed) < 20 {
            thread::sleep(Duration::from_millis(1));
        }
        stop.store(true, Ordering::Relaxed);
        assert!(capture.join().unwrap().is_none());
        stage.run(receiver, &counters, &AtomicBool::new(false));

        let seen = seen.lock().unwrap();
        assert_eq!(seen.events.len(), 1, "{seen:?}");
        assert_eq!(
            numbers_by_cause(&seen),
            [(LossCause::Kernel, 3), (LossCause::Queue, 19)]
        );
        let statistics = counters.snapshot();
        assert_eq!((statistics.kernel_lost, statistics.queue_dropped), (3, 19));
    }

    #[test]
    fn losses_get_numbers_once_however_often_they_are_looked_at() {
        let state = tempfile::tempdir().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (mut stage, counters) = stage(&state, &seen);
        counters.kernel_lost.store(2, Ordering::Relaxed);
        stage.number_losses(&counters);
        stage.number_losses(&counters);
        stage.deliver(vec![event(), event()], &counters);
        counters.kernel_lost.store(5, Ordering::Relaxed);
        counters.unrecorded.store(1, Ordering::Relaxed);
        stage.number_losses(&counters);

        let seen = seen.lock().unwrap();
        assert_eq!(seen.events, [3, 4]);
        assert_eq!(
            seen.lost,
            [
                (1, 2, LossCause::Kernel),
                (5, 7, LossCause::Kernel),
                (8, 8, LossCause::StateWrite)
            ]
        );
        assert_eq!(
            numbers_by_cause(&seen),
            [(LossCause::Kernel, 5), (LossCause::StateWrite, 1)]
        );
    }
}
