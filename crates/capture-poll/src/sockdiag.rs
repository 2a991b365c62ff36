//! The `sockdiag` backend: NETLINK_SOCK_DIAG dumps of the TCP socket tables,
//! plus the kernel's socket-destroy broadcasts.
//!
//! A dump is what `ss -ti` prints: every TCP socket with its state, uid,
//! inode, cookie and `tcp_info` (from which come the byte counters). It is
//! cheaper than /proc/net/tcp (binary, no text formatting in the kernel) and
//! gives counters, but it is still a poll: a connection that lives between two
//! dumps is never in one. The destroy groups (`SKNLGRP_INET{,6}_TCP_DESTROY`)
//! close that hole: the kernel sends one message per freed TCP socket, with
//! its 4-tuple, cookie and final `tcp_info`, so short connections are still
//! reported — as a connect followed by a disconnect, without a process (the
//! socket has no inode any more) and without a uid (the kernel leaves it out).
//!
//! Connections are keyed by the socket cookie, which the kernel never reuses
//! while it runs. A connection that leaves the dump (its socket left the
//! established hash: closed, reset) is reported closed by the tracker's rule,
//! once two dumps in a row miss it, with the last counters seen, unless its
//! destroy message comes first (then at once, with the final counters); a
//! destroy message for a connection already reported closed is ignored.
//!
//! Joining the destroy groups needs CAP_NET_ADMIN. Without it the backend
//! still works, like /proc polling with counters, and says so in the log.

use std::collections::{HashSet, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use connscope_capture::{CaptureBackend, CaptureConfig, CaptureError, CaptureStats};
use connscope_event::ConnectionEvent;

use crate::tracker::{NamingGrace, Observed, Tracker};
use crate::{own_namespace_only, BACKEND_SOCKDIAG};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const INET_DIAG_INFO: u16 = 2;
const SKNLGRP_INET_TCP_DESTROY: u32 = 1;
const SKNLGRP_INET6_TCP_DESTROY: u32 = 3;

const TCP_SYN_SENT: u8 = 2;
const TCP_SYN_RECV: u8 = 3;
const TCP_TIME_WAIT: u8 = 6;
const TCP_CLOSE: u8 = 7;
const TCP_LISTEN: u8 = 10;
const TCP_NEW_SYN_RECV: u8 = 12;

/// Every state of a socket that has been established and still holds its full
/// socket (not the TIME_WAIT mini socket), plus LISTEN for directions.
const DUMP_STATES: u32 = !((1 << TCP_SYN_SENT)
    | (1 << TCP_SYN_RECV)
    | (1 << TCP_TIME_WAIT)
    | (1 << TCP_CLOSE)
    | (1 << TCP_NEW_SYN_RECV));

/// Size of `struct inet_diag_msg`.
const DIAG_MSG_LEN: usize = 72;
/// Offsets of `tcpi_bytes_acked` and `tcpi_bytes_received` in `struct tcp_info`.
const TCPI_BYTES_ACKED: usize = 120;
const TCPI_BYTES_RECEIVED: usize = 128;

/// How many closed connections to remember so their late destroy message is
/// not mistaken for a connection never seen.
const CLOSED_MEMORY: usize = 1 << 16;

/// Dumps every `poll_interval`, and reads destroy messages as they come.
pub struct SockDiagBackend {
    dump: OwnedFd,
    destroy: Option<OwnedFd>,
    tracker: Tracker<u64>,
    interval: Duration,
    next_dump: Instant,
    sequence: u32,
    closed: HashSet<u64>,
    closed_order: VecDeque<u64>,
    buffer: Vec<u8>,
    overruns: u64,
}

/// One socket from a dump or a destroy message.
#[derive(Debug, Clone, Copy)]
struct DiagSocket {
    state: u8,
    cookie: u64,
    seen: Observed,
}

impl SockDiagBackend {
    /// Opens the netlink sockets and joins the destroy groups when allowed.
    pub fn open(config: &CaptureConfig) -> Result<SockDiagBackend, CaptureError> {
        let netns = own_namespace_only(BACKEND_SOCKDIAG, config.netns)?;
        let unavailable = |what: &str, err: io::Error| CaptureError::Unavailable {
            backend: BACKEND_SOCKDIAG,
            reason: format!("{what}: {err}"),
        };
        let dump =
            netlink_socket().map_err(|e| unavailable("cannot open a sock_diag socket", e))?;
        let mut backend = SockDiagBackend {
            dump,
            destroy: None,
            tracker: Tracker::new(netns, config.command_lines, NamingGrace::POLLERS),
            interval: config.poll_interval.max(Duration::from_millis(1)),
            next_dump: Instant::now(),
            sequence: 0,
            closed: HashSet::new(),
            closed_order: VecDeque::new(),
            buffer: vec![0; 1 << 18],
            overruns: 0,
        };
        // A first dump proves the kernel has inet_diag for TCP.
        backend
            .request_dump(libc::AF_INET as u8, DUMP_STATES)
            .map_err(|e| unavailable("the kernel answers no TCP socket dump", e))?;
        backend.destroy = match destroy_socket() {
            Ok(fd) => Some(fd),
            Err(err) => {
                tracing::warn!(
                    "sockdiag: cannot join the TCP socket-destroy groups ({err}); connections \
                     shorter than the poll interval will be missed"
                );
                None
            }
        };
        Ok(backend)
    }

    /// Dumps both families, reads what was destroyed meanwhile, and updates
    /// the tracker.
    fn dump_and_track(&mut self, out: &mut Vec<ConnectionEvent>) -> Result<(), CaptureError> {
        let io = |source| CaptureError::Io {
            backend: BACKEND_SOCKDIAG,
            source,
        };
        let sockets = self.dump_both(DUMP_STATES).map_err(io)?;
        self.track_listeners(&sockets);
        // Destroys read now are for sockets the dump may still hold: apply
        // them first and leave those sockets out of the snapshot.
        let destroyed = self.read_destroyed(out).map_err(io)?;
        let open = sockets
            .into_iter()
            .filter(|s| s.state != TCP_LISTEN && !destroyed.contains(&s.cookie))
            .map(|s| (s.cookie, s.seen))
            .collect();
        for cookie in self.tracker.snapshot(open, out) {
            self.remember_closed(cookie);
        }
        Ok(())
    }

    fn dump_both(&mut self, states: u32) -> io::Result<Vec<DiagSocket>> {
        let mut sockets = self.request_dump(libc::AF_INET as u8, states)?;
        sockets.extend(self.request_dump(libc::AF_INET6 as u8, states)?);
        Ok(sockets)
    }

    fn track_listeners(&mut self, sockets: &[DiagSocket]) {
        let listening = sockets
            .iter()
            .filter(|s| s.state == TCP_LISTEN)
            .map(|s| s.seen.local.port())
            .collect();
        self.tracker.set_listening_ports(listening);
    }

    /// A connection seen only in its destroy message on a port not known to
    /// listen: the listener may have appeared since the last dump. Listeners
    /// are few, so looking again is cheap.
    fn refresh_listeners(&mut self) -> io::Result<()> {
        let listeners = self.dump_both(1 << TCP_LISTEN)?;
        self.track_listeners(&listeners);
        Ok(())
    }

    fn request_dump(&mut self, family: u8, states: u32) -> io::Result<Vec<DiagSocket>> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut request = Vec::with_capacity(72);
        request.extend_from_slice(&72u32.to_ne_bytes());
        request.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
        request.extend_from_slice(&flags.to_ne_bytes());
        request.extend_from_slice(&self.sequence.to_ne_bytes());
        request.extend_from_slice(&0u32.to_ne_bytes());
        // struct inet_diag_req_v2: family, protocol, extensions, pad, states, id.
        let extensions = 1u8 << (INET_DIAG_INFO - 1);
        request.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, extensions, 0]);
        request.extend_from_slice(&states.to_ne_bytes());
        request.extend_from_slice(&[0; 48]);
        // SAFETY: the buffer is valid for its length; fd is owned.
        let sent = unsafe {
            libc::send(
                self.dump.as_raw_fd(),
                request.as_ptr().cast(),
                request.len(),
                0,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut sockets = Vec::new();
        loop {
            let len = recv(self.dump.as_raw_fd(), &mut self.buffer, 0)?;
            for message in messages(&self.buffer[..len]) {
                match message {
                    Message::Done => return Ok(sockets),
                    Message::Error(0) => {}
                    Message::Error(errno) => return Err(io::Error::from_raw_os_error(errno)),
                    Message::Diag(body) => sockets.extend(parse_diag(body)),
                    Message::Other => {}
                }
            }
        }
    }

    /// Reads every waiting destroy message; returns the cookies destroyed.
    fn read_destroyed(&mut self, out: &mut Vec<ConnectionEvent>) -> io::Result<HashSet<u64>> {
        let mut destroyed = HashSet::new();
        let Some(fd) = self.destroy.as_ref().map(AsRawFd::as_raw_fd) else {
            return Ok(destroyed);
        };
        loop {
            let len = match recv(fd, &mut self.buffer, libc::MSG_DONTWAIT) {
                Ok(len) => len,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(destroyed),
                Err(err) if err.raw_os_error() == Some(libc::ENOBUFS) => {
                    // The receive buffer overflowed: at least one destroy is
                    // lost. Connections still open stay tracked by the dumps.
                    self.overruns += 1;
                    tracing::warn!(
                        "sockdiag: destroy messages were lost (receive buffer overrun); short \
                         connections around now may be missing"
                    );
                    continue;
                }
                Err(err) => return Err(err),
            };
            let mut sockets = Vec::new();
            for message in messages(&self.buffer[..len]) {
                if let Message::Diag(body) = message {
                    sockets.extend(parse_diag(body));
                }
            }
            let unknown_port = sockets.iter().any(|s| {
                s.seen.remote.port() != 0
                    && !self.closed.contains(&s.cookie)
                    && !self.tracker.is_tracked(&s.cookie)
                    && !self.tracker.is_listening_port(s.seen.local.port())
            });
            if unknown_port {
                self.refresh_listeners()?;
            }
            for socket in sockets {
                destroyed.insert(socket.cookie);
                self.destroyed(socket, out);
            }
        }
    }

    fn destroyed(&mut self, socket: DiagSocket, out: &mut Vec<ConnectionEvent>) {
        if socket.seen.remote.port() == 0 || self.closed.remove(&socket.cookie) {
            return; // a listener, or a connection already reported closed
        }
        let (acked, received) = socket.seen.bytes.unwrap_or_default();
        // A connection that never got established (refused, timed out) has
        // nothing acknowledged: the peer never acked our SYN. An accepted one
        // exists only after the handshake, on a listening port.
        let was_established =
            acked > 0 || received > 0 || self.tracker.is_listening_port(socket.seen.local.port());
        if !was_established {
            return;
        }
        self.tracker.destroyed(socket.cookie, socket.seen, out);
    }

    fn remember_closed(&mut self, cookie: u64) {
        if self.closed_order.len() == CLOSED_MEMORY {
            if let Some(oldest) = self.closed_order.pop_front() {
                self.closed.remove(&oldest);
            }
        }
        self.closed.insert(cookie);
        self.closed_order.push_back(cookie);
    }
}

impl CaptureBackend for SockDiagBackend {
    fn name(&self) -> &'static str {
        BACKEND_SOCKDIAG
    }

    fn poll(
        &mut self,
        out: &mut Vec<ConnectionEvent>,
        timeout: Duration,
    ) -> Result<(), CaptureError> {
        let io = |source| CaptureError::Io {
            backend: BACKEND_SOCKDIAG,
            source,
        };
        let now = Instant::now();
        if now < self.next_dump {
            let wait = (self.next_dump - now).min(timeout);
            match &self.destroy {
                Some(fd) => {
                    wait_readable(fd, wait).map_err(io)?;
                    self.read_destroyed(out).map_err(io)?;
                }
                None => std::thread::sleep(wait),
            }
            if Instant::now() < self.next_dump {
                return Ok(());
            }
        }
        self.next_dump = Instant::now() + self.interval;
        self.dump_and_track(out)
    }

    fn stats(&self) -> CaptureStats {
        CaptureStats {
            events: self.tracker.events(),
            kernel_lost: self.overruns,
            closes_inferred: 0,
        }
    }
}

fn netlink_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn destroy_socket() -> io::Result<OwnedFd> {
    let fd = netlink_socket()?;
    // Multicasts skip sockets whose port id equals the sender's, which is 0
    // for the kernel: an unbound socket would hear nothing. Binding to port
    // id 0 makes the kernel pick a unique one.
    // SAFETY: sockaddr_nl is plain data; zeroed is a valid value.
    let mut address: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    address.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: address is a valid sockaddr_nl and its size is passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&address as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    for group in [SKNLGRP_INET_TCP_DESTROY, SKNLGRP_INET6_TCP_DESTROY] {
        setsockopt(
            &fd,
            libc::SOL_NETLINK,
            libc::NETLINK_ADD_MEMBERSHIP,
            group as i32,
        )?;
    }
    // A burst of short connections sends a burst of messages: give them room
    // (FORCE works as root and ignores rmem_max; plain SO_RCVBUF otherwise).
    let size = 32 << 20;
    if setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size).is_err() {
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, size)?;
    }
    Ok(fd)
}

fn setsockopt(fd: &OwnedFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: value is a live i32 and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn recv(fd: std::os::fd::RawFd, buffer: &mut [u8], flags: i32) -> io::Result<usize> {
    loop {
        // SAFETY: the buffer is valid for writes of its length.
        let len = unsafe { libc::recv(fd, buffer.as_mut_ptr().cast(), buffer.len(), flags) };
        if len >= 0 {
            return Ok(len as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn wait_readable(fd: &OwnedFd, timeout: Duration) -> io::Result<()> {
    let mut pollfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = timeout.as_millis().clamp(0, i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut pollfd, 1, millis) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    Ok(())
}

enum Message<'a> {
    Done,
    Error(i32),
    Diag(&'a [u8]),
    Other,
}

/// Splits a netlink datagram into its messages.
fn messages(mut data: &[u8]) -> impl Iterator<Item = Message<'_>> {
    std::iter::from_fn(move || {
        if data.len() < 16 {
            return None;
        }
        let len = u32::from_ne_bytes(data[0..4].try_into().unwrap()) as usize;
        let kind = u16::from_ne_bytes(data[4..6].try_into().unwrap());
        if len < 16 || len > data.len() {
            return None;
        }
        let body = &data[16..len];
        data = &data[align4(len).min(data.len())..];
        Some(match kind as i32 {
            libc::NLMSG_DONE => Message::Done,
            libc::NLMSG_ERROR if body.len() >= 4 => {
                Message::Error(-i32::from_ne_bytes(body[0..4].try_into().unwrap()))
            }
            _ if kind == SOCK_DIAG_BY_FAMILY => Message::Diag(body),
            _ => Message::Other,
        })
    })
}

fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// Reads a `struct inet_diag_msg` and its `INET_DIAG_INFO` attribute.
fn parse_diag(body: &[u8]) -> Option<DiagSocket> {
    if body.len() < DIAG_MSG_LEN {
        return None;
    }
    let u32_at = |at: usize| u32::from_ne_bytes(body[at..at + 4].try_into().unwrap());
    let family = i32::from(body[0]);
    let state = body[1];
    let sport = u16::from_be_bytes([body[4], body[5]]);
    let dport = u16::from_be_bytes([body[6], body[7]]);
    let ip = |at: usize| -> Option<IpAddr> {
        match family {
            libc::AF_INET => Some(IpAddr::V4(Ipv4Addr::new(
                body[at],
                body[at + 1],
                body[at + 2],
                body[at + 3],
            ))),
            libc::AF_INET6 => {
                let octets: [u8; 16] = body[at..at + 16].try_into().unwrap();
                Some(IpAddr::V6(Ipv6Addr::from(octets)))
            }
            _ => None,
        }
    };
    let local = SocketAddr::new(ip(8)?, sport);
    let remote = SocketAddr::new(ip(24)?, dport);
    let cookie = u64::from(u32_at(44)) | (u64::from(u32_at(48)) << 32);
    let uid = u32_at(64);
    let inode = u64::from(u32_at(68));
    let mut bytes = None;
    let mut attrs = &body[DIAG_MSG_LEN..];
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if len < 4 || len > attrs.len() {
            break;
        }
        let data = &attrs[4..len];
        if kind == INET_DIAG_INFO && data.len() >= TCPI_BYTES_RECEIVED + 8 {
            let u64_at = |at: usize| u64::from_ne_bytes(data[at..at + 8].try_into().unwrap());
            bytes = Some((u64_at(TCPI_BYTES_ACKED), u64_at(TCPI_BYTES_RECEIVED)));
        }
        attrs = &attrs[align4(len).min(attrs.len())..];
    }
    // Destroy messages leave uid and inode zero: the socket has no file any
    // more and the kernel does not fill in the owner there.
    let from_destroy = inode == 0 && uid == 0 && state == TCP_CLOSE;
    Some(DiagSocket {
        state,
        cookie,
        seen: Observed {
            local,
            remote,
            inode,
            uid: (!from_destroy).then_some(uid),
            bytes,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_sees_own_listener_with_inode() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut backend = SockDiagBackend::open(&CaptureConfig::default()).unwrap();
        let sockets = backend
            .request_dump(libc::AF_INET as u8, DUMP_STATES)
            .unwrap();
        let mine = sockets
            .iter()
            .find(|s| s.state == TCP_LISTEN && s.seen.local.port() == port)
            .expect("the dump lists our listener");
        assert_ne!(mine.seen.inode, 0);
        assert_eq!(mine.seen.uid, Some(nix_uid()));
    }

    fn nix_uid() -> u32 {
        // SAFETY: getuid cannot fail.
        unsafe { libc::getuid() }
    }

    #[test]
    fn malformed_messages_stop_parsing() {
        assert!(parse_diag(&[0; 10]).is_none());
        let mut body = vec![0u8; DIAG_MSG_LEN];
        body[0] = 99; // unknown family
        assert!(parse_diag(&body).is_none());
        // A message claiming more bytes than the datagram holds ends the walk.
        let mut datagram = vec![0u8; 16];
        datagram[0..4].copy_from_slice(&64u32.to_ne_bytes());
        assert_eq!(messages(&datagram).count(), 0);
    }
}
