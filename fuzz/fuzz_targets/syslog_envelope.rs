//! The syslog envelope (RFC 3164 and RFC 5424) as the collector's listener
//! reads it, and the year of a yearless RFC 3164 time: never a panic; the
//! message is a part of the packet.
#![no_main]

use connscope_collector::syslog::envelope::{parse_envelope, resolve_classic, EnvelopeTime};
use connscope_event::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|packet: &[u8]| {
    let Ok(envelope) = parse_envelope(packet) else {
        return;
    };
    let packet_range = packet.as_ptr_range();
    let message_range = envelope.message.as_ptr_range();
    assert!(packet_range.start <= message_range.start && message_range.end <= packet_range.end);
    if let EnvelopeTime::Classic(time) = envelope.time {
        let _ = resolve_classic(time, Timestamp::from_nanos(1_764_000_000_000_000_000));
    }
});
