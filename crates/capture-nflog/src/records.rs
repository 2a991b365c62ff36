//! NFLOG records as the kernel lays them out, for the unit tests.

use std::ffi::CString;

use etherparse::PacketBuilder;
use netlink_packet_core::NetlinkMessage;
use netlink_packet_netfilter::nflog::{PacketNla, ULogMessage};
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage};

/// A datagram as the kernel sends it: one NFLOG packet message per
/// (prefix, packet bytes).
pub fn datagram(records: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (prefix, payload) in records {
        let mut message = NetlinkMessage::from(NetfilterMessage::new(
            NetfilterHeader::new(netlink_packet_netfilter::NetfilterProtoFamily::IPv4, 0, 7),
            ULogMessage::Packet(vec![
                PacketNla::Prefix(CString::new(*prefix).unwrap()),
                PacketNla::Payload(payload.clone()),
            ]),
        ));
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        bytes.resize((bytes.len() + 3) & !3, 0);
        out.extend(bytes);
    }
    out
}

pub fn tcp_syn(source: [u8; 4], destination: [u8; 4], ports: (u16, u16)) -> Vec<u8> {
    let builder = PacketBuilder::ipv4(source, destination, 64)
        .tcp(ports.0, ports.1, 1, 64240)
        .syn();
    let mut bytes = Vec::with_capacity(builder.size(0));
    builder.write(&mut bytes, &[]).unwrap();
    bytes
}
