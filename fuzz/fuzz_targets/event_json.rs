//! Event JSON lines: what parses is valid and writes back to the same event.
#![no_main]

use connscope_event::json::{from_json_line, to_json_line};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &str| {
    if let Ok(event) = from_json_line(line) {
        event.validate().expect("an accepted line is valid");
        assert_eq!(from_json_line(&to_json_line(&event)).unwrap(), event);
    }
});
