//! File handles: every connection is one, so the collector raises its limit
//! at start and keeps a share of it for the agents' HTTPS connections.

use crate::config::SyslogLimits;

/// Raises the soft limit of open files to the hard limit: every connection is
/// a file, and the default soft limit (often 1024) is far below what a
/// collector with many agents and syslog senders needs. Returns the limit in
/// force.
pub(crate) fn raise_open_file_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    // An unlimited hard limit still stops at the kernel's fs.nr_open.
    let kernel_max = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(hard);
    let target = hard.min(kernel_max);
    if soft < target {
        match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
            Ok(()) => {
                tracing::info!(from = soft, to = target, "raised the open file limit");
                return target;
            }
            Err(e) => tracing::warn!(error = %e, soft, hard, "cannot raise the open file limit"),
        }
    }
    soft
}

/// The syslog limits with the total cut to a quarter of the open file limit,
/// so that syslog senders, who need no token, can never take the file
/// handles the agents' HTTPS connections and the store need.
pub(crate) fn reserve_for_https(limits: SyslogLimits, open_files: u64) -> SyslogLimits {
    let quarter = usize::try_from(open_files / 4).unwrap_or(usize::MAX).max(1);
    if limits.max_connections > quarter {
        tracing::info!(
            configured = limits.max_connections,
            allowed = quarter,
            "syslog connections capped at a quarter of the open file limit"
        );
    }
    SyslogLimits {
        max_connections: limits.max_connections.min(quarter),
        ..limits
    }
}
