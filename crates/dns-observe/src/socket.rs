//! A packet socket in one network namespace, filtered in the kernel to the
//! two kinds of packets naming needs: DNS answers arriving (UDP or TCP from
//! port 53) and TLS ClientHellos leaving (a TCP payload starting with a
//! handshake record of type ClientHello).
//!
//! These sockets are the fallback: with the eBPF backend the agent opens none
//! (its cgroup hooks copy answers and ClientHellos, and the observer is handed
//! them), because a packet socket costs every packet the namespace receives a
//! filter run, about 150-200 ns (scripts/packet-tap-cost), where the ingress
//! hook leaves a non-DNS packet after one header read. They remain for the
//! polling backends and for hosts without cgroup v2.
//!
//! Why a packet socket and a classic BPF filter for the answers: the filter
//! drops everything else before a copy is made, and a packet socket also sees
//! answers relayed over loopback by a local stub (127.0.0.53), which is where
//! most hosts get them.
//!
//! The fallback taps the transmit path too (ClientHellos leave by it), which
//! makes the kernel clone every packet the namespace sends before the filter
//! can drop it (`dev_queue_xmit_nit`): the reason the eBPF hooks replace it
//! where they can (docs/BENCHMARKS.md, Names; `scripts/packet-tap-cost`).
//!
//! The socket is `SOCK_DGRAM`: the kernel strips the link header, so the
//! filter and the parser both start at the IP header, on Ethernet, loopback
//! and tunnels alike.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// The kernel's `PACKET_OUTGOING`: a packet this host sends.
const PACKET_OUTGOING: u8 = 4;
/// Loopback and jumbo frames carry up to 64 KiB.
const SNAP_LEN: u32 = 65_535;
/// Room for bursts of answers while the reader is busy.
const RECEIVE_BUFFER: libc::c_int = 4 << 20;

/// Which way a captured packet went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Received by this host (an answer).
    In,
    /// Sent by this host (a ClientHello).
    Out,
}

/// A filtered packet socket bound to one network namespace.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Opens the socket in the namespace `netns` (an open `/proc/PID/ns/net`
    /// or `/run/netns/NAME`), or in this thread's namespace for `None`.
    pub fn open(netns: Option<&File>) -> io::Result<PacketSocket> {
        match netns {
            None => Self::open_here(),
            Some(file) => {
                // setns() changes the calling thread only: a short-lived thread
                // enters the namespace, opens the socket, and ends.
                let file = file.try_clone()?;
                std::thread::scope(|scope| {
                    scope
                        .spawn(move || {
                            // SAFETY: a valid namespace fd; affects this thread only.
                            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                                return Err(io::Error::last_os_error());
                            }
                            Self::open_here()
                        })
                        .join()
                        .expect("opening a packet socket does not panic")
                })
            }
        }
    }

    fn open_here() -> io::Result<PacketSocket> {
        let protocol = (libc::ETH_P_ALL as u16).to_be() as libc::c_int;
        // SAFETY: plain socket(2) call; the fd is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by socket(2).
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let program = filter_program();
        let fprog = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_ptr() as *mut libc::sock_filter,
        };
        set_option(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)?;
        // Packets queued between socket() and the filter were not filtered.
        drain(&fd);
        // Best effort: without CAP_NET_ADMIN only rmem_max applies.
        let _ = set_option(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &RECEIVE_BUFFER)
            .or_else(|_| set_option(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &RECEIVE_BUFFER));
        Ok(PacketSocket { fd })
    }

    /// The next packet (from its IP header on), or `None` when none is
    /// waiting.
    pub fn receive<'b>(&self, buffer: &'b mut [u8]) -> io::Result<Option<(Way, &'b [u8])>> {
        // SAFETY: zeroed sockaddr_ll is a valid out-parameter.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: buffer and address are valid for the lengths given.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                0,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut from_len,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(err),
            };
        }
        let way = if from.sll_pkttype == PACKET_OUTGOING {
            Way::Out
        } else {
            Way::In
        };
        Ok(Some((way, &buffer[..n as usize])))
    }

    /// Packets the kernel dropped for want of buffer room since the last call.
    pub fn take_drops(&self) -> u64 {
        // SAFETY: tpacket_stats is plain data; getsockopt fills it.
        let mut stats: libc::tpacket_stats = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: valid out-parameters of the right size.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut stats as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            stats.tp_drops.into()
        } else {
            0
        }
    }
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn set_option<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    option: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: value points to a T of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            option,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn drain(fd: &OwnedFd) {
    let mut buffer = [0u8; 1];
    // SAFETY: one-byte buffer; MSG_TRUNC discards the rest of each packet.
    while unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buffer.as_mut_ptr().cast(),
            1,
            libc::MSG_DONTWAIT | libc::MSG_TRUNC,
        )
    } >= 0
    {}
}

/// The classic BPF program, assembled from labelled steps so that jumps are
/// checked by name rather than counted by hand.
fn filter_program() -> Vec<libc::sock_filter> {
    use Step::*;
    const AD_PROTOCOL: u32 = (-0x1000i32) as u32; // SKF_AD_OFF + SKF_AD_PROTOCOL
    const AD_PKTTYPE: u32 = (-0x1000i32 + 4) as u32; // SKF_AD_OFF + SKF_AD_PKTTYPE
    let steps = [
        Label("start"),
        LoadWord(AD_PKTTYPE),
        JumpIf(u32::from(PACKET_OUTGOING), "out", "in"),
        // Arriving: UDP or TCP from port 53.
        Label("in"),
        LoadHalf(AD_PROTOCOL),
        JumpIf(libc::ETH_P_IP as u32, "in4", "in_not4"),
        Label("in_not4"),
        JumpIf(libc::ETH_P_IPV6 as u32, "in6", "drop"),
        Label("in4"),
        LoadHalf(6),
        JumpSet(0x1fff, "drop", "in4_first"), // later fragments carry no header
        Label("in4_first"),
        LoadByte(9),
        JumpIf(libc::IPPROTO_UDP as u32, "in4_ports", "in4_not_udp"),
        Label("in4_not_udp"),
        JumpIf(libc::IPPROTO_TCP as u32, "in4_ports", "drop"),
        Label("in4_ports"),
        LoadIpHeaderLength,
        LoadHalfX(0),
        JumpIf(53, "accept", "drop"),
        Label("in6"),
        LoadByte(6),
        JumpIf(libc::IPPROTO_UDP as u32, "in6_ports", "in6_not_udp"),
        Label("in6_not_udp"),
        JumpIf(libc::IPPROTO_TCP as u32, "in6_ports", "drop"),
        Label("in6_ports"),
        LoadHalf(40),
        JumpIf(53, "accept", "drop"),
        // Leaving: a TCP payload starting 16 03 xx LL LL 01.
        Label("out"),
        LoadHalf(AD_PROTOCOL),
        JumpIf(libc::ETH_P_IP as u32, "out4", "out_not4"),
        Label("out_not4"),
        JumpIf(libc::ETH_P_IPV6 as u32, "out6", "drop"),
        Label("out4"),
        LoadHalf(6),
        JumpSet(0x1fff, "drop", "out4_first"),
        Label("out4_first"),
        LoadByte(9),
        JumpIf(libc::IPPROTO_TCP as u32, "out4_tcp", "drop"),
        Label("out4_tcp"),
        LoadIpHeaderLength,
        LoadByteX(12),
        TcpHeaderLengthPlusX,
        Jump("hello"),
        Label("out6"),
        LoadByte(6),
        JumpIf(libc::IPPROTO_TCP as u32, "out6_tcp", "drop"),
        Label("out6_tcp"),
        LoadConstX(40),
        LoadByteX(12),
        TcpHeaderLengthPlusX,
        Label("hello"),
        LoadByteX(0),
        JumpIf(0x16, "hello_version", "drop"),
        Label("hello_version"),
        LoadByteX(1),
        JumpIf(0x03, "hello_type", "drop"),
        Label("hello_type"),
        LoadByteX(5),
        JumpIf(0x01, "accept", "drop"),
        Label("accept"),
        Return(SNAP_LEN),
        Label("drop"),
        Return(0),
    ];
    assemble(&steps)
}

/// One step of the filter; `Label` takes no instruction.
enum Step {
    Label(&'static str),
    LoadWord(u32),
    LoadHalf(u32),
    LoadByte(u32),
    LoadHalfX(u32),
    LoadByteX(u32),
    /// X = 4 * (first byte & 0xf): the IPv4 header's length.
    LoadIpHeaderLength,
    LoadConstX(u32),
    /// From the TCP header's data offset byte in A: X += its length, then
    /// X holds the payload's offset.
    TcpHeaderLengthPlusX,
    JumpIf(u32, &'static str, &'static str),
    JumpSet(u32, &'static str, &'static str),
    Jump(&'static str),
    Return(u32),
}

fn assemble(steps: &[Step]) -> Vec<libc::sock_filter> {
    use Step::*;
    const LD: u16 = 0x00;
    const LDX: u16 = 0x01;
    const ALU: u16 = 0x04;
    const JMP: u16 = 0x05;
    const RET: u16 = 0x06;
    const MISC: u16 = 0x07;
    const W: u16 = 0x00;
    const H: u16 = 0x08;
    const B: u16 = 0x10;
    const ABS: u16 = 0x20;
    const IND: u16 = 0x40;
    const IMM: u16 = 0x00;
    const MSH: u16 = 0xa0;
    const K: u16 = 0x00;
    const X: u16 = 0x08;
    const JA: u16 = 0x00;
    const JEQ: u16 = 0x10;
    const JSET: u16 = 0x40;
    const RSH: u16 = 0x70;
    const AND: u16 = 0x50;
    const ADD: u16 = 0x00;
    const TAX: u16 = 0x00;

    let size = |step: &Step| match step {
        Label(_) => 0,
        TcpHeaderLengthPlusX => 4,
        _ => 1,
    };
    let mut labels = std::collections::HashMap::new();
    let mut at = 0usize;
    for step in steps {
        if let Label(name) = step {
            assert!(labels.insert(*name, at).is_none(), "label {name} twice");
        }
        at += size(step);
    }
    let insn = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    let mut program = Vec::with_capacity(at);
    for step in steps {
        let here = program.len();
        let offset = |label: &str| -> usize {
            let target = labels[label];
            assert!(target > here, "backward jump to {label}");
            target - here - 1
        };
        match *step {
            Label(_) => {}
            LoadWord(k) => program.push(insn(LD | W | ABS, 0, 0, k)),
            LoadHalf(k) => program.push(insn(LD | H | ABS, 0, 0, k)),
            LoadByte(k) => program.push(insn(LD | B | ABS, 0, 0, k)),
            LoadHalfX(k) => program.push(insn(LD | H | IND, 0, 0, k)),
            LoadByteX(k) => program.push(insn(LD | B | IND, 0, 0, k)),
            LoadIpHeaderLength => program.push(insn(LDX | B | MSH, 0, 0, 0)),
            LoadConstX(k) => program.push(insn(LDX | W | IMM, 0, 0, k)),
            TcpHeaderLengthPlusX => program.extend([
                insn(ALU | RSH | K, 0, 0, 2),
                insn(ALU | AND | K, 0, 0, 0x3c),
                insn(ALU | ADD | X, 0, 0, 0),
                insn(MISC | TAX, 0, 0, 0),
            ]),
            JumpIf(k, yes, no) => {
                let (yes, no) = (offset(yes), offset(no));
                program.push(insn(
                    JMP | JEQ | K,
                    u8::try_from(yes).expect("short jump"),
                    u8::try_from(no).expect("short jump"),
                    k,
                ));
            }
            JumpSet(k, yes, no) => {
                let (yes, no) = (offset(yes), offset(no));
                program.push(insn(
                    JMP | JSET | K,
                    u8::try_from(yes).expect("short jump"),
                    u8::try_from(no).expect("short jump"),
                    k,
                ));
            }
            Jump(label) => program.push(insn(JMP | JA, 0, 0, offset(label) as u32)),
            Return(k) => program.push(insn(RET | K, 0, 0, k)),
        }
    }
    program
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_assembles_with_forward_jumps_that_land() {
        let program = filter_program();
        assert!(program.len() < 64);
        for (i, insn) in program.iter().enumerate() {
            if insn.code & 0x07 == 0x05 {
                let longest = if insn.code == 0x05 {
                    insn.k as usize
                } else {
                    insn.jt.max(insn.jf) as usize
                };
                assert!(
                    i + 1 + longest < program.len(),
                    "jump at {i} leaves the program"
                );
            }
        }
        assert_eq!(program.last().unwrap().code, 0x06, "ends with a return");
    }
}
