//! Syslog over TCP cut into frames (RFC 6587), as the collector's listener
//! reads it: the same frames whether the stream comes whole or in chunks, each
//! within the size limit, all of them within the stream.
#![no_main]

use connscope_collector::syslog::framing::{split_frame, FramingError, MAX_MESSAGE};
use libfuzzer_sys::fuzz_target;

/// Every frame of `stream` given `chunk` bytes at a time, and the error that
/// ended it.
fn frames(stream: &[u8], chunk: usize) -> (Vec<Vec<u8>>, Option<FramingError>) {
    let (mut frames, mut unread, mut given) = (Vec::new(), Vec::new(), 0);
    loop {
        let at_end = given == stream.len();
        let split = match split_frame(&unread, at_end) {
            Ok(split) => split,
            Err(e) => return (frames, Some(e)),
        };
        assert!(split.used <= unread.len());
        let frame = split.frame.map(<[u8]>::to_vec);
        unread.drain(..split.used);
        match frame {
            Some(frame) => {
                assert!(!frame.is_empty() && frame.len() <= MAX_MESSAGE);
                frames.push(frame);
            }
            None if at_end => return (frames, None),
            None => {
                let more = chunk.min(stream.len() - given);
                unread.extend_from_slice(&stream[given..given + more]);
                given += more;
            }
        }
    }
}

fuzz_target!(|input: (u8, &[u8])| {
    let (chunk, stream) = input;
    let whole = frames(stream, stream.len().max(1));
    let total: usize = whole.0.iter().map(Vec::len).sum();
    assert!(total <= stream.len());
    assert_eq!(frames(stream, usize::from(chunk % 64) + 1), whole);
});
