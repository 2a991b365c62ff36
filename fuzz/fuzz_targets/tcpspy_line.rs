//! tcpspy lines, every way they are read (syslog file line, `-d` output, a bare message).
#![no_main]

use connscope_tcpspy_log::{parse_syslog_prefix, Origin, Parser};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    let mut parser = Parser::default();
    let _ = parser.parse_syslog_line(line).map(|r| r.map(|r| r.message));
    let _ = parser.parse_foreground_line(line).map(|r| r.message);
    let _ = parser.parse_message(Origin::Tcpspy, line);
    let _ = parse_syslog_prefix(line);
});
