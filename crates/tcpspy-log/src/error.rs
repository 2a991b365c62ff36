use std::fmt;

/// Which part of a line a [`ParseError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Timestamp,
    Host,
    /// The syslog program tag, `tcpspy[812]:`.
    Tag,
    /// The message after the tag.
    Message,
    /// `connect` or `disconnect`.
    Action,
    /// The executable after `proc`.
    Proc,
    User,
    LocalAddress,
    LocalPort,
    RemoteAddress,
    RemotePort,
}

impl Field {
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Timestamp => "timestamp",
            Field::Host => "host",
            Field::Tag => "program tag",
            Field::Message => "message",
            Field::Action => "action",
            Field::Proc => "proc",
            Field::User => "user",
            Field::LocalAddress => "local address",
            Field::LocalPort => "local port",
            Field::RemoteAddress => "remote address",
            Field::RemotePort => "remote port",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is wrong with the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("expected {0}")]
    Expected(&'static str),
    #[error("unknown service name {0:?} (not in the services table for tcp)")]
    UnknownService(String),
    #[error("port number out of range")]
    PortOutOfRange,
    #[error("not an IP address")]
    BadAddress,
    #[error("local and remote addresses are of different families")]
    MixedFamilies,
    #[error("not valid UTF-8")]
    NotUtf8,
    #[error("{0}")]
    BadTimestamp(&'static str),
    #[error("not a message tcpspy writes")]
    UnknownMessage,
}

/// The most bytes of input an error quotes. Lines come from files and
/// network peers: quoting a 200 MB line whole made a 200 MB error message.
pub const QUOTE_MAX: usize = 200;

/// Input quoted in an error: all of it when short, else the [`QUOTE_MAX`]
/// bytes around the point of interest, with where they sit in the whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// The quoted bytes (invalid UTF-8 replaced).
    pub text: String,
    /// Byte offset of the quoted bytes in the input.
    pub start: usize,
    /// Length of the input in bytes.
    pub total: usize,
}

impl Quote {
    /// Quotes `input`, or the part of it around byte offset `at` when it is
    /// longer than [`QUOTE_MAX`].
    pub fn around(input: &[u8], at: usize) -> Quote {
        let start = at
            .saturating_sub(QUOTE_MAX / 2)
            .min(input.len().saturating_sub(QUOTE_MAX));
        let end = (start + QUOTE_MAX).min(input.len());
        Quote {
            text: String::from_utf8_lossy(&input[start..end]).into_owned(),
            start,
            total: input.len(),
        }
    }

    /// True when the whole input is quoted.
    pub fn is_whole(&self) -> bool {
        self.start == 0 && self.text.len() >= self.total
    }
}

impl fmt::Display for Quote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)?;
        if !self.is_whole() {
            // Offsets count bytes of the input, before any replacement.
            let shown = (self.total - self.start).min(QUOTE_MAX);
            write!(
                f,
                " (bytes {}-{} of {})",
                self.start + 1,
                self.start + shown,
                self.total
            )?;
        }
        Ok(())
    }
}

/// A line that belongs to tcpspy (or connscope) but cannot be read.
///
/// It names the line, the 1-based byte column where reading stopped, and the
/// field; the importer adds the file name and line number in front.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {field}: {problem}: {line}")]
pub struct ParseError {
    /// The line, or the part of a long line around `column`.
    pub line: Quote,
    /// 1-based byte column in `line`.
    pub column: usize,
    pub field: Field,
    pub problem: Problem,
}

/// A failure inside one layer, positioned relative to the slice that layer got;
/// turned into a [`ParseError`] once the whole line is known, so the hot path
/// never formats or allocates.
#[derive(Debug)]
pub(crate) struct Failure {
    pub at: usize,
    pub field: Field,
    pub problem: Problem,
}

impl Failure {
    pub fn new(at: usize, field: Field, problem: Problem) -> Self {
        Failure { at, field, problem }
    }

    pub fn shifted(mut self, by: usize) -> Self {
        self.at += by;
        self
    }

    pub fn into_error(self, line: &[u8]) -> ParseError {
        ParseError {
            line: Quote::around(line, self.at),
            column: self.at + 1,
            field: self.field,
            problem: self.problem,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_input_is_quoted_whole() {
        let quote = Quote::around(b"connect: proc x", 3);
        assert!(quote.is_whole());
        assert_eq!(quote.to_string(), "\"connect: proc x\"");
    }

    #[test]
    fn long_input_is_quoted_around_the_point() {
        let mut input = vec![b'a'; 1_000_000];
        input[500_000] = b'!';
        let quote = Quote::around(&input, 500_000);
        assert_eq!(quote.text.len(), QUOTE_MAX);
        assert_eq!(quote.text.find('!'), Some(QUOTE_MAX / 2));
        assert!(quote
            .to_string()
            .ends_with(" (bytes 499901-500100 of 1000000)"));
        // Near either end the window stays inside the input.
        assert_eq!(Quote::around(&input, 3).start, 0);
        let tail = Quote::around(&input, 999_999);
        assert_eq!(
            (tail.start, tail.text.len()),
            (1_000_000 - QUOTE_MAX, QUOTE_MAX)
        );
        assert!(tail
            .to_string()
            .ends_with("(bytes 999801-1000000 of 1000000)"));
    }
}
