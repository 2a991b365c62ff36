//! `connscope agent --nft-name-sets`: keeps the name sets of a loaded
//! connscope plan filled from the DNS answers the host's processes receive.
//!
//! A plan that allows a destination by name has `ip daddr @SET` rules and an
//! empty set per name and family in table `inet connscope`, named by
//! [`connscope_names::name_set`]. For every answer, each name of its chain
//! whose set exists gets the answered addresses with `timeout` = TTL + grace.
//! Set names are plain identifiers by construction and addresses are printed
//! by `IpAddr`'s `Display`; no byte of a name from the network reaches the
//! nft command.
//!
//! Updates go through `nft -f -` (run in the answer's namespace), one batch
//! for whatever answers queued while the previous batch ran. The sets are
//! read again every 2 s; a set that appears (a plan loaded after the answers)
//! is filled at once from the answers still within their TTL + grace, since
//! the applications still use them. The answer
//! reaches the application before the set has the address; a SYN sent in that
//! window is dropped and retransmitted (docs/CAPTURE.md measures the delay).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use connscope_event::Family;
use connscope_names::name_set;
use hashlink::LruCache;

use crate::observer::ObservedAnswer;

/// The table a connscope plan loads its name sets into.
pub const TABLE: &str = "connscope";
/// How long a namespace's list of sets is trusted before it is read again.
const SETS_FRESH: Duration = Duration::from_secs(2);
/// An element is not rewritten when it would live at most this much longer.
const REFRESH_SLACK: Duration = Duration::from_secs(30);
/// Elements remembered as written (to skip rewrites).
const WRITTEN_CAP: usize = 65_536;
/// Sets whose recent answers are remembered, to fill a set that appears.
const RECENT_CAP: usize = 16_384;
/// Addresses remembered per set.
const RECENT_ADDRESSES: usize = 64;

/// Counters of the keeper.
#[derive(Debug, Default)]
pub struct NameSetStats {
    /// Elements added or refreshed.
    pub elements: AtomicU64,
    /// `nft -f` batches run.
    pub batches: AtomicU64,
    /// Batches nft refused or could not run.
    pub failures: AtomicU64,
}

/// The keeper thread; stops when its answer channel closes.
pub struct NameSetKeeper {
    stats: Arc<NameSetStats>,
    thread: Option<JoinHandle<()>>,
}

impl NameSetKeeper {
    /// Starts keeping sets from `answers`; elements live TTL + `grace`.
    pub fn start(
        answers: Receiver<ObservedAnswer>,
        grace: Duration,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<NameSetKeeper> {
        let stats = Arc::new(NameSetStats::default());
        let mut state = Keeper {
            grace,
            sets: HashMap::new(),
            written: LruCache::new(WRITTEN_CAP),
            recent: LruCache::new(RECENT_CAP),
            namespaces: HashMap::new(),
            stats: stats.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("nft-name-sets".into())
            .spawn(move || state.run(&answers, &stop))?;
        Ok(NameSetKeeper {
            stats,
            thread: Some(thread),
        })
    }

    pub fn stats(&self) -> &NameSetStats {
        &self.stats
    }
}

impl Drop for NameSetKeeper {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The sets of one namespace's table, as last read: each with its handle,
/// and the table's handle, so a plan loaded again (sets made anew, empty,
/// under the same names) is told from the one before.
struct KnownSets {
    table: Option<u64>,
    names: HashMap<String, u64>,
    read: Instant,
}

struct Keeper {
    grace: Duration,
    sets: HashMap<u64, KnownSets>,
    written: LruCache<(u64, String, IpAddr), Instant>,
    /// (namespace, set) -> addresses answered with their expiry (TTL + grace).
    recent: LruCache<(u64, String), Vec<(IpAddr, Instant)>>,
    /// Namespaces answers came from, with where to run nft.
    namespaces: HashMap<u64, Option<Arc<File>>>,
    stats: Arc<NameSetStats>,
}

impl Keeper {
    fn run(&mut self, answers: &Receiver<ObservedAnswer>, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let first = match answers.recv_timeout(Duration::from_millis(200)) {
                Ok(answer) => answer,
                Err(RecvTimeoutError::Timeout) => {
                    self.refresh_stale();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut batch = vec![first];
            batch.extend(answers.try_iter().take(4096));
            self.apply(batch);
        }
    }

    fn apply(&mut self, batch: Vec<ObservedAnswer>) {
        let mut by_netns: HashMap<u64, (Option<Arc<File>>, Vec<ObservedAnswer>)> = HashMap::new();
        for answer in batch {
            by_netns
                .entry(answer.netns)
                .or_insert_with(|| (answer.netns_file.clone(), Vec::new()))
                .1
                .push(answer);
        }
        for (netns, (file, answers)) in by_netns {
            self.namespaces.insert(netns, file.clone());
            self.remember(netns, &answers);
            let fresh = self
                .sets
                .get(&netns)
                .is_some_and(|known| known.read.elapsed() < SETS_FRESH);
            if !fresh {
                self.refresh(netns, file.as_deref());
            }
            let commands = self.commands(netns, &answers);
            self.write(netns, file.as_deref(), &commands);
        }
    }

    /// Remembers each answered address under each set it would go to.
    fn remember(&mut self, netns: u64, answers: &[ObservedAnswer]) {
        for observed in answers {
            for name in observed.answer.names() {
                for &(address, ttl) in &observed.answer.addresses {
                    let set = name_set(name, family_of(address));
                    let expires = observed.at + Duration::from_secs(ttl.into()) + self.grace;
                    let key = (netns, set);
                    let mut addresses = self.recent.remove(&key).unwrap_or_default();
                    addresses.retain(|&(known, _)| known != address);
                    addresses.push((address, expires));
                    if addresses.len() > RECENT_ADDRESSES {
                        addresses.remove(0);
                    }
                    self.recent.insert(key, addresses);
                }
            }
        }
    }

    /// Reads again the sets of namespaces last read more than 2 s ago.
    fn refresh_stale(&mut self) {
        let stale: Vec<(u64, Option<Arc<File>>)> = self
            .namespaces
            .iter()
            .filter(|(netns, _)| {
                self.sets
                    .get(netns)
                    .is_none_or(|known| known.read.elapsed() >= SETS_FRESH)
            })
            .map(|(netns, file)| (*netns, file.clone()))
            .collect();
        for (netns, file) in stale {
            self.refresh(netns, file.as_deref());
        }
    }

    /// Reads the namespace's sets; fills the ones that appeared since the
    /// last read from the answers remembered for them.
    fn refresh(&mut self, netns: u64, file: Option<&File>) {
        let before = self.sets.remove(&netns);
        self.read_sets(netns, file);
        let known = &self.sets[&netns];
        let same_table = before.as_ref().is_some_and(|old| old.table == known.table);
        if !same_table {
            self.written.clear();
        }
        let appeared: Vec<String> = known
            .names
            .iter()
            .filter(|(set, handle)| {
                !same_table
                    || before
                        .as_ref()
                        .is_none_or(|old| old.names.get(*set) != Some(*handle))
            })
            .map(|(set, _)| set.clone())
            .collect();
        let now = Instant::now();
        let mut commands = String::new();
        for set in appeared {
            let Some(addresses) = self.recent.peek(&(netns, set.clone())) else {
                continue;
            };
            for &(address, expires) in addresses {
                let left = expires.saturating_duration_since(now);
                if left.is_zero() {
                    continue;
                }
                let _ = writeln!(
                    commands,
                    "add element inet {TABLE} {set} {{ {address} timeout {}s }}",
                    left.as_secs().max(1)
                );
                self.written.insert((netns, set.clone(), address), expires);
            }
        }
        self.write(netns, file, &commands);
    }

    fn write(&mut self, netns: u64, file: Option<&File>, commands: &str) {
        if commands.is_empty() {
            return;
        }
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        match run_nft(file, &["-f", "-"], Some(commands)) {
            Ok(_) => {
                let count = commands.lines().count() as u64;
                self.stats.elements.fetch_add(count, Ordering::Relaxed);
            }
            Err(err) => {
                // A set deleted since it was read: read them again next time.
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                self.sets.remove(&netns);
                self.written.clear();
                tracing::warn!(netns, "nft name sets: {err}");
            }
        }
    }

    /// The `add element` lines for the answers whose names have sets.
    fn commands(&mut self, netns: u64, answers: &[ObservedAnswer]) -> String {
        let Some(known) = self.sets.get(&netns) else {
            return String::new();
        };
        let mut commands = String::new();
        for observed in answers {
            for name in observed.answer.names() {
                for &(address, ttl) in &observed.answer.addresses {
                    let set = name_set(name, family_of(address));
                    if !known.names.contains_key(&set) {
                        continue;
                    }
                    let lifetime = Duration::from_secs(ttl.into()) + self.grace;
                    let expires = observed.at + lifetime;
                    let key = (netns, set, address);
                    if self
                        .written
                        .get(&key)
                        .is_some_and(|&written| written + REFRESH_SLACK >= expires)
                    {
                        continue;
                    }
                    let _ = writeln!(
                        commands,
                        "add element inet {TABLE} {} {{ {address} timeout {}s }}",
                        key.1,
                        lifetime.as_secs().max(1)
                    );
                    self.written.insert(key, expires);
                }
            }
        }
        commands
    }

    fn read_sets(&mut self, netns: u64, file: Option<&File>) {
        let (table, names) =
            match run_nft(file, &["-t", "-j", "list", "table", "inet", TABLE], None) {
                Ok(json) => sets_of_table(&json),
                // No plan loaded (yet): no table.
                Err(err) => {
                    tracing::debug!(netns, "nft name sets: {err}");
                    (None, HashMap::new())
                }
            };
        self.sets.insert(
            netns,
            KnownSets {
                table,
                names,
                read: Instant::now(),
            },
        );
    }
}

fn family_of(address: IpAddr) -> Family {
    match address {
        IpAddr::V4(_) => Family::Ipv4,
        IpAddr::V6(_) => Family::Ipv6,
    }
}

/// The handle of table `inet connscope` and its sets' names and handles,
/// from `nft -t -j list table inet connscope`.
fn sets_of_table(json: &str) -> (Option<u64>, HashMap<String, u64>) {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(json) else {
        return (None, HashMap::new());
    };
    let items = value["nftables"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let ours = |object: &serde_json::Value| object["family"] == "inet" && object["table"] == TABLE;
    let table = items
        .iter()
        .filter_map(|item| item.get("table"))
        .find(|table| table["family"] == "inet" && table["name"] == TABLE)
        .and_then(|table| table["handle"].as_u64());
    let sets = items
        .iter()
        .filter_map(|item| item.get("set"))
        .filter(|set| ours(set))
        .filter_map(|set| Some((set["name"].as_str()?.to_owned(), set["handle"].as_u64()?)))
        .collect();
    (table, sets)
}

/// Runs nft (in `netns` when given) and returns its standard output.
fn run_nft(netns: Option<&File>, args: &[&str], input: Option<&str>) -> Result<String, String> {
    let mut command = Command::new("nft");
    command
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(file) = netns {
        let fd = file.as_raw_fd();
        // SAFETY: setns(2) is async-signal-safe; the fd stays open in the child.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = command
        .spawn()
        .map_err(|err| format!("cannot run nft: {err}"))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(input.as_bytes())
            .map_err(|err| format!("writing to nft: {err}"))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|err| format!("waiting for nft: {err}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "nft {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::Answer;

    #[test]
    fn only_the_plan_tables_sets_are_taken() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "inet", "name": "connscope", "handle": 3}},
            {"set": {"family": "inet", "name": "name4_a", "table": "connscope", "handle": 2}},
            {"set": {"family": "inet", "name": "other", "table": "filter", "handle": 2}},
            {"set": {"family": "ip", "name": "name4_b", "table": "connscope", "handle": 4}}]}"#;
        assert_eq!(
            sets_of_table(json),
            (Some(3), HashMap::from([("name4_a".to_owned(), 2)]))
        );
        assert_eq!(sets_of_table("not json"), (None, HashMap::new()));
    }

    #[test]
    fn commands_name_only_existing_sets_and_skip_rewrites_that_add_nothing() {
        let hostile = "<img src=x onerror=alert(1)>.example";
        let set = name_set(hostile, Family::Ipv4);
        let mut keeper = Keeper {
            grace: Duration::from_secs(300),
            sets: HashMap::from([(
                1,
                KnownSets {
                    table: Some(1),
                    names: HashMap::from([(set.clone(), 1)]),
                    read: Instant::now(),
                },
            )]),
            written: LruCache::new(16),
            recent: LruCache::new(16),
            namespaces: HashMap::new(),
            stats: Arc::default(),
        };
        let at = Instant::now();
        let observed = |at| ObservedAnswer {
            netns: 1,
            netns_file: None,
            answer: Answer {
                asked: hostile.into(),
                chain: vec!["cdn.example".into()],
                addresses: vec![
                    ("192.0.2.1".parse().unwrap(), 60),
                    ("2001:db8::1".parse().unwrap(), 60),
                ],
            },
            at,
        };
        assert_eq!(
            keeper.commands(1, &[observed(at)]),
            format!("add element inet connscope {set} {{ 192.0.2.1 timeout 360s }}\n")
        );
        assert_eq!(
            keeper.commands(1, &[observed(at + Duration::from_secs(5))]),
            ""
        );
        assert!(!keeper
            .commands(1, &[observed(at + Duration::from_secs(60))])
            .is_empty());
        assert_eq!(keeper.commands(2, &[observed(at)]), "", "unknown namespace");
    }
}
