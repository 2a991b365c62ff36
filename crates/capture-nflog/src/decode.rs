//! A netlink datagram from `nfnetlink_log` -> the packets connscope's rules
//! logged: kind and chain from the log prefix, the 4-tuple from the copied
//! IP and TCP/UDP headers. Packets other rules log to the same group (another
//! prefix) are skipped, not misread.

use std::net::{IpAddr, SocketAddr};

use connscope_event::Protocol;
use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{PacketNla, ULogMessage};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner};

use crate::hit::{Chain, HitKind};

/// The NFLOG prefix of a packet an audit-mode chain would have dropped
/// (`connscope_firewall::render::WOULD_BLOCK_PREFIX`; a test keeps them equal:
/// the capture layer cannot depend on the planner above it).
pub const WOULD_BLOCK_PREFIX: &str = "connscope would-block";
/// The NFLOG prefix of a packet an enforcing chain dropped.
pub const BLOCKED_PREFIX: &str = "connscope blocked";

/// One packet a connscope chain logged, as it travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoggedPacket {
    pub kind: HitKind,
    pub chain: Chain,
    pub protocol: Protocol,
    pub source: SocketAddr,
    pub destination: SocketAddr,
}

/// Why a record gave no packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skipped {
    /// Logged by a rule that is not connscope's (or by a chain it does not
    /// render): none of its business.
    #[error("log prefix {0:?} is not connscope's")]
    ForeignPrefix(String),
    /// Not TCP or UDP over IP (ICMP, or headers cut short).
    #[error("not a TCP or UDP packet: {0}")]
    NotTcpOrUdp(String),
    /// The netlink message itself could not be read.
    #[error("unreadable netlink message at byte {offset}: {reason}")]
    Netlink { offset: usize, reason: String },
}

/// Every NFLOG packet record in `datagram` (one `recv`), in order. Non-packet
/// messages (acks, config replies) yield nothing.
pub fn packets(datagram: &[u8]) -> Vec<Result<LoggedPacket, Skipped>> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < datagram.len() {
        let message = match NetlinkMessage::<NetfilterMessage>::deserialize(&datagram[offset..]) {
            Ok(message) => message,
            Err(e) => {
                out.push(Err(Skipped::Netlink {
                    offset,
                    reason: e.to_string(),
                }));
                break;
            }
        };
        let length = message.header.length as usize;
        if let NetlinkPayload::InnerMessage(NetfilterMessage {
            inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
            ..
        }) = &message.payload
        {
            out.push(packet(nlas));
        }
        if length == 0 {
            break;
        }
        // Messages are padded to 4 bytes.
        offset += (length + 3) & !3;
    }
    out
}

/// One packet record's attributes -> the packet.
pub fn packet(nlas: &[PacketNla]) -> Result<LoggedPacket, Skipped> {
    let mut prefix = None;
    let mut payload = None;
    for nla in nlas {
        match nla {
            PacketNla::Prefix(text) => prefix = Some(text.to_string_lossy()),
            PacketNla::Payload(bytes) => payload = Some(bytes.as_slice()),
            _ => {}
        }
    }
    let prefix = prefix.unwrap_or_default();
    let (kind, chain) =
        parse_prefix(&prefix).ok_or_else(|| Skipped::ForeignPrefix(prefix.clone().into_owned()))?;
    let (protocol, source, destination) = tuple(payload.unwrap_or_default())?;
    Ok(LoggedPacket {
        kind,
        chain,
        protocol,
        source,
        destination,
    })
}

/// `connscope would-block input: ` -> (WouldBlock, Input).
pub fn parse_prefix(prefix: &str) -> Option<(HitKind, Chain)> {
    let (kind, rest) = if let Some(rest) = prefix.strip_prefix(WOULD_BLOCK_PREFIX) {
        (HitKind::WouldBlock, rest)
    } else {
        (HitKind::Blocked, prefix.strip_prefix(BLOCKED_PREFIX)?)
    };
    let chain = match rest.trim().strip_suffix(':')? {
        "input" => Chain::Input,
        "output" => Chain::Output,
        _ => return None,
    };
    Some((kind, chain))
}

/// Protocol, source and destination from the start of an IP packet.
fn tuple(payload: &[u8]) -> Result<(Protocol, SocketAddr, SocketAddr), Skipped> {
    let not = |why: String| Skipped::NotTcpOrUdp(why);
    let sliced = LaxSlicedPacket::from_ip(payload).map_err(|e| not(e.to_string()))?;
    let (source, destination): (IpAddr, IpAddr) = match &sliced.net {
        Some(LaxNetSlice::Ipv4(ip)) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        Some(LaxNetSlice::Ipv6(ip)) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        _ => return Err(not("no IP header".into())),
    };
    let (protocol, sport, dport) = match &sliced.transport {
        Some(TransportSlice::Tcp(tcp)) => {
            (Protocol::Tcp, tcp.source_port(), tcp.destination_port())
        }
        Some(TransportSlice::Udp(udp)) => {
            (Protocol::Udp, udp.source_port(), udp.destination_port())
        }
        Some(_) => return Err(not("another transport protocol".into())),
        None => return Err(not("transport header missing or cut short".into())),
    };
    Ok((
        protocol,
        SocketAddr::new(source, sport),
        SocketAddr::new(destination, dport),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{datagram, tcp_syn};
    use etherparse::PacketBuilder;

    #[test]
    fn records_give_their_packets_and_foreign_ones_are_skipped() {
        let v6 = PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64).udp(5353, 53);
        let mut udp6 = Vec::new();
        v6.write(&mut udp6, b"query").unwrap();
        let icmp = {
            let b = PacketBuilder::ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64).icmpv4_echo_request(1, 1);
            let mut bytes = Vec::new();
            b.write(&mut bytes, &[]).unwrap();
            bytes
        };
        // The copy range cuts a packet short after its headers.
        let mut cut = tcp_syn([10, 0, 0, 2], [10, 0, 0, 1], (40000, 5432));
        cut.extend([0; 200]);
        cut.truncate(40);
        let decoded = packets(&datagram(&[
            ("connscope would-block output: ", cut),
            ("connscope blocked input: ", udp6),
            ("sshguard: ", tcp_syn([1, 1, 1, 1], [2, 2, 2, 2], (1, 2))),
            ("connscope blocked output: ", icmp),
        ]));
        assert_eq!(decoded.len(), 4);
        assert_eq!(
            decoded[0],
            Ok(LoggedPacket {
                kind: HitKind::WouldBlock,
                chain: Chain::Output,
                protocol: Protocol::Tcp,
                source: "10.0.0.2:40000".parse().unwrap(),
                destination: "10.0.0.1:5432".parse().unwrap(),
            })
        );
        let udp = decoded[1].as_ref().unwrap();
        assert_eq!(
            (udp.kind, udp.chain, udp.protocol),
            (HitKind::Blocked, Chain::Input, Protocol::Udp)
        );
        assert_eq!(
            udp.destination,
            "[fefe:fefe:fefe:fefe:fefe:fefe:fefe:fefe]:53"
                .parse()
                .unwrap()
        );
        assert_eq!(decoded[2], Err(Skipped::ForeignPrefix("sshguard: ".into())));
        assert!(matches!(decoded[3], Err(Skipped::NotTcpOrUdp(_))));
    }

    #[test]
    fn a_damaged_datagram_is_an_error_naming_where() {
        let mut bytes = datagram(&[(
            "connscope blocked input: ",
            tcp_syn([10, 0, 0, 9], [10, 0, 0, 2], (5, 22)),
        )]);
        let good = bytes.len();
        bytes.extend([0xff; 12]);
        let decoded = packets(&bytes);
        assert!(decoded[0].is_ok());
        assert!(
            matches!(&decoded[1], Err(Skipped::Netlink { offset, .. }) if *offset == good),
            "{decoded:?}"
        );
    }

    #[test]
    fn prefixes_name_kind_and_chain_and_others_are_foreign() {
        assert_eq!(
            parse_prefix("connscope would-block input: "),
            Some((HitKind::WouldBlock, Chain::Input))
        );
        assert_eq!(
            parse_prefix("connscope blocked output: "),
            Some((HitKind::Blocked, Chain::Output))
        );
        assert_eq!(parse_prefix("connscope blocked forward: "), None);
        assert_eq!(parse_prefix("ufw block: "), None);
        assert_eq!(parse_prefix(""), None);
    }

    #[test]
    fn prefixes_are_the_renderers() {
        assert_eq!(
            WOULD_BLOCK_PREFIX,
            connscope_firewall::render::WOULD_BLOCK_PREFIX
        );
        assert_eq!(BLOCKED_PREFIX, connscope_firewall::render::BLOCKED_PREFIX);
    }
}
