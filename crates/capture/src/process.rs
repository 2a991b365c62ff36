//! Process attribution: who is behind a pid.
//!
//! Every backend ends up with a pid and needs the executable, comm, command line
//! and cgroup. Reading them costs four /proc reads, so they are cached per
//! process. A pid can be reused by a new process, so each cache entry remembers
//! the process's start time (field 22 of `/proc/PID/stat`) and is thrown away
//! when it no longer matches.

use std::collections::HashMap;
use std::fs;
use std::sync::Arc;

use connscope_event::ProcessInfo;

/// Reads what /proc says about a process now; `None` if it has already exited.
pub fn read_process(pid: u32, command_line: bool) -> Option<ProcessInfo> {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    let executable = fs::read_link(format!("/proc/{pid}/exe")).ok().map(|path| {
        let path = path.to_string_lossy().into_owned();
        // A binary replaced by a package upgrade still runs; the kernel
        // marks its old path, which is still the right name for it.
        match path.strip_suffix(" (deleted)") {
            Some(stripped) => stripped.to_owned(),
            None => path,
        }
    });
    let command_line = command_line
        .then(|| fs::read(format!("/proc/{pid}/cmdline")).ok())
        .flatten()
        .and_then(|raw| join_cmdline(&raw));
    let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|text| cgroup_v2_path(&text));
    Some(ProcessInfo {
        pid,
        executable,
        comm: Some(comm.trim_end_matches('\n').to_owned()),
        command_line,
        cgroup,
    })
}

/// The start time of a process in clock ticks since boot, which together with
/// the pid identifies one process for its whole life.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

fn parse_start_time(stat: &str) -> Option<u64> {
    // comm may contain spaces and parentheses: fields resume after the last ')'.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // After comm come field 3 (state) onwards; starttime is field 22.
    after_comm.split_ascii_whitespace().nth(19)?.parse().ok()
}

fn join_cmdline(raw: &[u8]) -> Option<String> {
    let args: Vec<_> = raw
        .split(|&b| b == 0)
        .filter(|arg| !arg.is_empty())
        .map(String::from_utf8_lossy)
        .collect();
    (!args.is_empty()).then(|| args.join(" "))
}

fn cgroup_v2_path(text: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::to_owned)
}

/// A bounded cache of [`ProcessInfo`] by pid, safe against pid reuse.
#[derive(Debug)]
pub struct ProcessCache {
    entries: HashMap<u32, Entry>,
    capacity: usize,
    command_lines: bool,
    clock: u64,
}

#[derive(Debug)]
struct Entry {
    start_time: u64,
    info: Arc<ProcessInfo>,
    last_used: u64,
}

impl ProcessCache {
    pub fn new(capacity: usize, command_lines: bool) -> Self {
        ProcessCache {
            entries: HashMap::new(),
            capacity: capacity.max(16),
            command_lines,
            clock: 0,
        }
    }

    /// The process behind `pid` now, from the cache when it is the same
    /// process as last time. `None` when the process has exited and was never
    /// seen before.
    pub fn get(&mut self, pid: u32) -> Option<Arc<ProcessInfo>> {
        self.clock += 1;
        let Some(start) = start_time(pid) else {
            // Gone: the last thing we knew about this pid is the best answer,
            // as the event that names it happened while it was alive.
            return self.entries.get(&pid).map(|e| e.info.clone());
        };
        if let Some(entry) = self.entries.get_mut(&pid) {
            if entry.start_time == start {
                entry.last_used = self.clock;
                return Some(entry.info.clone());
            }
        }
        let info = Arc::new(read_process(pid, self.command_lines)?);
        self.insert(pid, start, info.clone());
        Some(info)
    }

    /// The process `pid` that started at `started` (clock ticks since boot, as
    /// in `/proc/PID/stat`), for backends that learn the start time from the
    /// kernel together with the pid. A cached entry is answered without any
    /// /proc read. `None` when that process is gone and was never seen: the pid
    /// may meanwhile belong to another process, which must not be named.
    pub fn get_started(&mut self, pid: u32, started: u64) -> Option<Arc<ProcessInfo>> {
        self.clock += 1;
        if let Some(entry) = self.entries.get_mut(&pid) {
            if entry.start_time == started {
                entry.last_used = self.clock;
                return Some(entry.info.clone());
            }
        }
        if start_time(pid)? != started {
            return None;
        }
        let info = Arc::new(read_process(pid, self.command_lines)?);
        // The pid could have been reused while we read it.
        if start_time(pid)? != started {
            return None;
        }
        self.insert(pid, started, info.clone());
        Some(info)
    }

    /// Records what a backend learned about a process some other way (e.g. the
    /// kernel reported it at exec), so it is known even after the process exits.
    pub fn insert(&mut self, pid: u32, start_time: u64, info: Arc<ProcessInfo>) {
        if self.entries.len() >= self.capacity {
            self.evict_least_recent_half();
        }
        self.entries.insert(
            pid,
            Entry {
                start_time,
                info,
                last_used: self.clock,
            },
        );
    }

    fn evict_least_recent_half(&mut self) {
        let mut stamps: Vec<u64> = self.entries.values().map(|e| e.last_used).collect();
        let mid = stamps.len() / 2;
        let (_, median, _) = stamps.select_nth_unstable(mid);
        let cutoff = *median;
        self.entries.retain(|_, e| e.last_used > cutoff);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let info = read_process(me, true).unwrap();
        assert_eq!(info.pid, me);
        let exe = std::env::current_exe().unwrap();
        assert_eq!(info.executable.as_deref(), exe.to_str());
        assert!(info.command_line.unwrap().contains(exe.to_str().unwrap()));
        assert!(info.cgroup.unwrap().starts_with('/'));
    }

    #[test]
    fn start_time_skips_tricky_comm() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987654));
    }

    #[test]
    fn cmdline_and_cgroup_parsing() {
        assert_eq!(
            join_cmdline(b"curl\0-s\0http://x\0").as_deref(),
            Some("curl -s http://x")
        );
        assert_eq!(join_cmdline(b""), None);
        assert_eq!(
            cgroup_v2_path("0::/system.slice/ssh.service\n").as_deref(),
            Some("/system.slice/ssh.service")
        );
    }

    #[test]
    fn cache_survives_exit_and_detects_reuse() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut cache = ProcessCache::new(16, false);
        let seen = cache.get(pid).unwrap();
        assert_eq!(seen.executable.as_deref(), Some("/usr/bin/sleep"));
        child.kill().unwrap();
        child.wait().unwrap();
        // Exited: the cache still names it.
        assert_eq!(cache.get(pid), Some(seen));

        // A stale entry for a live pid with another start time is replaced.
        let me = std::process::id();
        cache.insert(
            me,
            1,
            Arc::new(ProcessInfo {
                pid: me,
                ..Default::default()
            }),
        );
        assert!(cache.get(me).unwrap().executable.is_some());
    }

    #[test]
    fn get_started_refuses_another_process_on_the_pid() {
        let me = std::process::id();
        let started = start_time(me).unwrap();
        let mut cache = ProcessCache::new(16, false);
        assert_eq!(cache.get_started(me, started + 1), None);
        let info = cache.get_started(me, started).unwrap();
        assert_eq!(info.pid, me);
        // Answered from the cache from now on, also for an exited process.
        assert_eq!(cache.get_started(me, started), Some(info));
    }

    #[test]
    fn cache_stays_bounded() {
        let mut cache = ProcessCache::new(16, false);
        for pid in 0..100 {
            cache.insert(1_000_000 + pid, 0, Arc::default());
        }
        assert!(cache.len() <= 16);
    }
}
