//! DNS answers over TCP, put back together from the segments the packet
//! socket sees. Over TCP each message is prefixed by its two-byte length; a
//! large answer (DNSSEC, many records, a small MSS) spans several segments
//! and one segment may end one message and start the next, so messages are
//! cut out of the flow's byte stream rather than out of each packet.
//!
//! The input is hostile (anyone can send segments from port 53), so every
//! part is bounded: at most [`MAX_STREAMS`] flows (least recently seen go
//! first), each dropped after [`IDLE`] without a segment, holding at most one
//! message (65,537 bytes) and [`MAX_AHEAD`] segments that arrived before a
//! gap was filled. A segment costs time linear in its length.
//!
//! A stream whose SYN was seen starts at its first byte; one seen only from
//! the middle is taken to start at a message boundary with the first segment
//! seen (a wrong guess yields malformed messages, which are counted, never
//! names).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hashlink::LruCache;

/// TCP flows followed at once.
pub const MAX_STREAMS: usize = 1024;
/// A flow without a segment for this long is forgotten.
pub const IDLE: Duration = Duration::from_secs(10);
/// Segments held per flow while waiting for an earlier one.
pub const MAX_AHEAD: usize = 16;
/// How far past the next expected byte a segment may start and be held.
const WINDOW: u32 = 1 << 16;

/// One flow of one namespace: (netns, sender, receiver).
pub type FlowKey = (u64, SocketAddr, SocketAddr);

/// What one TCP segment carries that matters here.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'p> {
    pub sequence: u32,
    pub syn: bool,
    /// FIN or RST: the sender's stream ends after this segment.
    pub ends: bool,
    pub payload: &'p [u8],
}

/// The DNS-over-TCP streams being followed.
#[derive(Debug)]
pub struct DnsStreams {
    streams: LruCache<FlowKey, Stream>,
}

#[derive(Debug)]
struct Stream {
    /// Sequence number of the next byte in order.
    next: u32,
    /// Bytes from a message boundary up to `next`, less than one message.
    partial: Vec<u8>,
    /// Segments past a gap, by sequence number.
    ahead: BTreeMap<u32, Vec<u8>>,
    seen: Instant,
}

impl Default for DnsStreams {
    fn default() -> Self {
        DnsStreams {
            streams: LruCache::new(MAX_STREAMS),
        }
    }
}

impl DnsStreams {
    /// Takes one segment of `flow`; returns the DNS messages it completes,
    /// in stream order.
    pub fn segment(&mut self, flow: FlowKey, segment: Segment<'_>, now: Instant) -> Vec<Vec<u8>> {
        self.forget_idle(now);
        if segment.syn {
            // A new connection on this 4-tuple: what was held is stale.
            self.streams.insert(
                flow,
                Stream::starting_at(segment.sequence.wrapping_add(1), now),
            );
            return Vec::new();
        }
        let mut messages = Vec::new();
        if !self.streams.contains_key(&flow) {
            if segment.payload.is_empty() {
                return messages; // a bare ACK: nothing to follow
            }
            self.streams
                .insert(flow, Stream::starting_at(segment.sequence, now));
        }
        let stream = self.streams.get_mut(&flow).expect("inserted above");
        stream.seen = now;
        stream.take(segment.sequence, segment.payload, &mut messages);
        if segment.ends {
            self.streams.remove(&flow);
        }
        messages
    }

    /// Flows followed now.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    fn forget_idle(&mut self, now: Instant) {
        while let Some((_, stream)) = self.streams.iter().next() {
            if now.saturating_duration_since(stream.seen) < IDLE {
                break;
            }
            self.streams.remove_lru();
        }
    }
}

impl Stream {
    fn starting_at(next: u32, now: Instant) -> Stream {
        Stream {
            next,
            partial: Vec::new(),
            ahead: BTreeMap::new(),
            seen: now,
        }
    }

    fn take(&mut self, sequence: u32, payload: &[u8], messages: &mut Vec<Vec<u8>>) {
        let offset = sequence.wrapping_sub(self.next);
        if offset != 0 && offset < WINDOW {
            // Past a gap: held until the gap is filled, if there is room.
            if self.ahead.len() < MAX_AHEAD && !payload.is_empty() {
                self.ahead
                    .entry(sequence)
                    .or_insert_with(|| payload.to_vec());
            }
            return;
        }
        // At `next`, or starting before it (a retransmission): the new part.
        let already = self.next.wrapping_sub(sequence) as usize;
        if offset != 0 && already >= payload.len() {
            return;
        }
        let fresh = if offset == 0 {
            payload
        } else {
            &payload[already..]
        };
        self.append(fresh, messages);
        self.take_ahead(messages);
    }

    /// Held segments that the stream has now reached, in order.
    fn take_ahead(&mut self, messages: &mut Vec<Vec<u8>>) {
        loop {
            let reached = self.ahead.iter().find_map(|(&sequence, _)| {
                let offset = sequence.wrapping_sub(self.next);
                (offset == 0 || offset >= WINDOW).then_some(sequence)
            });
            let Some(sequence) = reached else { return };
            let payload = self.ahead.remove(&sequence).expect("found above");
            let already = self.next.wrapping_sub(sequence) as usize;
            if sequence == self.next {
                self.append(&payload, messages);
            } else if already < payload.len() {
                self.append(&payload[already..], messages);
            }
        }
    }

    fn append(&mut self, bytes: &[u8], messages: &mut Vec<Vec<u8>>) {
        self.next = self.next.wrapping_add(bytes.len() as u32);
        let mut rest = bytes;
        loop {
            // Complete the held message's length prefix, then its body.
            if self.partial.len() < 2 {
                let wanted = (2 - self.partial.len()).min(rest.len());
                self.partial.extend_from_slice(&rest[..wanted]);
                rest = &rest[wanted..];
                if self.partial.len() < 2 {
                    return;
                }
            }
            let length = usize::from(u16::from_be_bytes([self.partial[0], self.partial[1]]));
            let have = self.partial.len() - 2;
            let wanted = (length - have).min(rest.len());
            if self.partial.len() == 2 && rest.len() >= length {
                // The common case: the whole message is in this segment.
                messages.push(rest[..length].to_vec());
                self.partial.clear();
                rest = &rest[length..];
                continue;
            }
            self.partial.extend_from_slice(&rest[..wanted]);
            rest = &rest[wanted..];
            if self.partial.len() - 2 < length {
                return;
            }
            messages.push(self.partial[2..].to_vec());
            self.partial.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const FLOW: FlowKey = (
        7,
        SocketAddr::new(
            std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)),
            53,
        ),
        SocketAddr::new(
            std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2)),
            40000,
        ),
    );

    fn framed(messages: &[Vec<u8>]) -> Vec<u8> {
        let mut stream = Vec::new();
        for message in messages {
            stream.extend_from_slice(&(message.len() as u16).to_be_bytes());
            stream.extend_from_slice(message);
        }
        stream
    }

    fn data(sequence: u32, payload: &[u8]) -> Segment<'_> {
        Segment {
            sequence,
            syn: false,
            ends: false,
            payload,
        }
    }

    fn syn(sequence: u32) -> Segment<'static> {
        Segment {
            sequence,
            syn: true,
            ends: false,
            payload: &[],
        }
    }

    /// Feeds `stream` cut at `cuts` (in order of `order`) after a SYN at
    /// `isn`; returns the messages.
    fn feed(stream: &[u8], isn: u32, cuts: &[usize], order: &[usize]) -> Vec<Vec<u8>> {
        let mut bounds = vec![0];
        bounds.extend(cuts.iter().copied().filter(|&c| c > 0 && c < stream.len()));
        bounds.push(stream.len());
        bounds.sort();
        bounds.dedup();
        let pieces: Vec<(usize, usize)> = bounds.windows(2).map(|w| (w[0], w[1])).collect();
        let mut streams = DnsStreams::default();
        let now = Instant::now();
        let mut messages = streams.segment(FLOW, syn(isn), now);
        let mut sent = vec![false; pieces.len()];
        for &index in order {
            let index = index % pieces.len();
            sent[index] = true;
            let (from, to) = pieces[index];
            let sequence = isn.wrapping_add(1).wrapping_add(from as u32);
            messages.extend(streams.segment(FLOW, data(sequence, &stream[from..to]), now));
        }
        for (index, (from, to)) in pieces.iter().enumerate() {
            if !sent[index] {
                let sequence = isn.wrapping_add(1).wrapping_add(*from as u32);
                messages.extend(streams.segment(FLOW, data(sequence, &stream[*from..*to]), now));
            }
        }
        messages
    }

    #[test]
    fn a_message_split_across_segments_and_two_in_one_segment() {
        let messages = vec![vec![1; 300], vec![2; 5], vec![3; 40]];
        let stream = framed(&messages);
        // Cut inside the first length prefix, in a body, and one segment
        // holding the end of one message and the start of the next.
        assert_eq!(feed(&stream, 1000, &[1, 150, 305], &[0, 1, 2, 3]), messages);
    }

    #[test]
    fn retransmissions_and_reordering_give_each_message_once() {
        let messages = vec![vec![9; 100], vec![8; 100]];
        let stream = framed(&messages);
        let mut streams = DnsStreams::default();
        let now = Instant::now();
        let isn = u32::MAX - 50; // the sequence numbers wrap inside the stream
        streams.segment(FLOW, syn(isn), now);
        let at = |offset: usize| isn.wrapping_add(1).wrapping_add(offset as u32);
        assert!(streams
            .segment(FLOW, data(at(120), &stream[120..]), now)
            .is_empty());
        assert_eq!(
            streams.segment(FLOW, data(at(0), &stream[..80]), now),
            Vec::<Vec<u8>>::new()
        );
        // Overlapping retransmission of 0..130 fills the gap at 80..120.
        assert_eq!(
            streams.segment(FLOW, data(at(0), &stream[..130]), now),
            messages
        );
        assert!(streams
            .segment(FLOW, data(at(0), &stream[..]), now)
            .is_empty());
    }

    #[test]
    fn hostile_streams_stay_bounded() {
        let mut streams = DnsStreams::default();
        let now = Instant::now();
        // A length prefix promising 65,535 bytes never delivered, on more
        // flows than are followed: the oldest go.
        for port in 0..(MAX_STREAMS as u16 + 100) {
            let flow = (7, FLOW.1, SocketAddr::new(FLOW.2.ip(), port));
            streams.segment(flow, data(1, &[0xff, 0xff, 1, 2, 3]), now);
        }
        assert_eq!(streams.len(), MAX_STREAMS);
        // Segments far ahead are not held past the cap.
        for i in 0..100u32 {
            streams.segment(FLOW, data(10_000 + i * 10, &[0; 10]), now);
        }
        assert!(streams.streams.get(&FLOW).unwrap().ahead.len() <= MAX_AHEAD);
        // An idle flow is forgotten; a FIN or RST ends one.
        streams.segment(FLOW, data(1, &[0, 1]), now + IDLE);
        assert_eq!(streams.len(), 1);
        let fin = Segment {
            ends: true,
            ..data(3, &[])
        };
        streams.segment(FLOW, fin, now + IDLE);
        assert!(streams.is_empty());
    }

    #[test]
    fn a_stream_met_in_the_middle_starts_at_its_first_segment() {
        let messages = vec![vec![4; 10], vec![5; 20]];
        let stream = framed(&messages);
        let mut streams = DnsStreams::default();
        let now = Instant::now();
        let mut got = streams.segment(FLOW, data(5000, &stream[..15]), now);
        got.extend(streams.segment(FLOW, data(5015, &stream[15..]), now));
        assert_eq!(got, messages);
    }

    proptest! {
        /// Any cutting of the stream into segments, sent in any order,
        /// gives the messages of the stream sent in one piece.
        #[test]
        fn any_segmentation_gives_the_messages_of_one_piece(
            messages in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..700), 1..6),
            cuts in prop::collection::vec(0usize..4000, 0..24),
            order in prop::collection::vec(0usize..32, 0..40),
            isn in any::<u32>(),
        ) {
            let stream = framed(&messages);
            let whole = feed(&stream, isn, &[], &[0]);
            prop_assert_eq!(&whole, &messages);
            // Reordering is bounded by MAX_AHEAD held segments: only orders
            // within that bound must come out whole.
            let pieces = cuts.len() + 1;
            let order = if pieces <= MAX_AHEAD { order } else { Vec::new() };
            prop_assert_eq!(feed(&stream, isn, &cuts, &order), messages);
        }
    }
}
