//! Syslog over TCP cut into messages, without I/O (RFC 6587): a frame is
//! octet-counted (`LEN SP MSG`, rsyslog's `TCP_Framing="octet-counted"`) when
//! it starts with a digit, else it runs to a newline (the traditional framing,
//! `logger --tcp`). Pure, so the serving side only moves bytes and the
//! framing can be fuzzed on its own.

/// Longest message accepted (rsyslog's default maximum is 8 KiB).
pub const MAX_MESSAGE: usize = 64 * 1024;
/// The longest octet count read, its space included.
const MAX_COUNT_FIELD: usize = 11;

/// Why a stream cannot be cut into frames; the connection ends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("bad octet count {0:?}")]
    BadOctetCount(String),
    #[error("message of {0} bytes is over the {MAX_MESSAGE}-byte limit")]
    TooLong(usize),
    #[error("line over the {MAX_MESSAGE}-byte limit")]
    LineTooLong,
    #[error("the stream ended inside a frame")]
    Truncated,
}

/// The first frame of a stream's unread bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Split<'a> {
    /// The message, without its octet count or line end; `None` until a
    /// whole frame is there (at the end of the stream: none is left).
    pub frame: Option<&'a [u8]>,
    /// Bytes done with: the frame's, and empty lines before it.
    pub used: usize,
}

/// Cuts the first frame off `input`, the unread bytes of a stream; `at_end`
/// says no more will come. Needs at most [`MAX_MESSAGE`] + 11 bytes to
/// decide, so a reader never holds more.
pub fn split_frame(input: &[u8], at_end: bool) -> Result<Split<'_>, FramingError> {
    let mut used = 0;
    loop {
        let rest = &input[used..];
        let Some(first) = rest.first() else {
            return Ok(Split { frame: None, used });
        };
        let cut = if first.is_ascii_digit() {
            octet_counted(rest, at_end)?
        } else {
            line(rest, at_end)?
        };
        let Some((frame, length)) = cut else {
            return Ok(Split { frame: None, used });
        };
        let frame_start = used;
        used += length;
        if !frame.is_empty() {
            return Ok(Split {
                frame: Some(&input[frame_start..][frame.start..frame.end]),
                used,
            });
        }
    }
}

/// `LEN SP MSG`: the message's place in `rest` and the frame's length.
fn octet_counted(
    rest: &[u8],
    at_end: bool,
) -> Result<Option<(std::ops::Range<usize>, usize)>, FramingError> {
    let field = &rest[..rest.len().min(MAX_COUNT_FIELD)];
    let field_length = match field.iter().position(|b| *b == b' ') {
        Some(space) => space + 1,
        None if field.len() == MAX_COUNT_FIELD || at_end => field.len(),
        None => return Ok(None),
    };
    let text = std::str::from_utf8(&rest[..field_length])
        .unwrap_or("")
        .trim_end();
    let length: usize = text
        .parse()
        .map_err(|_| FramingError::BadOctetCount(text.to_owned()))?;
    if length > MAX_MESSAGE {
        return Err(FramingError::TooLong(length));
    }
    let end = field_length + length;
    if rest.len() < end {
        return if at_end {
            Err(FramingError::Truncated)
        } else {
            Ok(None)
        };
    }
    Ok(Some((field_length..end, end)))
}

/// A line: the message without its line end (`\n`, `\r`, `\0`), empty for
/// an empty line; at the end of the stream, the last line needs none.
fn line(
    rest: &[u8],
    at_end: bool,
) -> Result<Option<(std::ops::Range<usize>, usize)>, FramingError> {
    let window = &rest[..rest.len().min(MAX_MESSAGE + 1)];
    let length = match window.iter().position(|b| *b == b'\n') {
        Some(newline) => newline + 1,
        None if window.len() > MAX_MESSAGE => return Err(FramingError::LineTooLong),
        None if at_end => window.len(),
        None => return Ok(None),
    };
    if length > MAX_MESSAGE {
        return Err(FramingError::LineTooLong);
    }
    let mut end = length;
    while end > 0 && matches!(rest[end - 1], b'\n' | b'\r' | b'\0') {
        end -= 1;
    }
    Ok(Some((0..end, length)))
}

#[cfg(test)]
/// Every frame of `stream` given `chunk` bytes at a time, as a reader
/// gets it; then the error that ended it, if any.
pub(super) fn frames_of(stream: &[u8], chunk: usize) -> (Vec<Vec<u8>>, Option<FramingError>) {
    let mut frames = Vec::new();
    let (mut unread, mut given) = (Vec::new(), 0);
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
            Some(frame) => frames.push(frame),
            None if at_end => return (frames, None),
            None => {
                let more = chunk.min(stream.len() - given);
                unread.extend_from_slice(&stream[given..given + more]);
                given += more;
            }
        }
        assert!(unread.len() <= MAX_MESSAGE + MAX_COUNT_FIELD + chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_octet_counted_or_newline_terminated() {
        let data: &[u8] = b"11 <13>1 hello5 <1>x\n<13>plain line\r\n\n<14>last";
        for chunk in [1, 3, data.len()] {
            let (frames, error) = frames_of(data, chunk);
            let frames: Vec<String> = frames
                .into_iter()
                .map(|f| String::from_utf8(f).unwrap())
                .collect();
            assert_eq!(
                frames,
                ["<13>1 hello", "<1>x\n", "<13>plain line", "<14>last"]
            );
            assert_eq!(error, None);
        }
        let (_, error) = frames_of(b"99999999 <1>x", 4);
        assert!(error.is_some());
    }

    #[test]
    fn limits_and_endings_are_errors() {
        assert_eq!(
            frames_of(b"1x <13>", 100).1,
            Some(FramingError::BadOctetCount("1x".into()))
        );
        assert_eq!(
            frames_of(b"20 <13>short", 100).1,
            Some(FramingError::Truncated)
        );
        assert_eq!(
            frames_of(b"65537 ", 100).1,
            Some(FramingError::TooLong(65537))
        );
        let mut long = vec![b'a'; MAX_MESSAGE];
        assert_eq!(frames_of(&long, 4096), (vec![long.clone()], None));
        long.push(b'\n');
        assert_eq!(frames_of(&long, 4096).1, Some(FramingError::LineTooLong));
        // Empty lines alone are used up, never held.
        let split = split_frame(b"\n\r\n\0\n", false).unwrap();
        assert_eq!(
            split,
            Split {
                frame: None,
                used: 5
            }
        );
    }
}
