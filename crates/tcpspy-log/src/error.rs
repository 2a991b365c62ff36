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

/// A line that belongs to tcpspy (or connscope) but cannot be read.
///
/// It names the line, the 1-based byte column where reading stopped, and the
/// field; the importer adds the file name and line number in front.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {field}: {problem}: {line:?}")]
pub struct ParseError {
    /// The whole line as given (invalid UTF-8 replaced).
    pub line: String,
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
            line: String::from_utf8_lossy(line).into_owned(),
            column: self.at + 1,
            field: self.field,
            problem: self.problem,
        }
    }
}
