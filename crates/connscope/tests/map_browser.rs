#![cfg(feature = "system-tests")] // Debian's Chromium, driven from node
//! The connection map in a real browser: runs `web/tests/map-e2e.mjs` (headless
//! Debian Chromium driven by playwright-core) against this build's `connscope`
//! binary: a real collector on 127.0.0.1 with a real SQLite store, and the
//! `map export` file opened from file://. The script prints one line per check
//! and `N passed, N failed`; screenshots land in target/tmp/map-e2e/.
//!
//! `web/tests/map-office.mjs` measures readability (issue 17) on the generated
//! office store (`Office::map_store`), served and exported, and at 2,000
//! nodes / 10,000 edges; screenshots in target/tmp/map-office/.

mod browser;

use std::path::Path;

use connscope_firewall::office::Office;

#[test]
fn the_map_draws_filters_and_exports_in_chromium() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("map-e2e");
    browser::run_browser_script("map-e2e.mjs", &out, &[]);
    for shot in ["served-details.png", "export.png"] {
        assert!(out.join(shot).is_file(), "no screenshot {shot}");
    }
}

#[test]
fn the_office_map_is_readable_at_first_sight_and_fully_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("office.db");
    Office::map_store(&db).expect("the office store is written");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("map-office");
    browser::run_browser_script("map-office.mjs", &out, &["--db".as_ref(), db.as_os_str()]);
    for shot in ["office-first.png", "office-open.png", "big-open.png"] {
        assert!(out.join(shot).is_file(), "no screenshot {shot}");
    }
}
