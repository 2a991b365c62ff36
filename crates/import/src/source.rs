//! Opening a log file as lines: plain or gzip, told apart by the gzip magic
//! bytes (a rotated `syslog.2.gz` may have been renamed, and a `.gz` name
//! may hold plain text).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flate2::read::MultiGzDecoder;

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

/// Reads the next line into `buf` without its line ending; false at the end.
pub fn next_line(reader: &mut dyn BufRead, buf: &mut Vec<u8>) -> io::Result<bool> {
    buf.clear();
    if reader.read_until(b'\n', buf)? == 0 {
        return Ok(false);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(true)
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
            while next_line(&mut *r, &mut buf).unwrap() {
                lines.push(String::from_utf8(buf.clone()).unwrap());
            }
            assert_eq!(lines, ["a", "b"], "{}", path.display());
            assert_eq!(
                counter.load(Ordering::Relaxed),
                std::fs::metadata(&path).unwrap().len()
            );
        }
    }
}
