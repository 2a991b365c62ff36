//! nft rulesets, text and JSON.
#![no_main]

use connscope_firewall::nft::{json::parse_json, parse_str};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(e) = parse_str("fuzz.nft", text) {
        drop(e.to_string());
    }
    let _ = parse_json(text);
});
