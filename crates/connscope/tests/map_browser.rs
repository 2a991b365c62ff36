#![cfg(feature = "system-tests")] // Debian's Chromium, driven from node
//! The connection map in a real browser: runs `web/tests/map-e2e.mjs` (headless
//! Debian Chromium driven by playwright-core) against this build's `connscope`
//! binary: a real collector on 127.0.0.1 with a real SQLite store, and the
//! `map export` file opened from file://. The script prints one line per check
//! and `N passed, N failed`; screenshots land in target/tmp/map-e2e/.

mod browser;

use std::path::Path;

#[test]
fn the_map_draws_filters_and_exports_in_chromium() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("map-e2e");
    browser::run_browser_script("map-e2e.mjs", &out, &[]);
    for shot in ["served-details.png", "export.png"] {
        assert!(out.join(shot).is_file(), "no screenshot {shot}");
    }
}
