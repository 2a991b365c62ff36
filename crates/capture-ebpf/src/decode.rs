//! Kernel records into [`ConnectionEvent`]s: addresses, clocks, processes.

use std::sync::Arc;

use connscope_capture::process::ProcessCache;
use connscope_capture::sockets::SocketOwners;
use connscope_event::{
    CloseStats, ConnectFailure, ConnectionEvent, Direction, EventKind, ProcessInfo, Protocol,
    Timestamp,
};

use crate::addrs::socket_addrs;
use crate::kernel::{Kernel, RawEvent, UdpFlow, UdpKey};
use crate::skel::types;

const IPPROTO_UDP: u8 = libc::IPPROTO_UDP as u8;

pub(crate) struct Decoder {
    processes: ProcessCache,
    /// /proc counts process start times in clock ticks; the kernel in ns.
    ns_per_tick: u64,
    /// Owners of connections open before we started, by socket inode.
    socket_owners: SocketOwners,
}

impl Decoder {
    pub fn new(command_lines: bool) -> Self {
        // SAFETY: sysconf has no preconditions.
        let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Decoder {
            processes: ProcessCache::new(4096, command_lines),
            ns_per_tick: 1_000_000_000 / ticks_per_second,
            socket_owners: SocketOwners::new(),
        }
    }

    pub fn set_socket_owners(&mut self, owners: SocketOwners) {
        self.socket_owners = owners;
    }

    /// `boot_to_utc`: add to a CLOCK_BOOTTIME reading to get UTC nanoseconds.
    pub fn event(&mut self, raw: &RawEvent, boot_to_utc: i64, kernel: &Kernel) -> ConnectionEvent {
        let kind = match types::event_kind(raw.kind.into()) {
            types::event_kind::KIND_CONNECT => EventKind::Connect,
            types::event_kind::KIND_DISCONNECT => EventKind::Disconnect,
            _ => EventKind::ConnectFailed,
        };
        let protocol = if raw.protocol == IPPROTO_UDP {
            Protocol::Udp
        } else {
            Protocol::Tcp
        };
        let (local, remote) =
            socket_addrs(raw.family, &raw.laddr, raw.lport, &raw.raddr, raw.rport);
        let mut event = ConnectionEvent::new(
            kind,
            Timestamp::from_nanos(raw.ts_ns as i64 + boot_to_utc),
            protocol,
            direction(raw.direction),
            local,
            remote,
        );
        event.netns = raw.netns;
        event.uid = (raw.has_uid != 0).then_some(raw.uid);
        event.preexisting = raw.preexisting != 0;
        event.process = if raw.has_owner != 0 {
            self.process(&raw.owner, kernel)
        } else if raw.sock_inode != 0 {
            let pid = self.socket_owners.get(&raw.sock_inode).copied();
            pid.and_then(|pid| self.processes.get(pid))
        } else {
            None
        };
        match kind {
            EventKind::Disconnect => {
                let udp = protocol == Protocol::Udp;
                event.close = Some(CloseStats {
                    duration_ns: raw.duration_ns,
                    bytes_sent: raw.bytes_sent,
                    bytes_received: raw.bytes_received,
                    packets_sent: udp.then_some(raw.packets_sent),
                    packets_received: udp.then_some(raw.packets_received),
                });
            }
            EventKind::ConnectFailed => event.failure = Some(failure(raw.error)),
            // The kernel program reports connections, never firewall hits.
            EventKind::Connect | EventKind::WouldBlock | EventKind::Blocked => {}
        }
        event
    }

    /// The disconnect of a UDP flow that went idle.
    pub fn udp_expired(
        &mut self,
        key: &UdpKey,
        flow: &UdpFlow,
        idle_timeout_ns: u64,
        boot_to_utc: i64,
        kernel: &Kernel,
    ) -> ConnectionEvent {
        let (local, remote) =
            socket_addrs(key.family, &key.laddr, key.lport, &key.raddr, key.rport);
        let mut event = ConnectionEvent::new(
            EventKind::Disconnect,
            Timestamp::from_nanos((flow.last_ns + idle_timeout_ns) as i64 + boot_to_utc),
            Protocol::Udp,
            direction(flow.direction),
            local,
            remote,
        );
        event.netns = key.netns;
        event.uid = (flow.has_uid != 0).then_some(flow.uid);
        event.process = (flow.has_owner != 0)
            .then(|| self.process(&flow.owner, kernel))
            .flatten();
        event.close = Some(CloseStats {
            duration_ns: flow.last_ns - flow.first_ns,
            bytes_sent: flow.bytes_sent,
            bytes_received: flow.bytes_received,
            packets_sent: Some(flow.packets_sent),
            packets_received: Some(flow.packets_received),
        });
        event
    }

    /// The process the kernel named. /proc when it is still there (and the
    /// same process: pid and start time match); else what the kernel saw
    /// itself: comm, and the executable path recorded at exec.
    fn process(&mut self, owner: &types::owner, kernel: &Kernel) -> Option<Arc<ProcessInfo>> {
        let started = owner.start_ns / self.ns_per_tick;
        if let Some(info) = self.processes.get_started(owner.tgid, started) {
            if info.executable.is_none() {
                // An exited process its parent has not reaped (a zombie) keeps
                // its /proc entry but loses the exe link; the path recorded at
                // exec still names it.
                if let Some(exe) = kernel.exe_path(owner.tgid, owner.start_ns) {
                    let info = Arc::new(ProcessInfo {
                        executable: Some(exe),
                        ..ProcessInfo::clone(&info)
                    });
                    self.processes.insert(owner.tgid, started, info.clone());
                    return Some(info);
                }
            }
            return Some(info);
        }
        let comm: Vec<u8> = owner
            .comm
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        let info = Arc::new(ProcessInfo {
            pid: owner.tgid,
            executable: kernel.exe_path(owner.tgid, owner.start_ns),
            comm: Some(String::from_utf8_lossy(&comm).into_owned()),
            command_line: None,
            cgroup: None,
        });
        self.processes.insert(owner.tgid, started, info.clone());
        Some(info)
    }
}

fn direction(raw: u8) -> Direction {
    match types::event_direction(raw.into()) {
        types::event_direction::DIR_OUTGOING => Direction::Outgoing,
        types::event_direction::DIR_INCOMING => Direction::Incoming,
        _ => Direction::Unknown,
    }
}

fn failure(error: i32) -> ConnectFailure {
    match error {
        libc::ECONNREFUSED => ConnectFailure::Refused,
        libc::ETIMEDOUT => ConnectFailure::Timeout,
        _ => ConnectFailure::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_errors_name_the_failure() {
        assert_eq!(failure(libc::ECONNREFUSED), ConnectFailure::Refused);
        assert_eq!(failure(libc::ETIMEDOUT), ConnectFailure::Timeout);
        assert_eq!(failure(0), ConnectFailure::Other);
        assert_eq!(failure(libc::EHOSTUNREACH), ConnectFailure::Other);
    }
}
