//! Fallback capture backends for hosts where eBPF cannot run: they poll.
//!
//! - [`SockDiagBackend`] (`sockdiag`): netlink sock_diag dumps every interval,
//!   plus the kernel's socket-destroy broadcasts, so connections shorter than
//!   the interval are still seen when they close. Byte counters on every
//!   disconnect.
//! - [`ProcBackend`] (`proc`): /proc/net/tcp{,6} every interval, exactly
//!   tcpspy's method and blind spot (connections shorter than the interval).
//!
//! Both only see the network namespace they run in — there is no way to list
//! another namespace's sockets without entering it. Asked for `--netns all` or
//! another namespace's inode, they refuse to start with
//! [`CaptureError::Unavailable`] rather than silently report less than asked.
//!
//! Connections open when the backend starts are reported once, by the first
//! poll, with `preexisting` set. Owners are found through socket inodes
//! (`/proc/*/fd`), which works only while a process holds the socket: a
//! connection seen only in its destroy message has no process, and the
//! connect of one no process holds yet (an accept queue) waits a short grace
//! for its owner.

mod owners;
mod proc_net;
mod sockdiag;
mod tracker;

use connscope_capture::{netns, CaptureError, NetnsFilter};

pub use proc_net::ProcBackend;
pub use sockdiag::SockDiagBackend;

/// `--backend` name of [`SockDiagBackend`].
pub const BACKEND_SOCKDIAG: &str = "sockdiag";
/// `--backend` name of [`ProcBackend`].
pub const BACKEND_PROC: &str = "proc";

/// The inode of our own namespace, if the filter asks for nothing else.
fn own_namespace_only(backend: &'static str, filter: NetnsFilter) -> Result<u64, CaptureError> {
    let own = netns::current_inode().map_err(|source| CaptureError::Io { backend, source })?;
    match filter {
        NetnsFilter::Own => Ok(own),
        NetnsFilter::Inode(inode) if inode == own => Ok(own),
        other => Err(CaptureError::Unavailable {
            backend,
            reason: format!(
                "a poller sees only its own network namespace ({own}), not --netns {other}; \
                 run one agent per namespace (ip netns exec) or use the ebpf backend"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connscope_capture::CaptureConfig;

    #[test]
    fn pollers_refuse_other_namespaces() {
        for netns in [NetnsFilter::All, NetnsFilter::Inode(1)] {
            let config = CaptureConfig {
                netns,
                ..CaptureConfig::default()
            };
            let err = ProcBackend::open(&config).err().unwrap().to_string();
            assert!(err.contains("only its own network namespace"), "{err}");
            let err = SockDiagBackend::open(&config).err().unwrap().to_string();
            assert!(err.contains("sockdiag capture is unavailable"), "{err}");
        }
        let own = netns::current_inode().unwrap();
        let config = CaptureConfig {
            netns: NetnsFilter::Inode(own),
            ..CaptureConfig::default()
        };
        assert!(ProcBackend::open(&config).is_ok());
    }
}
