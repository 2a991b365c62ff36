//! Reading a log file as lines: plain or gzip, told apart by the gzip magic
//! bytes (a rotated `syslog.2.gz` may have been renamed, and a `.gz` name
//! may hold plain text).
//!
//! Lines are read into a buffer of bounded size: a file without newlines (or
//! a gzip bomb of one) must not become one line in memory. The start of an
//! over-long line is kept for the error message; the rest is skipped.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flate2::read::MultiGzDecoder;
use indicatif::ProgressBar;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Counts the bytes read from the file (compressed bytes for gzip), for the
/// progress bar.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Opens `path` for reading lines, decompressing gzip when the content says so.
pub fn open_lines(path: &Path, bytes_read: Arc<AtomicU64>) -> io::Result<Box<dyn BufRead + Send>> {
    let file = Counting {
        inner: File::open(path)?,
        read: bytes_read,
    };
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let head = reader.fill_buf()?;
    if head.len() >= 2 && head[..2] == GZIP_MAGIC {
        Ok(Box::new(BufReader::with_capacity(
            1 << 16,
            MultiGzDecoder::new(reader),
        )))
    } else {
        Ok(Box::new(reader))
    }
}

/// The longest line read. syslog daemons cut their lines far shorter
/// (rsyslog at 8 KiB by default), so a longer one is not a log line.
pub const MAX_LINE: usize = 64 * 1024;

/// A line as read by [`next_line`], without its line ending.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    Whole(&'a [u8]),
    /// Longer than [`MAX_LINE`]: its first [`MAX_LINE`] bytes and its length.
    TooLong {
        start: &'a [u8],
        length: u64,
    },
}

/// Reads the next line into `buf` (at most [`MAX_LINE`] bytes of it);
/// `None` at the end.
pub fn next_line<'b>(
    reader: &mut dyn BufRead,
    buf: &'b mut Vec<u8>,
) -> io::Result<Option<Line<'b>>> {
    buf.clear();
    let mut length = 0u64;
    let mut ended = false;
    let mut last = None;
    while !ended {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            if length == 0 {
                return Ok(None);
            }
            break;
        }
        let (part, used) = match available.iter().position(|&b| b == b'\n') {
            Some(end) => {
                ended = true;
                (&available[..end], end + 1)
            }
            None => (available, available.len()),
        };
        let room = (MAX_LINE + 1).saturating_sub(buf.len());
        buf.extend_from_slice(&part[..part.len().min(room)]);
        length += part.len() as u64;
        last = part.last().copied().or(last);
        reader.consume(used);
    }
    if last == Some(b'\r') {
        length -= 1;
        // The buffer holds the carriage return only when it holds all the line.
        if buf.len() as u64 > length {
            buf.pop();
        }
    }
    if length > MAX_LINE as u64 {
        buf.truncate(MAX_LINE);
        return Ok(Some(Line::TooLong { start: buf, length }));
    }
    Ok(Some(Line::Whole(buf)))
}

/// Calls `each(line_number, line)` for every line of the file; on a read
/// error returns the number of the line it happened at.
pub(crate) fn for_each_line(
    path: &Path,
    bytes_read: &Arc<AtomicU64>,
    bar: &ProgressBar,
    mut each: impl FnMut(u64, Line<'_>),
) -> Result<(), (u64, std::io::Error)> {
    let mut reader = open_lines(path, bytes_read.clone()).map_err(|e| (0, e))?;
    let mut buf = Vec::with_capacity(512);
    let mut number = 0u64;
    loop {
        let line = match next_line(&mut *reader, &mut buf) {
            Ok(Some(line)) => line,
            Ok(None) => return Ok(()),
            Err(e) => return Err((number + 1, e)),
        };
        number += 1;
        each(number, line);
        if number % 65_536 == 0 {
            bar.set_position(bytes_read.load(Ordering::Relaxed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    #[test]
    fn gzip_is_found_by_content_not_name() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("looks.gz");
        std::fs::write(&plain, "a\r\nb\n").unwrap();
        let packed = dir.path().join("syslog.2");
        let mut gz = GzEncoder::new(File::create(&packed).unwrap(), flate2::Compression::fast());
        gz.write_all(b"a\nb").unwrap();
        gz.finish().unwrap();
        for path in [plain, packed] {
            let counter = Arc::new(AtomicU64::new(0));
            let mut r = open_lines(&path, counter.clone()).unwrap();
            let mut buf = Vec::new();
            let mut lines = Vec::new();
            while let Some(Line::Whole(line)) = next_line(&mut *r, &mut buf).unwrap() {
                lines.push(String::from_utf8(line.to_vec()).unwrap());
            }
            assert_eq!(lines, ["a", "b"], "{}", path.display());
            assert_eq!(next_line(&mut *r, &mut buf).unwrap(), None);
            assert_eq!(
                counter.load(Ordering::Relaxed),
                std::fs::metadata(&path).unwrap().len()
            );
        }
    }

    #[test]
    fn over_long_lines_are_cut_and_the_next_line_is_whole() {
        let long = vec![b'x'; 3 * MAX_LINE + 5];
        let mut text = b"first\n\n".to_vec();
        text.extend_from_slice(&long);
        text.extend_from_slice(b"\r\nafter\n");
        text.extend_from_slice(&long);
        // A reader with a small buffer, so lines span many refills.
        let mut reader = BufReader::with_capacity(1000, &text[..]);
        let mut buf = Vec::new();
        let mut read = Vec::new();
        while let Some(line) = next_line(&mut reader, &mut buf).unwrap() {
            read.push(match line {
                Line::Whole(l) => String::from_utf8(l.to_vec()).unwrap(),
                Line::TooLong { start, length } => {
                    assert_eq!(start, &long[..MAX_LINE]);
                    format!("too long: {length}")
                }
            });
            assert!(buf.capacity() <= 2 * MAX_LINE + 1000, "{}", buf.capacity());
        }
        let length = 3 * MAX_LINE + 5;
        assert_eq!(
            read,
            [
                "first".to_owned(),
                String::new(),
                format!("too long: {length}"),
                "after".to_owned(),
                format!("too long: {length}"),
            ]
        );
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_whole() {
        let mut text = vec![b'y'; MAX_LINE];
        text.extend_from_slice(b"\r\n");
        let mut reader = BufReader::new(&text[..]);
        let mut buf = Vec::new();
        assert_eq!(
            next_line(&mut reader, &mut buf).unwrap(),
            Some(Line::Whole(&vec![b'y'; MAX_LINE][..]))
        );
    }
}
