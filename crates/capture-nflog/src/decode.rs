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
